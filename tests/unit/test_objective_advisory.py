"""objective_advisory/overview (docs/contract.md §4.3): warnings on and off, overrides, snapshot."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest

from stride.domain.events import Event
from stride.projections.objective_advisory import (
    MODEL_VERSION,
    SCHEMA_VERSION,
    fold_objective_advisory,
)
from stride.projections.objective_state import fold_state

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
USER = UUID(int=11)
_ids = itertools.count(1)

TRACKED_GOAL = {
    "primary_goal": {"type": "strength", "target": "200 kg squat"},
    "success_metrics": [{"metric": "1rm_squat"}],
}


def ev(event_type: str, days_ago: float, data: Any = None) -> Event:
    at = NOW - timedelta(days=days_ago)
    return Event(UUID(int=next(_ids)), USER, event_type, at, {} if data is None else data)


def override(days_ago: float, **fields: Any) -> Event:
    return ev("advisory.override.recorded", days_ago, {"reason": "felt fine", **fields})


def tracked(days_ago: float = 30, **fields: Any) -> Event:
    data = {"objective_id": "o1", **TRACKED_GOAL, "confidence": 0.9, **fields}
    return ev("objective.set", days_ago, data)


def strength_days(count: int, start: int = 1) -> list[Event]:
    return [ev("set.logged", start + day) for day in range(count)]


def endurance_days(count: int, start: int = 1) -> list[Event]:
    data = {"workout": {"workout_type": "run"}}
    return [ev("external.activity_imported", start + day, data) for day in range(count)]


def advise(events: list[Event], now: datetime = NOW) -> dict[str, Any]:
    return fold_objective_advisory(events, now, fold_state(events))


def codes(events: list[Event]) -> set[str]:
    return {w["code"] for w in advise(events)["warnings"]}


def warning(events: list[Event], code: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [w for w in advise(events)["warnings"] if w["code"] == code]
    assert len(found) == 1
    return found[0]


# --- each warning, on and off ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("goal", "gaps"),
    [
        (TRACKED_GOAL, []),
        ({**TRACKED_GOAL, "success_metrics": []}, ["success_metrics_missing"]),
        ({**TRACKED_GOAL, "primary_goal": {"type": "strength"}}, ["primary_goal_target_missing"]),
        (
            {"primary_goal": {"type": "strength"}},
            ["success_metrics_missing", "primary_goal_target_missing"],
        ),
        ({**TRACKED_GOAL, "primary_goal": {"type": "x", "target_metric": "1rm"}}, []),
        ({**TRACKED_GOAL, "primary_goal": {"type": "x", "target_exercise": "squat"}}, []),
        ({**TRACKED_GOAL, "primary_goal": {"type": "x", "value": 5}}, []),
        ({**TRACKED_GOAL, "primary_goal": {"type": "x", "unit": "kg"}}, []),
    ],
)
def test_trackability_gap(goal: dict[str, Any], gaps: list[str]) -> None:
    events = [ev("objective.set", 3, {"objective_id": "o1", "confidence": 0.9, **goal})]
    result = advise(events)
    assert result["trackability"]["gaps"] == gaps
    assert result["trackability"]["status"] == ("gap" if gaps else "tracked")
    is_on = "objective_trackability_gap" in codes(events)
    assert is_on == bool(gaps)
    if gaps:
        found = warning(events, "objective_trackability_gap")
        assert found["severity"] == "warning"
        assert found["evidence"]["gaps"] == gaps


def test_default_objective_has_a_trackability_gap() -> None:
    trackability = advise([])["trackability"]
    assert trackability == {
        "status": "gap",
        "gaps": ["primary_goal_target_missing"],
        "success_metrics_count": 1,
        "has_primary_goal_target": False,
        "last_activity_at": None,
    }


@pytest.mark.parametrize(
    ("events", "on"),
    [
        ([], True),
        ([ev("goal.set", 1, {"goal_type": "strength"})], False),  # legacy: 0.7
        ([tracked(confidence=0.54)], True),
        ([tracked(confidence=0.55)], False),
        ([tracked(source="agent_suggested")], False),  # default 0.6
        ([tracked(source="default_inferred", confidence=0.9)], True),
    ],
)
def test_default_inferred(events: list[Event], on: bool) -> None:
    assert ("objective_default_inferred" in codes(events)) == on
    if on:
        assert warning(events, "objective_default_inferred")["severity"] == "info"


@pytest.mark.parametrize(
    ("last_training_days_ago", "on", "days_since"),
    [
        (None, True, None),
        (1, False, None),
        (20.9, False, None),
        (21, False, None),
        (21.01, True, 21),
        (60, True, 60),
        (-2, False, None),  # clock skew: a training event after `now` is recent
    ],
)
def test_metric_staleness(
    last_training_days_ago: float | None, on: bool, days_since: int | None
) -> None:
    events = [tracked()]
    if last_training_days_ago is not None:
        events.append(ev("set.logged", last_training_days_ago))
        events.append(ev("set.logged", last_training_days_ago + 40))
    assert ("objective_metric_staleness" in codes(events)) == on
    if on:
        found = warning(events, "objective_metric_staleness")
        assert found["severity"] == "warning"
        assert found["evidence"]["days_since_last_activity"] == days_since
        assert found["evidence"]["threshold_days"] == 21


@pytest.mark.parametrize("kind", ["set.logged", "session.logged", "external.activity_imported"])
def test_every_training_type_counts_as_activity(kind: str) -> None:
    events = [tracked(), ev(kind, 2)]
    assert "objective_metric_staleness" not in codes(events)
    assert advise(events)["trackability"]["last_activity_at"] == "2026-02-27T12:00:00.000000Z"


@pytest.mark.parametrize(
    ("review_point", "due", "problem"),
    [
        (None, False, None),
        ("2026-02-28", True, None),
        ("2026-03-01", True, None),  # a date is due from 00:00 UTC that day
        ("2026-03-02", False, None),
        ("2026-03-01T11:59:59Z", True, None),
        ("2026-03-01T12:00:00+00:00", True, None),
        ("2026-03-01T12:00:01Z", False, None),
        ("2026-03-01T13:30:00+02:00", True, None),  # 11:30 UTC
        ("2026-03-01T12:30:00", False, None),  # naive: UTC
        ("next tuesday", False, "invalid_date"),
        ("2026-13-45", False, "invalid_date"),
        ("9" * 100, False, "invalid_date"),
        (20260301, False, "not_a_string"),
        ({"date": "2026-01-01"}, False, "not_a_string"),
    ],
)
def test_override_review_due(review_point: Any, due: bool, problem: str | None) -> None:
    events = [tracked(), ev("set.logged", 1), override(2, review_point=review_point)]
    result = advise(events)
    assert ("objective_override_review_due" in codes(events)) == due
    assert result["override_summary"]["review_due_count"] == int(due)
    assert result["override_summary"]["recent"][0]["review_due"] is due
    problems = {(e["field"], e["reason"]) for e in result["data_quality"]["ignored_fields"]}
    assert problems == ({("review_point", problem)} if problem else set())


def test_review_due_evidence_lists_due_overrides_newest_first() -> None:
    events = [
        tracked(),
        override(9, review_point="2026-02-01", scope="volume"),
        override(8, review_point="2026-12-01"),
        override(7, review_point="2026-02-02T08:00:00Z", scope="intensity"),
    ]
    found = warning(events, "objective_override_review_due")
    assert found["evidence"] == {
        "review_due_count": 2,
        "overrides": [
            {
                "event_id": str(events[3].id),
                "review_point": "2026-02-02T08:00:00.000000Z",
                "scope": "intensity",
            },
            {
                "event_id": str(events[1].id),
                "review_point": "2026-02-01T00:00:00.000000Z",
                "scope": "volume",
            },
        ],
    }


@pytest.mark.parametrize(
    ("goal_type", "training", "on"),
    [
        ("endurance", strength_days(9) + endurance_days(1, 30), True),  # 90% strength
        ("marathon", strength_days(8) + endurance_days(2, 30), True),  # 80% exactly
        ("endurance", strength_days(7) + endurance_days(3, 30), False),  # 70%
        ("endurance", strength_days(5), False),  # too few days to be clear
        ("endurance", strength_days(6), True),
        ("strength", endurance_days(10), True),
        ("strength", strength_days(10), False),
        ("hybrid", strength_days(10), False),
        ("general_health", strength_days(10), False),
        ("endurance", [], False),
    ],
)
def test_modality_mismatch(goal_type: str, training: list[Event], on: bool) -> None:
    events = [tracked(primary_goal={"type": goal_type, "target": "x"}), *training]
    assert ("objective_modality_mismatch" in codes(events)) == on
    if on:
        found = warning(events, "objective_modality_mismatch")
        assert found["severity"] == "info"
        assert found["evidence"]["goal_family"] != found["evidence"]["observed_family"]


def test_no_warnings_for_a_tracked_active_user() -> None:
    assert advise([tracked(), *strength_days(10)])["warnings"] == []


def test_warning_shape_and_order() -> None:
    events = [override(40, review_point="2026-01-01")]
    warnings = advise(events)["warnings"]
    assert [w["code"] for w in warnings] == [
        "objective_trackability_gap",
        "objective_default_inferred",
        "objective_metric_staleness",
        "objective_override_review_due",
    ]
    for found in warnings:
        assert set(found) == {
            "code",
            "severity",
            "confidence",
            "message",
            "evidence",
            "overridable",
        }
        assert found["overridable"] is True
        assert found["severity"] in {"warning", "info"}
        assert 0.0 <= found["confidence"] <= 1.0


# --- override summary ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("days_ago", "recent"),
    [(0, True), (29.9, True), (30, True), (30.01, False), (90, False), (-1, True)],
)
def test_recent_overrides_cover_30_days(days_ago: float, recent: bool) -> None:
    summary = advise([override(days_ago)])["override_summary"]
    assert summary["total_count"] == 1
    assert summary["recent_count"] == int(recent)
    assert len(summary["recent"]) == int(recent)


def test_recent_lists_the_25_newest() -> None:
    events = [override(40)] + [override(29 - i * 0.5) for i in range(40)]
    summary = advise(events)["override_summary"]
    assert summary["total_count"] == 41
    assert summary["recent_count"] == 40
    assert [r["event_id"] for r in summary["recent"]] == [str(e.id) for e in events[:-26:-1]]


def test_override_fields_are_normalised() -> None:
    event = override(
        1,
        reason="  travelling ",
        scope="Weekly Volume",
        expected_outcome="keep streak",
        review_point="2026-03-10",
        actor="Coach",
    )
    assert advise([event])["override_summary"]["recent"] == [
        {
            "event_id": str(event.id),
            "timestamp": "2026-02-28T12:00:00.000000Z",
            "reason": "travelling",
            "scope": "weekly_volume",
            "expected_outcome": "keep streak",
            "review_point": "2026-03-10T00:00:00.000000Z",
            "actor": "coach",
            "review_due": False,
        }
    ]


def test_by_actor_and_by_scope() -> None:
    events = [
        override(1, actor="user", scope="volume"),
        override(2, actor="User", scope="intensity"),
        override(50, actor="agent"),
        override(3),
    ]
    summary = advise(events)["override_summary"]
    assert summary["by_actor"] == {"agent": 1, "unknown": 1, "user": 2}
    assert summary["by_scope"] == {"intensity": 1, "unspecified": 2, "volume": 1}


def test_by_scope_is_bounded() -> None:
    events = [override(1, scope=f"scope{i:03d}") for i in range(70)]
    by_scope = advise(events)["override_summary"]["by_scope"]
    assert len(by_scope) == 51
    assert by_scope["(other)"] == 20
    assert sum(by_scope.values()) == 70


def test_override_without_reason_counts_and_is_recorded() -> None:
    event = ev("advisory.override.recorded", 1, {"reason": "  ", "scope": ["x"]})
    result = advise([event])
    assert result["override_summary"]["total_count"] == 1
    problems = {(e["field"], e["reason"]) for e in result["data_quality"]["ignored_fields"]}
    assert problems == {("reason", "missing_required"), ("scope", "not_a_string")}


# --- envelope --------------------------------------------------------------------------------


def test_envelope() -> None:
    events = [tracked(), ev("set.logged", 1)]
    state = fold_state(events)
    result = fold_objective_advisory(events, NOW, state)
    assert result["schema_version"] == SCHEMA_VERSION == "objective_advisory.v1"
    assert result["model_version"] == MODEL_VERSION
    assert result["policy_role"] == "advisory_only"
    assert result["generated_at"] == "2026-03-01T12:00:00.000000Z"
    state_data = state.to_data()
    assert result["objective_snapshot"] == state_data["active_objective"]
    assert result["objective_snapshot"] is not state_data["active_objective"]
    assert result["objective_state_model_version"] == state_data["model_version"]
    assert "constraint_markers_always_respected" in result["safety_invariants_non_overridable"]


def test_naive_now_is_utc() -> None:
    assert advise([], NOW.replace(tzinfo=None))["generated_at"] == "2026-03-01T12:00:00.000000Z"


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"objective_id": "o1", "primary_goal": [1], "success_metrics": "a", "confidence": "x"},
        {"objective_id": "o1", "primary_goal": {"type": {"nested": 1}}, "success_metrics": [5]},
    ],
)
def test_malformed_objective_fields_leave_a_trackability_gap(data: dict[str, Any]) -> None:
    # The advisory reads the typed state the state fold produced, never raw JSON:
    # whatever the objective event held, what reaches it is normalised.
    result = advise([ev("objective.set", 1, data)])
    assert result["trackability"]["status"] == "gap"
