"""Benchmark: organic traffic, append commit -> both objective projections written.

    python bench/organic.py [--users 2000] [--events 300] [--workers 1]

A scratch database gets a seeded population, one (or more) real `stride
worker` processes run, and events are appended one at a time for random users;
each append is timed until both projections of that user carry it as their
last event. Also reports pure fold throughput (events/s folded) on the same
machine, so the two numbers can be read together.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.folds import run_once, synthetic_user
from bench.harness import (
    DEFAULT_SERVER,
    LatencyProbe,
    create_database,
    drop_database,
    median,
    percentile,
    sample_user_ids,
    worker_fleet,
)
from stride.demo.population import seed_population


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=2000, help="seeded population size")
    parser.add_argument("--events", type=int, default=300, help="organic events to time")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--server", default=DEFAULT_SERVER)
    parser.add_argument("--fold-users", type=int, default=2000)
    args = parser.parse_args()

    population = [synthetic_user(i) for i in range(args.fold_users)]
    events = sum(len(u) for u in population)
    fold_seconds = statistics.median(run_once(population) for _ in range(5))
    print(
        f"pure folds: {events / fold_seconds:,.0f} events/s, "
        f"{args.fold_users / fold_seconds:,.0f} users/s (median of 5)"
    )

    name = "stride_bench_organic"
    url = create_database(args.server, name)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            seed_population(conn, users=args.users, seed=1)
            conn.execute("VACUUM ANALYZE")
        users = sample_user_ids(url, 500)
        with worker_fleet(url, args.workers):
            time.sleep(1.0)  # workers connect and LISTEN
            probe = LatencyProbe(url, users, interval=0.0)
            probe.run(count=args.events)
        print(
            f"organic latency over {len(probe.samples)} appends ({probe.timeouts} timed out), "
            f"{args.workers} worker(s): p50={median(probe.samples) * 1000:.1f} ms "
            f"p99={percentile(probe.samples, 99) * 1000:.1f} ms "
            f"max={max(probe.samples, default=float('nan')) * 1000:.1f} ms"
        )
    finally:
        drop_database(args.server, name)


if __name__ == "__main__":
    main()
