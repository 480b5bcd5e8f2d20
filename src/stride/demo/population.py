"""A deterministic synthetic population for the demo, tests and benchmarks.

Seeding models *pre-existing history*: rows go in with COPY, each chunk of
users together with its events in one transaction that does
`SET LOCAL stride.enqueue_projection_updates = 'off'`, so loading millions of
events queues no `projection.update` jobs. Recalculating the projections of
that history is the backfill's job, as it is in production.

Same `users` and `seed` give the same users, ids and events, byte for byte:
each user has its own `random.Random`, so user k does not depend on how many
users are seeded, and re-seeding with a larger count only adds the new users.
Hot event types are rendered from precomputed JSON fragments rather than
`json.dumps`, and ids and timestamps from lookup tables, because 100,000 users
are about eight million rows.
"""

from __future__ import annotations

import json
import queue
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar
from uuid import UUID

from stride.domain.ids import uuid7_int
from stride.storage.connection import DbConnection

SEED_REFERENCE = datetime(2026, 11, 27, tzinfo=UTC)
EMPTY_USER_SHARE = 0.15
HISTORY_DAYS = 420
MAX_EVENTS_PER_USER = 4000  # event ids carry their index in 12 bits
USERS_PER_COPY = 1000

# Serialises seeders chunk by chunk: each re-checks its users under the lock.
# Any constant works; it only has to be the same in every stride process.
SEED_LOCK_KEY = 0x5354_5244_5345_4544  # "STRDSEED"
TAKE_SEED_LOCK = "SELECT pg_advisory_xact_lock(%(key)s)"
# History loads without queueing work; the backfill recalculates it (migration 0002).
SKIP_PROJECTION_JOBS = "SET LOCAL stride.enqueue_projection_updates = 'off'"
# Keeps each COPY's transition table (read by the enqueue trigger) in memory.
RAISE_WORK_MEM = "SET LOCAL work_mem = '256MB'"
SELECT_EXISTING_USERS = "SELECT id FROM users WHERE id = ANY(%(ids)s::uuid[])"
COPY_USERS = "COPY users (id, created_at) FROM STDIN"
COPY_EVENTS = 'COPY events (id, user_id, event_type, "timestamp", data, metadata) FROM STDIN'

_T = TypeVar("_T")

SeedProgress = Callable[[int, int], None]  # (users done, events written) so far


@dataclass(frozen=True, slots=True)
class SeedSummary:
    users: int  # users written by this call
    users_without_events: int
    events: int
    seconds: float
    users_already_present: int = 0

    @property
    def already_seeded(self) -> bool:
        return self.users == 0 and self.users_already_present > 0

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


# --- vocabulary ----------------------------------------------------------------------


def _j(value: Any) -> str:
    """JSON as a COPY text field: backslashes doubled; json.dumps escapes control chars."""
    return json.dumps(value).replace("\\", "\\\\")


# (display name, exercise_id or None for free text, base kg; 0 for bodyweight)
STRENGTH_EXERCISES: tuple[tuple[str, str | None, float], ...] = (
    ("Back Squat", "back_squat", 100),
    ("Front Squat", "front_squat", 80),
    ("Deadlift", "deadlift", 130),
    ("Romanian Deadlift", "romanian_deadlift", 90),
    ("Bench Press", "bench_press", 80),
    ("Incline Bench Press", "incline_bench_press", 65),
    ("Overhead Press", "overhead_press", 50),
    ("Barbell Row", "barbell_row", 70),
    ("Pull-up", "pull_up", 0),
    ("Chin-up", "chin_up", 0),
    ("Dip", "dip", 0),
    ("Lat Pulldown", "lat_pulldown", 60),
    ("Leg Press", "leg_press", 180),
    ("Hip Thrust", "hip_thrust", 110),
    ("Bulgarian Split Squat", "bulgarian_split_squat", 30),
    ("Dumbbell Curl", "dumbbell_curl", 14),
    ("Triceps Pushdown", "triceps_pushdown", 30),
    ("Lateral Raise", "lateral_raise", 10),
    ("Leg Curl", "leg_curl", 45),
    ("Power Clean", "power_clean", 70),
    ("Snatch", "snatch", 50),
    ("Clean and Jerk", "clean_and_jerk", 75),
    ("Kettlebell Swing", "kettlebell_swing", 24),
    ("squats", None, 90),  # free-text logs from users who skip the catalogue
    ("bench", None, 70),
    ("DL", None, 120),
)

# The JSON prefix of every set.logged of an exercise, up to the weight value.
SET_PREFIXES = tuple(
    "{"
    + f'"exercise": {_j(name)}, '
    + (f'"exercise_id": {_j(exercise_id)}, ' if exercise_id else "")
    + '"weight_kg": '
    for name, exercise_id, _ in STRENGTH_EXERCISES
)

MODALITIES_BY_STYLE = {
    "strength": ("strength", "bodybuilding", "powerlifting", "weightlifting", "Strength"),
    "endurance": ("running", "cycling", "rowing", "swimming", "triathlon", "endurance"),
    "hybrid": ("hybrid", "crossfit", "CrossFit"),
    "general": ("climbing", "yoga", "martial arts", "tennis", "dance", "general fitness"),
}
GARBAGE_MODALITIES: tuple[Any, ...] = ("", "   ", "asdf", "🏋️", 42, None, ["strength"], {"x": 1})

SESSION_TEMPLATES: dict[str, tuple[str, ...]] = {
    "endurance": (
        '{"session_meta": {"sport": "running", "duration_min": %d}, "blocks": '
        '[{"block_type": "continuous_endurance", "duration_min": %d}]}',
        '{"session_meta": {"sport": "running", "duration_min": %d}, "blocks": '
        '[{"block_type": "interval_endurance", "reps": 6, "duration_min": %d}]}',
        '{"session_meta": {"sport": "cycling", "duration_min": %d}, "blocks": '
        '[{"block_type": "tempo_threshold", "duration_min": %d}]}',
        '{"session_meta": {"sport": "rowing", "duration_min": %d}, "blocks": '
        '[{"block_type": "speed_endurance", "duration_min": %d}]}',
        '{"session_meta": {"sport": "swimming", "duration_min": %d, "note": "pool %d m"}}',
        '{"session_meta": {"sport": "running", "duration_min": %d}, "blocks": '
        '[{"block_type": "sprint_accel_maxv", "duration_min": %d}]}',
    ),
    "strength": (
        '{"session_meta": {"sport": "strength", "duration_min": %d}, "blocks": '
        '[{"block_type": "strength_set", "duration_min": %d}]}',
        '{"session_meta": {"sport": "weightlifting", "duration_min": %d}, "blocks": '
        '[{"block_type": "explosive_power", "duration_min": %d}, '
        '{"block_type": "strength_set", "duration_min": 30}]}',
    ),
    "hybrid": (
        '{"session_meta": {"sport": "crossfit", "duration_min": %d}, "blocks": '
        '[{"block_type": "circuit_hybrid", "duration_min": %d}]}',
        '{"session_meta": {"sport": "hybrid", "duration_min": %d}, "blocks": '
        '[{"block_type": "strength_set", "duration_min": %d}, '
        '{"block_type": "continuous_endurance", "duration_min": 20}]}',
        '{"session_meta": {"sport": "hyrox", "duration_min": %d}, "blocks": '
        '[{"block_type": "plyometric_reactive", "duration_min": %d}, '
        '{"block_type": "circuit_hybrid", "duration_min": 25}]}',
    ),
    "general": (
        '{"session_meta": {"sport": "yoga", "duration_min": %d}, "blocks": '
        '[{"block_type": "recovery_session", "duration_min": %d}]}',
        '{"session_meta": {"sport": "climbing", "duration_min": %d, "grade": "6a+", "x": %d}}',
        '{"session_meta": {"sport": "mobility", "duration_min": %d}, "blocks": '
        '[{"block_type": "technique_coordination", "duration_min": %d}]}',
        '{"session_meta": {"duration_min": %d}, "blocks": "n/a", "v": %d}',
    ),
}

ACTIVITY_TYPES = {
    "endurance": ("run", "run", "run", "ride", "ride", "swim", "row", "trail_run", "virtual_ride"),
    "strength": ("strength_training", "strength_training", "weight_training"),
    "hybrid": ("run", "ride", "strength_training", "crossfit", "hiit"),
    "general": ("walk", "hike", "yoga", "elliptical", "Workout", "tennis"),
}
PROVIDERS = ("strava", "garmin", "garmin", "apple_health", "polar", "wahoo", "whoop", "fitbit")
ACTIVITY_TEMPLATE = (
    '{"workout": {"workout_type": "%s", "duration_s": %d, "distance_m": %d}, '
    '"source": {"provider": "%s", "external_id": "%s-%d"}}'
)

MEAL_TEMPLATES = (
    '{"meal": "breakfast", "kcal": %d, "protein_g": %d}',
    '{"meal": "lunch", "kcal": %d, "protein_g": %d}',
    '{"meal": "dinner", "kcal": %d, "protein_g": %d}',
    '{"meal": "snack", "kcal": %d, "protein_g": %d}',
)
SLEEP_TEMPLATE = '{"hours": %d.%d, "quality": %d}'

OBJECTIVE_GOALS: tuple[tuple[str, dict[str, Any], list[dict[str, Any]]], ...] = (
    (
        "strength",
        {
            "type": "strength",
            "target_metric": "1rm_kg",
            "target": "back_squat",
            "value": 140,
            "unit": "kg",
        },
        [{"metric": "estimated_1rm", "exercise_id": "back_squat", "target": 140}],
    ),
    (
        "strength",
        {"type": "hypertrophy", "target_metric": "bodyweight_kg", "value": 82, "unit": "kg"},
        [{"metric": "weekly_sets", "target": 60}, {"metric": "consistency_score"}],
    ),
    (
        "endurance",
        {
            "type": "endurance",
            "target": "5k",
            "target_metric": "time_s",
            "value": 1500,
            "unit": "s",
        },
        [{"metric": "weekly_distance_km", "target": 30}],
    ),
    (
        "endurance",
        {"type": "race", "target": "marathon", "value": "sub 3:45"},
        [{"metric": "long_run_km", "target": 32}, {"metric": "consistency_score"}],
    ),
    (
        "hybrid",
        {"type": "hybrid", "target": "hyrox", "target_metric": "finish_time_min", "value": 85},
        [{"metric": "sessions_per_week", "target": 5}],
    ),
    ("general", {"type": "health", "description": "move more, feel better"}, []),
    ("general", {"type": "weight_loss", "value": -6, "unit": "kg"}, [{"metric": "bodyweight"}]),
)
MALFORMED_OBJECTIVE_FIELDS: tuple[dict[str, Any], ...] = (
    {"primary_goal": "get strong"},
    {"success_metrics": {"metric": "1rm"}},
    {"confidence": "high"},
    {"confidence": 1.7},
    {"mode": "beast"},
    {"objective_id": ""},
    {"constraint_markers": "bad knee"},
    {"primary_goal": None, "success_metrics": None},
    {"secondary_goals": "many"},
)
CONSTRAINTS = (
    "knee_pain",
    "low_back",
    "shoulder_impingement",
    "time_limited_45min",
    "no_barbell",
    "shift_work",
    "pregnancy_postpartum",
    "travel",
)
LEGACY_GOALS: tuple[dict[str, Any], ...] = (
    {
        "goal_type": "strength",
        "description": "Squat 2x bodyweight",
        "target_exercise": "back_squat",
        "target_1rm_kg": 150,
        "timeframe_weeks": 16,
    },
    {
        "goal_type": "strength",
        "description": "Bench 100",
        "target_exercise": "bench_press",
        "target_1rm_kg": 100,
        "timeframe_weeks": 12,
    },
    {"goal_type": "endurance", "description": "Run a sub-25 5k", "timeframe_weeks": 10},
    {"goal_type": "weight_loss", "description": "Lose 5 kg before summer"},
    {"goal_type": "hypertrophy", "description": "Build muscle", "timeframe_weeks": 24},
    {"description": "get fit"},
    {"goal_type": "strength", "target_1rm_kg": "lots", "timeframe_weeks": -3},
)
OVERRIDE_SCOPES = (
    "load_progression",
    "deload",
    "exercise_selection",
    "volume",
    "rest_days",
    "objective_mode",
)
OVERRIDE_REASONS = (
    "Feeling strong, skipping the planned deload",
    "Competition in two weeks, keeping volume high",
    "Knee hurts on squats, swapped to leg press",
    "Coach prescribes a different block",
    "Travelling, only bodyweight available",
)
OVERRIDE_ACTORS = ("user", "user", "user", "coach", "agent")


# --- per-user generation -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Clock:
    """Lookup tables that turn epoch seconds into COPY timestamp text quickly."""

    reference_s: int
    days: tuple[str, ...]  # days[d]: the date d days before the reference, ISO
    times: tuple[str, ...]  # times[s]: HH:MM:SS for s seconds into a day

    @classmethod
    def at(cls, reference: datetime) -> _Clock:
        midnight = reference.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        days = tuple(
            (midnight - timedelta(days=d)).date().isoformat() for d in range(HISTORY_DAYS + 40)
        )
        times = tuple(f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}" for s in range(86400))
        return cls(int(midnight.timestamp()), days, times)

    def text(self, offset: int) -> str:
        """Timestamp text for `offset` seconds (negative: before) from the reference midnight."""
        days, into_day = divmod(offset, 86400)
        return f"{self.days[-days]} {self.times[into_day]}+00"


def _user_rng(seed: int, index: int) -> random.Random:
    return random.Random(f"stride-demo:{seed}:{index}")


def _user_id_int(rng: random.Random, reference_ms: int, index: int) -> int:
    # Users were "created" a year before the reference, one millisecond apart.
    return uuid7_int(reference_ms - 366 * 86_400_000 + index, index & 0xFFF, rng.getrandbits(62))


def seeded_user_ids(users: int, seed: int, reference: datetime = SEED_REFERENCE) -> list[UUID]:
    """The ids `seed_population` gives its users, in order."""
    reference_ms = int(reference.timestamp() * 1000)
    return [UUID(int=_user_id_int(_user_rng(seed, k), reference_ms, k)) for k in range(users)]


Row = tuple[int, str, str]  # (seconds before reference midnight, negative; type; data text)


def _user_events(rng: random.Random, reference_day: date) -> list[Row]:
    """One user's history, newest moments closest to 0 (all offsets are negative)."""
    style = rng.choices(("strength", "endurance", "hybrid", "general"), (40, 25, 20, 15))[0]
    start_day = rng.randint(30, HISTORY_DAYS - 5)
    # 60% trained recently, the rest went quiet weeks ago (stale objectives).
    end_day = rng.randint(1, 8) if rng.random() < 0.6 else rng.randint(22, min(150, start_day - 5))
    span = start_day - end_day
    rows: list[Row] = []
    add = rows.append

    def moment(day: int, earliest_hour: int = 6, latest_hour: int = 21) -> int:
        return -day * 86400 + rng.randint(earliest_hour * 3600, latest_hour * 3600)

    # Profile: declared modality usually matches behaviour, not always.
    roll = rng.random()
    if roll < 0.72:
        modality: Any = rng.choice(MODALITIES_BY_STYLE[style])
    elif roll < 0.85:
        modality = rng.choice(MODALITIES_BY_STYLE[rng.choice(list(MODALITIES_BY_STYLE))])
    elif roll < 0.93:
        modality = rng.choice(GARBAGE_MODALITIES)
    else:
        modality = None  # never declared
    profile: dict[str, Any] = {
        "experience_level": rng.choice(("beginner", "intermediate", "advanced"))
    }
    if modality is not None:
        profile["training_modality"] = modality
    if rng.random() < 0.7:
        profile["bodyweight_kg"] = round(rng.uniform(50, 115), 1)
    add((moment(start_day), "profile.updated", _j(profile)))
    for _ in range(rng.choices((0, 1, 2), (65, 27, 8))[0]):
        change: dict[str, Any] = (
            {
                "training_modality": rng.choice(
                    MODALITIES_BY_STYLE[rng.choice(list(MODALITIES_BY_STYLE))]
                )
            }
            if rng.random() < 0.5
            else {"bodyweight_kg": round(rng.uniform(50, 115), 1), "units": "metric"}
        )
        add((moment(rng.randint(end_day, start_day)), "profile.updated", _j(change)))

    _objective_events(rng, style, start_day, end_day, reference_day, moment, add)

    # Training: strength days are many sets each; endurance users log every activity.
    days = int(rng.lognormvariate(2.15, 0.85)) + 1
    if style == "endurance":
        days *= 3
    elif style in ("hybrid", "general"):
        days *= 2
    days = min(days, span + 1, 160)
    training_days = sorted(rng.sample(range(end_day, start_day + 1), days), reverse=True)
    strength = style == "strength" or (style == "hybrid" and rng.random() < 0.5)
    favourites = rng.sample(range(len(STRENGTH_EXERCISES)), rng.randint(3, 8))
    factor = rng.uniform(0.45, 1.5)
    reps_low, reps_high = rng.choice(((1, 5), (3, 6), (5, 8), (8, 12), (10, 15)))
    uses_tracker = rng.random() < 0.55
    provider = rng.choice(PROVIDERS)
    session_templates = SESSION_TEMPLATES[style]
    activity_types = ACTIVITY_TYPES[style]
    for day in training_days:
        progress = 1.0 + 0.15 * (start_day - day) / (span or 1)
        start = moment(day)
        kind = rng.random()
        # Lifters with a watch sometimes only have the watch's strength workout.
        lifts = strength and (
            kind < 0.5 if style == "hybrid" else not (uses_tracker and kind < 0.1)
        )
        if lifts:
            at = start
            for exercise in rng.sample(favourites, min(len(favourites), rng.randint(2, 5))):
                base = STRENGTH_EXERCISES[exercise][2]
                prefix = SET_PREFIXES[exercise]
                for set_number in range(1, rng.randint(2, 5) + 1):
                    at += rng.randint(80, 240)
                    reps = rng.randint(reps_low, reps_high)
                    if base:
                        weight = round(base * factor * progress * rng.uniform(0.85, 1.0) / 2.5)
                        data = (
                            f'{prefix}{weight * 2.5}, "reps": {reps}, "set_number": {set_number}}}'
                        )
                    elif rng.random() < 0.97:
                        data = f'{prefix}0, "reps": {reps}, "set_number": {set_number}}}'
                    else:  # malformed: the handlers must shrug this off
                        data = f'{prefix}"bodyweight", "reps": "{reps}"}}'
                    add((at, "set.logged", data))
        elif uses_tracker:
            minutes = rng.randint(20, 110)
            add(
                (
                    start,
                    "external.activity_imported",
                    ACTIVITY_TEMPLATE
                    % (
                        rng.choice(activity_types),
                        minutes * 60 + rng.randint(0, 59),
                        minutes * rng.randint(120, 260),
                        provider,
                        provider,
                        rng.getrandbits(40),
                    ),
                )
            )
        else:
            minutes = rng.randint(20, 100)
            template = rng.choice(session_templates)
            add((start, "session.logged", template % (minutes, minutes - rng.randint(0, 15))))

    # Unrelated logging: some users track food and sleep, some a lot.
    for _ in range(rng.choices((0, 3, 12, 40), (50, 25, 17, 8))[0]):
        day = rng.randint(end_day, start_day)
        if rng.random() < 0.6:
            add(
                (
                    moment(day, 7, 20),
                    "meal.logged",
                    rng.choice(MEAL_TEMPLATES) % (rng.randint(150, 1200), rng.randint(5, 70)),
                )
            )
        else:
            add(
                (
                    moment(day, 5, 9),
                    "sleep.logged",
                    SLEEP_TEMPLATE % (rng.randint(4, 9), rng.randint(0, 9), rng.randint(1, 5)),
                )
            )
    return rows


def _objective_events(
    rng: random.Random,
    style: str,
    start_day: int,
    end_day: int,
    reference_day: date,
    moment: Callable[[int], int],
    add: Callable[[Row], None],
) -> None:
    """Legacy goals, explicit objectives (some malformed) and advisory overrides."""
    if rng.random() < 0.25:
        add((moment(rng.randint(end_day, start_day)), "goal.set", _j(rng.choice(LEGACY_GOALS))))
    if rng.random() < 0.4:
        day = rng.randint(end_day, start_day)
        candidates = [g for g in OBJECTIVE_GOALS if g[0] == style or rng.random() < 0.15]
        _, goal, metrics = rng.choice(candidates or list(OBJECTIVE_GOALS))
        objective_id = rng.choice(("obj.main", "obj.primary", f"obj.{rng.getrandbits(24):06x}"))
        objective: dict[str, Any] = {
            "objective_id": objective_id,
            "mode": rng.choices(("journal", "collaborate", "coach"), (3, 5, 2))[0],
            "primary_goal": goal,
            "success_metrics": metrics,
            "constraint_markers": rng.sample(CONSTRAINTS, rng.choices((0, 1, 2), (6, 3, 1))[0]),
            "source": rng.choices(("user_explicit", "agent_suggested"), (7, 3))[0],
            "confidence": round(rng.uniform(0.5, 0.98), 2),
        }
        if rng.random() < 0.3:
            objective["anti_goals"] = ["injury", "burnout"][: rng.randint(1, 2)]
            objective["hypothesis"] = "Consistent training three times a week beats big weeks"
        if rng.random() < 0.12:
            objective.update(rng.choice(MALFORMED_OBJECTIVE_FIELDS))
        add((moment(day), "objective.set", _j(objective)))
        for _ in range(rng.choices((0, 1, 2, 3), (5, 3, 2, 1))[0]):
            day = rng.randint(end_day, day)
            update: dict[str, Any] = {"objective_id": objective_id}
            field_roll = rng.random()
            if field_roll < 0.35:
                update["mode"] = rng.choice(("journal", "collaborate", "coach"))
            elif field_roll < 0.65:
                update["constraint_markers"] = rng.sample(CONSTRAINTS, rng.randint(1, 2))
            elif field_roll < 0.9:
                update["success_metrics"] = [{"metric": "consistency_score"}]
            else:
                update.update(rng.choice(MALFORMED_OBJECTIVE_FIELDS))
            add((moment(day), "objective.updated", _j(update)))
        if rng.random() < 0.12:
            add(
                (
                    moment(rng.randint(end_day, day)),
                    "objective.archived",
                    _j(
                        {
                            "objective_id": objective_id,
                            "reason": rng.choice(
                                ("goal reached", "injury", "lost interest", "new season")
                            ),
                            "archived_by": rng.choice(("user", "agent")),
                        }
                    ),
                )
            )
    if rng.random() < 0.12:
        for _ in range(rng.randint(1, 3)):
            day = rng.randint(end_day, start_day)
            # Review points fall on both sides of the reference date.
            review = -day + rng.randint(7, 60) if rng.random() < 0.8 else None
            override: dict[str, Any] = {
                "reason": rng.choice(OVERRIDE_REASONS),
                "scope": rng.choice(OVERRIDE_SCOPES),
                "expected_outcome": "Keep progressing without pain",
                "actor": rng.choice(OVERRIDE_ACTORS),
            }
            if review is not None:
                review_date = reference_day + timedelta(days=review)
                override["review_point"] = (
                    review_date.isoformat()
                    if rng.random() < 0.7
                    else f"{review_date.isoformat()}T09:00:00Z"
                )
            elif rng.random() < 0.5:
                override["review_point"] = "next month"  # garbage
            if rng.random() < 0.04:
                del override["reason"]  # malformed: reason is required
            add((moment(day), "advisory.override.recorded", _j(override)))


def _with_retractions(rng: random.Random, rows: list[Row]) -> list[tuple[int, str, str, int]]:
    """Rows in time order with their index, plus a few retractions of earlier rows."""
    rows.sort(key=lambda row: row[0])
    if len(rows) > MAX_EVENTS_PER_USER - 2:
        del rows[: len(rows) - (MAX_EVENTS_PER_USER - 2)]
    indexed = [(at, event_type, data, index) for index, (at, event_type, data) in enumerate(rows)]
    if len(rows) >= 5 and rng.random() < 0.06:
        for target in sorted(rng.sample(range(len(rows)), rng.choice((1, 1, 2)))):
            at, _, _, index = indexed[target]
            indexed.append(
                (min(at + rng.randint(60, 3 * 86400), -60), "event.retracted", "", index)
            )
    return indexed


@dataclass(frozen=True, slots=True)
class _RenderedUser:
    """One user's COPY text: the users row and all its events rows."""

    user_id: UUID
    user_row: str
    event_rows: str
    events: int


def _render_user(
    seed: int, k: int, reference_ms: int, clock: _Clock, reference_day: date
) -> _RenderedUser:
    rng = _user_rng(seed, k)
    user_int = _user_id_int(rng, reference_ms, k)
    user_hex = f"{user_int:032x}"
    times = clock.text
    if rng.random() < EMPTY_USER_SHARE:
        created = times(-rng.randint(86400, HISTORY_DAYS * 86400))
        return _RenderedUser(UUID(int=user_int), f"{user_hex}\t{created}\n", "", 0)
    indexed = _with_retractions(rng, _user_events(rng, reference_day))
    created = times(indexed[0][0] - rng.randint(60, 30 * 86400))  # retractions come last
    id_base = ((reference_ms + k) << 80) | (0x7 << 76) | (0b10 << 62)
    ids: list[str] = []
    rows: list[str] = []
    getrandbits = rng.getrandbits
    for position, (at, event_type, data, index) in enumerate(indexed):
        event_hex = f"{id_base | (position << 64) | getrandbits(62):032x}"
        ids.append(event_hex)
        if event_type == "event.retracted":
            target = ids[index]
            data = (
                f'{{"retracted_event_id": "{target[:8]}-{target[8:12]}-{target[12:16]}-'
                f'{target[16:20]}-{target[20:]}", "retracted_event_type": "{indexed[index][1]}"}}'
            )
        rows.append(f"{event_hex}\t{user_hex}\t{event_type}\t{times(at)}\t{data}\t{{}}\n")
    return _RenderedUser(UUID(int=user_int), f"{user_hex}\t{created}\n", "".join(rows), len(rows))


def _rendered_chunks(
    seed: int, pending: Sequence[int], reference: datetime
) -> Iterator[list[_RenderedUser]]:
    clock = _Clock.at(reference)
    reference_ms = int(reference.timestamp() * 1000)
    reference_day = datetime.fromtimestamp(clock.reference_s, UTC).date()
    for offset in range(0, len(pending), USERS_PER_COPY):
        yield [
            _render_user(seed, k, reference_ms, clock, reference_day)
            for k in pending[offset : offset + USERS_PER_COPY]
        ]


def _prefetched(items: Iterator[_T], depth: int = 2) -> Iterator[_T]:
    """Run `items` in a thread, `depth` ahead: rows render while the server ingests.

    The GIL is released while psycopg waits on the socket, so this overlaps
    Python's row rendering with PostgreSQL's COPY work on a second core.
    """
    handoff: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        handoff.put(("item", item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            handoff.put(("done", None))
        except BaseException as exc:  # re-raised in the consumer
            handoff.put(("error", exc))

    producer = threading.Thread(target=produce, name="stride-seed-render", daemon=True)
    producer.start()
    try:
        while True:
            kind, value = handoff.get()
            if kind == "done":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        producer.join()


def seed_population(
    conn: DbConnection,
    users: int,
    seed: int,
    progress: SeedProgress | None = None,
    reference: datetime = SEED_REFERENCE,
) -> SeedSummary:
    """Write users 0..`users`-1 of population `seed` and their history.

    Each chunk of users commits together with its events, so users already
    present (an earlier or interrupted run with the same seed) are skipped: a
    re-run is a no-op, resumes an interrupted seed, or adds only the new users.
    """
    started = time.monotonic()
    wanted = seeded_user_ids(users, seed, reference)
    present = _present(conn, wanted)
    pending = [k for k, user_id in enumerate(wanted) if user_id not in present]
    written = without_events = events = 0
    with conn.cursor() as cursor:
        for chunk in _prefetched(_rendered_chunks(seed, pending, reference)):
            with conn.transaction():
                cursor.execute(TAKE_SEED_LOCK, {"key": SEED_LOCK_KEY})
                cursor.execute(SKIP_PROJECTION_JOBS)
                cursor.execute(RAISE_WORK_MEM)
                # Another seeder may have written some of these while we rendered.
                taken = _present(conn, [user.user_id for user in chunk])
                fresh = [user for user in chunk if user.user_id not in taken]
                with cursor.copy(COPY_USERS) as copy:
                    copy.write("".join(user.user_row for user in fresh))
                with cursor.copy(COPY_EVENTS) as copy:
                    for user in fresh:
                        if user.event_rows:
                            copy.write(user.event_rows)
            written += len(fresh)
            without_events += sum(1 for user in fresh if not user.events)
            events += sum(user.events for user in fresh)
            if progress is not None:
                progress(users - len(pending) + written, events)
    return SeedSummary(
        users=written,
        users_without_events=without_events,
        events=events,
        seconds=time.monotonic() - started,
        users_already_present=users - written,
    )


def _present(conn: DbConnection, user_ids: Sequence[UUID]) -> set[UUID]:
    return {row[0] for row in conn.execute(SELECT_EXISTING_USERS, {"ids": list(user_ids)})}
