"""The composition root: every job type the product runs, and its handler.

`JOBS` below is the whole list; `build_registry()` hands it to the queue, and is
what `stride worker` runs. The handlers here only translate a job's payload and
call one service: the read models (stride.readmodels) or one step of the
backfill's fan-out (stride.backfill.fanout). `refresh_projections_now` is the
operator's repair (`stride projections refresh`): the read models' refresh
under the queue's per-user locks, as a projection.update job runs it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final
from uuid import UUID

from stride.backfill.fanout import RunNotFoundError, fan_out_step
from stride.domain.job_types import BACKFILL_JOB_TYPE, PROJECTION_UPDATE_JOB_TYPE
from stride.projections.registry import READ_MODELS
from stride.queue.handlers import (
    BatchContext,
    BatchHandler,
    HandlerRegistry,
    JobCancelledError,
    JobContext,
    PermanentJobError,
    SingleHandler,
)
from stride.queue.jobs import ClaimedJob
from stride.queue.user_locks import lock_users
from stride.readmodels.refresh import (
    EventChange,
    RefreshSummary,
    refresh_for_events,
    refresh_users,
)
from stride.storage.connection import DbConnection
from stride.storage.projection_store import existing_user_ids

log = logging.getLogger(__name__)


class JobPayloadError(PermanentJobError, ValueError):
    """A job's payload lacks a field the handler needs: retrying cannot help, the job fails."""


def _payload_uuid(job: ClaimedJob, field: str) -> UUID:
    value = job.payload.get(field)
    try:
        return UUID(str(value))
    except ValueError:
        raise JobPayloadError(f"job {job.id}: payload.{field} is not a UUID: {value!r}") from None


def _payload_event_type(job: ClaimedJob) -> str:
    value = job.payload.get("event_type")
    if not isinstance(value, str) or not value.strip():
        raise JobPayloadError(f"job {job.id}: payload.event_type is missing or blank")
    return value


def make_projection_update_handler(
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> BatchHandler:
    """A batch handler that folds each user once, however many of their jobs the batch holds.

    A backfill fans out one job per objective event type a user has (plus one for a
    user without a profile.updated): about three per user, 2.9 on average over the
    demo population (seed 1, 20,000 users), at most nine. Grouping them by user
    turns that into one event load and one write per projection per user, and every
    job of the batch completes in the same transaction as the writes.
    """

    def handle(ctx: BatchContext) -> None:
        changes = [
            EventChange(
                _payload_uuid(job, "user_id"),
                _payload_uuid(job, "event_id"),
                _payload_event_type(job),
            )
            for job in ctx.jobs
        ]
        summary = refresh_for_events(ctx.conn, changes, clock())
        log.debug(
            "projected %d users (%d projections, %d events) for %d jobs",
            summary.users,
            summary.projections_written,
            summary.events_folded,
            len(ctx.jobs),
        )

    return handle


def handle_objective_backfill(ctx: JobContext) -> None:
    """One step of the run's fan-out; the job defers itself until the next step is due.

    The step commits with the job's deferral (or, after the last chunk, its
    completion), so the controller holds a runner for one chunk at a time.
    """
    try:
        step = fan_out_step(ctx.conn, ctx.job.id)
    except RunNotFoundError as exc:
        raise JobPayloadError(str(exc)) from None
    if step.cancelled:
        raise JobCancelledError(f"backfill run {ctx.job.id} was cancelled by an operator")
    if not step.done:
        ctx.defer(step.next_step_in)


@dataclass(frozen=True, slots=True)
class BatchJob:
    """Claimed many at a time; the handler gets them all in one transaction."""

    handler: BatchHandler
    serialize_by_user: bool = False


@dataclass(frozen=True, slots=True)
class SingleJob:
    """Claimed and run one at a time."""

    handler: SingleHandler
    serialize_by_user: bool = False


# Every job type the product runs: its handler and how the queue runs it.
JOBS: Final[dict[str, BatchJob | SingleJob]] = {
    # Organic (enqueued by the events trigger, migration 0002) and backfill fan-out.
    PROJECTION_UPDATE_JOB_TYPE: BatchJob(make_projection_update_handler(), serialize_by_user=True),
    # One controller per backfill run (stride.backfill.trigger), run one chunk at a time.
    BACKFILL_JOB_TYPE: SingleJob(handle_objective_backfill),
}


# Every event type some read model reads: naming them all re-runs every read model.
EVERY_TRIGGER_TYPE = frozenset(t for model in READ_MODELS for t in model.event_types)


class UnknownUsersError(LookupError):
    """`refresh_projections_now` was given ids of users that do not exist."""

    def __init__(self, user_ids: Sequence[UUID]) -> None:
        super().__init__("no such user: " + ", ".join(str(u) for u in user_ids))
        self.user_ids = list(user_ids)


@dataclass(frozen=True, slots=True)
class RefreshOutcome:
    """What an operator's refresh did: the users recomputed and what was written."""

    user_ids: list[UUID]
    summary: RefreshSummary


def refresh_projections_now(
    conn: DbConnection,
    user_ids: Sequence[UUID],
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> RefreshOutcome:
    """Recompute every projection of `user_ids` now, in one transaction, the way the
    projection.update handler does (refresh_users), holding each user's lock as a
    worker would so the two never interleave writes. Any unknown id: nothing is written.
    """
    wanted = list(dict.fromkeys(user_ids))
    with conn.transaction():
        known = existing_user_ids(conn, wanted)
        unknown = [u for u in wanted if u not in known]
        if unknown:
            raise UnknownUsersError(unknown)
        lock_users(conn, wanted)
        summary = refresh_users(conn, dict.fromkeys(wanted, EVERY_TRIGGER_TYPE), clock())
    return RefreshOutcome(wanted, summary)


def build_registry() -> HandlerRegistry:
    """The queue's registry of the product's job handlers, from `JOBS`."""
    registry = HandlerRegistry()
    for job_type, job in JOBS.items():
        if isinstance(job, BatchJob):
            registry.register_batch(job_type, job.handler, serialize_by_user=job.serialize_by_user)
        else:
            registry.register(job_type, job.handler, serialize_by_user=job.serialize_by_user)
    return registry
