"""Error history (written only on failure paths, bounded) and worker heartbeats, on PostgreSQL."""

from __future__ import annotations

from typing import Any

import psycopg
from tests.conftest import wait_until

from stride.queue.handlers import HandlerRegistry, JobContext
from stride.queue.heartbeats import (
    WorkerPresence,
    forget_silent_workers,
    record_heartbeat,
    retire_worker,
)
from stride.queue.jobs import (
    NewJob,
    claim_due_jobs,
    complete,
    enqueue,
    fail,
    mark_dead,
)
from stride.queue.maintenance import reclaim_expired_leases
from stride.queue.status import list_jobs, show_job, workers_report
from stride.queue.worker import Worker

Conn = psycopg.Connection[Any]


def history(conn: Conn, job_id: int) -> Any:
    row = conn.execute("SELECT error_history FROM background_jobs WHERE id = %s", (job_id,))
    return row.fetchone()[0]  # type: ignore[index]


def claim_one(conn: Conn, job_id: int, owner: str = "w/0") -> Any:
    conn.execute("UPDATE background_jobs SET scheduled_for = now() WHERE id = %s", (job_id,))
    [job] = claim_due_jobs(conn, owner, 1, 30)
    assert job.id == job_id
    return job


def test_success_writes_no_history(conn: Conn) -> None:
    job_id = enqueue(conn, NewJob("t", {})).job_id
    assert complete(conn, claim_one(conn, job_id))
    assert history(conn, job_id) is None
    detail = show_job(conn, job_id)
    assert detail is not None and detail.errors == []


def test_history_keeps_the_last_ten_failures_oldest_first(conn: Conn) -> None:
    job_id = enqueue(conn, NewJob("t", {}, max_retries=20)).job_id
    for n in range(1, 16):
        fail(conn, claim_one(conn, job_id, owner=f"w{n}/0"), f"boom {n}", delay_seconds=0)
    entries = history(conn, job_id)
    assert [e["attempt"] for e in entries] == list(range(6, 16))
    assert [e["error"] for e in entries] == [f"boom {n}" for n in range(6, 16)]
    assert {e["outcome"] for e in entries} == {"retry"}
    assert [e["worker"] for e in entries] == [f"w{n}/0" for n in range(6, 16)]
    assert [e["at"] for e in entries] == sorted(e["at"] for e in entries)


def test_dead_given_up_and_reclaimed_attempts_are_recorded(conn: Conn) -> None:
    job_id = enqueue(conn, NewJob("t", {}, max_retries=2)).job_id
    fail(conn, claim_one(conn, job_id), "first", delay_seconds=0)
    claim_one(conn, job_id, owner="crashed:1:aa/0")
    conn.execute("UPDATE background_jobs SET locked_until = now() - interval '1 s'")
    assert reclaim_expired_leases(conn) == 1
    fail(conn, claim_one(conn, job_id), "third", delay_seconds=0)
    entries = history(conn, job_id)
    assert [(e["attempt"], e["outcome"]) for e in entries] == [
        (1, "retry"),
        (2, "reclaimed"),
        (3, "dead"),
    ]
    assert "lease expired on attempt 2 (worker crashed:1:aa/0" in entries[1]["error"]

    other = enqueue(conn, NewJob("u", {})).job_id
    assert mark_dead(conn, claim_one(conn, other), "no handler registered")
    assert [(e["outcome"], e["error"]) for e in history(conn, other)] == [
        ("dead", "no handler registered")
    ]


def test_retrying_is_shown_not_stored(conn: Conn) -> None:
    job_id = enqueue(conn, NewJob("t", {}, max_retries=3)).job_id
    fail(conn, claim_one(conn, job_id), "flaky", delay_seconds=3600)
    [shown] = list_jobs(conn, status="retrying")
    assert (shown.id, shown.status, shown.stored_status) == (job_id, "retrying", "pending")
    assert list_jobs(conn, status="pending") == []
    assert conn.execute("SELECT status FROM background_jobs").fetchone() == ("pending",)


def test_heartbeat_rows_upsert_retire_and_forget(conn: Conn) -> None:
    presence = WorkerPresence("h:1:aa", 2, ["t"], 30.0, "h", 1)
    record_heartbeat(conn, presence)
    first = conn.execute("SELECT heartbeat_at FROM worker_heartbeats").fetchone()
    record_heartbeat(conn, presence)
    rows = conn.execute("SELECT worker_id, heartbeat_at, job_types FROM worker_heartbeats")
    [(worker_id, beat, job_types)] = rows.fetchall()
    assert worker_id == "h:1:aa" and job_types == ["t"] and first is not None and beat > first[0]
    [live] = workers_report(conn).live
    assert live.worker_id == "h:1:aa" and live.claims("t") and not live.claims("u")

    conn.execute("UPDATE worker_heartbeats SET heartbeat_at = now() - interval '2 days'")
    report = workers_report(conn)
    assert report.live == [] and not report.workers[0].live
    assert forget_silent_workers(conn) == 1

    record_heartbeat(conn, presence)
    retire_worker(conn, "h:1:aa")
    assert conn.execute("SELECT count(*) FROM worker_heartbeats").fetchone() == (0,)


def test_a_worker_beats_while_running_and_retires_on_stop(database_url: str, conn: Conn) -> None:
    seen: list[tuple[Any, ...]] = []

    def look(ctx: JobContext) -> None:
        # The lease keeper registers the worker as it starts, beside the runners.
        rows = wait_until(
            lambda: ctx.conn.execute(
                "SELECT worker_id, concurrency, job_types, lease_seconds FROM worker_heartbeats"
            ).fetchall(),
            timeout=10,
            what="heartbeat row",
        )
        seen.extend(rows)

    registry = HandlerRegistry()
    registry.register("t", look)
    enqueue(conn, NewJob("t", {}))
    Worker(database_url, registry, lease_seconds=5, worker_id="itest:1:aa").run(once=True)
    assert seen == [("itest:1:aa", 1, None, 5.0)]
    assert conn.execute("SELECT status FROM background_jobs").fetchone() == ("completed",)
    # Stopped cleanly: its row is gone, not left to go silent.
    assert conn.execute("SELECT count(*) FROM worker_heartbeats").fetchone() == (0,)
