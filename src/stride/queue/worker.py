"""The worker process: supervises runner threads and the helpers they rely on.

Threads, each with its own connection:
- runners (`concurrency` of them, see runner.py) claim, run and settle jobs;
- the listener waits on LISTEN NOTIFY_CHANNEL and wakes idle runners (polling
  every `poll_interval` is the fallback, so a lost notification only costs
  latency);
- the lease keeper extends the leases of every job in hand and keeps this
  worker's heartbeat row fresh (heartbeats.py, read by `stride workers`);
- the maintenance thread campaigns for maintenance leadership and, while this
  worker leads, reclaims expired leases and prunes old jobs (maintenance.py).
SIGTERM/SIGINT stop claiming; a lost connection is re-opened. Every
connection runs under the session limits of sessions.py, tied to the lease, so
a frozen worker's locks outlive its lease by little; and only a broken
connection counts as lost (sessions.connection_lost): any other database error
is logged and waited out, never a reconnect loop.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import timedelta
from types import FrameType

import psycopg
from psycopg import sql

from stride.queue.handlers import HandlerRegistry
from stride.queue.heartbeats import (
    WorkerPresence,
    forget_silent_workers,
    record_heartbeat,
    retire_worker,
)
from stride.queue.jobs import (
    DEFAULT_RETRY_POLICY,
    NOTIFY_ANY_TYPE,
    NOTIFY_CHANNEL,
    ClaimedJob,
    RetryPolicy,
    extend_lease,
)
from stride.queue.maintenance import DEFAULT_PRUNE_COMPLETED_AFTER, MaintenanceLeader
from stride.queue.runner import Runner, RunnerSettings
from stride.queue.sessions import SessionLimits, connection_lost, session_conninfo
from stride.storage.connection import DatabaseConfigError, DbConnection, connect

logger = logging.getLogger(__name__)

LISTEN_SQL = sql.SQL("LISTEN {}").format(sql.Identifier(NOTIFY_CHANNEL))
IDLE_SESSION_TIMEOUT_SQL = "SELECT set_config('idle_session_timeout', %s, false)"
LISTENER_PING_SQL = "SELECT 1"
LISTENER_IDLE_FLOOR_SECONDS = 1.0
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
# A listener whose session keeps failing without being lost waits this long
# before trying again, so an unexpected error can never become a hot loop.
LISTENER_ERROR_DELAY = 1.0


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class LeaseKeeper:
    """The jobs this process holds, and their leases kept alive on a connection of its own."""

    def __init__(self, database_url: str, lease_seconds: float) -> None:
        self.database_url = database_url
        self.lease_seconds = lease_seconds
        self._held_lock = threading.Lock()
        self._held: dict[int, ClaimedJob] = {}
        self._conn_lock = threading.Lock()
        self._conn: DbConnection | None = None
        # Set by the worker: each beat also says the worker is alive (heartbeats.py).
        self.presence: WorkerPresence | None = None
        self._announced = False

    def hold(self, jobs: Sequence[ClaimedJob]) -> None:
        with self._held_lock:
            for job in jobs:
                self._held[job.id] = job

    def drop(self, jobs: Sequence[ClaimedJob]) -> None:
        with self._held_lock:
            for job in jobs:
                self._held.pop(job.id, None)

    def beat(self) -> None:
        """Extend the lease of every job held, and say this worker is alive."""
        with self._held_lock:
            held = list(self._held.values())
        if held:
            self.extend(held)
        self.announce()

    def announce(self) -> None:
        """Refresh this worker's heartbeat row (the first one also clears long-silent rows)."""
        if self.presence is None:
            return
        with self._conn_lock:
            try:
                conn = self._connection()
                if not self._announced:
                    forget_silent_workers(conn)
                record_heartbeat(conn, self.presence)
                self._announced = True
            except psycopg.errors.UndefinedTable:
                logger.warning(
                    "worker_heartbeats is missing (run `stride db migrate`): "
                    "`stride workers` will not list this worker"
                )
                self.presence = None
            except (DatabaseConfigError, psycopg.Error) as exc:
                # As for leases: only a broken session is replaced; the next beat retries.
                lost = isinstance(exc, DatabaseConfigError) or connection_lost(self._conn)
                logger.warning("worker heartbeat failed error=%r connection_lost=%s", exc, lost)
                if lost:
                    self._close()

    def heartbeat(self, jobs: Sequence[ClaimedJob]) -> bool:
        """Extend leases of `jobs` now; False when any of them is known to be lost."""
        kept = self.extend(jobs)
        if kept is None:
            return True  # unknown, not lost: the next beat retries and the fence protects us
        lost = [job for job in jobs if job.id not in kept]
        for job in lost:
            logger.warning(
                "lease_lost job_type=%s job_id=%d attempt=%d", job.job_type, job.id, job.attempt
            )
        return not lost

    def extend(self, jobs: Sequence[ClaimedJob]) -> set[int] | None:
        """Extend leases of `jobs`; the ids still ours, or None when the database is unreachable."""
        by_owner: dict[str, list[ClaimedJob]] = {}
        for job in jobs:
            by_owner.setdefault(job.locked_by, []).append(job)
        kept: set[int] = set()
        with self._conn_lock:
            try:
                conn = self._connection()
                for owned in by_owner.values():
                    kept |= extend_lease(conn, owned, self.lease_seconds)
            except (DatabaseConfigError, psycopg.Error) as exc:
                # Unknown, not lost: the next beat tries again. Only a broken
                # session is replaced; any other error keeps it.
                lost = isinstance(exc, DatabaseConfigError) or connection_lost(self._conn)
                logger.warning("heartbeat failed error=%r connection_lost=%s", exc, lost)
                if lost:
                    self._close()
                return None
        return kept

    def close(self) -> None:
        """Delete this worker's heartbeat row (a clean stop), then close the connection."""
        with self._conn_lock:
            conn = self._conn
            # Only on the open connection: a stopping worker never waits to reconnect
            # just to say goodbye (its row then goes silent and is forgotten later).
            if self.presence is not None and conn is not None and not conn.closed:
                with contextlib.suppress(psycopg.Error):
                    retire_worker(conn, self.presence.worker_id)
            self._close()

    def _connection(self) -> DbConnection:
        if self._conn is None or connection_lost(self._conn):
            self._close()
            self._conn = connect(
                self.database_url, autocommit=True, application_name="stride-keeper"
            )
        return self._conn

    def _close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None


class Supervision:
    """What the worker offers its runners (runner.Supervisor): stop, connect, leases, wake-ups."""

    def __init__(
        self,
        worker_id: str,
        database_url: str,
        *,
        stop: threading.Event,
        leases: LeaseKeeper,
        poll_interval: float,
        durable_commits: bool,
    ) -> None:
        self.worker_id = worker_id
        self.database_url = database_url  # with the session limits (sessions.py)
        self.leases = leases
        self.poll_interval = poll_interval
        self.durable_commits = durable_commits
        self.stop_event = stop
        self._wake = threading.Event()

    @property
    def stopping(self) -> bool:
        return self.stop_event.is_set()

    def stop(self) -> None:
        self.stop_event.set()
        self._wake.set()

    def wake(self) -> None:
        """Jobs may be due: idle runners claim now instead of at the next poll."""
        self._wake.set()

    def wait_for_work(self) -> None:
        self._wake.wait(self.poll_interval)
        self._wake.clear()

    def hold(self, jobs: Sequence[ClaimedJob]) -> None:
        self.leases.hold(jobs)

    def drop(self, jobs: Sequence[ClaimedJob]) -> None:
        self.leases.drop(jobs)

    def heartbeat(self, jobs: Sequence[ClaimedJob]) -> bool:
        return self.leases.heartbeat(jobs)

    def connect_runner(self) -> DbConnection | None:
        conn = self.reconnect("runner", self.stop_event)
        if conn is not None:
            conn.execute(NO_PARALLEL_SQL)
            if not self.durable_commits:
                conn.execute(ASYNC_COMMIT_SQL)
        return conn

    def reconnect(self, purpose: str, stop: threading.Event) -> DbConnection | None:
        """Open a connection, retrying with backoff; None when asked to stop first."""
        delay = 0.1
        while not stop.is_set():
            try:
                return connect(
                    self.database_url, autocommit=True, application_name=f"stride-{purpose}"
                )
            except (DatabaseConfigError, psycopg.Error) as exc:
                logger.warning("reconnect purpose=%s error=%r retry_in_s=%.1f", purpose, exc, delay)
                stop.wait(delay)
                delay = min(delay * 2, RECONNECT_MAX_DELAY)
        return None


class Worker:
    """Runs handlers for due jobs until stopped (or, with `once`, until nothing is due).

    `durable_commits=False` (the default) commits handler transactions without
    waiting for the WAL flush; see ASYNC_COMMIT_SQL for why that is safe here.
    `prune_completed_after` is how long completed jobs are kept when this worker
    leads maintenance (None: never prune).
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
        retry_policy: RetryPolicy = DEFAULT_RETRY_POLICY,
        user_busy_delay: float = 0.5,
        maintenance_interval: float | None = None,
        prune_completed_after: timedelta | None = DEFAULT_PRUNE_COMPLETED_AFTER,
        durable_commits: bool = False,
    ) -> None:
        if concurrency < 1 or batch_size < 1 or lease_seconds <= 0 or poll_interval <= 0:
            raise ValueError("concurrency, batch size, lease and poll interval must be positive")
        self.database_url = database_url
        self.registry = registry
        self.concurrency = concurrency
        self.lease_seconds = lease_seconds
        self.worker_id = worker_id or default_worker_id()
        self.limits = SessionLimits.for_lease(lease_seconds)
        # Every connection of this worker, and every one its handlers open from
        # JobContext.database_url, carries the limits.
        session_url = session_conninfo(database_url, self.limits)
        self.settings = RunnerSettings(
            worker_id=self.worker_id,
            database_url=session_url,
            batch_size=batch_size,
            lease_seconds=lease_seconds,
            job_types=list(job_types) if job_types is not None else None,
            retry_policy=retry_policy,
            user_busy_delay=user_busy_delay,
            lock_wait_delay=self.limits.lock_timeout_seconds,
        )
        self.leases = LeaseKeeper(session_url, lease_seconds)
        self.supervision = Supervision(
            self.worker_id,
            session_url,
            stop=threading.Event(),
            leases=self.leases,
            poll_interval=poll_interval,
            durable_commits=durable_commits,
        )
        # Four rounds per lease: a frozen leader's session times out after four
        # silent rounds (maintenance.py), so leadership moves on within a lease.
        self.maintenance = MaintenanceLeader(
            session_url,
            interval=maintenance_interval or max(0.5, min(lease_seconds / 4, 15.0)),
            prune_completed_after=prune_completed_after,
            on_reclaimed=lambda _count: self.supervision.wake(),
            name=self.worker_id,
        )
        self._crash: Exception | None = None
        self.leases.presence = WorkerPresence.of_this_process(
            self.worker_id,
            concurrency=concurrency,
            job_types=self.job_types,
            lease_seconds=lease_seconds,
        )

    @property
    def job_types(self) -> list[str] | None:
        return self.settings.job_types

    @property
    def is_maintenance_leader(self) -> bool:
        return self.maintenance.is_leader

    def stop(self) -> None:
        """Stop claiming; runners finish the handler in hand and hand back the rest."""
        self.supervision.stop()

    def run(self, stop_event: threading.Event | None = None, once: bool = False) -> None:
        """Run until `stop()`, SIGTERM/SIGINT or `stop_event`; with `once`, until idle."""
        if stop_event is not None:
            self.supervision.stop_event = stop_event
        if not self.registry:
            logger.warning("no handlers are registered: every claimed job will go dead")
        logger.info(
            "worker_start worker_id=%s concurrency=%d batch_size=%d lease_s=%g job_types=%s "
            "idle_in_transaction_timeout_ms=%d lock_timeout_ms=%d",
            self.worker_id,
            self.concurrency,
            self.settings.batch_size,
            self.lease_seconds,
            ",".join(self.job_types) if self.job_types is not None else "*",
            self.limits.idle_in_transaction_ms,
            self.limits.lock_timeout_ms,
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
            helpers = [
                threading.Thread(target=self._run_keeper, args=(helpers_stop,), daemon=True),
                threading.Thread(target=self.maintenance.run, args=(helpers_stop,), daemon=True),
            ]
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
                self.supervision.wake()
                for thread in helpers:
                    thread.join(timeout=5)
                self.leases.close()
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

    def _run_runner(self, lease_owner: str, once: bool) -> None:
        runner = Runner(self.supervision, self.registry, self.settings, lease_owner)
        try:
            runner.loop(once)
        except Exception as exc:
            logger.exception("runner crashed lease_owner=%s", lease_owner)
            self._crash = exc
            self.stop()
        finally:
            runner.close()

    def _run_keeper(self, stop: threading.Event) -> None:
        beat_every = max(self.lease_seconds / 3, 0.05)
        self.leases.announce()  # listed by `stride workers` from the start
        while not stop.wait(beat_every):
            self.leases.beat()

    def _run_listener(self, stop: threading.Event) -> None:
        while not stop.is_set():
            conn = self.supervision.reconnect("listener", stop)
            if conn is None:
                return
            try:
                # A frozen listener would keep its LISTEN, and the server keeps
                # every notification until all listeners have read it: the
                # session ends after a lease without a query, and a live
                # listener asks one every third of a lease.
                idle_timeout = max(self.lease_seconds, LISTENER_IDLE_FLOOR_SECONDS)
                ping_every = idle_timeout / 3
                conn.execute(IDLE_SESSION_TIMEOUT_SQL, (f"{round(idle_timeout * 1000)}ms",))
                conn.execute(LISTEN_SQL)
                # Anything enqueued while we were not listening is found by this claim.
                self.supervision.wake()
                pinged = time.monotonic()
                while not stop.is_set():
                    for notify in conn.notifies(timeout=min(0.5, ping_every)):
                        if self._wants(notify.payload):
                            self.supervision.wake()
                    if time.monotonic() - pinged >= ping_every:
                        conn.execute(LISTENER_PING_SQL)
                        pinged = time.monotonic()
            except psycopg.Error as exc:
                if connection_lost(conn):
                    logger.warning("listener connection lost error=%r: reconnecting", exc)
                else:
                    # Not a lost session: start afresh, but not at once.
                    logger.warning(
                        "listener failed error=%r: listening again in %.1fs",
                        exc,
                        LISTENER_ERROR_DELAY,
                    )
                    stop.wait(LISTENER_ERROR_DELAY)
            finally:
                with contextlib.suppress(Exception):
                    conn.close()

    def _wants(self, payload: str) -> bool:
        return self.job_types is None or payload == NOTIFY_ANY_TYPE or payload in self.job_types
