"""Nothing important is cut off (issue 14 item 6): at 80 and 160 columns every table keeps
ids, job types and error texts whole, and numbers carry thousands separators."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
from tests.populations import make_population

from stride.queue.jobs import NewJob, claim_due_jobs, enqueue, enqueue_many, fail, mark_failed

STRIDE = str(Path(sys.executable).with_name("stride"))
Conn = psycopg.Connection[Any]
ELLIPSIS = "…"
LONG_ERROR = (
    "psycopg.errors.UniqueViolation: duplicate key value violates unique constraint "
    '"projections_pkey" DETAIL: Key (user_id, projection_type, key)=('
    "0190a000-0000-7000-8000-000000000001, objective_state, active) already exists; "
    "retrying cannot help until the duplicate row is removed by hand"
)


def stride(*args: str, database_url: str, columns: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [STRIDE, *args, "--database-url", database_url],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "COLUMNS": str(columns)},
    )


def assert_whole(output: str, *texts: str) -> None:
    """Each text appears verbatim (ids, types, numbers, errors printed below a table)."""
    assert ELLIPSIS not in output, output
    for text in texts:
        assert text in output, (text, output)


def assert_wrapped(output: str, text: str) -> None:
    """Free text in a table cell may wrap between words: every word appears, whole, in order."""
    assert ELLIPSIS not in output, output
    words = iter(output.split())
    missing = [word for word in text.split() if not any(word == seen for seen in words)]
    assert not missing, (missing, output)


@pytest.fixture
def troubled_queue(conn: Conn) -> dict[str, int]:
    enqueue_many(conn, [NewJob("projection.update", {"source": "deploy.v1"}) for _ in range(1234)])
    dead = enqueue(conn, NewJob("inference.objective_backfill", {"source": "deploy.v1"})).job_id
    [held] = claim_due_jobs(conn, "w/0", 1, 30, ["inference.objective_backfill"])
    assert mark_failed(conn, held, LONG_ERROR)
    flaky = enqueue(conn, NewJob("inference.objective_backfill", {"source": "v2"})).job_id
    [held] = claim_due_jobs(conn, "w/0", 1, 30, ["inference.objective_backfill"])
    fail(
        conn, held, "ConnectionResetError: the peer went away " + "[again] " * 12, delay_seconds=600
    )
    return {"dead": dead, "flaky": flaky}


@pytest.mark.parametrize("columns", [80, 160])
def test_jobs_status_and_list_keep_types_ids_and_errors_whole(
    database_url: str, troubled_queue: dict[str, int], columns: int
) -> None:
    status = stride("jobs", "status", database_url=database_url, columns=columns)
    assert status.returncode == 0, status.stderr
    assert_whole(
        status.stdout,
        "inference.objective_backfill",
        "projection.update",
        "1,234",
        f"job {troubled_queue['dead']} (failed): {LONG_ERROR}",
        "ConnectionResetError: the peer went away " + "[again] " * 11 + "[again]",
    )
    listed = stride("jobs", "list", "--limit", "5", database_url=database_url, columns=columns)
    assert listed.returncode == 0, listed.stderr
    assert_whole(
        listed.stdout,
        "inference.objective_backfill",
        str(troubled_queue["dead"]),
        str(troubled_queue["flaky"]),
        LONG_ERROR,
    )
    shown = stride(
        "jobs", "show", str(troubled_queue["dead"]), database_url=database_url, columns=columns
    )
    assert shown.returncode == 0, shown.stderr
    assert_whole(shown.stdout, "inference.objective_backfill", LONG_ERROR)


@pytest.mark.parametrize("columns", [80, 160])
def test_verify_drift_keeps_the_user_id_whole(database_url: str, conn: Conn, columns: int) -> None:
    users = make_population(conn, 3)
    assert (
        stride(
            "projections", "refresh", *map(str, users), database_url=database_url, columns=columns
        ).returncode
        == 0
    )
    conn.execute(
        "UPDATE projections SET data = jsonb_set(data, '{schema_version}', "
        "'\"a much longer tampered schema version string than any column holds\"') "
        "WHERE user_id = %s AND projection_type = 'objective_state'",
        (users[2],),
    )
    drift = stride(
        "backfill", "verify", "--sample", "3", database_url=database_url, columns=columns
    )
    assert drift.returncode == 1
    assert_whole(drift.stdout, str(users[2]), "objective_state/active", "schema_version")
    assert_wrapped(
        drift.stdout, "a much longer tampered schema version string than any column holds"
    )


def test_backfill_reports_at_80_columns_keep_names_whole_with_separators(
    database_url: str, conn: Conn
) -> None:
    make_population(conn, 1200, empty_every=600)
    trigger = stride(
        "backfill", "objective-foundation", "--no-verify", database_url=database_url, columns=80
    )
    assert trigger.returncode == 0, trigger.stderr
    drained = stride("worker", "--once", database_url=database_url, columns=80)
    assert drained.returncode == 0, drained.stderr
    status = stride("backfill", "status", database_url=database_url, columns=80)
    assert status.returncode == 0, status.stdout + status.stderr
    assert_whole(
        status.stdout,
        "users_missing_objective_surfaces_signal_users",
        "avg_projection_minus_signal_minutes",
        "1,200",
    )


@pytest.mark.parametrize("columns", [80, 160])
def test_small_tables_keep_ids_whole(database_url: str, columns: int) -> None:
    user = stride("users", "add", "--json", database_url=database_url, columns=columns)
    user_id = json.loads(user.stdout)["id"]
    token = stride(
        "tokens", "issue", "--user", user_id, "--json", database_url=database_url, columns=columns
    )
    token_id = json.loads(token.stdout)["id"]
    for args, expected in [
        (("users", "list"), (user_id,)),
        (("tokens", "list"), (token_id, user_id)),
        (("db", "status"), ("0011", "operator_views")),
    ]:
        done = stride(*args, database_url=database_url, columns=columns)
        assert done.returncode == 0, (args, done.stderr)
        assert_whole(done.stdout, *expected)
