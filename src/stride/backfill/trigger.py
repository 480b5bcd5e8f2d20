"""Trigger a backfill: snapshot the users and enqueue one controller job per source."""

from __future__ import annotations

import uuid
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Literal

import psycopg
from psycopg.types.json import Jsonb

from stride.backfill import CONTROLLER_PRIORITY
from stride.domain.events import OBJECTIVE_EVENT_TYPES
from stride.domain.job_types import BACKFILL_JOB_TYPE
from stride.projections.registry import READ_MODELS, ReadModel, outputs_of
from stride.queue.jobs import NewJob, enqueue, find_in_flight
from stride.readmodels.revisions import running_revisions
from stride.storage.connection import DbConnection

SNAPSHOT_USERS = """
INSERT INTO backfill_snapshot_users (snapshot_id, position, user_id)
SELECT %(snapshot_id)s, row_number() OVER (ORDER BY id), id
FROM users
"""

# --only-stale: the users for whom some output of the running code is missing
# or stored at a lower revision (rows of a higher revision, written by newer
# code, are not stale). Two primary-key probes per user, read under the
# statement's snapshot like SNAPSHOT_USERS: no lock beyond the INSERT's own.
SNAPSHOT_STALE_USERS = """
INSERT INTO backfill_snapshot_users (snapshot_id, position, user_id)
SELECT %(snapshot_id)s, row_number() OVER (ORDER BY u.id), u.id
FROM users u
WHERE EXISTS (
    SELECT
    FROM unnest(%(projection_types)s::text[], %(keys)s::text[], %(revisions)s::int[])
         AS wanted(projection_type, key, revision)
    WHERE NOT EXISTS (
        SELECT
        FROM projections p
        WHERE p.user_id = u.id
          AND p.projection_type = wanted.projection_type
          AND p.key = wanted.key
          AND p.revision >= wanted.revision
    )
)
"""

RUN_USERS = "SELECT users_total FROM backfill_runs WHERE job_id = %(job_id)s"

CREATE_RUN = """
INSERT INTO backfill_runs (job_id, source, snapshot_id, users_total, max_rate, revisions)
VALUES (%(job_id)s, %(source)s, %(snapshot_id)s, %(users_total)s, %(max_rate)s, %(revisions)s)
"""


class BackfillInputError(ValueError):
    """A trigger argument is unusable (e.g. a blank source)."""


@dataclass(frozen=True, slots=True)
class TriggerResult:
    outcome: Literal["enqueued", "in_flight", "no_users"]
    job_id: int | None = None
    users: int = 0
    only_stale: bool = False

    def describe(self) -> str:
        if self.outcome == "enqueued":
            stale = " stale" if self.only_stale else ""
            return f"enqueued job {self.job_id} ({self.users:,}{stale} users snapshotted)"
        if self.outcome == "in_flight":
            return f"already in flight ({self.job_id})"
        if self.only_stale:
            return "no stale users found: every user is on the running revisions"
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
    source: str,
    snapshot_id: uuid.UUID,
    users: int,
    max_rate: float | None,
    *,
    only_stale: bool = False,
    revisions: dict[str, int] | None = None,
) -> dict[str, Any]:
    """The controller job's payload, final at enqueue (the snapshot is already taken).

    An --only-stale run's snapshot is not every user: `include_all_users` is false
    and `only_stale` true. `revisions` are those the triggering code runs.
    """
    payload: dict[str, Any] = {
        "source": source,
        "include_all_users": not only_stale,
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
    if only_stale:
        payload["only_stale"] = True
    if revisions is not None:
        payload["revisions"] = revisions
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


def snapshot_users(
    conn: DbConnection,
    snapshot_id: uuid.UUID,
    *,
    only_stale: bool = False,
    read_models: Collection[ReadModel] = READ_MODELS,
) -> int:
    """Snapshot every user, or (`only_stale`) those whose projections of `read_models` are
    missing or on a lower revision; returns how many."""
    if not only_stale:
        return conn.execute(SNAPSHOT_USERS, {"snapshot_id": snapshot_id}).rowcount
    outputs = outputs_of(read_models)
    params = {
        "snapshot_id": snapshot_id,
        "projection_types": [o.projection_type for o in outputs],
        "keys": [o.key for o in outputs],
        "revisions": [o.revision for o in outputs],
    }
    return conn.execute(SNAPSHOT_STALE_USERS, params).rowcount


def trigger_backfill(
    conn: DbConnection,
    source: str,
    *,
    max_rate: float | None = None,
    only_stale: bool = False,
    read_models: Collection[ReadModel] = READ_MODELS,
) -> TriggerResult:
    """Enqueue the controller job unless one for `source` is pending or processing.

    One transaction: snapshot the users (all, or with `only_stale` those not on
    the revisions of `read_models`, the running code's), enqueue the controller
    with its final payload, record the run with those revisions. The dedup
    key's unique index makes two simultaneous triggers yield one job: the
    second one's enqueue waits for the first to commit, finds the key in
    flight, and rolls its own snapshot back.
    """
    validate_source(source)
    dedup_key = controller_dedup_key(source)
    # A plain read that spares re-snapshotting every user while a run is in
    # flight; the unique index, not this look, is what guarantees one job.
    in_flight = find_in_flight(conn, dedup_key)
    if in_flight is not None:
        return _in_flight(conn, in_flight)
    snapshot_id = uuid.uuid4()
    revisions = running_revisions(read_models)
    with conn.transaction() as tx:
        users = snapshot_users(conn, snapshot_id, only_stale=only_stale, read_models=read_models)
        if users == 0:
            return TriggerResult("no_users", only_stale=only_stale)
        result = enqueue(
            conn,
            NewJob(
                job_type=BACKFILL_JOB_TYPE,
                payload=controller_payload(
                    source,
                    snapshot_id,
                    users,
                    max_rate,
                    only_stale=only_stale,
                    revisions=revisions,
                ),
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
                "revisions": Jsonb(revisions),
            },
        )
    if not result.inserted:
        return _in_flight(conn, result.job_id)
    return TriggerResult("enqueued", result.job_id, users, only_stale)


def _in_flight(conn: DbConnection, job_id: int) -> TriggerResult:
    """The run already in flight, with its snapshot's size."""
    row = conn.execute(RUN_USERS, {"job_id": job_id}).fetchone()
    return TriggerResult("in_flight", job_id, int(row[0]) if row else 0)
