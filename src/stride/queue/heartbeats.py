"""Worker presence: each worker process keeps a row in `worker_heartbeats` fresh.

The lease keeper (worker.py) writes it on every beat, a third of the lease,
on the connection it already has for extending leases: no thread or round trip
of its own beyond one small upsert per beat. `stride workers` reads the rows
(status.py); a row older than its worker's lease belongs to a worker that died
or hung, and a clean stop deletes the row.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from stride.storage.connection import DbConnection

# How long a silent worker's row is kept for `stride workers` to report it
# (as "silent"); a worker that starts clears older ones.
FORGET_SILENT_AFTER: Final = "1 day"

# Upsert of this worker's own row: the row lock is held only for this
# autocommit statement, and no other process writes this worker's row.
HEARTBEAT_SQL: Final = """
INSERT INTO worker_heartbeats AS w
    (worker_id, host, pid, concurrency, job_types, lease_seconds, started_at, heartbeat_at)
VALUES (%(worker_id)s, %(host)s, %(pid)s, %(concurrency)s, %(job_types)s, %(lease_seconds)s,
        clock_timestamp(), clock_timestamp())
ON CONFLICT (worker_id) DO UPDATE SET heartbeat_at = clock_timestamp()
"""

RETIRE_SQL: Final = "DELETE FROM worker_heartbeats WHERE worker_id = %(worker_id)s"

# Rows of workers silent for a day: crashed long ago, no longer worth showing.
FORGET_SILENT_SQL: Final = """
DELETE FROM worker_heartbeats WHERE heartbeat_at < clock_timestamp() - %(after)s::interval
"""


@dataclass(frozen=True, slots=True)
class WorkerPresence:
    """What a worker says about itself in its heartbeat row."""

    worker_id: str
    concurrency: int
    job_types: Sequence[str] | None
    lease_seconds: float
    host: str = ""
    pid: int = 0

    @classmethod
    def of_this_process(
        cls,
        worker_id: str,
        *,
        concurrency: int,
        job_types: Sequence[str] | None,
        lease_seconds: float,
    ) -> WorkerPresence:
        return cls(
            worker_id,
            concurrency,
            list(job_types) if job_types is not None else None,
            lease_seconds,
            socket.gethostname(),
            os.getpid(),
        )


def record_heartbeat(conn: DbConnection, presence: WorkerPresence) -> None:
    """Say this worker is alive now (inserting its row on the first beat)."""
    conn.execute(
        HEARTBEAT_SQL,
        {
            "worker_id": presence.worker_id,
            "host": presence.host,
            "pid": presence.pid,
            "concurrency": presence.concurrency,
            "job_types": list(presence.job_types) if presence.job_types is not None else None,
            "lease_seconds": float(presence.lease_seconds),
        },
    )


def forget_silent_workers(conn: DbConnection) -> int:
    """Delete the rows of workers silent for FORGET_SILENT_AFTER; returns how many."""
    return conn.execute(FORGET_SILENT_SQL, {"after": FORGET_SILENT_AFTER}).rowcount


def retire_worker(conn: DbConnection, worker_id: str) -> None:
    """Delete a stopping worker's row: it is gone, not silent."""
    conn.execute(RETIRE_SQL, {"worker_id": worker_id})
