"""The claim-run-settle loop of one runner thread, with one way to settle a unit of jobs.

A runner claims a batch, splits it into units (a batch handler's jobs of one
type and priority together; a single-job handler's jobs one by one) and runs
each unit in one transaction: lock its users if the type asks for it, call the
handler, then settle the unit — `plan_settlement` decides which jobs complete
and which go back to pending later (busy user, or deferred by the handler),
and `apply_settlement` writes that in at most two fenced statements. A unit
that fails is retried one job at a time; a single job that fails is retried
with backoff, or ends `failed` when its handler raised `PermanentJobError`.

Single jobs on their first attempt share a transaction with their neighbours
for up to SHARED_TRANSACTION_SECONDS, each in a savepoint of its own, and
complete together (`Runner._run_shared` states what that promises); a retried
job runs alone.

Errors are told apart by whether the runner's session survived them
(sessions.connection_lost): a broken session is reconnected and the jobs in
hand recovered on the new one; any other database error is the job's. A lock
wait that ran into the session's `lock_timeout` (SQLSTATE 55P03: a frozen or
slow holder) defers the whole unit without spending an attempt.

What the runner needs from the process around it (stop flag, connections,
leases, wake-ups) is the small `Supervisor` interface.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import psycopg

from stride.queue import metrics
from stride.queue.handlers import (
    BatchContext,
    HandlerRegistry,
    JobCancelledError,
    JobContext,
    PermanentJobError,
    Registration,
)
from stride.queue.jobs import (
    ClaimedJob,
    RetryPolicy,
    claim_due_jobs,
    complete_many,
    defer_many,
    fail,
    mark_cancelled,
    mark_dead,
    mark_failed,
    release,
)
from stride.queue.sessions import connection_lost
from stride.queue.user_locks import try_lock_users
from stride.storage.connection import DbConnection

logger = logging.getLogger(__name__)


class LeaseLostError(Exception):
    """A fenced update matched fewer jobs than we held: someone took a lease over."""


class ConnectionLostError(Exception):
    """The runner's connection broke; the jobs in hand must be recovered on a new one."""


# Touches the handler's transaction when it heartbeats, so a handler that works
# long between queries is not ended by idle_in_transaction_session_timeout.
TOUCH_SQL = "SELECT 1"
# A runner statement outside any job that failed without losing the session
# (the claim, a settlement) is retried after a backoff that doubles up to this.
RUNNER_ERROR_MAX_DELAY = 5.0


class Supervisor(Protocol):
    """What a runner asks of the process supervising it."""

    @property
    def stopping(self) -> bool:
        """True once the worker was asked to stop: claim nothing more."""
        ...

    def connect_runner(self) -> DbConnection | None:
        """A fresh runner session, retried until it works; None when stopping first."""
        ...

    def hold(self, jobs: Sequence[ClaimedJob]) -> None:
        """Keep the leases of `jobs` alive until they are dropped."""
        ...

    def drop(self, jobs: Sequence[ClaimedJob]) -> None:
        """Stop extending the leases of `jobs` (settled, released or given up on)."""
        ...

    def heartbeat(self, jobs: Sequence[ClaimedJob]) -> bool:
        """Extend the leases of `jobs` now; False when any of them is known to be lost."""
        ...

    def wait_for_work(self) -> None:
        """Sleep until jobs may be due (a notification, a reclaim, the poll interval) or stop."""
        ...


@dataclass(frozen=True, slots=True)
class RunnerSettings:
    worker_id: str
    database_url: str
    batch_size: int
    lease_seconds: float
    job_types: list[str] | None
    retry_policy: RetryPolicy
    user_busy_delay: float
    # Jobs whose unit gave up on a lock (lock_timeout) come back after about this.
    lock_wait_delay: float = 1.0


# --- pure decisions --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SettlePlan:
    """How a unit of jobs ends in its transaction: which complete, which go back to pending."""

    complete: list[ClaimedJob]
    defer: list[tuple[ClaimedJob, float]]  # (job, seconds until due again)


def plan_settlement(
    unit: Sequence[ClaimedJob],
    busy: Collection[int],
    deferred: Mapping[int, float],
    busy_delay: Callable[[], float],
) -> SettlePlan:
    """Decide each job of a unit whose handler returned.

    A job whose user was busy (`busy` ids: the handler never saw it) goes back
    after `busy_delay()`, a job the handler deferred after the delay it asked
    for; every other job completes. Neither spends an attempt.
    """
    complete: list[ClaimedJob] = []
    defer: list[tuple[ClaimedJob, float]] = []
    for job in unit:
        if job.id in busy:
            defer.append((job, busy_delay()))
        elif job.id in deferred:
            defer.append((job, deferred[job.id]))
        else:
            complete.append(job)
    return SettlePlan(complete, defer)


def group_by_type_and_priority(
    jobs: Sequence[ClaimedJob],
) -> dict[tuple[str, int], list[ClaimedJob]]:
    """Batches per (type, priority), in the order of their first job (claims come sorted).

    A claim can mix a few organic jobs with hundreds of backfill jobs of the same
    type; running the organic ones as their own small transaction first means
    they commit without waiting for the backfill batch behind them.
    """
    groups: dict[tuple[str, int], list[ClaimedJob]] = {}
    for job in jobs:
        groups.setdefault((job.job_type, job.priority), []).append(job)
    return groups


# Single-job handlers share transactions: consecutive first-attempt jobs of one
# type and priority run in one transaction for up to this long, each job's
# writes in a savepoint of its own (opened when its handler first uses the
# connection), and all of them complete in one fenced statement at the end. A
# job's writes still commit only together with its completion; what is shared
# is the commit. See `Runner._run_shared`.
SHARED_TRANSACTION_SECONDS = 0.05
SAVEPOINT_SQL = "SAVEPOINT stride_job"
ROLLBACK_TO_SAVEPOINT_SQL = "ROLLBACK TO SAVEPOINT stride_job"


def shares_transactions(registration: Registration) -> bool:
    """Whether a type's jobs may share a transaction (single-job handlers without user locks:
    a user lock would then be held for the whole shared transaction)."""
    return not registration.batch and not registration.serialize_by_user


def units_of(registration: Registration | None, group: list[ClaimedJob]) -> list[list[ClaimedJob]]:
    """A batch handler takes its group in one transaction; anything else goes one job at a time."""
    if registration is not None and registration.batch:
        return [group]
    return [[job] for job in group]


def describe_error(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# --- applying them ---------------------------------------------------------------------------


def apply_settlement(conn: DbConnection, plan: SettlePlan) -> None:
    """Write a plan in the unit's transaction; LeaseLostError when any job was no longer ours."""
    if plan.defer:
        jobs = [job for job, _ in plan.defer]
        if len(defer_many(conn, jobs, [delay for _, delay in plan.defer])) != len(jobs):
            raise LeaseLostError
    if len(complete_many(conn, plan.complete)) != len(plan.complete):
        raise LeaseLostError


class Runner:
    """One claim-run-settle loop on one connection, leasing jobs as `lease_owner`."""

    def __init__(
        self,
        supervisor: Supervisor,
        registry: HandlerRegistry,
        settings: RunnerSettings,
        lease_owner: str,
    ) -> None:
        self.supervisor = supervisor
        self.registry = registry
        self.settings = settings
        self.lease_owner = lease_owner
        self.conn: DbConnection | None = None
        self.in_hand: list[ClaimedJob] = []  # claimed and not yet settled
        self.running: set[int] = set()  # ids whose handler has started
        self.rng = random.Random()
        # Jobs claimed together wait their turn; past this they go back for others.
        self.hand_back_after = settings.lease_seconds / 2

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
            self.conn = None

    def loop(self, once: bool) -> None:
        """Claim and run until stopped (or, with `once`, until a claim comes back empty)."""
        s = self.settings
        error_delay = 0.0
        while not self.supervisor.stopping:
            try:
                if self._broken():
                    self.close()
                    self.conn = self.supervisor.connect_runner()
                    if self.conn is None:
                        return
                    self._recover_in_hand()
                assert self.conn is not None
                claimed = claim_due_jobs(
                    self.conn, self.lease_owner, s.batch_size, s.lease_seconds, s.job_types
                )
                error_delay = 0.0
                if not claimed:
                    if once:
                        return
                    self.supervisor.wait_for_work()
                    continue
                self.in_hand = list(claimed)
                self.supervisor.hold(claimed)
                for job_type, count in Counter(j.job_type for j in claimed).items():
                    metrics.JOBS_CLAIMED.labels(job_type).inc(count)
                self._run_claimed(claimed)
            except (ConnectionLostError, psycopg.Error) as exc:
                if isinstance(exc, ConnectionLostError) or self._broken():
                    self._connection_lost(exc.__cause__ or exc)
                else:
                    error_delay = min(max(error_delay * 2, 0.1), RUNNER_ERROR_MAX_DELAY)
                    self._runner_error(exc, error_delay)
        try:
            self._hand_back(self.in_hand)
        except psycopg.Error as exc:
            logger.warning("hand back failed error=%r: leases will expire instead", exc)

    def _connection_lost(self, error: BaseException) -> None:
        """The session is gone, and with it every lock and uncommitted write it held."""
        logger.warning(
            "runner connection lost lease_owner=%s jobs_in_hand=%d error=%s: reconnecting",
            self.lease_owner,
            len(self.in_hand),
            describe_error(error),
        )
        self.close()
        # Stop heartbeating them: if we cannot come back, their leases run out.
        self.supervisor.drop(self.in_hand)

    def _runner_error(self, error: psycopg.Error, delay: float) -> None:
        """A claim or settlement failed but the session lives: back off, never reconnect.

        The jobs in hand stop being heartbeated, so their leases run out and the
        maintenance leader returns them (a spent attempt each): a statement that
        keeps failing on them ends them dead instead of looping.
        """
        logger.warning(
            "runner_error lease_owner=%s jobs_in_hand=%d error=%s: retrying in %.1fs",
            self.lease_owner,
            len(self.in_hand),
            describe_error(error),
            delay,
        )
        self.supervisor.drop(self.in_hand)
        self.in_hand = []
        self.running.clear()
        time.sleep(delay)

    def _broken(self) -> bool:
        return connection_lost(self.conn)

    def _recover_in_hand(self) -> None:
        """After a reconnect: retry jobs whose run died with the old connection, release the rest.

        Fenced, so a job whose commit did land before the connection broke is left alone.
        """
        assert self.conn is not None
        died = [j for j in self.in_hand if j.id in self.running]
        for job in died:
            outcome = fail(
                self.conn,
                job,
                f"database connection lost during attempt {job.attempt}",
                delay_seconds=0,
            )
            self._record(job, 0.0, outcome.value)
        self.running.clear()
        self._finished(died)
        unstarted = len(self.in_hand)
        self._hand_back(self.in_hand)
        if died or unstarted:
            logger.info(
                "recovered_in_hand lease_owner=%s interrupted=%d unstarted=%d",
                self.lease_owner,
                len(died),
                unstarted,
            )

    def _hand_back(self, jobs: Sequence[ClaimedJob]) -> None:
        """Release claimed-but-unstarted jobs, keeping their place in line and their attempts."""
        jobs = list(jobs)
        if not jobs or self._broken():
            return
        assert self.conn is not None
        released = release(self.conn, jobs)
        self._finished(jobs)
        if released:
            logger.info(
                "released_unstarted count=%d lease_owner=%s", len(released), self.lease_owner
            )

    def _finished(self, jobs: Sequence[ClaimedJob]) -> None:
        done = {j.id for j in jobs}
        self.in_hand = [j for j in self.in_hand if j.id not in done]
        self.supervisor.drop(jobs)

    def _run_claimed(self, claimed: list[ClaimedJob]) -> None:
        """Run the claim's units in claim order, highest priority first.

        On stop, or when the rest has waited half a lease behind slow jobs, the
        jobs not yet started are released so that other workers can take them.
        """
        claimed_at = time.monotonic()
        for (job_type, _), group in group_by_type_and_priority(claimed).items():
            registration = self.registry.get(job_type)
            if registration is not None and shares_transactions(registration):
                if not self._run_singles(registration, group, claimed_at):
                    return
                continue
            for unit in units_of(registration, group):
                if self._must_hand_back(claimed_at):
                    self._hand_back(self.in_hand)
                    return
                if registration is None:
                    for job in unit:
                        self._no_handler(job)
                else:
                    self._run_unit(registration, unit)

    def _no_handler(self, job: ClaimedJob) -> None:
        assert self.conn is not None
        known = ", ".join(self.registry.job_types) or "none"
        reason = (
            f"no handler registered for job type {job.job_type!r} "
            f"on worker {self.settings.worker_id} (registered: {known})"
        )
        outcome = "dead" if mark_dead(self.conn, job, reason) else "lost"
        self._finished([job])
        self._record(job, 0.0, outcome)

    def _must_hand_back(self, claimed_at: float) -> bool:
        return self.supervisor.stopping or time.monotonic() - claimed_at > self.hand_back_after

    # --- single jobs, sharing transactions -----------------------------------------------------

    def _run_singles(
        self, registration: Registration, group: list[ClaimedJob], claimed_at: float
    ) -> bool:
        """Run a group of single jobs, sharing transactions where that is safe.

        A job on a retry (attempt > 1) runs in a transaction of its own: had it
        killed its worker last time, it would otherwise take its neighbours'
        attempts down with it again. False when the rest was handed back.
        """
        rest = group
        while rest:
            if self._must_hand_back(claimed_at):
                self._hand_back(self.in_hand)
                return False
            if rest[0].attempt > 1 or len(rest) == 1:
                self._run_unit(registration, rest[:1])
                rest = rest[1:]
            else:
                rest = rest[self._run_shared(registration, rest, claimed_at) :]
        return True

    def _run_shared(
        self, registration: Registration, jobs: list[ClaimedJob], claimed_at: float
    ) -> int:
        """Run jobs from the front of `jobs` in one transaction; returns how many it took.

        What is promised, job by job, is what a transaction of its own gives:
        - its writes commit only together with its completion, which is fenced
          by its lease (id, attempt, owner); if any lease of the transaction was
          lost, nothing of it commits, and its jobs run again one at a time,
          each in a transaction of its own;
        - a handler that raises has its writes rolled back to its savepoint, and
          its failure (retry, failed, cancelled, dead) commits with the rest.
        What changes: its writes become visible at the shared commit, at most
        SHARED_TRANSACTION_SECONDS (plus the last handler's run) after they
        were made; and a worker that dies before that commit loses the whole
        transaction's work, each of its jobs reclaimed after its lease with an
        attempt spent (then run alone, as a retry).
        """
        assert self.conn is not None
        conn = self.conn
        taken: list[ClaimedJob] = []
        outcomes: dict[int, tuple[str, float]] = {}  # job id -> (outcome, seconds)
        complete: list[ClaimedJob] = []
        defer: list[tuple[ClaimedJob, float]] = []
        try:
            with conn.transaction():
                deadline = time.monotonic() + SHARED_TRANSACTION_SECONDS
                for job in jobs:
                    if taken and (
                        job.attempt > 1
                        or time.monotonic() > deadline
                        or self._must_hand_back(claimed_at)
                    ):
                        break
                    taken.append(job)
                    self.running.add(job.id)
                    started = time.perf_counter()
                    outcome, delay = self._run_in_savepoint(registration, job)
                    if outcome == "completed":
                        complete.append(job)
                    elif outcome == "deferred":
                        defer.append((job, delay))
                    outcomes[job.id] = (outcome, time.perf_counter() - started)
                apply_settlement(conn, SettlePlan(complete, defer))
        except Exception as exc:
            if self._broken():
                raise ConnectionLostError from exc
            self.running.difference_update(j.id for j in taken)
            self._run_one_by_one(registration, taken, exc)
            return len(taken)
        self.running.difference_update(j.id for j in taken)
        self._finished(taken)
        for job in taken:
            outcome, seconds = outcomes[job.id]
            self._record(job, seconds, outcome)
        return len(taken)

    def _run_in_savepoint(self, registration: Registration, job: ClaimedJob) -> tuple[str, float]:
        """Run one job's handler in the shared transaction; (outcome, defer delay).

        "completed" and "deferred" are settled by the caller with the others; a
        failure is written here, after rolling the job's writes back.
        """
        assert self.conn is not None
        conn = self.conn
        savepoint = False

        def open_savepoint() -> None:
            nonlocal savepoint
            conn.execute(SAVEPOINT_SQL)
            savepoint = True

        try:
            deferred = self._call_handler(registration, [job], first_use=open_savepoint)
        except Exception as exc:
            if self._broken():
                raise
            if savepoint:
                conn.execute(ROLLBACK_TO_SAVEPOINT_SQL)
            if isinstance(exc, psycopg.errors.LockNotAvailable):
                logger.warning(
                    "lock_wait_timeout job_type=%s job_id=%d error=%s: again in ~%.1fs",
                    job.job_type,
                    job.id,
                    describe_error(exc),
                    self.settings.lock_wait_delay,
                )
                return "deferred", self._lock_wait_delay()
            return self._write_failure(job, exc), 0.0
        if job.id in deferred:
            return "deferred", deferred[job.id]
        return "completed", 0.0

    # --- one unit, one transaction -------------------------------------------------------------

    def _run_unit(self, registration: Registration, unit: list[ClaimedJob]) -> None:
        """Run the handler over `unit` and settle it in one transaction.

        When that fails, a unit of several jobs is run again one job at a time
        (so one poison job cannot fail its neighbours), and a single job is
        retried, given up on or found lost.
        """
        assert self.conn is not None
        conn = self.conn
        started = time.perf_counter()
        ids = [job.id for job in unit]
        self.running.update(ids)
        try:
            with conn.transaction():
                runnable, busy = unit, set[int]()
                if registration.serialize_by_user:
                    runnable, busy = self._lock_users(unit)
                deferred = self._call_handler(registration, runnable) if runnable else {}
                plan = plan_settlement(unit, busy, deferred, self._busy_delay)
                apply_settlement(conn, plan)
        except Exception as exc:
            if self._broken():
                raise ConnectionLostError from exc
            self.running.difference_update(ids)
            if isinstance(exc, psycopg.errors.LockNotAvailable):
                self._defer_lock_wait(registration, unit, exc)
            elif len(unit) > 1:
                self._run_one_by_one(registration, unit, exc)
            else:
                self._settle_failure(unit[0], exc, time.perf_counter() - started)
            return
        self.running.difference_update(ids)
        self._finished(unit)
        self._record_settled(registration, unit, plan, time.perf_counter() - started)

    def _defer_lock_wait(
        self, registration: Registration, unit: list[ClaimedJob], exc: Exception
    ) -> None:
        """The unit waited a lock_timeout for a lock (a frozen or slow holder): try later.

        Deferred, not failed: the jobs are fine, someone else holds what they
        need. The delay is about one lock_timeout, so a long-held lock costs
        one short log line per unit every couple of lock timeouts, not a loop.
        """
        assert self.conn is not None
        delays = [self._lock_wait_delay() for _ in unit]
        kept = defer_many(self.conn, unit, delays)
        self._finished(unit)
        metrics.JOBS_DEFERRED.labels(registration.job_type).inc(len(kept))
        metrics.JOBS_LOST.labels(registration.job_type).inc(len(unit) - len(kept))
        # One line for the unit, however many jobs it held.
        logger.warning(
            "lock_wait_timeout job_type=%s jobs=%d deferred=%d error=%s: again in ~%.1fs",
            registration.job_type,
            len(unit),
            len(kept),
            describe_error(exc),
            self.settings.lock_wait_delay,
        )

    def _heartbeat(self, jobs: Sequence[ClaimedJob]) -> bool:
        """A handler's heartbeat: touch its transaction, then extend the leases.

        Runs in the runner's thread (the handler calls it), so using the
        runner's connection here is safe; False when the session or a lease is gone.
        """
        if self.conn is None or self._broken():
            return False
        try:
            self.conn.execute(TOUCH_SQL)
        except psycopg.Error:
            if self._broken():
                return False
            raise
        return self.supervisor.heartbeat(jobs)

    def _call_handler(
        self,
        registration: Registration,
        jobs: list[ClaimedJob],
        first_use: Callable[[], None] | None = None,
    ) -> Mapping[int, float]:
        """Call the handler; returns the delays of the jobs it deferred. `first_use` is a
        single job's hook for its first use of the connection (JobContext)."""
        assert self.conn is not None
        s = self.settings
        heartbeat = self._heartbeat
        with metrics.HANDLER_DURATION.labels(registration.job_type).time():
            if registration.batch:
                batch = BatchContext(self.conn, jobs, s.worker_id, s.database_url, heartbeat)
                registration.handler(batch)
                return batch.deferred
            [job] = jobs
            context = JobContext(
                self.conn, job, s.worker_id, s.database_url, heartbeat, _first_use=first_use
            )
            registration.handler(context)
            return {} if context.deferred is None else {job.id: context.deferred}

    def _lock_users(self, jobs: list[ClaimedJob]) -> tuple[list[ClaimedJob], set[int]]:
        """Split jobs into those whose user lock we won (or that have no user) and the busy rest."""
        assert self.conn is not None
        won = try_lock_users(self.conn, [j.user_id for j in jobs if j.user_id is not None])
        runnable = [j for j in jobs if j.user_id is None or j.user_id in won]
        busy = {j.id for j in jobs if j.user_id is not None and j.user_id not in won}
        return runnable, busy

    def _jittered(self, seconds: float) -> float:
        """`seconds` give or take half, so jobs put back together do not return together."""
        return seconds * (0.5 + self.rng.random())

    def _busy_delay(self) -> float:
        return self._jittered(self.settings.user_busy_delay)

    def _lock_wait_delay(self) -> float:
        return self._jittered(self.settings.lock_wait_delay)

    def _run_one_by_one(
        self, registration: Registration, unit: list[ClaimedJob], exc: Exception
    ) -> None:
        lost = isinstance(exc, LeaseLostError)
        logger.warning(
            "batch_failed job_type=%s jobs=%d error=%s: running them one at a time",
            registration.job_type,
            len(unit),
            "lease lost" if lost else describe_error(exc),
            exc_info=not lost,
        )
        for index, job in enumerate(unit):
            if self.supervisor.stopping:
                self._hand_back(unit[index:])
                return
            self._run_unit(registration, [job])

    def _settle_failure(self, job: ClaimedJob, exc: Exception, duration_s: float) -> None:
        """Why one job's transaction failed: lost lease, cancelled, permanent failure, retry."""
        outcome = self._write_failure(job, exc)
        self._finished([job])
        self._record(job, duration_s, outcome)

    def _write_failure(self, job: ClaimedJob, exc: Exception) -> str:
        """Write what a job's failure means for it; the outcome ("lost" when no longer ours)."""
        assert self.conn is not None
        if isinstance(exc, LeaseLostError):
            outcome = "lost"
        elif isinstance(exc, JobCancelledError):
            logger.info("job_cancelled job_type=%s job_id=%d: %s", job.job_type, job.id, exc)
            outcome = "cancelled" if mark_cancelled(self.conn, job, str(exc)) else "lost"
        elif isinstance(exc, PermanentJobError):
            logger.warning(
                "job_failed_permanently job_type=%s job_id=%d attempt=%d error=%s",
                job.job_type,
                job.id,
                job.attempt,
                describe_error(exc),
            )
            outcome = "failed" if mark_failed(self.conn, job, describe_error(exc)) else "lost"
        else:
            logger.warning(
                "job_failed job_type=%s job_id=%d attempt=%d error=%s",
                job.job_type,
                job.id,
                job.attempt,
                describe_error(exc),
                exc_info=True,
            )
            outcome = fail(
                self.conn, job, describe_error(exc), policy=self.settings.retry_policy
            ).value
        return outcome

    # --- accounting ------------------------------------------------------------------------------

    def _record_settled(
        self,
        registration: Registration,
        unit: list[ClaimedJob],
        plan: SettlePlan,
        duration_s: float,
    ) -> None:
        if not registration.batch:
            [job] = unit
            self._record(job, duration_s, "completed" if plan.complete else "deferred")
            return
        metrics.JOBS_COMPLETED.labels(registration.job_type).inc(len(plan.complete))
        metrics.JOBS_DEFERRED.labels(registration.job_type).inc(len(plan.defer))
        logger.info(
            "batch job_type=%s jobs=%d completed=%d deferred=%d duration_ms=%.1f outcome=completed",
            registration.job_type,
            len(unit),
            len(plan.complete),
            len(plan.defer),
            duration_s * 1000,
        )

    def _record(self, job: ClaimedJob, duration_s: float, outcome: str) -> None:
        counter = {
            "completed": metrics.JOBS_COMPLETED,
            "retry": metrics.JOBS_RETRIED,
            "dead": metrics.JOBS_DEAD,
            "failed": metrics.JOBS_FAILED,
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
