"""Which projection handlers run for which event types, and how one user's events are folded.

The I/O shell loads `input_event_types` (without data for `timestamp_only_event_types`),
calls `fold_user`, and writes each returned (projection_type, key) row.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from stride.domain.events import OBJECTIVE_EVENT_TYPES, RETRACTION_EVENT_TYPE, Event
from stride.domain.modality import SET_LOGGED
from stride.domain.normalise import ordered_events
from stride.projections import objective_advisory, objective_state

Outputs = dict[tuple[str, str], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class ProjectionHandler:
    """A fold and the event types that trigger it, feed it, and the rows it writes."""

    name: str
    event_types: frozenset[str]
    input_event_types: frozenset[str]
    timestamp_only_event_types: frozenset[str]
    outputs: tuple[tuple[str, str, str], ...]
    fold: Callable[[Sequence[Event], datetime], Outputs]


def fold_objective_foundation(events: Sequence[Event], now: datetime) -> Outputs:
    """Both objective projections from one event list (any order, retractions applied)."""
    ordered = ordered_events(events)
    state = objective_state.fold_ordered_state(ordered)
    advisory = objective_advisory.fold_ordered_advisory(ordered, now, state)
    return {
        ("objective_state", "active"): state,
        ("objective_advisory", "overview"): advisory,
    }


OBJECTIVE_FOUNDATION: Final = ProjectionHandler(
    name="objective_foundation",
    event_types=frozenset(OBJECTIVE_EVENT_TYPES),
    input_event_types=frozenset((*OBJECTIVE_EVENT_TYPES, RETRACTION_EVENT_TYPE)),
    timestamp_only_event_types=frozenset((SET_LOGGED,)),
    outputs=(
        ("objective_state", "active", objective_state.MODEL_VERSION),
        ("objective_advisory", "overview", objective_advisory.MODEL_VERSION),
    ),
    fold=fold_objective_foundation,
)

HANDLERS: Final[tuple[ProjectionHandler, ...]] = (OBJECTIVE_FOUNDATION,)

_BY_EVENT_TYPE: Final[Mapping[str, tuple[ProjectionHandler, ...]]] = {
    event_type: tuple(h for h in HANDLERS if event_type in h.event_types)
    for event_type in sorted({t for h in HANDLERS for t in h.event_types})
}


def handlers_for_event_type(event_type: str) -> tuple[ProjectionHandler, ...]:
    """Handlers an event of this type triggers; a retraction triggers none by itself (the
    shell re-runs the handlers of the retracted event's type)."""
    return _BY_EVENT_TYPE.get(event_type, ())


def fold_user(
    events: Sequence[Event], now: datetime, handlers: Iterable[ProjectionHandler]
) -> Outputs:
    """Every output of `handlers` for one user's events; two handlers may not share a row."""
    outputs: Outputs = {}
    for handler in handlers:
        for row, data in handler.fold(events, now).items():
            if row in outputs:
                raise ValueError(f"projection {row} is written by more than one handler")
            outputs[row] = data
    return outputs
