"""The runbook's SQL, embedded verbatim: every query must run against stride's schema.

Copied from the operator runbook (shared/seed/objective-foundation-backfill.md); the
project must not read files outside itself, so the text lives here.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from stride.storage.queries import load_queries

RUNBOOK_CONTROLLER_STATUS = """\
SELECT status, COUNT(*) AS jobs
FROM background_jobs
WHERE job_type = 'inference.objective_backfill'
  AND payload->>'source' = '<your-source>'
GROUP BY status
ORDER BY status;
"""

RUNBOOK_FANOUT_STATUS = """\
SELECT status, COUNT(*) AS jobs
FROM background_jobs
WHERE job_type = 'projection.update'
  AND payload->>'source' = '<your-source>'
GROUP BY status
ORDER BY status;
"""

RUNBOOK_COVERAGE = """\
WITH all_users AS (
    SELECT id AS user_id
    FROM users
),
signal_users AS (
    SELECT DISTINCT user_id
    FROM events
    WHERE event_type IN (
        'goal.set',
        'objective.set',
        'objective.updated',
        'objective.archived',
        'advisory.override.recorded',
        'profile.updated',
        'set.logged',
        'session.logged',
        'external.activity_imported'
    )
),
objective_state_projection AS (
    SELECT DISTINCT user_id
    FROM projections
    WHERE projection_type = 'objective_state'
      AND key = 'active'
),
objective_advisory_projection AS (
    SELECT DISTINCT user_id
    FROM projections
    WHERE projection_type = 'objective_advisory'
      AND key = 'overview'
)
SELECT
    (SELECT COUNT(*) FROM all_users) AS users_total,
    (SELECT COUNT(*) FROM signal_users) AS users_with_objective_signals,
    (SELECT COUNT(*) FROM objective_state_projection) AS users_with_objective_state,
    (SELECT COUNT(*) FROM objective_advisory_projection) AS users_with_objective_advisory,
    (
        SELECT COUNT(*)
        FROM all_users t
        LEFT JOIN objective_state_projection s ON s.user_id = t.user_id
        LEFT JOIN objective_advisory_projection a ON a.user_id = t.user_id
        WHERE s.user_id IS NULL OR a.user_id IS NULL
    ) AS users_missing_objective_surfaces_all_users,
    (
        SELECT COUNT(*)
        FROM signal_users t
        LEFT JOIN objective_state_projection s ON s.user_id = t.user_id
        LEFT JOIN objective_advisory_projection a ON a.user_id = t.user_id
        WHERE s.user_id IS NULL OR a.user_id IS NULL
    ) AS users_missing_objective_surfaces_signal_users;
"""

RUNBOOK_LAG = """\
WITH latest_signal AS (
    SELECT user_id, MAX(timestamp) AS last_signal_at
    FROM events
    WHERE event_type IN (
        'goal.set',
        'objective.set',
        'objective.updated',
        'objective.archived',
        'advisory.override.recorded',
        'profile.updated',
        'set.logged',
        'session.logged',
        'external.activity_imported'
    )
    GROUP BY user_id
),
latest_projection AS (
    SELECT user_id, MAX(updated_at) AS last_projection_at
    FROM projections
    WHERE (projection_type = 'objective_state' AND key = 'active')
       OR (projection_type = 'objective_advisory' AND key = 'overview')
    GROUP BY user_id
),
lag AS (
    SELECT
        s.user_id,
        s.last_signal_at,
        p.last_projection_at,
        CASE
            WHEN p.last_projection_at IS NULL THEN NULL
            ELSE EXTRACT(EPOCH FROM (p.last_projection_at - s.last_signal_at)) / 60.0
        END AS projection_minus_signal_minutes,
        CASE
            WHEN p.last_projection_at IS NULL THEN NULL
            ELSE EXTRACT(EPOCH FROM (NOW() - p.last_projection_at)) / 60.0
        END AS projection_age_minutes
    FROM latest_signal s
    LEFT JOIN latest_projection p ON p.user_id = s.user_id
)
SELECT
    COUNT(*) AS users_considered,
    COUNT(*) FILTER (WHERE last_projection_at IS NULL) AS users_without_projection,
    ROUND(AVG(projection_minus_signal_minutes)::numeric, 2) AS avg_projection_minus_signal_minutes,
    ROUND(AVG(projection_age_minutes)::numeric, 2) AS avg_projection_age_minutes,
    ROUND(MAX(projection_age_minutes)::numeric, 2) AS max_projection_age_minutes
FROM lag;
"""

RUNBOOK_QUERIES = {
    "backfill_controller_status": RUNBOOK_CONTROLLER_STATUS,
    "backfill_fanout_status": RUNBOOK_FANOUT_STATUS,
    "backfill_coverage": RUNBOOK_COVERAGE,
    "backfill_lag": RUNBOOK_LAG,
}


def _seed_minimal(conn: psycopg.Connection[Any]) -> None:
    """Two users, one with an objective signal and both projections, and two jobs."""
    signal_user = conn.execute("INSERT INTO users DEFAULT VALUES RETURNING id").fetchone()[0]  # type: ignore[index]
    conn.execute("INSERT INTO users DEFAULT VALUES")
    conn.execute(
        "INSERT INTO events (user_id, event_type, timestamp, data) "
        "VALUES (%s, 'profile.updated', now() - interval '2 hours', '{}')",
        (signal_user,),
    )
    for projection_type, key in (("objective_state", "active"), ("objective_advisory", "overview")):
        conn.execute(
            "INSERT INTO projections (user_id, projection_type, key, data) "
            "VALUES (%s, %s, %s, '{}')",
            (signal_user, projection_type, key),
        )
    conn.execute(
        "INSERT INTO background_jobs (job_type, payload) VALUES "
        "('inference.objective_backfill', '{\"source\": \"<your-source>\"}'), "
        "('projection.update', '{\"source\": \"<your-source>\"}')"
    )


@pytest.mark.parametrize("name", sorted(RUNBOOK_QUERIES))
def test_runbook_query_runs_verbatim(conn: psycopg.Connection[Any], name: str) -> None:
    _seed_minimal(conn)
    rows = conn.execute(RUNBOOK_QUERIES[name].encode()).fetchall()
    assert rows, f"{name} returned no rows"


def test_runbook_coverage_counts(conn: psycopg.Connection[Any]) -> None:
    _seed_minimal(conn)
    row = conn.execute(RUNBOOK_COVERAGE.encode()).fetchone()
    # users_total, signal users, with state, with advisory, missing (all), missing (signal)
    assert row == (2, 1, 1, 1, 1, 0)


def test_runbook_status_counts(conn: psycopg.Connection[Any]) -> None:
    _seed_minimal(conn)
    assert conn.execute(RUNBOOK_CONTROLLER_STATUS.encode()).fetchall() == [("pending", 1)]
    assert conn.execute(RUNBOOK_FANOUT_STATUS.encode()).fetchall() == [("pending", 1)]


@pytest.mark.parametrize("name", sorted(RUNBOOK_QUERIES))
def test_product_reports_use_the_runbook_queries(name: str) -> None:
    """stride's own reports are the runbook's text with the source as a parameter."""
    product = load_queries("runbook_reports.sql")[name]
    expected = RUNBOOK_QUERIES[name].replace("'<your-source>'", "%(source)s").strip().rstrip(";")
    assert product == expected
