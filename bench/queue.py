"""Queue benchmark: stride against procrastinate and pgqueuer on the same PostgreSQL.

For each library and run, a fresh database is created (and dropped afterwards)
on the server named by --database-url, the library's schema is installed, and
three figures are taken:

- enqueue single: jobs/s enqueued one per transaction on one connection;
- enqueue bulk: jobs/s enqueued by the library's batch API, 1000 per call;
- worker: no-op jobs/s drained by one worker process (a child process that
  runs the library's own worker in drain mode; the clock runs from just before
  the worker starts until it returns, and the parent checks every job finished).

Medians of --runs runs are printed with the ratio stride / peer.

    .venv/bin/python bench/queue.py --database-url postgresql://postgres@127.0.0.1:5432/test

(`python -m bench.queue` works too.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

if __name__ == "queue":
    # Running any script in bench/ as a file puts bench/ first on sys.path, so the
    # standard library's `queue` (which psycopg, logging.handlers, ... import) would
    # resolve to this file. Hand the importer the real module: whatever module
    # object sys.modules holds when this file finishes is what `import queue` returns.
    from pathlib import Path

    _bench_dir = Path(__file__).resolve().parent
    _saved_path = sys.path[:]
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _bench_dir]
    del sys.modules["queue"]
    import queue as _stdlib_queue

    sys.path[:] = _saved_path
    sys.modules["queue"] = _stdlib_queue

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

BULK_CHUNK = 1000
STRIDE_VARIANTS = {
    # name: (handler kind, batch size)
    "stride-batch": ("batch", 1000),
    "stride-single": ("single", 100),
}
PGQUEUER_BATCH = 1000  # its fastest of 10, 100, 1000 here
PROCRASTINATE_CONCURRENCY = 10


@dataclass
class RunFigures:
    enqueue_single: float
    enqueue_bulk: float
    worker: float


def with_dbname(url: str, dbname: str) -> str:
    params = conninfo_to_dict(url)
    params["dbname"] = dbname
    return make_conninfo("", **params)


@contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    """A new empty database on the server, dropped (with its connections) afterwards."""
    name = f"stride_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield with_dbname(admin_url, name)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


# --- stride ------------------------------------------------------------------------------------


def stride_install(url: str) -> None:
    from stride.storage.migrations import migrate

    with psycopg.connect(url, autocommit=True) as conn:
        migrate(conn)


def stride_enqueue_single(url: str, count: int) -> float:
    from stride.queue.jobs import NewJob, enqueue

    with psycopg.connect(url, autocommit=True) as conn:
        return timed(lambda: [enqueue(conn, NewJob("noop", {"n": n})) for n in range(count)])


def stride_enqueue_bulk(url: str, count: int) -> float:
    from stride.queue.jobs import NewJob, enqueue_many

    def run() -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            for start in range(0, count, BULK_CHUNK):
                chunk = range(start, min(start + BULK_CHUNK, count))
                enqueue_many(conn, [NewJob("noop", {"n": n}) for n in chunk])

    return timed(run)


def stride_worker(url: str, variant: str) -> float:
    from stride.queue.handlers import HandlerRegistry
    from stride.queue.worker import Worker

    kind, batch_size = STRIDE_VARIANTS[variant]
    registry = HandlerRegistry()
    if kind == "batch":
        registry.register_batch("noop", lambda ctx: None)
    else:
        registry.register("noop", lambda ctx: None)
    worker = Worker(url, registry, batch_size=batch_size, lease_seconds=60)
    return timed(lambda: worker.run(once=True))


def stride_finished(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM background_jobs WHERE status = 'completed'")
    return int(row.fetchone()[0])  # type: ignore[index]


# --- procrastinate -----------------------------------------------------------------------------


def procrastinate_app(url: str) -> Any:
    import procrastinate

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=url))

    @app.task(name="noop")
    async def noop(n: int) -> None:
        return None

    return app


def procrastinate_install(url: str) -> None:
    app = procrastinate_app(url)
    with app.open():
        app.schema_manager.apply_schema()


def procrastinate_enqueue_single(url: str, count: int) -> float:
    app = procrastinate_app(url)

    async def run() -> float:
        async with app.open_async():
            task = app.tasks["noop"]
            started = time.perf_counter()
            for n in range(count):
                await task.defer_async(n=n)
            return time.perf_counter() - started

    return asyncio.run(run())


def procrastinate_enqueue_bulk(url: str, count: int) -> float:
    app = procrastinate_app(url)

    async def run() -> float:
        async with app.open_async():
            task = app.tasks["noop"]
            started = time.perf_counter()
            for start in range(0, count, BULK_CHUNK):
                chunk = range(start, min(start + BULK_CHUNK, count))
                await task.batch_defer_async(*({"n": n} for n in chunk))
            return time.perf_counter() - started

    return asyncio.run(run())


def procrastinate_worker(url: str, _variant: str) -> float:
    app = procrastinate_app(url)

    async def run() -> float:
        async with app.open_async():
            started = time.perf_counter()
            await app.run_worker_async(
                wait=False,
                concurrency=PROCRASTINATE_CONCURRENCY,
                install_signal_handlers=False,
            )
            return time.perf_counter() - started

    return asyncio.run(run())


def procrastinate_finished(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'")
    return int(row.fetchone()[0])  # type: ignore[index]


# --- pgqueuer ----------------------------------------------------------------------------------


async def _pgqueuer_queries(url: str) -> tuple[Any, Any]:
    from pgqueuer.adapters.drivers.psycopg import PsycopgDriver
    from pgqueuer.queries import Queries

    conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
    return conn, Queries(PsycopgDriver(conn))


def pgqueuer_install(url: str) -> None:
    async def run() -> None:
        conn, queries = await _pgqueuer_queries(url)
        async with conn:
            await queries.install()

    asyncio.run(run())


def pgqueuer_enqueue_single(url: str, count: int) -> float:
    async def run() -> float:
        conn, queries = await _pgqueuer_queries(url)
        async with conn:
            started = time.perf_counter()
            for n in range(count):
                await queries.enqueue("noop", json.dumps({"n": n}).encode(), 0)
            return time.perf_counter() - started

    return asyncio.run(run())


def pgqueuer_enqueue_bulk(url: str, count: int) -> float:
    async def run() -> float:
        conn, queries = await _pgqueuer_queries(url)
        async with conn:
            started = time.perf_counter()
            for start in range(0, count, BULK_CHUNK):
                chunk = range(start, min(start + BULK_CHUNK, count))
                await queries.enqueue(
                    ["noop"] * len(chunk),
                    [json.dumps({"n": n}).encode() for n in chunk],
                    [0] * len(chunk),
                )
            return time.perf_counter() - started

    return asyncio.run(run())


def pgqueuer_worker(url: str, _variant: str) -> float:
    from pgqueuer import QueueManager
    from pgqueuer.types import QueueExecutionMode

    async def run() -> float:
        conn, queries = await _pgqueuer_queries(url)
        async with conn:
            manager = QueueManager(queries)

            @manager.entrypoint("noop")
            async def noop(job: Any) -> None:
                return None

            started = time.perf_counter()
            await manager.run(batch_size=PGQUEUER_BATCH, mode=QueueExecutionMode.drain)
            return time.perf_counter() - started

    return asyncio.run(run())


def pgqueuer_finished(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM pgqueuer_log WHERE status = 'successful'")
    return int(row.fetchone()[0])  # type: ignore[index]


@dataclass(frozen=True)
class Library:
    install: Callable[[str], None]
    enqueue_single: Callable[[str, int], float]
    enqueue_bulk: Callable[[str, int], float]
    worker: Callable[[str, str], float]
    finished: Callable[[psycopg.Connection[Any]], int]


STRIDE = Library(
    stride_install, stride_enqueue_single, stride_enqueue_bulk, stride_worker, stride_finished
)
LIBRARIES = {
    "stride-batch": STRIDE,
    "stride-single": STRIDE,
    "procrastinate": Library(
        procrastinate_install,
        procrastinate_enqueue_single,
        procrastinate_enqueue_bulk,
        procrastinate_worker,
        procrastinate_finished,
    ),
    "pgqueuer": Library(
        pgqueuer_install,
        pgqueuer_enqueue_single,
        pgqueuer_enqueue_bulk,
        pgqueuer_worker,
        pgqueuer_finished,
    ),
}


def worker_child(name: str, url: str) -> None:
    """Entry point of the worker child process: drain, then print the seconds it took."""
    import logging

    logging.disable(logging.INFO)  # one log line per job would measure logging, not the queue
    print(json.dumps({"seconds": LIBRARIES[name].worker(url, name)}), flush=True)


def run_once(name: str, admin_url: str, single: int, jobs: int) -> RunFigures:
    library = LIBRARIES[name]
    with fresh_database(admin_url) as url:
        library.install(url)
        single_s = library.enqueue_single(url, single)
        with psycopg.connect(url, autocommit=True) as conn:
            # Measure bulk enqueue on an empty queue, then drain only those jobs.
            _clear_queue(name, conn)
            bulk_s = library.enqueue_bulk(url, jobs)
            conn.execute("VACUUM ANALYZE")
            done = subprocess.run(
                [sys.executable, __file__, "--worker-child", name, "--database-url", url],
                capture_output=True,
                text=True,
                check=True,
                timeout=1800,
            )
            worker_s = float(json.loads(done.stdout.strip().splitlines()[-1])["seconds"])
            finished = library.finished(conn)
            if finished != jobs:
                raise RuntimeError(f"{name}: {finished} of {jobs} jobs finished")
    return RunFigures(rate(single, single_s), rate(jobs, bulk_s), rate(jobs, worker_s))


CLEAR_SQL = {
    "stride-batch": "TRUNCATE background_jobs",
    "stride-single": "TRUNCATE background_jobs",
    "procrastinate": "TRUNCATE procrastinate_jobs CASCADE",
    "pgqueuer": "TRUNCATE pgqueuer, pgqueuer_log",
}


def _clear_queue(name: str, conn: psycopg.Connection[Any]) -> None:
    conn.execute(CLEAR_SQL[name])  # type: ignore[arg-type]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=20000, help="bulk-enqueued and drained")
    parser.add_argument("--single", type=int, default=2000, help="enqueued one at a time")
    parser.add_argument("--libraries", default=",".join(LIBRARIES))
    parser.add_argument("--worker-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker_child:
        worker_child(args.worker_child, args.database_url)
        return 0

    names = [n.strip() for n in args.libraries.split(",") if n.strip()]
    runs: dict[str, list[RunFigures]] = {name: [] for name in names}
    # Round-robin over the libraries, so background noise on the machine is
    # spread over all of them rather than landing on one.
    for index in range(args.runs):
        for name in names:
            figures = run_once(name, args.database_url, args.single, args.jobs)
            runs[name].append(figures)
            print(
                f"{name:14} run {index + 1}: enqueue single {figures.enqueue_single:9.0f}/s  "
                f"bulk {figures.enqueue_bulk:9.0f}/s  worker {figures.worker:9.0f}/s",
                file=sys.stderr,
                flush=True,
            )
    medians = {
        name: RunFigures(
            statistics.median(r.enqueue_single for r in results),
            statistics.median(r.enqueue_bulk for r in results),
            statistics.median(r.worker for r in results),
        )
        for name, results in runs.items()
    }

    print(
        f"\nmedians of {args.runs} runs, {args.jobs} jobs drained, {args.single} single enqueues "
        f"(stride-batch: batch handler, batch {STRIDE_VARIANTS['stride-batch'][1]}; "
        "stride-single: single-job handler, first attempts sharing transactions, "
        f"batch {STRIDE_VARIANTS['stride-single'][1]}; "
        f"pgqueuer batch {PGQUEUER_BATCH}; procrastinate concurrency {PROCRASTINATE_CONCURRENCY})"
    )
    print(f"{'library':14} {'enqueue 1/s':>12} {'enqueue bulk/s':>15} {'worker jobs/s':>14}")
    for name, m in medians.items():
        print(f"{name:14} {m.enqueue_single:12.0f} {m.enqueue_bulk:15.0f} {m.worker:14.0f}")
    for mine in [n for n in medians if n.startswith("stride")]:
        for peer in [n for n in medians if not n.startswith("stride")]:
            a, b = medians[mine], medians[peer]
            print(
                f"ratio {mine} / {peer}: enqueue 1 {a.enqueue_single / b.enqueue_single:.2f}  "
                f"bulk {a.enqueue_bulk / b.enqueue_bulk:.2f}  worker {a.worker / b.worker:.2f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
