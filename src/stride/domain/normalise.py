"""Pure coercion of messy event JSON into the shapes the folds use.

Every helper that drops or alters a value calls `ignore(field, reason)`, so a fold can
record what it ignored instead of failing (docs/contract.md §3: malformed data is never fatal).
"""

from __future__ import annotations

import math
import operator
import re
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, date, datetime
from itertools import islice
from typing import Any, Final, TypeGuard

from stride.domain.events import RETRACTION_EVENT_TYPE, Event, without_retracted

Ignore = Callable[[str, str], None]
"""Called with (field, reason) for each value a helper drops or alters."""

Scalar = str | int | float | bool

EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
MAX_TEXT: Final = 1000
MAX_TOKEN: Final = 64
MAX_LIST: Final = 50
MAX_OBJECT_KEYS: Final = 20
MAX_ABS_NUMBER: Final = 1e15
MAX_IGNORED: Final = 50

# Stable vocabulary of `reason` codes written to data_quality.ignored_fields.
NOT_AN_OBJECT: Final = "not_an_object"
NOT_A_STRING: Final = "not_a_string"
NOT_A_NUMBER: Final = "not_a_number"
NOT_A_LIST: Final = "not_a_list"
OUT_OF_RANGE: Final = "out_of_range"
TRUNCATED: Final = "truncated"
CLAMPED: Final = "clamped"
INVALID_CHOICE: Final = "invalid_choice"
INVALID_DATE: Final = "invalid_date"
MISSING_REQUIRED: Final = "missing_required"
NESTED_VALUE: Final = "nested_value"
EMPTY_OBJECT: Final = "empty_object"
UNRECOGNISED: Final = "unrecognised"

_TOKEN_JUNK = re.compile(r"[^a-z0-9.]+")
_ORDER_KEY = operator.attrgetter("timestamp", "id")


def ignore_nothing(field: str, reason: str) -> None:
    """An `Ignore` sink for callers that do not track data quality."""


class IgnoredFields:
    """Collects what normalisation dropped, keeping the newest `cap` entries and a total."""

    __slots__ = ("_entries", "total")

    def __init__(self, cap: int = MAX_IGNORED) -> None:
        self._entries: deque[dict[str, str]] = deque(maxlen=cap)
        self.total = 0

    def sink(self, event: Event) -> Ignore:
        """An `Ignore` callback that attributes entries to `event`."""

        def record(field: str, reason: str) -> None:
            self.total += 1
            self._entries.append(
                {
                    "event_id": str(event.id),
                    "event_type": event.event_type,
                    "field": field,
                    "reason": reason,
                }
            )

        return record

    def as_data(self) -> dict[str, Any]:
        """The `data_quality` block: newest entries first, in fold order."""
        return {
            "ignored_fields": list(reversed(self._entries)),
            "ignored_total": self.total,
            "ignored_fields_cap": self._entries.maxlen,
        }


def is_mapping(value: object) -> TypeGuard[Mapping[str, Any]]:
    """`isinstance(value, Mapping)` with a fast path for plain dicts (the common case)."""
    return type(value) is dict or isinstance(value, Mapping)


def event_data(event: Event, ignore: Ignore) -> Mapping[str, Any]:
    """The event's data as a mapping; anything else counts as empty and is reported."""
    data = event.data
    if is_mapping(data):
        return data
    if data is not None:
        ignore("data", NOT_AN_OBJECT)
    return {}


def ordered_events(events: Iterable[Event]) -> list[Event]:
    """Non-retracted events in (timestamp, id) order; naive timestamps are taken as UTC."""
    listed = list(events)
    has_retractions = False
    for index, event in enumerate(listed):
        if event.timestamp.tzinfo is None:
            listed[index] = _as_utc_event(event)
        if event.event_type == RETRACTION_EVENT_TYPE:
            has_retractions = True
    if has_retractions:
        return without_retracted(listed)
    # Same result as without_retracted, minus its per-event set lookups (hot path).
    listed.sort(key=_ORDER_KEY)
    return listed


def _as_utc_event(event: Event) -> Event:
    """A copy of `event` whose naive timestamp is marked UTC."""
    return replace(event, timestamp=event.timestamp.replace(tzinfo=UTC))


def aware_utc(moment: datetime) -> datetime:
    """`moment` as an aware datetime; a naive one is taken to be UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def iso_utc(moment: datetime) -> str:
    """ISO-8601 UTC rendering with a `Z` suffix, microsecond precision (fixed width)."""
    if moment.tzinfo is not UTC:
        try:
            moment = aware_utc(moment).astimezone(UTC)
        except (OverflowError, ValueError):
            moment = moment.replace(tzinfo=UTC)
    return moment.isoformat(timespec="microseconds")[:-6] + "Z"


def day_index(moment: datetime) -> int:
    """Whole UTC days since 1970-01-01: the calendar day a training event counts for."""
    return (moment - EPOCH).days


def is_blank(value: object) -> bool:
    """True for a string with no visible characters (an explicit 'clear')."""
    return isinstance(value, str) and not value.strip()


def as_text(value: object, field: str, ignore: Ignore, max_len: int = MAX_TEXT) -> str | None:
    """A stripped, length-capped string; numbers are rendered, blanks become None."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.replace("\x00", "").strip()
    elif isinstance(value, bool) or not isinstance(value, int | float):
        ignore(field, NOT_A_STRING)
        return None
    else:
        number = as_number(value, field, ignore)
        if number is None:
            return None
        text = str(number)
    if not text:
        return None
    if len(text) > max_len:
        ignore(field, TRUNCATED)
        text = text[:max_len].rstrip()
    return text


def token(value: str) -> str:
    """Lower-case, underscore-separated form used to match vocabularies ('Power-Lifting ' ->
    'power_lifting')."""
    return _TOKEN_JUNK.sub("_", value.lower()).strip("_")[:MAX_TOKEN]


def as_token(value: object, field: str, ignore: Ignore) -> str | None:
    """A vocabulary token from free text; values with no letters or digits are reported."""
    text = as_text(value, field, ignore, max_len=4 * MAX_TOKEN)
    if text is None:
        return None
    normalised = token(text)
    if not normalised:
        ignore(field, UNRECOGNISED)
        return None
    return normalised


def as_choice(value: object, field: str, ignore: Ignore, allowed: frozenset[str]) -> str | None:
    """A token from a closed vocabulary; anything else is reported and dropped."""
    normalised = as_token(value, field, ignore)
    if normalised is None:
        return None
    if normalised not in allowed:
        ignore(field, INVALID_CHOICE)
        return None
    return normalised


def as_number(value: object, field: str, ignore: Ignore) -> int | float | None:
    """A finite number within +-1e15; numeric strings ('82.5', '82,5') are parsed."""
    if value is None:
        return None
    if isinstance(value, bool):
        ignore(field, NOT_A_NUMBER)
        return None
    if isinstance(value, int):
        if abs(value) > MAX_ABS_NUMBER:
            ignore(field, OUT_OF_RANGE)
            return None
        return value
    if isinstance(value, float):
        return _finite(value, field, ignore)
    if isinstance(value, str):
        return _parse_number(value, field, ignore)
    ignore(field, NOT_A_NUMBER)
    return None


def _finite(value: float, field: str, ignore: Ignore) -> float | None:
    """`value` unless it is NaN, infinite or out of range."""
    if not math.isfinite(value):
        ignore(field, NOT_A_NUMBER)
        return None
    if abs(value) > MAX_ABS_NUMBER:
        ignore(field, OUT_OF_RANGE)
        return None
    return value


def _parse_number(value: str, field: str, ignore: Ignore) -> int | float | None:
    """Parse a numeric string, keeping integers integral; a single comma is a decimal mark."""
    text = value.strip()
    if text.count(",") == 1 and "." not in text:
        text = text.replace(",", ".")
    if not text or len(text) > 40:
        ignore(field, NOT_A_NUMBER)
        return None
    try:
        if text.lstrip("+-").isdigit():
            return as_number(int(text), field, ignore)
        return _finite(float(text), field, ignore)
    except ValueError:
        ignore(field, NOT_A_NUMBER)
        return None


def as_int(value: object, field: str, ignore: Ignore, low: int, high: int) -> int | None:
    """An integral number in [low, high]; fractional or out-of-range values are reported."""
    number = as_number(value, field, ignore)
    if number is None:
        return None
    if number != int(number):
        ignore(field, NOT_A_NUMBER)
        return None
    if not low <= number <= high:
        ignore(field, OUT_OF_RANGE)
        return None
    return int(number)


def clamp_confidence(value: object, field: str, ignore: Ignore) -> float | None:
    """A confidence clamped to 0..1 and rounded to 2 decimals; clamping is reported."""
    number = as_number(value, field, ignore)
    if number is None:
        return None
    if number < 0 or number > 1:
        ignore(field, CLAMPED)
    return round(min(1.0, max(0.0, float(number))), 2)


def as_scalar(value: object, field: str, ignore: Ignore) -> Scalar | None:
    """A JSON scalar (text, number or bool); nested values are reported and dropped."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return as_text(value, field, ignore)
    if isinstance(value, int | float):
        return as_number(value, field, ignore)
    ignore(field, NESTED_VALUE)
    return None


def capped(
    value: Sequence[Any], field: str, ignore: Ignore, max_items: int = MAX_LIST
) -> Iterable[Any]:
    """The first `max_items` items of a list, reporting the rest as truncated."""
    if len(value) > max_items:
        ignore(field, TRUNCATED)
    return islice(value, max_items)


def as_text_list(value: object, field: str, ignore: Ignore) -> list[str] | None:
    """A de-duplicated list of strings; a lone string becomes a one-item list."""
    if value is None:
        return None
    if isinstance(value, str):
        single = as_text(value, field, ignore)
        return [single] if single is not None else None
    if not isinstance(value, list | tuple):
        ignore(field, NOT_A_LIST)
        return None
    items: list[str] = []
    for index, item in enumerate(capped(value, field, ignore)):
        text = as_text(item, f"{field}[{index}]", ignore)
        if text is not None and text not in items:
            items.append(text)
    return items


def as_object(
    value: object, field: str, ignore: Ignore, token_keys: frozenset[str] = frozenset()
) -> dict[str, Scalar] | None:
    """A flat object of scalar values with keys in sorted order; `token_keys` are tokenised.

    Nested values are dropped (and reported) so deeply nested junk never reaches a projection.
    """
    if value is None:
        return None
    if not is_mapping(value):
        ignore(field, NOT_AN_OBJECT)
        return None
    keys = sorted(key for key in islice(value, 4 * MAX_OBJECT_KEYS) if isinstance(key, str))
    if len(keys) > MAX_OBJECT_KEYS or len(value) > len(keys):
        ignore(field, TRUNCATED)
    result: dict[str, Scalar] = {}
    for key in keys[:MAX_OBJECT_KEYS]:
        name = token(key)
        if not name or name in result:
            ignore(f"{field}.{key[:MAX_TOKEN]}", UNRECOGNISED)
            continue
        path = f"{field}.{name}"
        raw = value[key]
        item = as_token(raw, path, ignore) if name in token_keys else as_scalar(raw, path, ignore)
        if item is not None:
            result[name] = item
    if not result:
        ignore(field, EMPTY_OBJECT)
        return None
    return result


def as_object_list(
    value: object,
    field: str,
    ignore: Ignore,
    string_key: str,
    token_keys: frozenset[str] = frozenset(),
) -> list[dict[str, Scalar]] | None:
    """A list of flat objects; a bare string item becomes `{string_key: item}`."""
    if value is None:
        return None
    if isinstance(value, Mapping | str):
        value = [value]
    if not isinstance(value, list | tuple):
        ignore(field, NOT_A_LIST)
        return None
    items: list[dict[str, Scalar]] = []
    for index, item in enumerate(capped(value, field, ignore)):
        path = f"{field}[{index}]"
        if isinstance(item, str):
            text = as_text(item, path, ignore)
            if text is not None:
                items.append({string_key: token(text) if string_key in token_keys else text})
            continue
        obj = as_object(item, path, ignore, token_keys)
        if obj is not None:
            items.append(obj)
    return items


def parse_review_point(value: object, field: str, ignore: Ignore) -> datetime | None:
    """An ISO date (due at 00:00 UTC that day) or datetime (naive = UTC) as aware UTC."""
    if value is None:
        return None
    if not isinstance(value, str):
        ignore(field, NOT_A_STRING)
        return None
    text = value.strip()
    if not text:
        return None
    try:
        if len(text) > 40:
            raise ValueError(text[:40])
        if len(text) <= 10:
            day = date.fromisoformat(text)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        return aware_utc(datetime.fromisoformat(text)).astimezone(UTC)
    except (ValueError, OverflowError):
        ignore(field, INVALID_DATE)
        return None
