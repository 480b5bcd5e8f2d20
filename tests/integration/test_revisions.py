"""Ordered revisions on real PostgreSQL: the upsert's guard, rolling deploys, --only-stale.

A rolling deploy is played with two registries of the same read model, an old
and a new revision, each run by its own in-process Worker at the same time.
A test-only trigger records every write to `projections` (old and new
revision), so the tests check the whole history of writes, not only the end.
"""

from __future__ import annotations

import dataclasses
import random
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg
import pytest
from prometheus_client import REGISTRY
from tests.conftest import wait_until
from tests.populations import NOW, make_population

from stride.app import build_registry
from stride.backfill.control import cancel_backfill
from stride.backfill.fanout import fan_out_step
from stride.backfill.reports import run_history, run_progress
from stride.backfill.revision_report import revision_report
from stride.backfill.trigger import trigger_backfill
from stride.backfill.verify import verify_users
from stride.domain.events import Event
from stride.domain.job_types import BACKFILL_JOB_TYPE, PROJECTION_UPDATE_JOB_TYPE
from stride.projections.registry import (
    OBJECTIVE_FOUNDATION,
    READ_MODELS,
    Outputs,
    ReadModel,
    ReadModelOutput,
)
from stride.queue.handlers import HandlerRegistry
from stride.queue.worker import Worker
from stride.storage.projection_store import ProjectionWrite, write_projections

Conn = psycopg.Connection[Any]

# Every write to projections, as the test-only trigger saw it.
WRITE_HISTORY = """
CREATE TABLE projection_write_history (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id         uuid NOT NULL,
    projection_type text NOT NULL,
    key             text NOT NULL,
    old_revision    integer,
    new_revision    integer NOT NULL
);
CREATE FUNCTION record_projection_write() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO projection_write_history (user_id, projection_type, key, old_revision, new_revision)
    VALUES (NEW.user_id, NEW.projection_type, NEW.key,
            CASE WHEN TG_OP = 'UPDATE' THEN OLD.revision END, NEW.revision);
    RETURN NULL;
END
$$;
CREATE TRIGGER projections_write_history AFTER INSERT OR UPDATE ON projections
    FOR EACH ROW EXECUTE FUNCTION record_projection_write();
"""

REGRESSIONS = """
SELECT user_id, projection_type, key, old_revision, new_revision
FROM projection_write_history
WHERE new_revision < old_revision
ORDER BY id
"""

PROBE_EVENT = "test.revision_probe"
PROBE_ROW = ("revision_probe", "latest")


def probe_model(revision: int) -> ReadModel:
    """A read model registered only here: its data says which revision computed it."""

    def fold(events: Sequence[Event], now: datetime) -> Outputs:
        return {PROBE_ROW: {"logic": f"r{revision}", "events": len(events)}}

    return ReadModel(
        name="revision_probe",
        event_types=frozenset({PROBE_EVENT}),
        input_event_types=frozenset({PROBE_EVENT}),
        timestamp_only_event_types=frozenset(),
        outputs=(ReadModelOutput(*PROBE_ROW, f"revision_probe/r{revision}", revision),),
        fold=fold,
    )


def objective_foundation_at(revision: int) -> ReadModel:
    """The real read model, relabelled as another revision of itself."""
    return dataclasses.replace(
        OBJECTIVE_FOUNDATION,
        outputs=tuple(
            dataclasses.replace(o, model_version=f"{o.name}/r{revision}", revision=revision)
            for o in OBJECTIVE_FOUNDATION.outputs
        ),
    )


def superseded_jobs() -> float:
    value = REGISTRY.get_sample_value(
        "stride_jobs_superseded_total", {"job_type": PROJECTION_UPDATE_JOB_TYPE}
    )
    return value or 0.0


def outdated_jobs() -> float:
    value = REGISTRY.get_sample_value(
        "stride_jobs_outdated_total", {"job_type": PROJECTION_UPDATE_JOB_TYPE}
    )
    return value or 0.0


@pytest.fixture
def history(conn: Conn) -> Conn:
    conn.execute(WRITE_HISTORY)
    return conn


WorkerStarter = Callable[[HandlerRegistry], Worker]


@pytest.fixture
def start_worker(database_url: str) -> Iterator[WorkerStarter]:
    """Workers on threads, as separate deploys of the code; stopped and joined at teardown."""
    running: list[tuple[Worker, threading.Thread]] = []

    def start(registry: HandlerRegistry) -> Worker:
        worker = Worker(
            database_url,
            registry,
            concurrency=2,
            batch_size=8,
            poll_interval=0.1,
            user_busy_delay=0.02,
            lease_seconds=30,
        )
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        running.append((worker, thread))
        return worker

    yield start
    for worker, _ in running:
        worker.stop()
    for _, thread in running:
        thread.join(timeout=20)
        assert not thread.is_alive(), "worker did not stop"


def queue_drained(conn: Conn) -> bool:
    row = conn.execute(
        "SELECT count(*) FROM background_jobs WHERE status IN ('pending', 'processing')"
    ).fetchone()
    return row == (0,)


def add_users(conn: Conn, count: int) -> list[UUID]:
    rows = conn.execute(
        "INSERT INTO users SELECT FROM generate_series(1, %s) RETURNING id", (count,)
    ).fetchall()
    return [row[0] for row in rows]


def append_probes(conn: Conn, users: Sequence[UUID]) -> None:
    """One probe event per user, each its own statement: jobs arrive interleaved."""
    for user_id in users:
        conn.execute(
            "INSERT INTO events (user_id, event_type, timestamp) VALUES (%s, %s, now())",
            (user_id, PROBE_EVENT),
        )


# --- the guard, one statement at a time ------------------------------------------------


def _write(user_id: UUID, revision: int, logic: str) -> ProjectionWrite:
    return ProjectionWrite(
        user_id, *PROBE_ROW, {"logic": logic}, f"probe/{revision}", None, revision
    )


def test_a_lower_revision_never_replaces_a_higher_one(history: Conn) -> None:
    conn = history
    [user] = add_users(conn, 1)
    assert write_projections(conn, [_write(user, 2, "new")]).written == 1
    refused = write_projections(conn, [_write(user, 1, "old")])
    assert refused.written == 0 and refused.superseded == ((user, *PROBE_ROW),)
    assert write_projections(conn, [_write(user, 2, "new again")]).superseded == ()
    assert write_projections(conn, [_write(user, 3, "newer")]).written == 1
    row = conn.execute(
        "SELECT data ->> 'logic', revision, version FROM projections WHERE user_id = %s", (user,)
    ).fetchone()
    assert row == ("newer", 3, 3)  # the refused write did not count as a write either
    assert conn.execute(REGRESSIONS).fetchall() == []


def test_a_batch_writes_what_it_may_and_names_what_was_superseded(history: Conn) -> None:
    conn = history
    users = add_users(conn, 4)
    write_projections(conn, [_write(u, 2, "new") for u in users[:2]])
    result = write_projections(conn, [_write(u, 1, "old") for u in users])
    assert result.written == 2
    assert sorted(result.superseded) == sorted((u, *PROBE_ROW) for u in users[:2])


def test_rows_from_before_revisions_are_revision_0_and_any_code_replaces_them(
    conn: Conn,
) -> None:
    [user] = add_users(conn, 1)
    conn.execute(
        "INSERT INTO projections (user_id, projection_type, key, data) VALUES (%s, %s, %s, '{}')",
        (user, *PROBE_ROW),
    )
    assert conn.execute("SELECT revision FROM projections").fetchone() == (0,)
    assert write_projections(conn, [_write(user, 1, "first")]).written == 1


# --- a rolling deploy: old and new workers side by side -----------------------------------


def test_old_and_new_workers_side_by_side_never_regress_a_row(
    history: Conn, start_worker: WorkerStarter
) -> None:
    conn = history
    users = add_users(conn, 30)
    superseded_before = superseded_jobs()
    start_worker(build_registry([probe_model(1)]))  # the old deploy
    start_worker(build_registry([probe_model(2)]))  # the new one, rolling out
    rng = random.Random(7)
    for _ in range(6):  # interleaved traffic, shared by both deploys
        append_probes(conn, rng.sample(users, len(users)))
        wait_until(lambda: queue_drained(conn), timeout=60, what="the queue to drain")
    # Users some new worker has not written yet get more traffic until it has;
    # the old workers keep running and keep taking their share of it.
    for _ in range(20):
        behind = conn.execute(
            "SELECT user_id FROM projections WHERE revision < 2 ORDER BY user_id"
        ).fetchall()
        if not behind:
            break
        append_probes(conn, [row[0] for row in behind])
        wait_until(lambda: queue_drained(conn), timeout=60, what="the queue to drain")

    # The whole history: no write ever took a row from revision 2 back to 1.
    assert conn.execute(REGRESSIONS).fetchall() == []
    written = dict(
        conn.execute(
            "SELECT new_revision, count(*) FROM projection_write_history GROUP BY 1"
        ).fetchall()
    )
    assert written.get(1, 0) > 0 and written.get(2, 0) > 0, written  # both deploys wrote
    # The old deploy did run jobs of users the new one had written: superseded.
    assert superseded_jobs() > superseded_before
    final = conn.execute(
        "SELECT revision, data ->> 'logic', count(*) FROM projections GROUP BY 1, 2"
    ).fetchall()
    assert final == [(2, "r2", len(users))]


def test_backfill_while_old_workers_keep_running_ends_on_the_new_revision(
    history: Conn, database_url: str, start_worker: WorkerStarter
) -> None:
    conn = history
    users = make_population(conn, 80)
    old, new = [objective_foundation_at(1)], [objective_foundation_at(2)]
    start_worker(build_registry(old, outdated_delay=0.2))
    # Before the deploy: the old code projects organic traffic.
    for user_id in users[:40]:
        conn.execute(
            "INSERT INTO events (user_id, event_type, timestamp, data) "
            "VALUES (%s, 'profile.updated', %s, '{\"training_modality\": \"rowing\"}')",
            (user_id, NOW),
        )
    wait_until(lambda: queue_drained(conn), timeout=60, what="organic jobs to drain")
    assert revision_report(conn, old).outputs[0].users_by_revision == {1: 40}

    outdated_before = outdated_jobs()
    start_worker(build_registry(new, outdated_delay=0.2))
    trigger = trigger_backfill(conn, "deploy.r2", read_models=new)
    assert trigger.outcome == "enqueued" and trigger.users == 80
    rng = random.Random(3)
    # Organic traffic goes on during the deploy; either deploy may take it.
    for step in range(30):
        user_id = rng.choice(users)
        conn.execute(
            "INSERT INTO events (user_id, event_type, timestamp, data) "
            "VALUES (%s, 'set.logged', %s, '{}')",
            (user_id, NOW + timedelta(minutes=step)),
        )
    progress = wait_until(
        lambda: (p := run_progress(conn, "deploy.r2")) is not None and p.drained and p,
        timeout=90,
        what="the backfill to drain",
    )
    wait_until(lambda: queue_drained(conn), timeout=60, what="organic jobs to drain")
    assert progress.job_counts.get("dead", 0) == 0

    assert conn.execute(REGRESSIONS).fetchall() == []
    report = revision_report(conn, new)
    for output in report.outputs:
        assert output.users_by_revision == {2: 80}, output
        assert output.users_behind == 0
    # The old deploy met fan-out jobs that ask for revision 2 and handed them on.
    assert outdated_jobs() > outdated_before


# --- --only-stale ----------------------------------------------------------------------------

SNAPSHOT = "SELECT user_id FROM backfill_snapshot_users WHERE snapshot_id = %s"

STALE = """
SELECT u.id FROM users u
WHERE NOT EXISTS (SELECT FROM projections p WHERE p.user_id = u.id
                  AND p.projection_type = 'objective_state' AND p.key = 'active'
                  AND p.revision >= 1)
   OR NOT EXISTS (SELECT FROM projections p WHERE p.user_id = u.id
                  AND p.projection_type = 'objective_advisory' AND p.key = 'overview'
                  AND p.revision >= 1)
"""


def _snapshot(conn: Conn, job_id: int | None) -> set[UUID]:
    row = conn.execute("SELECT snapshot_id FROM backfill_runs WHERE job_id = %s", (job_id,))
    snapshot_id = row.fetchone()[0]  # type: ignore[index]
    return {r[0] for r in conn.execute(SNAPSHOT, (snapshot_id,)).fetchall()}


def test_only_stale_after_a_cancelled_run_snapshots_exactly_the_rest(
    conn: Conn, database_url: str
) -> None:
    users = make_population(conn, 40)
    first = trigger_backfill(conn, "deploy.first")
    assert first.job_id is not None
    # The first chunk is fanned out and projected, then the operator cancels.
    fan_out_step(conn, first.job_id, chunk_users=15)
    Worker(database_url, build_registry(), job_types=[PROJECTION_UPDATE_JOB_TYPE]).run(once=True)
    cancel_backfill(conn, "deploy.first")
    Worker(database_url, build_registry(), job_types=[BACKFILL_JOB_TYPE]).run(once=True)
    done = _snapshot(conn, first.job_id)
    refreshed = {
        r[0]
        for r in conn.execute(
            "SELECT user_id FROM projections WHERE revision = 1 GROUP BY 1 HAVING count(*) = 2"
        ).fetchall()
    }
    assert len(refreshed) == 15 and refreshed <= done
    # One refreshed user's state was written before revisions existed (0): stale
    # again; another's rows come from newer code (revision 5): not stale.
    before, newer = sorted(refreshed)[:2]
    conn.execute(
        "UPDATE projections SET revision = 0 WHERE user_id = %s AND projection_type = %s",
        (before, "objective_state"),
    )
    conn.execute("UPDATE projections SET revision = 5 WHERE user_id = %s", (newer,))
    expected = {r[0] for r in conn.execute(STALE).fetchall()}
    assert expected == (set(users) - refreshed) | {before}

    rest = trigger_backfill(conn, "deploy.rest", only_stale=True)
    assert rest.outcome == "enqueued" and rest.users == len(expected) == 26
    assert "26 stale users" in rest.describe()
    assert _snapshot(conn, rest.job_id) == expected
    payload = conn.execute(
        "SELECT payload FROM background_jobs WHERE id = %s", (rest.job_id,)
    ).fetchone()[0]  # type: ignore[index]
    assert payload["include_all_users"] is False and payload["only_stale"] is True
    assert payload["revisions"] == {"objective_state/active": 1, "objective_advisory/overview": 1}

    Worker(database_url, build_registry(), batch_size=50).run(once=True)
    progress = run_progress(conn, "deploy.rest")
    assert progress is not None and progress.users_total == 26 and progress.complete
    # Now nothing is stale: a third run has no one to snapshot.
    again = trigger_backfill(conn, "deploy.again", only_stale=True)
    assert again.outcome == "no_users" and "no stale users" in again.describe()


def test_fan_out_jobs_carry_the_revisions_of_the_code_that_triggered_the_run(
    conn: Conn,
) -> None:
    make_population(conn, 4)
    trigger = trigger_backfill(conn, "deploy.r7", read_models=[objective_foundation_at(7)])
    assert trigger.job_id is not None
    fan_out_step(conn, trigger.job_id, chunk_users=10)
    revisions = conn.execute(
        "SELECT DISTINCT payload -> 'revisions' FROM background_jobs "
        "WHERE job_type = 'projection.update'"
    ).fetchall()
    assert revisions == [({"objective_state/active": 7, "objective_advisory/overview": 7},)]
    recorded = conn.execute(
        "SELECT revisions FROM backfill_runs WHERE job_id = %s", (trigger.job_id,)
    ).fetchone()
    assert recorded == ({"objective_state/active": 7, "objective_advisory/overview": 7},)
    [run] = run_history(conn, "deploy.r7")
    assert run.revisions == {"objective_state/active": 7, "objective_advisory/overview": 7}
    assert run.as_dict()["revisions"] == run.revisions


def test_verify_and_revision_report_count_users_per_revision(conn: Conn, database_url: str) -> None:
    users = make_population(conn, 12)
    trigger_backfill(conn, "deploy.v1")
    Worker(database_url, build_registry(), batch_size=50).run(once=True)
    conn.execute("UPDATE projections SET revision = 0 WHERE user_id = ANY(%s)", (users[:3],))
    conn.execute("DELETE FROM projections WHERE user_id = %s AND key = 'overview'", (users[3],))

    report = revision_report(conn)
    assert report.users_total == 12
    state, advisory = report.outputs
    assert state.projection == "objective_state/active" and state.running_revision == 1
    assert state.users_by_revision == {0: 3, 1: 9} and state.users_behind == 3
    assert advisory.users_by_revision == {0: 3, 1: 8} and advisory.users_missing == 1
    assert advisory.users_behind == 4 and report.as_dict()["users_total"] == 12

    result = verify_users(conn, users)
    checks = {(c.projection, c.revision): (c.checked, c.drifted) for c in result.by_revision}
    assert checks == {
        ("objective_state/active", 0): (3, 0),
        ("objective_state/active", 1): (9, 0),
        ("objective_advisory/overview", 0): (3, 0),
        ("objective_advisory/overview", 1): (8, 0),
        ("objective_advisory/overview", None): (1, 1),
    }
    assert READ_MODELS == (OBJECTIVE_FOUNDATION,)
