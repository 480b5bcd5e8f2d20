"""The projection I/O shell: load each user's events once, run the due folds, write once.

This is where the pure folds (stride.projections) meet PostgreSQL
(stride.storage); it works on many users per round trip so the backfill and
the organic path share one efficient code path.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from stride.domain.events import Event
from stride.projections.registry import ReadModel, fold_user, read_models_for_event_type
from stride.storage.connection import DbConnection
from stride.storage.projection_store import (
    ProjectionWrite,
    load_events_for_users,
    write_projections,
)

_UUID_TEXT = re.compile(r"^[0-9a-fA-F]{8}-?([0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}$")

# What a retraction retracts: the stored type of the retracted event when it
# exists (the store is the truth), else the type the retraction names.
RETRACTED_TYPES = """
SELECT r.id, coalesce(t.event_type, r.data ->> 'retracted_event_type')
FROM events r
LEFT JOIN events t
       ON t.user_id = r.user_id
      AND t.id = CASE WHEN r.data ->> 'retracted_event_id' ~* %(uuid_pattern)s
                      THEN (r.data ->> 'retracted_event_id')::uuid END
WHERE r.id = ANY(%(ids)s) AND r.event_type = 'event.retracted'
"""


@dataclass(frozen=True, slots=True)
class RefreshSummary:
    users: int
    projections_written: int
    events_folded: int


def resolve_retracted_types(conn: DbConnection, retraction_ids: Iterable[UUID]) -> dict[UUID, str]:
    """Map retraction event ids to the event type they retract (unknown ones are left out)."""
    ids = list(retraction_ids)
    if not ids:
        return {}
    rows = conn.execute(
        RETRACTED_TYPES, {"ids": ids, "uuid_pattern": _UUID_TEXT.pattern}
    ).fetchall()
    return {row[0]: row[1] for row in rows if isinstance(row[1], str)}


def handlers_for(event_types: Iterable[str]) -> tuple[ReadModel, ...]:
    """The distinct handlers registered for any of `event_types`, in a stable order."""
    chosen: dict[str, ReadModel] = {}
    for event_type in event_types:
        for handler in read_models_for_event_type(event_type):
            chosen.setdefault(handler.name, handler)
    return tuple(chosen[name] for name in sorted(chosen))


def load_events_for_handlers(
    conn: DbConnection, user_ids: Collection[UUID], handlers: Iterable[ReadModel]
) -> dict[UUID, list[Event]]:
    """Each user's events that any of `handlers` reads, in one query."""
    chosen = list(handlers)
    input_types = {t for h in chosen for t in h.input_event_types}
    # A type is loaded collapsed only when every handler is content with that.
    daily = set.intersection(*(set(h.timestamp_only_event_types) for h in chosen))
    return load_events_for_users(conn, user_ids, input_types, daily)


def refresh_users(
    conn: DbConnection, triggers: Mapping[UUID, Iterable[str]], now: datetime
) -> RefreshSummary:
    """Recompute, for each user, the projections of the handlers their event types trigger.

    `triggers` maps user id -> event types that changed (retractions already
    resolved to the retracted type). One query loads all users' events; one
    statement writes all projections.
    """
    per_user = {user_id: handlers_for(types) for user_id, types in triggers.items()}
    per_user = {user_id: handlers for user_id, handlers in per_user.items() if handlers}
    if not per_user:
        return RefreshSummary(0, 0, 0)
    all_handlers = {h.name: h for hs in per_user.values() for h in hs}.values()
    events_by_user = load_events_for_handlers(conn, per_user, all_handlers)

    writes: list[ProjectionWrite] = []
    events_folded = 0
    for user_id, handlers in per_user.items():
        events = events_by_user[user_id]
        events_folded += len(events)
        last_event_id = max(events, key=lambda e: e.order_key).id if events else None
        outputs = fold_user(events, now, handlers)
        versions = {(t, k): v for h in handlers for t, k, v in h.outputs}
        writes.extend(
            ProjectionWrite(user_id, ptype, key, data, versions[(ptype, key)], last_event_id)
            for (ptype, key), data in outputs.items()
        )
    written = write_projections(conn, writes)
    return RefreshSummary(len(per_user), written, events_folded)
