"""Query-plan regression: the claim query and the runbook's progress queries walk an index."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from stride.queue.jobs import CLAIM_SQL, CLAIM_TYPES_SQL, NewJob, claim_due_jobs, complete, enqueue
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


@pytest.mark.parametrize("with_types", [False, True], ids=["all-types", "some-types"])
def test_claim_query_uses_an_index_not_a_seq_scan(conn: Conn, with_types: bool) -> None:
    conn.execute(POPULATE)
    conn.execute("ANALYZE background_jobs")
    conn.execute("SET enable_seqscan = on")
    params: dict[str, Any] = {"worker_id": "w", "lease_seconds": 30.0, "batch_size": 100}
    if with_types:
        params["job_types"] = ["projection.update"]
    with conn.transaction(force_rollback=True):
        row = conn.execute(
            "EXPLAIN (FORMAT JSON) " + (CLAIM_TYPES_SQL if with_types else CLAIM_SQL), params
        ).fetchone()
    assert row is not None
    document = row[0] if isinstance(row[0], list) else json.loads(row[0])
    nodes = list(_plan_nodes(document[0]["Plan"]))
    scans = [(n["Node Type"], n.get("Index Name")) for n in nodes if "Scan" in n["Node Type"]]
    assert not [n for n in nodes if n["Node Type"] == "Seq Scan"], scans
    assert ("Index Scan", "background_jobs_claim") in scans, scans


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
