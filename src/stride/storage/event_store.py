"""The append-only event store: validated, idempotent appends, one transaction per call.

Every stored event enqueues one `projection.update` job through the trigger of
migration 0002; a re-sent event (same user, same `metadata.idempotency_key`)
stores nothing and enqueues nothing, and gives back the id stored the first time.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from stride.domain.ids import new_uuid7
from stride.domain.validation import (
    EventBatchError,
    EventValidationError,
    NewEvent,
    ValidEvent,
    validate_event,
)
from stride.storage.connection import DbConnection
from stride.storage.users import known_users

# ON CONFLICT names the partial unique index events_user_idempotency_key by its
# expression and predicate, so a primary-key clash still raises. Rows that lose
# to an existing key are skipped without a row, hence without a job: the enqueue
# trigger only sees the rows actually inserted.
INSERT_EVENTS = """
INSERT INTO events (id, user_id, event_type, "timestamp", data, metadata)
SELECT id, user_id, event_type, ts, data, metadata
FROM unnest(
    %(ids)s::uuid[], %(user_ids)s::uuid[], %(event_types)s::text[],
    %(timestamps)s::timestamptz[], %(data)s::jsonb[], %(metadata)s::jsonb[]
) AS new_event (id, user_id, event_type, ts, data, metadata)
ON CONFLICT (user_id, (metadata ->> 'idempotency_key'))
    WHERE metadata ? 'idempotency_key'
    DO NOTHING
RETURNING id
"""

# `metadata ? 'idempotency_key'` repeats the index predicate so the partial
# index serves the lookup.
SELECT_EVENTS_BY_IDEMPOTENCY_KEY = """
SELECT e.user_id, e.metadata ->> 'idempotency_key', e.id
FROM events e
JOIN unnest(%(user_ids)s::uuid[], %(keys)s::text[]) AS k (user_id, idempotency_key)
  ON e.user_id = k.user_id AND e.metadata ->> 'idempotency_key' = k.idempotency_key
WHERE e.metadata ? 'idempotency_key'
"""


# A user's latest events, newest first: the (user_id, …) prefix of
# events_user_type_order finds the user's rows, then a top-N sort.
SELECT_LATEST_EVENTS = """
SELECT id, event_type, "timestamp", data, metadata, created_at
FROM events
WHERE user_id = %(user_id)s
ORDER BY "timestamp" DESC, id DESC
LIMIT %(limit)s
"""


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event as stored, metadata included (for operators; the folds read `Event`)."""

    id: UUID
    event_type: str
    timestamp: datetime
    data: dict[str, Any]
    metadata: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True, slots=True)
class AppendResult:
    id: UUID
    duplicate: bool


def append_event(conn: DbConnection, event: NewEvent) -> AppendResult:
    """Append one event; raises EventValidationError naming the bad field."""
    try:
        return append_events(conn, [event])[0]
    except EventBatchError as exc:
        raise exc.errors[0] from None


def append_events(conn: DbConnection, events: Sequence[NewEvent]) -> list[AppendResult]:
    """Append a batch in one transaction: all of it, or nothing.

    A rejected batch raises EventBatchError naming every bad record, not just the first.
    """
    valid: list[ValidEvent] = []
    errors: list[EventValidationError] = []
    for index, event in enumerate(events):
        try:
            valid.append(validate_event(event))
        except EventValidationError as exc:
            errors.append(exc.at(index))
    if not errors:
        return append_valid_events(conn, valid)
    # Report unknown users too, so one call names every bad record.
    bad_positions = {e.index for e in errors}
    good_positions = [i for i in range(len(events)) if i not in bad_positions]
    with conn.transaction():
        errors.extend(_unknown_user_errors(conn, valid, good_positions))
    raise EventBatchError(errors, len(events))


def append_valid_events(conn: DbConnection, events: Sequence[ValidEvent]) -> list[AppendResult]:
    """Insert validated events in one transaction; unknown users raise EventBatchError."""
    if not events:
        return []
    with conn.transaction():
        unknown = _unknown_user_errors(conn, events, range(len(events)))
        if unknown:
            raise EventBatchError(unknown, len(events))
        return _insert(conn, events)


def _unknown_user_errors(
    conn: DbConnection, events: Sequence[ValidEvent], positions: Iterable[int]
) -> list[EventValidationError]:
    known = known_users(conn, (e.user_id for e in events))
    return [
        EventValidationError("user_id", f"unknown user {event.user_id}", index=position)
        for event, position in zip(events, positions, strict=True)
        if event.user_id not in known
    ]


def _insert(conn: DbConnection, events: Sequence[ValidEvent]) -> list[AppendResult]:
    # A key repeated inside the batch is a duplicate of its first occurrence.
    first_with_key: dict[tuple[UUID, str], int] = {}
    repeat_of: dict[int, int] = {}
    to_insert: list[int] = []
    for position, event in enumerate(events):
        if event.idempotency_key is not None:
            key = (event.user_id, event.idempotency_key)
            if key in first_with_key:
                repeat_of[position] = first_with_key[key]
                continue
            first_with_key[key] = position
        to_insert.append(position)

    ids = {position: new_uuid7() for position in to_insert}
    rows = [events[p] for p in to_insert]
    inserted = {
        row[0]
        for row in conn.execute(
            INSERT_EVENTS,
            {
                "ids": [ids[p] for p in to_insert],
                "user_ids": [e.user_id for e in rows],
                "event_types": [e.event_type for e in rows],
                "timestamps": [e.timestamp for e in rows],
                "data": [e.data_json for e in rows],
                "metadata": [e.metadata_json for e in rows],
            },
        ).fetchall()
    }

    results: dict[int, AppendResult] = {}
    lost = [p for p in to_insert if ids[p] not in inserted]
    for position in to_insert:
        if ids[position] in inserted:
            results[position] = AppendResult(ids[position], duplicate=False)
    if lost:
        stored = _stored_ids(conn, [events[p] for p in lost])
        for position in lost:
            event = events[position]
            assert event.idempotency_key is not None  # only a key conflict skips a row
            results[position] = AppendResult(
                stored[(event.user_id, event.idempotency_key)], duplicate=True
            )
    for position, first in repeat_of.items():
        results[position] = AppendResult(results[first].id, duplicate=True)
    return [results[p] for p in range(len(events))]


def _stored_ids(conn: DbConnection, events: Sequence[ValidEvent]) -> dict[tuple[UUID, str], UUID]:
    rows = conn.execute(
        SELECT_EVENTS_BY_IDEMPOTENCY_KEY,
        {"user_ids": [e.user_id for e in events], "keys": [e.idempotency_key for e in events]},
    ).fetchall()
    return {(row[0], row[1]): row[2] for row in rows}


def latest_events(conn: DbConnection, user_id: UUID, limit: int = 20) -> list[StoredEvent]:
    """A user's `limit` latest events by timestamp (then id), newest first."""
    rows = conn.execute(SELECT_LATEST_EVENTS, {"user_id": user_id, "limit": limit}).fetchall()
    return [StoredEvent(*row) for row in rows]
