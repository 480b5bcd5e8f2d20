"""Loading users' events and writing projections, many users per round trip."""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from stride.domain.events import Event
from stride.storage.connection import DbConnection

# Events of the given types for a set of users, in fold order. `data` is left
# out (sent as NULL) for types whose fold only reads the timestamp: set.logged
# is most of the volume and its payload is never needed by the objective folds.
LOAD_EVENTS = """
SELECT id, user_id, event_type, "timestamp",
       CASE WHEN event_type = ANY(%(timestamp_only)s) THEN NULL ELSE data END
FROM events
WHERE user_id = ANY(%(user_ids)s)
  AND event_type = ANY(%(event_types)s)
ORDER BY user_id, "timestamp", id
"""

# One statement writes every projection of the batch. `version` counts writes,
# `updated_at` is the moment of this write.
UPSERT_PROJECTIONS = """
INSERT INTO projections AS p
    (user_id, projection_type, key, data, version, model_version, last_event_id, updated_at)
SELECT w.user_id, w.projection_type, w.key, w.data::jsonb, 1, w.model_version, w.last_event_id,
       clock_timestamp()
FROM unnest(
    %(user_ids)s::uuid[], %(projection_types)s::text[], %(keys)s::text[],
    %(data)s::text[], %(model_versions)s::text[], %(last_event_ids)s::uuid[]
) AS w(user_id, projection_type, key, data, model_version, last_event_id)
ON CONFLICT (user_id, projection_type, key) DO UPDATE
SET data = EXCLUDED.data,
    version = p.version + 1,
    model_version = EXCLUDED.model_version,
    last_event_id = EXCLUDED.last_event_id,
    updated_at = EXCLUDED.updated_at
"""

READ_PROJECTIONS = """
SELECT projection_type, key, data, version, model_version, last_event_id, updated_at
FROM projections
WHERE user_id = %(user_id)s
  AND (%(projection_type)s::text IS NULL OR projection_type = %(projection_type)s)
ORDER BY projection_type, key
"""


@dataclass(frozen=True, slots=True)
class ProjectionWrite:
    user_id: UUID
    projection_type: str
    key: str
    data: Mapping[str, Any]
    model_version: str
    last_event_id: UUID | None


@dataclass(frozen=True, slots=True)
class StoredProjection:
    projection_type: str
    key: str
    data: dict[str, Any]
    version: int
    model_version: str | None
    last_event_id: UUID | None
    updated_at: datetime


def load_events_for_users(
    conn: DbConnection,
    user_ids: Collection[UUID],
    event_types: Collection[str],
    timestamp_only_event_types: Collection[str] = (),
) -> dict[UUID, list[Event]]:
    """Each user's events of `event_types` in (timestamp, id) order; every user gets a key."""
    by_user: dict[UUID, list[Event]] = {user_id: [] for user_id in user_ids}
    if not by_user:
        return by_user
    cursor = conn.execute(
        LOAD_EVENTS,
        {
            "user_ids": list(by_user),
            "event_types": list(event_types),
            "timestamp_only": list(timestamp_only_event_types),
        },
        prepare=True,
    )
    for event_id, user_id, event_type, timestamp, data in cursor:
        by_user[user_id].append(Event(event_id, user_id, event_type, timestamp, data or {}))
    return by_user


def write_projections(conn: DbConnection, writes: Iterable[ProjectionWrite]) -> int:
    """Upsert projections in one statement; returns how many rows were written."""
    batch = sorted(writes, key=lambda w: (str(w.user_id), w.projection_type, w.key))
    if not batch:
        return 0
    # Sorted so concurrent writers touching overlapping rows lock them in the
    # same order (no deadlocks between batches).
    conn.execute(
        UPSERT_PROJECTIONS,
        {
            "user_ids": [w.user_id for w in batch],
            "projection_types": [w.projection_type for w in batch],
            "keys": [w.key for w in batch],
            "data": [json.dumps(w.data, sort_keys=True, separators=(",", ":")) for w in batch],
            "model_versions": [w.model_version for w in batch],
            "last_event_ids": [w.last_event_id for w in batch],
        },
        prepare=True,
    )
    return len(batch)


def read_projections(
    conn: DbConnection, user_id: UUID, projection_type: str | None = None
) -> list[StoredProjection]:
    """A user's stored projections, optionally of one type."""
    rows = conn.execute(
        READ_PROJECTIONS, {"user_id": user_id, "projection_type": projection_type}
    ).fetchall()
    return [StoredProjection(*row) for row in rows]


def existing_user_ids(conn: DbConnection, user_ids: Sequence[UUID]) -> set[UUID]:
    """The subset of `user_ids` that exist in `users`."""
    rows = conn.execute("SELECT id FROM users WHERE id = ANY(%s)", (list(user_ids),)).fetchall()
    return {row[0] for row in rows}
