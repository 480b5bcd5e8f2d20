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
from typing import TypeVar
from uuid import UUID

import psycopg
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from stride.api.tokens import MintedToken, mint_token
from stride.backfill.control import CancelResult, cancel_backfill
from stride.backfill.reports import BackfillStatus, Report, RunProgress
from stride.backfill.reports import backfill_status as read_backfill_status
from stride.backfill.trigger import BackfillInputError, TriggerResult, trigger_backfill
from stride.backfill.verify import Drift, VerifyResult, verify_sample
from stride.domain.events import OBJECTIVE_EVENT_TYPES, RETRACTION_EVENT_TYPE
from stride.domain.validation import EventBatchError, EventValidationError, NewEvent
from stride.queue.jobs import retry_dead
from stride.queue.status import DeadJob, QueueStatus, queue_status
from stride.storage.connection import AsyncDbConnection, DbConnection, connect
from stride.storage.event_store import AppendResult, append_events
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
from stride.storage.tokens import (
    TOKENS_CHANNEL,
    StoredToken,
    find_token_async,
    insert_token,
    list_tokens,
    revoke_token,
)

__all__ = [
    "EVENT_TYPES",
    "PROJECTIONS_CHANNEL",
    "TOKENS_CHANNEL",
    "AppendResult",
    "BackfillInputError",
    "BackfillStatus",
    "CancelResult",
    "Database",
    "DbConnection",
    "DeadJob",
    "Drift",
    "EventBatchError",
    "EventValidationError",
    "IssuedToken",
    "NewEvent",
    "QueueStatus",
    "Report",
    "RunProgress",
    "StoredProjection",
    "StoredToken",
    "TriggerResult",
    "VerifyResult",
    "connect",
    "list_tokens",
    "revoke_token",
    "sample_user_with_projection",
]

# What a client may append: the nine objective event types and retractions.
EVENT_TYPES: tuple[str, ...] = (*OBJECTIVE_EVENT_TYPES, RETRACTION_EVENT_TYPE)

T = TypeVar("T")


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

    async def open(self) -> None:
        """Start both pools without waiting: the server comes up even while the database
        is down, and /readyz says so."""
        await self.reads.open(wait=False)
        self.writes.open(wait=False)

    async def close(self) -> None:
        await self.reads.close()
        await asyncio.get_running_loop().run_in_executor(self._threads, self.writes.close)
        self._threads.shutdown(wait=True)

    async def run_sync(self, call: Callable[[DbConnection], T]) -> T:
        """Run a synchronous stride function on a pooled connection in a worker thread."""

        def in_thread() -> T:
            with self.writes.connection() as conn:
                return call(conn)

        return await asyncio.get_running_loop().run_in_executor(self._threads, in_thread)

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
