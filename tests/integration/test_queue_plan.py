"""Query-plan regression: the claim query and the runbook's progress queries walk an index."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from stride.queue.jobs import (
    COMPLETE_SQL,
    NewJob,
    claim_due_jobs,
    complete,
    complete_many,
    enqueue,
)
from stride.storage.queries import load_queries

Conn = psycopg.Connection[Any]

# A queue that has seen some traffic: mostly finished work, some pending, a few
# running and dead; priorities and due times spread out.
POPULATE = """
INSERT INTO background_jobs (job_type, payload, status, priority, attempt, scheduled_for,
                             locked_by, locked_until, completed_at)
SELECT CASE WHEN g % 5 = 0 THEN 'inference.objective_backfill' ELSE 'projection.update' END,
       jsonb_build_object('n', g),
       s.status,
       g % 3,
       CASE WHEN s.status = 'pending' THEN 0 ELSE 1 END,
       now() - (g % 1000) * interval '1 second' + CASE WHEN g % 7 = 0 THEN interval '1 hour'
                                                      ELSE interval '0' END,
       CASE WHEN s.status = 'processing' THEN 'w' END,
       CASE WHEN s.status = 'processing' THEN now() + interval '1 minute' END,
       CASE WHEN s.status IN ('completed', 'dead') THEN now() END
FROM generate_series(1, 50000) AS g
CROSS JOIN LATERAL (
    SELECT CASE WHEN g % 10 < 7 THEN 'completed' WHEN g % 10 < 9 THEN 'pending'
                WHEN g % 20 = 9 THEN 'processing' ELSE 'dead' END AS status
) AS s
"""


def _plan_nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _plan_nodes(child)


def _claim_ids_plan(conn: Conn, job_types: list[str] | None) -> list[dict[str, Any]]:
    """The plan of stride_claimable_jobs' own query, as the function runs it: its SET
    options applied, planned generically (a SQL function's parameters are unknown)."""
    body, config = conn.execute(
        "SELECT prosrc, proconfig FROM pg_proc WHERE proname = 'stride_claimable_jobs'"
    ).fetchone()  # type: ignore[misc]
    with conn.transaction(force_rollback=True):
        for setting in config:
            name, value = setting.split("=", 1)
            conn.execute("SELECT set_config(%s::text, %s::text, true)", (name, value))
        conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        # The simple query protocol: the extended one would take the body's $1 for its own.
        psycopg.ClientCursor(conn).execute(f"PREPARE claimable (integer, text[]) AS {body}")
        try:
            # Interpolated by the client: EXPLAIN takes no protocol parameters.
            row = (
                psycopg.ClientCursor(conn)
                .execute("EXPLAIN (FORMAT JSON) EXECUTE claimable(100, %s::text[])", (job_types,))
                .fetchone()
            )
        finally:
            conn.execute("DEALLOCATE claimable")
    assert row is not None
    document = row[0] if isinstance(row[0], list) else json.loads(row[0])
    return list(_plan_nodes(document[0]["Plan"]))


@pytest.mark.parametrize("job_types", [None, ["projection.update"]], ids=["all", "some"])
@pytest.mark.parametrize("statistics", ["current", "stale"])
def test_claim_walks_the_claim_index_in_order(
    conn: Conn, job_types: list[str] | None, statistics: str
) -> None:
    """Whatever the statistics say, a claim reads due jobs in the claim index's order and
    stops at the batch size: no sequential scan, no sort of every pending job. "stale":
    analyzed while empty, as a queue is right after a fan-out fills it."""
    if statistics == "stale":
        conn.execute("ANALYZE background_jobs")
    conn.execute(POPULATE)
    if statistics == "current":
        conn.execute("ANALYZE background_jobs")
    nodes = _claim_ids_plan(conn, job_types)
    kinds = [n["Node Type"] for n in nodes]
    scans = [(n["Node Type"], n.get("Index Name")) for n in nodes if "Scan" in n["Node Type"]]
    assert scans == [("Index Scan", "background_jobs_claim")], kinds
    assert "Sort" not in kinds, kinds
    # And the claim itself takes the due jobs in that order.
    due = [
        r[0]
        for r in conn.execute(
            "SELECT id FROM background_jobs WHERE status = 'pending' AND scheduled_for <= now()"
            " AND (%(types)s::text[] IS NULL OR job_type = ANY(%(types)s::text[]))"
            " ORDER BY priority DESC, scheduled_for, id LIMIT 100",
            {"types": job_types},
        )
    ]
    claimed = claim_due_jobs(conn, "w", 100, 30.0, job_types)
    assert [j.id for j in claimed] == due


def test_completing_a_batch_finds_its_jobs_by_primary_key(conn: Conn) -> None:
    """The fence is looked up per row, never a join that re-reads the batch for each job
    (a quadratic nested loop under statistics that expect one processing job)."""
    conn.execute("ANALYZE background_jobs")  # stale: empty
    conn.execute(POPULATE)
    claimed = claim_due_jobs(conn, "w2", 500, 30.0)
    params = {
        "ids": [j.id for j in claimed],
        "fence": json.dumps({str(j.id): j.attempt for j in claimed}),
        "owner": "w2",
    }
    with conn.transaction(force_rollback=True):
        row = conn.execute(
            "EXPLAIN (ANALYZE, FORMAT JSON) " + COMPLETE_SQL, params, prepare=False
        ).fetchone()
    assert row is not None
    nodes = list(_plan_nodes(row[0][0]["Plan"]))
    kinds = [n["Node Type"] for n in nodes]
    assert "Nested Loop" not in kinds and "Function Scan" not in kinds, kinds
    assert nodes[0]["Actual Rows"] == len(claimed) == 500
    assert complete_many(conn, claimed) == {j.id for j in claimed}


def test_claims_on_an_empty_queue_leave_no_cached_plan_behind(conn: Conn) -> None:
    """A claim is planned afresh every time, so a plan made while the queue was empty by its
    statistics (a sequential scan then) is never reused once the table has filled up."""
    conn.execute("ANALYZE background_jobs")  # empty: reltuples 0
    for _ in range(10):  # the driver would prepare from the fifth execution on
        assert claim_due_jobs(conn, "w", batch_size=100, lease_seconds=30.0) == []
        assert claim_due_jobs(conn, "w", 100, 30.0, job_types=["projection.update"]) == []
    prepared = conn.execute(
        "SELECT statement FROM pg_prepared_statements WHERE statement LIKE %s",
        ("%SET status = 'processing'%",),
    ).fetchall()
    assert prepared == []
    conn.execute(POPULATE)
    claimed = claim_due_jobs(conn, "w", batch_size=100, lease_seconds=30.0)
    assert len(claimed) == 100


# Several backfills' worth of jobs: organic ones without a source, and fan-out
# jobs of 20 sources (one of them long and incompressible), mostly finished.
POPULATE_SOURCES = """
INSERT INTO background_jobs (job_type, payload, status, completed_at)
SELECT CASE WHEN g %% 1000 IN (3, 7) THEN 'inference.objective_backfill'
            ELSE 'projection.update' END,
       CASE WHEN g %% 3 = 0 THEN jsonb_build_object('event_id', g::text)
            WHEN g %% 20 = 7 THEN jsonb_build_object('source', %(long_source)s::text)
            ELSE jsonb_build_object('source', 'deploy.v' || (g %% 20)) END,
       CASE WHEN g %% 10 < 8 THEN 'completed' ELSE 'pending' END,
       CASE WHEN g %% 10 < 8 THEN now() END
FROM generate_series(1, 60000) AS g
"""
LONG_SOURCE = "SELECT string_agg(md5(i::text), '') FROM generate_series(1, 200) AS i"


@pytest.mark.parametrize("report", ["backfill_controller_status", "backfill_fanout_status"])
@pytest.mark.parametrize("which", ["short", "long"])
def test_runbook_progress_queries_use_the_source_index(conn: Conn, report: str, which: str) -> None:
    long_source = conn.execute(LONG_SOURCE).fetchone()[0]  # type: ignore[index]
    conn.execute(POPULATE_SOURCES, {"long_source": long_source})
    conn.execute("ANALYZE background_jobs")
    source = "deploy.v3" if which == "short" else long_source
    query = load_queries("runbook_reports.sql")[report]
    row = conn.execute("EXPLAIN (FORMAT JSON) " + query, {"source": source}).fetchone()
    assert row is not None
    nodes = list(_plan_nodes(row[0][0]["Plan"]))
    scans = [(n["Node Type"], n.get("Index Name")) for n in nodes if "Scan" in n["Node Type"]]
    assert not [n for n in nodes if n["Node Type"] == "Seq Scan"], scans
    assert any(name == "background_jobs_source" for _, name in scans), scans
    # And the query runs: a 6,400-character source is just another value.
    counts = dict(conn.execute(query, {"source": source}).fetchall())
    assert sum(counts.values()) > 0


def test_a_job_with_any_source_can_be_claimed_and_completed(conn: Conn) -> None:
    """The claim and the settlement rewrite index rows: no source is too long for them."""
    long_source = conn.execute(
        "SELECT string_agg(md5(i::text), '') FROM generate_series(1, 3000) AS i"
    ).fetchone()[0]  # type: ignore[index]
    job_id = enqueue(conn, NewJob("t", {"source": long_source})).job_id
    [job] = claim_due_jobs(conn, "w", 10, 30.0)
    assert job.id == job_id
    assert complete(conn, job)
    assert conn.execute(
        "SELECT status FROM background_jobs WHERE payload->>'source' = %s", (long_source,)
    ).fetchone() == ("completed",)
