"""A worker frozen inside a transaction (SIGSTOP) holds the others up by about a lease, no more.

Three real worker processes run the product's handlers over a 3,000-user
backfill. The fault-free run sets the pace; in the second run one worker stops
itself with SIGSTOP inside a transaction — holding the controller's checkpoint
row, or a projection batch's user locks and uncommitted writes — and the other
two must finish within the fault-free time plus twice the lease. Resumed, the
frozen worker finds its sessions gone, changes nothing, and carries on.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from tests.acceptance.harness_process import WorkerProcess
from tests.conftest import wait_until
from tests.populations import NOW, make_population

from stride.backfill.trigger import trigger_backfill

Conn = psycopg.Connection[Any]

USERS = 3000
LEASE_SECONDS = 4.0
WORKER_OPTIONS = ("--product", "--lease-seconds", str(LEASE_SECONDS), "--batch-size", "100")

# Done: the controller completed, no job of the source open, and every
# snapshotted user's two objective projections written since the trigger.
RUN_DONE = """
SELECT
    (SELECT count(*) FROM background_jobs
     WHERE job_type = 'inference.objective_backfill' AND payload->>'source' = %(source)s
       AND status = 'completed') = 1
    AND NOT EXISTS (SELECT 1 FROM background_jobs
                    WHERE payload->>'source' = %(source)s
                      AND status IN ('pending', 'processing'))
    AND NOT EXISTS (
        SELECT 1
        FROM backfill_runs r
        JOIN backfill_snapshot_users s ON s.snapshot_id = r.snapshot_id
        LEFT JOIN projections st ON st.user_id = s.user_id
             AND st.projection_type = 'objective_state' AND st.key = 'active'
        LEFT JOIN projections adv ON adv.user_id = s.user_id
             AND adv.projection_type = 'objective_advisory' AND adv.key = 'overview'
        WHERE r.source = %(source)s
          AND (st.updated_at IS NULL OR st.updated_at < r.created_at
               OR adv.updated_at IS NULL OR adv.updated_at < r.created_at)
    )
"""

STATE_QUERIES = (
    "SELECT id, status, attempt, locked_by, locked_until, scheduled_for, error_message "
    "FROM background_jobs ORDER BY id",
    "SELECT job_id, next_position, jobs_enqueued, fanout_done_at, updated_at "
    "FROM backfill_runs ORDER BY job_id",
    "SELECT user_id, projection_type, key, version, updated_at FROM projections "
    "ORDER BY user_id, projection_type, key",
)


class Process(WorkerProcess):
    """A harness worker with its stderr in a file, started without waiting (see Fleet)."""

    def __init__(self, database_url: str, log: Path, *options: str) -> None:
        super().__init__(database_url, log, *options, wait_ready=False)

    def stopped_by_signal(self) -> bool:
        """State T in /proc: the process stopped itself (SIGSTOP) and waits for SIGCONT."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return fields[0] == "T"

    def terminate(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(30)

    def close(self, *, graceful: bool = False) -> None:
        """As WorkerProcess.close, for a process that may be stopped: continued first."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
        super().close(graceful=graceful)


class Fleet:
    def __init__(self, database_url: str, tmp_path: Path) -> None:
        self.database_url = database_url
        self.tmp_path = tmp_path
        self.started: list[Process] = []

    def start(self, *options: str) -> list[Process]:
        """Start one process per option tuple, all at once, and wait until each is ready."""
        return self.start_many([options])

    def start_many(self, option_sets: list[tuple[str, ...]]) -> list[Process]:
        batch = []
        for options in option_sets:
            log = self.tmp_path / f"worker-{len(self.started)}.log"
            process = Process(self.database_url, log, *WORKER_OPTIONS, *options)
            self.started.append(process)
            batch.append(process)
        for process in batch:
            wait_until(process.ready, what="worker ready")
            assert process.process.poll() is None, process.output()
        return batch


@pytest.fixture
def fleet(database_url: str, tmp_path: Path) -> Iterator[Fleet]:
    workers = Fleet(database_url, tmp_path)
    yield workers
    for process in workers.started:
        process.close()


def run_done(conn: Conn, source: str) -> bool:
    row = conn.execute(RUN_DONE, {"source": source}).fetchone()
    return bool(row and row[0])


def state(conn: Conn) -> list[list[tuple[Any, ...]]]:
    return [conn.execute(query).fetchall() for query in STATE_QUERIES]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("freeze_in", ["controller", "projection"])
def test_a_frozen_worker_delays_a_backfill_by_at_most_twice_its_lease(
    fleet: Fleet, conn: Conn, freeze_in: str
) -> None:
    users = make_population(conn, USERS)
    freezer_options = ("--freeze-source", "frozen", "--freeze-in", freeze_in)
    [freezer] = fleet.start(*freezer_options)
    others = fleet.start_many([(), ()])

    # Fault-free pace: all three workers up before the trigger.
    started = time.monotonic()
    assert trigger_backfill(conn, "fault-free").outcome == "enqueued"
    wait_until(lambda: run_done(conn, "fault-free"), timeout=120, interval=0.1, what="fault-free")
    fault_free = time.monotonic() - started

    # The faulty run: the freezer alone picks up the controller, so the freeze
    # lands where this test asks; the two others join once it is frozen.
    assert [p.terminate() for p in others] == [0, 0]
    started = time.monotonic()
    assert trigger_backfill(conn, "frozen").outcome == "enqueued"
    wait_until(freezer.stopped_by_signal, timeout=60, what="the worker froze")
    assert f"in={freeze_in}" in freezer.output()
    rescuers = fleet.start_many([(), ()])
    budget = fault_free + 2 * LEASE_SECONDS
    wait_until(
        lambda: run_done(conn, "frozen"), timeout=budget + 20, interval=0.1, what="frozen run"
    )
    took = time.monotonic() - started
    print(f"fault-free {fault_free:.1f}s, with a frozen worker {took:.1f}s, budget {budget:.1f}s")
    assert took <= budget, f"took {took:.1f}s, fault-free {fault_free:.1f}s"
    assert freezer.stopped_by_signal()  # the others did it all while it was frozen
    assert [p.terminate() for p in rescuers] == [0, 0]

    # Resumed, the frozen worker finds its sessions gone and changes nothing.
    before = state(conn)
    freezer.process.send_signal(signal.SIGCONT)
    wait_until(
        lambda: "recovered_in_hand" in freezer.output().split("resumed pid=", 1)[-1],
        what="the resumed worker dropped what it held",
    )
    after_resume = freezer.output().split("resumed pid=", 1)[1]
    assert "runner connection lost" in after_resume
    assert "outcome=completed" not in after_resume
    assert state(conn) == before
    assert conn.execute(
        "SELECT count(*) FROM background_jobs WHERE status NOT IN ('completed')"
    ).fetchone() == (0,)

    # And it carries on: new work is done by it alone.
    conn.execute(
        "INSERT INTO events (user_id, event_type, timestamp, data) "
        "VALUES (%s, 'profile.updated', %s, '{\"training_modality\": \"cycling\"}')",
        (users[1], NOW),
    )
    wait_until(
        lambda: (
            conn.execute(
                "SELECT bool_and(status = 'completed') FROM background_jobs "
                "WHERE job_type = 'projection.update' AND payload->>'source' IS NULL"
            ).fetchone()
            == (True,)
        ),
        what="the organic job done by the resumed worker",
    )
    assert freezer.process.poll() is None
    assert freezer.terminate() == 0


def stride_sessions(conn: Conn) -> dict[str, int]:
    return dict(
        conn.execute(
            "SELECT application_name, count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name LIKE 'stride-%%' GROUP BY 1"
        ).fetchall()
    )


def test_a_frozen_idle_worker_loses_its_listener_and_leadership_sessions_and_comes_back(
    fleet: Fleet, conn: Conn
) -> None:
    # Nothing to do, so no transaction is open: what a frozen idle worker still
    # holds is its LISTEN (the server keeps notifications until every listener
    # read them) and the maintenance lock.
    [worker] = fleet.start("--lease-seconds", "1", "--poll-interval", "30")
    wait_until(
        lambda: (
            stride_sessions(conn).get("stride-listener") == 1
            and stride_sessions(conn).get("stride-maintenance") == 1
        ),
        what="listening and leading",
    )
    time.sleep(2.5)  # several leases: a live listener keeps its session
    assert stride_sessions(conn).get("stride-listener") == 1
    worker.process.send_signal(signal.SIGSTOP)
    try:
        wait_until(
            lambda: (
                "stride-listener" not in stride_sessions(conn)
                and "stride-maintenance" not in stride_sessions(conn)
            ),
            timeout=10,
            what="the server ended the frozen worker's idle sessions",
        )
    finally:
        worker.process.send_signal(signal.SIGCONT)
    wait_until(lambda: stride_sessions(conn).get("stride-listener") == 1, what="listening again")
    # Woken by a notification, well within the 30 s poll interval.
    [user] = make_population(conn, 2, empty_every=2)[1:]
    conn.execute(
        "INSERT INTO events (user_id, event_type, timestamp, data) "
        'VALUES (%s, \'set.logged\', %s, \'{"exercise": "squat", "reps": 3}\')',
        (user, NOW),
    )
    wait_until(
        lambda: conn.execute("SELECT status FROM background_jobs").fetchall() == [("completed",)],
        timeout=10,
        what="new work picked up",
    )
