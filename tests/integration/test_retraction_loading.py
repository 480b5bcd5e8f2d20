"""One retraction rule in Python and SQL: the same ids named, the same projections written.

The SQL side is the real loading path: events appended through the event store,
then the read models' refresh (stride.readmodels), which loads with
storage.projection_store.LOAD_EVENTS and resolves retracted types with
stride_retraction_target (migration 0006).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.types.json import Jsonb
from tests.uuid_spellings import retracted_id_values, spellings

from stride.domain.events import RETRACTION_EVENT_TYPE, Event, retraction_target
from stride.domain.validation import NewEvent
from stride.projections.registry import READ_MODELS, fold_user
from stride.readmodels.refresh import (
    EventChange,
    recompute_users,
    refresh_for_events,
    resolve_retracted_types,
)
from stride.storage.event_store import append_event, append_events
from stride.storage.projection_store import read_projections
from stride.storage.users import add_user

T0 = datetime(2026, 4, 1, tzinfo=UTC)
NOW = T0 + timedelta(days=30)
# One database per test, a fresh user per example: examples need no cleanup.
DB_EXAMPLES = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

SQL_TARGETS = """
SELECT stride_retraction_target(jsonb_build_object('retracted_event_id', v))
FROM unnest(%s::jsonb[]) WITH ORDINALITY AS t(v, n)
ORDER BY n
"""


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(retracted_id_values(), min_size=1, max_size=25))
def test_sql_names_the_same_retracted_id_as_python(
    conn: psycopg.Connection[Any], values: list[object]
) -> None:
    sql = [row[0] for row in conn.execute(SQL_TARGETS, ([Jsonb(v) for v in values],))]
    python = [retraction_target({"retracted_event_id": v}) for v in values]
    assert sql == python


# --- the loading path against the in-memory fold ---------------------------------------------

BASE_EVENTS = st.sampled_from(
    [
        ("set.logged", {"exercise": "squat"}),
        ("set.logged", {}),
        ("session.logged", {"blocks": [{"block_type": "continuous_endurance"}]}),
        ("external.activity_imported", {"workout": {"workout_type": "run"}}),
        ("profile.updated", {"training_modality": "powerlifting"}),
        ("objective.set", {"objective_id": "o1", "primary_goal": {"type": "strength"}}),
        ("objective.updated", {"objective_id": "o1", "success_metrics": [{"metric": "1rm"}]}),
        ("objective.archived", {"objective_id": "o1"}),
        ("goal.set", {"goal_type": "endurance", "target_1rm_kg": 100}),
        ("advisory.override.recorded", {"reason": "r", "review_point": "2026-04-10"}),
    ]
)
# A few weeks: some sets share a UTC day, some days have a single set.
MINUTES = st.integers(min_value=0, max_value=20 * 24 * 60)
# What a retraction names: a base event, an earlier retraction, or an id nobody has.
TARGETS = st.sampled_from(["event", "event", "retraction", "retraction", "unknown"])


def append_history(
    conn: psycopg.Connection[Any],
    user: UUID,
    base: list[tuple[int, tuple[str, dict[str, Any]]]],
    retractions: list[tuple[int, str]],
    draw: Any,
) -> list[Event]:
    """Append `base` then each retraction (naming what `draw` picks, as `draw` spells it)
    through the event store; returns the same history as in-memory events."""
    new_events = [
        NewEvent(user, kind, T0 + timedelta(minutes=m), payload) for m, (kind, payload) in base
    ]
    ids = [result.id for result in append_events(conn, new_events)]
    history = [
        Event(i, user, e.event_type, e.timestamp, e.data)  # type: ignore[arg-type]
        for i, e in zip(ids, new_events, strict=True)
    ]
    retraction_ids: list[UUID] = []
    for minute, kind in retractions:
        pool = {"event": ids, "retraction": retraction_ids}.get(kind) or []
        target = draw(st.sampled_from(pool)) if pool else draw(st.uuids())
        named = {"retracted_event_id": draw(spellings(target))}
        at = T0 + timedelta(minutes=minute)
        appended = append_event(conn, NewEvent(user, RETRACTION_EVENT_TYPE, at, named)).id
        retraction_ids.append(appended)
        history.append(Event(appended, user, RETRACTION_EVENT_TYPE, at, named))
    return history


def assert_loading_path_matches_memory(conn: psycopg.Connection[Any], history: list[Event]) -> None:
    """Refresh through the real loading path; the stored projections must be what the
    in-memory fold computes from the full history (same `now`)."""
    user = history[0].user_id
    expected = {
        row: json.loads(json.dumps(out))
        for row, out in fold_user(history, NOW, READ_MODELS).items()
    }
    changes = [EventChange(user, e.id, e.event_type) for e in history]
    refresh_for_events(conn, changes, NOW)
    stored = {(p.projection_type, p.key): p.data for p in read_projections(conn, user)}
    assert stored == expected
    # The backfill's verification recomputes through the same load.
    recomputed = recompute_users(conn, [user], {user: NOW})[user]
    assert {row: json.loads(json.dumps(out)) for row, out in recomputed.items()} == expected


@DB_EXAMPLES
@given(
    base=st.lists(st.tuples(MINUTES, BASE_EVENTS), min_size=1, max_size=20),
    retractions=st.lists(st.tuples(MINUTES, TARGETS), max_size=10),
    data=st.data(),
)
def test_loading_path_projects_what_the_in_memory_fold_computes(
    conn: psycopg.Connection[Any],
    base: list[tuple[int, tuple[str, dict[str, Any]]]],
    retractions: list[tuple[int, str]],
    data: st.DataObject,
) -> None:
    history = append_history(conn, add_user(conn), base, retractions, data.draw)
    assert_loading_path_matches_memory(conn, history)


def test_an_undone_retraction_of_a_days_only_set_counts_that_day_again(
    conn: psycopg.Connection[Any],
) -> None:
    user = add_user(conn)
    day = timedelta(days=1)
    history: list[Event] = []

    def append(event_type: str, at: datetime, payload: dict[str, Any]) -> UUID:
        event_id = append_event(conn, NewEvent(user, event_type, at, payload)).id
        history.append(Event(event_id, user, event_type, at, payload))
        return event_id

    lone = append("set.logged", T0 + day, {})
    append("set.logged", T0 + 3 * day, {})
    latest = append("set.logged", T0 + 3 * day + timedelta(hours=1), {})
    # Retract the lone set of day 1 and the later set of day 3, then undo both.
    first = append(RETRACTION_EVENT_TYPE, T0 + 4 * day, {"retracted_event_id": lone.hex})
    second = append(RETRACTION_EVENT_TYPE, T0 + 4 * day, {"retracted_event_id": str(latest)})
    append(RETRACTION_EVENT_TYPE, T0 + 5 * day, {"retracted_event_id": str(first).upper()})
    append(RETRACTION_EVENT_TYPE, T0 + 5 * day, {"retracted_event_id": f"{{{second}}}"})

    assert_loading_path_matches_memory(conn, history)
    state = {p.projection_type: p.data for p in read_projections(conn, user)}["objective_state"]
    observed = state["modality"]["observed"]
    assert observed["days_by_family"]["strength"] == 2
    assert observed["latest_training_at"] == "2026-04-04T01:00:00.000000Z"


# --- which read models a retraction re-runs --------------------------------------------------


def test_a_retraction_resolves_to_the_types_its_chain_ends_at(
    conn: psycopg.Connection[Any],
) -> None:
    user, other = add_user(conn), add_user(conn)
    goal = append_event(conn, NewEvent(user, "goal.set", T0, {"goal_type": "strength"})).id
    theirs = append_event(conn, NewEvent(other, "objective.set", T0, {"objective_id": "x"})).id

    def retract(target: object, named_type: str | None = None) -> UUID:
        payload: dict[str, Any] = {"retracted_event_id": target}
        if named_type is not None:
            payload["retracted_event_type"] = named_type
        return append_event(conn, NewEvent(user, RETRACTION_EVENT_TYPE, T0, payload)).id

    braced = retract("{" + str(goal).upper() + "}", "objective.set")
    undo = retract(f" urn:uuid:{braced.hex} ")
    redo = retract(str(undo))
    unknown = retract(str(UUID(int=5)), "session.logged")
    other_users = retract(str(theirs), "profile.updated")
    unparsable = retract("not-a-uuid", "set.logged")
    nothing = retract(12345)

    resolved = resolve_retracted_types(
        conn, [braced, undo, redo, unknown, other_users, unparsable, nothing]
    )
    assert resolved == {
        # The stored type wins over the type the retraction names.
        braced: {"goal.set"},
        # Undoing a retraction brings its target back: the same read models re-run.
        undo: {"goal.set"},
        redo: {"goal.set"},
        # Targets that are not the user's own: only the named type is known.
        unknown: {"session.logged"},
        other_users: {"profile.updated"},
        unparsable: {"set.logged"},
    }
