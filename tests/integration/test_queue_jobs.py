"""Queue primitives against real PostgreSQL: enqueue/dedup, claim order, fencing, leases."""

from __future__ import annotations

import random
import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from stride.queue import jobs as q
from stride.queue.jobs import FailOutcome, NewJob, RetryPolicy
from stride.queue.user_locks import try_lock_users, user_lock_key

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
    first = q.enqueue(conn, NewJob("t", {"a": 1}, dedup_key="k"))
    second = q.enqueue(conn, NewJob("t", {"a": 2}, dedup_key="k"))
    other = q.enqueue(conn, NewJob("t", {"a": 3}))
    assert first.inserted and not second.inserted
    assert second.job_id == first.job_id
    assert other.inserted and other.job_id != first.job_id


def test_enqueue_after_completion_inserts_a_new_job(conn: Conn) -> None:
    first = q.enqueue(conn, NewJob("t", {}, dedup_key="k"))
    [job] = q.claim_due_jobs(conn, "w", 10, 30)
    assert q.complete(conn, job)
    again = q.enqueue(conn, NewJob("t", {}, dedup_key="k"))
    assert again.inserted and again.job_id != first.job_id


def test_enqueue_notifies_listeners(database_url: str, conn: Conn) -> None:
    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute("LISTEN stride_jobs")
        q.enqueue(conn, NewJob("projection.update", {}))
        payloads = [n.payload for n in listener.notifies(timeout=5, stop_after=1)]
    assert payloads == ["projection.update"]


def test_concurrent_enqueues_with_one_dedup_key_create_one_job(database_url: str) -> None:
    barrier = threading.Barrier(50)
    results: list[q.EnqueueResult] = []
    errors: list[BaseException] = []

    def enqueue_one(index: int) -> None:
        try:
            with psycopg.connect(database_url, autocommit=True) as c:
                barrier.wait()
                results.append(q.enqueue(c, NewJob("t", {"i": index}, dedup_key="same")))
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
    q.enqueue(conn, NewJob("t", {"held": True}, dedup_key="busy"))
    batch = [
        NewJob("t", {"i": 1}, dedup_key="busy"),
        NewJob("t", {"i": 2}, dedup_key="fresh"),
        NewJob("t", {"i": 3}, dedup_key="fresh"),
        NewJob("t", {"i": 4}),
        NewJob("t", {"i": 5}),
    ]
    assert q.enqueue_many(conn, batch) == 3
    rows = conn.execute(
        "SELECT payload->>'i', dedup_key FROM background_jobs WHERE NOT payload ? 'held' "
        "ORDER BY id"
    ).fetchall()
    assert rows == [("2", "fresh"), ("4", None), ("5", None)]
    assert q.enqueue_many(conn, []) == 0


def test_enqueue_many_inserts_thousands_with_their_fields(conn: Conn) -> None:
    user = uuid.uuid4()
    later = datetime.now(UTC) + timedelta(hours=1)
    jobs = [
        NewJob("bulk", {"i": i}, user_id=user, priority=i % 3, max_retries=2, scheduled_for=later)
        for i in range(5000)
    ]
    assert q.enqueue_many(conn, jobs) == 5000
    row = conn.execute(
        "SELECT count(*), count(DISTINCT user_id), max(priority), min(max_retries), "
        "bool_and(scheduled_for = %s) FROM background_jobs",
        (later,),
    ).fetchone()
    assert row == (5000, 1, 2, 2, True)
    assert q.claim_due_jobs(conn, "w", 10, 30) == []  # none of them is due yet


def test_claim_order_is_priority_then_due_time_then_id(conn: Conn) -> None:
    now = datetime.now(UTC)
    ids = {
        name: q.enqueue(conn, NewJob("t", {"n": name}, priority=p, scheduled_for=at)).job_id
        for name, p, at in [
            ("late-low", 0, now - timedelta(seconds=1)),
            ("early-low", 0, now - timedelta(seconds=10)),
            ("high", 5, now - timedelta(seconds=1)),
            ("future-high", 9, now + timedelta(hours=1)),
        ]
    }
    claimed = q.claim_due_jobs(conn, "w", 10, 30)
    assert [j.id for j in claimed] == [ids["high"], ids["early-low"], ids["late-low"]]
    row = conn.execute(
        "SELECT status, attempt, locked_by, locked_until > now(), started_at IS NOT NULL "
        "FROM background_jobs WHERE id = %s",
        (ids["high"],),
    ).fetchone()
    assert row == ("processing", 1, "w", True, True)
    assert claimed[0].attempt == 1 and claimed[0].payload == {"n": "high"}


def test_claim_filters_by_job_type_and_batch_size(conn: Conn) -> None:
    q.enqueue_many(conn, [NewJob("a", {}) for _ in range(5)] + [NewJob("b", {})])
    assert [j.job_type for j in q.claim_due_jobs(conn, "w", 10, 30, ["b"])] == ["b"]
    assert len(q.claim_due_jobs(conn, "w", 3, 30, ["a", "c"])) == 3
    assert len(q.claim_due_jobs(conn, "w", 10, 30)) == 2


def test_concurrent_claimers_never_share_a_job(database_url: str, conn: Conn) -> None:
    q.enqueue_many(conn, [NewJob("t", {"i": i}) for i in range(600)])
    claimed: list[list[int]] = [[] for _ in range(6)]

    def claim_all(slot: int) -> None:
        with psycopg.connect(database_url, autocommit=True) as c:
            while batch := q.claim_due_jobs(c, f"w{slot}", 7, 30):
                claimed[slot].extend(j.id for j in batch)

    threads = [threading.Thread(target=claim_all, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [i for ids in claimed for i in ids]
    assert len(every) == len(set(every)) == 600


def test_completion_is_fenced_by_owner_and_attempt(conn: Conn) -> None:
    job_id = q.enqueue(conn, NewJob("t", {})).job_id
    [stale] = q.claim_due_jobs(conn, "old-worker", 1, 30)
    _expire_leases(conn)
    assert q.reclaim_expired_leases(conn) == 1
    [fresh] = q.claim_due_jobs(conn, "new-worker", 1, 30)
    assert fresh.attempt == stale.attempt + 1
    # The paused worker wakes up: every fenced transition is a no-op for it.
    assert not q.complete(conn, stale)
    assert q.fail(conn, stale, "late") is FailOutcome.LOST
    assert not q.defer(conn, stale, 0)
    assert not q.mark_dead(conn, stale, "late")
    assert q.extend_lease(conn, [stale], 30) == set()
    assert q.complete(conn, fresh)
    assert not q.complete(conn, fresh)  # and never twice
    assert _status(conn, job_id)[:2] == ("completed", 2)


def test_failure_backs_off_then_goes_dead_with_its_error(conn: Conn) -> None:
    job_id = q.enqueue(conn, NewJob("t", {}, max_retries=2)).job_id
    policy = RetryPolicy(base_seconds=60, max_seconds=600, jitter=0.5)
    outcomes = []
    for attempt in range(1, 4):
        _make_due(conn)
        [job] = q.claim_due_jobs(conn, "w", 1, 30)
        assert job.attempt == attempt
        outcomes.append(q.fail(conn, job, f"boom {attempt}", policy=policy))
        if attempt < 3:
            delay = conn.execute(
                "SELECT extract(epoch FROM scheduled_for - now()) FROM background_jobs"
            ).fetchone()
            assert delay is not None
            ceiling = 60 * 2 ** (attempt - 1)
            assert ceiling * 0.5 - 1 <= float(delay[0]) <= ceiling + 1
            assert q.claim_due_jobs(conn, "w", 1, 30) == []  # not due during the backoff
    assert outcomes == [FailOutcome.RETRY, FailOutcome.RETRY, FailOutcome.DEAD]
    status, attempt, error, _ = _status(conn, job_id)
    assert (status, attempt, error) == ("dead", 3, "boom 3")


@given(
    attempt=st.integers(min_value=1, max_value=80),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_backoff_grows_exponentially_within_its_cap_and_jitter(attempt: int, seed: int) -> None:
    policy = RetryPolicy(base_seconds=1.5, max_seconds=300, jitter=0.25)
    ceiling = min(300, 1.5 * 2 ** (attempt - 1))
    delay = policy.delay(attempt, random.Random(seed))
    assert ceiling * 0.75 <= delay <= ceiling


def test_defer_returns_the_job_without_spending_an_attempt(conn: Conn) -> None:
    job_id = q.enqueue(conn, NewJob("t", {})).job_id
    [job] = q.claim_due_jobs(conn, "w", 1, 30)
    assert q.defer(conn, job, 3600)
    assert _status(conn, job_id) == ("pending", 0, None, None)
    assert q.claim_due_jobs(conn, "w", 1, 30) == []
    _make_due(conn)
    [again] = q.claim_due_jobs(conn, "w", 1, 30)
    assert again.attempt == 1


def test_release_keeps_the_place_in_line(conn: Conn) -> None:
    old = datetime.now(UTC) - timedelta(hours=1)
    first = q.enqueue(conn, NewJob("t", {}, scheduled_for=old)).job_id
    q.enqueue(conn, NewJob("t", {}))
    claimed = q.claim_due_jobs(conn, "w", 1, 30)
    assert q.release(conn, claimed) == {first}
    assert [j.id for j in q.claim_due_jobs(conn, "w", 1, 30)] == [first]


def test_extend_lease_pushes_the_deadline(conn: Conn) -> None:
    q.enqueue(conn, NewJob("t", {}))
    [job] = q.claim_due_jobs(conn, "w", 1, 1)
    assert q.extend_lease(conn, [job], 3600) == {job.id}
    _make_due(conn)
    assert q.reclaim_expired_leases(conn) == 0
    row = conn.execute("SELECT locked_until > now() + interval '50 minutes' FROM background_jobs")
    assert row.fetchone() == (True,)


def test_reclaim_keeps_attempts_and_ends_dead_when_crashes_exhaust_them(conn: Conn) -> None:
    job_id = q.enqueue(conn, NewJob("t", {}, max_retries=1)).job_id
    for expected in ["pending", "dead"]:
        q.claim_due_jobs(conn, "crashy", 1, 30)
        _expire_leases(conn)
        assert q.reclaim_expired_leases(conn) == 1
        status, attempt, error, _ = _status(conn, job_id)
        assert status == expected
        assert "lease expired" in error and "crashy" in error
    assert attempt == 2
    assert "no attempts left" in error


def test_mark_dead_records_the_reason(conn: Conn) -> None:
    job_id = q.enqueue(conn, NewJob("t", {})).job_id
    [job] = q.claim_due_jobs(conn, "w", 1, 30)
    assert q.mark_dead(conn, job, "no handler")
    assert _status(conn, job_id)[:3] == ("dead", 1, "no handler")


def test_prune_deletes_only_old_completed_jobs_in_batches(conn: Conn) -> None:
    q.enqueue_many(conn, [NewJob("t", {}) for _ in range(25)])
    q.complete_many(conn, q.claim_due_jobs(conn, "w", 20, 30))
    conn.execute(
        "UPDATE background_jobs SET completed_at = now() - interval '8 days' WHERE id <= 15"
    )
    assert q.prune_completed(conn, timedelta(days=7), batch_size=4) == 15
    counts = conn.execute(
        "SELECT status, count(*) FROM background_jobs GROUP BY status ORDER BY status"
    ).fetchall()
    assert counts == [("completed", 5), ("pending", 5)]


def test_retry_dead_revives_once_per_dedup_key(conn: Conn) -> None:
    for key in ["a", "a", "b", None]:
        q.enqueue(conn, NewJob("t", {}, dedup_key=key, max_retries=0))
        [job] = q.claim_due_jobs(conn, "w", 1, 30)
        q.fail(conn, job, "boom")
    q.enqueue(conn, NewJob("t", {}, dedup_key="b"))  # b is in flight again
    q.enqueue(conn, NewJob("other", {}, max_retries=0))
    [job] = q.claim_due_jobs(conn, "w", 1, 30, ["other"])
    q.fail(conn, job, "boom")
    assert q.retry_dead(conn, "t") == 2  # one "a", the key-less one; "b" is busy
    assert q.retry_dead(conn) == 1  # "other"
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


@given(st.uuids())
def test_user_lock_key_is_a_signed_int32(user_id: uuid.UUID) -> None:
    assert -(2**31) <= user_lock_key(user_id) < 2**31


def test_batch_transitions_refuse_jobs_of_several_owners(conn: Conn) -> None:
    q.enqueue_many(conn, [NewJob("t", {}), NewJob("t", {})])
    mixed = q.claim_due_jobs(conn, "w1", 1, 30) + q.claim_due_jobs(conn, "w2", 1, 30)
    with pytest.raises(ValueError, match="lease owners"):
        q.complete_many(conn, mixed)
