"""Benchmark: the objective foundation backfill, trigger to 100% coverage.

    python bench/backfill.py --users 10000 --users 100000 [--workers 2] [--runs N]

For each N: a scratch database on the server is seeded with the deterministic
demo population (reused between runs when it already holds exactly that seed),
real `stride worker` processes are started, the backfill is triggered, and
while it runs an organic probe appends events one at a time and times how long
each takes to reach both projections. Reported: seconds to full coverage,
users/s, jobs/s, peak worker RSS, worker and PostgreSQL CPU (every local
postgres process, and the benchmark database's own backends), organic p50/p99
latency, and what the server did meanwhile (checkpoints, buffers written by
backends, autovacuum/autoanalyze runs on the benchmark database) — the usual
suspects when one run is much slower than the others. With `--runs N` each run
is printed and then the median of every figure, with each run's time to full
coverage as a ratio of that median.

`--watch` adds an operator watching the run the way `stride backfill status
--wait` does (polling its progress until it drains), which costs the database
the run is using.

`--db-tag TAG` gives the scratch database a name of its own (cloned from the
untagged one when that exists): for A/B runs of two branches whose migrations
differ, so that one branch's indexes never slow down or speed up the other's.
"""

from __future__ import annotations

import argparse
import json
import os
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
    clone_database,
    create_database,
    database_cpu_seconds,
    database_exists,
    median,
    percentile,
    postgres_cpu_by_pid,
    postgres_cpu_seconds,
    sample_user_ids,
    server_activity,
    with_dbname,
    worker_fleet,
)
from stride.backfill.reports import run_progress, wait_until_drained
from stride.backfill.trigger import trigger_backfill
from stride.demo.population import seed_population
from stride.domain.events import OBJECTIVE_EVENT_TYPES
from stride.storage.migrations import migrate


def prepared_database(server: str, users: int, seed: int, reuse: bool, tag: str = "") -> str:
    """A database holding the seeded population (and no queue or projection state)."""
    base = f"stride_bench_backfill_{users}_{seed}"
    name = f"{base}_{tag}" if tag else base
    url = with_dbname(server, name)
    if tag and reuse and not database_exists(server, name) and database_exists(server, base):
        clone_database(server, base, name)
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


# Waiting for the run to finish must not load the server it measures. Counting
# the run's open jobs (or even an EXISTS over them) walks the index entries of
# every job version already finished — nothing vacuums them mid-run — and at
# 100k users took a median 53 ms per poll, 55 s of the run's 159 s of statement
# time (auto_explain, every statement logged). So the wait has three phases,
# each a lookup by key:
#   1. the controller's checkpoint row, until the fan-out is done;
#   2. the in-flight dedup keys of the snapshot's last user (the partial unique
#      index background_jobs_dedup_in_flight), whose jobs were enqueued last and
#      are claimed last;
#   3. then the full check, which is cheap enough to run a few times at the end.
FANOUT_DONE = """
SELECT fanout_done_at IS NOT NULL FROM backfill_runs WHERE job_id = %(job_id)s
"""

LAST_USER_IN_FLIGHT = """
SELECT EXISTS (
    SELECT FROM background_jobs
    WHERE dedup_key = ANY(
        SELECT 'projection.update:' || r.source || ':' || s.user_id::text || ':' || t.event_type
        FROM backfill_runs r
        JOIN backfill_snapshot_users s
          ON s.snapshot_id = r.snapshot_id AND s.position = r.users_total
        CROSS JOIN unnest(%(event_types)s::text[]) AS t(event_type)
        WHERE r.job_id = %(job_id)s
    )
      AND dedup_key IS NOT NULL AND status IN ('pending', 'processing')
)
"""

ANY_OPEN_JOB = """
SELECT EXISTS (
    SELECT FROM background_jobs
    WHERE job_type IN ('inference.objective_backfill', 'projection.update')
      AND payload ->> 'source' = %(source)s
      AND status IN ('pending', 'processing')
)
"""


def wait_for_run(conn: psycopg.Connection[Any], job_id: int, source: str) -> None:
    """Return once no job of the run is pending or processing (polled every 0.1 s)."""
    params = {"job_id": job_id, "source": source, "event_types": list(OBJECTIVE_EVENT_TYPES)}
    for statement, finished in (
        (FANOUT_DONE, (True,)),
        (LAST_USER_IN_FLIGHT, (False,)),
        (ANY_OPEN_JOB, (False,)),
    ):
        # Unprepared: a generic plan made while background_jobs was empty by its
        # statistics would scan the whole table on every poll.
        while conn.execute(statement, params, prepare=False).fetchone() != finished:
            time.sleep(0.1)


def watch(url: str, source: str, polls: list[float]) -> None:
    """What `stride backfill status --wait` does while the run goes on: poll its progress."""
    with psycopg.connect(url, autocommit=True) as conn:
        wait_until_drained(conn, source, on_progress=lambda _: polls.append(time.monotonic()))


def run_once(
    url: str, users: int, workers: int, worker_args: list[str], watched: bool = False
) -> dict[str, Any]:
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
        backends_cpu_before = postgres_cpu_by_pid()
        activity_before = server_activity(url)
        started = time.perf_counter()
        polls: list[float] = []
        watcher = threading.Thread(target=watch, args=(url, source, polls), daemon=True)
        with psycopg.connect(url, autocommit=True) as conn:
            trigger = trigger_backfill(conn, source)
            probe_thread.start()
            if watched:
                watcher.start()
            assert trigger.job_id is not None
            # Cheap lookups while running; the full coverage check once at the end.
            wait_for_run(conn, trigger.job_id, source)
            elapsed = time.perf_counter() - started
            postgres_cpu = postgres_cpu_seconds() - postgres_cpu_before
            database_cpu = database_cpu_seconds(url, backends_cpu_before)
            activity_after = server_activity(url)
            time.sleep(0.3)  # one more RSS/CPU sample of the workers
            worker_cpu = sum(fleet.cpu_seconds.values()) - worker_cpu_before
            progress = run_progress(conn, source)
            assert progress is not None
        probe.stop()
        probe_thread.join(timeout=35)
        if watched:
            watcher.join(timeout=60)
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
        "postgres_cpu_this_database_s": round(database_cpu, 1),
        # Flat cost per user: these should not grow with the population.
        "worker_cpu_ms_per_user": round(worker_cpu * 1000 / users, 3),
        "postgres_cpu_ms_per_user": round(database_cpu * 1000 / users, 3),
        "organic_samples": len(probe.samples),
        "organic_timeouts": probe.timeouts,
        "organic_p50_ms": round(median(probe.samples) * 1000, 1),
        "organic_p99_ms": round(percentile(probe.samples, 99) * 1000, 1),
        "complete": progress.complete,
        "watcher_polls": len(polls),
        "load_average_1m": round(os.getloadavg()[0], 2),
        **{
            f"server_{key}": activity_after[key] - activity_before[key]
            for key in sorted(activity_after)
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, action="append", help="population size (repeatable)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--server", default=DEFAULT_SERVER, help="admin URL of the server")
    parser.add_argument("--no-reuse", action="store_true", help="always reseed")
    parser.add_argument("--worker-arg", action="append", default=[], help="extra worker flag")
    parser.add_argument("--runs", type=int, default=1, help="runs per population size")
    parser.add_argument("--db-tag", default="", help="suffix of the scratch database's name")
    parser.add_argument(
        "--watch", action="store_true", help="an operator watches: `backfill status --wait`"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = []
    for users in args.users or [10_000]:
        print(f"backfill benchmark: {users:,} users, {args.workers} workers", flush=True)
        runs = []
        for run in range(1, args.runs + 1):
            # Every run starts from the same state: no jobs, projections or snapshots.
            url = prepared_database(
                args.server, users, args.seed, reuse=not args.no_reuse, tag=args.db_tag
            )
            result = run_once(url, users, args.workers, args.worker_arg, args.watch)
            runs.append(result)
            results.append(result)
            if not args.json:
                print(f"  run {run} of {args.runs}", flush=True)
                for key, value in result.items():
                    print(f"    {key:30} {value}", flush=True)
        if args.runs > 1 and not args.json:
            print_summary(runs)
    if args.json:
        print(json.dumps(results, indent=2))


def print_summary(runs: list[dict[str, Any]]) -> None:
    """The median of every numeric figure, and each run's time as a ratio of the median."""
    print(f"  median of {len(runs)} runs", flush=True)
    for key, value in runs[0].items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            print(f"    {key:30} {round(median([r[key] for r in runs]), 2)}")
    seconds = [r["seconds_to_full_coverage"] for r in runs]
    middle = median(seconds)
    ratios = " ".join(f"{s / middle:.2f}" for s in seconds)
    print(f"  seconds to full coverage, run by run: {' '.join(str(s) for s in seconds)}")
    print(f"  as a ratio of their median {middle:.2f}: {ratios}")
    print(f"  all within 20% of the median: {all(abs(s / middle - 1) <= 0.2 for s in seconds)}")


if __name__ == "__main__":
    main()
