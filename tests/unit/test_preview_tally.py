"""The preview's comparison, user by user, without a database."""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

from stride.backfill.preview import (
    ADVISORY,
    NONE,
    STATE,
    PreviewTally,
    StoredRow,
    changed_fields,
)
from stride.projections.registry import READ_MODELS


def state(
    resolved: str = "strength", source: str = "user_explicit", **extra: Any
) -> dict[str, Any]:
    return {
        "modality": {"resolved": resolved, "confidence": 0.5},
        "active_objective": {"source": source, "objective_id": "o1"},
        **extra,
    }


def advisory(*codes: str, generated_at: str = "2026-11-01T00:00:00Z") -> dict[str, Any]:
    return {
        "warnings": [{"code": c, "severity": "info"} for c in codes],
        "generated_at": generated_at,
    }


def stored(
    state_data: dict[str, Any] | None, advisory_data: dict[str, Any] | None
) -> dict[Any, StoredRow]:
    rows = {}
    if state_data is not None:
        rows[STATE] = StoredRow(state_data, 1)
    if advisory_data is not None:
        rows[ADVISORY] = StoredRow(advisory_data, 1)
    return rows


def tally() -> PreviewTally:
    return PreviewTally.for_read_models(READ_MODELS, examples_per_class=2)


def test_unchanged_users_change_nothing_and_time_fields_are_ignored() -> None:
    t = tally()
    user = uuid4()
    t.add_user(
        user,
        stored(state(), advisory("a", generated_at="2026-01-01T00:00:00Z")),
        {STATE: state(), ADVISORY: advisory("a", generated_at="2026-11-30T00:00:00Z")},
    )
    assert t.users_seen == 1 and t.users_changed == 0
    assert all(o.users_changed == 0 and not o.fields for o in t.outputs.values())
    assert t.modality == {("strength", "strength"): 1}
    assert t.objective_source == {("user_explicit", "user_explicit"): 1}
    assert t.examples == {}
    assert t.outputs[STATE].stored_revisions == {1: 1}


def test_fields_warnings_modality_and_source_transitions_are_counted() -> None:
    t = tally()
    users = [UUID(int=n) for n in range(1, 5)]
    for user in users:
        t.add_user(
            user,
            stored(state("endurance", "default_inferred"), advisory("stale", "gap")),
            {
                STATE: state("hybrid", "user_explicit", version=(1, 2)),
                ADVISORY: advisory("gap", "mismatch"),
            },
        )
    s = t.outputs[STATE]
    assert s.users_changed == 4 and s.fields == {"active_objective": 4, "modality": 4, "version": 4}
    assert t.outputs[ADVISORY].fields == {"warnings": 4}
    assert t.users_changed == 4
    assert t.warnings_gained == {"mismatch": 4} and t.warnings_lost == {"stale": 4}
    assert t.modality == {("endurance", "hybrid"): 4}
    assert t.objective_source == {("default_inferred", "user_explicit"): 4}
    # At most two examples per kind of change, the first users seen.
    assert t.examples["modality endurance -> hybrid"] == users[:2]
    assert t.examples["warning mismatch gained"] == users[:2]
    assert t.examples["objective_state/active.modality"] == users[:2]
    assert t.examples["active objective source default_inferred -> user_explicit"] == users[:2]


def test_missing_projections_would_be_created_and_count_from_none() -> None:
    t = tally()
    user = uuid4()
    t.add_user(user, {}, {STATE: state(), ADVISORY: advisory("gap")})
    assert t.outputs[STATE].users_missing == 1 and t.outputs[ADVISORY].users_missing == 1
    assert t.users_changed == 1
    assert t.modality == {(NONE, "strength"): 1}
    # No stored advisory: its warnings are not "gained", the row is created.
    assert t.warnings_gained == {} and t.examples["objective_advisory/overview would be created"]


def test_malformed_stored_data_is_compared_not_fatal() -> None:
    t = tally()
    t.add_user(
        uuid4(),
        stored({"modality": "garbage"}, {"warnings": "nope"}),
        {STATE: state(), ADVISORY: advisory("gap")},
    )
    assert t.modality == {(NONE, "strength"): 1}
    assert t.warnings_gained == {"gap": 1}


def test_changed_fields_compare_json_as_stored() -> None:
    # A tuple is stored as a JSON array; a key only on one side is a change.
    assert changed_fields({"a": [1, 2], "b": 1.5}, {"a": (1, 2), "b": 1.5}) == []
    assert changed_fields({"a": 1}, {"a": 1, "c": None}) == ["c"]
    assert changed_fields({"generated_at": "x", "a": 1}, {"generated_at": "y", "a": 2}) == ["a"]
