"""A database error that leaves the session alive is the job's failure, never a lost connection.

Real worker processes: jobs whose handler hits a unique violation or an index
row too large for a btree (SQLSTATE 54000, which psycopg files under
OperationalError) are retried with backoff and end dead with their error, in a
bounded number of log lines, while organic work keeps flowing; a controller
whose source is far too long for its dedup keys (written before labels were
checked) no longer blocks the queue.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from tests.acceptance.harness_process import WorkerProcess
from tests.conftest import wait_until
from tests.populations import NOW, make_population

from stride.backfill.trigger import trigger_backfill
from stride.queue.jobs import NewJob, enqueue, enqueue_many

Conn = psycopg.Connection[Any]
# What the queue must never do for these errors.
CONNECTION_LOST_WORDS = ("connection lost", "reconnect", "runner_error")


@pytest.fixture
def start_worker(database_url: str, tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(*options: str) -> WorkerProcess:
        worker = WorkerProcess(database_url, tmp_path / f"worker-{len(started)}.log", *options)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.close(graceful=True)


def statuses(conn: Conn, job_type: str) -> dict[str, int]:
    return dict(
        conn.execute(
            "SELECT status, count(*) FROM background_jobs WHERE job_type = %s GROUP BY 1",
            (job_type,),
        ).fetchall()
    )


@pytest.mark.parametrize(
    ("error", "expected"),
    [("unique", "UniqueViolation"), ("index_row", "ProgramLimitExceeded")],
)
def test_a_handler_database_error_is_retried_with_backoff_then_dead_while_work_flows(
    start_worker: Callable[..., WorkerProcess], conn: Conn, error: str, expected: str
) -> None:
    poison = enqueue(conn, NewJob("db_error", {"error": error}, max_retries=3)).job_id
    worker = start_worker("--retry-base", "0.2", "--batch-size", "5")
    # Organic work arrives while the poison job fails.
    for wave in range(5):
        enqueue_many(conn, [NewJob("record", {"wave": wave}) for _ in range(20)])
        wait_until(
            lambda: statuses(conn, "record").get("completed", 0) == 20 * (wave + 1),  # noqa: B023
            what=f"organic wave {wave} done",
        )
    wait_until(lambda: statuses(conn, "db_error") == {"dead": 1}, what="poison job dead")
    row = conn.execute(
        "SELECT attempt, error_message, completed_at - created_at FROM background_jobs "
        "WHERE id = %s",
        (poison,),
    ).fetchone()
    assert row is not None
    attempt, message, took = row
    assert attempt == 4 and message.startswith(expected), message
    # Three retries after backoffs of at least 0.1, 0.2 and 0.4 s (base 0.2, half jitter).
    assert took.total_seconds() >= 0.7
    log = worker.output()
    assert not [line for line in log.splitlines() if any(w in line for w in CONNECTION_LOST_WORDS)]
    failures = [line for line in log.splitlines() if f"job_id={poison} " in line]
    # One failure line and one outcome line per attempt: nothing loops.
    assert len(failures) == 8, failures
    assert worker.process.poll() is None


def test_a_controller_whose_source_overflows_its_keys_ends_dead_without_blocking_the_queue(
    start_worker: Callable[..., WorkerProcess], conn: Conn
) -> None:
    users = make_population(conn, 40)
    # As if triggered before labels were checked: a 2,650-character source
    # that does not compress, on the controller job and its run.
    long_source = conn.execute(
        "SELECT left(string_agg(md5(i::text), ''), 2650) FROM generate_series(1, 100) AS i"
    ).fetchone()[0]  # type: ignore[index]
    job_id = trigger_backfill(conn, "legacy").job_id
    conn.execute(
        "UPDATE background_jobs SET payload = jsonb_set(payload, '{source}', to_jsonb(%s::text)), "
        "max_retries = 2 WHERE id = %s",
        (long_source, job_id),
    )
    conn.execute("UPDATE backfill_runs SET source = %s WHERE job_id = %s", (long_source, job_id))
    worker = start_worker("--product", "--retry-base", "0.2", "--lease-seconds", "5")
    # Organic events keep coming, and keep being projected.
    for user in users[1:20]:
        conn.execute(
            "INSERT INTO events (user_id, event_type, timestamp, data) "
            'VALUES (%s, \'set.logged\', %s, \'{"exercise": "squat", "reps": 3}\')',
            (user, NOW),
        )
    wait_until(
        lambda: statuses(conn, "inference.objective_backfill") == {"dead": 1},
        timeout=60,
        what="controller dead",
    )
    wait_until(
        lambda: statuses(conn, "projection.update") == {"completed": 19},
        what="organic jobs projected",
    )
    [message] = conn.execute(
        "SELECT error_message FROM background_jobs WHERE id = %s", (job_id,)
    ).fetchone()  # type: ignore[misc]
    assert message.startswith("ProgramLimitExceeded"), message
    log = worker.output()
    assert not [line for line in log.splitlines() if any(w in line for w in CONNECTION_LOST_WORDS)]
    assert len([line for line in log.splitlines() if f"job_id={job_id} " in line]) == 6
