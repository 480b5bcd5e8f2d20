"""Trigger a backfill: snapshot every user and enqueue one controller job per source."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Literal

import psycopg

from stride.backfill import CONTROLLER_PRIORITY
from stride.domain.events import OBJECTIVE_EVENT_TYPES
from stride.domain.job_types import BACKFILL_JOB_TYPE
from stride.queue.jobs import NewJob, enqueue, find_in_flight
from stride.storage.connection import DbConnection

SNAPSHOT_USERS = """
INSERT INTO backfill_snapshot_users (snapshot_id, position, user_id)
SELECT %(snapshot_id)s, row_number() OVER (ORDER BY id), id
FROM users
"""

RUN_USERS = "SELECT users_total FROM backfill_runs WHERE job_id = %(job_id)s"

CREATE_RUN = """
INSERT INTO backfill_runs (job_id, source, snapshot_id, users_total, max_rate)
VALUES (%(job_id)s, %(source)s, %(snapshot_id)s, %(users_total)s, %(max_rate)s)
"""


class BackfillInputError(ValueError):
    """A trigger argument is unusable (e.g. a blank source)."""


@dataclass(frozen=True, slots=True)
class TriggerResult:
    outcome: Literal["enqueued", "in_flight", "no_users"]
    job_id: int | None = None
    users: int = 0

    def describe(self) -> str:
        if self.outcome == "enqueued":
            return f"enqueued job {self.job_id} ({self.users:,} users snapshotted)"
        if self.outcome == "in_flight":
            return f"already in flight ({self.job_id})"
        return "no users found"

    def as_dict(self) -> dict[str, Any]:
        """`users`: the snapshot of the run enqueued, or of the run already in flight."""
        return {
            "outcome": self.outcome,
            "job_id": self.job_id,
            "users": self.users,
            "message": self.describe(),
        }


def controller_dedup_key(source: str) -> str:
    return f"{BACKFILL_JOB_TYPE}:{source}"


def controller_payload(
    source: str, snapshot_id: uuid.UUID, users: int, max_rate: float | None
) -> dict[str, Any]:
    """The controller job's payload, final at enqueue (the snapshot is already taken)."""
    payload: dict[str, Any] = {
        "source": source,
        "include_all_users": True,
        # The snapshot lives in backfill_snapshot_users (see README): a
        # reference here, not millions of ids in one JSON document.
        "user_ids": {
            "snapshot_id": str(snapshot_id),
            "table": "backfill_snapshot_users",
            "count": users,
        },
        "event_types": list(OBJECTIVE_EVENT_TYPES),
    }
    if max_rate is not None:
        payload["max_rate"] = max_rate
    return payload


# A label names a run in logs, dedup keys and the runbook's queries: a sane
# length keeps every key built from it far below PostgreSQL's index row limit.
SOURCE_MAX_LENGTH = 200


def validate_source(source: str) -> str:
    """A source label: 1 to SOURCE_MAX_LENGTH printable characters on one line, not blank.

    Printable (str.isprintable) rules out control characters, line breaks,
    tabs and the lone surrogates that undecodable bytes on a command line
    turn into; spaces and any script are fine.
    """
    if not source.strip():
        raise BackfillInputError("--source must not be empty or blank")
    if len(source) > SOURCE_MAX_LENGTH:
        raise BackfillInputError(
            f"--source must be at most {SOURCE_MAX_LENGTH} characters (got {len(source)})"
        )
    if not source.isprintable():
        raise BackfillInputError(
            "--source must be printable text on one line "
            "(no control characters, line breaks or undecodable bytes)"
        )
    return source


def trigger_backfill(
    conn: DbConnection, source: str, *, max_rate: float | None = None
) -> TriggerResult:
    """Enqueue the controller job unless one for `source` is pending or processing.

    One transaction: snapshot the users, enqueue the controller with its final
    payload, record the run. The dedup key's unique index makes two
    simultaneous triggers yield one job: the second one's enqueue waits for the
    first to commit, finds the key in flight, and rolls its own snapshot back.
    """
    validate_source(source)
    dedup_key = controller_dedup_key(source)
    # A plain read that spares re-snapshotting every user while a run is in
    # flight; the unique index, not this look, is what guarantees one job.
    in_flight = find_in_flight(conn, dedup_key)
    if in_flight is not None:
        return _in_flight(conn, in_flight)
    snapshot_id = uuid.uuid4()
    with conn.transaction() as tx:
        users = conn.execute(SNAPSHOT_USERS, {"snapshot_id": snapshot_id}).rowcount
        if users == 0:
            return TriggerResult("no_users")
        result = enqueue(
            conn,
            NewJob(
                job_type=BACKFILL_JOB_TYPE,
                payload=controller_payload(source, snapshot_id, users, max_rate),
                dedup_key=dedup_key,
                priority=CONTROLLER_PRIORITY,
                max_retries=20,
            ),
        )
        if not result.inserted:
            raise psycopg.Rollback(tx)  # drop our snapshot; the run in flight has its own
        conn.execute(
            CREATE_RUN,
            {
                "job_id": result.job_id,
                "source": source,
                "snapshot_id": snapshot_id,
                "users_total": users,
                "max_rate": max_rate,
            },
        )
    if not result.inserted:
        return _in_flight(conn, result.job_id)
    return TriggerResult("enqueued", result.job_id, users)


def _in_flight(conn: DbConnection, job_id: int) -> TriggerResult:
    """The run already in flight, with its snapshot's size."""
    row = conn.execute(RUN_USERS, {"job_id": job_id}).fetchone()
    return TriggerResult("in_flight", job_id, int(row[0]) if row else 0)
