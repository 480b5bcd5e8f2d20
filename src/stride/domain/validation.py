"""Event validation: every check the event store relies on, as pure functions.

What a caller submits (`NewEvent`, or one JSONL line) becomes a `ValidEvent`,
serialised and ready to insert, or an `EventValidationError` naming the bad
field. Nothing here touches the database: unknown users are the store's check.

What validation accepts, PostgreSQL stores and the loader and folds read back
(spec §8): timestamps inside datetime's range in every session time zone,
numbers a double can hold, strings PostgreSQL can store, bounded nesting and
size, and event types and idempotency keys that fit their btree indexes.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

IMPORT_FIELDS = ("user_id", "event_type", "timestamp", "data", "metadata")
REQUIRED_IMPORT_FIELDS = ("user_id", "event_type", "timestamp", "data")

# psycopg reads a timestamptz back in the session's time zone, and a zone's
# offset (local mean time included) stays under a day: one day of margin inside
# datetime's years 1..9999 lets every session read every stored instant.
MIN_TIMESTAMP = datetime(1, 1, 2, tzinfo=UTC)
MAX_TIMESTAMP = datetime(9999, 12, 30, 23, 59, 59, 999999, tzinfo=UTC)

# Nesting: orjson writes projections at most 255 levels deep and reads 1,024;
# the folds copy event objects into projections a few levels down.
MAX_JSON_DEPTH = 64
# Serialised characters of `data` or `metadata`; every projection job of the
# user loads the whole history, so one event must stay small.
MAX_JSON_CHARS = 1_048_576
# Both are keys of btree indexes (rows at most ~2,700 bytes, up to 4 per character).
MAX_EVENT_TYPE_LENGTH = 255
MAX_IDEMPOTENCY_KEY_LENGTH = 512

# json.dumps escapes NUL and unpaired surrogates as \u0000 / \udXXX, which jsonb refuses.
_SUSPECT_ESCAPE = re.compile(r"\\u(?:0000|d[89a-f])")
# An integer of 309 digits or more may exceed a double (about 1.8e308); float
# reprs never have such digit runs, so only such text needs the exact walk.
_LONG_DIGITS = re.compile(r"[0-9]{309}")
_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_SHOWN_CHARACTERS = 60


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
        raise EventValidationError("user_id", f"not a UUID: {shown(value)}") from None


def _event_type(value: Any) -> str:
    if not isinstance(value, str):
        raise EventValidationError("event_type", f"must be a string, got {_kind(value)}")
    if not value.strip():
        raise EventValidationError("event_type", "empty or blank")
    if len(value) > MAX_EVENT_TYPE_LENGTH:
        raise EventValidationError(
            "event_type", f"{len(value):,} characters long; at most {MAX_EVENT_TYPE_LENGTH}"
        )
    if value != value.strip():
        raise EventValidationError("event_type", f"leading or trailing whitespace: {shown(value)}")
    problem = _unstorable_text(value)
    if problem:
        raise EventValidationError("event_type", problem)
    control = _CONTROL_CHARACTER.search(value)
    if control:
        raise EventValidationError(
            "event_type", f"contains the control character U+{ord(control.group()):04X}"
        )
    return value


def parse_timestamp(value: Any) -> datetime:
    """An aware datetime from a datetime or an ISO 8601 string with a UTC offset.

    The instant must lie within MIN_TIMESTAMP..MAX_TIMESTAMP in UTC, whatever its offset.
    """
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            raise EventValidationError(
                "timestamp",
                f"unparseable timestamp {shown(value)}: expected ISO 8601, "
                "e.g. 2026-05-01T07:30:00Z",
            ) from None
    else:
        raise EventValidationError("timestamp", f"must be an ISO 8601 string, got {_kind(value)}")
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise EventValidationError("timestamp", "naive timestamp: give a UTC offset")
    # Aware comparisons subtract the offsets without building the UTC datetime,
    # which would overflow for the very instants this rejects.
    if not MIN_TIMESTAMP <= moment <= MAX_TIMESTAMP:
        raise EventValidationError(
            "timestamp",
            f"{moment.isoformat()} is outside the range stride can store and read back "
            f"in every time zone: {MIN_TIMESTAMP.date()} to {MAX_TIMESTAMP.date()} (UTC)",
        )
    return moment


def _json_object(name: str, value: Any) -> str:
    """`value` serialised, if it is an object that PostgreSQL stores and orjson reads back."""
    if not isinstance(value, Mapping):
        raise EventValidationError(name, f"must be a JSON object, got {_kind(value)}")
    try:
        text = json.dumps(value, allow_nan=False)
    except RecursionError:
        raise EventValidationError(name, f"nested deeper than {MAX_JSON_DEPTH} levels") from None
    except (TypeError, ValueError) as exc:
        # NaN, infinities and over-long integers: the walk names where.
        problem = _unreadable_json(name, value)
        raise EventValidationError(name, problem or f"not JSON-serialisable: {exc}") from None
    if len(text) > MAX_JSON_CHARS:
        raise EventValidationError(
            name, f"{len(text):,} characters serialised; at most {MAX_JSON_CHARS:,}"
        )
    # Most events are small and plain: the exact walk runs only on text that
    # could hide a problem (cheap scans of the serialised form decide).
    if (
        _SUSPECT_ESCAPE.search(text)
        or _LONG_DIGITS.search(text)
        or text.count("[") + text.count("{") > MAX_JSON_DEPTH
    ):
        problem = _unreadable_json(name, value)
        if problem:
            raise EventValidationError(name, problem)
    return text


def _unreadable_json(name: str, value: Any) -> str | None:
    """What in `value` PostgreSQL would refuse or the loader could not read back, and where.

    Iterative, so any nesting depth is safe to inspect.
    """
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(value, ())]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            problem = _unstorable_text(item)
        elif isinstance(item, bool) or item is None:
            problem = None
        elif isinstance(item, int):
            problem = _undoubleable_integer(item)
        elif isinstance(item, float):
            problem = None if math.isfinite(item) else f"{item} is not a finite JSON number"
        elif isinstance(item, Mapping | list | tuple):
            if len(path) >= MAX_JSON_DEPTH:
                problem = f"nested deeper than {MAX_JSON_DEPTH} levels"
            elif isinstance(item, Mapping):
                problem = None
                for key, child in item.items():
                    key_problem = _unstorable_text(key) if isinstance(key, str) else None
                    if key_problem:
                        return f"a key at {_path(name, path)}: {key_problem}"
                    stack.append((child, (*path, str(key))))
            else:
                problem = None
                stack.extend((child, (*path, i)) for i, child in enumerate(item))
        else:
            problem = f"not JSON-serialisable: {type(item).__name__}"
        if problem:
            return f"at {_path(name, path)}: {problem}"
    return None


def _undoubleable_integer(value: int) -> str | None:
    """Why jsonb would keep `value` but orjson could not read it back, if so."""
    try:
        float(value)
    except OverflowError:
        digits = len(str(abs(value))) if value.bit_length() < 14_000 else "thousands of"
        return f"an integer of {digits} digits is beyond what a double can hold (about 1.8e308)"
    return None


def _unstorable_text(value: str) -> str | None:
    """Why PostgreSQL would refuse the string `value` (NUL, lone surrogate), if so."""
    if "\x00" in value:
        return "contains a NUL character (\\u0000), which PostgreSQL cannot store"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        code = ord(value[exc.start])
        return (
            f"contains an unpaired UTF-16 surrogate (U+{code:04X}), which PostgreSQL cannot store"
        )
    return None


def _path(name: str, path: tuple[str | int, ...], shown_parts: int = 6) -> str:
    """`data.primary_goal.targets[2]`: where a problem is, its first few steps only."""
    text = name
    for part in path[:shown_parts]:
        text += f"[{part}]" if isinstance(part, int) else f".{shown(part, 30, quote=False)}"
    return text + ("…" if len(path) > shown_parts else "")


def shown(value: str, limit: int = _SHOWN_CHARACTERS, *, quote: bool = True) -> str:
    """`value` for an error message: repr-escaped (no raw control or surrogate), cut short."""
    text = repr(value[:limit])
    text = text if quote else text[1:-1]
    cut = len(value) > limit or len(text) > limit + 2
    return text[: limit + 2] + "…" if cut else text


def _kind(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(
        type(value), "number" if isinstance(value, int | float) else type(value).__name__
    )


def validate_event(event: NewEvent) -> ValidEvent:
    """Check every field the store relies on; raises EventValidationError for the first bad one."""
    user_id = _user_id(event.user_id)
    event_type = _event_type(event.event_type)
    # Stored in UTC: PostgreSQL keeps only the instant, and refuses the sub-minute
    # offsets Python accepts (e.g. +00:00:00.000001).
    timestamp = parse_timestamp(event.timestamp).astimezone(UTC)
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
        if len(key) > MAX_IDEMPOTENCY_KEY_LENGTH:
            raise EventValidationError(
                "metadata.idempotency_key",
                f"{len(key):,} characters long; at most {MAX_IDEMPOTENCY_KEY_LENGTH}",
            )
    return ValidEvent(user_id, event_type, timestamp, data_json, metadata_json, key)


def parse_json(text: bytes | str, field: str) -> Any:
    """Strict JSON (no NaN or Infinity); any failure, deep nesting included, names `field`."""
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise EventValidationError(field, "not valid UTF-8") from None
    except RecursionError:
        raise EventValidationError(field, f"nested deeper than {MAX_JSON_DEPTH} levels") from None
    except json.JSONDecodeError as exc:
        raise EventValidationError(
            field, f"invalid JSON: {exc.msg} at column {exc.colno}"
        ) from None
    except ValueError as exc:
        if str(exc).startswith("Exceeds the limit"):  # int_max_str_digits
            raise EventValidationError(
                field, f"invalid JSON: an integer of over {sys.get_int_max_str_digits():,} digits"
            ) from None
        raise EventValidationError(field, f"invalid JSON: {exc}") from None


def event_from_json_line(line: bytes | str) -> NewEvent:
    """One JSONL line {user_id, event_type, timestamp, data, metadata?} as a NewEvent."""
    value = parse_json(line, "line")
    if not isinstance(value, dict):
        raise EventValidationError("line", f"expected a JSON object, got {_kind(value)}")
    for name in REQUIRED_IMPORT_FIELDS:
        if name not in value:
            raise EventValidationError(name, "missing")
    for name in value:
        if name not in IMPORT_FIELDS:
            raise EventValidationError(
                shown(name, quote=False), f"unknown field (expected {', '.join(IMPORT_FIELDS)})"
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
