"""Read-your-write without polling: one LISTEN connection per server process.

A request for `…?after_event=E` waits until E is *covered*: E's own
projection.update job (the events trigger enqueues exactly one per event, with
`event_id` in its payload) is completed. The handler that completed it loaded
the user's events after E had committed (E commits before its job exists) and
wrote the projections in the transaction that completed the job, so every
effect of E on every projection is visible once that job reads completed. An
event whose job row is gone was completed and pruned (or bulk-loaded without a
job, which only the backfill covers), so it counts as covered too.

Every projection write notifies `stride_projections` when it commits. The hub
holds the one connection that LISTENs for it, and on each notification runs one
query for all the events still awaited, resolving the waiters whose jobs are
done. Notifications that arrive while a check runs fold into the next check. A
token revocation (`stride_tokens`) clears the token cache. After the LISTEN
connection drops, the hub reconnects, re-checks every waiter and clears the
cache (notifications may have been missed meanwhile).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Literal
from uuid import UUID

import psycopg
from psycopg import sql

from stride.api import service

log = logging.getLogger("stride.api.waiting")

Coverage = Literal["covered", "waiting", "stalled"]
# `failed` is final: the handler declared the job hopeless (retrying cannot help).
OPEN_STATUSES = frozenset({"pending", "processing"})
RECONNECT_MAX_DELAY = 5.0


def coverage_of(statuses: Sequence[str | None]) -> Coverage:
    """How far an event's projection.update jobs (by status; None: no job row) have got.

    covered: one completed, or there is none; waiting: one will still run;
    stalled: dead, failed or cancelled, so nothing runs it until an operator retries.
    """
    if not statuses or any(s is None or s == "completed" for s in statuses):
        return "covered"
    if any(s in OPEN_STATUSES for s in statuses):
        return "waiting"
    return "stalled"


class NotificationHub:
    """The process's LISTEN connection and the requests waiting on it."""

    def __init__(self, db: service.Database, on_tokens_changed: Callable[[], None]) -> None:
        self._db = db
        self._on_tokens_changed = on_tokens_changed
        self._waiters: dict[UUID, set[asyncio.Future[Coverage]]] = {}
        self._check = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.listening = False

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._listen(), name="stride-api-listen"),
            asyncio.create_task(self._checker(), name="stride-api-coverage"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.listening = False

    @property
    def waiting(self) -> int:
        """Requests waiting right now."""
        return sum(len(futures) for futures in self._waiters.values())

    async def wait_for(self, user_id: UUID, event_id: UUID, timeout: float) -> Coverage | None:
        """Wait up to `timeout` seconds for the event to be covered; None if not the user's."""
        future: asyncio.Future[Coverage] = asyncio.get_running_loop().create_future()
        # Registered before the first look, so a notification between the look and the
        # wait is not lost: the check it triggers sees this waiter.
        self._waiters.setdefault(event_id, set()).add(future)
        try:
            statuses = await service.event_job_statuses(self._db, user_id, event_id)
            if statuses is None:
                return None
            coverage = coverage_of(statuses)
            if coverage != "waiting" or timeout <= 0:
                return coverage
            try:
                return await asyncio.wait_for(future, timeout)
            except TimeoutError:
                # A job that completes without writing a projection (nothing to
                # recompute) sends no notification: one last look.
                return coverage_of(
                    await service.event_job_statuses(self._db, user_id, event_id) or []
                )
        finally:
            futures = self._waiters.get(event_id)
            if futures is not None:
                futures.discard(future)
                if not futures:
                    del self._waiters[event_id]

    async def _listen(self) -> None:
        delay = 0.1
        while True:
            try:
                conn = await self._db.listen_connection()
                async with conn:
                    for channel in (service.PROJECTIONS_CHANNEL, service.TOKENS_CHANNEL):
                        await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                    self.listening = True
                    delay = 0.1
                    # Whatever was notified while we were away: look again.
                    self._on_tokens_changed()
                    self._check.set()
                    async for note in conn.notifies():
                        if note.channel == service.PROJECTIONS_CHANNEL:
                            self._check.set()
                        elif note.channel == service.TOKENS_CHANNEL:
                            self._on_tokens_changed()
            except (psycopg.Error, OSError) as exc:
                log.warning("listen connection lost (%s); reconnecting in %.1fs", exc, delay)
            finally:
                if self.listening:
                    self.listening = False
                    self._on_tokens_changed()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_DELAY)

    async def _checker(self) -> None:
        while True:
            await self._check.wait()
            self._check.clear()
            if not self._waiters:
                continue
            event_ids = list(self._waiters)
            try:
                found = await service.job_statuses_by_event(self._db, event_ids)
            except (psycopg.Error, OSError, TimeoutError) as exc:
                log.warning("coverage check failed (%s); retrying", exc)
                await asyncio.sleep(0.5)
                self._check.set()
                continue
            for event_id in event_ids:
                coverage = coverage_of(found.get(event_id, []))
                if coverage == "waiting":
                    continue
                for future in self._waiters.get(event_id, ()):
                    if not future.done():
                        future.set_result(coverage)
