"""Wiring: the one module that joins the pure core to PostgreSQL and the queue.

`build_registry()` is what `stride worker` runs: projection.update jobs go to
the coalescing projection handler, inference.objective_backfill jobs to the
fan-out controller (one chunk per run of the job).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from uuid import UUID

from stride.backfill import BACKFILL_JOB_TYPE, PROJECTION_UPDATE_JOB_TYPE
from stride.backfill.fanout import RunNotFoundError, fan_out_step
from stride.domain.events import RETRACTION_EVENT_TYPE
from stride.projection_refresh import refresh_users, resolve_retracted_types
from stride.queue.handlers import (
    BatchContext,
    HandlerRegistry,
    JobCancelledError,
    JobContext,
    PermanentJobError,
)
from stride.queue.jobs import ClaimedJob
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
) -> Callable[[BatchContext], None]:
    """A batch handler that folds each user once, however many of their jobs the batch holds.

    A backfill fans out ~8 jobs per user; grouping them by user turns that into
    one event load and one write per projection per user, and every job of the
    batch completes in the same transaction as the writes.
    """

    def handle(ctx: BatchContext) -> None:
        triggers: dict[UUID, set[str]] = defaultdict(set)
        retractions: dict[UUID, UUID] = {}
        for job in ctx.jobs:
            user_id = _payload_uuid(job, "user_id")
            event_type = _payload_event_type(job)
            if event_type == RETRACTION_EVENT_TYPE:
                retractions[_payload_uuid(job, "event_id")] = user_id
                triggers.setdefault(user_id, set())
            else:
                triggers[user_id].add(event_type)
        # A retraction re-runs the handlers of the type it retracts.
        for retraction_id, retracted_type in resolve_retracted_types(ctx.conn, retractions).items():
            triggers[retractions[retraction_id]].add(retracted_type)
        known = existing_user_ids(ctx.conn, list(triggers))
        for unknown in set(triggers) - known:
            log.warning("projection.update for unknown user %s: nothing to project", unknown)
        summary = refresh_users(
            ctx.conn, {u: t for u, t in triggers.items() if u in known}, clock()
        )
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


def build_registry() -> HandlerRegistry:
    """The product's job handlers."""
    registry = HandlerRegistry()
    registry.register_batch(
        PROJECTION_UPDATE_JOB_TYPE, make_projection_update_handler(), serialize_by_user=True
    )
    registry.register(BACKFILL_JOB_TYPE, handle_objective_backfill)
    return registry
