"""GET /v1/projections…: the token's user's projections, with ETags and read-your-write."""

from __future__ import annotations

import hashlib
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Header, Path, Query, Request, Response
from pydantic import BaseModel

from stride.api import service
from stride.api.auth import Principal, User
from stride.api.config import ApiSettings, parse_duration
from stride.api.errors import ApiError, FieldError, error_responses, invalid
from stride.api.metrics import READ_YOUR_WRITE_WAITING
from stride.api.models import ProjectionList, ProjectionOut, ProjectionPending, WhoAmI
from stride.api.routing import ApiRoute
from stride.api.state import Db, database_of, hub_of, settings_of
from stride.api.waiting import NotificationHub

router = APIRouter(prefix="/v1", route_class=ApiRoute, tags=["projections"])

NAME_PATTERN = r"^[a-z][a-z0-9_.-]{0,99}$"
CACHE_CONTROL = "private, no-cache"
ProjectionType = Annotated[str, Path(pattern=NAME_PATTERN, description="e.g. objective_state")]
ProjectionKey = Annotated[str, Path(pattern=NAME_PATTERN, description="e.g. active")]
IfNoneMatch = Annotated[str | None, Header(description="An ETag from an earlier answer.")]


def projection_etag(stored: service.StoredProjection) -> str:
    """Changes with every write of the row: its revision and write time."""
    return f'"{stored.version}.{stored.updated_at.timestamp():.6f}"'


def list_etag(stored: list[service.StoredProjection]) -> str:
    digest = hashlib.blake2b(digest_size=12)
    for p in stored:
        digest.update(f"{p.projection_type}\0{p.key}\0{projection_etag(p)}\n".encode())
    return f'"{digest.hexdigest()}"'


def matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 weak comparison against an If-None-Match list (or `*`)."""
    if if_none_match is None:
        return False
    wanted = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return "*" in wanted or etag in wanted


def _json(body: BaseModel, headers: dict[str, str], status: int = 200) -> Response:
    return Response(body.model_dump_json(), status, headers, media_type="application/json")


def _not_modified(etag: str) -> Response:
    return Response(status_code=304, headers={"ETag": etag, "Cache-Control": CACHE_CONTROL})


def _not_found(projection_type: str, key: str) -> ApiError:
    return ApiError(404, "not_found", f"no projection {projection_type}/{key} for this user")


def _wait_seconds(timeout: str | None, settings: ApiSettings) -> float:
    if timeout is None:
        return settings.default_wait_seconds
    try:
        seconds = parse_duration(timeout)
    except ValueError as exc:
        raise invalid("timeout", str(exc)) from None
    if seconds > settings.max_wait_seconds:
        raise invalid("timeout", f"at most {settings.max_wait_seconds:g}s")
    return seconds


@router.get(
    "/me", response_model=WhoAmI, summary="The token's user", responses=error_responses(401, 429)
)
async def who_am_i(principal: User) -> WhoAmI:
    return WhoAmI(
        user_id=principal.user_id,
        token_id=principal.token_id,
        operator=principal.operator,
        expires_at=principal.expires_at,
    )


@router.get(
    "/projections",
    response_model=ProjectionList,
    summary="All of the user's projections",
    responses={
        304: {"description": "Not modified (If-None-Match)"},
        **error_responses(401, 422, 429, 503),
    },
)
async def list_projections(
    principal: User,
    db: Db,
    response: Response,
    projection_type: Annotated[
        str | None, Query(alias="type", pattern=NAME_PATTERN, description="Only this type.")
    ] = None,
    if_none_match: IfNoneMatch = None,
) -> ProjectionList | Response:
    stored = await service.read_projections(db, principal.user_id, projection_type)
    etag = list_etag(stored)
    if matches(if_none_match, etag):
        return _not_modified(etag)
    response.headers["ETag"] = etag
    response.headers["Cache-Control"] = CACHE_CONTROL
    return ProjectionList(projections=[ProjectionOut.of(p) for p in stored])


@router.get(
    "/projections/{projection_type}/{key}",
    response_model=ProjectionOut,
    summary="One projection; with after_event, once it covers that event",
    responses={
        202: {
            "model": ProjectionPending,
            "description": "after_event: the wait ran out before the projection covered the "
            "event; what is stored now",
        },
        304: {"description": "Not modified (If-None-Match)"},
        **error_responses(401, 404, 422, 429, 503),
    },
)
async def get_projection(
    projection_type: ProjectionType,
    key: ProjectionKey,
    principal: User,
    request: Request,
    after_event: Annotated[
        UUID | None,
        Query(
            description="An event id this user appended: answer once the projection covers it "
            "(its projection.update job completed), waiting up to `timeout`."
        ),
    ] = None,
    timeout: Annotated[
        str | None,
        Query(
            pattern=r"^\d+(\.\d+)?(ms|s)?$",
            description="How long to wait for after_event, e.g. 2s or 500ms (default 2s).",
        ),
    ] = None,
    if_none_match: IfNoneMatch = None,
) -> ProjectionOut | Response:
    """The user's projection with its revision, `updated_at` and `last_event_id`.

    `ETag`/`If-None-Match` answer 304 when unchanged. With `after_event`, the answer
    waits (on the server's one LISTEN connection, no polling) until the event's
    projection.update job has completed; if `timeout` passes first, 202 with what is
    stored now. Another user's event id answers 404."""
    db = database_of(request)
    if after_event is not None:
        seconds = _wait_seconds(timeout, settings_of(request))
        pending = await _await_event(
            hub_of(request), principal, after_event, seconds, projection_type, key, db
        )
        if pending is not None:
            return pending
    stored = await service.read_projection(db, principal.user_id, projection_type, key)
    if stored is None:
        raise _not_found(projection_type, key)
    etag = projection_etag(stored)
    if matches(if_none_match, etag):
        return _not_modified(etag)
    # Serialised here, not by FastAPI: the model is the one the route declares.
    return _json(ProjectionOut.of(stored), {"ETag": etag, "Cache-Control": CACHE_CONTROL})


async def _await_event(
    hub: NotificationHub,
    principal: Principal,
    event_id: UUID,
    seconds: float,
    projection_type: str,
    key: str,
    db: service.Database,
) -> Response | None:
    """None once the event is covered; else the 202 answer."""
    with READ_YOUR_WRITE_WAITING.track_inprogress():
        coverage = await hub.wait_for(principal.user_id, event_id, seconds)
    if coverage is None:
        raise ApiError(
            404,
            "not_found",
            f"no event {event_id} for this user",
            errors=[FieldError(field="after_event", message="no such event for this user")],
        )
    if coverage == "covered":
        return None
    stored = await service.read_projection(db, principal.user_id, projection_type, key)
    body = ProjectionPending(
        event_id=event_id,
        job_status=coverage,
        projection=ProjectionOut.of(stored) if stored else None,
    )
    return _json(body, {"Cache-Control": "no-store"}, 202)
