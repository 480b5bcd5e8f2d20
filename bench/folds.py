"""Pure fold throughput: fold_user over a deterministic synthetic population.

Run: .venv/bin/python bench/folds.py [--users 2000] [--repeat 5] [--profile]

Events are built the way the loader delivers them: in (timestamp, id) order, with
`set.logged` data empty (it is never loaded). Prints median events/s and users/s.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import random
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from stride.domain.events import Event
from stride.projections.registry import READ_MODELS, fold_user

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
BLOCKS = ["strength_set", "continuous_endurance", "interval_endurance", "circuit_hybrid"]
WORKOUTS = ["run", "ride", "swim", "strength_training", "yoga"]
MODALITIES = ["strength", "running", "hybrid", "powerlifting", "climbing"]


def synthetic_user(index: int) -> list[Event]:
    """~80 events over ~120 days: mostly sets, some sessions, imports, objectives, overrides."""
    rng = random.Random(index)
    user = UUID(int=index + 1)
    raw: list[tuple[str, datetime, dict[str, Any]]] = []

    def at(max_days: int) -> datetime:
        return NOW - timedelta(seconds=rng.randrange(max_days * 86_400))

    for _ in range(12):  # twelve workouts of five sets each
        start = at(120)
        raw.extend(("set.logged", start + timedelta(minutes=3 * s), {}) for s in range(5))
    for _ in range(6):
        blocks = [{"block_type": rng.choice(BLOCKS)} for _ in range(rng.randint(1, 3))]
        raw.append(
            ("session.logged", at(120), {"blocks": blocks, "session_meta": {"sport": "gym"}})
        )
    for _ in range(4):
        workout = {"workout_type": rng.choice(WORKOUTS)}
        raw.append(
            (
                "external.activity_imported",
                at(120),
                {"workout": workout, "source": {"provider": "strava"}},
            )
        )
    for _ in range(2):
        raw.append(("profile.updated", at(200), {"training_modality": rng.choice(MODALITIES)}))
    raw.append(
        (
            "goal.set",
            at(300),
            {"goal_type": "strength", "target_exercise": "squat", "target_1rm_kg": 140},
        )
    )
    raw.append(
        (
            "objective.set",
            at(90),
            {
                "objective_id": "o1",
                "mode": "coach",
                "primary_goal": {"type": "strength", "target": "1.5x bodyweight squat"},
                "success_metrics": [{"metric": "1rm_squat"}],
                "constraint_markers": ["knee"],
                "confidence": 0.8,
            },
        )
    )
    raw.append(("objective.updated", at(60), {"objective_id": "o1", "hypothesis": "more volume"}))
    if index % 5 == 0:
        raw.append(("objective.archived", at(30), {"objective_id": "o1", "archived_by": "user"}))
    for _ in range(2):
        raw.append(
            (
                "advisory.override.recorded",
                at(60),
                {
                    "reason": "travel",
                    "scope": "volume",
                    "review_point": "2026-02-20",
                    "actor": "user",
                },
            )
        )
    raw.sort(key=lambda item: item[1])
    return [
        Event(UUID(int=(index << 16) + n), user, kind, moment, data)
        for n, (kind, moment, data) in enumerate(raw)
    ]


def run_once(population: list[list[Event]]) -> float:
    """Seconds to fold every user once."""
    started = time.perf_counter()
    for events in population:
        fold_user(events, NOW, READ_MODELS)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="print a cProfile of one run")
    args = parser.parse_args()

    population = [synthetic_user(i) for i in range(args.users)]
    events = sum(len(user) for user in population)
    if args.profile:
        profiler = cProfile.Profile()
        profiler.runcall(run_once, population)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(20)
        return
    run_once(population[:100])  # warm-up
    seconds = statistics.median(run_once(population) for _ in range(args.repeat))
    print(
        f"users={args.users} events={events} ({events / args.users:.1f}/user) "
        f"median={seconds:.3f}s over {args.repeat} runs: "
        f"{events / seconds:,.0f} events/s, {args.users / seconds:,.0f} users/s"
    )


if __name__ == "__main__":
    main()
