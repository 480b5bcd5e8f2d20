"""Queue upkeep, run in one elected place: reclaim expired leases, prune old completed jobs.

Every worker runs a `MaintenanceLeader`, but only the one holding the
maintenance advisory lock does the work; the others campaign for the lock each
interval and take over when the leader's session ends (it stopped, crashed, or
lost its connection). All of the leader's work runs on the session that holds
the lock, so a leader that lost its session can no longer act.

A leader that hangs with its connection open (a paused process) must not block
maintenance forever: its session runs with an `idle_session_timeout` a few
intervals long, so the server ends a session that stopped asking for work and
the lock passes on. Only a lost session costs leadership; any other database
error is logged and the round is tried again at the next interval.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Final

import psycopg

from stride.queue.sessions import connection_lost
from stride.storage.connection import DatabaseConfigError, DbConnection, connect

logger = logging.getLogger("stride.queue.maintenance")

# Any constant works as long as every stride process uses the same one. It is a
# single-bigint key, apart from the two-int keys of user locks (user_locks.py).
MAINTENANCE_LOCK_KEY: Final = 0x5354_5244_4D41_494E  # "STRDMAIN"

DEFAULT_PRUNE_COMPLETED_AFTER: Final = timedelta(days=7)
PRUNE_EVERY_SECONDS: Final = 600.0
# Batches of PRUNE_BATCH_SIZE pruned per interval at most, so a large backlog
# never holds up reclaiming for long; the rest goes on the next interval.
PRUNE_BATCHES_PER_TICK: Final = 20
PRUNE_BATCH_SIZE: Final = 1000
# The leader's session ends on the server after this many intervals without a
# query (it runs one every interval), but never sooner than the floor.
LEADER_IDLE_INTERVALS: Final = 4
LEADER_IDLE_FLOOR_SECONDS: Final = 2.0

# Session-level, not transaction-level: the lock is leadership and lasts as long
# as the session. The try_ form returns at once when another session leads.
TRY_LEAD_SQL: Final = "SELECT pg_try_advisory_lock(%s)"
IDLE_TIMEOUT_SQL: Final = "SELECT set_config('idle_session_timeout', %s, false)"

# A lease that ran out means its worker died, hung or lost its connection. The
# job goes back to pending keeping its attempt count (the crashed run counts),
# or dead when crashes used up its attempts, so a job that kills its worker
# cannot loop forever; the reason goes to error_message and is appended to the
# job's error history (`stride jobs show`). SKIP LOCKED: a row locked right now
# belongs to a live transaction (its owner is completing it) and is not ours to
# judge.
RECLAIM_SQL: Final = """
WITH expired AS (
    SELECT id, attempt > max_retries AS exhausted,
           'lease expired on attempt ' || attempt || ' (worker ' || coalesce(locked_by, '?')
           || ' died or lost its connection); '
           || CASE WHEN attempt > max_retries THEN 'no attempts left' ELSE 'reclaimed' END
               AS reason
    FROM background_jobs
    WHERE status = 'processing' AND locked_until < clock_timestamp()
    ORDER BY locked_until
    LIMIT %s
    FOR UPDATE SKIP LOCKED
)
UPDATE background_jobs AS j
SET status = CASE WHEN expired.exhausted THEN 'dead' ELSE 'pending' END,
    error_message = expired.reason,
    error_history = stride_append_error(j.error_history, jsonb_build_object(
        'attempt', j.attempt, 'at', clock_timestamp(), 'error', expired.reason,
        'worker', j.locked_by,
        'outcome', CASE WHEN expired.exhausted THEN 'dead' ELSE 'reclaimed' END)),
    completed_at = CASE WHEN expired.exhausted THEN clock_timestamp() END,
    scheduled_for = CASE WHEN expired.exhausted THEN j.scheduled_for
                         ELSE clock_timestamp() END,
    locked_until = NULL
FROM expired
WHERE j.id = expired.id
"""

# Short transactions of at most `batch_size` rows: pruning never holds many row
# locks or blocks claimers for long. SKIP LOCKED leaves rows someone else holds.
PRUNE_SQL: Final = """
WITH doomed AS (
    SELECT id FROM background_jobs
    WHERE status = 'completed' AND completed_at < clock_timestamp() - %s::interval
    ORDER BY completed_at
    LIMIT %s
    FOR UPDATE SKIP LOCKED
)
DELETE FROM background_jobs AS j USING doomed WHERE j.id = doomed.id
"""


def reclaim_expired_leases(conn: DbConnection, *, batch_size: int = 1000) -> int:
    """Return jobs with expired leases to pending (or dead when out of attempts); returns count."""
    total = 0
    while True:
        with conn.transaction():
            count = conn.execute(RECLAIM_SQL, (batch_size,)).rowcount
        total += count
        if count < batch_size:
            return total


def prune_completed(
    conn: DbConnection,
    older_than: timedelta,
    batch_size: int = PRUNE_BATCH_SIZE,
    *,
    max_batches: int | None = None,
) -> int:
    """Delete completed jobs older than `older_than`, `batch_size` rows per transaction.

    With `max_batches`, stops after that many full batches (more may be left).
    """
    total = batches = 0
    while True:
        with conn.transaction():
            count = conn.execute(PRUNE_SQL, (older_than, batch_size)).rowcount
        total += count
        batches += 1
        if count < batch_size or (max_batches is not None and batches >= max_batches):
            return total


def leader_idle_timeout(interval: float) -> float:
    """Seconds of silence after which the server ends a maintenance session."""
    return max(LEADER_IDLE_INTERVALS * interval, LEADER_IDLE_FLOOR_SECONDS)


class MaintenanceLeader:
    """Campaigns for maintenance leadership every `interval`; while leading, does the upkeep.

    `on_reclaimed` is told how many jobs a reclaim returned to the queue (the
    worker wakes its runners). `prune_completed_after=None` never prunes.
    """

    def __init__(
        self,
        database_url: str,
        *,
        interval: float,
        prune_completed_after: timedelta | None = DEFAULT_PRUNE_COMPLETED_AFTER,
        prune_every: float = PRUNE_EVERY_SECONDS,
        on_reclaimed: Callable[[int], None] = lambda count: None,
        name: str = "",
    ) -> None:
        if interval <= 0 or prune_every <= 0:
            raise ValueError("maintenance intervals must be positive")
        self.database_url = database_url
        self.interval = interval
        self.prune_completed_after = prune_completed_after
        self.prune_every = prune_every
        self.on_reclaimed = on_reclaimed
        self.name = name
        self._conn: DbConnection | None = None
        self._leading = False
        self._next_prune = 0.0

    @property
    def is_leader(self) -> bool:
        """Whether this process held the maintenance lock at its last look."""
        return self._leading

    def run(self, stop: threading.Event) -> None:
        """Campaign and maintain every interval until `stop` is set; then step down."""
        try:
            while True:
                self.tick()
                if stop.wait(self.interval):
                    return
        finally:
            self.close()

    def tick(self) -> None:
        """One round: campaign if not leading; if leading, reclaim and (when due) prune."""
        try:
            conn = self._connection()
            if not self._leading:
                self._campaign(conn)
            if self._leading:
                self._maintain(conn)
        except (DatabaseConfigError, psycopg.Error) as exc:
            if not isinstance(exc, DatabaseConfigError) and not connection_lost(self._conn):
                # The session (and with it the lock) is intact: one failed round.
                logger.warning(
                    "maintenance_failed name=%s leading=%s error=%r",
                    self.name,
                    self._leading,
                    exc,
                )
                return
            if self._leading:
                logger.warning("maintenance_leader_lost name=%s error=%r", self.name, exc)
            else:
                logger.warning("maintenance_unavailable name=%s error=%r", self.name, exc)
            self.close()

    def close(self) -> None:
        """Step down: closing the session releases the lock for another worker."""
        if self._leading:
            logger.info("maintenance_leader_stepped_down name=%s", self.name)
        self._leading = False
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    def _connection(self) -> DbConnection:
        if self._conn is None or connection_lost(self._conn):
            self.close()
            conn = connect(
                self.database_url, autocommit=True, application_name="stride-maintenance"
            )
            timeout_ms = round(leader_idle_timeout(self.interval) * 1000)
            conn.execute(IDLE_TIMEOUT_SQL, (f"{timeout_ms}ms",))
            self._conn = conn
        return self._conn

    def _campaign(self, conn: DbConnection) -> None:
        row = conn.execute(TRY_LEAD_SQL, (MAINTENANCE_LOCK_KEY,)).fetchone()
        if row is not None and row[0]:
            self._leading = True
            self._next_prune = 0.0  # prune at once: a new leader catches up
            logger.info("maintenance_leader_elected name=%s", self.name)

    def _maintain(self, conn: DbConnection) -> None:
        reclaimed = reclaim_expired_leases(conn)
        if reclaimed:
            logger.info("reclaimed_expired_leases count=%d", reclaimed)
            self.on_reclaimed(reclaimed)
        if self.prune_completed_after is None or time.monotonic() < self._next_prune:
            return
        pruned = prune_completed(
            conn, self.prune_completed_after, max_batches=PRUNE_BATCHES_PER_TICK
        )
        if pruned:
            logger.info("pruned_completed_jobs count=%d", pruned)
        if pruned < PRUNE_BATCHES_PER_TICK * PRUNE_BATCH_SIZE:
            self._next_prune = time.monotonic() + self.prune_every
