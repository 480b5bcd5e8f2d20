"""`stride worker`: run job handlers until stopped (SIGTERM/SIGINT), or drain once with --once."""

from __future__ import annotations

import gc
import logging
import sys
from typing import Annotated

import typer

from stride.cli.common import DatabaseUrlOption, database, database_errors, fail, usage_error
from stride.cli.jobs import parse_duration
from stride.queue.handlers import HandlerRegistry
from stride.queue.metrics import serve_metrics
from stride.queue.worker import Worker
from stride.storage.connection import connect

logger = logging.getLogger("stride.cli.worker")

SCHEMA_CHECK_SQL = "SELECT 1 FROM background_jobs LIMIT 0"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"

# The cyclic garbage collector's thresholds in a worker process. A batch
# allocates tens of thousands of short-lived containers (job payloads, events
# and their data, the documents written) and none of them form cycles, yet with
# the defaults (700, 10, 10) the collector ran dozens of times per batch. The
# objects alive when the worker starts (modules, the registry) are also frozen
# out of every collection.
WORKER_GC_THRESHOLDS = (50_000, 50, 100)


def tune_gc_for_worker() -> None:
    """Collect garbage rarely: for a process that runs batches and nothing else."""
    gc.freeze()
    gc.set_threshold(*WORKER_GC_THRESHOLDS)


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


def _job_types(value: str | None) -> list[str] | None:
    if value is None:
        return None
    names = [name.strip() for name in value.split(",") if name.strip()]
    if not names:
        usage_error("--job-types: expected comma-separated job types, e.g. projection.update")
    return names


def worker_command(
    concurrency: Annotated[
        int,
        typer.Option(
            "--concurrency", metavar="N", min=1, help="Jobs (or batches) run in parallel."
        ),
    ] = 1,
    batch_size: Annotated[
        int,
        typer.Option(
            "--batch-size",
            metavar="N",
            min=1,
            help="Jobs claimed per round trip (a backfill's jobs for one user coalesce "
            "within a batch; organic jobs still run ahead as their own small batch).",
        ),
    ] = 500,
    job_types: Annotated[
        str | None,
        typer.Option(
            "--job-types", metavar="TYPES", help="Only claim these job types (comma-separated)."
        ),
    ] = None,
    once: Annotated[bool, typer.Option("--once", help="Drain what is due now, then exit.")] = False,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port",
            metavar="PORT",
            min=1,
            max=65535,
            help="Serve Prometheus /metrics here.",
        ),
    ] = None,
    lease_seconds: Annotated[
        float,
        typer.Option(
            "--lease-seconds",
            metavar="SECONDS",
            min=0.1,
            max=86400,
            help="A job whose worker is silent this long is reclaimed by another worker.",
        ),
    ] = 30,
    prune_completed_after: Annotated[
        str,
        typer.Option(
            "--prune-completed-after",
            metavar="AGE",
            help="Delete completed jobs finished longer ago than this (e.g. 7d, 12h); "
            "done by whichever worker leads maintenance.",
        ),
    ] = "7d",
    database_url: DatabaseUrlOption = None,
) -> None:
    """Run job handlers: claim due jobs, run them, complete them (SIGTERM stops cleanly)."""
    types = _job_types(job_types)
    retention = parse_duration("--prune-completed-after", prune_completed_after)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, stream=sys.stderr)
    with database_errors():
        target = database(database_url)
        with connect(target.url, autocommit=True) as conn:
            conn.execute(SCHEMA_CHECK_SQL)
        registry = product_registry()
        if metrics_port is not None:
            try:
                serve_metrics(metrics_port)
            except OSError as exc:
                fail(f"--metrics-port: cannot listen on port {metrics_port}: {exc.strerror or exc}")
        worker = Worker(
            target.url,
            registry,
            concurrency=concurrency,
            batch_size=batch_size,
            lease_seconds=lease_seconds,
            job_types=types,
            prune_completed_after=retention,
        )
        tune_gc_for_worker()
        worker.run(once=once)
