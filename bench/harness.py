"""Shared machinery for stride's benchmarks: scratch databases, worker processes, latency probes.

Benchmarks are scripts, not tests: they print medians and ratios from one run.
"""

from __future__ import annotations

import random
import statistics
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psutil
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from stride.demo.worker_processes import running_workers
from stride.domain.validation import NewEvent
from stride.storage.event_store import append_event
from stride.storage.migrations import migrate

DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"


def with_dbname(url: str, dbname: str) -> str:
    params = conninfo_to_dict(url)
    params["dbname"] = dbname
    return make_conninfo("", **params)


def database_exists(server_url: str, name: str) -> bool:
    with psycopg.connect(server_url, autocommit=True) as admin:
        row = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    return row is not None


def create_database(server_url: str, name: str, *, replace: bool = True) -> str:
    """Create (or recreate) a migrated scratch database and return its URL."""
    with psycopg.connect(server_url, autocommit=True) as admin:
        if replace:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
            )
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = with_dbname(server_url, name)
    with psycopg.connect(url, autocommit=True) as conn:
        migrate(conn)
    return url


def clone_database(server_url: str, source: str, name: str) -> None:
    """Create database `name` as a copy of `source` (which must have no connections)."""
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(source)
            )
        )


# Server-wide counters (checkpoints, buffers written by backends rather than the
# checkpointer or background writer) and this database's autovacuum/autoanalyze
# runs and rows of background_jobs read by sequential scans: sampled before and
# after a run, their difference says whether any of them landed mid-run (a
# claim planned for an empty queue scans the whole table every time).
SERVER_ACTIVITY = """
SELECT b.checkpoints_timed + b.checkpoints_req AS checkpoints,
       b.buffers_checkpoint, b.buffers_backend, b.buffers_backend_fsync,
       (SELECT coalesce(sum(autovacuum_count + autoanalyze_count), 0)::bigint
        FROM pg_stat_user_tables) AS autovacuum_runs,
       (SELECT pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint AS wal_bytes,
       (SELECT coalesce(sum(seq_tup_read), 0)::bigint
        FROM pg_stat_user_tables WHERE relname = 'background_jobs') AS queue_seq_tuples_read
FROM pg_stat_bgwriter b
"""


def server_activity(database_url: str) -> dict[str, int]:
    """Counters of SERVER_ACTIVITY, by name (wal_bytes: server-wide, all databases)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        cursor = conn.execute(SERVER_ACTIVITY)
        row = cursor.fetchone()
        assert row is not None and cursor.description is not None
        names = [column.name for column in cursor.description]
        return {name: int(value) for name, value in zip(names, row, strict=True)}


def drop_database(server_url: str, name: str) -> None:
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
        )
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


def postgres_cpu_seconds() -> float:
    """CPU time used so far by every local PostgreSQL process (server on this machine)."""
    total = 0.0
    for proc in psutil.process_iter(["name", "cpu_times"]):
        if proc.info["name"] == "postgres" and proc.info["cpu_times"] is not None:
            total += proc.info["cpu_times"].user + proc.info["cpu_times"].system
    return total


def postgres_cpu_by_pid() -> dict[int, float]:
    """CPU time used so far by each local PostgreSQL process."""
    found: dict[int, float] = {}
    for proc in psutil.process_iter(["name", "cpu_times"]):
        if proc.info["name"] == "postgres" and proc.info["cpu_times"] is not None:
            found[proc.pid] = proc.info["cpu_times"].user + proc.info["cpu_times"].system
    return found


def database_cpu_seconds(database_url: str, before: Mapping[int, float]) -> float:
    """CPU used since `before` by the backends now connected to this database: the
    benchmark's own share of the server, without other databases' sessions (nor the
    shared checkpointer and WAL writer)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        pids = [
            row[0]
            for row in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid()"
            )
        ]
    now = postgres_cpu_by_pid()
    return sum(now[pid] - before.get(pid, 0.0) for pid in pids if pid in now)


@dataclass
class WorkerFleet:
    """Peak resident memory of a set of worker processes, sampled in the background."""

    processes: list[subprocess.Popen[bytes]]
    peak_rss: dict[int, int] = field(default_factory=dict)
    cpu_seconds: dict[int, float] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)

    def sample_forever(self, interval: float = 0.2) -> None:
        while not self._stop.is_set():
            for proc in self.processes:
                try:
                    process = psutil.Process(proc.pid)
                    rss = process.memory_info().rss
                    cpu = process.cpu_times()
                except psutil.Error:
                    continue
                self.peak_rss[proc.pid] = max(self.peak_rss.get(proc.pid, 0), rss)
                self.cpu_seconds[proc.pid] = cpu.user + cpu.system
            self._stop.wait(interval)


@contextmanager
def worker_fleet(
    database_url: str, workers: int, extra_args: Sequence[str] = ()
) -> Iterator[WorkerFleet]:
    """Real `stride worker` processes with an RSS sampler; SIGTERMed on exit."""
    with running_workers(database_url, workers, extra_args) as processes:
        fleet = WorkerFleet(processes)
        sampler = threading.Thread(target=fleet.sample_forever, daemon=True)
        sampler.start()
        try:
            yield fleet
        finally:
            fleet._stop.set()
            sampler.join(timeout=2)


# A primary-key prefix lookup: cheap enough to poll without loading the server.
PROJECTION_LAST_EVENTS = """
SELECT projection_type, last_event_id FROM projections WHERE user_id = %(user_id)s
"""


@dataclass
class LatencyProbe:
    """Appends organic events one at a time and times commit -> both projections written."""

    database_url: str
    user_ids: Sequence[uuid.UUID]
    interval: float = 0.1
    timeout: float = 30.0
    samples: list[float] = field(default_factory=list)
    timeouts: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self, count: int | None = None) -> None:
        rng = random.Random(7)
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            n = 0
            while not self._stop.is_set() and (count is None or n < count):
                n += 1
                user_id = rng.choice(self.user_ids)
                result = append_event(
                    conn,
                    NewEvent(
                        user_id=user_id,
                        event_type="objective.updated",
                        timestamp=datetime.now(UTC),
                        data={"objective_id": "bench", "hypothesis": f"probe {n}"},
                    ),
                )
                committed = time.perf_counter()
                deadline = committed + self.timeout
                while time.perf_counter() < deadline:
                    rows = conn.execute(
                        PROJECTION_LAST_EVENTS, {"user_id": user_id}, prepare=False
                    ).fetchall()
                    caught_up = {ptype for ptype, last in rows if last == result.id}
                    if caught_up >= {"objective_state", "objective_advisory"}:
                        self.samples.append(time.perf_counter() - committed)
                        break
                    time.sleep(0.005)
                else:
                    self.timeouts += 1
                self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def sample_user_ids(database_url: str, n: int) -> list[uuid.UUID]:
    with psycopg.connect(database_url) as conn:
        rows: list[Any] = conn.execute(
            "SELECT id FROM users ORDER BY random() LIMIT %s", (n,)
        ).fetchall()
    return [row[0] for row in rows]
