"""/v1/admin/…: the operator's backfill and queue controls (operator tokens only)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from stride.api import service
from stride.api.auth import Operator
from stride.api.errors import ApiError, error_responses
from stride.api.models import (
    BackfillCancelOut,
    BackfillRunOut,
    BackfillStatusOut,
    BackfillTriggerIn,
    BackfillTriggerOut,
    DeadJobOut,
    DriftOut,
    QueueStatusOut,
    ReportOut,
    RetryDeadIn,
    RetryDeadOut,
    VerifyIn,
    VerifyOut,
)
from stride.api.routing import ApiRoute
from stride.api.state import Db

router = APIRouter(prefix="/v1/admin", route_class=ApiRoute, tags=["operator"])

OPERATOR_ERRORS = error_responses(401, 403, 422, 429, 503)
Source = Annotated[
    str,
    Path(
        max_length=200,
        pattern=r"^[^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f][^\x00-\x1f\x7f]*$",
        description="The backfill's source label (URL-encoded; may contain /).",
    ),
]


@router.post(
    "/backfills",
    response_model=BackfillTriggerOut,
    status_code=202,
    summary="Trigger the objective foundation backfill",
    responses={
        200: {"model": BackfillTriggerOut, "description": "Already in flight, or no users"},
        **error_responses(400, 415),
        **OPERATOR_ERRORS,
    },
)
async def trigger_backfill(
    body: BackfillTriggerIn, _: Operator, db: Db, response: Response
) -> BackfillTriggerOut:
    """Snapshot every user and enqueue one controller job for `source` (as `stride backfill
    objective-foundation`); a source already in flight answers 200 with its job."""
    try:
        result = await service.trigger(db, body.source, body.max_rate)
    except service.BackfillInputError as exc:
        raise ApiError(422, "validation_failed", str(exc)) from None
    if result.outcome != "enqueued":
        response.status_code = 200
    return BackfillTriggerOut(
        outcome=result.outcome, job_id=result.job_id, users=result.users, message=result.describe()
    )


@router.get(
    "/backfills/{source:path}",
    response_model=BackfillStatusOut,
    summary="The runbook's four reports and the run's progress",
    responses={**error_responses(404), **OPERATOR_ERRORS},
)
async def backfill_status(source: Source, _: Operator, db: Db) -> BackfillStatusOut:
    """What `stride backfill status --json` prints; 404 when `source` was never triggered."""
    status = await service.backfill_status(db, source)
    if status.run is None:
        raise ApiError(404, "not_found", f"no backfill was ever triggered for source {source!r}")
    return BackfillStatusOut(
        source=source,
        reports={r.name: ReportOut.model_validate(r.as_dict()) for r in status.reports},
        run=BackfillRunOut.model_validate(status.run.as_dict()),
        users_on_older_model_versions=status.users_on_older_model_versions,
    )


@router.delete(
    "/backfills/{source:path}",
    response_model=BackfillCancelOut,
    summary="Cancel a backfill",
    responses=OPERATOR_ERRORS,
)
async def cancel_backfill(source: Source, _: Operator, db: Db) -> BackfillCancelOut:
    """Cancel the source's pending fan-out jobs and stop its controller after the current
    chunk (as `stride backfill cancel`); organic jobs are untouched."""
    result = await service.cancel(db, source)
    return BackfillCancelOut.model_validate(result.as_dict())


@router.post(
    "/verifications",
    response_model=VerifyOut,
    summary="Recompute a random sample of users and report drift",
    responses={**error_responses(400, 415), **OPERATOR_ERRORS},
)
async def verify(body: VerifyIn, _: Operator, db: Db) -> VerifyOut:
    """As `stride backfill verify --sample N`: every stored projection of the sampled users
    against a fresh recomputation."""
    result = await service.verify(db, body.sample)
    return VerifyOut(
        users_checked=result.users_checked,
        projections_checked=result.projections_checked,
        drifts=[DriftOut.model_validate(d.as_dict()) for d in result.drifts],
    )


@router.get(
    "/queue", response_model=QueueStatusOut, summary="Queue counts", responses=OPERATOR_ERRORS
)
async def queue_status(_: Operator, db: Db) -> QueueStatusOut:
    """As `stride jobs status --json`: jobs by type and status, the oldest due pending job's
    age, expired leases, the latest dead jobs."""
    status = await service.queue(db)
    document = status.to_json()
    return QueueStatusOut(
        counts=document["counts"],
        oldest_due_pending_seconds=status.oldest_due_pending_seconds,
        expired_leases=status.expired_leases,
        latest_dead=[
            DeadJobOut.model_validate(d, from_attributes=True) for d in status.latest_dead
        ],
    )


@router.post(
    "/queue/retry-dead",
    response_model=RetryDeadOut,
    summary="Retry dead jobs",
    responses={**error_responses(400, 415), **OPERATOR_ERRORS},
)
async def retry_dead(body: RetryDeadIn, _: Operator, db: Db) -> RetryDeadOut:
    """As `stride jobs retry --dead`: dead jobs (of one type, if given) back to pending with
    a fresh set of attempts."""
    return RetryDeadOut(retried=await service.retry_dead_jobs(db, body.job_type))
