"""The event record the folds consume, and the event-type vocabulary."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

# The nine objective-relevant event types (spec §3); order is the runbook's.
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

RETRACTION_EVENT_TYPE = "event.retracted"


@dataclass(frozen=True, slots=True)
class Event:
    """One stored event as the folds see it.

    `data` is whatever JSON object was stored: the folds must tolerate any shape.
    """

    id: UUID
    user_id: UUID
    event_type: str
    timestamp: datetime
    data: Mapping[str, Any] = field(default_factory=dict)

    @property
    def order_key(self) -> tuple[datetime, UUID]:
        """Events are ordered by (timestamp, id), spec §4."""
        return (self.timestamp, self.id)


def without_retracted(events: list[Event] | tuple[Event, ...]) -> list[Event]:
    """Drop retracted events and the retractions themselves, in (timestamp, id) order.

    A retracted event counts as never logged (spec §3).
    """
    retracted: set[str] = set()
    for event in events:
        if event.event_type == RETRACTION_EVENT_TYPE:
            data = event.data if isinstance(event.data, Mapping) else {}
            target = data.get("retracted_event_id")
            if isinstance(target, str):
                retracted.add(target.strip().lower())
    kept = [
        e for e in events if e.event_type != RETRACTION_EVENT_TYPE and str(e.id) not in retracted
    ]
    kept.sort(key=lambda e: e.order_key)
    return kept
