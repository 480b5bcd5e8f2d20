"""The runbook's script as an operator runs it: flags, messages, exit codes, real workers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
from tests.conftest import wait_until
from tests.populations import make_population

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "backfill-objective-foundation.sh"
STRIDE = [sys.executable, "-m", "stride.cli.main"]


def script_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["STRIDE_BIN"] = str(Path(sys.executable).parent / "stride")
    return env


def run_script(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        capture_output=True,
        text=True,
        env=env or script_env(),
        timeout=120,
    )


def stride(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*STRIDE, *args], capture_output=True, text=True, timeout=120)


def test_help_exits_zero() -> None:
    result = run_script("--help")
    assert result.returncode == 0
    assert "--database-url" in result.stdout and "--source" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--database-url", "postgresql://x/y", "--bogus"), "unknown flag: --bogus"),
        ((), "--database-url is required"),
        (("--database-url",), "--database-url needs a value"),
        (("--database-url", "postgresql://x/y", "--source"), "--source needs a value"),
    ],
)
def test_usage_errors_exit_2_with_one_line(args: tuple[str, ...], message: str) -> None:
    result = run_script(*args)
    assert result.returncode == 2
    assert message in result.stderr.splitlines()[0]


@pytest.mark.parametrize("source", ["", "   "])
def test_blank_source_exits_2(database_url: str, source: str) -> None:
    result = run_script("--database-url", database_url, "--source", source)
    assert result.returncode == 2
    assert "--source must not be empty or blank" in result.stderr


def test_database_url_from_environment(database_url: str) -> None:
    env = script_env() | {"DATABASE_URL": database_url}
    result = run_script("--no-verify", env=env)
    assert result.returncode == 0
    assert result.stdout.strip() == "no users found"


def test_script_end_to_end_with_hostile_source(
    conn: psycopg.Connection[Any], database_url: str
) -> None:
    make_population(conn, 30)
    source = "x'; DROP TABLE users; --"
    first = run_script("--database-url", database_url, "--source", source, "--no-verify")
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("enqueued ")
    again = run_script("--database-url", database_url, "--source", source, "--no-verify")
    assert again.returncode == 0 and again.stdout.startswith("already in flight (")

    worker = stride("worker", "--database-url", database_url, "--once")
    assert worker.returncode == 0, worker.stderr

    status = stride(
        "backfill", "status", "--database-url", database_url, "--source", source, "--json"
    )
    assert status.returncode == 0, status.stdout + status.stderr
    document = json.loads(status.stdout)
    coverage = document["reports"]["backfill_coverage"]
    row = dict(zip(coverage["columns"], coverage["rows"][0], strict=True))
    assert row["users_total"] == 30
    assert row["users_missing_objective_surfaces_all_users"] == 0
    assert document["run"]["complete"] is True
    assert conn.execute("SELECT count(*) FROM users").fetchone() == (30,)

    # The reports the script prints by default are the runbook's four.
    report = run_script("--database-url", database_url, "--source", source)
    assert report.returncode == 0
    for title in ("Backfill controller job status", "Fan-out", "Coverage", "Lag / freshness"):
        assert title in report.stdout


def test_status_exits_nonzero_until_complete(
    conn: psycopg.Connection[Any], database_url: str
) -> None:
    make_population(conn, 5)
    assert run_script("--database-url", database_url, "--no-verify").returncode == 0
    pending = stride("backfill", "status", "--database-url", database_url)
    assert pending.returncode == 1
    assert "not complete" in pending.stderr
    never = stride("backfill", "status", "--database-url", database_url, "--source", "nope")
    assert never.returncode == 1 and "no backfill was ever triggered" in never.stderr


def test_wait_shows_progress_and_exits_zero_when_complete(
    conn: psycopg.Connection[Any], database_url: str
) -> None:
    make_population(conn, 40)
    worker = subprocess.Popen(
        [*STRIDE, "worker", "--database-url", database_url],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        result = run_script(
            "--database-url", database_url, "--source", "waited", "--wait", "--timeout", "90"
        )
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0
    assert result.returncode == 0, result.stderr
    assert "40/40" in result.stderr  # the progress bar's final state: users refreshed
    assert "Coverage" in result.stdout
    json_run = run_script("--database-url", database_url, "--source", "waited", "--json")
    document = json.loads(json_run.stdout)
    assert document["trigger"]["outcome"] == "enqueued"  # the first run had completed
    assert document["run"]["users_total"] == 40


DUPLICATES = """
SELECT count(*) FROM (
    SELECT 1 FROM background_jobs
    WHERE job_type = 'projection.update' AND payload->>'source' = %s
    GROUP BY payload->>'user_id', payload->>'event_type' HAVING count(*) > 1
) d
"""


def _start_worker(database_url: str, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*STRIDE, "worker", "--database-url", database_url, "--lease-seconds", "2", *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.mark.slow
def test_worker_killed_during_fanout_and_projection_work(
    conn: psycopg.Connection[Any], database_url: str
) -> None:
    make_population(conn, 300, empty_every=5)
    # A throttled fan-out (100 users/s) is still running when the worker dies.
    result = stride(
        "backfill",
        "objective-foundation",
        "--database-url",
        database_url,
        "--source",
        "crash",
        "--max-rate",
        "100",
        "--no-verify",
    )
    assert result.returncode == 0, result.stderr
    victim = _start_worker(database_url)
    wait_until(
        lambda: (
            conn.execute(
                "SELECT next_position > 1 AND fanout_done_at IS NULL FROM backfill_runs"
            ).fetchone()
            == (True,)
        ),
        what="fan-out under way",
    )
    victim.send_signal(signal.SIGKILL)
    victim.wait()

    # A second worker reclaims the controller after its lease and finishes the fan-out;
    # it is killed in turn while projection jobs are in flight.
    second = _start_worker(database_url, "--batch-size", "20")
    wait_until(
        lambda: (
            conn.execute(
                "SELECT count(*) FROM background_jobs WHERE job_type = 'projection.update' "
                "AND status = 'completed'"
            ).fetchone()[0]
            > 50
        ),  # type: ignore[index]
        what="projection work under way",
    )
    second.send_signal(signal.SIGKILL)
    second.wait()

    survivor = _start_worker(database_url)
    try:
        wait_until(
            lambda: (
                stride(
                    "backfill", "status", "--database-url", database_url, "--source", "crash"
                ).returncode
                == 0
            ),
            timeout=90,
            interval=0.5,
            what="backfill complete after crashes",
        )
    finally:
        survivor.send_signal(signal.SIGTERM)
        assert survivor.wait(timeout=30) == 0
    assert conn.execute(DUPLICATES, ("crash",)).fetchone() == (0,)
    missing = conn.execute(
        "SELECT count(*) FROM users u WHERE (SELECT count(*) FROM projections p "
        "WHERE p.user_id = u.id "
        "AND p.projection_type IN ('objective_state', 'objective_advisory')) < 2"
    ).fetchone()
    assert missing == (0,)


def test_trigger_says_job_and_users_and_wait_fails_when_nothing_completed(
    conn: psycopg.Connection[Any], database_url: str
) -> None:
    make_population(conn, 5)
    first = run_script("--database-url", database_url, "--source", "s", "--json", "--no-verify")
    job_id = json.loads(first.stdout)["trigger"]["job_id"]
    # No worker is running: waiting gives up after its timeout and says not complete.
    waited = run_script(
        "--database-url", database_url, "--source", "s", "--wait", "--timeout", "2", "--no-verify"
    )
    assert waited.returncode == 1
    assert waited.stdout.startswith(f"already in flight ({job_id})")
    assert "still running: 0 of 5 users refreshed" in " ".join(waited.stderr.split())
    again = run_script("--database-url", database_url, "--source", "s", "--json", "--no-verify")
    assert json.loads(again.stdout)["trigger"] == {
        "outcome": "in_flight",
        "job_id": job_id,
        "users": 5,
        "message": f"already in flight ({job_id})",
    }
    assert stride("worker", "--database-url", database_url, "--once").returncode == 0
    fresh = run_script("--database-url", database_url, "--source", "s", "--no-verify")
    assert fresh.stdout.startswith("enqueued job ") and "(5 users snapshotted)" in fresh.stdout
    history = stride("backfill", "history", "--database-url", database_url, "--source", "s")
    assert history.returncode == 0
    assert "complete" in history.stdout and "running" in history.stdout
