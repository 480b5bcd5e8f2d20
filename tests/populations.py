"""Small deterministic populations for integration and acceptance tests."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

NOW = datetime(2026, 11, 1, tzinfo=UTC)


def make_population(
    conn: psycopg.Connection[Any], users: int, empty_every: int = 4
) -> list[uuid.UUID]:
    """Users with a small history each (every `empty_every`-th user has none), loaded
    as pre-existing history: no organic jobs are queued for it."""
    ids = [uuid.uuid4() for _ in range(users)]
    rows = []
    for n, user_id in enumerate(ids):
        if n % empty_every == 0:
            continue
        base = NOW - timedelta(days=n % 40)
        rows.append(
            (
                user_id,
                "profile.updated",
                base - timedelta(days=30),
                {"training_modality": "running"},
            )
        )
        rows.append(
            (
                user_id,
                "objective.set",
                base - timedelta(days=20),
                {
                    "objective_id": "o1",
                    "mode": "coach",
                    "primary_goal": {"type": "endurance", "target": "10k"},
                },
            )
        )
        for day in range(n % 5):
            rows.append(
                (
                    user_id,
                    "set.logged",
                    base - timedelta(days=day),
                    {"exercise": "squat", "reps": 5},
                )
            )
        rows.append((user_id, "meal.logged", base, {"kcal": 500}))
    with conn.transaction():
        conn.execute("SET LOCAL stride.enqueue_projection_updates = 'off'")
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO users (id) VALUES (%s)", [(u,) for u in ids])
            cur.executemany(
                "INSERT INTO events (user_id, event_type, timestamp, data) VALUES (%s, %s, %s, %s)",
                [(u, t, ts, json.dumps(d)) for u, t, ts, d in rows],
            )
    return ids
