"""The event record the folds consume, the event-type vocabulary, and the retraction rule."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final
from uuid import UUID

# The nine objective-relevant event types (docs/contract.md §3); order is the runbook's.
OBJECTIVE_EVENT_TYPES: tuple[str, ...] = (
    "goal.set",
    "objective.set",
    "objective.updated",
    "objective.archived",
    "advisory.override.recorded",
    "profile.updated",
    "set.logged",
    "session.logged",
    "external.activity_imported",
)

TRAINING_EVENT_TYPES: tuple[str, ...] = (
    "set.logged",
    "session.logged",
    "external.activity_imported",
)

RETRACTION_EVENT_TYPE: Final = "event.retracted"
RETRACTED_EVENT_ID: Final = "retracted_event_id"

# What names a retracted event: `retracted_event_id` as a JSON string holding a
# UUID in a form both Python's uuid.UUID and PostgreSQL's uuid input accept:
# 32 hex digits of either case, a hyphen allowed after any group of four (so the
# canonical 8-4-4-4-12 form and the bare 32 digits), optionally inside one pair
# of braces, optionally after a `urn:uuid:` prefix, with ASCII whitespace around
# it. Anything else names nothing. Migration 0006 (`stride_retraction_target`)
# spells the same pattern for SQL; a property test runs both on the same input.
UUID_TEXT_PATTERN: Final = (
    r"^[ \t\n\r\f\v]*(urn:uuid:)?"
    r"(\{[0-9A-Fa-f]{4}(-?[0-9A-Fa-f]{4}){7}\}|[0-9A-Fa-f]{4}(-?[0-9A-Fa-f]{4}){7})"
    r"[ \t\n\r\f\v]*$"
)
_UUID_TEXT: Final = re.compile(UUID_TEXT_PATTERN)
_HEX_DIGITS: Final = re.compile(r"[0-9A-Fa-f]{4}(?:-?[0-9A-Fa-f]{4}){7}")


@dataclass(frozen=True, slots=True)
class Event:
    """One stored event as the folds see it.

    `data` is whatever JSON object was stored: the folds must tolerate any shape.
    `unreadable` says why a stored event could not be read back (a row stored
    before validation refused such values): the folds skip it, and the read
    models record it in their `data_quality` instead of failing the user.
    """

    id: UUID
    user_id: UUID
    event_type: str
    timestamp: datetime
    data: Mapping[str, Any] = field(default_factory=dict)
    unreadable: str | None = None

    @property
    def order_key(self) -> tuple[datetime, UUID]:
        """Events are ordered by (timestamp, id), docs/contract.md §4."""
        return (self.timestamp, self.id)


def parse_uuid_text(value: object) -> UUID | None:
    """The UUID a string spells in one of the accepted forms (see UUID_TEXT_PATTERN), else None."""
    if not isinstance(value, str) or _UUID_TEXT.fullmatch(value) is None:
        return None
    digits = _HEX_DIGITS.search(value)
    return UUID(digits.group()) if digits is not None else None


def retraction_target(data: object) -> UUID | None:
    """The id of the event a retraction's data names, or None when it names none."""
    if not isinstance(data, Mapping):
        return None
    return parse_uuid_text(data.get(RETRACTED_EVENT_ID))


def retracted_event_ids(events: Iterable[Event]) -> set[UUID]:
    """Ids of the events that `events` (one user's) retract, retractions included.

    The rule: an event is retracted when a retraction in force names it, and a
    retraction is in force when it is not itself retracted. So retracting a
    retraction undoes it, and retracting that one again redoes it. Computed as a
    least fixed point: a retraction comes into force once every retraction naming
    it is known to be retracted. Retractions that name each other in a cycle
    (impossible through the event store, which mints ids on append) never come
    into force. Retractions of unknown ids retract nothing.
    """
    targets: dict[UUID, UUID] = {}
    for event in events:
        if event.event_type == RETRACTION_EVENT_TYPE:
            target = retraction_target(event.data)
            if target is not None:
                targets[event.id] = target
    named_by: dict[UUID, list[UUID]] = {}
    for retraction, target in targets.items():
        named_by.setdefault(target, []).append(retraction)
    retracted: set[UUID] = set()
    undecided = list(targets)
    progressed = True
    while progressed and undecided:
        progressed = False
        still: list[UUID] = []
        for retraction in undecided:
            if all(other in retracted for other in named_by.get(retraction, ())):
                retracted.add(targets[retraction])
                progressed = True
            elif retraction not in retracted:
                still.append(retraction)
        undecided = still
    return retracted


def without_retracted(events: Sequence[Event]) -> list[Event]:
    """Drop retracted events and the retractions themselves, in (timestamp, id) order.

    A retracted event counts as never logged (docs/contract.md §3).
    """
    retracted = retracted_event_ids(events)
    kept = [e for e in events if e.event_type != RETRACTION_EVENT_TYPE and e.id not in retracted]
    kept.sort(key=lambda e: e.order_key)
    return kept
