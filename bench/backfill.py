"""Benchmark: the objective foundation backfill, trigger to 100% coverage.

    python bench/backfill.py --users 10000 --users 100000 [--workers 2]

For each N: a scratch database on the server is seeded with the deterministic
demo population (reused between runs when it already holds exactly that seed),
real `stride worker` processes are started, the backfill is triggered, and
while it runs an organic probe appends events one at a time and times how long
each takes to reach both projections. Reported: seconds to full coverage,
users/s, jobs/s, peak worker RSS, and organic p50/p99 latency.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (
    DEFAULT_SERVER,
    LatencyProbe,
    create_database,
    database_exists,
    median,
    percentile,
    postgres_cpu_seconds,
    sample_user_ids,
    with_dbname,
    worker_fleet,
)
from stride.backfill.reports import run_progress
from stride.backfill.trigger import trigger_backfill
from stride.demo.population import seed_population
from stride.storage.migrations import migrate


def prepared_database(server: str, users: int, seed: int, reuse: bool) -> str:
    """A database holding the seeded population (and no queue or projection state)."""
    name = f"stride_bench_backfill_{users}_{seed}"
    url = with_dbname(server, name)
    if reuse and database_exists(server, name):
        with psycopg.connect(url, autocommit=True) as conn:
            count = conn.execute("SELECT count(*) FROM users").fetchone()
            if count == (users,):
                # A database seeded by an older stride gets the migrations since.
                migrate(conn)
                # Forget earlier runs: jobs, projections and snapshots, not history.
                conn.execute(
                    "TRUNCATE background_jobs, projections, backfill_runs, backfill_snapshot_users"
                )
                conn.execute("VACUUM ANALYZE")
                return url
    url = create_database(server, name)
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        summary = seed_population(conn, users=users, seed=seed)
        conn.execute("VACUUM ANALYZE")
    print(
        f"  seeded {users:,} users / {summary.events:,} events "
        f"in {time.perf_counter() - started:.1f}s",
        flush=True,
    )
    return url


# Jobs of this run (controller and fan-out) not yet finished.
OPEN_JOBS = """
SELECT count(*) FROM background_jobs
WHERE job_type IN ('inference.objective_backfill', 'projection.update')
  AND payload ->> 'source' = %(source)s
  AND status IN ('pending', 'processing')
"""


def run_once(url: str, users: int, workers: int, worker_args: list[str]) -> dict[str, Any]:
    with psycopg.connect(url, autocommit=True) as conn:
        events = conn.execute("SELECT count(*) FROM events").fetchone()
    probe_users = sample_user_ids(url, 200)
    source = f"bench.{time.time_ns()}"
    with worker_fleet(url, workers, worker_args) as fleet:
        time.sleep(1.0)  # let the workers connect and LISTEN before the clock starts
        probe = LatencyProbe(url, probe_users, interval=0.05)
        probe_thread = threading.Thread(target=probe.run, daemon=True)
        worker_cpu_before = sum(fleet.cpu_seconds.values())
        postgres_cpu_before = postgres_cpu_seconds()
        started = time.perf_counter()
        with psycopg.connect(url, autocommit=True) as conn:
            trigger = trigger_backfill(conn, source)
            probe_thread.start()
            # A cheap indexed count while running; the full coverage check once at the end.
            while conn.execute(OPEN_JOBS, {"source": source}).fetchone() != (0,):
                time.sleep(0.1)
            elapsed = time.perf_counter() - started
            postgres_cpu = postgres_cpu_seconds() - postgres_cpu_before
            time.sleep(0.3)  # one more RSS/CPU sample of the workers
            worker_cpu = sum(fleet.cpu_seconds.values()) - worker_cpu_before
            progress = run_progress(conn, source)
            assert progress is not None
        probe.stop()
        probe_thread.join(timeout=35)
        peak_rss = max(fleet.peak_rss.values(), default=0)
    jobs = sum(progress.job_counts.values())
    return {
        "users": users,
        "events": events[0] if events else 0,
        "workers": workers,
        "controller_job": trigger.job_id,
        "seconds_to_full_coverage": round(elapsed, 2),
        "users_per_s": round(users / elapsed, 1),
        "fanout_jobs": jobs,
        "jobs_per_s": round(jobs / elapsed, 1),
        "peak_worker_rss_mb": round(peak_rss / 2**20, 1),
        "worker_cpu_s": round(worker_cpu, 1),
        "postgres_cpu_s": round(postgres_cpu, 1),
        "organic_samples": len(probe.samples),
        "organic_timeouts": probe.timeouts,
        "organic_p50_ms": round(median(probe.samples) * 1000, 1),
        "organic_p99_ms": round(percentile(probe.samples, 99) * 1000, 1),
        "complete": progress.complete,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, action="append", help="population size (repeatable)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--server", default=DEFAULT_SERVER, help="admin URL of the server")
    parser.add_argument("--no-reuse", action="store_true", help="always reseed")
    parser.add_argument("--worker-arg", action="append", default=[], help="extra worker flag")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = []
    for users in args.users or [10_000]:
        print(f"backfill benchmark: {users:,} users, {args.workers} workers", flush=True)
        url = prepared_database(args.server, users, args.seed, reuse=not args.no_reuse)
        result = run_once(url, users, args.workers, args.worker_arg)
        results.append(result)
        if not args.json:
            for key, value in result.items():
                print(f"  {key:26} {value}")
    if args.json:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
