"""POST /v1/events: one event or a batch, through the CLI's append path."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Body, Response

from stride.api import service
from stride.api.auth import User
from stride.api.errors import ApiError, FieldError, error_responses, invalid
from stride.api.models import AppendedBatch, AppendedEvent, EventBatchIn, EventIn, EventsBody
from stride.api.routing import ApiRoute
from stride.api.state import Db, Settings

router = APIRouter(prefix="/v1", route_class=ApiRoute, tags=["events"])

# The store names the idempotency key by where it keeps it; the API has it top-level.
_STORE_FIELDS = {"metadata.idempotency_key": "idempotency_key"}


def _new_event(
    event: EventIn, principal: User, received: datetime, index: int | None
) -> service.NewEvent:
    metadata = dict(event.metadata or {})
    if event.idempotency_key is not None:
        stored_key = metadata.get("idempotency_key", event.idempotency_key)
        if stored_key != event.idempotency_key:
            where = (
                "metadata.idempotency_key"
                if index is None
                else f"events[{index}].metadata.idempotency_key"
            )
            raise invalid(where, "differs from idempotency_key; give the key once", index=index)
        metadata["idempotency_key"] = event.idempotency_key
    return service.NewEvent(
        user_id=principal.user_id,
        event_type=event.event_type,
        timestamp=event.timestamp or received,
        data=event.data,
        metadata=metadata,
    )


def _store_errors(exc: service.EventBatchError, batch: bool) -> list[FieldError]:
    found = []
    for error in exc.errors:
        name = _STORE_FIELDS.get(error.field, error.field)
        index = error.index if batch else None
        found.append(
            FieldError(
                field=f"events[{error.index}].{name}" if batch else name,
                index=index,
                message=error.message,
            )
        )
    return found


@router.post(
    "/events",
    status_code=201,
    response_model=AppendedEvent | AppendedBatch,
    summary="Append one event or a batch for the token's user",
    responses={
        200: {
            "model": AppendedEvent | AppendedBatch,
            "description": "Every event was already stored (idempotency keys): nothing created",
        },
        **error_responses(400, 401, 413, 415, 422, 429, 503),
    },
)
async def post_events(
    body: Annotated[EventsBody, Body()],
    principal: User,
    db: Db,
    settings: Settings,
    response: Response,
) -> AppendedEvent | AppendedBatch:
    """Store events through the same path as `stride events append`: each enqueues a
    projection.update job. A batch (`{"events": [...]}`) is stored all together or not at
    all; a 422 names every bad field with its index in the batch."""
    batch = isinstance(body, EventBatchIn)
    events = body.events if isinstance(body, EventBatchIn) else [body]
    if len(events) > settings.max_batch:
        raise invalid(
            "events", f"at most {settings.max_batch:,} events per request, got {len(events):,}"
        )
    received = datetime.now(UTC)
    new_events = [
        _new_event(event, principal, received, index if batch else None)
        for index, event in enumerate(events)
    ]
    try:
        results = await service.append(db, new_events)
    except service.EventBatchError as exc:
        errors = _store_errors(exc, batch)
        raise ApiError(
            422, "validation_failed", f"{errors[0].field}: {errors[0].message}", errors=errors
        ) from None
    if all(result.duplicate for result in results):
        response.status_code = 200
    appended = [AppendedEvent(id=r.id, duplicate=r.duplicate) for r in results]
    return AppendedBatch(events=appended) if batch else appended[0]
