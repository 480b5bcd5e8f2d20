"""Unauthenticated probes: /healthz (process up), /readyz (database and schema), /metrics."""

from __future__ import annotations

import psycopg
from fastapi import APIRouter, Response

from stride.api import service
from stride.api.metrics import exposition
from stride.api.models import HealthOut, ReadyOut
from stride.api.routing import ApiRoute
from stride.api.state import Db

router = APIRouter(route_class=ApiRoute, tags=["probes"])


@router.get("/healthz", response_model=HealthOut, summary="The process is up")
async def healthz() -> HealthOut:
    """Answers without touching the database."""
    return HealthOut(status="ok")


@router.get(
    "/readyz",
    response_model=ReadyOut,
    summary="Ready to serve: database reachable, migrations current",
    responses={503: {"model": ReadyOut, "description": "Not ready; `problems` says why"}},
)
async def readyz(db: Db, response: Response) -> ReadyOut:
    try:
        problems = await service.schema_problems(db)
    except (psycopg.Error, OSError) as exc:
        problems = ["database not reachable: " + " ".join(str(exc).split())]
    if problems:
        response.status_code = 503
        return ReadyOut(status="not_ready", problems=problems)
    return ReadyOut(status="ready", problems=[])


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics() -> Response:
    body, content_type = exposition()
    return Response(body, media_type=content_type)
