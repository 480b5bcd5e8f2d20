"""Event validation: every check the event store relies on, as pure functions.

What a caller submits (`NewEvent`, or one JSONL line) becomes a `ValidEvent`,
serialised and ready to insert, or an `EventValidationError` naming the bad
field. Nothing here touches the database: unknown users are the store's check.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

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
