"""`stride worker`: run job handlers until stopped (SIGTERM/SIGINT), or drain once with --once."""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer

from stride.cli.common import DatabaseUrlOption, database, database_errors, fail, usage_error
from stride.queue.metrics import serve_metrics
from stride.queue.worker import HandlerRegistry, Worker
from stride.storage.connection import connect

logger = logging.getLogger("stride.cli.worker")

SCHEMA_CHECK_SQL = "SELECT 1 FROM background_jobs LIMIT 0"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def product_registry() -> HandlerRegistry:
    """The product's handlers from `stride.app`, or none when that wiring is not installed."""
    try:
        from stride.app import build_registry
    except ModuleNotFoundError as exc:
        if exc.name != "stride.app":
            raise
        logger.warning("stride.app is not installed: no handlers are registered")
        return HandlerRegistry()
    return build_registry()


def _positive_int(flag: str, value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        usage_error(f"{flag}: expected a whole number, got {value!r}")
    if number < 1:
        usage_error(f"{flag}: must be at least 1, got {number}")
    return number


def _positive_float(flag: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        usage_error(f"{flag}: expected a number of seconds, got {value!r}")
    if not number > 0 or number == float("inf"):
        usage_error(f"{flag}: must be a positive number of seconds, got {value}")
    return number


def _job_types(value: str | None) -> list[str] | None:
    if value is None:
        return None
    names = [name.strip() for name in value.split(",") if name.strip()]
    if not names:
        usage_error("--job-types: expected comma-separated job types, e.g. projection.update")
    return names


def _port(value: str | None) -> int | None:
    if value is None:
        return None
    port = _positive_int("--metrics-port", value)
    if port > 65535:
        usage_error(f"--metrics-port: must be at most 65535, got {port}")
    return port


def worker_command(
    concurrency: Annotated[
        str, typer.Option("--concurrency", metavar="N", help="Jobs (or batches) run in parallel.")
    ] = "1",
    batch_size: Annotated[
        str,
        typer.Option(
            "--batch-size",
            metavar="N",
            help="Jobs claimed per round trip (a backfill's jobs for one user coalesce "
            "within a batch; organic jobs still run ahead as their own small batch).",
        ),
    ] = "500",
    job_types: Annotated[
        str | None,
        typer.Option("--job-types", metavar="A,B", help="Only claim these job types."),
    ] = None,
    once: Annotated[bool, typer.Option("--once", help="Drain what is due now, then exit.")] = False,
    metrics_port: Annotated[
        str | None,
        typer.Option("--metrics-port", metavar="PORT", help="Serve Prometheus /metrics here."),
    ] = None,
    lease_seconds: Annotated[
        str,
        typer.Option(
            "--lease-seconds",
            metavar="S",
            help="A job whose worker is silent this long is reclaimed by another worker.",
        ),
    ] = "30",
    database_url: DatabaseUrlOption = None,
) -> None:
    """Run job handlers: claim due jobs, run them, complete them (SIGTERM stops cleanly)."""
    parallel = _positive_int("--concurrency", concurrency)
    batch = _positive_int("--batch-size", batch_size)
    lease = _positive_float("--lease-seconds", lease_seconds)
    types = _job_types(job_types)
    port = _port(metrics_port)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, stream=sys.stderr)
    with database_errors():
        target = database(database_url)
        with connect(target.url, autocommit=True) as conn:
            conn.execute(SCHEMA_CHECK_SQL)
        registry = product_registry()
        if port is not None:
            try:
                serve_metrics(port)
            except OSError as exc:
                fail(f"--metrics-port: cannot listen on port {port}: {exc.strerror or exc}")
        worker = Worker(
            target.url,
            registry,
            concurrency=parallel,
            batch_size=batch,
            lease_seconds=lease,
            job_types=types,
        )
        worker.run(once=once)
