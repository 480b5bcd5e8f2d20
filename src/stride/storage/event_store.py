"""The append-only event store: validated, idempotent appends, one transaction per call.

Every stored event enqueues one `projection.update` job through the trigger of
migration 0002; a re-sent event (same user, same `metadata.idempotency_key`)
stores nothing and enqueues nothing, and gives back the id stored the first time.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg

from stride.domain.ids import new_uuid7
from stride.storage.connection import DbConnection

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

SELECT_KNOWN_USERS = "SELECT id FROM users WHERE id = ANY(%(user_ids)s::uuid[])"

INSERT_USER = "INSERT INTO users (id) VALUES (%(id)s) ON CONFLICT (id) DO NOTHING RETURNING id"

SELECT_USERS = """
SELECT u.id, u.created_at, (SELECT count(*) FROM events e WHERE e.user_id = u.id)
FROM users u
ORDER BY u.id
LIMIT %(limit)s
"""

IMPORT_FIELDS = ("user_id", "event_type", "timestamp", "data", "metadata")
REQUIRED_IMPORT_FIELDS = ("user_id", "event_type", "timestamp", "data")

# json.dumps escapes NUL and unpaired surrogates as \u0000 / \udXXX, which jsonb refuses.
_SUSPECT_ESCAPE = re.compile(r"\\u(?:0000|d[89a-f])")


class EventValidationError(ValueError):
    """One bad field of one submitted event; `index` is its position in the batch."""

    def __init__(self, field: str, message: str, *, index: int | None = None) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.index = index

    def at(self, index: int) -> EventValidationError:
        return EventValidationError(self.field, self.message, index=index)


class EventBatchError(ValueError):
    """A call was rejected as a whole; `errors` names every bad record (nothing stored)."""

    def __init__(self, errors: Sequence[EventValidationError], total: int) -> None:
        self.errors = tuple(sorted(errors, key=lambda e: e.index or 0))
        self.total = total
        details = "; ".join(f"record {e.index}: {e}" for e in self.errors[:10])
        more = f"; and {len(self.errors) - 10} more" if len(self.errors) > 10 else ""
        super().__init__(f"{len(self.errors)} of {total} events rejected: {details}{more}")


class DuplicateUserError(ValueError):
    """`add_user` was given an id that already exists."""

    def __init__(self, user_id: UUID) -> None:
        super().__init__(f"user {user_id} already exists")
        self.user_id = user_id


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event as a caller submits it; the store validates every field."""

    user_id: UUID | str
    event_type: str
    timestamp: datetime | str
    data: Any = field(default_factory=dict)
    metadata: Any = None


@dataclass(frozen=True, slots=True)
class ValidEvent:
    """A validated event, serialised and ready to insert."""

    user_id: UUID
    event_type: str
    timestamp: datetime
    data_json: str
    metadata_json: str
    idempotency_key: str | None


@dataclass(frozen=True, slots=True)
class AppendResult:
    id: UUID
    duplicate: bool


@dataclass(frozen=True, slots=True)
class UserRow:
    id: UUID
    created_at: datetime
    event_count: int


# --- validation (pure) ---------------------------------------------------------------


def _user_id(value: Any) -> UUID:
    if isinstance(value, UUID):
        return value
    if not isinstance(value, str):
        raise EventValidationError("user_id", f"must be a UUID string, got {_kind(value)}")
    try:
        return UUID(value)
    except ValueError:
        raise EventValidationError("user_id", f"not a UUID: {value!r}") from None


def _event_type(value: Any) -> str:
    if not isinstance(value, str):
        raise EventValidationError("event_type", f"must be a string, got {_kind(value)}")
    if not value.strip():
        raise EventValidationError("event_type", "empty or blank")
    if value != value.strip():
        raise EventValidationError("event_type", f"leading or trailing whitespace: {value!r}")
    if "\x00" in value:
        raise EventValidationError("event_type", "contains a NUL character")
    return value


def parse_timestamp(value: Any) -> datetime:
    """An aware datetime from a datetime or an ISO 8601 string with a UTC offset."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            raise EventValidationError(
                "timestamp",
                f"unparseable timestamp {value!r}: expected ISO 8601, e.g. 2026-05-01T07:30:00Z",
            ) from None
    else:
        raise EventValidationError("timestamp", f"must be an ISO 8601 string, got {_kind(value)}")
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise EventValidationError("timestamp", "naive timestamp: give a UTC offset")
    return moment


def _json_object(name: str, value: Any) -> str:
    if not isinstance(value, Mapping):
        raise EventValidationError(name, f"must be a JSON object, got {_kind(value)}")
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise EventValidationError(name, f"not JSON-serialisable: {exc}") from None
    if _SUSPECT_ESCAPE.search(text):
        problem = _unstorable_string(value)
        if problem:
            raise EventValidationError(name, problem)
    return text


def _unstorable_string(value: Any) -> str | None:
    """Why PostgreSQL would refuse a string inside `value` (NUL, lone surrogate), if so."""
    if isinstance(value, str):
        if "\x00" in value:
            return "contains a NUL character (\\u0000), which PostgreSQL cannot store"
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "contains an unpaired UTF-16 surrogate, which PostgreSQL cannot store"
        return None
    if isinstance(value, Mapping):
        items: Iterable[Any] = [*value.keys(), *value.values()]
    elif isinstance(value, list | tuple):
        items = value
    else:
        return None
    for item in items:
        problem = _unstorable_string(item)
        if problem:
            return problem
    return None


def _kind(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(
        type(value), "number" if isinstance(value, int | float) else type(value).__name__
    )


def validate_event(event: NewEvent) -> ValidEvent:
    """Check every field the store relies on; raises EventValidationError for the first bad one."""
    user_id = _user_id(event.user_id)
    event_type = _event_type(event.event_type)
    timestamp = parse_timestamp(event.timestamp)
    data_json = _json_object("data", event.data)
    metadata = {} if event.metadata is None else event.metadata
    metadata_json = _json_object("metadata", metadata)
    key = metadata.get("idempotency_key")
    if "idempotency_key" in metadata:
        if not isinstance(key, str):
            raise EventValidationError(
                "metadata.idempotency_key", f"must be a string, got {_kind(key)}"
            )
        if not key.strip():
            raise EventValidationError("metadata.idempotency_key", "empty or blank")
    return ValidEvent(user_id, event_type, timestamp, data_json, metadata_json, key)


def event_from_json_line(line: bytes | str) -> NewEvent:
    """One JSONL line {user_id, event_type, timestamp, data, metadata?} as a NewEvent."""
    try:
        value = json.loads(line, parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise EventValidationError("line", "not valid UTF-8") from None
    except json.JSONDecodeError as exc:
        raise EventValidationError(
            "line", f"invalid JSON: {exc.msg} at column {exc.colno}"
        ) from None
    except ValueError as exc:
        raise EventValidationError("line", f"invalid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise EventValidationError("line", f"expected a JSON object, got {_kind(value)}")
    for name in REQUIRED_IMPORT_FIELDS:
        if name not in value:
            raise EventValidationError(name, "missing")
    for name in value:
        if name not in IMPORT_FIELDS:
            raise EventValidationError(
                str(name), f"unknown field (expected {', '.join(IMPORT_FIELDS)})"
            )
    return NewEvent(
        user_id=value["user_id"],
        event_type=value["event_type"],
        timestamp=value["timestamp"],
        data=value["data"],
        metadata=value.get("metadata"),
    )


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# --- appends -------------------------------------------------------------------------


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
    user_ids = sorted({e.user_id for e in events})
    rows = conn.execute(SELECT_KNOWN_USERS, {"user_ids": user_ids}).fetchall()
    known = {row[0] for row in rows}
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


# --- users ---------------------------------------------------------------------------


def add_user(conn: DbConnection, user_id: UUID | None = None) -> UUID:
    """Create a user (a fresh UUIDv7 unless `user_id` is given); a taken id raises."""
    new_id = user_id if user_id is not None else new_uuid7()
    row = conn.execute(INSERT_USER, {"id": new_id}).fetchone()
    if row is None:
        raise DuplicateUserError(new_id)
    created: UUID = row[0]
    return created


def list_users(conn: DbConnection, limit: int = 20) -> list[UserRow]:
    """The first `limit` users in id (creation) order, with their event counts."""
    rows = conn.execute(SELECT_USERS, {"limit": limit}).fetchall()
    return [UserRow(row[0], row[1], row[2]) for row in rows]


# --- JSONL import ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RejectedLine:
    line: int
    field: str
    reason: str


@dataclass(slots=True)
class ImportSummary:
    lines: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    rejects: list[RejectedLine] = field(default_factory=list)

    @property
    def rejects_omitted(self) -> int:
        """Rejects counted but not kept (only the first `max_rejects_kept` are)."""
        return self.rejected - len(self.rejects)


ImportProgress = Callable[[int, int], None]  # (bytes consumed since last call, lines)


def import_jsonl(
    conn: DbConnection,
    lines: Iterable[bytes],
    *,
    batch_size: int = 1000,
    max_rejects_kept: int = 1000,
    on_progress: ImportProgress | None = None,
) -> ImportSummary:
    """Stream JSONL events into the store, one transaction per batch.

    Each line is validated on its own first, so a bad line is rejected with its
    number and reason while the good ones are stored. A batch the database still
    refuses is retried line by line.
    """
    summary = ImportSummary()
    batch: list[tuple[int, ValidEvent]] = []
    consumed = 0

    def reject(line_number: int, error: EventValidationError | str) -> None:
        summary.rejected += 1
        if len(summary.rejects) < max_rejects_kept:
            if isinstance(error, EventValidationError):
                summary.rejects.append(RejectedLine(line_number, error.field, error.message))
            else:
                summary.rejects.append(RejectedLine(line_number, "database", error))

    def flush() -> None:
        nonlocal consumed
        _import_batch(conn, batch, summary, reject)
        batch.clear()
        if on_progress is not None:
            on_progress(consumed, summary.lines)
        consumed = 0

    for line_number, raw in enumerate(lines, start=1):
        summary.lines = line_number
        consumed += len(raw)
        if not raw.strip():
            continue
        try:
            batch.append((line_number, validate_event(event_from_json_line(raw))))
        except EventValidationError as exc:
            reject(line_number, exc)
        if len(batch) >= batch_size:
            flush()
    flush()
    summary.rejects.sort(key=lambda r: r.line)
    return summary


def _import_batch(
    conn: DbConnection,
    batch: list[tuple[int, ValidEvent]],
    summary: ImportSummary,
    reject: Callable[[int, EventValidationError | str], None],
) -> None:
    pending = batch
    try:
        try:
            results = append_valid_events(conn, [event for _, event in pending])
        except EventBatchError as exc:
            # Unknown users: reject those lines, insert the rest.
            bad = {e.index: e for e in exc.errors}
            for position, (line_number, _) in enumerate(pending):
                if position in bad:
                    reject(line_number, bad[position])
            pending = [item for position, item in enumerate(pending) if position not in bad]
            results = append_valid_events(conn, [event for _, event in pending])
    except (EventBatchError, psycopg.Error):
        if conn.broken:
            raise
        _import_line_by_line(conn, pending, summary, reject)
        return
    _count(summary, results)


def _import_line_by_line(
    conn: DbConnection,
    batch: list[tuple[int, ValidEvent]],
    summary: ImportSummary,
    reject: Callable[[int, EventValidationError | str], None],
) -> None:
    for line_number, event in batch:
        try:
            _count(summary, append_valid_events(conn, [event]))
        except EventBatchError as exc:
            reject(line_number, exc.errors[0])
        except psycopg.Error as exc:
            if conn.broken:
                raise
            reject(line_number, " ".join(str(exc).split()) or type(exc).__name__)


def _count(summary: ImportSummary, results: Sequence[AppendResult]) -> None:
    for result in results:
        if result.duplicate:
            summary.duplicates += 1
        else:
            summary.accepted += 1
