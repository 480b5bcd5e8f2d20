"""Operator control over a running backfill: cancel it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stride.domain.job_types import BACKFILL_JOB_TYPE, PROJECTION_UPDATE_JOB_TYPE
from stride.queue.jobs import cancel_pending
from stride.storage.connection import DbConnection

# The runs of `source` that are not over: their controller is still pending or
# processing, or a fan-out job of theirs is. FOR UPDATE OF r takes the lock a
# controller step holds while it fans out a chunk (fanout.LOCK_RUN): a step in
# progress commits first, so the pending jobs cancelled next include its chunk,
# and a controller that starts a step after us finds cancel_requested set.
LOCK_UNFINISHED_RUNS = """
SELECT r.job_id
FROM backfill_runs r
LEFT JOIN background_jobs c ON c.id = r.job_id
WHERE r.source = %(source)s
  AND NOT r.cancel_requested
  AND (
      c.status IN ('pending', 'processing')
      OR EXISTS (
          SELECT 1 FROM background_jobs f
          WHERE f.job_type = %(fanout_type)s
            AND f.payload ->> 'source' = r.source
            AND f.payload ->> 'backfill_job_id' = r.job_id::text
            AND f.status IN ('pending', 'processing')
      )
  )
ORDER BY r.job_id
FOR UPDATE OF r
"""

MARK_CANCELLED = """
UPDATE backfill_runs
SET cancel_requested = true, cancelled_at = clock_timestamp(), updated_at = clock_timestamp()
WHERE job_id = ANY(%(job_ids)s)
"""


@dataclass(frozen=True, slots=True)
class CancelResult:
    source: str
    runs_stopped: int
    jobs_cancelled: int

    def describe(self) -> str:
        if not self.runs_stopped and not self.jobs_cancelled:
            return f"nothing to cancel: no run of source {self.source!r} is in flight"
        return (
            f"cancelled {self.jobs_cancelled:,} pending jobs of source {self.source!r}; "
            f"{self.runs_stopped} run(s) stopped"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "runs_stopped": self.runs_stopped,
            "jobs_cancelled": self.jobs_cancelled,
        }


def cancel_backfill(conn: DbConnection, source: str) -> CancelResult:
    """Mark the unfinished runs of `source` cancelled and cancel their pending jobs.

    A controller that is pending between steps is cancelled with the jobs; one
    that is processing finds the mark at its next step and ends `cancelled`.
    Fan-out jobs a worker holds finish normally. A cancelled run is never
    reported complete.
    """
    with conn.transaction():
        rows = conn.execute(
            LOCK_UNFINISHED_RUNS, {"source": source, "fanout_type": PROJECTION_UPDATE_JOB_TYPE}
        ).fetchall()
        run_ids = [row[0] for row in rows]
        if run_ids:
            conn.execute(MARK_CANCELLED, {"job_ids": run_ids})
        # Only pending jobs of this source: organic jobs carry no source, and jobs
        # a worker holds finish normally (see cancel_pending for its locking).
        cancelled = cancel_pending(conn, [BACKFILL_JOB_TYPE, PROJECTION_UPDATE_JOB_TYPE], source)
    return CancelResult(source, len(run_ids), cancelled)
