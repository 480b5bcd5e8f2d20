"""Recompute read models: load each user's events once, run the due folds, write once.

Works on many users per round trip, so the backfill and the organic path share
one efficient code path: one query loads every user's events, one statement
writes every projection.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from stride.domain.events import RETRACTION_EVENT_TYPE, Event
from stride.projections.registry import (
    READ_MODELS,
    Outputs,
    ReadModel,
    fold_user,
    read_models_for_event_type,
)
from stride.readmodels import metrics
from stride.storage.connection import DbConnection
from stride.storage.projection_store import (
    ProjectionWrite,
    existing_user_ids,
    load_events_for_users,
    write_projections,
)

log = logging.getLogger(__name__)

# Which event types a retraction's recompute must cover. Retracting a retraction
# undoes it (stride.domain.events.retracted_event_ids), so the chain is followed
# down to the events it ends at: each one's stored type when it exists (the
# store is the truth), else the type the retraction names. Targets are matched
# within the retraction's own user, by stride_retraction_target (migration
# 0006), the same rule the folds apply. UNION (not ALL) ends the walk on cycles.
RETRACTED_TYPES = """
WITH RECURSIVE chain (origin, user_id, target, named_type) AS (
    SELECT r.id, r.user_id, stride_retraction_target(r.data), r.data ->> 'retracted_event_type'
    FROM events r
    WHERE r.id = ANY(%(ids)s) AND r.event_type = 'event.retracted'
    UNION
    SELECT c.origin, c.user_id, stride_retraction_target(t.data), t.data ->> 'retracted_event_type'
    FROM chain c
    JOIN events t ON t.id = c.target AND t.user_id = c.user_id
    WHERE t.event_type = 'event.retracted'
)
SELECT DISTINCT c.origin, coalesce(t.event_type, c.named_type)
FROM chain c
LEFT JOIN events t ON t.id = c.target AND t.user_id = c.user_id
WHERE coalesce(t.event_type, c.named_type) <> 'event.retracted'
"""


@dataclass(frozen=True, slots=True)
class RefreshSummary:
    """What one refresh did. A user is superseded when every projection computed for them
    was refused because a higher revision is stored (newer code got there first)."""

    users: int
    projections_written: int
    events_folded: int
    projections_superseded: int = 0
    superseded_users: frozenset[UUID] = frozenset()


@dataclass(frozen=True, slots=True)
class EventChange:
    """An event that was appended (or is replayed by the backfill) for a user."""

    user_id: UUID
    event_id: UUID
    event_type: str


def resolve_retracted_types(
    conn: DbConnection, retraction_ids: Iterable[UUID]
) -> dict[UUID, set[str]]:
    """Map retraction event ids to the event types their recompute covers (unknown ones are
    left out): the retracted event's type, and along a chain of retracted retractions the
    type each one ends at."""
    ids = list(retraction_ids)
    if not ids:
        return {}
    resolved: dict[UUID, set[str]] = {}
    for retraction_id, event_type in conn.execute(RETRACTED_TYPES, {"ids": ids}):
        resolved.setdefault(retraction_id, set()).add(event_type)
    return resolved


def read_models_for(
    event_types: Iterable[str], read_models: Collection[ReadModel] = READ_MODELS
) -> tuple[ReadModel, ...]:
    """The distinct read models (of `read_models`) any of `event_types` triggers, in a
    stable order."""
    chosen: dict[str, ReadModel] = {}
    for event_type in event_types:
        for read_model in read_models_for_event_type(event_type, read_models):
            chosen.setdefault(read_model.name, read_model)
    return tuple(chosen[name] for name in sorted(chosen))


def load_events_for_read_models(
    conn: DbConnection, user_ids: Collection[UUID], read_models: Iterable[ReadModel]
) -> dict[UUID, list[Event]]:
    """Each user's events that any of `read_models` reads (retractions always), in one query."""
    chosen = list(read_models)
    input_types = {t for m in chosen for t in m.input_event_types}
    # A type is loaded collapsed only when every read model is content with that.
    daily = set.intersection(*(set(m.timestamp_only_event_types) for m in chosen))
    return load_events_for_users(conn, user_ids, input_types, daily)


def recompute_users(
    conn: DbConnection,
    user_ids: Collection[UUID],
    now: Mapping[UUID, datetime],
    read_models: Collection[ReadModel] = READ_MODELS,
) -> dict[UUID, Outputs]:
    """Every output of `read_models` for each user, computed in memory and not written.

    `now[user]` is the clock of that user's folds. What `refresh_users` would write,
    with the same load and the same folds (the backfill's verification diffs it).
    """
    events_by_user = load_events_for_read_models(conn, user_ids, read_models)
    return fold_users(events_by_user, now, read_models)


def fold_users(
    events_by_user: Mapping[UUID, Sequence[Event]],
    now: Mapping[UUID, datetime],
    read_models: Collection[ReadModel] = READ_MODELS,
) -> dict[UUID, Outputs]:
    """The folding half of `recompute_users`, for events already loaded (by
    `load_events_for_read_models`, e.g. on another thread while this one folds)."""
    return {
        user_id: fold_user(events, now[user_id], read_models)
        for user_id, events in events_by_user.items()
    }


def refresh_users(
    conn: DbConnection,
    triggers: Mapping[UUID, Iterable[str]],
    now: datetime,
    read_models: Collection[ReadModel] = READ_MODELS,
) -> RefreshSummary:
    """Recompute, for each user, the projections of the read models their event types trigger.

    `triggers` maps user id -> event types that changed (retractions already
    resolved to the retracted type). `read_models` is the logic this code runs
    (the registry; tests run older and newer revisions side by side). Rows of a
    higher revision than this code's are left as they are (superseded).
    """
    per_user = {user_id: read_models_for(types, read_models) for user_id, types in triggers.items()}
    per_user = {user_id: models for user_id, models in per_user.items() if models}
    if not per_user:
        return RefreshSummary(0, 0, 0)
    all_models = {m.name: m for models in per_user.values() for m in models}.values()
    events_by_user = load_events_for_read_models(conn, per_user, all_models)

    writes: list[ProjectionWrite] = []
    events_folded = 0
    for user_id, models in per_user.items():
        events = events_by_user[user_id]
        readable = [e for e in events if e.unreadable is None]
        if len(readable) != len(events):
            log.warning(
                "user %s: %d stored event(s) could not be read back and were skipped "
                "(listed in data_quality.unreadable_events)",
                user_id,
                len(events) - len(readable),
            )
        events_folded += len(readable)
        last_event_id = max(readable, key=lambda e: e.order_key).id if readable else None
        outputs = fold_user(events, now, models)
        declared = {output.row: output for m in models for output in m.outputs}
        writes.extend(
            ProjectionWrite(
                user_id,
                ptype,
                key,
                data,
                declared[(ptype, key)].model_version,
                last_event_id,
                declared[(ptype, key)].revision,
            )
            for (ptype, key), data in outputs.items()
        )
    result = write_projections(conn, writes)
    if not result.superseded:
        return RefreshSummary(len(per_user), result.written, events_folded)
    refused: dict[UUID, int] = {}
    for user_id, ptype, key in result.superseded:
        refused[user_id] = refused.get(user_id, 0) + 1
        metrics.PROJECTIONS_SUPERSEDED.labels(ptype, key).inc()
    attempted: dict[UUID, int] = {}
    for write in writes:
        attempted[write.user_id] = attempted.get(write.user_id, 0) + 1
    superseded_users = frozenset(u for u, n in refused.items() if n == attempted[u])
    return RefreshSummary(
        len(per_user), result.written, events_folded, len(result.superseded), superseded_users
    )


def refresh_for_events(
    conn: DbConnection,
    changes: Iterable[EventChange],
    now: datetime,
    read_models: Collection[ReadModel] = READ_MODELS,
) -> RefreshSummary:
    """Recompute what `changes` affect: each user once, for the union of their event types.

    A retraction re-runs the read models of the type it retracts; events of users
    that do not exist are logged and skipped.
    """
    triggers: dict[UUID, set[str]] = {}
    retractions: dict[UUID, UUID] = {}
    for change in changes:
        types = triggers.setdefault(change.user_id, set())
        if change.event_type == RETRACTION_EVENT_TYPE:
            retractions[change.event_id] = change.user_id
        else:
            types.add(change.event_type)
    for retraction_id, retracted in resolve_retracted_types(conn, retractions).items():
        triggers[retractions[retraction_id]].update(retracted)
    known = existing_user_ids(conn, list(triggers))
    for unknown in set(triggers) - known:
        log.warning("projection.update for unknown user %s: nothing to project", unknown)
    return refresh_users(conn, {u: t for u, t in triggers.items() if u in known}, now, read_models)
