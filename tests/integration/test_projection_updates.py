"""Organic path end to end: events appended through the store, a worker, both projections."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg

from stride.app import build_registry
from stride.domain.validation import NewEvent
from stride.queue.worker import Worker
from stride.readmodels.refresh import refresh_users
from stride.storage.event_store import append_event, append_events
from stride.storage.projection_store import read_projections
from stride.storage.users import add_user

T0 = datetime(2026, 10, 1, 8, tzinfo=UTC)


def drain(database_url: str) -> None:
    Worker(database_url, build_registry(), batch_size=50, lease_seconds=30).run(once=True)


def projections(conn: psycopg.Connection[Any], user_id: UUID) -> dict[str, Any]:
    return {p.projection_type: p for p in read_projections(conn, user_id)}


def test_appended_events_reach_both_projections(
    conn: psycopg.Connection[Any], database_url: str
) -> None:
    user = add_user(conn)
    append_events(
        conn,
        [
            NewEvent(user, "profile.updated", T0, {"training_modality": "powerlifting"}),
            NewEvent(
                user,
                "objective.set",
                T0 + timedelta(hours=1),
                {
                    "objective_id": "squat",
                    "mode": "coach",
                    "primary_goal": {"type": "strength", "target": "200 kg"},
                    "success_metrics": [{"metric": "1rm"}],
                },
            ),
            NewEvent(user, "set.logged", T0 + timedelta(hours=2), {"exercise": "squat"}),
        ],
    )
    drain(database_url)
    stored = projections(conn, user)
    state = stored["objective_state"]
    assert state.key == "active"
    assert state.data["active_objective"]["objective_id"] == "squat"
    assert state.data["modality"]["declared"] == "strength"
    assert state.data["modality"]["observed"]["days_by_family"]["strength"] == 1
    advisory = stored["objective_advisory"]
    assert advisory.key == "overview" and advisory.data["policy_role"] == "advisory_only"
    assert advisory.data["schema_version"] == "objective_advisory.v1"
    assert state.model_version == state.data["model_version"]
    # Three events, one worker batch: each projection written once, not three times.
    assert state.version == 1 and advisory.version == 1
    last = conn.execute(
        "SELECT id FROM events WHERE user_id = %s ORDER BY timestamp DESC, id DESC LIMIT 1",
        (user,),
    ).fetchone()
    assert last is not None and state.last_event_id == last[0]

    append_event(conn, NewEvent(user, "set.logged", T0 + timedelta(days=1), {}))
    drain(database_url)
    again = projections(conn, user)
    assert again["objective_state"].version == 2
    assert again["objective_state"].updated_at > state.updated_at


def test_retraction_reruns_the_retracted_types_handlers(
    conn: psycopg.Connection[Any], database_url: str
) -> None:
    user = add_user(conn)
    first = append_event(
        conn, NewEvent(user, "objective.set", T0, {"objective_id": "keep", "mode": "journal"})
    )
    second = append_event(
        conn,
        NewEvent(
            user,
            "objective.set",
            T0 + timedelta(hours=1),
            {"objective_id": "oops", "mode": "coach"},
        ),
    )
    drain(database_url)
    assert (
        projections(conn, user)["objective_state"].data["active_objective"]["objective_id"]
        == "oops"
    )
    append_event(
        conn,
        NewEvent(
            user,
            "event.retracted",
            T0 + timedelta(hours=2),
            {"retracted_event_id": str(second.id), "retracted_event_type": "objective.set"},
        ),
    )
    drain(database_url)
    state = projections(conn, user)["objective_state"]
    assert state.data["active_objective"]["objective_id"] == "keep"
    assert first.id != second.id


def test_refresh_of_user_without_events_seeds_both_projections(
    conn: psycopg.Connection[Any],
) -> None:
    user = add_user(conn)
    with conn.transaction():
        summary = refresh_users(conn, {user: {"profile.updated"}}, T0)
    assert summary.users == 1 and summary.projections_written == 2
    stored = projections(conn, user)
    assert stored["objective_state"].data["active_objective"]["source"] == "default_inferred"
    assert stored["objective_state"].last_event_id is None


def test_malformed_event_data_never_kills_the_projection(
    conn: psycopg.Connection[Any], database_url: str
) -> None:
    user = add_user(conn)
    append_events(
        conn,
        [
            NewEvent(
                user,
                "objective.set",
                T0,
                {"objective_id": ["not", "a", "string"], "confidence": "very", "primary_goal": 7},
            ),
            NewEvent(user, "advisory.override.recorded", T0, {"review_point": "someday"}),
            NewEvent(user, "session.logged", T0, {"blocks": "lots", "session_meta": None}),
            NewEvent(user, "profile.updated", T0, {"training_modality": {"deep": [[[]]]}}),
        ],
    )
    drain(database_url)
    dead = conn.execute("SELECT count(*) FROM background_jobs WHERE status <> 'completed'")
    assert dead.fetchone() == (0,)
    stored = projections(conn, user)
    assert set(stored) == {"objective_state", "objective_advisory"}


def test_unreadable_stored_events_are_skipped_and_recorded(
    conn: psycopg.Connection[Any], database_url: str
) -> None:
    """Rows stored before validation refused them (written here with raw SQL, as an
    older stride or another writer could have) never cost a user their projections,
    nor fail the jobs of other users claimed in the same batch."""
    hurt = add_user(conn)
    bystander = add_user(conn)
    append_events(
        conn,
        [
            NewEvent(hurt, "profile.updated", T0, {"training_modality": "running"}),
            NewEvent(bystander, "profile.updated", T0, {"training_modality": "crossfit"}),
        ],
    )
    nested = "[" * 1500 + "]" * 1500
    bad = conn.execute(
        """
        INSERT INTO events (user_id, event_type, "timestamp", data)
        VALUES (%(u)s, 'objective.set', '10000-01-01T00:00:00Z', '{"objective_id": "x"}'),
               (%(u)s, 'set.logged', '0001-01-01T00:00:00Z BC', '{}'),
               (%(u)s, 'objective.set', %(t)s, '{"objective_id": "y", "confidence": 1e400}'),
               (%(u)s, 'profile.updated', %(t)s, ('{"deep": ' || %(nested)s || '}')::jsonb)
        RETURNING id
        """,
        {"u": hurt, "t": T0 + timedelta(hours=1), "nested": nested},
    ).fetchall()
    drain(database_url)

    statuses = conn.execute(
        "SELECT status, count(*) FROM background_jobs GROUP BY status"
    ).fetchall()
    assert dict(statuses) == {"completed": 6}
    state = projections(conn, hurt)["objective_state"]
    assert state.data["modality"]["declared"] == "endurance"  # the readable event still counts
    quality = state.data["data_quality"]
    assert quality["unreadable_events_count"] == 4
    assert {e["event_id"] for e in quality["unreadable_events"]} == {str(r[0]) for r in bad}
    assert state.last_event_id is not None and state.last_event_id not in {r[0] for r in bad}
    advisory = projections(conn, hurt)["objective_advisory"]
    assert advisory.data["data_quality"]["unreadable_events_count"] == 4
    untouched = projections(conn, bystander)["objective_state"]
    assert "unreadable_events" not in untouched.data["data_quality"]
