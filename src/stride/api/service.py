"""The API's one door to the core: every stride function the routes call, and the pools.

Reads that must be quick (tokens, projections, read-your-write checks) are
async, on psycopg's AsyncConnectionPool. Writes and operator actions call the
very functions the CLI calls (one append path, one validation, one backfill
trigger); those are synchronous, so they run on a small thread pool, each
thread with a connection from a synchronous pool of the same size.

This is the only module of stride.api that imports the rest of stride.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

import psycopg
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from stride.api.tokens import MintedToken, mint_token
from stride.backfill.control import CancelResult, cancel_backfill
from stride.backfill.rates import format_duration
from stride.backfill.reports import (
    BackfillStatus,
    ModelVersionCount,
    Report,
    RunProgress,
    RunSummary,
    model_version_counts,
    run_history,
    run_progress,
    runbook_reports,
)
from stride.backfill.reports import backfill_status as read_backfill_status
from stride.backfill.sources import known_sources
from stride.backfill.trigger import BackfillInputError, TriggerResult, trigger_backfill
from stride.backfill.verify import Drift, VerifyResult, verify_sample
from stride.domain.events import OBJECTIVE_EVENT_TYPES, RETRACTION_EVENT_TYPE
from stride.domain.validation import EventBatchError, EventValidationError, NewEvent
from stride.queue.jobs import retry_dead, retry_job
from stride.queue.status import (
    Completions,
    DeadJob,
    JobCount,
    JobDetail,
    QueueOverview,
    QueueStatus,
    UserJob,
    completions,
    queue_overview,
    queue_status,
    show_job,
    user_jobs,
)
from stride.storage import admin_sessions
from stride.storage.admin_sessions import StoredSession
from stride.storage.connection import AsyncDbConnection, DbConnection, connect
from stride.storage.event_store import AppendResult, StoredEvent, append_events, latest_events
from stride.storage.migrations import migration_problems_async
from stride.storage.projection_store import (
    PROJECTIONS_CHANNEL,
    StoredProjection,
    event_job_statuses_async,
    job_statuses_by_event_async,
    read_projection_async,
    read_projections_async,
    sample_user_with_projection,
)
from stride.storage.projection_store import read_projections as read_stored_projections
from stride.storage.tokens import (
    TOKENS_CHANNEL,
    StoredToken,
    find_token_async,
    insert_token,
    list_tokens,
    revoke_token,
)
from stride.storage.users import UserRow, find_user

__all__ = [
    "EVENT_TYPES",
    "PROJECTIONS_CHANNEL",
    "TOKENS_CHANNEL",
    "AppendResult",
    "BackfillInputError",
    "BackfillStatus",
    "CancelResult",
    "Completions",
    "Database",
    "DbConnection",
    "DeadJob",
    "Drift",
    "EventBatchError",
    "EventValidationError",
    "IssuedToken",
    "JobCount",
    "JobDetail",
    "ModelVersionCount",
    "NewEvent",
    "QueueOverview",
    "QueueStatus",
    "Report",
    "RunProgress",
    "RunSummary",
    "StoredEvent",
    "StoredProjection",
    "StoredSession",
    "StoredToken",
    "TriggerResult",
    "UserJob",
    "UserOverview",
    "UserRow",
    "VerifyResult",
    "connect",
    "format_duration",
    "list_tokens",
    "revoke_token",
    "sample_user_with_projection",
]

# What a client may append: the nine objective event types and retractions.
EVENT_TYPES: tuple[str, ...] = (*OBJECTIVE_EVENT_TYPES, RETRACTION_EVENT_TYPE)

T = TypeVar("T")


class DashboardLane:
    """A synchronous pool and the threads that use it, for the dashboard.

    Opened on first use (min_size=0). A statement running past a minute is
    cancelled, and so is one still running at shutdown. No JIT: a misestimated
    row count (a user's events) made PostgreSQL spend 10-15 ms compiling plans
    for reads that then ran in under one.
    """

    def __init__(self, url: str, name: str, *, size: int) -> None:
        self.pool: ConnectionPool[DbConnection] = ConnectionPool(
            url,
            min_size=0,
            max_size=size,
            kwargs={
                "autocommit": True,
                "application_name": name,
                "options": "-c statement_timeout=60000 -c jit=off",
            },
            open=False,
            timeout=10,
            check=ConnectionPool.check_connection,
            name=name,
        )
        self._threads = ThreadPoolExecutor(size, thread_name_prefix=name)
        self._busy: set[DbConnection] = set()

    def open(self) -> None:
        self.pool.open(wait=False)

    async def run(self, call: Callable[[DbConnection], T]) -> T:
        def in_thread() -> T:
            with self.pool.connection() as conn:
                self._busy.add(conn)
                try:
                    return call(conn)
                finally:
                    self._busy.discard(conn)

        return await asyncio.get_running_loop().run_in_executor(self._threads, in_thread)

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        # A read can take seconds on a large database: cancel it on the server rather
        # than let it hold up the shutdown.
        for conn in list(self._busy):
            await loop.run_in_executor(None, conn.cancel_safe)
        await loop.run_in_executor(self._threads, self.pool.close)
        self._threads.shutdown(wait=True)


class Database:
    """The pools one server process uses; opened and closed by the app's lifespan."""

    def __init__(self, url: str, *, pool_size: int, write_pool_size: int) -> None:
        self.url = url
        connection_options = {"autocommit": True, "application_name": "stride-api"}
        # A request that cannot get a connection in 5 s answers 503 rather than hang.
        self.reads: AsyncConnectionPool[AsyncDbConnection] = AsyncConnectionPool(
            url, min_size=1, max_size=pool_size, kwargs=connection_options, open=False, timeout=5
        )
        # Writes check a connection before handing it out (one empty round trip): a
        # transaction is not retried blindly, so it should not start on a dead one.
        self.writes: ConnectionPool[DbConnection] = ConnectionPool(
            url,
            min_size=1,
            max_size=write_pool_size,
            kwargs=connection_options,
            open=False,
            timeout=5,
            check=ConnectionPool.check_connection,
        )
        self._threads = ThreadPoolExecutor(write_pool_size, thread_name_prefix="stride-api-sync")
        # The dashboard gets connections and threads of its own, so it never holds up
        # the API's writes, in two lanes: what a request waits for (the user page, the
        # actions, sessions) and the background refreshes of its snapshots (the runbook's
        # coverage reads every event: seconds on a large database), so a slow refresh
        # never makes a page wait for a connection.
        self.admin = DashboardLane(url, "stride-admin", size=2)
        self.admin_refresh = DashboardLane(url, "stride-admin-refresh", size=2)

    async def open(self) -> None:
        """Start both pools without waiting: the server comes up even while the database
        is down, and /readyz says so."""
        await self.reads.open(wait=False)
        self.writes.open(wait=False)
        self.admin.open()
        self.admin_refresh.open()

    async def close(self) -> None:
        await self.reads.close()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._threads, self.writes.close)
        await self.admin.close()
        await self.admin_refresh.close()
        self._threads.shutdown(wait=True)

    async def run_sync(self, call: Callable[[DbConnection], T]) -> T:
        """Run a synchronous stride function on a pooled connection in a worker thread."""

        def in_thread() -> T:
            with self.writes.connection() as conn:
                return call(conn)

        return await asyncio.get_running_loop().run_in_executor(self._threads, in_thread)

    async def run_admin(self, call: Callable[[DbConnection], T]) -> T:
        """Run a synchronous stride function a dashboard request waits for."""
        return await self.admin.run(call)

    async def run_admin_refresh(self, call: Callable[[DbConnection], T]) -> T:
        """Run a synchronous stride function that refreshes a dashboard snapshot."""
        return await self.admin_refresh.run(call)

    async def read(
        self, call: Callable[[AsyncDbConnection], Awaitable[T]], *, timeout: float | None = None
    ) -> T:
        """Run a read on a pooled connection; once more on a fresh one if the pooled one
        was dead (a PostgreSQL restart leaves idle pooled connections broken). Reads are
        safe to repeat, so they skip the per-checkout check that writes pay for."""
        used: AsyncDbConnection | None = None
        try:
            async with self.reads.connection(timeout) as aconn:
                used = aconn
                return await call(aconn)
        except psycopg.OperationalError:
            if used is None or not used.broken:
                raise
        async with self.reads.connection(timeout) as aconn:
            return await call(aconn)

    async def listen_connection(self) -> AsyncDbConnection:
        """A dedicated autocommit connection for LISTEN (never from the pool)."""
        return await psycopg.AsyncConnection.connect(
            self.url, autocommit=True, application_name="stride-api-listen", connect_timeout=10
        )


# --- tokens ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A freshly issued token: `text` is shown once and never stored."""

    text: str
    stored: StoredToken


def issue_token(
    conn: DbConnection, user_id: UUID, *, operator: bool, expires_at: datetime | None
) -> IssuedToken:
    """Mint a token for a user; an unknown user raises psycopg.errors.ForeignKeyViolation."""
    minted: MintedToken = mint_token()
    stored = insert_token(
        conn, minted.id, minted.digest, user_id, operator=operator, expires_at=expires_at
    )
    return IssuedToken(minted.text, stored)


async def find_token(db: Database, token_id: str) -> StoredToken | None:
    return await db.read(lambda aconn: find_token_async(aconn, token_id))


# --- events and projections ------------------------------------------------------------


async def append(db: Database, events: Sequence[NewEvent]) -> list[AppendResult]:
    """The CLI's append path: validation, idempotency keys, one transaction, the trigger's jobs.

    Raises EventBatchError naming every bad record; nothing is stored then.
    """
    return await db.run_sync(lambda conn: append_events(conn, events))


async def read_projection(
    db: Database, user_id: UUID, projection_type: str, key: str
) -> StoredProjection | None:
    return await db.read(lambda aconn: read_projection_async(aconn, user_id, projection_type, key))


async def read_projections(
    db: Database, user_id: UUID, projection_type: str | None
) -> list[StoredProjection]:
    return await db.read(lambda aconn: read_projections_async(aconn, user_id, projection_type))


async def event_job_statuses(
    db: Database, user_id: UUID, event_id: UUID
) -> list[str | None] | None:
    """Statuses of the event's projection.update jobs; None when it is not this user's."""
    return await db.read(lambda aconn: event_job_statuses_async(aconn, user_id, event_id))


async def job_statuses_by_event(db: Database, event_ids: Collection[UUID]) -> dict[UUID, list[str]]:
    return await db.read(lambda aconn: job_statuses_by_event_async(aconn, event_ids))


async def schema_problems(db: Database) -> list[str]:
    """Empty when the database answers and every shipped migration is applied."""
    # A probe answers quickly: two seconds to get a connection, not the usual five.
    return await db.read(migration_problems_async, timeout=2)


# --- operator actions (the CLI's functions) --------------------------------------------


async def trigger(db: Database, source: str, max_rate: float | None) -> TriggerResult:
    return await db.run_sync(lambda conn: trigger_backfill(conn, source, max_rate=max_rate))


async def backfill_status(db: Database, source: str) -> BackfillStatus:
    """What `stride backfill status --json` prints: the four runbook reports and the run."""
    return await db.run_sync(lambda conn: read_backfill_status(conn, source))


async def cancel(db: Database, source: str) -> CancelResult:
    return await db.run_sync(lambda conn: cancel_backfill(conn, source))


async def verify(db: Database, sample: int) -> VerifyResult:
    return await db.run_sync(lambda conn: verify_sample(conn, sample))


async def queue(db: Database) -> QueueStatus:
    return await db.run_sync(queue_status)


async def retry_dead_jobs(db: Database, job_type: str | None) -> int:
    return await db.run_sync(lambda conn: retry_dead(conn, job_type))


# --- the operator dashboard (stride.api.dashboard) ----------------------------------------


async def open_admin_session(
    db: Database, digest: bytes, token_id: str, csrf_token: str, expires_at: datetime
) -> None:
    await db.run_admin(
        lambda conn: admin_sessions.insert_session(conn, digest, token_id, csrf_token, expires_at)
    )


async def find_admin_session(db: Database, digest: bytes) -> StoredSession | None:
    return await db.read(lambda aconn: admin_sessions.find_session_async(aconn, digest))


async def close_admin_session(db: Database, digest: bytes) -> None:
    await db.run_admin(lambda conn: admin_sessions.delete_session(conn, digest))


async def set_admin_flash(db: Database, digest: bytes, message: str) -> None:
    await db.run_admin(lambda conn: admin_sessions.set_flash(conn, digest, message))


async def pop_admin_flash(db: Database, digest: bytes) -> str | None:
    # Not through db.read: a write must not be repeated on a fresh connection.
    async with db.reads.connection() as aconn:
        return await admin_sessions.pop_flash_async(aconn, digest)


async def save_verification(db: Database, digest: bytes, result: dict[str, Any]) -> None:
    await db.run_admin(lambda conn: admin_sessions.set_verification(conn, digest, result))


async def last_verification(db: Database, digest: bytes) -> dict[str, Any] | None:
    return await db.read(lambda aconn: admin_sessions.get_verification_async(aconn, digest))


@dataclass(frozen=True, slots=True)
class RunView:
    """The live part of the backfill page: the run's progress and its two status reports."""

    progress: RunProgress | None
    reports: list[Report]


CHEAP_REPORTS = ("backfill_controller_status", "backfill_fanout_status")
SLOW_REPORTS = ("backfill_coverage", "backfill_lag")


async def backfill_run(db: Database, source: str) -> RunView:
    def read(conn: DbConnection) -> RunView:
        return RunView(
            run_progress(conn, source), runbook_reports(conn, source, only=CHEAP_REPORTS)
        )

    return await db.run_admin_refresh(read)


async def backfill_slow_reports(db: Database, source: str) -> list[Report]:
    """The runbook's coverage and lag reports (each reads every event)."""
    return await db.run_admin_refresh(lambda conn: runbook_reports(conn, source, only=SLOW_REPORTS))


async def backfill_history(db: Database, limit: int = 20) -> list[RunSummary]:
    """Every run with its outcome (counts each run's jobs and users: a slow read)."""
    return await db.run_admin_refresh(lambda conn: run_history(conn, limit=limit))


async def backfill_sources(db: Database) -> list[str]:
    """Source labels with runs, newest run first (one row per run: a quick read)."""
    return await db.run_admin(known_sources)  # quick, and a page waits for it


async def model_versions(db: Database) -> list[ModelVersionCount]:
    return await db.run_admin_refresh(model_version_counts)


async def admin_verify(db: Database, sample: int) -> VerifyResult:
    return await db.run_admin(lambda conn: verify_sample(conn, sample))


async def admin_trigger(db: Database, source: str, max_rate: float | None) -> TriggerResult:
    return await db.run_admin(lambda conn: trigger_backfill(conn, source, max_rate=max_rate))


async def admin_cancel(db: Database, source: str) -> CancelResult:
    return await db.run_admin(lambda conn: cancel_backfill(conn, source))


async def admin_queue(db: Database) -> QueueOverview:
    return await db.run_admin_refresh(queue_overview)


async def admin_completions(
    db: Database, since: datetime, bucket_seconds: float, source: str | None = None
) -> Completions:
    return await db.run_admin_refresh(
        lambda conn: completions(conn, since, bucket_seconds, source=source)
    )


async def admin_job(db: Database, job_id: int) -> JobDetail | None:
    """One job with its payload and the history of its failed attempts (`stride jobs show`)."""
    return await db.run_admin(lambda conn: show_job(conn, job_id))


async def admin_retry_job(db: Database, job_id: int) -> bool:
    return await db.run_admin(lambda conn: retry_job(conn, job_id))


async def admin_retry_type(db: Database, job_type: str) -> int:
    return await db.run_admin(lambda conn: retry_dead(conn, job_type))


@dataclass(frozen=True, slots=True)
class UserOverview:
    """What the dashboard's user page shows; `user` is None when there is no such user."""

    user: UserRow | None
    projections: list[StoredProjection]
    events: list[StoredEvent]
    jobs: list[UserJob]


async def user_overview(db: Database, user_id: UUID, *, events: int = 20) -> UserOverview:
    def read(conn: DbConnection) -> UserOverview:
        user = find_user(conn, user_id)
        if user is None:
            return UserOverview(None, [], [], [])
        return UserOverview(
            user,
            read_stored_projections(conn, user_id),
            latest_events(conn, user_id, events),
            user_jobs(conn, user_id),
        )

    return await db.run_admin(read)
