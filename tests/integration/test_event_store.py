"""Event store: idempotent appends, precise validation errors, all-or-nothing batches."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg
import pytest

from stride.domain.ids import new_uuid7, uuid7_unix_ms
from stride.domain.validation import EventBatchError, EventValidationError, NewEvent
from stride.storage.event_store import append_event, append_events
from stride.storage.users import add_user

Conn = psycopg.Connection[Any]
WHEN = "2026-03-01T07:30:00Z"


def count(conn: Conn, query: str, *params: Any) -> int:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return int(row[0])


def jobs(conn: Conn) -> int:
    return count(conn, "SELECT count(*) FROM background_jobs WHERE job_type = 'projection.update'")


def events(conn: Conn) -> int:
    return count(conn, "SELECT count(*) FROM events")


def keyed(user: UUID, key: str, **data: Any) -> NewEvent:
    return NewEvent(user, "set.logged", WHEN, data, {"idempotency_key": key})


def test_append_stores_the_event_and_enqueues_one_job(conn: Conn) -> None:
    user = add_user(conn)
    result = append_event(conn, NewEvent(user, "set.logged", WHEN, {"reps": 5}))
    assert not result.duplicate
    row = conn.execute(
        "SELECT user_id, event_type, timestamp, data FROM events WHERE id = %s", (result.id,)
    ).fetchone()
    assert row == (user, "set.logged", datetime(2026, 3, 1, 7, 30, tzinfo=UTC), {"reps": 5})
    payload = conn.execute("SELECT payload FROM background_jobs").fetchone()
    assert payload == (
        {"event_id": str(result.id), "event_type": "set.logged", "user_id": str(user)},
    )


def test_resent_event_returns_the_stored_id_and_creates_no_second_job(conn: Conn) -> None:
    user = add_user(conn)
    first = append_event(conn, keyed(user, "k-1", reps=5))
    again = append_event(conn, keyed(user, "k-1", reps=6))
    assert first.id == again.id
    assert (first.duplicate, again.duplicate) == (False, True)
    assert (events(conn), jobs(conn)) == (1, 1)


def test_idempotency_key_is_per_user(conn: Conn) -> None:
    alice, bob = add_user(conn), add_user(conn)
    a = append_event(conn, keyed(alice, "same"))
    b = append_event(conn, keyed(bob, "same"))
    assert a.id != b.id and not b.duplicate


def test_batch_with_duplicates_inside_and_against_stored_events(conn: Conn) -> None:
    user = add_user(conn)
    stored = append_event(conn, keyed(user, "old"))
    results = append_events(
        conn,
        [
            keyed(user, "new"),
            keyed(user, "old"),
            keyed(user, "new"),
            NewEvent(user, "sleep.logged", WHEN, {"hours": 7}),
        ],
    )
    assert [r.duplicate for r in results] == [False, True, True, False]
    assert results[1].id == stored.id
    assert results[2].id == results[0].id
    assert (events(conn), jobs(conn)) == (3, 3)
    again = append_events(conn, [keyed(user, "new"), keyed(user, "old")])
    assert [r.id for r in again] == [results[0].id, stored.id]
    assert all(r.duplicate for r in again)
    assert (events(conn), jobs(conn)) == (3, 3)


def test_ids_are_time_ordered(conn: Conn) -> None:
    user = add_user(conn)
    ids = [r.id for r in append_events(conn, [NewEvent(user, "x", WHEN) for _ in range(50)])]
    ids += [append_event(conn, NewEvent(user, "x", WHEN)).id for _ in range(20)]
    assert ids == sorted(ids)
    assert all(i.version == 7 for i in ids)
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    assert abs(uuid7_unix_ms(ids[-1]) - now_ms) < 60_000


def test_an_invalid_event_stores_nothing_and_queues_nothing(conn: Conn) -> None:
    user = add_user(conn)
    with pytest.raises(EventValidationError) as caught:
        append_event(conn, NewEvent(user, "set.logged", "2026-03-01T07:30:00", {}))
    assert caught.value.field == "timestamp"
    assert (events(conn), jobs(conn)) == (0, 0)


def test_unknown_user_is_a_validation_error(conn: Conn) -> None:
    stranger = new_uuid7()
    with pytest.raises(EventValidationError) as caught:
        append_event(conn, NewEvent(stranger, "x", WHEN))
    assert caught.value.field == "user_id"
    assert caught.value.message == f"unknown user {stranger}"


def test_batch_with_bad_records_stores_nothing_and_reports_every_one(conn: Conn) -> None:
    user = add_user(conn)
    batch = [
        NewEvent(user, "set.logged", WHEN, {"reps": 5}),
        NewEvent(user, "set.logged", "2026-03-01 07:30", {}),
        NewEvent(new_uuid7(), "set.logged", WHEN, {}),
        keyed(user, "fine"),
        NewEvent(user, "", WHEN, {}),
    ]
    with pytest.raises(EventBatchError) as caught:
        append_events(conn, batch)
    assert [(e.index, e.field) for e in caught.value.errors] == [
        (1, "timestamp"),
        (2, "user_id"),
        (4, "event_type"),
    ]
    assert (events(conn), jobs(conn)) == (0, 0)
    assert "3 of 5 events rejected" in str(caught.value)


def test_timestamps_with_offsets_keep_the_instant(conn: Conn) -> None:
    user = add_user(conn)
    result = append_event(conn, NewEvent(user, "x", "2026-03-01T09:30:00+02:00"))
    stored = conn.execute("SELECT timestamp FROM events WHERE id = %s", (result.id,)).fetchone()
    assert stored == (datetime(2026, 3, 1, 7, 30, tzinfo=UTC),)


def test_append_joins_the_callers_transaction(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        user = add_user(conn)
        append_event(conn, NewEvent(user, "x", WHEN))
        conn.rollback()
        assert events(conn) == 0 and count(conn, "SELECT count(*) FROM users") == 0


def test_timestamps_in_the_past_are_fine(conn: Conn) -> None:
    user = add_user(conn)
    old = datetime.now(UTC) - timedelta(days=3650)
    assert not append_event(conn, NewEvent(user, "x", old)).duplicate
