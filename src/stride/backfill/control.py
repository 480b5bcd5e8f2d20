"""Operator control over a running backfill: cancel it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stride.domain.job_types import BACKFILL_JOB_TYPE, PROJECTION_UPDATE_JOB_TYPE
from stride.queue.jobs import cancel_pending
from stride.storage.connection import DbConnection

# A processing controller cannot be cancelled under its worker's feet; it
# checks this flag before each chunk and stops there.
REQUEST_CONTROLLER_STOP = """
UPDATE backfill_runs SET cancel_requested = true, updated_at = clock_timestamp()
WHERE source = %(source)s AND fanout_done_at IS NULL AND NOT cancel_requested
"""


@dataclass(frozen=True, slots=True)
class CancelResult:
    source: str
    runs_stopped: int
    jobs_cancelled: int

    def describe(self) -> str:
        return (
            f"cancelled {self.jobs_cancelled} pending jobs of source {self.source!r}; "
            f"{self.runs_stopped} running controller(s) asked to stop"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "runs_stopped": self.runs_stopped,
            "jobs_cancelled": self.jobs_cancelled,
        }


def cancel_backfill(conn: DbConnection, source: str) -> CancelResult:
    """Stop the controller after its current chunk and cancel every pending job of `source`."""
    with conn.transaction():
        stopped = conn.execute(REQUEST_CONTROLLER_STOP, {"source": source}).rowcount
        # Only pending jobs of this source: organic jobs carry no source, and jobs
        # a worker holds finish normally (see cancel_pending for its locking).
        cancelled = cancel_pending(conn, [BACKFILL_JOB_TYPE, PROJECTION_UPDATE_JOB_TYPE], source)
    return CancelResult(source, stopped, cancelled)
