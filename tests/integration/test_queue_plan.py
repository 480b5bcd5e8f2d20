"""Query-plan regression: the claim query must walk an index, never scan the whole queue."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from stride.queue.jobs import CLAIM_SQL, CLAIM_TYPES_SQL, claim_due_jobs

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
