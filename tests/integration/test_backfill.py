"""The objective foundation backfill end to end on real PostgreSQL, with in-process workers."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from itertools import pairwise
from typing import Any

import psycopg
import pytest
from psycopg import sql
from tests.conftest import wait_until
from tests.populations import NOW, make_population

from stride.app import build_registry
from stride.backfill import fanout
from stride.backfill.control import cancel_backfill
from stride.backfill.fanout import fan_out_step, fanout_dedup_key
from stride.backfill.reports import run_history, run_progress, runbook_reports, users_on_old_model
from stride.backfill.trigger import BackfillInputError, controller_dedup_key, trigger_backfill
from stride.backfill.verify import verify_sample, verify_users
from stride.domain.job_types import BACKFILL_JOB_TYPE
from stride.queue.handlers import HandlerRegistry, JobCancelledError, JobContext
from stride.queue.jobs import RetryPolicy, claim_due_jobs, mark_cancelled
from stride.queue.worker import Worker

COVERAGE_MISSING = """
SELECT count(*) FROM users u
WHERE NOT EXISTS (SELECT 1 FROM projections p WHERE p.user_id = u.id
                  AND p.projection_type = 'objective_state' AND p.key = 'active')
   OR NOT EXISTS (SELECT 1 FROM projections p WHERE p.user_id = u.id
                  AND p.projection_type = 'objective_advisory' AND p.key = 'overview')
"""

DUPLICATE_FANOUT = """
SELECT payload->>'user_id', payload->>'event_type', count(*)
FROM background_jobs
WHERE job_type = 'projection.update' AND payload->>'source' = %s
GROUP BY 1, 2 HAVING count(*) > 1
"""


def drain(database_url: str, batch_size: int = 200) -> None:
    Worker(database_url, build_registry(), batch_size=batch_size, lease_seconds=30).run(once=True)


def test_backfill_covers_every_user_including_those_without_events(
    conn: psycopg.Connection[Any], database_url: str
) -> None:
    make_population(conn, 60)
    result = trigger_backfill(conn, "deploy.v1")
    assert result.outcome == "enqueued" and result.users == 60
    drain(database_url)

    assert conn.execute(COVERAGE_MISSING).fetchone() == (0,)
    reports = {r.name: r for r in runbook_reports(conn, "deploy.v1")}
    coverage = dict(
        zip(reports["backfill_coverage"].columns, reports["backfill_coverage"].rows[0], strict=True)
    )
    assert coverage["users_total"] == 60
    assert coverage["users_missing_objective_surfaces_all_users"] == 0
    assert coverage["users_missing_objective_surfaces_signal_users"] == 0
    assert reports["backfill_controller_status"].rows == [["completed", 1]]
    assert [row[0] for row in reports["backfill_fanout_status"].rows] == ["completed"]
    assert conn.execute(DUPLICATE_FANOUT, ("deploy.v1",)).fetchall() == []

    progress = run_progress(conn, "deploy.v1")
    assert progress is not None and progress.complete and progress.problems() == []
    assert progress.users_refreshed == 60 and progress.users_not_on_current_model == 0


def test_fanout_payload_and_synthetic_profile_jobs(
    conn: psycopg.Connection[Any], database_url: str
) -> None:
    users = make_population(conn, 8)
    trigger = trigger_backfill(conn, "deploy.v1")
    payload = conn.execute(
        "SELECT payload FROM background_jobs WHERE id = %s", (trigger.job_id,)
    ).fetchone()[0]  # type: ignore[index]
    assert payload["source"] == "deploy.v1" and payload["include_all_users"] is True
    assert len(payload["event_types"]) == 9 and payload["user_ids"]["count"] == 8
    drain(database_url)
    empty_user = users[0]  # user 0 has no events
    rows = conn.execute(
        "SELECT payload FROM background_jobs WHERE job_type = 'projection.update' AND user_id = %s",
        (empty_user,),
    ).fetchall()
    assert len(rows) == 1
    job = rows[0][0]
    assert job["event_type"] == "profile.updated" and job["synthetic"] is True
    assert set(job) >= {"source", "user_id", "event_type", "event_id"}
    # The synthetic id is deterministic per (source, user).
    again = conn.execute(
        "SELECT md5('stride.objective_backfill:' || %s || ':' || %s::text)::uuid::text",
        ("deploy.v1", empty_user),
    ).fetchone()
    assert again == (job["event_id"],)


def test_fanout_dedup_keys_built_in_sql_equal_the_python_keys(
    conn: psycopg.Connection[Any],
) -> None:
    make_population(conn, 12)
    source = "deploy:v1 'quoted'"  # separators and quotes are part of the label
    trigger = trigger_backfill(conn, source)
    assert trigger.job_id is not None
    step = fan_out_step(conn, trigger.job_id, chunk_users=12)
    users, jobs = step.users, step.jobs_enqueued
    assert users == 12 and jobs > 12
    rows = conn.execute(
        "SELECT dedup_key, payload->>'source', user_id, payload->>'event_type' "
        "FROM background_jobs WHERE job_type = 'projection.update'"
    ).fetchall()
    assert len(rows) == jobs
    for dedup_key, job_source, user_id, event_type in rows:
        assert dedup_key == fanout_dedup_key(job_source, user_id, event_type)
    controller = conn.execute(
        "SELECT dedup_key FROM background_jobs WHERE id = %s", (trigger.job_id,)
    ).fetchone()
    assert controller == (controller_dedup_key(source),)


def test_second_trigger_while_in_flight_enqueues_nothing(
    conn: psycopg.Connection[Any], database_url: str
) -> None:
    make_population(conn, 5)
    first = trigger_backfill(conn, "deploy.v1")
    second = trigger_backfill(conn, "deploy.v1")
    assert second.outcome == "in_flight" and second.job_id == first.job_id
    assert second.describe() == f"already in flight ({first.job_id})"
    drain(database_url)
    third = trigger_backfill(conn, "deploy.v1")  # the first one completed: a new run is allowed
    assert third.outcome == "enqueued" and third.job_id != first.job_id


def test_two_concurrent_triggers_make_one_job(
    database_url: str, conn: psycopg.Connection[Any]
) -> None:
    make_population(conn, 5)
    barrier = threading.Barrier(8)
    outcomes: list[str] = []

    def trigger() -> None:
        with psycopg.connect(database_url, autocommit=True) as own:
            barrier.wait()
            outcomes.append(trigger_backfill(own, "same.second").outcome)

    threads = [threading.Thread(target=trigger) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["enqueued"] + ["in_flight"] * 7
    count = conn.execute(
        "SELECT count(*) FROM background_jobs WHERE job_type = %s", (BACKFILL_JOB_TYPE,)
    ).fetchone()
    assert count == (1,)


def test_hostile_source_is_just_a_label(conn: psycopg.Connection[Any], database_url: str) -> None:
    make_population(conn, 6)
    hostile = "x'; DROP TABLE users; --"
    assert trigger_backfill(conn, hostile).outcome == "enqueued"
    drain(database_url)
    assert conn.execute("SELECT count(*) FROM users").fetchone() == (6,)
    stored = conn.execute(
        "SELECT payload->>'source' FROM background_jobs WHERE job_type = %s", (BACKFILL_JOB_TYPE,)
    ).fetchone()
    assert stored == (hostile,)
    progress = run_progress(conn, hostile)
    assert progress is not None and progress.complete


@pytest.mark.parametrize("source", ["", "   ", "\t\n"])
def test_blank_source_is_rejected(conn: psycopg.Connection[Any], source: str) -> None:
    with pytest.raises(BackfillInputError, match="--source"):
        trigger_backfill(conn, source)


def test_no_users_enqueues_nothing(conn: psycopg.Connection[Any]) -> None:
    assert trigger_backfill(conn, "deploy.v1").outcome == "no_users"
    assert conn.execute("SELECT count(*) FROM background_jobs").fetchone() == (0,)


def test_fanout_resumes_from_checkpoint_without_duplicates(
    conn: psycopg.Connection[Any], database_url: str
) -> None:
    make_population(conn, 30)
    trigger = trigger_backfill(conn, "deploy.v1")
    assert trigger.job_id is not None
    # Two chunks committed, then the controller "dies"; its successor resumes.
    fan_out_step(conn, trigger.job_id, chunk_users=7)
    fan_out_step(conn, trigger.job_id, chunk_users=7)
    position = conn.execute(
        "SELECT next_position FROM backfill_runs WHERE job_id = %s", (trigger.job_id,)
    ).fetchone()
    assert position == (15,)
    drain(database_url)
    assert conn.execute(DUPLICATE_FANOUT, ("deploy.v1",)).fetchall() == []
    assert conn.execute(COVERAGE_MISSING).fetchone() == (0,)


def test_organic_events_during_backfill_are_projected(
    conn: psycopg.Connection[Any], database_url: str
) -> None:
    users = make_population(conn, 20)
    trigger_backfill(conn, "deploy.v1")
    conn.execute(
        "INSERT INTO events (user_id, event_type, timestamp, data) "
        "VALUES (%s, 'objective.set', %s, %s)",
        (
            users[3],
            NOW + timedelta(days=1),
            json.dumps({"objective_id": "late", "mode": "journal"}),
        ),
    )
    drain(database_url)
    data = conn.execute(
        "SELECT data FROM projections WHERE user_id = %s AND projection_type = 'objective_state'",
        (users[3],),
    ).fetchone()[0]  # type: ignore[index]
    assert data["active_objective"]["objective_id"] == "late"
    organic = conn.execute(
        "SELECT status FROM background_jobs WHERE job_type = 'projection.update' "
        "AND payload->>'source' IS NULL"
    ).fetchall()
    assert organic == [("completed",)]


def test_cancel_stops_pending_fanout_and_leaves_organic_jobs(
    conn: psycopg.Connection[Any], database_url: str
) -> None:
    users = make_population(conn, 20)
    trigger = trigger_backfill(conn, "deploy.v1")
    assert trigger.job_id is not None
    fan_out_step(conn, trigger.job_id, chunk_users=10)
    conn.execute(
        "INSERT INTO events (user_id, event_type, timestamp, data) "
        "VALUES (%s, 'set.logged', %s, '{}')",
        (users[1], NOW),
    )
    result = cancel_backfill(conn, "deploy.v1")
    assert result.jobs_cancelled > 0 and result.runs_stopped == 1
    statuses = dict(
        conn.execute(
            "SELECT coalesce(payload->>'source', 'organic'), string_agg(DISTINCT status, ',') "
            "FROM background_jobs WHERE job_type = 'projection.update' GROUP BY 1"
        ).fetchall()
    )
    assert statuses == {"deploy.v1": "cancelled", "organic": "pending"}
    drain(database_url)
    # The controller saw the cancel: no further chunks were fanned out.
    position = conn.execute(
        "SELECT next_position FROM backfill_runs WHERE job_id = %s", (trigger.job_id,)
    ).fetchone()
    assert position == (11,)
    progress = run_progress(conn, "deploy.v1")
    assert progress is not None and not progress.complete


def test_verify_finds_no_drift_after_backfill_and_names_tampered_field(
    conn: psycopg.Connection[Any], database_url: str
) -> None:
    users = make_population(conn, 12)
    trigger_backfill(conn, "deploy.v1")
    drain(database_url)
    clean = verify_sample(conn, 12)
    assert clean.users_checked == 12 and clean.drifts == []
    conn.execute(
        "UPDATE projections SET data = jsonb_set(data, '{active_objective,mode}', '\"tampered\"') "
        "WHERE user_id = %s AND projection_type = 'objective_state'",
        (users[5],),
    )
    result = verify_users(conn, [users[5]])
    assert len(result.drifts) == 1
    drift = result.drifts[0]
    assert drift.user_id == users[5] and drift.path == "active_objective.mode"
    assert drift.stored == "tampered"


def test_old_model_version_is_reported(conn: psycopg.Connection[Any], database_url: str) -> None:
    make_population(conn, 6)
    trigger_backfill(conn, "v1")
    drain(database_url)
    conn.execute(
        "UPDATE projections SET model_version = 'objective_state/old' "
        "WHERE projection_type = 'objective_state'"
    )
    progress = run_progress(conn, "v1")
    assert progress is not None and progress.users_not_on_current_model == 6


def test_users_on_older_model_versions_counts_every_user(
    conn: psycopg.Connection[Any], database_url: str
) -> None:
    make_population(conn, 4)
    trigger_backfill(conn, "v1")
    drain(database_url)
    assert users_on_old_model(conn) == 0
    conn.execute(
        "UPDATE projections SET model_version = 'objective_advisory/old' "
        "WHERE projection_type = 'objective_advisory' AND user_id = "
        "(SELECT min(user_id::text)::uuid FROM projections)"
    )
    assert users_on_old_model(conn) == 1


def test_max_rate_schedules_the_projection_work(conn: psycopg.Connection[Any]) -> None:
    make_population(conn, 30)
    trigger = trigger_backfill(conn, "slow", max_rate=10)
    assert trigger.job_id is not None
    # 10 users/s: a step takes two seconds' worth (20 users), and the controller
    # comes back a second before that work runs out.
    first = fan_out_step(conn, trigger.job_id)
    assert (first.users, first.done) == (20, False)
    assert 0.5 < first.next_step_in <= 1.0
    second = fan_out_step(conn, trigger.job_id)
    assert (second.first_position, second.users, second.done) == (21, 10, True)
    # Each user's jobs are due 1/10 s after the previous user's, across both steps:
    # the rate caps the projection work, not only the enqueueing.
    due = conn.execute(
        "SELECT s.position, min(j.scheduled_for) FROM background_jobs j "
        "JOIN backfill_snapshot_users s ON s.user_id = j.user_id "
        "WHERE j.job_type = 'projection.update' GROUP BY s.position ORDER BY s.position"
    ).fetchall()
    assert [position for position, _ in due] == list(range(1, 31))
    gaps = [(b - a).total_seconds() for (_, a), (_, b) in pairwise(due)]
    assert all(abs(gap - 0.1) < 0.001 for gap in gaps), gaps


def test_a_job_pending_on_retry_keeps_the_run_incomplete(
    conn: psycopg.Connection[Any], database_url: str
) -> None:
    users = make_population(conn, 10)
    # Every projection write for one user fails, as a full disk or a bad deploy would.
    conn.execute(
        sql.SQL("""
        CREATE FUNCTION refuse_one_user() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.user_id = {} THEN RAISE EXCEPTION 'simulated write failure'; END IF;
            RETURN NEW;
        END $$
        """).format(sql.Literal(str(users[3])))
    )
    conn.execute(
        "CREATE TRIGGER refuse BEFORE INSERT OR UPDATE ON projections "
        "FOR EACH ROW EXECUTE FUNCTION refuse_one_user()"
    )
    trigger_backfill(conn, "retrying")
    retry_soon = RetryPolicy(base_seconds=1, max_seconds=1, jitter=0)
    Worker(database_url, build_registry(), retry_policy=retry_soon).run(once=True)
    progress = run_progress(conn, "retrying")
    assert progress is not None
    assert progress.users_refreshed == 9 and progress.jobs_waiting_retry > 0
    assert progress.job_counts["pending"] == progress.jobs_waiting_retry
    assert not progress.complete and progress.outcome == "running"
    assert any("waiting to retry after a failure" in p for p in progress.problems())

    conn.execute("DROP TRIGGER refuse ON projections")
    wait_until(
        lambda: (
            conn.execute("SELECT max(scheduled_for) <= now() FROM background_jobs").fetchone()
            == (True,)
        ),
        what="the retry due",
    )
    Worker(database_url, build_registry(), retry_policy=retry_soon).run(once=True)
    progress = run_progress(conn, "retrying")
    assert progress is not None and progress.complete


def test_a_reused_label_reports_its_latest_run_alone(
    conn: psycopg.Connection[Any], database_url: str
) -> None:
    make_population(conn, 20)
    first = trigger_backfill(conn, "reused")
    drain(database_url)
    second = trigger_backfill(conn, "reused")
    assert second.outcome == "enqueued" and second.job_id != first.job_id
    progress = run_progress(conn, "reused")
    assert progress is not None and progress.job_id == second.job_id
    assert (progress.runs_of_source, progress.label_reused) == (2, True)
    # Nothing of the second run has run: its own counts, not the first run's.
    assert progress.users_refreshed == 0 and progress.job_counts == {}
    assert not progress.complete
    drain(database_url)
    progress = run_progress(conn, "reused")
    assert progress is not None and progress.complete
    assert progress.job_counts == {"completed": progress.jobs_enqueued}
    both_runs = conn.execute(
        "SELECT count(*) FROM background_jobs WHERE job_type = 'projection.update' "
        "AND payload->>'source' = 'reused'"
    ).fetchone()
    assert both_runs == (2 * progress.jobs_enqueued,)


def test_history_lists_every_run_with_its_outcome(
    conn: psycopg.Connection[Any], database_url: str
) -> None:
    make_population(conn, 12)
    done = trigger_backfill(conn, "a")
    drain(database_url)
    stopped = trigger_backfill(conn, "a")
    assert stopped.job_id is not None
    fan_out_step(conn, stopped.job_id, chunk_users=5)
    cancel_backfill(conn, "a")
    running = trigger_backfill(conn, "b", max_rate=5)
    runs = run_history(conn)
    assert [(r.job_id, r.source, r.outcome) for r in runs] == [
        (running.job_id, "b", "running"),
        (stopped.job_id, "a", "cancelled"),
        (done.job_id, "a", "complete"),
    ]
    assert [r.users_total for r in runs] == [12, 12, 12]
    assert runs[2].users_refreshed == 12 and runs[2].dead_jobs == 0
    assert runs[2].duration_seconds > 0 and runs[1].cancelled_at is not None
    assert [r.job_id for r in run_history(conn, "a", limit=1)] == [stopped.job_id]
    assert run_history(conn, "never") == []


def test_a_trigger_in_flight_reports_the_runs_users(conn: psycopg.Connection[Any]) -> None:
    make_population(conn, 7)
    first = trigger_backfill(conn, "deploy.v1")
    assert first.describe() == f"enqueued job {first.job_id} (7 users snapshotted)"
    again = trigger_backfill(conn, "deploy.v1")
    assert again.as_dict() == {
        "outcome": "in_flight",
        "job_id": first.job_id,
        "users": 7,
        "message": f"already in flight ({first.job_id})",
    }


def test_the_controller_runs_one_chunk_per_step_and_completes_after_the_last(
    conn: psycopg.Connection[Any], database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_population(conn, 25)
    trigger = trigger_backfill(conn, "steps")
    monkeypatch.setattr(fanout, "DEFAULT_CHUNK_USERS", 10)
    # A claim of one job at a time: organic work enqueued meanwhile runs between steps.
    organic_after_first_step: list[int] = []
    registry = build_registry()
    controller = registry.get(BACKFILL_JOB_TYPE)
    assert controller is not None

    def step_then_log_in(ctx: JobContext) -> None:
        controller.handler(ctx)
        if not organic_after_first_step:
            organic_after_first_step.append(1)
            ctx.conn.execute(
                "INSERT INTO events (user_id, event_type, timestamp, data) "
                "SELECT id, 'set.logged', now(), '{}' FROM users ORDER BY id LIMIT 1"
            )

    patched = HandlerRegistry()
    patched.register(BACKFILL_JOB_TYPE, step_then_log_in)
    projection = registry.get("projection.update")
    assert projection is not None
    patched.register_batch(
        "projection.update", projection.handler, serialize_by_user=projection.serialize_by_user
    )
    Worker(database_url, patched, batch_size=1).run(once=True)
    assert conn.execute(
        "SELECT status, attempt FROM background_jobs WHERE id = %s", (trigger.job_id,)
    ).fetchone() == ("completed", 1)  # three steps, one attempt: deferrals spend none
    # The organic job, enqueued during the first step, completed before the second step.
    order = conn.execute(
        "SELECT coalesce(payload->>'source', 'organic') FROM background_jobs "
        "WHERE job_type = 'projection.update' AND started_at IS NOT NULL "
        "ORDER BY started_at LIMIT 1"
    ).fetchone()
    assert order == ("organic",)
    progress = run_progress(conn, "steps")
    assert progress is not None and progress.complete and progress.users_fanned_out == 25


def test_a_controller_held_by_a_worker_at_cancel_ends_cancelled_at_its_next_step(
    conn: psycopg.Connection[Any],
) -> None:
    make_population(conn, 20)
    trigger = trigger_backfill(conn, "held")
    [held] = claim_due_jobs(conn, "worker-a", 10, 30)
    assert held.id == trigger.job_id
    result = cancel_backfill(conn, "held")
    # A processing controller cannot be cancelled under its worker: the run is marked.
    assert (result.runs_stopped, result.jobs_cancelled) == (1, 0)
    context = JobContext(conn, held, "worker-a", "", lambda jobs: True)
    with pytest.raises(JobCancelledError, match="cancelled"):
        build_registry().get(BACKFILL_JOB_TYPE).handler(context)  # type: ignore[union-attr]
    assert mark_cancelled(conn, held, "cancelled")
    assert conn.execute("SELECT count(*) FROM background_jobs").fetchone() == (1,)  # no chunk
    progress = run_progress(conn, "held")
    assert progress is not None and progress.outcome == "cancelled" and progress.drained
    assert progress.controller_status == "cancelled" and not progress.complete
