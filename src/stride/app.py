"""Wiring: the one module that joins the pure core to PostgreSQL and the queue.

`build_registry()` is what `stride worker` runs: projection.update jobs go to
the coalescing projection handler, inference.objective_backfill jobs to the
fan-out controller. `refresh_projections_now` is the operator's repair
(`stride projections refresh`): the same refresh under the same user locks.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

from stride.backfill import BACKFILL_JOB_TYPE, PROJECTION_UPDATE_JOB_TYPE
from stride.backfill.fanout import run_fan_out
from stride.domain.events import RETRACTION_EVENT_TYPE
from stride.projection_refresh import RefreshSummary, refresh_users, resolve_retracted_types
from stride.projections.registry import HANDLERS
from stride.queue.handlers import BatchContext, HandlerRegistry, JobContext, PermanentJobError
from stride.queue.jobs import ClaimedJob
from stride.queue.user_locks import lock_users
from stride.storage.connection import DbConnection, connect
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
    """Fan out the run's snapshot; chunks commit on a connection of their own."""
    with connect(ctx.database_url, autocommit=True, application_name="stride-backfill") as conn:
        summary = run_fan_out(conn, ctx.job.id, heartbeat=ctx.heartbeat)
    log.info(
        "backfill %s fan-out finished: %d users, %d jobs%s",
        ctx.job.id,
        summary.users,
        summary.jobs_enqueued,
        " (cancelled)" if summary.cancelled else "",
    )


# Every event type some projection handler reads: naming them all re-runs every handler.
EVERY_TRIGGER_TYPE = frozenset(t for handler in HANDLERS for t in handler.event_types)


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
    """The product's job handlers."""
    registry = HandlerRegistry()
    registry.register_batch(
        PROJECTION_UPDATE_JOB_TYPE, make_projection_update_handler(), serialize_by_user=True
    )
    registry.register(BACKFILL_JOB_TYPE, handle_objective_backfill)
    return registry
