"""`stride projections show` as an operator uses it."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from typing import Any

import psycopg
from tests.populations import NOW, make_population

from stride.readmodels.refresh import refresh_users

STRIDE = [sys.executable, "-m", "stride.cli.main"]


def show(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*STRIDE, "projections", "show", *args], capture_output=True, text=True, timeout=60
    )


def test_show_prints_both_projections(conn: psycopg.Connection[Any], database_url: str) -> None:
    user = make_population(conn, 2)[1]
    with conn.transaction():
        refresh_users(conn, {user: {"profile.updated"}}, NOW)

    as_json = show(str(user), "--database-url", database_url, "--json")
    assert as_json.returncode == 0, as_json.stderr
    rows = {row["projection_type"]: row for row in json.loads(as_json.stdout)}
    assert set(rows) == {"objective_state", "objective_advisory"}
    assert rows["objective_state"]["data"]["schema_version"] == "objective_state.v1"
    assert rows["objective_state"]["version"] == 1

    one_type = show(str(user), "--database-url", database_url, "--type", "objective_advisory")
    assert one_type.returncode == 0
    assert "objective_advisory/overview" in one_type.stdout
    assert "objective_state/active" not in one_type.stdout


def test_show_errors(database_url: str) -> None:
    bad = show("not-a-uuid", "--database-url", database_url)
    assert bad.returncode == 2 and "USER must be a UUID" in bad.stderr
    missing = show(str(uuid.uuid4()), "--database-url", database_url)
    assert missing.returncode == 1 and "no projections for user" in missing.stderr
