"""Safe deploys from the operator's shell: preview, --only-stale, revisions in status/verify."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import psycopg
from tests.acceptance.test_backfill_script import run_script
from tests.populations import make_population

STRIDE = [sys.executable, "-m", "stride.cli.main"]


def stride(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*STRIDE, *args], capture_output=True, text=True, timeout=120)


def drain(database_url: str) -> None:
    done = stride("worker", "--once", "--database-url", database_url)
    assert done.returncode == 0, done.stderr


def test_preview_table_and_json(conn: psycopg.Connection[Any], database_url: str) -> None:
    make_population(conn, 20)
    # Nothing stored yet: the preview says the backfill would create every projection.
    table = stride("backfill", "preview", "--all", "--database-url", database_url)
    assert table.returncode == 0, table.stderr
    assert "previewed 20 of 20 users (every user)" in table.stdout
    assert "20 would change" in table.stdout
    assert "Projections that would change" in table.stdout
    assert "Resolved modality: stored -> new" in table.stdout

    run = run_script("--database-url", database_url, "--no-verify")
    assert run.returncode == 0, run.stderr
    drain(database_url)
    as_json = stride(
        "backfill", "preview", "--sample", "8", "--json", "--database-url", database_url
    )
    assert as_json.returncode == 0, as_json.stderr
    document = json.loads(as_json.stdout)
    assert document["scope"] == "sample" and document["users_previewed"] == 8
    assert document["users_changed"] == 0
    assert document["outputs"]["objective_state/active"]["stored_revisions"] == {"1": 8}
    assert document["running_revisions"] == {
        "objective_state/active": 1,
        "objective_advisory/overview": 1,
    }
    # Both previews were kept for later (e.g. the dashboard), the latest last.
    saved = conn.execute("SELECT id, scope, users_seen FROM backfill_previews ORDER BY id")
    rows = saved.fetchall()
    assert [(scope, seen) for _, scope, seen in rows] == [("all", 20), ("sample", 8)]
    assert document["saved_id"] == rows[-1][0]


def test_preview_refuses_sample_with_all(database_url: str) -> None:
    both = stride("backfill", "preview", "--all", "--sample", "3", "--database-url", database_url)
    assert both.returncode == 2 and "mutually exclusive" in both.stderr
    assert len(both.stderr.strip().splitlines()) == 1


def test_only_stale_through_the_script_and_revisions_in_status_and_verify(
    conn: psycopg.Connection[Any], database_url: str
) -> None:
    users = make_population(conn, 12)
    first = run_script("--database-url", database_url, "--source", "deploy.a", "--no-verify")
    assert first.returncode == 0, first.stderr
    drain(database_url)
    conn.execute("UPDATE projections SET revision = 0 WHERE user_id = ANY(%s)", (users[:5],))

    rest = run_script(
        "--database-url", database_url, "--source", "deploy.b", "--only-stale", "--json"
    )
    assert rest.returncode == 0, rest.stderr
    document = json.loads(rest.stdout)
    assert document["trigger"]["outcome"] == "enqueued" and document["trigger"]["users"] == 5
    # The runbook's four reports run as ever for an --only-stale run.
    assert set(document["reports"]) == {
        "backfill_controller_status",
        "backfill_fanout_status",
        "backfill_coverage",
        "backfill_lag",
    }
    assert document["revisions"]["outputs"][0]["users_by_revision"] == {"0": 5, "1": 7}
    drain(database_url)

    status = stride("backfill", "status", "--source", "deploy.b", "--database-url", database_url)
    assert status.returncode == 0, status.stdout + status.stderr
    assert "Users per revision (all users)" in status.stdout
    status_json = json.loads(
        stride(
            "backfill", "status", "--source", "deploy.b", "--json", "--database-url", database_url
        ).stdout
    )
    for output in status_json["revisions"]["outputs"]:
        assert output["users_by_revision"] == {"1": 12} and output["users_behind"] == 0

    verify = stride(
        "backfill", "verify", "--sample", "12", "--json", "--database-url", database_url
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    by_revision = json.loads(verify.stdout)["by_revision"]
    assert {(r["projection"], r["revision"], r["checked"], r["drifted"]) for r in by_revision} == {
        ("objective_state/active", 1, 12, 0),
        ("objective_advisory/overview", 1, 12, 0),
    }
    table = stride("backfill", "verify", "--sample", "3", "--database-url", database_url)
    assert "checked per stored revision" in table.stdout and "1 (running)" in table.stdout

    runs = json.loads(
        stride("backfill", "history", "--json", "--database-url", database_url).stdout
    )
    revisions = {"objective_state/active": 1, "objective_advisory/overview": 1}
    assert [(r["source"], r["revisions"]) for r in runs["runs"]] == [
        ("deploy.b", revisions),
        ("deploy.a", revisions),
    ]
    table = stride("backfill", "history", "--database-url", database_url)
    assert "revision" in table.stdout

    nothing = run_script("--database-url", database_url, "--source", "deploy.c", "--only-stale")
    assert nothing.returncode == 0 and "no stale users found" in nothing.stdout
