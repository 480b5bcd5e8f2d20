"""Queue primitives against real PostgreSQL: enqueue/dedup, claim order, fencing, leases."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql

from stride.queue.jobs import (
    NOTIFY_ANY_TYPE,
    NOTIFY_CHANNEL,
    EnqueueResult,
    FailOutcome,
    NewJob,
    RetryPolicy,
    cancel_pending,
    claim_due_jobs,
    complete,
    complete_many,
    defer,
    enqueue,
    enqueue_from_query,
    enqueue_many,
    extend_lease,
    fail,
    mark_dead,
    mark_failed,
    release,
    retry_dead,
)
from stride.queue.maintenance import prune_completed, reclaim_expired_leases
from stride.queue.user_locks import try_lock_users
from stride.queue.worker import LISTEN_SQL

Conn = psycopg.Connection[Any]


def _status(conn: Conn, job_id: int) -> tuple[Any, ...]:
    row = conn.execute(
        "SELECT status, attempt, error_message, locked_by FROM background_jobs WHERE id = %s",
        (job_id,),
    ).fetchone()
    assert row is not None
    return tuple(row)


def _expire_leases(conn: Conn) -> None:
    conn.execute(
        "UPDATE background_jobs SET locked_until = now() - interval '1 second' "
        "WHERE status = 'processing'"
    )


def _make_due(conn: Conn) -> None:
    conn.execute(
        "UPDATE background_jobs SET scheduled_for = now() - interval '1 second' "
        "WHERE status = 'pending'"
    )


def test_enqueue_reports_inserted_and_existing(conn: Conn) -> None:
    first = enqueue(conn, NewJob("t", {"a": 1}, dedup_key="k"))
    second = enqueue(conn, NewJob("t", {"a": 2}, dedup_key="k"))
    other = enqueue(conn, NewJob("t", {"a": 3}))
    assert first.inserted and not second.inserted
    assert second.job_id == first.job_id
    assert other.inserted and other.job_id != first.job_id


def test_enqueue_after_completion_inserts_a_new_job(conn: Conn) -> None:
    first = enqueue(conn, NewJob("t", {}, dedup_key="k"))
    [job] = claim_due_jobs(conn, "w", 10, 30)
    assert complete(conn, job)
    again = enqueue(conn, NewJob("t", {}, dedup_key="k"))
    assert again.inserted and again.job_id != first.job_id


def test_enqueue_notifies_listeners(database_url: str, conn: Conn) -> None:
    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute(LISTEN_SQL)
        enqueue(conn, NewJob("projection.update", {}))
        payloads = [n.payload for n in listener.notifies(timeout=5, stop_after=1)]
    assert payloads == ["projection.update"]


def test_a_notification_from_the_events_trigger_arrives_on_the_workers_channel(
    database_url: str, conn: Conn
) -> None:
    user_id = conn.execute("INSERT INTO users DEFAULT VALUES RETURNING id").fetchone()[0]  # type: ignore[index]
    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute(LISTEN_SQL)
        conn.execute(
            "INSERT INTO events (user_id, event_type, timestamp) "
            "SELECT %s, 'set.logged', now() FROM generate_series(1, 3)",
            (user_id,),
        )
        notes = list(listener.notifies(timeout=5, stop_after=1))
    assert [(n.channel, n.payload) for n in notes] == [(NOTIFY_CHANNEL, "projection.update")]


# Three targets per user; the key is built the way the backfill builds its keys.
TARGETS = sql.SQL("""
SELECT 'q.target' AS job_type,
       jsonb_build_object('user', u, 'n', n) AS payload,
       NULL::uuid AS user_id,
       %(priority)s AS priority,
       'q.target:' || u || ':' || n AS dedup_key
FROM generate_series(1, %(users)s) AS u CROSS JOIN generate_series(1, 3) AS n
ORDER BY u DESC, n
""")


def test_enqueue_from_query_inserts_in_query_order_skipping_keys_in_flight(
    database_url: str, conn: Conn
) -> None:
    enqueue(conn, NewJob("q.target", {"held": True}, dedup_key="q.target:2:1"))
    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute(LISTEN_SQL)
        assert enqueue_from_query(conn, TARGETS, {"users": 2, "priority": -3}) == 5
        assert enqueue_from_query(conn, TARGETS, {"users": 2, "priority": -3}) == 0
        notes = [n.payload for n in listener.notifies(timeout=1)]
    assert notes == ["q.target"]  # one notification for the statement that inserted
    rows = conn.execute(
        "SELECT payload->>'user', payload->>'n', priority FROM background_jobs "
        "WHERE NOT payload ? 'held' ORDER BY id"
    ).fetchall()
    assert rows == [("2", "2", -3), ("2", "3", -3), ("1", "1", -3), ("1", "2", -3), ("1", "3", -3)]
    claimed = claim_due_jobs(conn, "w", 10, 30)
    complete_many(conn, claimed)
    # Completed jobs free their keys: the same query enqueues every target again.
    assert enqueue_from_query(conn, TARGETS, {"users": 2, "priority": 0}) == 6


def test_enqueue_from_query_takes_optional_columns_by_name(conn: Conn) -> None:
    later = sql.SQL("""
    SELECT 'q.later' AS job_type, jsonb_build_object('n', n) AS payload, NULL::uuid AS user_id,
           0 AS priority, NULL::text AS dedup_key,
           now() + make_interval(secs => n * 60) AS scheduled_for, 9 AS max_retries
    FROM generate_series(1, 3) AS n
    """)
    assert enqueue_from_query(conn, later, {}, optional_columns=("scheduled_for",)) == 3
    rows = conn.execute(
        "SELECT round(extract(epoch FROM scheduled_for - created_at)), max_retries "
        "FROM background_jobs ORDER BY id"
    ).fetchall()
    assert [(int(delay), retries) for delay, retries in rows] == [(60, 5), (120, 5), (180, 5)]
    assert claim_due_jobs(conn, "w", 10, 30) == []  # none of them is due yet
    with pytest.raises(ValueError, match="unknown optional columns"):
        enqueue_from_query(conn, later, {}, optional_columns=("status",))


def test_an_enqueue_of_several_types_notifies_any_type(database_url: str, conn: Conn) -> None:
    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute(LISTEN_SQL)
        enqueue_many(conn, [NewJob("a", {}), NewJob("b", {})])
        enqueue_many(conn, [NewJob("c", {}), NewJob("c", {})])
        notes = [n.payload for n in listener.notifies(timeout=1)]
    assert notes == [NOTIFY_ANY_TYPE, "c"]


def test_cancel_pending_cancels_only_pending_jobs_of_the_source(conn: Conn) -> None:
    enqueue_many(
        conn,
        [
            NewJob("run", {"source": "s1"}, priority=5),
            NewJob("run", {"source": "s1"}),
            NewJob("run", {"source": "s1"}),
            NewJob("run", {"source": "s2"}),
            NewJob("run", {}),
            NewJob("other", {"source": "s1"}),
        ],
    )
    [held] = claim_due_jobs(conn, "w", 1, 30)  # the priority-5 job of s1
    assert cancel_pending(conn, ["run"], "s1", reason="stop it") == 2
    rows = conn.execute(
        "SELECT job_type, payload->>'source', status, error_message FROM background_jobs "
        "ORDER BY id"
    ).fetchall()
    assert rows == [
        ("run", "s1", "processing", None),
        ("run", "s1", "cancelled", "stop it"),
        ("run", "s1", "cancelled", "stop it"),
        ("run", "s2", "pending", None),
        ("run", None, "pending", None),
        ("other", "s1", "pending", None),
    ]
    assert complete(conn, held)  # the job in hand finishes normally


def test_cancel_waits_for_a_claim_in_progress_and_leaves_what_it_claimed(
    database_url: str, conn: Conn
) -> None:
    enqueue_many(conn, [NewJob("run", {"source": "s"}) for _ in range(4)])
    with psycopg.connect(database_url) as claimer:
        claimed = claim_due_jobs(claimer, "w", 2, 30)  # uncommitted: the rows stay locked
        done: list[int] = []
        cancel = threading.Thread(target=lambda: done.append(cancel_pending(conn, ["run"], "s")))
        cancel.start()
        cancel.join(0.5)
        assert cancel.is_alive()  # waiting on the claimer's row locks, not skipping them
        claimer.commit()
    cancel.join(10)
    assert done == [2]
    statuses = dict(
        conn.execute("SELECT status, count(*) FROM background_jobs GROUP BY 1").fetchall()
    )
    assert statuses == {"processing": 2, "cancelled": 2}
    assert {j.id for j in claimed} == {
        r[0] for r in conn.execute("SELECT id FROM background_jobs WHERE status = 'processing'")
    }


def test_mark_failed_ends_the_job_at_once_and_retry_revives_it(conn: Conn) -> None:
    job_id = enqueue(conn, NewJob("t", {}, max_retries=5, dedup_key="k")).job_id
    [job] = claim_due_jobs(conn, "w", 1, 30)
    assert mark_failed(conn, job, "JobPayloadError: payload.user_id is not a UUID")
    assert not mark_failed(conn, job, "again")  # fenced like every transition
    assert _status(conn, job_id) == (
        "failed",
        1,
        "JobPayloadError: payload.user_id is not a UUID",
        "w",
    )
    assert enqueue(conn, NewJob("t", {}, dedup_key="k")).inserted  # failed frees the key
    assert retry_dead(conn) == 0  # ... so the failed one waits while the key is in flight
    complete_many(conn, claim_due_jobs(conn, "w", 1, 30))
    assert retry_dead(conn) == 1
    assert _status(conn, job_id)[:2] == ("pending", 0)


def test_concurrent_enqueues_with_one_dedup_key_create_one_job(database_url: str) -> None:
    barrier = threading.Barrier(50)
    results: list[EnqueueResult] = []
    errors: list[BaseException] = []

    def enqueue_one(index: int) -> None:
        try:
            with psycopg.connect(database_url, autocommit=True) as c:
                barrier.wait()
                results.append(enqueue(c, NewJob("t", {"i": index}, dedup_key="same")))
        except BaseException as exc:  # re-raised below, in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=enqueue_one, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sum(r.inserted for r in results) == 1
    assert len({r.job_id for r in results}) == 1
    with psycopg.connect(database_url) as c:
        assert c.execute("SELECT count(*) FROM background_jobs").fetchone() == (1,)


def test_enqueue_many_skips_in_flight_and_in_batch_duplicates(conn: Conn) -> None:
    enqueue(conn, NewJob("t", {"held": True}, dedup_key="busy"))
    batch = [
        NewJob("t", {"i": 1}, dedup_key="busy"),
        NewJob("t", {"i": 2}, dedup_key="fresh"),
        NewJob("t", {"i": 3}, dedup_key="fresh"),
        NewJob("t", {"i": 4}),
        NewJob("t", {"i": 5}),
    ]
    assert enqueue_many(conn, batch) == 3
    rows = conn.execute(
        "SELECT payload->>'i', dedup_key FROM background_jobs WHERE NOT payload ? 'held' "
        "ORDER BY id"
    ).fetchall()
    assert rows == [("2", "fresh"), ("4", None), ("5", None)]
    assert enqueue_many(conn, []) == 0


def test_enqueue_many_inserts_thousands_with_their_fields(conn: Conn) -> None:
    user = uuid.uuid4()
    later = datetime.now(UTC) + timedelta(hours=1)
    jobs = [
        NewJob("bulk", {"i": i}, user_id=user, priority=i % 3, max_retries=2, scheduled_for=later)
        for i in range(5000)
    ]
    assert enqueue_many(conn, jobs) == 5000
    row = conn.execute(
        "SELECT count(*), count(DISTINCT user_id), max(priority), min(max_retries), "
        "bool_and(scheduled_for = %s) FROM background_jobs",
        (later,),
    ).fetchone()
    assert row == (5000, 1, 2, 2, True)
    assert claim_due_jobs(conn, "w", 10, 30) == []  # none of them is due yet


def test_claim_order_is_priority_then_due_time_then_id(conn: Conn) -> None:
    now = datetime.now(UTC)
    ids = {
        name: enqueue(conn, NewJob("t", {"n": name}, priority=p, scheduled_for=at)).job_id
        for name, p, at in [
            ("late-low", 0, now - timedelta(seconds=1)),
            ("early-low", 0, now - timedelta(seconds=10)),
            ("high", 5, now - timedelta(seconds=1)),
            ("future-high", 9, now + timedelta(hours=1)),
        ]
    }
    claimed = claim_due_jobs(conn, "w", 10, 30)
    assert [j.id for j in claimed] == [ids["high"], ids["early-low"], ids["late-low"]]
    row = conn.execute(
        "SELECT status, attempt, locked_by, locked_until > now(), started_at IS NOT NULL "
        "FROM background_jobs WHERE id = %s",
        (ids["high"],),
    ).fetchone()
    assert row == ("processing", 1, "w", True, True)
    assert claimed[0].attempt == 1 and claimed[0].payload == {"n": "high"}


def test_claim_filters_by_job_type_and_batch_size(conn: Conn) -> None:
    enqueue_many(conn, [NewJob("a", {}) for _ in range(5)] + [NewJob("b", {})])
    assert [j.job_type for j in claim_due_jobs(conn, "w", 10, 30, ["b"])] == ["b"]
    assert len(claim_due_jobs(conn, "w", 3, 30, ["a", "c"])) == 3
    assert len(claim_due_jobs(conn, "w", 10, 30)) == 2


def test_concurrent_claimers_never_share_a_job(database_url: str, conn: Conn) -> None:
    enqueue_many(conn, [NewJob("t", {"i": i}) for i in range(600)])
    claimed: list[list[int]] = [[] for _ in range(6)]

    def claim_all(slot: int) -> None:
        with psycopg.connect(database_url, autocommit=True) as c:
            while batch := claim_due_jobs(c, f"w{slot}", 7, 30):
                claimed[slot].extend(j.id for j in batch)

    threads = [threading.Thread(target=claim_all, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [i for ids in claimed for i in ids]
    assert len(every) == len(set(every)) == 600


def test_completion_is_fenced_by_owner_and_attempt(conn: Conn) -> None:
    job_id = enqueue(conn, NewJob("t", {})).job_id
    [stale] = claim_due_jobs(conn, "old-worker", 1, 30)
    _expire_leases(conn)
    assert reclaim_expired_leases(conn) == 1
    [fresh] = claim_due_jobs(conn, "new-worker", 1, 30)
    assert fresh.attempt == stale.attempt + 1
    # The paused worker wakes up: every fenced transition is a no-op for it.
    assert not complete(conn, stale)
    assert fail(conn, stale, "late") is FailOutcome.LOST
    assert not defer(conn, stale, 0)
    assert not mark_dead(conn, stale, "late")
    assert extend_lease(conn, [stale], 30) == set()
    assert complete(conn, fresh)
    assert not complete(conn, fresh)  # and never twice
    assert _status(conn, job_id)[:2] == ("completed", 2)


def test_failure_backs_off_then_goes_dead_with_its_error(conn: Conn) -> None:
    job_id = enqueue(conn, NewJob("t", {}, max_retries=2)).job_id
    policy = RetryPolicy(base_seconds=60, max_seconds=600, jitter=0.5)
    outcomes = []
    for attempt in range(1, 4):
        _make_due(conn)
        [job] = claim_due_jobs(conn, "w", 1, 30)
        assert job.attempt == attempt
        outcomes.append(fail(conn, job, f"boom {attempt}", policy=policy))
        if attempt < 3:
            delay = conn.execute(
                "SELECT extract(epoch FROM scheduled_for - now()) FROM background_jobs"
            ).fetchone()
            assert delay is not None
            ceiling = 60 * 2 ** (attempt - 1)
            assert ceiling * 0.5 - 1 <= float(delay[0]) <= ceiling + 1
            assert claim_due_jobs(conn, "w", 1, 30) == []  # not due during the backoff
    assert outcomes == [FailOutcome.RETRY, FailOutcome.RETRY, FailOutcome.DEAD]
    status, attempt, error, _ = _status(conn, job_id)
    assert (status, attempt, error) == ("dead", 3, "boom 3")


def test_defer_returns_the_job_without_spending_an_attempt(conn: Conn) -> None:
    job_id = enqueue(conn, NewJob("t", {})).job_id
    [job] = claim_due_jobs(conn, "w", 1, 30)
    assert defer(conn, job, 3600)
    assert _status(conn, job_id) == ("pending", 0, None, None)
    assert claim_due_jobs(conn, "w", 1, 30) == []
    _make_due(conn)
    [again] = claim_due_jobs(conn, "w", 1, 30)
    assert again.attempt == 1


def test_release_keeps_the_place_in_line(conn: Conn) -> None:
    old = datetime.now(UTC) - timedelta(hours=1)
    first = enqueue(conn, NewJob("t", {}, scheduled_for=old)).job_id
    enqueue(conn, NewJob("t", {}))
    claimed = claim_due_jobs(conn, "w", 1, 30)
    assert release(conn, claimed) == {first}
    assert [j.id for j in claim_due_jobs(conn, "w", 1, 30)] == [first]


def test_extend_lease_pushes_the_deadline(conn: Conn) -> None:
    enqueue(conn, NewJob("t", {}))
    [job] = claim_due_jobs(conn, "w", 1, 1)
    assert extend_lease(conn, [job], 3600) == {job.id}
    _make_due(conn)
    assert reclaim_expired_leases(conn) == 0
    row = conn.execute("SELECT locked_until > now() + interval '50 minutes' FROM background_jobs")
    assert row.fetchone() == (True,)


def test_reclaim_keeps_attempts_and_ends_dead_when_crashes_exhaust_them(conn: Conn) -> None:
    job_id = enqueue(conn, NewJob("t", {}, max_retries=1)).job_id
    for expected in ["pending", "dead"]:
        claim_due_jobs(conn, "crashy", 1, 30)
        _expire_leases(conn)
        assert reclaim_expired_leases(conn) == 1
        status, attempt, error, _ = _status(conn, job_id)
        assert status == expected
        assert "lease expired" in error and "crashy" in error
    assert attempt == 2
    assert "no attempts left" in error


def test_mark_dead_records_the_reason(conn: Conn) -> None:
    job_id = enqueue(conn, NewJob("t", {})).job_id
    [job] = claim_due_jobs(conn, "w", 1, 30)
    assert mark_dead(conn, job, "no handler")
    assert _status(conn, job_id)[:3] == ("dead", 1, "no handler")


def test_prune_deletes_only_old_completed_jobs_in_batches(conn: Conn) -> None:
    enqueue_many(conn, [NewJob("t", {}) for _ in range(25)])
    complete_many(conn, claim_due_jobs(conn, "w", 20, 30))
    conn.execute(
        "UPDATE background_jobs SET completed_at = now() - interval '8 days' WHERE id <= 15"
    )
    assert prune_completed(conn, timedelta(days=7), batch_size=4) == 15
    counts = conn.execute(
        "SELECT status, count(*) FROM background_jobs GROUP BY status ORDER BY status"
    ).fetchall()
    assert counts == [("completed", 5), ("pending", 5)]


def test_retry_dead_revives_once_per_dedup_key(conn: Conn) -> None:
    for key in ["a", "a", "b", None]:
        enqueue(conn, NewJob("t", {}, dedup_key=key, max_retries=0))
        [job] = claim_due_jobs(conn, "w", 1, 30)
        fail(conn, job, "boom")
    enqueue(conn, NewJob("t", {}, dedup_key="b"))  # b is in flight again
    enqueue(conn, NewJob("other", {}, max_retries=0))
    [job] = claim_due_jobs(conn, "w", 1, 30, ["other"])
    fail(conn, job, "boom")
    assert retry_dead(conn, "t") == 2  # one "a", the key-less one; "b" is busy
    assert retry_dead(conn) == 1  # "other"
    rows = conn.execute(
        "SELECT status, count(*) FROM background_jobs GROUP BY status ORDER BY status"
    ).fetchall()
    assert rows == [("dead", 2), ("pending", 4)]


def test_user_locks_serialise_one_user_across_transactions(database_url: str) -> None:
    alice, bob = uuid.uuid4(), uuid.uuid4()
    with (
        psycopg.connect(database_url) as first,
        psycopg.connect(database_url) as second,
    ):
        assert try_lock_users(first, [alice]) == {alice}
        assert try_lock_users(second, [alice, bob]) == {bob}
        first.rollback()
        second.rollback()
        assert try_lock_users(second, [alice]) == {alice}


def test_batch_transitions_refuse_jobs_of_several_owners(conn: Conn) -> None:
    enqueue_many(conn, [NewJob("t", {}), NewJob("t", {})])
    mixed = claim_due_jobs(conn, "w1", 1, 30) + claim_due_jobs(conn, "w2", 1, 30)
    with pytest.raises(ValueError, match="lease owners"):
        complete_many(conn, mixed)
