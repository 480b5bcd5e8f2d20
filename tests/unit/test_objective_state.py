"""objective_state/active (spec §4.1): precedence, merge, archive fallback, provenance."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest

from stride.domain.events import Event
from stride.projections.objective_state import (
    MODEL_VERSION,
    SCHEMA_VERSION,
    fold_objective_state,
)

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
USER = UUID(int=9)
_ids = itertools.count(1)


def ev(event_type: str, days_ago: float, data: Any = None) -> Event:
    at = NOW - timedelta(days=days_ago)
    return Event(UUID(int=next(_ids)), USER, event_type, at, {} if data is None else data)


def objective_set(days_ago: float, objective_id: str = "o1", **fields: Any) -> Event:
    return ev("objective.set", days_ago, {"objective_id": objective_id, **fields})


def objective_updated(days_ago: float, objective_id: str = "o1", **fields: Any) -> Event:
    return ev("objective.updated", days_ago, {"objective_id": objective_id, **fields})


def archived(days_ago: float, objective_id: str = "o1", **fields: Any) -> Event:
    return ev("objective.archived", days_ago, {"objective_id": objective_id, **fields})


def goal_set(days_ago: float, **fields: Any) -> Event:
    return ev("goal.set", days_ago, fields)


def fold(events: list[Event]) -> dict[str, Any]:
    return fold_objective_state(events, NOW)


def active(events: list[Event]) -> dict[str, Any]:
    result: dict[str, Any] = fold(events)["active_objective"]
    return result


def ignored(state: dict[str, Any]) -> set[tuple[str, str, str]]:
    entries = state["data_quality"]["ignored_fields"]
    return {(e["event_type"], e["field"], e["reason"]) for e in entries}


# --- active objective precedence -----------------------------------------------------------


@pytest.mark.parametrize(
    ("events", "objective_id", "source"),
    [
        pytest.param([], "default.objective", "default_inferred", id="no-events"),
        pytest.param([ev("set.logged", 1)], "default.objective", "default_inferred", id="training"),
        pytest.param(
            [goal_set(5, goal_type="strength")],
            "legacy.goal.latest",
            "legacy_goal_set",
            id="legacy",
        ),
        pytest.param([objective_set(5)], "o1", "user_explicit", id="explicit"),
        pytest.param(
            [objective_set(9), goal_set(1, goal_type="strength")],
            "o1",
            "user_explicit",
            id="explicit-beats-newer-legacy",
        ),
        pytest.param(
            [objective_set(9, "a"), objective_set(5, "b")], "b", "user_explicit", id="latest-set"
        ),
        pytest.param(
            [objective_set(9, "a"), objective_set(5, "b"), objective_updated(1, "a")],
            "a",
            "user_explicit",
            id="update-touches",
        ),
        pytest.param(
            [objective_set(9, "a"), objective_set(5, "b"), archived(1, "b")],
            "a",
            "user_explicit",
            id="archived-falls-back-to-other-explicit",
        ),
        pytest.param(
            [goal_set(20), objective_set(9), archived(1)],
            "legacy.goal.latest",
            "legacy_goal_set",
            id="archive-falls-back-to-legacy",
        ),
        pytest.param(
            [objective_set(9), archived(1)],
            "default.objective",
            "default_inferred",
            id="archive-falls-back-to-default",
        ),
        pytest.param(
            [objective_set(9), archived(5), objective_set(1)],
            "o1",
            "user_explicit",
            id="set-revives-archived-id",
        ),
        pytest.param(
            [objective_set(9), archived(5), objective_updated(1)],
            "default.objective",
            "default_inferred",
            id="update-does-not-revive",
        ),
        pytest.param(
            [objective_set(9, "a", source="agent_suggested")],
            "a",
            "agent_suggested",
            id="agent-suggested-is-explicit",
        ),
    ],
)
def test_active_objective_precedence(events: list[Event], objective_id: str, source: str) -> None:
    objective = active(events)
    assert (objective["objective_id"], objective["source"]) == (objective_id, source)
    assert objective["archived"] is False


def test_same_timestamp_ties_break_on_event_id() -> None:
    at = NOW - timedelta(days=1)
    first = Event(UUID(int=1), USER, "objective.set", at, {"objective_id": "a"})
    second = Event(UUID(int=2), USER, "objective.set", at, {"objective_id": "b"})
    assert active([second, first])["objective_id"] == "b"


@pytest.mark.parametrize(
    ("events", "goal_type"),
    [
        ([], "general_health"),
        ([ev("set.logged", d) for d in range(1, 6)], "strength_base"),
        (
            [ev("external.activity_imported", 1, {"workout": {"workout_type": "run"}})],
            "endurance_base",
        ),
        ([ev("session.logged", 1, {"blocks": [{"block_type": "circuit_hybrid"}]})], "hybrid_base"),
        ([ev("profile.updated", 1, {"training_modality": "powerlifting"})], "strength_base"),
        ([ev("profile.updated", 1, {"training_modality": "yoga"})], "general_health"),
        (
            [ev("external.activity_imported", 1, {"workout": {"workout_type": "yoga"}})],
            "general_health",
        ),
    ],
)
def test_default_objective_follows_modality(events: list[Event], goal_type: str) -> None:
    objective = active(events)
    assert objective == {
        "objective_id": "default.objective",
        "mode": "journal",
        "primary_goal": {"type": goal_type},
        "secondary_goals": [],
        "anti_goals": [],
        "success_metrics": [{"metric": "consistency_score"}],
        "constraint_markers": [],
        "hypothesis": None,
        "source": "default_inferred",
        "confidence": 0.45,
        "archived": False,
        "version": 1,
        "updated_at": None,
    }


# --- legacy goal.set -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "primary_goal", "metrics"),
    [
        ({}, {"type": "health"}, []),
        ({"goal_type": "Strength"}, {"type": "strength"}, []),
        ({"goal_type": "   "}, {"type": "health"}, []),
        (
            {
                "goal_type": "strength",
                "description": " Squat more ",
                "target_exercise": "Back Squat",
                "target_1rm_kg": "180",
                "timeframe_weeks": 12,
            },
            {
                "type": "strength",
                "description": "Squat more",
                "target_exercise": "Back Squat",
                "target_metric": "1rm",
                "value": 180,
                "unit": "kg",
                "timeframe_weeks": 12,
            },
            [{"metric": "1rm", "value": 180, "unit": "kg", "target_exercise": "Back Squat"}],
        ),
        ({"target_1rm_kg": -5, "timeframe_weeks": 0.5}, {"type": "health"}, []),
    ],
)
def test_legacy_goal_mapping(
    fields: dict[str, Any], primary_goal: dict[str, Any], metrics: list[dict[str, Any]]
) -> None:
    objective = active([goal_set(3, **fields)])
    assert objective["objective_id"] == "legacy.goal.latest"
    assert objective["mode"] == "collaborate"
    assert objective["source"] == "legacy_goal_set"
    assert objective["confidence"] == 0.7
    assert objective["primary_goal"] == primary_goal
    assert objective["success_metrics"] == metrics


def test_latest_legacy_goal_wins() -> None:
    events = [goal_set(1, goal_type="endurance"), goal_set(9, goal_type="strength")]
    objective = active(events)
    assert objective["primary_goal"] == {"type": "endurance"}
    assert objective["version"] == 2


# --- set and update merge ------------------------------------------------------------------

FULL: dict[str, Any] = {
    "mode": "coach",
    "primary_goal": {"type": "strength", "target": "200 kg squat"},
    "secondary_goals": [{"type": "mobility"}],
    "anti_goals": ["fat gain"],
    "success_metrics": [{"metric": "1rm_squat", "value": 200, "unit": "kg"}],
    "constraint_markers": ["knee_pain"],
    "hypothesis": "more volume",
    "source": "user_explicit",
    "confidence": 0.8,
}


def test_set_carries_every_field() -> None:
    objective = active([objective_set(3, **FULL)])
    assert objective == {
        "objective_id": "o1",
        **FULL,
        "archived": False,
        "version": 1,
        "updated_at": "2026-02-26T12:00:00.000000Z",
    }


@pytest.mark.parametrize(
    ("update", "changed"),
    [
        ({}, {}),
        ({"mode": "journal"}, {"mode": "journal"}),
        ({"hypothesis": "rest more"}, {"hypothesis": "rest more"}),
        ({"anti_goals": []}, {"anti_goals": []}),
        ({"primary_goal": {"type": "hypertrophy"}}, {"primary_goal": {"type": "hypertrophy"}}),
        # null means "not sent": the previous value stays.
        ({"mode": None, "primary_goal": None, "constraint_markers": None}, {}),
        # A blank string clears clearable free text.
        ({"hypothesis": " "}, {"hypothesis": None}),
        # Unusable values keep the previous value.
        ({"mode": "dictator"}, {}),
        ({"source": 5}, {}),
        ({"confidence": "high"}, {}),
        ({"success_metrics": 42}, {}),
        ({"unknown_field": [1, 2, 3]}, {}),
    ],
)
def test_update_merges_over_previous(update: dict[str, Any], changed: dict[str, Any]) -> None:
    events = [objective_set(9, **FULL), objective_updated(1, **update)]
    objective = active(events)
    expected = {**FULL, **changed}
    assert {k: objective[k] for k in FULL} == expected
    assert objective["version"] == 2
    assert objective["updated_at"] == "2026-02-28T12:00:00.000000Z"


def test_version_counts_updates_and_resets_on_set() -> None:
    updates = [objective_updated(8 - d, mode="journal") for d in range(3)]
    assert active([objective_set(9), *updates])["version"] == 4
    assert active([objective_set(9), *updates, objective_set(1)])["version"] == 1


def test_update_without_set_creates_version_one() -> None:
    objective = active([objective_updated(1, "x", mode="coach")])
    assert (objective["objective_id"], objective["mode"], objective["version"]) == ("x", "coach", 1)


def test_set_replaces_previous_fields() -> None:
    objective = active([objective_set(9, **FULL), objective_set(1, mode="journal")])
    assert objective["primary_goal"] is None
    assert objective["constraint_markers"] == []
    assert objective["mode"] == "journal"


@pytest.mark.parametrize(
    ("raw", "objective_id", "problem"),
    [
        ("", "objective.default", None),
        ("   ", "objective.default", None),
        (None, "objective.default", ("objective_id", "missing_required")),
        ({"id": 1}, "objective.default", ("objective_id", "not_a_string")),
        (17, "17", None),
        ("  cut ", "cut", None),
    ],
)
def test_objective_id_normalisation(
    raw: Any, objective_id: str, problem: tuple[str, str] | None
) -> None:
    state = fold([ev("objective.set", 1, {"objective_id": raw})])
    assert state["active_objective"]["objective_id"] == objective_id
    expected = {("objective.set", *problem)} if problem else set()
    assert ignored(state) == expected


@pytest.mark.parametrize(
    ("fields", "confidence", "problem"),
    [
        ({}, 0.9, None),
        ({"source": "agent_suggested"}, 0.6, None),
        ({"source": "default_inferred"}, 0.45, None),
        ({"confidence": 0.123}, 0.12, None),
        ({"confidence": "0.7"}, 0.7, None),
        ({"confidence": 1.5}, 1.0, "clamped"),
        ({"confidence": -3}, 0.0, "clamped"),
        ({"confidence": "high"}, 0.9, "not_a_number"),
        ({"confidence": True}, 0.9, "not_a_number"),
        ({"confidence": float("nan")}, 0.9, "not_a_number"),
    ],
)
def test_confidence_is_clamped_to_two_decimals(
    fields: dict[str, Any], confidence: float, problem: str | None
) -> None:
    state = fold([objective_set(1, **fields)])
    assert state["active_objective"]["confidence"] == confidence
    assert state["inferred_confidence"] == confidence
    expected = {("objective.set", "confidence", problem)} if problem else set()
    assert ignored(state) == expected


def test_lists_are_coerced_capped_and_deduplicated() -> None:
    state = fold(
        [
            objective_set(
                1,
                anti_goals=[f"g{i % 60}" for i in range(10_000)],
                constraint_markers="knee_pain",
                success_metrics=["Squat 1RM", {"metric": "Bench 1RM", "deep": {"a": [1]}}, 3],
                secondary_goals={"type": "mobility"},
            )
        ]
    )
    objective = state["active_objective"]
    assert len(objective["anti_goals"]) == 50
    assert objective["constraint_markers"] == ["knee_pain"]
    assert objective["success_metrics"] == [{"metric": "squat_1rm"}, {"metric": "bench_1rm"}]
    assert objective["secondary_goals"] == [{"type": "mobility"}]
    assert ignored(state) == {
        ("objective.set", "anti_goals", "truncated"),
        ("objective.set", "success_metrics[1].deep", "nested_value"),
        ("objective.set", "success_metrics[2]", "not_an_object"),
    }


@pytest.mark.parametrize(
    ("primary_goal", "expected"),
    [
        ("strength", {"type": "strength"}),
        ("Run a marathon", {"description": "Run a marathon"}),
        (
            {"Type": "Endurance", "Value": "42.2", "unit": "km"},
            {"type": "endurance", "value": "42.2", "unit": "km"},
        ),
        ({"nested": {"x": 1}}, None),
        (["strength"], None),
    ],
)
def test_primary_goal_normalisation(primary_goal: Any, expected: dict[str, Any] | None) -> None:
    assert active([objective_set(1, primary_goal=primary_goal)])["primary_goal"] == expected


# --- archive -------------------------------------------------------------------------------


def test_archive_of_unknown_objective_is_recorded_and_kept_in_history() -> None:
    state = fold([archived(1, "ghost", archived_by="Agent")])
    assert state["active_objective"]["objective_id"] == "default.objective"
    assert ignored(state) == {("objective.archived", "objective_id", "unknown_objective")}
    assert state["objective_history"][0]["source"] == "agent"


def test_blank_archive_id_archives_objective_default() -> None:
    state = fold([objective_set(5, ""), archived(1, " ")])
    assert state["active_objective"]["objective_id"] == "default.objective"


# --- history, constraints, unresolved, source summary ----------------------------------------


def test_history_has_one_entry_per_objective_event_newest_first() -> None:
    events = [
        goal_set(9),
        objective_set(5, source="agent_suggested"),
        archived(1, archived_by="user"),
    ]
    history = fold(events)["objective_history"]
    assert [(h["event_type"], h["objective_id"], h["source"]) for h in history] == [
        ("objective.archived", "o1", "user"),
        ("objective.set", "o1", "agent_suggested"),
        ("goal.set", "legacy.goal.latest", "legacy_goal_set"),
    ]
    assert history[0]["timestamp"] == "2026-02-28T12:00:00.000000Z"
    assert history[0]["event_id"] == str(events[2].id)


def test_history_keeps_newest_120() -> None:
    events = [objective_updated(200 - i, mode="coach") for i in range(130)]
    history = fold(events)["objective_history"]
    assert len(history) == 120
    assert history[0]["event_id"] == str(events[-1].id)
    assert history[-1]["event_id"] == str(events[10].id)


@pytest.mark.parametrize(
    ("events", "unresolved"),
    [
        ([], ["constraint_markers"]),
        ([goal_set(1)], ["success_metrics", "constraint_markers"]),
        ([goal_set(1, target_1rm_kg=100)], ["constraint_markers"]),
        ([objective_set(1)], ["primary_goal", "success_metrics", "constraint_markers"]),
        ([objective_set(1, **FULL)], []),
        ([objective_set(1, **{**FULL, "constraint_markers": []})], []),
        ([objective_set(1, **{**FULL, "success_metrics": []})], ["success_metrics"]),
        ([objective_set(1, **{**FULL, "primary_goal": 42})], ["primary_goal"]),
        ([objective_set(1, **{**FULL, "constraint_markers": {"a": 1}})], ["constraint_markers"]),
    ],
)
def test_unresolved_fields(events: list[Event], unresolved: list[str]) -> None:
    assert fold(events)["unresolved_fields"] == unresolved


def test_active_constraints_are_the_active_objectives_markers() -> None:
    events = [
        objective_set(5, "a", constraint_markers=["knee"]),
        objective_set(1, "b", constraint_markers=["back", "back"]),
    ]
    assert fold(events)["active_constraints"] == ["back"]


def test_source_summary_counts_event_kinds() -> None:
    events = [
        goal_set(9),
        goal_set(8),
        objective_set(7),
        objective_updated(6),
        archived(5),
        ev("advisory.override.recorded", 4, {"reason": "x"}),
    ]
    assert fold(events)["source_summary"] == {
        "explicit_objective_events": 3,
        "legacy_goal_events": 2,
        "override_rationale_events": 1,
        "default_inferred": False,
        "active_kind": "legacy_goal",
    }
    assert fold([])["source_summary"]["default_inferred"] is True


def test_versions_and_modality_are_present() -> None:
    state = fold([])
    assert state["schema_version"] == SCHEMA_VERSION == "objective_state.v1"
    assert state["model_version"] == MODEL_VERSION
    assert state["modality"]["resolved"] == "unknown"


# --- data quality ----------------------------------------------------------------------------


@pytest.mark.parametrize("data", [None, "garbage", 42, ["objective_id", "x"]])
def test_non_object_data_is_recorded(data: Any) -> None:
    event = Event(UUID(int=next(_ids)), USER, "objective.set", NOW, data)
    state = fold([event])
    assert state["active_objective"]["objective_id"] == "objective.default"
    reasons = {e["reason"] for e in state["data_quality"]["ignored_fields"]}
    assert reasons <= {"not_an_object", "missing_required"}


def test_data_quality_keeps_newest_50_entries_with_total() -> None:
    events = [objective_set(100 - i, mode=f"bad{i}") for i in range(80)]
    quality = fold(events)["data_quality"]
    assert quality["ignored_total"] == 80
    assert len(quality["ignored_fields"]) == 50
    assert quality["ignored_fields"][0] == {
        "event_id": str(events[-1].id),
        "event_type": "objective.set",
        "field": "mode",
        "reason": "invalid_choice",
    }
