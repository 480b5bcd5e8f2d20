"""The operator's views (issue 14 item 5), run as an operator runs them: `stride workers`,
`stride jobs list/show`, retrying jobs, `stride projections refresh`."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from tests.conftest import wait_until
from tests.populations import make_population

from stride.app import refresh_projections_now
from stride.queue.jobs import NewJob, claim_due_jobs, enqueue, enqueue_many, fail, mark_failed
from stride.queue.user_locks import USER_LOCK_NAMESPACE, user_lock_key

STRIDE = str(Path(sys.executable).with_name("stride"))
HARNESS = Path(__file__).with_name("worker_harness.py")
Conn = psycopg.Connection[Any]


def stride(*args: str, database_url: str, columns: int = 160) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [STRIDE, *args, "--database-url", database_url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "COLUMNS": str(columns)},
    )


def stride_json(*args: str, database_url: str) -> Any:
    done = stride(*args, "--json", database_url=database_url)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


class Process:
    """A worker process (`stride worker` or the test harness), stopped at the end of the test."""

    def __init__(self, command: list[str], log: Path) -> None:
        self._log = log.open("w")
        self.process = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def stop(self, signum: int = signal.SIGTERM) -> int:
        self.process.send_signal(signum)
        return self.process.wait(30)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._log.close()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for process in started:
        process.close()


def start_stride_worker(
    processes: list[Process], tmp_path: Path, database_url: str, *options: str
) -> Process:
    process = Process(
        [STRIDE, "worker", "--database-url", database_url, *options],
        tmp_path / f"worker-{len(processes)}.log",
    )
    processes.append(process)
    return process


def start_harness(
    processes: list[Process], tmp_path: Path, database_url: str, *options: str
) -> Process:
    process = Process(
        [sys.executable, str(HARNESS), "--database-url", database_url, *options],
        tmp_path / f"harness-{len(processes)}.log",
    )
    processes.append(process)
    return process


def live_workers(database_url: str) -> list[dict[str, Any]]:
    report = stride_json("workers", database_url=database_url)
    return [w for w in report["workers"] if w["live"]]


# --- stride workers ------------------------------------------------------------------------------


def test_workers_lists_live_workers_then_says_when_due_jobs_wait_for_nobody(
    database_url: str, conn: Conn, processes: list[Process], tmp_path: Path
) -> None:
    empty = stride("workers", database_url=database_url)
    assert empty.returncode == 0
    assert "no live workers (and no due jobs waiting)" in empty.stdout

    worker = start_stride_worker(processes, tmp_path, database_url, "--concurrency", "2")
    [shown] = wait_until(lambda: live_workers(database_url), what="worker listed as live")
    assert shown["host"] == socket.gethostname()
    assert shown["pid"] == worker.process.pid
    assert shown["concurrency"] == 2 and shown["job_types"] is None
    assert shown["registered"] and shown["silent_seconds"] < 30

    table = stride("workers", database_url=database_url, columns=80)
    assert table.returncode == 0
    assert shown["worker_id"] in table.stdout  # whole, at 80 columns
    assert "workers (1 live)" in table.stdout

    # A clean stop takes the worker off the list; due jobs then wait for nobody.
    assert worker.stop() == 0
    assert live_workers(database_url) == []
    enqueue_many(conn, [NewJob("nobody.runs.this", {}) for _ in range(1234)])
    alone = stride("workers", database_url=database_url)
    assert (
        "no live workers: 1,234 due jobs are waiting for nobody; start one with `stride worker`"
        in alone.stdout
    )
    status = stride("jobs", "status", database_url=database_url)
    assert "no live workers: 1,234 due jobs are waiting for nobody" in status.stdout


def test_workers_with_job_types_leave_other_types_waiting_for_nobody(
    database_url: str, conn: Conn, processes: list[Process], tmp_path: Path
) -> None:
    enqueue(conn, NewJob("inference.objective_backfill", {"source": "x"}, max_retries=0))
    start_stride_worker(processes, tmp_path, database_url, "--job-types", "projection.update")
    [shown] = wait_until(lambda: live_workers(database_url), what="worker listed as live")
    assert shown["job_types"] == ["projection.update"]
    report = stride_json("workers", database_url=database_url)
    assert report["waiting_for_nobody"] == {"inference.objective_backfill": 1}
    text = stride("workers", database_url=database_url).stdout
    assert "no live worker claims inference.objective_backfill: 1 due job waits for nobody" in text


def test_workers_show_jobs_in_hand_and_the_oldest_lease(
    database_url: str, conn: Conn, processes: list[Process], tmp_path: Path
) -> None:
    job_ids = [enqueue(conn, NewJob("record", {"sleep": 30, "n": n})).job_id for n in range(2)]
    start_harness(processes, tmp_path, database_url, "--concurrency", "2", "--batch-size", "1")
    [shown] = wait_until(
        lambda: [w for w in live_workers(database_url) if w["jobs_in_hand"] == 2],
        what="both jobs in hand",
    )
    assert shown["oldest_lease_started_at"] is not None
    assert shown["oldest_lease_seconds"] >= 0
    processing = stride_json("jobs", "list", "--status", "processing", database_url=database_url)
    assert sorted(j["id"] for j in processing["jobs"]) == job_ids
    assert all(j["locked_by"].startswith(shown["worker_id"] + "/") for j in processing["jobs"])


def test_a_killed_worker_shows_as_silent_once_its_lease_ran_out(
    database_url: str, processes: list[Process], tmp_path: Path
) -> None:
    harness = start_harness(processes, tmp_path, database_url, "--lease-seconds", "1")
    wait_until(lambda: live_workers(database_url), what="worker listed as live")
    harness.stop(signal.SIGKILL)
    report = wait_until(
        lambda: [
            w for w in stride_json("workers", database_url=database_url)["workers"] if not w["live"]
        ],
        what="worker silent",
    )
    assert report[0]["silent_seconds"] > 1
    text = stride("workers", database_url=database_url).stdout
    assert "silent" in text and "1 worker silent for longer than the lease" in text


# --- jobs list / show, retrying ----------------------------------------------------------------


def test_jobs_list_filters_and_shows_a_retrying_job_with_its_last_error(
    database_url: str, conn: Conn
) -> None:
    enqueue_many(
        conn,
        [NewJob("projection.update", {"source": "deploy.v1"}) for _ in range(3)]
        + [NewJob("projection.update", {"source": "deploy.v2"})]
        + [NewJob("other.type", {})],
    )
    flaky = enqueue(conn, NewJob("flaky", {"source": "deploy.v1"}, max_retries=3)).job_id
    [held] = claim_due_jobs(conn, "host-a:1:aa/0", 1, 30, ["flaky"])
    fail(conn, held, "TimeoutError: the upstream did not answer in 5s", delay_seconds=3600)

    everything = stride_json("jobs", "list", database_url=database_url)["jobs"]
    assert [j["id"] for j in everything] == sorted((j["id"] for j in everything), reverse=True)
    assert len(everything) == 6
    [retrying] = stride_json("jobs", "list", "--status", "retrying", database_url=database_url)[
        "jobs"
    ]
    assert retrying["id"] == flaky and retrying["status"] == "retrying"
    assert retrying["stored_status"] == "pending"
    assert retrying["error_message"] == "TimeoutError: the upstream did not answer in 5s"
    pending = stride_json("jobs", "list", "--status", "pending", database_url=database_url)["jobs"]
    assert flaky not in {j["id"] for j in pending} and len(pending) == 5
    by_source = stride_json("jobs", "list", "--source", "deploy.v1", database_url=database_url)
    assert len(by_source["jobs"]) == 4
    by_type = stride_json(
        "jobs", "list", "--type", "projection.update", "--limit", "2", database_url=database_url
    )
    assert [j["job_type"] for j in by_type["jobs"]] == ["projection.update"] * 2

    text = stride("jobs", "list", "--status", "retrying", database_url=database_url, columns=80)
    assert text.returncode == 0
    assert "retrying" in text.stdout and "1/4" in text.stdout
    assert f"job {flaky} (retrying): TimeoutError: the upstream did not answer in 5s" in text.stdout

    status = stride("jobs", "status", database_url=database_url)
    assert "retrying" in status.stdout and "jobs waiting to retry" in status.stdout
    assert "TimeoutError: the upstream did not answer in 5s" in status.stdout
    as_json = stride_json("jobs", "status", database_url=database_url)
    assert as_json["counts"]["flaky"] == {"pending": 1}  # stored status unchanged
    assert as_json["retrying"]["counts"] == {"flaky": 1}

    bad = stride("jobs", "list", "--status", "stuck", database_url=database_url)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "retrying" in bad.stderr


def test_jobs_show_prints_payload_attempts_and_each_error_with_its_time(
    database_url: str, conn: Conn, processes: list[Process], tmp_path: Path
) -> None:
    # A real worker fails it three times (max_retries 2), then it is dead.
    job_id = enqueue(conn, NewJob("record", {"fail": True, "note": "poison"}, max_retries=2)).job_id
    start_harness(processes, tmp_path, database_url)
    wait_until(
        lambda: (
            stride_json("jobs", "show", str(job_id), database_url=database_url)["status"] == "dead"
        ),
        what="job dead",
    )
    shown = stride_json("jobs", "show", str(job_id), database_url=database_url)
    assert shown["payload"] == {"fail": True, "note": "poison"}
    assert shown["attempt"] == 3 and shown["max_retries"] == 2
    assert [e["attempt"] for e in shown["errors"]] == [1, 2, 3]
    assert [e["outcome"] for e in shown["errors"]] == ["retry", "retry", "dead"]
    assert all(f"poisoned payload in job {job_id}" in e["error"] for e in shown["errors"])
    times = [e["at"] for e in shown["errors"]]
    assert times == sorted(times)

    text = stride("jobs", "show", str(job_id), database_url=database_url, columns=80)
    assert text.returncode == 0
    assert '"note": "poison"' in text.stdout
    assert "3 of 3" in text.stdout
    for attempt in (1, 2, 3):
        assert f"attempt {attempt} at 20" in text.stdout
    assert text.stdout.count(f"poisoned payload in job {job_id}") >= 3

    missing = stride("jobs", "show", "999999", database_url=database_url)
    assert missing.returncode == 1 and "no job 999999" in missing.stderr


def test_a_failed_job_records_its_reason_and_a_revived_one_keeps_its_history(
    database_url: str, conn: Conn
) -> None:
    job_id = enqueue(conn, NewJob("p", {})).job_id
    [held] = claim_due_jobs(conn, "w", 1, 30)
    assert mark_failed(conn, held, "JobPayloadError: payload.event_type is missing")
    assert stride("jobs", "retry", "--dead", database_url=database_url).returncode == 0
    shown = stride_json("jobs", "show", str(job_id), database_url=database_url)
    assert shown["status"] == "pending"  # revived: attempt 0, not retrying
    assert [(e["outcome"], e["error"]) for e in shown["errors"]] == [
        ("failed", "JobPayloadError: payload.event_type is missing")
    ]


# --- projections refresh -----------------------------------------------------------------------


def test_projections_refresh_repairs_what_verify_finds(database_url: str, conn: Conn) -> None:
    users = make_population(conn, 6)
    refresh_projections_now(conn, users)
    assert stride("backfill", "verify", "--sample", "6", database_url=database_url).returncode == 0
    broken = users[1]
    conn.execute(
        "UPDATE projections SET data = jsonb_set(data, '{schema_version}', '\"tampered\"') "
        "WHERE user_id = %s AND projection_type = 'objective_state'",
        (broken,),
    )
    drift = stride("backfill", "verify", "--sample", "6", "--json", database_url=database_url)
    assert drift.returncode == 1
    assert {d["user_id"] for d in json.loads(drift.stdout)["drifts"]} == {str(broken)}

    repaired = stride("projections", "refresh", str(broken), database_url=database_url)
    assert repaired.returncode == 0, repaired.stderr
    assert "refreshed 1 user: 2 projections written" in repaired.stdout
    assert stride("backfill", "verify", "--sample", "6", database_url=database_url).returncode == 0

    as_json = stride_json(
        "projections", "refresh", str(users[2]), str(users[3]), database_url=database_url
    )
    assert as_json["users"] == [str(users[2]), str(users[3])]
    assert as_json["projections_written"] == 4


def test_projections_refresh_refuses_unknown_users_and_writes_nothing(
    database_url: str, conn: Conn
) -> None:
    [user] = make_population(conn, 2)[1:]
    unknown = "0190a000-0000-7000-8000-00000000dead"
    done = stride("projections", "refresh", str(user), unknown, database_url=database_url)
    assert (
        done.returncode == 1 and unknown in done.stderr and "nothing was refreshed" in done.stderr
    )
    assert conn.execute("SELECT count(*) FROM projections").fetchone() == (0,)
    bad = stride("projections", "refresh", "not-a-uuid", database_url=database_url)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1


def test_projections_refresh_waits_for_a_user_a_worker_holds(database_url: str, conn: Conn) -> None:
    [user] = make_population(conn, 2)[1:]
    with psycopg.connect(database_url) as holder:
        # What a runner does while it works on the user: the transaction-scoped user lock.
        holder.execute(
            "SELECT pg_advisory_xact_lock(%s, %s)", (USER_LOCK_NAMESPACE, user_lock_key(user))
        )
        refresh = subprocess.Popen(
            [STRIDE, "projections", "refresh", str(user), "--database-url", database_url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_until(
            lambda: (
                conn.execute(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                ).fetchone()
                == (1,)
            ),
            what="refresh waiting on the user lock",
        )
        assert refresh.poll() is None
        assert conn.execute("SELECT count(*) FROM projections").fetchone() == (0,)
        holder.rollback()
    _, err = refresh.communicate(timeout=30)
    assert refresh.returncode == 0, err
    assert conn.execute("SELECT count(*) FROM projections").fetchone() == (2,)
