"""The read models: which event types trigger each, which it reads, and how it folds a user.

A read model is a pure fold plus its registration. The I/O service
(stride.readmodels) loads `input_event_types` (without data for
`timestamp_only_event_types`), calls `fold_user`, and writes each returned
(projection_type, key) row.

Every output declares two versions: `model_version`, a readable label that
names the logic, and `revision`, an integer that grows by one with every
change of the logic (a rollback too: it is deployed as a new, higher
revision). Labels have no order; revisions do, and the projection store never
lets a lower revision replace a higher one (stride.storage.projection_store).
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
class ReadModelOutput:
    """One row a read model writes per user, and the logic version that writes it.

    `revision` starts at 1 (0 marks rows stored before revisions existed) and
    only ever grows.
    """

    projection_type: str
    key: str
    model_version: str
    revision: int

    def __post_init__(self) -> None:
        if isinstance(self.revision, bool) or not isinstance(self.revision, int):
            raise TypeError(f"{self.name}: revision must be an int, not {self.revision!r}")
        if self.revision < 1:
            raise ValueError(f"{self.name}: revision must be at least 1, not {self.revision}")

    @property
    def row(self) -> tuple[str, str]:
        return (self.projection_type, self.key)

    @property
    def name(self) -> str:
        """`projection_type/key`, as reports and job payloads spell an output."""
        return f"{self.projection_type}/{self.key}"


@dataclass(frozen=True, slots=True)
class ReadModel:
    """A fold and the event types that trigger it, feed it, and the rows it writes."""

    name: str
    event_types: frozenset[str]
    input_event_types: frozenset[str]
    timestamp_only_event_types: frozenset[str]
    outputs: tuple[ReadModelOutput, ...]
    fold: Callable[[Sequence[Event], datetime], Outputs]


def fold_objective_foundation(events: Sequence[Event], now: datetime) -> Outputs:
    """Both objective projections from one event list (any order, retractions applied).

    The advisory reads the state as a typed value, not as its rendered JSON.
    """
    ordered = ordered_events(events)
    state = objective_state.fold_ordered_state(ordered)
    advisory = objective_advisory.fold_ordered_advisory(ordered, now, state)
    return {
        ("objective_state", "active"): state.to_data(),
        ("objective_advisory", "overview"): advisory,
    }


OBJECTIVE_FOUNDATION: Final = ReadModel(
    name="objective_foundation",
    event_types=frozenset(OBJECTIVE_EVENT_TYPES),
    input_event_types=frozenset((*OBJECTIVE_EVENT_TYPES, RETRACTION_EVENT_TYPE)),
    timestamp_only_event_types=frozenset((SET_LOGGED,)),
    outputs=(
        ReadModelOutput(
            "objective_state", "active", objective_state.MODEL_VERSION, objective_state.REVISION
        ),
        ReadModelOutput(
            "objective_advisory",
            "overview",
            objective_advisory.MODEL_VERSION,
            objective_advisory.REVISION,
        ),
    ),
    fold=fold_objective_foundation,
)

READ_MODELS: Final[tuple[ReadModel, ...]] = (OBJECTIVE_FOUNDATION,)

_BY_EVENT_TYPE: Final[Mapping[str, tuple[ReadModel, ...]]] = {
    event_type: tuple(m for m in READ_MODELS if event_type in m.event_types)
    for event_type in sorted({t for m in READ_MODELS for t in m.event_types})
}


def read_models_for_event_type(
    event_type: str, read_models: Iterable[ReadModel] = READ_MODELS
) -> tuple[ReadModel, ...]:
    """Read models (of `read_models`, by default the registry) an event of this type triggers;
    a retraction triggers none by itself (the I/O service re-runs the read models of the
    retracted event's type)."""
    if read_models is READ_MODELS:
        return _BY_EVENT_TYPE.get(event_type, ())
    return tuple(m for m in read_models if event_type in m.event_types)


def outputs_of(read_models: Iterable[ReadModel] = READ_MODELS) -> tuple[ReadModelOutput, ...]:
    """Every output of `read_models`, in registry order."""
    return tuple(output for read_model in read_models for output in read_model.outputs)


# At most this many unreadable events are listed per projection (all are counted).
UNREADABLE_LISTED: Final = 20


def fold_user(events: Sequence[Event], now: datetime, read_models: Iterable[ReadModel]) -> Outputs:
    """Every output of `read_models` for one user's events; two may not share a row.

    Events the loader could not read back are left out of the folds and listed
    in each output's `data_quality.unreadable_events`: one bad row never costs
    the user their projections.
    """
    readable = [e for e in events if e.unreadable is None]
    unreadable = sorted((e for e in events if e.unreadable is not None), key=lambda e: e.id)
    outputs: Outputs = {}
    for read_model in read_models:
        for row, data in read_model.fold(readable, now).items():
            if row in outputs:
                raise ValueError(f"projection {row} is written by more than one read model")
            outputs[row] = _with_unreadable(data, unreadable) if unreadable else data
    return outputs


def _with_unreadable(data: dict[str, Any], unreadable: Sequence[Event]) -> dict[str, Any]:
    quality = data.get("data_quality")
    quality = dict(quality) if isinstance(quality, Mapping) else {}
    quality["unreadable_events_count"] = len(unreadable)
    quality["unreadable_events"] = [
        {"event_id": str(e.id), "event_type": e.event_type, "reason": e.unreadable}
        for e in unreadable[:UNREADABLE_LISTED]
    ]
    return {**data, "data_quality": quality}
