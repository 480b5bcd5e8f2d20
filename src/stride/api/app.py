"""The ASGI application: `create_app(settings)`, and the factory uvicorn's workers call."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import cache

from fastapi import FastAPI
from fastapi.responses import HTMLResponse

from stride import __version__
from stride.api import service
from stride.api.auth import Authenticator, TokenCache
from stride.api.config import ApiSettings
from stride.api.dashboard.routes import install as install_dashboard
from stride.api.docs import render_docs
from stride.api.errors import install_error_handlers
from stride.api.limits import RateLimiter
from stride.api.metrics import RequestMetrics
from stride.api.routes import admin, events, probes, projections
from stride.api.waiting import NotificationHub

log = logging.getLogger("stride.api")

DESCRIPTION = (
    "Append training events and read the projections stride derives from them. "
    "Every /v1 route takes `Authorization: Bearer <token>` (`stride tokens issue`); "
    "a token reads and writes only its own user's data; /v1/admin needs an operator token."
)


def create_app(settings: ApiSettings) -> FastAPI:
    """The app for one server process; its pools and LISTEN connection open in the lifespan."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = service.Database(
            settings.database_url,
            pool_size=settings.pool_size,
            write_pool_size=settings.write_pool_size,
        )
        await db.open()
        cache = TokenCache()
        hub = NotificationHub(db, cache.clear)
        await hub.start()
        app.state.db = db
        app.state.hub = hub
        app.state.authenticator = Authenticator(db, cache, lambda: hub.listening)
        try:
            yield
        finally:
            await hub.stop()
            await db.close()

    app = FastAPI(
        title="stride",
        version=__version__,
        description=DESCRIPTION,
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.limiter = RateLimiter(settings.rate_limit, settings.rate_burst)
    install_error_handlers(app)
    app.add_middleware(RequestMetrics)
    for module in (events, projections, admin, probes):
        app.include_router(module.router)
    install_dashboard(app)

    @cache
    def docs_page() -> str:
        return render_docs(app.openapi())

    @app.get("/docs", include_in_schema=False, response_class=HTMLResponse)
    async def docs() -> HTMLResponse:
        return HTMLResponse(docs_page())

    return app


def create_app_from_env() -> FastAPI:
    """What `stride serve` runs in each worker process: settings from STRIDE_API_*."""
    return create_app(ApiSettings.from_env())
