"""`objective_state/active` (docs/contract.md §4.1): the user's active objective and its provenance.

Pure fold: events in, JSON-ready dict out. One function per event type; `_HANDLERS`
dispatches. Training and profile events feed the modality (stride.domain.modality).
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final
from uuid import UUID

from stride.domain.events import Event
from stride.domain.modality import ENDURANCE, HYBRID, STRENGTH, Modality, modality_from_groups
from stride.domain.normalise import (
    MAX_TEXT,
    MISSING_REQUIRED,
    TRUNCATED,
    Ignore,
    IgnoredFields,
    Scalar,
    as_choice,
    as_int,
    as_number,
    as_object,
    as_object_list,
    as_text,
    as_text_list,
    as_token,
    clamp_confidence,
    event_data,
    is_blank,
    iso_utc,
    ordered_events,
)

SCHEMA_VERSION: Final = "objective_state.v1"
MODEL_VERSION: Final = "objective_state/2026.11.1"
# Grows by one with every change of this fold's logic, a rollback included (a
# rollback is deployed as a new, higher revision); MODEL_VERSION names it.
REVISION: Final = 1

OBJECTIVE_SET: Final = "objective.set"
OBJECTIVE_UPDATED: Final = "objective.updated"
OBJECTIVE_ARCHIVED: Final = "objective.archived"
GOAL_SET: Final = "goal.set"
OVERRIDE_RECORDED: Final = "advisory.override.recorded"

BLANK_OBJECTIVE_ID: Final = "objective.default"
LEGACY_OBJECTIVE_ID: Final = "legacy.goal.latest"
DEFAULT_OBJECTIVE_ID: Final = "default.objective"
MAX_HISTORY: Final = 120
MAX_OBJECTIVE_ID: Final = 200

MODES: Final = frozenset({"journal", "collaborate", "coach"})
SOURCES: Final = frozenset({"user_explicit", "agent_suggested", "default_inferred"})
DEFAULT_MODE: Final = "collaborate"
DEFAULT_SOURCE: Final = "user_explicit"
# Confidence an explicit objective gets when its event states none, by source.
SOURCE_CONFIDENCE: Final[Mapping[str, float]] = {
    "user_explicit": 0.9,
    "agent_suggested": 0.6,
    "default_inferred": 0.45,
}
LEGACY_CONFIDENCE: Final = 0.7
DEFAULT_CONFIDENCE: Final = 0.45
DEFAULT_GOAL_TYPES: Final[Mapping[str, str]] = {
    STRENGTH: "strength_base",
    ENDURANCE: "endurance_base",
    HYBRID: "hybrid_base",
}
GOAL_TOKEN_KEYS: Final = frozenset({"type", "target_metric", "metric"})
UNRESOLVABLE_FIELDS: Final = ("primary_goal", "success_metrics", "constraint_markers")


@dataclass(slots=True)
class Objective:
    """One objective as folded so far; list fields are None until validly provided."""

    objective_id: str
    mode: str = DEFAULT_MODE
    primary_goal: dict[str, Scalar] | None = None
    secondary_goals: list[dict[str, Scalar]] | None = None
    anti_goals: list[str] | None = None
    success_metrics: list[dict[str, Scalar]] | None = None
    constraint_markers: list[str] | None = None
    hypothesis: str | None = None
    source: str = DEFAULT_SOURCE
    confidence: float | None = None
    archived: bool = False
    version: int = 1
    updated_at: datetime | None = None
    touched: tuple[datetime, UUID] | None = None

    def to_data(self) -> dict[str, Any]:
        """JSON-ready rendering; never-provided lists render as empty lists."""
        return {
            "objective_id": self.objective_id,
            "mode": self.mode,
            "primary_goal": dict(self.primary_goal) if self.primary_goal is not None else None,
            "secondary_goals": [dict(g) for g in self.secondary_goals or ()],
            "anti_goals": list(self.anti_goals or ()),
            "success_metrics": [dict(m) for m in self.success_metrics or ()],
            "constraint_markers": list(self.constraint_markers or ()),
            "hypothesis": self.hypothesis,
            "source": self.source,
            "confidence": self.effective_confidence(),
            "archived": self.archived,
            "version": self.version,
            "updated_at": iso_utc(self.updated_at) if self.updated_at else None,
        }

    def effective_confidence(self) -> float:
        """The stated confidence, else the default for the objective's source."""
        if self.confidence is not None:
            return self.confidence
        return SOURCE_CONFIDENCE.get(self.source, DEFAULT_CONFIDENCE)

    def unresolved_fields(self) -> list[str]:
        """Which of primary_goal, success_metrics, constraint_markers are missing/malformed."""
        missing = {
            "primary_goal": self.primary_goal is None,
            "success_metrics": not self.success_metrics,
            "constraint_markers": self.constraint_markers is None,
        }
        return [name for name in UNRESOLVABLE_FIELDS if missing[name]]


@dataclass(slots=True)
class _Fold:
    """Mutable accumulator of one objective_state fold."""

    ignored: IgnoredFields = field(default_factory=IgnoredFields)
    objectives: dict[str, Objective] = field(default_factory=dict)
    legacy_goal: Objective | None = None
    history: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=MAX_HISTORY))
    explicit_events: int = 0
    legacy_events: int = 0
    override_events: int = 0


@dataclass(frozen=True, slots=True)
class ObjectiveState:
    """The folded `objective_state/active`, typed for the folds that read it (the advisory).

    `to_data()` renders the projection's JSON. The objects it holds are not changed
    once the fold has returned.
    """

    active: Objective
    active_kind: str
    history: tuple[dict[str, Any], ...]  # newest first
    explicit_events: int
    legacy_events: int
    override_events: int
    modality: Modality
    data_quality: dict[str, Any]

    def to_data(self) -> dict[str, Any]:
        data = self.active.to_data()
        return {
            "schema_version": SCHEMA_VERSION,
            "model_version": MODEL_VERSION,
            "active_objective": data,
            "objective_history": list(self.history),
            "active_constraints": list(data["constraint_markers"]),
            "unresolved_fields": self.active.unresolved_fields(),
            "inferred_confidence": data["confidence"],
            "source_summary": {
                "explicit_objective_events": self.explicit_events,
                "legacy_goal_events": self.legacy_events,
                "override_rationale_events": self.override_events,
                "default_inferred": self.active_kind == "default",
                "active_kind": self.active_kind,
            },
            "modality": self.modality.to_data(),
            "data_quality": self.data_quality,
        }


def fold_objective_state(events: Sequence[Event], now: datetime) -> dict[str, Any]:
    """`objective_state/active` data from a user's events in any order (retractions applied).

    `now` is accepted for the uniform fold signature; this projection does not depend on it.
    """
    return fold_ordered_state(ordered_events(events)).to_data()


def fold_state(events: Sequence[Event]) -> ObjectiveState:
    """The typed state from a user's events in any order (retractions applied)."""
    return fold_ordered_state(ordered_events(events))


def fold_ordered_state(events: Sequence[Event]) -> ObjectiveState:
    """The fold proper, for non-retracted events already in (timestamp, id) order."""
    fold = _Fold()
    groups: defaultdict[str, list[Event]] = defaultdict(list)
    handlers = _HANDLERS
    for event in events:
        kind = event.event_type
        groups[kind].append(event)
        if kind in handlers:
            handlers[kind](fold, event, fold.ignored.sink(event))
    modality = modality_from_groups(groups, fold.ignored)
    active, kind = _active_objective(fold, modality.resolved)
    return ObjectiveState(
        active=active,
        active_kind=kind,
        history=tuple(reversed(fold.history)),
        explicit_events=fold.explicit_events,
        legacy_events=fold.legacy_events,
        override_events=fold.override_events,
        modality=modality,
        data_quality=fold.ignored.as_data(),
    )


def _active_objective(fold: _Fold, resolved_modality: str) -> tuple[Objective, str]:
    """(objective, kind): the latest-touched non-archived explicit objective, else the
    legacy goal, else the default inferred from the modality."""
    latest: Objective | None = None
    for objective in fold.objectives.values():
        if objective.archived or objective.touched is None:
            continue
        if latest is None or latest.touched is None or objective.touched > latest.touched:
            latest = objective
    if latest is not None:
        return latest, "explicit"
    if fold.legacy_goal is not None:
        return fold.legacy_goal, "legacy_goal"
    return default_objective(resolved_modality), "default"


def default_objective(resolved_modality: str) -> Objective:
    """The objective inferred when the user stated none (docs/contract.md §4.1)."""
    return Objective(
        objective_id=DEFAULT_OBJECTIVE_ID,
        mode="journal",
        primary_goal={"type": DEFAULT_GOAL_TYPES.get(resolved_modality, "general_health")},
        success_metrics=[{"metric": "consistency_score"}],
        source="default_inferred",
        confidence=DEFAULT_CONFIDENCE,
    )


# --- one function per event type -------------------------------------------------------


def _on_objective_set(fold: _Fold, event: Event, ignore: Ignore) -> None:
    """A fresh objective (version 1, not archived) under its id, replacing any previous."""
    data = event_data(event, ignore)
    objective = Objective(objective_id=_objective_id(data, ignore))
    _merge_fields(objective, data, ignore)
    _touch(objective, event)
    fold.objectives[objective.objective_id] = objective
    fold.explicit_events += 1
    _record_history(fold, event, objective.objective_id, objective.source)


def _on_objective_updated(fold: _Fold, event: Event, ignore: Ignore) -> None:
    """Merge over the previous version; omitted (or null) fields keep their value."""
    data = event_data(event, ignore)
    objective_id = _objective_id(data, ignore)
    objective = fold.objectives.get(objective_id)
    if objective is None:
        objective = Objective(objective_id=objective_id, version=0)
        fold.objectives[objective_id] = objective
    _merge_fields(objective, data, ignore)
    objective.version += 1
    _touch(objective, event)
    fold.explicit_events += 1
    _record_history(fold, event, objective_id, objective.source)


def _on_objective_archived(fold: _Fold, event: Event, ignore: Ignore) -> None:
    """Archive the objective; an update does not revive it, only a new objective.set does."""
    data = event_data(event, ignore)
    objective_id = _objective_id(data, ignore)
    as_text(data.get("reason"), "reason", ignore)
    archived_by = as_token(data.get("archived_by"), "archived_by", ignore)
    objective = fold.objectives.get(objective_id)
    if objective is not None:
        objective.archived = True
        _touch(objective, event)
    else:
        ignore("objective_id", "unknown_objective")
    fold.explicit_events += 1
    _record_history(fold, event, objective_id, archived_by or "unspecified")


def _on_goal_set(fold: _Fold, event: Event, ignore: Ignore) -> None:
    """The latest legacy goal.set, mapped to an objective (docs/contract.md §4.1)."""
    data = event_data(event, ignore)
    goal_type = as_token(data.get("goal_type"), "goal_type", ignore) or "health"
    goal: dict[str, Scalar] = {"type": goal_type}
    description = as_text(data.get("description"), "description", ignore)
    exercise = as_text(data.get("target_exercise"), "target_exercise", ignore, max_len=200)
    target_kg = _positive(data.get("target_1rm_kg"), "target_1rm_kg", ignore)
    weeks = as_int(data.get("timeframe_weeks"), "timeframe_weeks", ignore, 1, 520)
    if description is not None:
        goal["description"] = description
    if exercise is not None:
        goal["target_exercise"] = exercise
    metrics: list[dict[str, Scalar]] = []
    if target_kg is not None:
        goal.update(target_metric="1rm", value=target_kg, unit="kg")
        metric: dict[str, Scalar] = {"metric": "1rm", "value": target_kg, "unit": "kg"}
        if exercise is not None:
            metric["target_exercise"] = exercise
        metrics.append(metric)
    if weeks is not None:
        goal["timeframe_weeks"] = weeks
    fold.legacy_events += 1
    fold.legacy_goal = Objective(
        objective_id=LEGACY_OBJECTIVE_ID,
        mode="collaborate",
        primary_goal=dict(sorted(goal.items())),
        success_metrics=metrics,
        source="legacy_goal_set",
        confidence=LEGACY_CONFIDENCE,
        version=fold.legacy_events,
        updated_at=event.timestamp,
    )
    _record_history(fold, event, LEGACY_OBJECTIVE_ID, "legacy_goal_set")


def _on_override_recorded(fold: _Fold, event: Event, ignore: Ignore) -> None:
    """Overrides are counted here; the advisory projection reads their content."""
    fold.override_events += 1


_HANDLERS: Final[Mapping[str, Callable[[_Fold, Event, Ignore], None]]] = {
    OBJECTIVE_SET: _on_objective_set,
    OBJECTIVE_UPDATED: _on_objective_updated,
    OBJECTIVE_ARCHIVED: _on_objective_archived,
    GOAL_SET: _on_goal_set,
    OVERRIDE_RECORDED: _on_override_recorded,
}


# --- field normalisation -----------------------------------------------------------------


def _objective_id(data: Mapping[str, Any], ignore: Ignore) -> str:
    """The objective_id; blank means `objective.default` (docs/contract.md §3); missing is
    reported."""
    raw = data.get("objective_id")
    if raw is None:
        ignore("objective_id", MISSING_REQUIRED)
        return BLANK_OBJECTIVE_ID
    if isinstance(raw, str) and len(raw) > MAX_OBJECTIVE_ID:
        ignore("objective_id", TRUNCATED)
    text = as_text(raw, "objective_id", ignore, max_len=MAX_OBJECTIVE_ID)
    return text if text is not None else BLANK_OBJECTIVE_ID


def _parse_primary_goal(value: object, name: str, ignore: Ignore) -> dict[str, Scalar] | None:
    """An object; a bare string is taken as the goal's type (one word) or description."""
    if isinstance(value, str):
        text = as_text(value, name, ignore)
        if text is None:
            return None
        goal_type = as_token(text, name, ignore)
        return {"type": goal_type} if goal_type and " " not in text else {"description": text}
    return as_object(value, name, ignore, GOAL_TOKEN_KEYS)


def _parse_goal_list(value: object, name: str, ignore: Ignore) -> list[dict[str, Scalar]] | None:
    return as_object_list(value, name, ignore, "type", GOAL_TOKEN_KEYS)


def _parse_metric_list(value: object, name: str, ignore: Ignore) -> list[dict[str, Scalar]] | None:
    return as_object_list(value, name, ignore, "metric", GOAL_TOKEN_KEYS)


def _parse_mode(value: object, name: str, ignore: Ignore) -> str | None:
    return as_choice(value, name, ignore, MODES)


def _parse_source(value: object, name: str, ignore: Ignore) -> str | None:
    return as_choice(value, name, ignore, SOURCES)


def _parse_hypothesis(value: object, name: str, ignore: Ignore) -> str | None:
    return as_text(value, name, ignore, max_len=MAX_TEXT)


# Field -> parser. Parsers return None for values they could not use (and report them).
_FIELD_PARSERS: Final[tuple[tuple[str, Callable[[object, str, Ignore], Any]], ...]] = (
    ("mode", _parse_mode),
    ("primary_goal", _parse_primary_goal),
    ("secondary_goals", _parse_goal_list),
    ("anti_goals", as_text_list),
    ("success_metrics", _parse_metric_list),
    ("constraint_markers", as_text_list),
    ("hypothesis", _parse_hypothesis),
    ("source", _parse_source),
    ("confidence", clamp_confidence),
)
# Fields an explicit blank string clears; mode, source and confidence always keep a value.
_CLEARABLE: Final = frozenset({"primary_goal", "hypothesis"})


def _merge_fields(objective: Objective, data: Mapping[str, Any], ignore: Ignore) -> None:
    """Apply the fields `data` carries; null means 'not sent' (clients serialise absent
    optionals as null), an unusable value keeps the previous one."""
    for name, parse in _FIELD_PARSERS:
        raw = data.get(name)
        if raw is None:
            continue
        value = parse(raw, name, ignore)
        if value is not None:
            setattr(objective, name, value)
        elif name in _CLEARABLE and is_blank(raw):
            setattr(objective, name, None)


def _positive(value: object, name: str, ignore: Ignore) -> int | float | None:
    """A number greater than zero (a target load)."""
    number = as_number(value, name, ignore)
    if number is not None and number <= 0:
        ignore(name, "out_of_range")
        return None
    return number


def _touch(objective: Objective, event: Event) -> None:
    objective.updated_at = event.timestamp
    objective.touched = event.order_key


def _record_history(fold: _Fold, event: Event, objective_id: str, source: str) -> None:
    fold.history.append(
        {
            "event_id": str(event.id),
            "event_type": event.event_type,
            "objective_id": objective_id,
            "timestamp": iso_utc(event.timestamp),
            "source": source,
        }
    )
