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
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final
from uuid import UUID

from stride.backfill.fanout import RunNotFoundError, fan_out_step
from stride.domain.job_types import BACKFILL_JOB_TYPE, PROJECTION_UPDATE_JOB_TYPE
from stride.projections.registry import READ_MODELS, ReadModel
from stride.queue import metrics as queue_metrics
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
from stride.readmodels.revisions import REVISIONS_FIELD, revisions_lacking, running_revisions
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


# A worker running older logic than a job asks for (a backfill triggered by
# newer code, during a rolling deploy) hands the job back for this long, without
# spending an attempt; a newer worker claims it in the meantime.
OUTDATED_JOB_DELAY = 5.0


def _lacking_revisions(job: ClaimedJob, running: dict[str, int]) -> dict[str, int]:
    try:
        return revisions_lacking(job.payload.get(REVISIONS_FIELD), running)
    except ValueError as exc:
        raise JobPayloadError(f"job {job.id}: payload.{exc}") from None


def make_projection_update_handler(
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    read_models: Collection[ReadModel] = READ_MODELS,
    outdated_delay: float = OUTDATED_JOB_DELAY,
) -> BatchHandler:
    """A batch handler that folds each user once, however many of their jobs the batch holds.

    A backfill fans out one job per objective event type a user has (plus one for a
    user without a profile.updated): about three per user, 2.9 on average over the
    demo population (seed 1, 20,000 users), at most nine. Grouping them by user
    turns that into one event load and one write per projection per user, and every
    job of the batch completes in the same transaction as the writes.

    `read_models` is the logic this worker runs. Jobs that ask for newer revisions
    than it has are deferred for a newer worker; jobs whose every write a higher
    stored revision refused complete with outcome `superseded` (counted, logged
    once per batch).
    """
    running = running_revisions(read_models)

    def handle(ctx: BatchContext) -> None:
        runnable: list[ClaimedJob] = []
        outdated: dict[str, int] = {}
        for job in ctx.jobs:
            lacking = _lacking_revisions(job, running)
            if lacking:
                outdated.update(lacking)
                ctx.defer(job, outdated_delay)
            else:
                runnable.append(job)
        if outdated:
            queue_metrics.JOBS_OUTDATED.labels(PROJECTION_UPDATE_JOB_TYPE).inc(
                len(ctx.jobs) - len(runnable)
            )
            log.info(
                "outdated jobs=%d of %d: they ask for revisions %s, this worker runs %s; "
                "deferred %.1fs for a newer worker",
                len(ctx.jobs) - len(runnable),
                len(ctx.jobs),
                outdated,
                running,
                outdated_delay,
            )
        if not runnable:
            return
        changes = [
            EventChange(
                _payload_uuid(job, "user_id"),
                _payload_uuid(job, "event_id"),
                _payload_event_type(job),
            )
            for job in runnable
        ]
        summary = refresh_for_events(ctx.conn, changes, clock(), read_models)
        log.debug(
            "projected %d users (%d projections, %d events) for %d jobs",
            summary.users,
            summary.projections_written,
            summary.events_folded,
            len(runnable),
        )
        if summary.superseded_users:
            superseded = sum(1 for c in changes if c.user_id in summary.superseded_users)
            queue_metrics.JOBS_SUPERSEDED.labels(PROJECTION_UPDATE_JOB_TYPE).inc(superseded)
            log.info(
                "superseded jobs=%d of %d users=%d rows_refused=%d: a higher revision is "
                "stored than this worker's %s; the jobs complete without writing",
                superseded,
                len(runnable),
                len(summary.superseded_users),
                summary.projections_superseded,
                running,
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


def product_jobs(
    read_models: Collection[ReadModel] = READ_MODELS, outdated_delay: float = OUTDATED_JOB_DELAY
) -> dict[str, BatchJob | SingleJob]:
    """Every job type the product runs: its handler and how the queue runs it.

    `read_models` replaces the registry's logic (tests run an older and a newer
    revision side by side, as a rolling deploy does).
    """
    return {
        # Organic (enqueued by the events trigger, migration 0002) and backfill fan-out.
        PROJECTION_UPDATE_JOB_TYPE: BatchJob(
            make_projection_update_handler(read_models=read_models, outdated_delay=outdated_delay),
            serialize_by_user=True,
        ),
        # One controller per backfill run (stride.backfill.trigger), run one chunk at a time.
        BACKFILL_JOB_TYPE: SingleJob(handle_objective_backfill),
    }


# Every job type the product runs, with the registry's read models.
JOBS: Final[dict[str, BatchJob | SingleJob]] = product_jobs()


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


def build_registry(
    read_models: Collection[ReadModel] = READ_MODELS, outdated_delay: float = OUTDATED_JOB_DELAY
) -> HandlerRegistry:
    """The queue's registry of the product's job handlers: `JOBS`, or `product_jobs()` of
    other read models (tests run an older and a newer revision side by side)."""
    registry = HandlerRegistry()
    jobs = (
        JOBS
        if read_models is READ_MODELS and outdated_delay == OUTDATED_JOB_DELAY
        else product_jobs(read_models, outdated_delay)
    )
    for job_type, job in jobs.items():
        if isinstance(job, BatchJob):
            registry.register_batch(job_type, job.handler, serialize_by_user=job.serialize_by_user)
        else:
            registry.register(job_type, job.handler, serialize_by_user=job.serialize_by_user)
    return registry
