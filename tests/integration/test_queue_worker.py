"""The worker in-process on real PostgreSQL: transactions, retries, batches, users, wake-ups."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from tests.conftest import wait_until

from stride.queue.handlers import (
    BatchContext,
    HandlerRegistry,
    JobCancelledError,
    JobContext,
    PermanentJobError,
)
from stride.queue.jobs import NewJob, RetryPolicy, enqueue, enqueue_many
from stride.queue.maintenance import MAINTENANCE_LOCK_KEY
from stride.queue.user_locks import USER_LOCK_NAMESPACE, user_lock_key
from stride.queue.worker import Worker

Conn = psycopg.Connection[Any]
FAST_RETRY = RetryPolicy(base_seconds=0.02, max_seconds=0.1)

EFFECTS = "CREATE TABLE effects (job_id bigint NOT NULL, note text)"


@pytest.fixture
def effects(conn: Conn) -> Conn:
    conn.execute(EFFECTS)
    return conn


WorkerStarter = Callable[..., Worker]


@pytest.fixture
def start_worker(database_url: str) -> Iterator[WorkerStarter]:
    """Start workers on threads; every one is stopped and joined at teardown."""
    running: list[tuple[Worker, threading.Thread]] = []

    def start(registry: HandlerRegistry, **options: Any) -> Worker:
        options.setdefault("retry_policy", FAST_RETRY)
        options.setdefault("poll_interval", 0.2)
        worker = Worker(database_url, registry, **options)
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        running.append((worker, thread))
        return worker

    yield start
    for worker, _ in running:
        worker.stop()
    for _, thread in running:
        thread.join(timeout=20)
        assert not thread.is_alive(), "worker did not stop"


def statuses(conn: Conn) -> dict[str, int]:
    rows = conn.execute("SELECT status, count(*) FROM background_jobs GROUP BY status").fetchall()
    return dict(rows)


def listeners(conn: Conn) -> int:
    """Worker connections that are LISTENing on this test's database."""
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'stride-listener' "
        "AND datname = current_database() AND query ILIKE 'LISTEN%%'"
    ).fetchone()
    return int(row[0]) if row else 0


def all_due(conn: Conn) -> bool:
    row = conn.execute("SELECT now() >= max(scheduled_for) FROM background_jobs").fetchone()
    return bool(row and row[0])


def job_row(conn: Conn, job_id: int) -> tuple[Any, ...]:
    row = conn.execute(
        "SELECT status, attempt, error_message FROM background_jobs WHERE id = %s", (job_id,)
    ).fetchone()
    assert row is not None
    return tuple(row)


def test_handler_writes_and_completion_commit_together(database_url: str, effects: Conn) -> None:
    registry = HandlerRegistry()

    def handle(ctx: JobContext) -> None:
        ctx.conn.execute("INSERT INTO effects VALUES (%s, %s)", (ctx.job.id, "attempt"))
        if ctx.job.payload.get("fail") and ctx.job.attempt == 1:
            raise RuntimeError("first attempt fails after writing")

    registry.register("t", handle)
    ok = enqueue(effects, NewJob("t", {})).job_id
    flaky = enqueue(effects, NewJob("t", {"fail": True})).job_id
    Worker(database_url, registry, retry_policy=FAST_RETRY).run(once=True)
    wait_until(lambda: job_row(effects, flaky)[0] == "pending", what="flaky job rescheduled")
    assert job_row(effects, flaky)[2] == "RuntimeError: first attempt fails after writing"
    # The failed attempt's write was rolled back with it.
    assert effects.execute("SELECT job_id FROM effects").fetchall() == [(ok,)]
    wait_until(lambda: all_due(effects), what="backoff over")
    Worker(database_url, registry, retry_policy=FAST_RETRY).run(once=True)
    assert job_row(effects, flaky)[:2] == ("completed", 2)
    assert sorted(r[0] for r in effects.execute("SELECT job_id FROM effects")) == [ok, flaky]


TXID_EFFECTS = "CREATE TABLE effects (job_id bigint NOT NULL, txid bigint NOT NULL)"


def record_txid(ctx: JobContext) -> None:
    ctx.conn.execute("INSERT INTO effects VALUES (%s, txid_current())", (ctx.job.id,))


def txids(conn: Conn) -> dict[int, int]:
    return dict(conn.execute("SELECT job_id, txid FROM effects").fetchall())


def test_single_jobs_share_a_transaction_and_a_retried_job_runs_alone(
    database_url: str, conn: Conn
) -> None:
    conn.execute(TXID_EFFECTS)
    registry = HandlerRegistry()

    def handle(ctx: JobContext) -> None:
        record_txid(ctx)
        if ctx.job.payload.get("fail") and ctx.job.attempt == 1:
            raise RuntimeError("first attempt fails after writing")

    registry.register("t", handle)
    first = [enqueue(conn, NewJob("t", {})).job_id for _ in range(4)]
    flaky = enqueue(conn, NewJob("t", {"fail": True})).job_id
    Worker(database_url, registry, retry_policy=FAST_RETRY).run(once=True)
    seen = txids(conn)
    # One commit for the four, the flaky job's write rolled back to its savepoint.
    assert set(seen) == set(first) and len(set(seen.values())) == 1
    assert job_row(conn, flaky) == ("pending", 1, "RuntimeError: first attempt fails after writing")
    wait_until(lambda: all_due(conn), what="backoff over")
    later = [enqueue(conn, NewJob("t", {})).job_id for _ in range(2)]
    Worker(database_url, registry, retry_policy=FAST_RETRY).run(once=True)
    seen = txids(conn)
    assert job_row(conn, flaky)[:2] == ("completed", 2)
    # The retried job committed alone; the two first attempts shared another commit.
    assert seen[later[0]] == seen[later[1]] != seen[flaky]
    assert seen[flaky] not in {seen[j] for j in first}
    assert statuses(conn) == {"completed": 7}


def test_a_lost_lease_commits_nothing_of_its_shared_transaction(
    database_url: str, conn: Conn
) -> None:
    """One job's lease taken over mid-transaction: none of the transaction's writes
    commit; the jobs run again one at a time, and only the stolen one stays unwritten."""
    conn.execute(TXID_EFFECTS)
    registry = HandlerRegistry()
    runs: Counter[int] = Counter()
    stolen: list[int] = []

    def handle(ctx: JobContext) -> None:
        runs[ctx.job.id] += 1
        record_txid(ctx)
        if ctx.job.payload.get("steal") and not stolen:
            stolen.append(ctx.job.id)
            with psycopg.connect(database_url, autocommit=True) as thief:
                thief.execute(
                    "UPDATE background_jobs SET locked_by = 'thief', attempt = attempt + 1 "
                    "WHERE id = %s",
                    (ctx.job.id,),
                )

    registry.register("t", handle)
    jobs = [enqueue(conn, NewJob("t", {"steal": n == 2})).job_id for n in range(5)]
    Worker(database_url, registry, retry_policy=FAST_RETRY).run(once=True)
    seen = txids(conn)
    assert sorted(seen) == sorted(j for j in jobs if j not in stolen)
    assert len(set(seen.values())) == len(seen)  # each in a transaction of its own
    assert all(runs[j] == 2 for j in jobs)  # once shared (rolled back), once alone
    assert job_row(conn, stolen[0])[0] == "processing"  # the thief's now
    assert statuses(conn) == {"completed": 4, "processing": 1}


def test_poison_job_ends_dead_after_max_retries_with_its_error(
    start_worker: WorkerStarter, conn: Conn
) -> None:
    calls: list[int] = []
    registry = HandlerRegistry()

    def poison(ctx: JobContext) -> None:
        calls.append(ctx.job.attempt)
        raise ValueError("cannot digest this payload")

    registry.register("poison", poison)
    job_id = enqueue(conn, NewJob("poison", {}, max_retries=3)).job_id
    start_worker(registry)
    wait_until(lambda: job_row(conn, job_id)[0] == "dead", what="poison job dead")
    assert job_row(conn, job_id) == ("dead", 4, "ValueError: cannot digest this payload")
    assert calls == [1, 2, 3, 4]


def test_job_without_handler_goes_dead_with_a_clear_message(database_url: str, conn: Conn) -> None:
    registry = HandlerRegistry()
    registry.register("known", lambda ctx: None)
    job_id = enqueue(conn, NewJob("mystery.type", {})).job_id
    Worker(database_url, registry).run(once=True)
    status, attempt, error = job_row(conn, job_id)
    assert (status, attempt) == ("dead", 1)
    assert "no handler registered for job type 'mystery.type'" in error
    assert "registered: known" in error


def test_batch_handler_gets_jobs_together_and_a_poison_job_cannot_fail_its_neighbours(
    database_url: str, effects: Conn
) -> None:
    batch_sizes: list[int] = []
    registry = HandlerRegistry()

    def handle(ctx: BatchContext) -> None:
        batch_sizes.append(len(ctx.jobs))
        for job in ctx.jobs:
            if job.payload.get("poison"):
                raise ValueError(f"poison {job.id}")
            ctx.conn.execute("INSERT INTO effects VALUES (%s, 'done')", (job.id,))

    registry.register_batch("b", handle)
    enqueue_many(effects, [NewJob("b", {"i": i}) for i in range(30)])
    poison = enqueue(effects, NewJob("b", {"poison": True}, max_retries=1)).job_id
    enqueue_many(effects, [NewJob("b", {"i": i}) for i in range(30, 40)])
    worker = Worker(database_url, registry, batch_size=100, retry_policy=FAST_RETRY)
    wait_until(
        lambda: worker.run(once=True) or job_row(effects, poison)[0] == "dead", what="poison dead"
    )
    assert batch_sizes[0] == 41  # the whole batch at once, then one at a time after the failure
    assert statuses(effects) == {"completed": 40, "dead": 1}
    assert job_row(effects, poison) == ("dead", 2, f"ValueError: poison {poison}")
    effect_counts = effects.execute("SELECT count(DISTINCT job_id), count(*) FROM effects")
    assert effect_counts.fetchone() == (40, 40)


def test_batch_handler_defers_jobs_without_spending_attempts(database_url: str, conn: Conn) -> None:
    seen: Counter[int] = Counter()
    registry = HandlerRegistry()

    def handle(ctx: BatchContext) -> None:
        for job in ctx.jobs:
            seen[job.id] += 1
            if job.payload["later"] and seen[job.id] == 1:
                ctx.defer(job, 3600)

    registry.register_batch("b", handle)
    enqueue_many(conn, [NewJob("b", {"later": i % 2 == 0}) for i in range(10)])
    Worker(database_url, registry).run(once=True)
    assert statuses(conn) == {"completed": 5, "pending": 5}
    rows = conn.execute(
        "SELECT attempt, scheduled_for > now() + interval '50 minutes' FROM background_jobs "
        "WHERE status = 'pending'"
    ).fetchall()
    assert set(rows) == {(0, True)}


def test_a_single_job_runs_as_steps_deferring_itself_between_them(
    database_url: str, effects: Conn
) -> None:
    """Each step's writes commit with the deferral; other jobs run between the steps."""
    order: list[str] = []
    registry = HandlerRegistry()

    def stepwise(ctx: JobContext) -> None:
        done = effects.execute(
            "SELECT count(*) FROM effects WHERE job_id = %s", (ctx.job.id,)
        ).fetchone()
        step = int(done[0]) if done else 0
        order.append(f"step {step}")
        ctx.conn.execute("INSERT INTO effects VALUES (%s, %s)", (ctx.job.id, f"step {step}"))
        if step < 2:
            ctx.defer(0)

    def other(ctx: JobContext) -> None:
        order.append("other")

    registry.register("stepwise", stepwise)
    registry.register("other", other)
    long_job = enqueue(effects, NewJob("stepwise", {})).job_id
    enqueue(effects, NewJob("other", {}, priority=1))
    # One claim at a time: the other job, enqueued later but of higher priority, runs
    # before the long job's first step; the long job takes three runs, no attempt spent.
    Worker(database_url, registry, batch_size=1).run(once=True)
    assert order == ["other", "step 0", "step 1", "step 2"]
    assert job_row(effects, long_job) == ("completed", 1, None)


def test_a_job_that_finds_its_work_cancelled_ends_cancelled(database_url: str, conn: Conn) -> None:
    registry = HandlerRegistry()

    def handle(ctx: JobContext) -> None:
        ctx.conn.execute("CREATE TABLE never_committed (x int)")
        raise JobCancelledError("the run it belongs to was cancelled")

    registry.register("c", handle)
    job_id = enqueue(conn, NewJob("c", {}, max_retries=5)).job_id
    Worker(database_url, registry, retry_policy=FAST_RETRY).run(once=True)
    assert job_row(conn, job_id) == ("cancelled", 1, "the run it belongs to was cancelled")
    assert conn.execute("SELECT to_regclass('never_committed')").fetchone() == (None,)


def test_projection_work_for_one_user_never_runs_concurrently(
    start_worker: WorkerStarter, conn: Conn
) -> None:
    users = [uuid.uuid4() for _ in range(4)]
    guard = threading.Lock()
    active: Counter[uuid.UUID] = Counter()
    most_per_user: Counter[uuid.UUID] = Counter()
    most_overall = [0]
    registry = HandlerRegistry()

    def handle(ctx: BatchContext) -> None:
        mine = {job.user_id for job in ctx.jobs if job.user_id is not None}
        with guard:
            for user in mine:
                active[user] += 1
                most_per_user[user] = max(most_per_user[user], active[user])
            most_overall[0] = max(most_overall[0], sum(1 for n in active.values() if n))
        time.sleep(0.02)  # a handler that takes a while, so workers overlap
        with guard:
            for user in mine:
                active[user] -= 1

    registry.register_batch("projection.update", handle, serialize_by_user=True)
    enqueue_many(
        conn,
        [NewJob("projection.update", {"n": n}, user_id=users[n % 4]) for n in range(200)],
    )
    for _ in range(2):
        start_worker(registry, concurrency=3, batch_size=3, user_busy_delay=0.02)
    wait_until(lambda: statuses(conn) == {"completed": 200}, what="all jobs completed")
    assert max(most_per_user.values()) == 1
    assert most_overall[0] > 1  # different users did run in parallel
    # Jobs deferred because their user was busy did not spend an attempt.
    assert conn.execute("SELECT max(attempt) FROM background_jobs").fetchone() == (1,)


def test_single_handler_can_serialise_by_user(database_url: str, conn: Conn) -> None:
    user = uuid.uuid4()
    registry = HandlerRegistry()
    registry.register("p", lambda ctx: None, serialize_by_user=True)
    job_id = enqueue(conn, NewJob("p", {}, user_id=user)).job_id
    with psycopg.connect(database_url) as holder:
        # Another transaction holds the user's lock: the job is deferred, not run.
        holder.execute(
            "SELECT pg_advisory_xact_lock(%s, %s)",
            (USER_LOCK_NAMESPACE, user_lock_key(user)),
        )
        Worker(database_url, registry, user_busy_delay=0.01).run(once=True)
        assert job_row(conn, job_id)[:2] == ("pending", 0)
    wait_until(lambda: all_due(conn), what="deferral over")
    Worker(database_url, registry).run(once=True)
    assert job_row(conn, job_id)[:2] == ("completed", 1)


def test_heartbeat_keeps_a_long_job_leased(start_worker: WorkerStarter, conn: Conn) -> None:
    runs: list[int] = []
    release = threading.Event()
    registry = HandlerRegistry()

    def slow(ctx: JobContext) -> None:
        runs.append(ctx.job.attempt)
        # Work longer than a lease heartbeats: that also touches the job's
        # transaction, which the server would otherwise end once it has sat
        # idle for a lease (idle_in_transaction_session_timeout).
        while not release.wait(0.1):
            assert ctx.heartbeat()
        assert ctx.heartbeat()

    registry.register("slow", slow)
    job_id = enqueue(conn, NewJob("slow", {})).job_id
    start_worker(registry, lease_seconds=0.6)
    start_worker(registry, lease_seconds=0.6)
    wait_until(lambda: runs, what="job started")
    # Three leases long: without heartbeats another worker would reclaim it.
    deadline = conn.execute("SELECT clock_timestamp() + interval '2 seconds'").fetchone()[0]  # type: ignore[index]
    wait_until(
        lambda: conn.execute("SELECT clock_timestamp() > %s", (deadline,)).fetchone()[0],  # type: ignore[index]
        what="three leases passed",
    )
    assert job_row(conn, job_id)[:2] == ("processing", 1)
    release.set()
    wait_until(lambda: job_row(conn, job_id)[0] == "completed", what="completed")
    assert runs == [1]


def test_notification_wakes_an_idle_worker(start_worker: WorkerStarter, conn: Conn) -> None:
    registry = HandlerRegistry()
    registry.register("t", lambda ctx: None)
    start_worker(registry, poll_interval=60)
    wait_until(lambda: listeners(conn), what="listener up")
    job_id = enqueue(conn, NewJob("t", {})).job_id
    # Far sooner than the 60 s poll: only the notification can explain it.
    wait_until(lambda: job_row(conn, job_id)[0] == "completed", timeout=10, what="woken")


def test_worker_survives_terminated_connections(start_worker: WorkerStarter, conn: Conn) -> None:
    started = threading.Event()
    registry = HandlerRegistry()

    def handle(ctx: JobContext) -> None:
        if ctx.job.payload.get("stall") and ctx.job.attempt == 1:
            started.set()
            while True:  # until the test terminates our backend
                ctx.conn.execute("SELECT pg_sleep(0.05)")

    registry.register("t", handle)
    start_worker(registry, poll_interval=60)
    wait_until(lambda: listeners(conn), what="listener up")
    job_id = enqueue(conn, NewJob("t", {"stall": True}, priority=1)).job_id
    behind = [enqueue(conn, NewJob("t", {})).job_id for _ in range(3)]
    assert started.wait(20)
    killed = conn.execute(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE datname = current_database() AND application_name LIKE 'stride-%%'"
    ).fetchone()
    assert killed is not None and killed[0] >= 3  # runner, listener and keeper
    wait_until(lambda: job_row(conn, job_id)[0] == "completed", what="retried after reconnect")
    _, attempt, error = job_row(conn, job_id)
    assert attempt == 2 and "connection lost" in error
    # Claimed with it but never started: released, not charged an attempt.
    wait_until(lambda: all(job_row(conn, j)[0] == "completed" for j in behind), what="rest")
    assert {job_row(conn, j)[1:] for j in behind} == {(1, None)}
    # The listener reconnected too: a new job is picked up without the 60 s poll.
    wait_until(lambda: listeners(conn), what="listener back")
    again = enqueue(conn, NewJob("t", {})).job_id
    wait_until(lambda: job_row(conn, again)[0] == "completed", timeout=10, what="woken again")


def test_stop_finishes_the_job_in_hand_and_releases_the_rest(database_url: str, conn: Conn) -> None:
    in_handler = threading.Event()
    carry_on = threading.Event()
    registry = HandlerRegistry()

    def handle(ctx: JobContext) -> None:
        in_handler.set()
        carry_on.wait(10)

    registry.register("t", handle)
    enqueue_many(conn, [NewJob("t", {}) for _ in range(10)])
    worker = Worker(database_url, registry, batch_size=10)
    thread = threading.Thread(target=worker.run)
    thread.start()
    assert in_handler.wait(10)
    worker.stop()
    carry_on.set()
    thread.join(10)
    assert not thread.is_alive()
    assert statuses(conn) == {"completed": 1, "pending": 9}
    assert conn.execute(
        "SELECT count(*) FROM background_jobs WHERE status = 'pending' AND attempt = 0 "
        "AND locked_by IS NULL"
    ).fetchone() == (9,)


def test_jobs_stuck_behind_a_slow_one_are_released_for_other_workers(
    start_worker: WorkerStarter, conn: Conn, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="stride.queue.runner")
    release = threading.Event()
    registry = HandlerRegistry()

    def handle(ctx: JobContext) -> None:
        if ctx.job.payload.get("slow"):
            release.wait(10)

    registry.register("t", handle)
    slow = enqueue(conn, NewJob("t", {"slow": True}, priority=1)).job_id
    rest = enqueue_many(conn, [NewJob("t", {}) for _ in range(5)])
    start_worker(registry, batch_size=10, lease_seconds=1)
    wait_until(lambda: job_row(conn, slow)[0] == "processing", what="slow job running")
    # Past half a lease with five jobs waiting behind it in the same claim.
    deadline = conn.execute("SELECT clock_timestamp() + interval '0.7 seconds'").fetchone()
    assert deadline is not None
    wait_until(
        lambda: conn.execute("SELECT clock_timestamp() > %s", deadline).fetchone() == (True,),
        what="half a lease passed",
    )
    release.set()
    wait_until(lambda: statuses(conn) == {"completed": rest + 1}, what="all completed")
    assert "released_unstarted count=5" in caplog.text
    assert conn.execute("SELECT max(attempt) FROM background_jobs").fetchone() == (1,)


def test_higher_priority_jobs_of_a_claim_run_as_their_own_batch_first(
    conn: Conn, database_url: str
) -> None:
    batches: list[list[int]] = []

    def record(ctx: BatchContext) -> None:
        batches.append(sorted(job.priority for job in ctx.jobs))

    registry = HandlerRegistry()
    registry.register_batch("work", record)
    enqueue_many(conn, [NewJob("work", {"n": n}, priority=-10) for n in range(5)])
    enqueue_many(conn, [NewJob("work", {"n": n}, priority=0) for n in range(2)])
    Worker(database_url, registry, batch_size=10).run(once=True)
    assert batches == [[0, 0], [-10] * 5]
    assert statuses(conn) == {"completed": 7}


def test_a_permanent_error_fails_the_job_at_once_without_retries(
    database_url: str, conn: Conn
) -> None:
    calls: Counter[int] = Counter()

    def single(ctx: JobContext) -> None:
        calls[ctx.job.id] += 1
        raise PermanentJobError(f"job {ctx.job.id}: payload.user_id is not a UUID")

    def batch(ctx: BatchContext) -> None:
        for job in ctx.jobs:
            calls[job.id] += 1
            if job.payload.get("bad"):
                raise PermanentJobError(f"job {job.id}: unusable payload")

    registry = HandlerRegistry()
    registry.register("single", single)
    registry.register_batch("batch", batch)
    lone = enqueue(conn, NewJob("single", {}, max_retries=5)).job_id
    enqueue_many(conn, [NewJob("batch", {"bad": False}) for _ in range(3)])
    bad = enqueue(conn, NewJob("batch", {"bad": True}, max_retries=5)).job_id
    Worker(database_url, registry, batch_size=10, retry_policy=FAST_RETRY).run(once=True)
    assert job_row(conn, lone) == (
        "failed",
        1,
        f"PermanentJobError: job {lone}: payload.user_id is not a UUID",
    )
    assert job_row(conn, bad) == ("failed", 1, f"PermanentJobError: job {bad}: unusable payload")
    assert statuses(conn) == {"completed": 3, "failed": 2}
    assert calls[lone] == 1
    # The batch failed as a whole once, then every job ran alone: the bad one failed alone.
    assert calls[bad] == 2


def leaders(workers: list[Worker]) -> list[Worker]:
    return [w for w in workers if w.is_maintenance_leader]


def maintenance_locks(conn: Conn) -> int:
    row = conn.execute(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
        "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
        "AND ((classid::bigint << 32) | objid::bigint) = %s AND objsubid = 1",
        (MAINTENANCE_LOCK_KEY,),
    ).fetchone()
    return int(row[0]) if row else 0


def test_one_elected_worker_maintains_the_queue_and_another_takes_over(
    start_worker: WorkerStarter, conn: Conn
) -> None:
    registry = HandlerRegistry()
    registry.register("t", lambda ctx: None)
    workers = [
        start_worker(registry, lease_seconds=1, prune_completed_after=timedelta(days=1))
        for _ in range(3)
    ]
    wait_until(lambda: leaders(workers), what="a leader elected")
    # A job whose worker died: still processing, its lease long gone.
    stuck = enqueue(conn, NewJob("t", {})).job_id
    conn.execute(
        "UPDATE background_jobs SET status = 'processing', attempt = 1, locked_by = 'gone/0', "
        "locked_until = now() - interval '1 minute' WHERE id = %s",
        (stuck,),
    )
    wait_until(lambda: job_row(conn, stuck)[0] == "completed", what="reclaimed and run")
    assert "lease expired on attempt 1 (worker gone/0" in job_row(conn, stuck)[2]
    # Several campaign rounds later there is still exactly one leader.
    deadline = time.monotonic() + 1.5
    wait_until(lambda: time.monotonic() > deadline, what="a few maintenance rounds")
    [leader] = leaders(workers)
    assert maintenance_locks(conn) == 1
    # Old completed jobs, arriving after the leader's first pruning round.
    old = enqueue_many(conn, [NewJob("done", {}) for _ in range(3)])
    conn.execute(
        "UPDATE background_jobs SET status = 'completed', completed_at = now() - interval '2 days' "
        "WHERE job_type = 'done'"
    )

    leader.stop()
    others = [w for w in workers if w is not leader]
    wait_until(lambda: len(leaders(others)) == 1, what="another worker took over")
    assert not leader.is_maintenance_leader
    assert maintenance_locks(conn) == 1
    # The new leader maintains too: it prunes on election, and reclaims.
    wait_until(
        lambda: (
            conn.execute("SELECT count(*) FROM background_jobs WHERE job_type = 'done'").fetchone()
            == (0,)
        ),
        what=f"{old} old completed jobs pruned",
    )
    assert job_row(conn, stuck)[0] == "completed"  # completed within the retention: kept
    again = enqueue(conn, NewJob("t", {})).job_id
    conn.execute(
        "UPDATE background_jobs SET status = 'processing', attempt = 1, locked_by = 'gone/1', "
        "locked_until = now() - interval '1 minute' WHERE id = %s",
        (again,),
    )
    wait_until(lambda: job_row(conn, again)[0] == "completed", what="reclaimed by the new leader")


# Makes the claim of one job fail inside the database, as an index row too large
# for its index did: SQLSTATE 54000, which psycopg files under OperationalError.
POISON_CLAIM = """
CREATE FUNCTION poison_claim() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.payload ? 'poison' AND NEW.status = 'processing' THEN
        RAISE EXCEPTION 'index row size exceeds maximum' USING ERRCODE = '54000';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER poison_claim BEFORE UPDATE ON background_jobs
    FOR EACH ROW EXECUTE FUNCTION poison_claim();
"""


def test_a_claim_that_fails_in_the_database_backs_off_and_never_reconnects(
    start_worker: WorkerStarter, conn: Conn, caplog: pytest.LogCaptureFixture
) -> None:
    conn.execute(POISON_CLAIM)
    registry = HandlerRegistry()
    registry.register("t", lambda ctx: None)
    enqueue(conn, NewJob("t", {"poison": True}, priority=1))
    enqueue_many(conn, [NewJob("t", {"n": n}) for n in range(10)])
    start_worker(registry)
    wait_until(lambda: "runner_error" in caplog.text, what="the claim failed")
    time.sleep(2.0)
    errors = [r for r in caplog.records if "runner_error" in r.getMessage()]
    # Backoff 0.1, 0.2, 0.4, 0.8 s...: a handful of lines in two seconds, not hundreds.
    assert 2 <= len(errors) <= 6, [r.getMessage() for r in errors]
    assert "ProgramLimitExceeded" in errors[0].getMessage()
    assert not [r for r in caplog.records if "connection lost" in r.getMessage()]
    assert not [r for r in caplog.records if "reconnect" in r.getMessage()]
    # The runner's session survived it all: once the cause is gone, work flows.
    conn.execute("DROP TRIGGER poison_claim ON background_jobs")
    wait_until(lambda: statuses(conn) == {"completed": 11}, timeout=15, what="all completed")


def test_a_lock_held_past_the_lock_timeout_defers_the_batch_without_spending_attempts(
    start_worker: WorkerStarter, effects: Conn, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    registry = HandlerRegistry()

    def write(ctx: BatchContext) -> None:
        ctx.conn.execute(
            "INSERT INTO effects (job_id) SELECT unnest(%s::bigint[])", ([j.id for j in ctx.jobs],)
        )

    registry.register_batch("w", write)
    with psycopg.connect(database_url) as holder:
        # An operator's exclusive lock, held for several leases.
        holder.execute("LOCK TABLE effects IN ACCESS EXCLUSIVE MODE")
        enqueue_many(effects, [NewJob("w", {"n": n}) for n in range(30)])
        start_worker(registry, lease_seconds=0.8)  # lock_timeout 200 ms
        wait_until(lambda: caplog.text.count("lock_wait_timeout") >= 3, what="three lock timeouts")
        # Back to pending between tries, attempts untouched, nothing given up on.
        wait_until(
            lambda: (
                effects.execute(
                    "SELECT bool_and(status = 'pending' AND attempt = 0) FROM background_jobs"
                ).fetchone()
                == (True,)
            ),
            what="deferred, not failed",
        )
    wait_until(lambda: statuses(effects) == {"completed": 30}, what="done once the lock is gone")
    assert effects.execute("SELECT max(attempt), count(*) FROM background_jobs").fetchone() == (
        1,
        30,
    )
    assert effects.execute("SELECT count(*) FROM effects").fetchone() == (30,)
    assert "connection lost" not in caplog.text and "job_failed" not in caplog.text
