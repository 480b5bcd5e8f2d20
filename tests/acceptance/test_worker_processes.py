"""Worker processes with real signals: drain, SIGKILL, SIGSTOP, SIGTERM, dropped connections."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from tests.acceptance.harness_process import WorkerProcess
from tests.conftest import wait_until

from stride.queue.jobs import NewJob, enqueue, enqueue_many

Conn = psycopg.Connection[Any]


StartWorker = Callable[..., WorkerProcess]


@pytest.fixture
def start_worker(database_url: str, tmp_path: Path) -> Iterator[StartWorker]:
    started: list[WorkerProcess] = []

    def start(*options: str) -> WorkerProcess:
        worker = WorkerProcess(database_url, tmp_path / f"worker-{len(started)}.log", *options)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.close()


def scalar(conn: Conn, query: str, *params: Any) -> Any:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def job_row(conn: Conn, job_id: int) -> tuple[Any, ...]:
    row = conn.execute(
        "SELECT status, attempt, error_message, locked_by FROM background_jobs WHERE id = %s",
        (job_id,),
    ).fetchone()
    assert row is not None
    return tuple(row)


def run_started(conn: Conn, job_id: int, attempt: int = 1) -> bool:
    return bool(
        scalar(
            conn,
            "SELECT count(*) FROM harness_runs WHERE job_id = %s AND attempt = %s",
            job_id,
            attempt,
        )
    )


def effects_of(conn: Conn, job_id: int) -> list[tuple[int, int]]:
    return conn.execute(
        "SELECT attempt, pid FROM harness_effects WHERE job_id = %s", (job_id,)
    ).fetchall()


def test_two_worker_processes_drain_2000_jobs_exactly_once(
    start_worker: StartWorker, conn: Conn
) -> None:
    enqueue_many(conn, [NewJob("record", {"n": n}) for n in range(2000)])
    workers = [start_worker("--concurrency", "2", "--batch-size", "25") for _ in range(2)]
    wait_until(
        lambda: (
            scalar(conn, "SELECT count(*) FROM background_jobs WHERE status = 'completed'") == 2000
        ),
        timeout=90,
        what="2000 jobs completed",
    )
    # Exactly one committed effect per job, and both processes did work.
    assert conn.execute(
        "SELECT count(*), count(DISTINCT job_id), count(DISTINCT pid) FROM harness_effects"
    ).fetchone() == (2000, 2000, 2)
    # No job ever had two runs whose [start, end] intervals overlap.
    overlapping = scalar(
        conn,
        "SELECT count(*) FROM harness_runs a JOIN harness_runs b "
        "ON a.job_id = b.job_id AND a.run_id < b.run_id "
        "AND tstzrange(a.started_at, coalesce(a.finished_at, 'infinity')) "
        "&& tstzrange(b.started_at, coalesce(b.finished_at, 'infinity'))",
    )
    assert overlapping == 0
    assert scalar(conn, "SELECT count(*) FROM harness_runs") == 2000
    for worker in workers:
        worker.signal(signal.SIGTERM)
    assert [w.wait() for w in workers] == [0, 0]


def test_job_of_a_sigkilled_worker_is_reclaimed_after_its_lease_and_completes_once(
    start_worker: StartWorker, conn: Conn
) -> None:
    job_id = enqueue(conn, NewJob("record", {"sleep_on_attempt": 1})).job_id
    doomed = start_worker("--lease-seconds", "1.5")
    wait_until(lambda: run_started(conn, job_id), what="first run started")
    doomed.signal(signal.SIGKILL)
    doomed.wait()
    assert job_row(conn, job_id)[0] == "processing"  # nobody finished it
    start_worker("--lease-seconds", "1.5")
    wait_until(lambda: job_row(conn, job_id)[0] == "completed", what="reclaimed and completed")
    _, attempt, error, _ = job_row(conn, job_id)
    assert attempt == 2 and "lease expired on attempt 1" in error
    assert [a for a, _ in effects_of(conn, job_id)] == [2]


def test_worker_reconnects_after_its_connections_are_terminated(
    start_worker: StartWorker, conn: Conn
) -> None:
    job_id = enqueue(conn, NewJob("record", {"sleep_on_attempt": 1, "pause": 1.5})).job_id
    worker = start_worker("--poll-interval", "30")
    wait_until(lambda: run_started(conn, job_id), what="first run started")
    terminated = scalar(
        conn,
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE datname = current_database() AND application_name LIKE 'stride-%%'",
    )
    assert terminated >= 2
    wait_until(lambda: job_row(conn, job_id)[0] == "completed", what="completed after reconnect")
    _, attempt, error, _ = job_row(conn, job_id)
    assert attempt == 2 and "connection lost during attempt 1" in error
    assert [a for a, _ in effects_of(conn, job_id)] == [2]
    assert "reconnecting" in worker.output()
    # Still working (and listening): new work is picked up well within the 30 s poll.
    later = enqueue(conn, NewJob("record", {})).job_id
    wait_until(lambda: job_row(conn, later)[0] == "completed", timeout=15, what="new job done")
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0


def test_worker_paused_past_its_lease_cannot_overwrite_the_finished_job(
    start_worker: StartWorker, conn: Conn
) -> None:
    job_id = enqueue(conn, NewJob("record", {"sleep_on_attempt": 1, "pause": 1.0})).job_id
    paused = start_worker("--lease-seconds", "1")
    wait_until(lambda: run_started(conn, job_id), what="first run started")
    paused.signal(signal.SIGSTOP)
    try:
        rescuer = start_worker("--lease-seconds", "1")
        wait_until(lambda: job_row(conn, job_id)[0] == "completed", what="rescued")
        finished = job_row(conn, job_id)
    finally:
        paused.signal(signal.SIGCONT)
    # The paused worker's handler ends, its fenced completion matches nothing and
    # it rolls back: the job stays as the rescuer left it, with one effect.
    wait_until(lambda: "outcome=lost" in paused.output(), what="paused worker gave up")
    assert job_row(conn, job_id) == finished
    assert finished[1] == 2
    assert effects_of(conn, job_id) == [(2, rescuer.process.pid)]


def test_sigterm_finishes_jobs_in_hand_releases_the_rest_and_exits_0(
    start_worker: StartWorker, conn: Conn
) -> None:
    enqueue_many(conn, [NewJob("record", {"sleep": 0.3}) for _ in range(40)])
    worker = start_worker("--concurrency", "2", "--batch-size", "10")
    wait_until(lambda: scalar(conn, "SELECT count(*) FROM harness_runs") >= 2, what="running")
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    counts = dict(
        conn.execute("SELECT status, count(*) FROM background_jobs GROUP BY status").fetchall()
    )
    assert "processing" not in counts
    assert counts["completed"] >= 2 and counts.get("pending", 0) > 0
    assert sum(counts.values()) == 40
    # Every run that started was finished and committed; released jobs kept their attempts.
    assert scalar(conn, "SELECT count(*) FROM harness_effects") == counts["completed"]
    assert scalar(
        conn, "SELECT count(*) FROM background_jobs WHERE status = 'pending' AND attempt = 0"
    ) == counts.get("pending", 0)


def test_poison_job_in_a_worker_process_ends_dead_with_its_error(
    start_worker: StartWorker, conn: Conn
) -> None:
    job_id = enqueue(conn, NewJob("record", {"fail": True}, max_retries=2)).job_id
    start_worker()
    wait_until(lambda: job_row(conn, job_id)[0] == "dead", what="poison dead")
    _, attempt, error, _ = job_row(conn, job_id)
    assert attempt == 3
    assert error == f"ValueError: poisoned payload in job {job_id}"
    assert effects_of(conn, job_id) == []
