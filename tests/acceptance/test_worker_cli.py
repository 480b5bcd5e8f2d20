"""`stride worker` and `stride jobs …` end to end, as an operator runs them."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import psycopg
import pytest
from tests.conftest import wait_until

from stride.queue.handlers import HandlerRegistry
from stride.queue.jobs import (
    NewJob,
    claim_due_jobs,
    complete_many,
    enqueue,
    enqueue_many,
    fail,
    mark_failed,
)
from stride.queue.metrics import serve_metrics
from stride.queue.worker import Worker

STRIDE = str(Path(sys.executable).with_name("stride"))
Conn = psycopg.Connection[Any]


def stride(*args: str, database_url: str | None = None) -> subprocess.CompletedProcess[str]:
    command = [STRIDE, *args]
    if database_url is not None:
        command += ["--database-url", database_url]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def counts(conn: Conn) -> dict[str, int]:
    return dict(conn.execute("SELECT status, count(*) FROM background_jobs GROUP BY 1").fetchall())


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["worker", "--concurrency", "0"], "--concurrency"),
        (["worker", "--batch-size", "many"], "--batch-size"),
        (["worker", "--lease-seconds", "-1"], "--lease-seconds"),
        (["worker", "--job-types", " , "], "--job-types"),
        (["worker", "--metrics-port", "70000"], "--metrics-port"),
        (["worker", "--prune-completed-after", "forever"], "--prune-completed-after"),
        (["jobs", "prune", "--completed-older-than", "a week"], "--completed-older-than"),
        (["jobs", "prune", "--completed-older-than", "7d", "--batch-size", "0"], "--batch-size"),
        (["jobs", "retry"], "--dead"),
    ],
)
def test_bad_flag_values_exit_2_with_one_line_naming_the_flag(
    args: list[str], named: str, database_url: str
) -> None:
    done = stride(*args, database_url=database_url)
    assert done.returncode == 2, done.stderr
    assert named in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_worker_once_drains_and_unknown_types_go_dead(database_url: str, conn: Conn) -> None:
    job_id = enqueue(conn, NewJob("no.such.type", {})).job_id
    done = stride("worker", "--once", "--lease-seconds", "5", database_url=database_url)
    assert done.returncode == 0, done.stderr
    row = conn.execute(
        "SELECT status, error_message FROM background_jobs WHERE id = %s", (job_id,)
    ).fetchone()
    assert row is not None and row[0] == "dead"
    assert "no handler registered for job type 'no.such.type'" in row[1]
    assert f"job_id={job_id}" in done.stderr and "outcome=dead" in done.stderr


def test_worker_on_an_unmigrated_database_fails_in_one_line(empty_database_url: str) -> None:
    done = stride("worker", "--once", database_url=empty_database_url)
    assert done.returncode == 1
    assert "stride db migrate" in done.stderr


def test_jobs_status_retry_and_prune(database_url: str, conn: Conn) -> None:
    enqueue_many(conn, [NewJob("a", {}) for _ in range(3)] + [NewJob("b", {}, max_retries=0)])
    [job_b] = claim_due_jobs(conn, "w", 1, 30, ["b"])
    fail(conn, job_b, "KeyError: 'user_id'")
    complete_many(conn, claim_due_jobs(conn, "w", 2, 30, ["a"]))
    conn.execute(
        "UPDATE background_jobs SET completed_at = now() - interval '8 days' "
        "WHERE status = 'completed'"
    )

    shown = stride("jobs", "status", "--json", database_url=database_url)
    assert shown.returncode == 0, shown.stderr
    status = json.loads(shown.stdout)
    assert status["counts"] == {"a": {"completed": 2, "pending": 1}, "b": {"dead": 1}}
    assert status["expired_leases"] == 0
    assert status["oldest_due_pending_seconds"] >= 0
    assert [(d["id"], d["error_message"]) for d in status["latest_dead"]] == [
        (job_b.id, "KeyError: 'user_id'")
    ]
    table = stride("jobs", "status", database_url=database_url)
    assert table.returncode == 0 and "KeyError" in table.stdout and "expired leases" in table.stdout

    retried = stride("jobs", "retry", "--dead", "--job-type", "b", database_url=database_url)
    assert retried.returncode == 0 and "retried 1 dead job" in retried.stdout
    assert counts(conn) == {"completed": 2, "pending": 2}

    pruned = stride("jobs", "prune", "--completed-older-than", "7d", database_url=database_url)
    assert pruned.returncode == 0 and "pruned 2 completed jobs" in pruned.stdout
    assert counts(conn) == {"pending": 2}


def test_failed_jobs_show_in_status_and_retry_revives_them(database_url: str, conn: Conn) -> None:
    enqueue(conn, NewJob("p", {}))
    [job] = claim_due_jobs(conn, "w", 1, 30)
    assert mark_failed(conn, job, "JobPayloadError: payload.event_type is missing or blank")
    shown = stride("jobs", "status", "--json", database_url=database_url)
    status = json.loads(shown.stdout)
    assert status["counts"] == {"p": {"failed": 1}}
    assert [(d["id"], d["status"]) for d in status["latest_dead"]] == [(job.id, "failed")]
    table = stride("jobs", "status", database_url=database_url)
    assert "failed" in table.stdout and "JobPayloadError" in table.stdout
    helped = stride("jobs", "retry", "--help")
    assert "failed" in helped.stdout
    retried = stride("jobs", "retry", "--dead", database_url=database_url)
    assert retried.returncode == 0 and "retried 1 dead job" in retried.stdout
    assert counts(conn) == {"pending": 1}


def test_worker_serves_metrics_and_stops_on_sigterm(
    database_url: str, conn: Conn, tmp_path: Path
) -> None:
    enqueue(conn, NewJob("no.such.type", {}))
    log = tmp_path / "worker.log"
    port = _free_port()
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [STRIDE, "worker", "--metrics-port", str(port), "--database-url", database_url],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        wait_until(lambda: counts(conn) == {"dead": 1}, what="job handled")
        metrics = wait_until(lambda: _scrape(port), what="metrics served")
        assert 'stride_jobs_dead_total{job_type="no.such.type"} 1.0' in metrics
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
    assert "worker_stop" in log.read_text()


def test_metrics_endpoint_exports_job_counters(database_url: str, conn: Conn) -> None:
    registry = HandlerRegistry()
    registry.register("m", lambda ctx: None)
    enqueue_many(conn, [NewJob("m", {}) for _ in range(3)])
    Worker(database_url, registry).run(once=True)
    port = _free_port()
    serve_metrics(port, addr="127.0.0.1")
    text = _scrape(port)
    assert 'stride_jobs_completed_total{job_type="m"}' in text
    assert 'stride_jobs_claimed_total{job_type="m"}' in text
    assert "stride_job_handler_duration_seconds_bucket" in text


def _scrape(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            return str(response.read().decode())
    except OSError:
        return ""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
