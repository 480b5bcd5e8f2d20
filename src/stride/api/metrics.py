"""Prometheus metrics of the HTTP API: request durations by route template and status.

With `--workers N` the worker processes write to a shared directory
($PROMETHEUS_MULTIPROC_DIR, set by `stride serve`) and /metrics aggregates
them, so any worker answers for all.
"""

from __future__ import annotations

import os
import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_DURATION = Histogram(
    "stride_http_request_duration_seconds",
    "Time from receiving a request to sending its last byte, by route template and status.",
    ["method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
READ_YOUR_WRITE_WAITING = Gauge(
    "stride_http_read_your_write_waiting",
    "Requests waiting for an event's projections (after_event), in this process.",
    multiprocess_mode="livesum",
)
UNMATCHED_ROUTE = "<unmatched>"


class RequestMetrics:
    """ASGI middleware timing every HTTP request under its route template (not its URL)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def timed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or UNMATCHED_ROUTE
            REQUEST_DURATION.labels(scope["method"], template, str(status)).observe(
                time.perf_counter() - started
            )


def exposition() -> tuple[bytes, str]:
    """The metrics text and its content type, across worker processes when there are several."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
