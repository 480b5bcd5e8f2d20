"""The operator's view of the queue: what is waiting, what is stuck, what died and why."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from stride.storage.connection import DbConnection

COUNTS_SQL = """
SELECT job_type, status, count(*) FROM background_jobs GROUP BY job_type, status
ORDER BY job_type, status
"""

OLDEST_DUE_SQL = """
SELECT extract(epoch FROM now() - min(scheduled_for))::float8
FROM background_jobs
WHERE status = 'pending' AND scheduled_for <= now()
"""

EXPIRED_LEASES_SQL = """
SELECT count(*) FROM background_jobs WHERE status = 'processing' AND locked_until < now()
"""

# Jobs that ended without success: dead (attempts exhausted, no handler) or
# failed (the handler declared them hopeless); index background_jobs_given_up.
LATEST_DEAD_SQL = """
SELECT id, job_type, status, attempt, error_message, completed_at
FROM background_jobs
WHERE status IN ('dead', 'failed')
ORDER BY completed_at DESC, id DESC
LIMIT %s
"""


@dataclass(frozen=True, slots=True)
class DeadJob:
    """A job that ended without success; `status` is dead or failed."""

    id: int
    job_type: str
    status: str
    attempt: int
    error_message: str | None
    died_at: datetime | None


@dataclass(frozen=True, slots=True)
class QueueStatus:
    """Counts by (job type, status), oldest due pending age, stuck leases, recent deaths.

    `latest_dead` holds the latest dead and failed jobs alike.
    """

    counts: list[tuple[str, str, int]]
    oldest_due_pending_seconds: float | None
    expired_leases: int
    latest_dead: list[DeadJob]

    def to_json(self) -> dict[str, Any]:
        by_type: dict[str, dict[str, int]] = {}
        for job_type, status, count in self.counts:
            by_type.setdefault(job_type, {})[status] = count
        return {
            "counts": by_type,
            "oldest_due_pending_seconds": self.oldest_due_pending_seconds,
            "expired_leases": self.expired_leases,
            "latest_dead": [asdict(d) for d in self.latest_dead],
        }


def queue_status(conn: DbConnection, *, dead_limit: int = 10) -> QueueStatus:
    """Read the queue's state (plain reads: no locks beyond what any SELECT takes)."""
    counts = [(r[0], r[1], int(r[2])) for r in conn.execute(COUNTS_SQL).fetchall()]
    oldest = conn.execute(OLDEST_DUE_SQL).fetchone()
    expired = conn.execute(EXPIRED_LEASES_SQL).fetchone()
    dead = [DeadJob(*row) for row in conn.execute(LATEST_DEAD_SQL, (dead_limit,)).fetchall()]
    return QueueStatus(
        counts=counts,
        oldest_due_pending_seconds=oldest[0] if oldest else None,
        expired_leases=int(expired[0]) if expired else 0,
        latest_dead=dead,
    )
