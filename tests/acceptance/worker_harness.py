"""A worker process with test handlers, for the process-level queue tests.

Every run of a `record` job writes a `harness_runs` row on a side connection
when it starts and stamps it when it ends (so overlapping runs of one job are
visible even when their transaction rolls back), and inserts a
`harness_effects` row in the job's own transaction (so committed effects can be
counted: exactly one per completed job).

Payload knobs: `sleep` (seconds, every attempt), `sleep_on_attempt` (only on
that attempt), `fail` (raise on every attempt).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

import psycopg

from stride.queue.handlers import BatchContext, HandlerRegistry, JobContext
from stride.queue.jobs import RetryPolicy
from stride.queue.worker import Worker

SCHEMA = """
CREATE TABLE IF NOT EXISTS harness_runs (
    run_id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id      bigint NOT NULL,
    attempt     integer NOT NULL,
    pid         integer NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at timestamptz
);
CREATE TABLE IF NOT EXISTS harness_effects (
    job_id  bigint NOT NULL,
    attempt integer NOT NULL,
    pid     integer NOT NULL
);
"""

START_RUN = "INSERT INTO harness_runs (job_id, attempt, pid) VALUES (%s, %s, %s) RETURNING run_id"
END_RUN = "UPDATE harness_runs SET finished_at = clock_timestamp() WHERE run_id = %s"
RECORD_EFFECT = "INSERT INTO harness_effects (job_id, attempt, pid) VALUES (%s, %s, %s)"
RECORD_EFFECTS = (
    "INSERT INTO harness_effects (job_id, attempt, pid) "
    "SELECT unnest(%s::bigint[]), unnest(%s::int[]), %s"
)


def create_schema(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        # Serialises harness processes starting together: CREATE TABLE IF NOT
        # EXISTS is not safe against a concurrent creator.
        conn.execute("SELECT pg_advisory_xact_lock(4242)")
        conn.execute(SCHEMA)


def build_registry(database_url: str) -> HandlerRegistry:
    side = psycopg.connect(database_url, autocommit=True)
    pid = os.getpid()

    def record(ctx: JobContext) -> None:
        job = ctx.job
        run_id = side.execute(START_RUN, (job.id, job.attempt, pid)).fetchone()[0]  # type: ignore[index]
        pause = float(job.payload.get("sleep", 0))
        if job.payload.get("sleep_on_attempt") == job.attempt:
            pause += float(job.payload.get("pause", 30))
        time.sleep(pause)
        side.execute(END_RUN, (run_id,))
        if job.payload.get("fail"):
            raise ValueError(f"poisoned payload in job {job.id}")
        ctx.conn.execute(RECORD_EFFECT, (job.id, job.attempt, pid))

    def record_batch(ctx: BatchContext) -> None:
        ctx.conn.execute(
            RECORD_EFFECTS, ([j.id for j in ctx.jobs], [j.attempt for j in ctx.jobs], pid)
        )

    registry = HandlerRegistry()
    registry.register("record", record)
    registry.register_batch("record_batch", record_batch)
    return registry


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--lease-seconds", type=float, default=30)
    parser.add_argument("--poll-interval", type=float, default=0.5)
    parser.add_argument("--retry-base", type=float, default=0.05)
    parser.add_argument("--once", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s"
    )
    create_schema(args.database_url)
    worker = Worker(
        args.database_url,
        build_registry(args.database_url),
        concurrency=args.concurrency,
        batch_size=args.batch_size,
        lease_seconds=args.lease_seconds,
        poll_interval=args.poll_interval,
        retry_policy=RetryPolicy(base_seconds=args.retry_base, max_seconds=1),
    )
    print(f"ready pid={os.getpid()}", file=sys.stderr, flush=True)
    worker.run(once=args.once)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
