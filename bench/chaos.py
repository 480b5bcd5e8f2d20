"""Chaos benchmark: a backfill with three workers under a schedule of faults, then its invariants.

    python bench/chaos.py --users 20000 [--repeat 5] [--lease-seconds 3] [--json]

The benchmark starts its own PostgreSQL (stride's embedded server in a
temporary directory, so it can stop and start it), seeds the deterministic demo
population once, and for each repeat copies it twice: one copy gets a
fault-free backfill with three `stride worker` processes, the other the same
backfill under this schedule, one fault after another from the trigger on:

1. SIGKILL a worker, and start a new one in its place;
2. SIGSTOP a worker for twice the lease, then SIGCONT;
3. pg_terminate_backend every stride backend;
4. restart PostgreSQL (fast shutdown, start);
5. hold an ACCESS EXCLUSIVE lock on `projections` for the lease plus 2 s.

Organic events are appended throughout (both runs), and the chaos run also
sends hostile input through the CLI, which must be rejected at the boundary:
an over-long `--source`, an event holding a 400-digit number, and an import
file with a line nested 5,000 deep between valid lines.

Invariants checked after the chaos run (each failure is printed; exit 1):
- every snapshotted user has both objective projections, on the current
  model version;
- `stride.backfill.verify` on a random sample finds no drift;
- no job anywhere is `dead` or `failed`, and none is left pending/processing;
- no duplicated fan-out key: each dedup key of the run's fan-out jobs belongs
  to exactly one job row of the run. The fan-out enqueues each (user, event
  type) once per run (a chunk's insert and its checkpoint commit together), so
  a second row with the same key — even one whose in-flight window does not
  overlap the first, which the partial unique index would allow — means a
  chunk was fanned out twice. The count of rows also equals the run's
  `jobs_enqueued`;
- every organic event was projected: its projection.update job completed and
  one of its user's objective projections was written after the event;
- every hostile input was rejected (non-zero exit, one-line error, no
  traceback) and stored nothing, and the valid lines around the bad import
  line were stored (and projected, as organic events).

Reported per repeat: time to full coverage, fault-free and under faults, and
how much the faults cost in leases.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from stride.backfill.reports import current_model_versions
from stride.backfill.trigger import trigger_backfill
from stride.backfill.verify import verify_sample
from stride.demo.population import seed_population
from stride.domain.validation import NewEvent
from stride.storage.connection import start_embedded, stop_embedded
from stride.storage.event_store import append_event
from stride.storage.migrations import migrate

STRIDE = [sys.executable, "-m", "stride.cli.main"]
T = TypeVar("T")

# --- the server ------------------------------------------------------------------------------


class Server:
    """The bench's own PostgreSQL: stride's embedded server in a directory of ours."""

    def __init__(self, root: Path) -> None:
        self.pgdata = root / "pgdata"
        self.admin_url = start_embedded(self.pgdata)

    def url(self, dbname: str) -> str:
        params = conninfo_to_dict(self.admin_url)
        params["dbname"] = dbname
        return make_conninfo("", **params)

    def restart(self) -> float:
        """Fast shutdown (every session ends) and start again; returns seconds it was down."""
        started = time.monotonic()
        stop_embedded(self.pgdata)
        start_embedded(self.pgdata)
        return time.monotonic() - started

    def stop(self) -> None:
        stop_embedded(self.pgdata)

    def copy(self, template: str, name: str) -> str:
        with psycopg.connect(self.admin_url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                    sql.Identifier(name), sql.Identifier(template)
                )
            )
        return self.url(name)


def retrying(url: str, action: Callable[[psycopg.Connection[Any]], T], *, tries: int = 60) -> T:
    """Run `action` on a fresh connection, again while the server is restarting."""
    for attempt in range(tries):
        try:
            with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
                conn.execute("SET lock_timeout = '500ms'")
                return action(conn)
        except (psycopg.OperationalError, psycopg.errors.LockNotAvailable):
            if attempt == tries - 1:
                raise
            time.sleep(0.25)
    raise AssertionError("unreachable")


# --- workers ---------------------------------------------------------------------------------


@dataclass
class Fleet:
    """`stride worker` processes, each logging to a file of its own."""

    url: str
    logs: Path
    args: list[str]
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    started: int = 0

    def spawn(self) -> subprocess.Popen[bytes]:
        log = (self.logs / f"worker-{self.started}.log").open("wb")
        self.started += 1
        process = subprocess.Popen(
            [*STRIDE, "worker", "--database-url", self.url, *self.args],
            stdout=log,
            stderr=log,
        )
        self.processes.append(process)
        return process

    def live(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in self.processes if p.poll() is None]

    def stop(self) -> None:
        for process in self.live():
            process.send_signal(signal.SIGCONT)
            process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def count_in_logs(self, words: str) -> int:
        return sum(log.read_text(errors="replace").count(words) for log in self.logs.glob("*.log"))


# --- organic traffic -------------------------------------------------------------------------


@dataclass
class OrganicTraffic:
    """Appends valid objective events for random users, retrying through faults."""

    url: str
    users: list[uuid.UUID]
    interval: float = 0.05
    appended: list[uuid.UUID] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        rng = random.Random(11)
        n = 0
        while not self._stop.is_set():
            n += 1
            user = rng.choice(self.users)
            if n % 2:
                kind, data = "set.logged", {"exercise": "squat", "reps": 1 + n % 8}
            else:
                kind, data = "objective.updated", {"objective_id": "o1", "note": f"organic {n}"}
            # The idempotency key makes a retry after a lost commit store nothing twice.
            event = NewEvent(user, kind, datetime.now(UTC), data, {"idempotency_key": f"o{n}"})
            result = retrying(self.url, lambda conn, e=event: append_event(conn, e))  # type: ignore[misc]
            self.appended.append(result.id)
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()


# --- hostile input ---------------------------------------------------------------------------


CONNECTION_TROUBLE = ("database connection failed", "cannot connect to the database")


def stride_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI; again (a few times) when it could not reach the server at all."""
    for _ in range(5):
        done = subprocess.run(
            [*STRIDE, *args], capture_output=True, text=True, timeout=120, check=False
        )
        if not any(words in done.stderr for words in CONNECTION_TROUBLE):
            break
        time.sleep(1.0)
    return done


def rejected_cleanly(done: subprocess.CompletedProcess[str], codes: set[int]) -> str | None:
    """None when the CLI refused in the expected way; else what went wrong."""
    if done.returncode not in codes:
        return f"exit {done.returncode} (expected {sorted(codes)}): {done.stderr[-300:]!r}"
    if "Traceback" in done.stderr:
        return f"traceback: {done.stderr[-300:]!r}"
    return None


def nested(depth: int) -> str:
    return '{"a": ' * depth + "1" + "}" * depth


@dataclass
class Hostile:
    url: str
    workdir: Path
    attempts: dict[str, str | None] = field(default_factory=dict)
    import_lines_expected: list[str] = field(default_factory=list)

    def long_source(self) -> None:
        done = stride_cli(
            "backfill", "objective-foundation", "--database-url", self.url,
            "--source", "deploy." + "x" * 2650, "--no-verify",
        )  # fmt: skip
        problem = rejected_cleanly(done, {2})
        stored = retrying(
            self.url,
            lambda c: c.execute(
                "SELECT count(*) FROM backfill_runs WHERE length(source) > 200"
            ).fetchone(),
        )
        if problem is None and stored != (0,):
            problem = "the over-long source was stored"
        self.attempts["over-long --source"] = problem

    def huge_number(self, user: uuid.UUID) -> None:
        marker = f"hostile-number-{uuid.uuid4()}"
        done = stride_cli(
            "events", "append", "--database-url", self.url, "--user", str(user),
            "--type", "set.logged", "--idempotency-key", marker,
            "--data", '{"exercise": "squat", "reps": ' + "9" * 400 + "}",
        )  # fmt: skip
        problem = rejected_cleanly(done, {2})
        stored = retrying(
            self.url,
            lambda c: c.execute(
                "SELECT count(*) FROM events WHERE metadata->>'idempotency_key' = %s", (marker,)
            ).fetchone(),
        )
        if problem is None and stored != (0,):
            problem = "the 400-digit number was stored"
        self.attempts["400-digit number"] = problem

    def deep_import(self, users: list[uuid.UUID]) -> None:
        path = self.workdir / "hostile-import.jsonl"
        keys = [f"import-{uuid.uuid4()}" for _ in range(20)]
        lines = []
        for n, key in enumerate(keys):
            if n == 10:
                lines.append(nested(5000))
            record = {
                "user_id": str(users[n % len(users)]),
                "event_type": "set.logged",
                "timestamp": datetime.now(UTC).isoformat(),
                "data": {"exercise": "deadlift", "reps": 3},
                "metadata": {"idempotency_key": key},
            }
            lines.append(json.dumps(record))
        path.write_text("\n".join(lines) + "\n")
        done = stride_cli("events", "import", str(path), "--database-url", self.url)
        problem = rejected_cleanly(done, {1})
        stored = retrying(
            self.url,
            lambda c: c.execute(
                "SELECT count(*) FROM events WHERE metadata->>'idempotency_key' = ANY(%s)", (keys,)
            ).fetchone(),
        )
        if problem is None and stored != (len(keys),):
            problem = f"{stored[0] if stored else 0} of {len(keys)} valid lines stored"
        self.import_lines_expected = keys
        self.attempts["line nested 5,000 deep"] = problem


# --- one backfill ----------------------------------------------------------------------------

COVERAGE_SQL = """
SELECT count(*) FILTER (
           WHERE st.model_version = %(state_model)s AND adv.model_version = %(advisory_model)s
       ),
       count(*)
FROM backfill_runs r
JOIN backfill_snapshot_users s ON s.snapshot_id = r.snapshot_id
LEFT JOIN projections st
       ON st.user_id = s.user_id AND st.projection_type = 'objective_state' AND st.key = 'active'
LEFT JOIN projections adv
       ON adv.user_id = s.user_id AND adv.projection_type = 'objective_advisory'
      AND adv.key = 'overview'
WHERE r.job_id = %(job_id)s
"""
OPEN_JOBS_SQL = "SELECT count(*) FROM background_jobs WHERE status IN ('pending', 'processing')"
GIVEN_UP_SQL = "SELECT count(*) FROM background_jobs WHERE status IN ('dead', 'failed')"
DUPLICATE_KEYS_SQL = """
SELECT count(*) FROM (
    SELECT dedup_key FROM background_jobs
    WHERE job_type = 'projection.update' AND payload->>'source' = %(source)s
    GROUP BY dedup_key HAVING count(*) > 1
) AS twice
"""
FANOUT_ROWS_SQL = """
SELECT (SELECT count(*) FROM background_jobs
        WHERE job_type = 'projection.update' AND payload->>'source' = %(source)s),
       (SELECT sum(jobs_enqueued) FROM backfill_runs WHERE source = %(source)s)
"""
# Organic events not (yet) projected: no completed job for the event, or no
# objective projection of its user written after the event.
UNPROJECTED_SQL = """
SELECT count(*)
FROM events e
WHERE e.id = ANY(%(ids)s)
  AND (
      NOT EXISTS (SELECT 1 FROM background_jobs j
                  WHERE j.job_type = 'projection.update' AND j.status = 'completed'
                    AND j.payload->>'event_id' = e.id::text)
      OR NOT EXISTS (SELECT 1 FROM projections p
                     WHERE p.user_id = e.user_id
                       AND p.projection_type IN ('objective_state', 'objective_advisory')
                       AND p.updated_at >= e.created_at)
  )
"""
IMPORTED_IDS_SQL = "SELECT id FROM events WHERE metadata->>'idempotency_key' = ANY(%(keys)s)"
TERMINATE_SQL = """
SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
WHERE application_name LIKE 'stride-%%' AND pid <> pg_backend_pid()
"""
LOCK_PROJECTIONS_SQL = "LOCK TABLE projections IN ACCESS EXCLUSIVE MODE"


@dataclass
class RunResult:
    seconds_to_full_coverage: float
    faults: list[tuple[float, str]] = field(default_factory=list)
    faults_after_coverage: int = 0
    failures: list[str] = field(default_factory=list)
    organic_events: int = 0
    log_counts: dict[str, int] = field(default_factory=dict)


class Backfill:
    """One backfill on one database copy, optionally under the fault schedule."""

    def __init__(self, server: Server, url: str, workdir: Path, lease: float) -> None:
        self.server = server
        self.url = url
        self.workdir = workdir
        self.lease = lease
        self.source = f"chaos.{workdir.name}"
        self.fleet = Fleet(url, workdir, ["--lease-seconds", str(lease)])
        self.started = 0.0
        self.faults: list[tuple[float, str]] = []

    def note(self, what: str) -> None:
        at = time.monotonic() - self.started
        self.faults.append((round(at, 2), what))
        print(f"    t={at:6.2f}s {what}", flush=True)

    def run(self, users: list[uuid.UUID], chaos: bool) -> RunResult:
        for _ in range(3):
            self.fleet.spawn()
        time.sleep(1.5)  # let the workers connect and LISTEN before the clock starts
        organic = OrganicTraffic(self.url, users)
        organic_thread = threading.Thread(target=organic.run, daemon=True)
        hostile = Hostile(self.url, self.workdir)
        models = current_model_versions()
        params: dict[str, Any] = {
            "state_model": models[("objective_state", "active")],
            "advisory_model": models[("objective_advisory", "overview")],
        }
        try:
            self.started = time.monotonic()
            trigger = retrying(self.url, lambda c: trigger_backfill(c, self.source))
            params["job_id"] = trigger.job_id
            organic_thread.start()
            schedule = threading.Thread(
                target=self.fault_schedule, args=(users, hostile), daemon=True
            )
            if chaos:
                schedule.start()
            covered_at = self.wait_for_coverage(params)
            print(f"    t={covered_at:6.2f}s every snapshotted user covered", flush=True)
            if chaos:
                schedule.join()
            organic.stop()
            organic_thread.join(timeout=60)
            self.drain()
            result = RunResult(covered_at, list(self.faults))
            result.faults_after_coverage = sum(1 for at, _ in self.faults if at > covered_at)
            result.organic_events = len(organic.appended)
            result.failures = self.check(params, organic, hostile if chaos else None)
        finally:
            organic.stop()
            self.fleet.stop()
        result.log_counts = {
            words: self.fleet.count_in_logs(words)
            for words in (
                "runner connection lost",
                "lock_wait_timeout",
                "reclaimed_expired_leases",
                "job_failed",
                "maintenance_leader_elected",
            )
        }
        return result

    def wait_for_coverage(self, params: dict[str, Any], timeout: float = 900) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(psycopg.OperationalError, psycopg.errors.LockNotAvailable):
                row = retrying(self.url, lambda c: c.execute(COVERAGE_SQL, params).fetchone())
                if row is not None and row[1] > 0 and row[0] == row[1]:
                    return time.monotonic() - self.started
            time.sleep(0.25)
        raise TimeoutError(f"no full coverage after {timeout}s")

    def drain(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if retrying(self.url, lambda c: c.execute(OPEN_JOBS_SQL).fetchone()) == (0,):
                return
            time.sleep(0.25)

    # --- faults ---

    def fault_schedule(self, users: list[uuid.UUID], hostile: Hostile) -> None:
        # Hostile input goes in alongside, so slow CLI start-ups never space the faults out.
        attacks = threading.Thread(target=self.hostile_input, args=(users, hostile), daemon=True)
        attacks.start()
        time.sleep(1.0)
        victim = self.fleet.live()[0]
        victim.kill()
        victim.wait()
        self.fleet.spawn()
        self.note(f"SIGKILL worker pid {victim.pid}, started a new one")
        time.sleep(1.0)

        frozen = self.fleet.live()[0]
        frozen.send_signal(signal.SIGSTOP)
        self.note(f"SIGSTOP worker pid {frozen.pid} for {2 * self.lease:g}s")
        time.sleep(2 * self.lease)
        frozen.send_signal(signal.SIGCONT)
        self.note(f"SIGCONT worker pid {frozen.pid}")
        time.sleep(1.0)

        terminated = retrying(self.server.admin_url, lambda c: c.execute(TERMINATE_SQL).fetchone())
        self.note(f"pg_terminate_backend on {terminated[0] if terminated else 0} stride backends")
        time.sleep(1.0)

        down = self.server.restart()
        self.note(f"PostgreSQL restarted (down {down:.2f}s)")
        time.sleep(1.0)

        hold = self.lease + 2.0
        with psycopg.connect(self.url, autocommit=True) as conn, conn.transaction():
            # Exclusive: every read and write of projections waits behind it.
            conn.execute(LOCK_PROJECTIONS_SQL)
            self.note(f"ACCESS EXCLUSIVE lock on projections held for {hold:g}s")
            time.sleep(hold)
        self.note("lock on projections released")
        attacks.join()

    def hostile_input(self, users: list[uuid.UUID], hostile: Hostile) -> None:
        hostile.long_source()
        self.note("hostile: over-long --source sent through the CLI")
        hostile.huge_number(users[0])
        self.note("hostile: an event with a 400-digit number sent through the CLI")
        hostile.deep_import(users[1:30])
        self.note("hostile: an import with a line nested 5,000 deep between valid lines")

    # --- invariants ---

    def check(
        self, params: dict[str, Any], organic: OrganicTraffic, hostile: Hostile | None
    ) -> list[str]:
        failures: list[str] = []

        def scalar(query: str, args: dict[str, Any] | None = None) -> Any:
            row = retrying(self.url, lambda c: c.execute(query, args).fetchone())
            return row[0] if row else None

        covered, total = retrying(self.url, lambda c: c.execute(COVERAGE_SQL, params).fetchone())  # type: ignore[misc]
        if covered != total:
            failures.append(f"{total - covered} of {total} snapshotted users not covered/current")
        drift = retrying(self.url, lambda c: verify_sample(c, 300))
        if drift.drifts:
            failures.append(f"verify: {len(drift.drifts)} drifts, e.g. {drift.drifts[0]}")
        if (given_up := scalar(GIVEN_UP_SQL)) != 0:
            failures.append(f"{given_up} dead or failed jobs")
        if (still_open := scalar(OPEN_JOBS_SQL)) != 0:
            failures.append(f"{still_open} jobs still pending or processing")
        source = {"source": self.source}
        if (twice := scalar(DUPLICATE_KEYS_SQL, source)) != 0:
            failures.append(f"{twice} fan-out dedup keys held by more than one job of the run")
        rows, enqueued = retrying(self.url, lambda c: c.execute(FANOUT_ROWS_SQL, source).fetchone())  # type: ignore[misc]
        if rows != enqueued:
            failures.append(f"{rows} fan-out job rows but the run recorded {enqueued} enqueued")
        ids = list(organic.appended)
        if hostile is not None:
            for what, problem in hostile.attempts.items():
                if problem is not None:
                    failures.append(f"hostile {what}: {problem}")
            keys = {"keys": hostile.import_lines_expected}
            ids += [
                row[0]
                for row in retrying(
                    self.url, lambda c: c.execute(IMPORTED_IDS_SQL, keys).fetchall()
                )
            ]
        if (unprojected := scalar(UNPROJECTED_SQL, {"ids": ids})) != 0:
            failures.append(f"{unprojected} of {len(ids)} organic events not projected")
        return failures


# --- the benchmark ---------------------------------------------------------------------------


def seed(server: Server, users: int, seed_number: int) -> tuple[str, list[uuid.UUID]]:
    name = "chaos_seed"
    with psycopg.connect(server.admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    started = time.monotonic()
    with psycopg.connect(server.url(name), autocommit=True) as conn:
        migrate(conn)
        summary = seed_population(conn, users=users, seed=seed_number)
        conn.execute("VACUUM ANALYZE")
        sample = [r[0] for r in conn.execute("SELECT id FROM users ORDER BY id LIMIT 200")]
    print(
        f"seeded {users:,} users / {summary.events:,} events in {time.monotonic() - started:.1f}s",
        flush=True,
    )
    return name, sample


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=1, help="consecutive runs on one seed")
    parser.add_argument("--lease-seconds", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the data and logs directory")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="stride-chaos-"))
    root.chmod(0o755)  # the embedded server may run as another user
    print(f"chaos benchmark: {args.users:,} users, 3 workers, lease {args.lease_seconds:g}s")
    print(f"  data and logs in {root}", flush=True)
    server = Server(root)
    results: list[dict[str, Any]] = []
    try:
        template, users = seed(server, args.users, args.seed)
        for repeat in range(1, args.repeat + 1):
            summary: dict[str, Any] = {"repeat": repeat}
            for mode in ("fault_free", "chaos"):
                name = f"{mode}_{repeat}"
                url = server.copy(template, name)
                workdir = root / name
                workdir.mkdir()
                print(f"  run {repeat} {mode.replace('_', '-')}:", flush=True)
                result = Backfill(server, url, workdir, args.lease_seconds).run(
                    users, chaos=mode == "chaos"
                )
                summary[mode] = result.__dict__
            free = summary["fault_free"]["seconds_to_full_coverage"]
            faulty = summary["chaos"]["seconds_to_full_coverage"]
            summary["extra_seconds"] = round(faulty - free, 2)
            summary["extra_leases"] = round((faulty - free) / args.lease_seconds, 2)
            failures = summary["chaos"]["failures"] + summary["fault_free"]["failures"]
            summary["passed"] = not failures
            results.append(summary)
            print(
                f"  run {repeat}: full coverage {free:.1f}s fault-free, {faulty:.1f}s under "
                f"faults (+{faulty - free:.1f}s = {(faulty - free) / args.lease_seconds:.1f} "
                f"leases); organic events {summary['chaos']['organic_events']}; "
                f"{'PASS' if not failures else 'FAIL'}",
                flush=True,
            )
            print(f"    worker log counts under faults: {summary['chaos']['log_counts']}")
            if late := summary["chaos"]["faults_after_coverage"]:
                print(f"    note: {late} fault steps came after full coverage", flush=True)
            for failure in failures:
                print(f"    FAIL {failure}", flush=True)
    finally:
        server.stop()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    if args.json:
        print(json.dumps(results, indent=2, default=str))
    return 0 if results and all(r["passed"] for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
