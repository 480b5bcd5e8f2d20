"""The worker: claims due jobs, runs their handlers, completes them in the handler's transaction.

Threads, each with its own connection:
- runners (`concurrency` of them) claim a batch, group it by job type and run
  the handlers; a handler's writes and its jobs' completion commit together;
- the listener waits on LISTEN stride_jobs and wakes idle runners (polling every
  `poll_interval` is the fallback, so a lost notification only costs latency);
- the keeper extends the leases of every job in hand and reclaims expired leases
  of dead workers.
A lost connection is re-opened; jobs that were in hand are retried (fenced, so a
commit that did land is never undone) or, failing that, reclaimed when their
lease runs out.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import secrets
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from types import FrameType

import psycopg

from stride.queue import jobs as q
from stride.queue import metrics
from stride.queue.jobs import ClaimedJob, RetryPolicy
from stride.queue.user_locks import try_lock_users
from stride.storage.connection import DatabaseConfigError, DbConnection, connect

logger = logging.getLogger("stride.queue.worker")

LISTEN_SQL = "LISTEN stride_jobs"
# Runner sessions commit without waiting for the WAL flush. A job's handler writes
# and its completion are one transaction, so a server crash can only lose both
# together, leaving the job processing (reclaimed after its lease) or pending:
# the same as a worker crash, which at-least-once delivery already covers. And
# PostgreSQL never loses an async commit that a later durable commit (say, an
# enqueue that saw the job completed) depended on. Saves one fsync per job.
ASYNC_COMMIT_SQL = "SET synchronous_commit = off"
# Runner queries touch one batch of users by index; a parallel plan only adds
# process start-up on a busy server, so runner sessions never go parallel.
NO_PARALLEL_SQL = "SET max_parallel_workers_per_gather = 0"
RECONNECT_MAX_DELAY = 5.0


class LeaseLostError(Exception):
    """A fenced update matched fewer jobs than we held: someone took a lease over."""


@dataclass(slots=True)
class JobContext:
    """What a single-job handler gets: its job and the connection inside its transaction."""

    conn: DbConnection
    job: ClaimedJob
    worker_id: str
    database_url: str
    _heartbeat: Callable[[Sequence[ClaimedJob]], bool] = field(repr=False)

    def heartbeat(self) -> bool:
        """Extend the lease now; False when the job is no longer ours (stop working on it)."""
        return self._heartbeat([self.job])


@dataclass(slots=True)
class BatchContext:
    """What a batch handler gets: many jobs of one type, one transaction, a way to defer some."""

    conn: DbConnection
    jobs: list[ClaimedJob]
    worker_id: str
    database_url: str
    _heartbeat: Callable[[Sequence[ClaimedJob]], bool] = field(repr=False)
    deferred: dict[int, float] = field(default_factory=dict)

    def defer(self, job: ClaimedJob, seconds: float) -> None:
        """Put `job` back to pending after `seconds`, without spending an attempt."""
        self.deferred[job.id] = seconds

    def heartbeat(self) -> bool:
        """Extend the leases now; False when any job is no longer ours."""
        return self._heartbeat(self.jobs)


SingleHandler = Callable[[JobContext], None]
BatchHandler = Callable[[BatchContext], None]


@dataclass(frozen=True, slots=True)
class Registration:
    job_type: str
    handler: Callable[..., None]
    batch: bool
    serialize_by_user: bool


class HandlerRegistry:
    """Handlers by job type: single-job (`register`) or batch (`register_batch`)."""

    def __init__(self) -> None:
        self._registrations: dict[str, Registration] = {}

    def register(
        self, job_type: str, handler: SingleHandler, *, serialize_by_user: bool = False
    ) -> None:
        self._add(Registration(job_type, handler, False, serialize_by_user))

    def register_batch(
        self, job_type: str, handler: BatchHandler, *, serialize_by_user: bool = False
    ) -> None:
        self._add(Registration(job_type, handler, True, serialize_by_user))

    def _add(self, registration: Registration) -> None:
        if registration.job_type in self._registrations:
            raise ValueError(f"a handler for {registration.job_type!r} is already registered")
        self._registrations[registration.job_type] = registration

    def get(self, job_type: str) -> Registration | None:
        return self._registrations.get(job_type)

    @property
    def job_types(self) -> list[str]:
        return sorted(self._registrations)

    def __len__(self) -> int:
        return len(self._registrations)


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def describe_error(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _ConnectionLostError(Exception):
    """The runner's connection broke; the jobs in hand must be recovered on a new one."""


class Worker:
    """Runs handlers for due jobs until stopped (or, with `once`, until nothing is due).

    `durable_commits=False` (the default) commits handler transactions without
    waiting for the WAL flush; see ASYNC_COMMIT_SQL for why that is safe here.
    """

    def __init__(
        self,
        database_url: str,
        registry: HandlerRegistry,
        *,
        concurrency: int = 1,
        batch_size: int = 100,
        lease_seconds: float = 30.0,
        job_types: Sequence[str] | None = None,
        worker_id: str | None = None,
        poll_interval: float = 1.0,
        retry_policy: RetryPolicy = q.DEFAULT_RETRY_POLICY,
        user_busy_delay: float = 0.5,
        reclaim_interval: float | None = None,
        durable_commits: bool = False,
    ) -> None:
        if concurrency < 1 or batch_size < 1 or lease_seconds <= 0 or poll_interval <= 0:
            raise ValueError("concurrency, batch size, lease and poll interval must be positive")
        self.database_url = database_url
        self.registry = registry
        self.concurrency = concurrency
        self.batch_size = batch_size
        self.lease_seconds = lease_seconds
        self.job_types = list(job_types) if job_types is not None else None
        self.worker_id = worker_id or default_worker_id()
        self.poll_interval = poll_interval
        self.retry_policy = retry_policy
        self.user_busy_delay = user_busy_delay
        self.reclaim_interval = reclaim_interval or max(0.5, min(lease_seconds / 2, 15.0))
        self.durable_commits = durable_commits
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._held_lock = threading.Lock()
        self._held: dict[int, ClaimedJob] = {}
        self._keeper_lock = threading.Lock()
        self._keeper_conn: DbConnection | None = None
        self._crash: Exception | None = None

    # --- lifecycle -----------------------------------------------------------------------

    def stop(self) -> None:
        """Stop claiming; runners finish the handler in hand and hand back the rest."""
        self._stop.set()
        self._wake.set()

    def run(self, stop_event: threading.Event | None = None, once: bool = False) -> None:
        """Run until `stop()`, SIGTERM/SIGINT or `stop_event`; with `once`, until idle."""
        if stop_event is not None:
            self._stop = stop_event
        if not self.registry:
            logger.warning("no handlers are registered: every claimed job will go dead")
        logger.info(
            "worker_start worker_id=%s concurrency=%d batch_size=%d lease_s=%g job_types=%s",
            self.worker_id,
            self.concurrency,
            self.batch_size,
            self.lease_seconds,
            ",".join(self.job_types) if self.job_types is not None else "*",
        )
        with self._signals_stop_worker():
            runners = [
                threading.Thread(
                    target=self._run_runner,
                    args=(f"{self.worker_id}/{i}", once),
                    name=f"stride-runner-{i}",
                )
                for i in range(self.concurrency)
            ]
            helpers_stop = threading.Event()
            helpers = [threading.Thread(target=self._run_keeper, args=(helpers_stop,), daemon=True)]
            if not once:
                helpers.append(
                    threading.Thread(target=self._run_listener, args=(helpers_stop,), daemon=True)
                )
            for thread in [*helpers, *runners]:
                thread.start()
            try:
                for thread in runners:
                    while thread.is_alive():
                        thread.join(timeout=0.2)
            finally:
                helpers_stop.set()
                self._wake.set()
                for thread in helpers:
                    thread.join(timeout=5)
                self._close_keeper()
        logger.info("worker_stop worker_id=%s", self.worker_id)
        if self._crash is not None:
            raise self._crash

    @contextlib.contextmanager
    def _signals_stop_worker(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def on_signal(signum: int, _frame: FrameType | None) -> None:
            logger.info("worker_signal signal=%s: stop claiming", signal.Signals(signum).name)
            self.stop()

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _connect(self, purpose: str) -> DbConnection:
        conn = connect(self.database_url, autocommit=True, application_name=f"stride-{purpose}")
        if purpose == "runner":
            conn.execute(NO_PARALLEL_SQL)
            if not self.durable_commits:
                conn.execute(ASYNC_COMMIT_SQL)
        return conn

    def _reconnect(self, purpose: str, stop: threading.Event) -> DbConnection | None:
        """Open a connection, retrying with backoff; None when asked to stop first."""
        delay = 0.1
        while not stop.is_set():
            try:
                return self._connect(purpose)
            except (DatabaseConfigError, psycopg.OperationalError) as exc:
                logger.warning("reconnect purpose=%s error=%r retry_in_s=%.1f", purpose, exc, delay)
                stop.wait(delay)
                delay = min(delay * 2, RECONNECT_MAX_DELAY)
        return None

    # --- runner ----------------------------------------------------------------------------

    def _run_runner(self, lease_owner: str, once: bool) -> None:
        runner = _Runner(self, lease_owner)
        try:
            runner.loop(once)
        except Exception as exc:
            logger.exception("runner crashed lease_owner=%s", lease_owner)
            self._crash = exc
            self.stop()
        finally:
            runner.close()

    def _hold(self, jobs: Sequence[ClaimedJob]) -> None:
        with self._held_lock:
            for job in jobs:
                self._held[job.id] = job

    def _drop(self, jobs: Sequence[ClaimedJob]) -> None:
        with self._held_lock:
            for job in jobs:
                self._held.pop(job.id, None)

    # --- keeper: leases and reclaim -----------------------------------------------------------

    def _keeper(self) -> DbConnection:
        if self._keeper_conn is None or self._keeper_conn.closed or self._keeper_conn.broken:
            self._close_keeper()
            self._keeper_conn = self._connect("keeper")
        return self._keeper_conn

    def _close_keeper(self) -> None:
        if self._keeper_conn is not None:
            with contextlib.suppress(Exception):
                self._keeper_conn.close()
            self._keeper_conn = None

    def _extend(self, jobs: Sequence[ClaimedJob]) -> set[int] | None:
        """Extend leases of `jobs`; the ids still ours, or None when the database is unreachable."""
        by_owner: dict[str, list[ClaimedJob]] = {}
        for job in jobs:
            by_owner.setdefault(job.locked_by, []).append(job)
        kept: set[int] = set()
        with self._keeper_lock:
            try:
                conn = self._keeper()
                for owned in by_owner.values():
                    kept |= q.extend_lease(conn, owned, self.lease_seconds)
            except (DatabaseConfigError, psycopg.OperationalError) as exc:
                logger.warning("heartbeat failed error=%r", exc)
                self._close_keeper()
                return None
        return kept

    def heartbeat(self, jobs: Sequence[ClaimedJob]) -> bool:
        """Extend leases of `jobs` now; False when any of them is known to be lost."""
        kept = self._extend(jobs)
        if kept is None:
            return True  # unknown, not lost: the next beat retries and the fence protects us
        lost = [job for job in jobs if job.id not in kept]
        for job in lost:
            logger.warning(
                "lease_lost job_type=%s job_id=%d attempt=%d", job.job_type, job.id, job.attempt
            )
        return not lost

    def _run_keeper(self, stop: threading.Event) -> None:
        beat_every = max(self.lease_seconds / 3, 0.05)
        next_reclaim = 0.0  # reclaim at once: a restarted worker frees its own dead leases
        while True:
            with self._held_lock:
                held = list(self._held.values())
            if held:
                self._extend(held)
            if time.monotonic() >= next_reclaim:
                next_reclaim = time.monotonic() + self.reclaim_interval
                self._reclaim()
            if stop.wait(min(beat_every, self.reclaim_interval)):
                return

    def _reclaim(self) -> None:
        with self._keeper_lock:
            try:
                count = q.reclaim_expired_leases(self._keeper())
            except (DatabaseConfigError, psycopg.OperationalError) as exc:
                logger.warning("reclaim failed error=%r", exc)
                self._close_keeper()
                return
        if count:
            logger.info("reclaimed_expired_leases count=%d", count)
            self._wake.set()

    # --- listener --------------------------------------------------------------------------------

    def _run_listener(self, stop: threading.Event) -> None:
        while not stop.is_set():
            conn = self._reconnect("listener", stop)
            if conn is None:
                return
            try:
                conn.execute(LISTEN_SQL)
                # Anything enqueued while we were not listening is found by this claim.
                self._wake.set()
                while not stop.is_set():
                    for notify in conn.notifies(timeout=0.5):
                        if self._wants(notify.payload):
                            self._wake.set()
            except psycopg.OperationalError as exc:
                logger.warning("listener connection lost error=%r: reconnecting", exc)
            finally:
                with contextlib.suppress(Exception):
                    conn.close()

    def _wants(self, payload: str) -> bool:
        return self.job_types is None or payload == q.NOTIFY_ANY_TYPE or payload in self.job_types

    def wait_for_work(self) -> None:
        """Sleep until notified, stopped, or the poll interval passes."""
        self._wake.wait(self.poll_interval)
        self._wake.clear()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()


class _Runner:
    """One claim-run-complete loop on one connection, leasing jobs as `lease_owner`."""

    def __init__(self, worker: Worker, lease_owner: str) -> None:
        self.worker = worker
        self.lease_owner = lease_owner
        self.conn: DbConnection | None = None
        self.in_hand: list[ClaimedJob] = []  # claimed and not yet settled
        self.running: set[int] = set()  # ids whose handler has started
        self.rng = random.Random()
        # Jobs claimed together wait their turn; past this they go back for others.
        self.hand_back_after = worker.lease_seconds / 2

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
            self.conn = None

    def loop(self, once: bool) -> None:
        w = self.worker
        while not w.stopping:
            try:
                if self._broken():
                    self.close()
                    self.conn = w._reconnect("runner", w._stop)
                    if self.conn is None:
                        return
                    self._recover_in_hand()
                assert self.conn is not None
                claimed = q.claim_due_jobs(
                    self.conn, self.lease_owner, w.batch_size, w.lease_seconds, w.job_types
                )
                if not claimed:
                    if once:
                        return
                    w.wait_for_work()
                    continue
                self.in_hand = list(claimed)
                w._hold(claimed)
                for job_type, group in _group_by_type(claimed).items():
                    metrics.JOBS_CLAIMED.labels(job_type).inc(len(group))
                self._run_claimed(claimed)
            except (_ConnectionLostError, psycopg.OperationalError) as exc:
                logger.warning(
                    "runner connection lost lease_owner=%s error=%r: reconnecting",
                    self.lease_owner,
                    exc.__cause__ or exc,
                )
                self.close()
                # Stop heartbeating them: if we cannot come back, their leases run out.
                w._drop(self.in_hand)
        try:
            self._hand_back(self.in_hand)
        except psycopg.OperationalError as exc:
            logger.warning("hand back failed error=%r: leases will expire instead", exc)

    def _recover_in_hand(self) -> None:
        """After a reconnect: retry jobs whose run died with the old connection, release the rest.

        Fenced, so a job whose commit did land before the connection broke is left alone.
        """
        assert self.conn is not None
        died = [j for j in self.in_hand if j.id in self.running]
        for job in died:
            outcome = q.fail(
                self.conn,
                job,
                f"database connection lost during attempt {job.attempt}",
                delay_seconds=0,
            )
            self._record(job, 0.0, outcome.value)
        self.running.clear()
        self._finished(died)
        self._hand_back(self.in_hand)

    def _hand_back(self, jobs: Sequence[ClaimedJob]) -> None:
        """Release claimed-but-unstarted jobs, keeping their place in line and their attempts."""
        jobs = list(jobs)
        if not jobs or self._broken():
            return
        assert self.conn is not None
        released = q.release(self.conn, jobs)
        self._finished(jobs)
        if released:
            logger.info(
                "released_unstarted count=%d lease_owner=%s", len(released), self.lease_owner
            )

    def _run_claimed(self, claimed: list[ClaimedJob]) -> None:
        """Run handlers per (type, priority) group in claim order: batches at once, singles in turn.

        On stop, or when the rest has waited half a lease behind slow jobs, the
        jobs not yet started are released so that other workers can take them.
        """
        w = self.worker
        claimed_at = time.monotonic()
        for (job_type, _), group in _group_by_type_and_priority(claimed).items():
            registration = w.registry.get(job_type)
            serial = registration is not None and not registration.batch
            for unit in [[job] for job in group] if serial else [group]:
                if w.stopping or time.monotonic() - claimed_at > self.hand_back_after:
                    self._hand_back(self.in_hand)
                    return
                if registration is None:
                    for job in unit:
                        self._no_handler(job)
                elif registration.batch:
                    self._run_batch(registration, unit)
                else:
                    self._run_one(registration, unit[0])

    def _finished(self, jobs: Sequence[ClaimedJob]) -> None:
        done = {j.id for j in jobs}
        self.in_hand = [j for j in self.in_hand if j.id not in done]
        self.worker._drop(jobs)

    def _record(self, job: ClaimedJob, duration_s: float, outcome: str) -> None:
        counter = {
            "completed": metrics.JOBS_COMPLETED,
            "retry": metrics.JOBS_RETRIED,
            "dead": metrics.JOBS_DEAD,
            "deferred": metrics.JOBS_DEFERRED,
            "lost": metrics.JOBS_LOST,
        }.get(outcome)
        if counter is not None:
            counter.labels(job.job_type).inc()
        logger.info(
            "job job_type=%s job_id=%d attempt=%d duration_ms=%.1f outcome=%s",
            job.job_type,
            job.id,
            job.attempt,
            duration_s * 1000,
            outcome,
        )

    def _no_handler(self, job: ClaimedJob) -> None:
        assert self.conn is not None
        known = ", ".join(self.worker.registry.job_types) or "none"
        reason = (
            f"no handler registered for job type {job.job_type!r} "
            f"on worker {self.worker.worker_id} (registered: {known})"
        )
        outcome = "dead" if q.mark_dead(self.conn, job, reason) else "lost"
        self._finished([job])
        self._record(job, 0.0, outcome)

    def _broken(self) -> bool:
        return self.conn is None or self.conn.closed or self.conn.broken

    def _context_heartbeat(self, jobs: Sequence[ClaimedJob]) -> bool:
        return self.worker.heartbeat(jobs)

    # --- single jobs -------------------------------------------------------------------------

    def _run_one(self, registration: Registration, job: ClaimedJob) -> None:
        """Run one job in its own transaction; a failure is retried or ends dead."""
        assert self.conn is not None
        conn = self.conn
        w = self.worker
        started = time.perf_counter()
        outcome = "completed"
        self.running.add(job.id)
        try:
            with conn.transaction():
                if (
                    registration.serialize_by_user
                    and job.user_id is not None
                    and not try_lock_users(conn, [job.user_id])
                ):
                    if not q.defer(conn, job, self._busy_delay()):
                        raise LeaseLostError
                    outcome = "deferred"
                elif registration.batch:
                    batch = BatchContext(
                        conn, [job], w.worker_id, w.database_url, self._context_heartbeat
                    )
                    with metrics.HANDLER_DURATION.labels(job.job_type).time():
                        registration.handler(batch)
                    if job.id in batch.deferred:
                        if not q.defer(conn, job, batch.deferred[job.id]):
                            raise LeaseLostError
                        outcome = "deferred"
                    elif not q.complete(conn, job):
                        raise LeaseLostError
                else:
                    context = JobContext(
                        conn, job, w.worker_id, w.database_url, self._context_heartbeat
                    )
                    with metrics.HANDLER_DURATION.labels(job.job_type).time():
                        registration.handler(context)
                    if not q.complete(conn, job):
                        raise LeaseLostError
        except LeaseLostError:
            outcome = "lost"
        except Exception as exc:
            if self._broken():
                raise _ConnectionLostError from exc
            logger.warning(
                "job_failed job_type=%s job_id=%d attempt=%d error=%s",
                job.job_type,
                job.id,
                job.attempt,
                describe_error(exc),
                exc_info=True,
            )
            outcome = q.fail(conn, job, describe_error(exc), policy=w.retry_policy).value
        self.running.discard(job.id)
        self._finished([job])
        self._record(job, time.perf_counter() - started, outcome)

    def _busy_delay(self) -> float:
        return self.worker.user_busy_delay * (0.5 + self.rng.random())

    # --- batches ---------------------------------------------------------------------------------

    def _run_batch(self, registration: Registration, jobs: list[ClaimedJob]) -> None:
        """Run a batch handler over `jobs` in one transaction; on failure, one job at a time."""
        assert self.conn is not None
        conn = self.conn
        w = self.worker
        started = time.perf_counter()
        counts = {"completed": 0, "deferred": 0}
        self.running.update(j.id for j in jobs)
        try:
            with conn.transaction():
                runnable, busy = jobs, list[ClaimedJob]()
                if registration.serialize_by_user:
                    runnable, busy = self._lock_users(jobs)
                context = BatchContext(
                    conn, runnable, w.worker_id, w.database_url, self._context_heartbeat
                )
                if runnable:
                    with metrics.HANDLER_DURATION.labels(registration.job_type).time():
                        registration.handler(context)
                later = [(job, self._busy_delay()) for job in busy]
                later += [(j, context.deferred[j.id]) for j in runnable if j.id in context.deferred]
                done = [j for j in runnable if j.id not in context.deferred]
                if later:
                    deferred = q.defer_many(conn, [j for j, _ in later], [d for _, d in later])
                    if len(deferred) != len(later):
                        raise LeaseLostError
                if len(q.complete_many(conn, done)) != len(done):
                    raise LeaseLostError
                counts = {"completed": len(done), "deferred": len(later)}
        except Exception as exc:
            if self._broken():
                raise _ConnectionLostError from exc
            reason = "lease lost" if isinstance(exc, LeaseLostError) else describe_error(exc)
            logger.warning(
                "batch_failed job_type=%s jobs=%d error=%s: running them one at a time",
                registration.job_type,
                len(jobs),
                reason,
                exc_info=not isinstance(exc, LeaseLostError),
            )
            self.running.difference_update(j.id for j in jobs)
            for index, job in enumerate(jobs):
                if w.stopping:
                    self._hand_back(jobs[index:])
                    return
                self._run_one(registration, job)
            return
        self.running.difference_update(j.id for j in jobs)
        self._finished(jobs)
        metrics.JOBS_COMPLETED.labels(registration.job_type).inc(counts["completed"])
        metrics.JOBS_DEFERRED.labels(registration.job_type).inc(counts["deferred"])
        logger.info(
            "batch job_type=%s jobs=%d completed=%d deferred=%d duration_ms=%.1f outcome=completed",
            registration.job_type,
            len(jobs),
            counts["completed"],
            counts["deferred"],
            (time.perf_counter() - started) * 1000,
        )

    def _lock_users(self, jobs: list[ClaimedJob]) -> tuple[list[ClaimedJob], list[ClaimedJob]]:
        """Split jobs into those whose user lock we won (or that have no user) and the busy rest."""
        assert self.conn is not None
        won = try_lock_users(self.conn, [j.user_id for j in jobs if j.user_id is not None])
        runnable = [j for j in jobs if j.user_id is None or j.user_id in won]
        busy = [j for j in jobs if j.user_id is not None and j.user_id not in won]
        return runnable, busy


def _group_by_type_and_priority(
    jobs: Sequence[ClaimedJob],
) -> dict[tuple[str, int], list[ClaimedJob]]:
    """Batches per (type, priority), highest priority first (claims arrive in that order).

    A claim can mix a few organic jobs with hundreds of backfill jobs of the same
    type; running the organic ones as their own small transaction first means
    they commit without waiting for the backfill batch behind them.
    """
    groups: dict[tuple[str, int], list[ClaimedJob]] = {}
    for job in jobs:
        groups.setdefault((job.job_type, job.priority), []).append(job)
    return groups


def _group_by_type(jobs: Sequence[ClaimedJob]) -> dict[str, list[ClaimedJob]]:
    groups: dict[str, list[ClaimedJob]] = {}
    for job in jobs:
        groups.setdefault(job.job_type, []).append(job)
    return groups
