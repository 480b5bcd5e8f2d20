"""Properties every fold must keep (docs/contract.md §4), and the read models' registration."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from uuid import UUID

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stride.domain.events import OBJECTIVE_EVENT_TYPES, RETRACTION_EVENT_TYPE, Event
from stride.projections import objective_advisory, objective_state
from stride.projections.registry import (
    OBJECTIVE_FOUNDATION,
    READ_MODELS,
    fold_objective_foundation,
    fold_user,
    read_models_for_event_type,
)

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
USER = UUID(int=3)
ROWS = {("objective_state", "active"), ("objective_advisory", "overview")}

FAST = settings(max_examples=150, deadline=None)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**20), max_value=10**20)
    | st.floats()
    | st.text(max_size=12)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=16,
)
# Values the folds recognise, so the properties also exercise the meaningful branches.
plausible = st.sampled_from(
    [
        "strength",
        "running",
        "yoga",
        "coach",
        "journal",
        "agent_suggested",
        "default_inferred",
        "",
        " ",
        "o1",
        "o2",
        "2026-02-01",
        "2026-03-05T10:00:00+02:00",
        0.5,
        1.7,
        -1,
        80,
        {"type": "endurance", "target": "sub 4h"},
        [{"metric": "1rm"}, "pace"],
        ["knee_pain", "knee_pain"],
        [{"block_type": "strength_set"}, {"block_type": "continuous_endurance"}],
        {"workout_type": "run"},
        {"sport": "cycling"},
        {"provider": "strava"},
    ]
)
FIELDS = [
    "objective_id",
    "mode",
    "primary_goal",
    "secondary_goals",
    "anti_goals",
    "success_metrics",
    "constraint_markers",
    "hypothesis",
    "source",
    "confidence",
    "goal_type",
    "target_1rm_kg",
    "timeframe_weeks",
    "training_modality",
    "reason",
    "scope",
    "actor",
    "review_point",
    "archived_by",
    "blocks",
    "session_meta",
    "workout",
]
event_data = st.one_of(
    st.dictionaries(st.sampled_from(FIELDS), plausible | json_values, max_size=6),
    json_values,
)
zones = st.sampled_from([UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-7)), None])


@st.composite
def histories(draw: st.DrawFn, max_size: int = 25) -> list[Event]:
    """A user's events with unique ids, arbitrary data and timestamps within ~200 days."""
    size = draw(st.integers(min_value=0, max_value=max_size))
    events = []
    for index in range(size):
        event_type = draw(st.sampled_from([*OBJECTIVE_EVENT_TYPES, "other.type"]))
        minutes = draw(st.integers(min_value=-60 * 24, max_value=60 * 24 * 200))
        moment = NOW - timedelta(minutes=minutes)
        zone = draw(zones)
        stamp = moment.replace(tzinfo=None) if zone is None else moment.astimezone(zone)
        events.append(Event(UUID(int=index + 1), USER, event_type, stamp, draw(event_data)))
    return events


def render(outputs: dict[tuple[str, str], dict[str, Any]]) -> str:
    """Byte-level comparison form; fails on NaN, sets or other non-JSON values."""
    return json.dumps(
        {f"{ptype}/{key}": data for (ptype, key), data in outputs.items()},
        sort_keys=True,
        allow_nan=False,
    )


def fold(events: list[Event], now: datetime = NOW) -> str:
    return render(fold_user(events, now, READ_MODELS))


# --- properties ------------------------------------------------------------------------------


@FAST
@given(histories())
def test_same_events_and_now_give_identical_data(events: list[Event]) -> None:
    assert fold(events) == fold(list(events))


@FAST
@given(histories().flatmap(lambda events: st.tuples(st.just(events), st.permutations(events))))
def test_input_order_does_not_matter(pair: tuple[list[Event], list[Event]]) -> None:
    events, shuffled = pair
    assert fold(events) == fold(shuffled)


@FAST
@given(histories(), st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1)))
def test_arbitrary_json_never_raises_and_output_is_json(events: list[Event], now: datetime) -> None:
    outputs = fold_user(events, now.replace(tzinfo=UTC), READ_MODELS)
    assert set(outputs) == ROWS
    for data in outputs.values():
        assert json.loads(json.dumps(data, allow_nan=False)) == data


@FAST
@given(histories(max_size=15).filter(bool), st.data())
def test_retracting_an_event_equals_never_logging_it(
    events: list[Event], data: st.DataObject
) -> None:
    target = data.draw(st.sampled_from(events))
    minutes = data.draw(st.integers(min_value=-1000, max_value=1000))
    spelled = data.draw(st.sampled_from([str(target.id), str(target.id).upper()]))
    retraction = Event(
        UUID(int=10_000),
        USER,
        RETRACTION_EVENT_TYPE,
        NOW + timedelta(minutes=minutes),
        {"retracted_event_id": spelled, "retracted_event_type": target.event_type},
    )
    never_logged = [e for e in events if e.id != target.id]
    assert fold([*events, retraction]) == fold(never_logged)


@FAST
@given(histories())
def test_set_logged_data_is_never_read(events: list[Event]) -> None:
    stripped = [
        Event(e.id, e.user_id, e.event_type, e.timestamp, {}) if e.event_type == "set.logged" else e
        for e in events
    ]
    assert fold(events) == fold(stripped)


# --- fixed cases the properties rely on ------------------------------------------------------


def test_empty_history_yields_both_projections() -> None:
    outputs = fold_user([], NOW, READ_MODELS)
    assert set(outputs) == ROWS
    state = outputs[("objective_state", "active")]
    assert state["active_objective"]["objective_id"] == "default.objective"
    assert outputs[("objective_advisory", "overview")]["objective_snapshot"]["source"] == (
        "default_inferred"
    )


def test_deeply_nested_and_huge_values_are_bounded() -> None:
    nested: Any = "leaf"
    for _ in range(5000):
        nested = {"x": [nested]}
    huge = ["marker"] * 200_000
    events = [
        Event(
            UUID(int=1), USER, "objective.set", NOW, {"objective_id": "o", "primary_goal": nested}
        ),
        Event(
            UUID(int=2), USER, "objective.updated", NOW, {"objective_id": "o", "anti_goals": huge}
        ),
        Event(UUID(int=3), USER, "session.logged", NOW, {"blocks": huge, "session_meta": nested}),
        Event(UUID(int=4), USER, "advisory.override.recorded", NOW, {"reason": "x" * 10**6}),
    ]
    outputs = fold_user(events, NOW, READ_MODELS)
    assert len(render(outputs)) < 100_000


def test_projection_data_carries_versions() -> None:
    outputs = fold_objective_foundation([], NOW)
    state = outputs[("objective_state", "active")]
    advisory = outputs[("objective_advisory", "overview")]
    assert (state["schema_version"], state["model_version"]) == (
        objective_state.SCHEMA_VERSION,
        objective_state.MODEL_VERSION,
    )
    assert (advisory["schema_version"], advisory["model_version"]) == (
        objective_advisory.SCHEMA_VERSION,
        objective_advisory.MODEL_VERSION,
    )


def test_generated_at_is_the_injected_now() -> None:
    later = NOW + timedelta(days=3)
    advisory = fold_user([], later, READ_MODELS)[("objective_advisory", "overview")]
    assert advisory["generated_at"] == "2026-03-04T12:00:00.000000Z"


# --- registry --------------------------------------------------------------------------------


@pytest.mark.parametrize("event_type", OBJECTIVE_EVENT_TYPES)
def test_every_objective_event_type_triggers_the_read_model(event_type: str) -> None:
    assert read_models_for_event_type(event_type) == (OBJECTIVE_FOUNDATION,)


@pytest.mark.parametrize("event_type", [RETRACTION_EVENT_TYPE, "workout.planned", ""])
def test_other_event_types_trigger_nothing(event_type: str) -> None:
    assert read_models_for_event_type(event_type) == ()


def test_fold_user_rejects_two_read_models_writing_one_row() -> None:
    with pytest.raises(ValueError, match="more than one read model"):
        fold_user([], NOW, [OBJECTIVE_FOUNDATION, OBJECTIVE_FOUNDATION])


def test_fold_user_with_no_read_models_writes_nothing() -> None:
    assert fold_user([], NOW, []) == {}


def test_extreme_timestamps_never_raise() -> None:
    first = datetime(1, 1, 1, tzinfo=UTC)
    last = datetime(9999, 12, 31, 23, tzinfo=UTC)
    events = [
        Event(UUID(int=1), USER, "set.logged", first + timedelta(days=1)),
        Event(UUID(int=2), USER, "objective.set", first, {"objective_id": "x"}),
        Event(
            UUID(int=3),
            USER,
            "advisory.override.recorded",
            last,
            {"reason": "x", "review_point": "9999-12-31T23:00:00-05:00"},
        ),
    ]
    outputs = fold_user(events, NOW, READ_MODELS)
    modality = outputs[("objective_state", "active")]["modality"]
    assert modality["observed"]["window_start"] == "0001-01-01"
    advisory = outputs[("objective_advisory", "overview")]
    assert advisory["data_quality"]["ignored_fields"][0]["reason"] == "invalid_date"
