"""Prometheus metrics of the worker, in the process-wide default registry."""

from __future__ import annotations

from prometheus_client import Counter, Histogram, start_http_server

JOBS_CLAIMED = Counter("stride_jobs_claimed", "Jobs leased by this worker.", ["job_type"])
JOBS_COMPLETED = Counter("stride_jobs_completed", "Jobs completed.", ["job_type"])
JOBS_RETRIED = Counter("stride_jobs_retried", "Failed attempts rescheduled.", ["job_type"])
JOBS_DEAD = Counter("stride_jobs_dead", "Jobs given up on (dead).", ["job_type"])
JOBS_FAILED = Counter(
    "stride_jobs_failed", "Jobs whose handler declared them hopeless (failed).", ["job_type"]
)
JOBS_DEFERRED = Counter(
    "stride_jobs_deferred", "Jobs put back without spending an attempt.", ["job_type"]
)
JOBS_LOST = Counter(
    "stride_jobs_lease_lost", "Jobs whose lease was taken over before completion.", ["job_type"]
)
JOBS_SUPERSEDED = Counter(
    "stride_jobs_superseded",
    "Jobs completed without writing: a higher revision of every projection they computed "
    "was already stored (counted among completed jobs too).",
    ["job_type"],
)
JOBS_OUTDATED = Counter(
    "stride_jobs_outdated",
    "Jobs handed on (deferred) because they ask for newer read model revisions than this "
    "worker runs (a backfill of newer code during a rolling deploy).",
    ["job_type"],
)
HANDLER_DURATION = Histogram(
    "stride_job_handler_duration_seconds",
    "Wall time of one handler call (one job, or one batch for batch handlers).",
    ["job_type"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)


def serve_metrics(port: int, addr: str = "0.0.0.0") -> None:
    """Serve /metrics in Prometheus text format from a daemon thread."""
    start_http_server(port, addr=addr)
