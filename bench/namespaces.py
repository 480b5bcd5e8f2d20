"""Workers on separate "hosts": each `stride worker` in a network namespace of its own.

    sudo python bench/namespaces.py [--users 10000] [--workers 2]

Shows that workers are stateless processes that need only a route to
PostgreSQL: each worker runs in its own network namespace (its own interfaces,
addresses and routing table; it cannot reach the host's 127.0.0.1) and UTS
namespace (its own host name), connected to the host by a veth pair, and
reaches PostgreSQL over that link at the host end's address. A backfill of the
seeded population runs through them; the report shows which worker host
finished how many jobs (from `locked_by`, which begins with the host name) and
the runbook's coverage.

Needs root and iproute2, and a PostgreSQL that listens on the host ends of the
links (10.231.N.1) and lets 10.231.0.0/16 in, e.g. for the machine's server:

    ALTER SYSTEM SET listen_addresses = '127.0.0.1,10.231.1.1,10.231.2.1';
    -- pg_hba.conf: host all all 10.231.0.0/16 trust
    -- restart PostgreSQL after this script has created the links (--keep-links)

`--setup-only` creates the namespaces and links and exits (so the server can be
restarted to listen on them), `--teardown` removes them.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.backfill import prepared_database, wait_for_run
from bench.harness import DEFAULT_SERVER
from stride.backfill.reports import run_progress
from stride.backfill.trigger import trigger_backfill
from stride.demo.worker_processes import stop_workers

PREFIX = "stride-w"


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True)


def host_address(n: int) -> str:
    return f"10.231.{n}.1"


def setup(count: int) -> None:
    """Namespace stride-wN with a veth link: 10.231.N.1 on the host, 10.231.N.2 inside."""
    for n in range(1, count + 1):
        ns, host_if, ns_if = f"{PREFIX}{n}", f"{PREFIX}{n}h", f"{PREFIX}{n}n"
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        sh("ip", "link", "set", ns_if, "netns", ns)
        sh("ip", "addr", "add", f"{host_address(n)}/24", "dev", host_if)
        sh("ip", "link", "set", host_if, "up")
        sh("ip", "-n", ns, "addr", "add", f"10.231.{n}.2/24", "dev", ns_if)
        sh("ip", "-n", ns, "link", "set", ns_if, "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")


def teardown(count: int) -> None:
    for n in range(1, count + 1):
        subprocess.run(["ip", "link", "del", f"{PREFIX}{n}h"], stderr=subprocess.DEVNULL)
        subprocess.run(["ip", "netns", "del", f"{PREFIX}{n}"], stderr=subprocess.DEVNULL)


def start_worker(n: int, database_url: str) -> subprocess.Popen[bytes]:
    """A worker in namespace stride-wN, under host name stride-wN, reaching the host end."""
    url = database_url.replace("127.0.0.1", host_address(n))
    command = (
        f"hostname {PREFIX}{n} && exec {sys.executable} -m stride.cli.main worker"
        f" --database-url '{url}'"
    )
    return subprocess.Popen(
        ["ip", "netns", "exec", f"{PREFIX}{n}", "unshare", "--uts", "sh", "-c", command],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def can_reach_loopback_from_namespace(n: int) -> bool:
    """Inside the namespace, the host's 127.0.0.1:5432 must not answer: it is another host."""
    probe = "import socket; socket.create_connection(('127.0.0.1', 5432), timeout=1)"
    result = subprocess.run(
        ["ip", "netns", "exec", f"{PREFIX}{n}", sys.executable, "-c", probe],
        capture_output=True,
    )
    return result.returncode == 0


JOBS_BY_HOST = """
SELECT split_part(locked_by, ':', 1) AS host, count(*)
FROM background_jobs
WHERE job_type = 'projection.update' AND payload ->> 'source' = %(source)s
  AND status = 'completed'
GROUP BY 1 ORDER BY 1
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--server", default=DEFAULT_SERVER)
    parser.add_argument("--setup-only", action="store_true")
    parser.add_argument("--teardown", action="store_true")
    args = parser.parse_args()
    if args.teardown:
        teardown(args.workers)
        return
    if args.setup_only:
        setup(args.workers)
        return
    url = prepared_database(args.server, args.users, args.seed, reuse=True)
    for n in range(1, args.workers + 1):
        if can_reach_loopback_from_namespace(n):
            sys.exit(f"namespace {PREFIX}{n} reaches 127.0.0.1:5432: not a separate host")
    workers = [start_worker(n, url) for n in range(1, args.workers + 1)]
    try:
        time.sleep(2.0)  # connect and LISTEN
        source = f"bench.namespaces.{time.time_ns()}"
        started = time.perf_counter()
        with psycopg.connect(url, autocommit=True) as conn:
            trigger = trigger_backfill(conn, source)
            assert trigger.job_id is not None
            wait_for_run(conn, trigger.job_id, source)
            elapsed = time.perf_counter() - started
            by_host = Counter(dict(conn.execute(JOBS_BY_HOST, {"source": source}).fetchall()))
            progress = run_progress(conn, source)
    finally:
        stop_workers(workers)
    assert progress is not None
    print(f"backfill of {args.users:,} users through {args.workers} namespaced workers")
    print(f"  seconds to full coverage   {elapsed:.2f}")
    print(f"  complete                   {progress.complete}")
    for host, jobs in sorted(by_host.items()):
        print(f"  jobs completed on {host:10} {jobs:,}")
    if not progress.complete or len(by_host) != args.workers:
        sys.exit("not every worker host took part, or coverage is incomplete")


if __name__ == "__main__":
    main()
