"""A worker process with test handlers, for the process-level queue tests.

Every run of a `record` job writes a `harness_runs` row on a side connection
when it starts and stamps it when it ends (so overlapping runs of one job are
visible even when their transaction rolls back), and inserts a
`harness_effects` row in the job's own transaction (so committed effects can be
counted: exactly one per completed job).

Payload knobs: `sleep` (seconds, every attempt), `sleep_on_attempt` (only on
that attempt), `fail` (raise on every attempt).

`db_error` jobs fail inside the database without losing the session: payload
`error` is `unique` (a unique violation) or `index_row` (a value too large for
a btree index row, SQLSTATE 54000, an OperationalError).

`--product` runs the product's handlers (stride.app) instead, and
`--freeze-source S` makes this process stop itself with SIGSTOP, once, inside
the transaction of backfill `S` that `--freeze-in` names — the test's frozen
worker, deterministic and only here, never in stride:
- `controller`: holding the run's checkpoint row (`backfill_runs ... FOR
  UPDATE`, the lock the fan-out takes for each chunk) on a connection opened
  from the job's session URL, with the job's own transaction open;
- `projection`: after the projection handler wrote a batch of the backfill's
  jobs, holding those users' locks and uncommitted projection rows.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable

import psycopg

from stride.queue.handlers import BatchContext, HandlerRegistry, JobContext
from stride.queue.jobs import RetryPolicy
from stride.queue.worker import Worker

CONTROLLER = "inference.objective_backfill"
PROJECTION = "projection.update"

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
CREATE TABLE IF NOT EXISTS harness_unique (k text PRIMARY KEY);
CREATE TABLE IF NOT EXISTS harness_wide (v text);
CREATE INDEX IF NOT EXISTS harness_wide_v ON harness_wide (v);
"""
INSERT_UNIQUE = "INSERT INTO harness_unique (k) VALUES ('taken')"
# Random text does not compress, so 10 kB can never fit a btree index row.
INSERT_WIDE = (
    "INSERT INTO harness_wide (v) "
    "SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 320)"
)
LOCK_RUN_ROW = "SELECT 1 FROM backfill_runs WHERE job_id = %s FOR UPDATE"
TOUCH = "SELECT 1"

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

    def db_error(ctx: JobContext) -> None:
        if ctx.job.payload.get("error") == "index_row":
            ctx.conn.execute(INSERT_WIDE)
        else:
            ctx.conn.execute(INSERT_UNIQUE)  # committed by nobody: the second insert fails
            ctx.conn.execute(INSERT_UNIQUE)

    registry = HandlerRegistry()
    registry.register("record", record)
    registry.register_batch("record_batch", record_batch)
    registry.register("db_error", db_error)
    return registry


def freeze_here(what: str) -> None:
    """Stop this process like a VM pause would, until the test sends SIGCONT."""
    print(f"freezing pid={os.getpid()} in={what}", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGSTOP)
    print(f"resumed pid={os.getpid()} in={what}", file=sys.stderr, flush=True)


def product_registry(freeze_source: str | None, freeze_in: str) -> HandlerRegistry:
    """stride.app's handlers, one of them wrapped to freeze once inside backfill `freeze_source`."""
    from stride.app import build_registry

    product = build_registry()
    frozen = threading.Event()
    registry = HandlerRegistry()
    for job_type in product.job_types:
        registration = product.get(job_type)
        assert registration is not None
        handler = registration.handler
        if freeze_source is not None and job_type == CONTROLLER and freeze_in == "controller":
            handler = _freezing_controller(handler, freeze_source, frozen)
        if freeze_source is not None and job_type == PROJECTION and freeze_in == "projection":
            handler = _freezing_projection(handler, freeze_source, frozen)
        if registration.batch:
            registry.register_batch(
                job_type, handler, serialize_by_user=registration.serialize_by_user
            )
        else:
            registry.register(job_type, handler, serialize_by_user=registration.serialize_by_user)
    return registry


def _freezing_controller(
    handler: Callable[[JobContext], None], source: str, frozen: threading.Event
) -> Callable[[JobContext], None]:
    def handle(ctx: JobContext) -> None:
        if ctx.job.payload.get("source") != source or frozen.is_set():
            handler(ctx)
            return
        frozen.set()
        # ctx.database_url carries the worker's session limits, as the real
        # controller's connection does.
        with psycopg.connect(ctx.database_url, autocommit=True) as side, side.transaction():
            side.execute(LOCK_RUN_ROW, (ctx.job.id,))
            freeze_here("controller")
            side.execute(TOUCH)  # the session is gone by now: this raises

    return handle


def _freezing_projection(
    handler: Callable[[BatchContext], None], source: str, frozen: threading.Event
) -> Callable[[BatchContext], None]:
    def handle(ctx: BatchContext) -> None:
        handler(ctx)
        if not frozen.is_set() and any(j.payload.get("source") == source for j in ctx.jobs):
            frozen.set()
            freeze_here(f"projection batch of {len(ctx.jobs)} jobs")

    return handle


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--lease-seconds", type=float, default=30)
    parser.add_argument("--poll-interval", type=float, default=0.5)
    parser.add_argument("--retry-base", type=float, default=0.05)
    parser.add_argument("--once", action="store_true")
    parser.add_argument("--product", action="store_true")
    parser.add_argument("--freeze-source")
    parser.add_argument("--freeze-in", choices=["controller", "projection"], default="projection")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s"
    )
    create_schema(args.database_url)
    if args.product:
        registry = product_registry(args.freeze_source, args.freeze_in)
    else:
        registry = build_registry(args.database_url)
    worker = Worker(
        args.database_url,
        registry,
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
