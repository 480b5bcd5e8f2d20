"""One consistent CLI (issue 14 item 7): -h and --help everywhere, --version, --json on every
command that prints a result, one placeholder style, ISO-8601 times, and the specific fixes
(db stop, db status, jobs retry --job-type, jobs prune, backfill status)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import click
import psycopg
import pytest
import typer
from typer.testing import CliRunner

from stride.cli.main import app
from stride.queue.jobs import NewJob, claim_due_jobs, complete_many, enqueue, fail

STRIDE = str(Path(sys.executable).with_name("stride"))
Conn = psycopg.Connection[Any]
# Long-running commands print no result to format: they run until stopped.
NO_RESULT = {("worker",), ("serve",)}
PLACEHOLDER = re.compile(r"^[A-Z][A-Z0-9_]*$")
SPACED_TIME = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}")
ISO_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")


def stride(
    *args: str, database_url: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    command = [STRIDE, *args]
    if database_url is not None:
        command += ["--database-url", database_url]
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "COLUMNS": "160", **(env or {})},
    )


def one_line_error(done: subprocess.CompletedProcess[str], code: int, *named: str) -> str:
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert "Traceback" not in done.stderr
    for text in named:
        assert text in lines[0], lines[0]
    return lines[0]


def command_paths() -> Iterator[tuple[tuple[str, ...], click.Command]]:
    def walk(
        command: click.Command, path: tuple[str, ...]
    ) -> Iterator[tuple[tuple[str, ...], click.Command]]:
        yield path, command
        for name, sub in getattr(command, "commands", {}).items():
            yield from walk(sub, (*path, name))

    yield from walk(typer.main.get_command(app), ())


COMMANDS = list(command_paths())
LEAVES = [(path, command) for path, command in COMMANDS if not hasattr(command, "commands")]


def help_text(*args: str) -> str:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "100"}, prog_name="stride")
    assert result.exit_code == 0, (args, result.output)
    return result.output


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=lambda p: " ".join(p) or "stride")
def test_every_command_answers_h_and_help_alike_and_says_what_it_does(
    path: tuple[str, ...],
) -> None:
    short = help_text(*path, "-h")
    assert short == help_text(*path, "--help")
    assert short.startswith("Usage: stride")
    description = short.split("\n\n")[1].strip()
    assert len(description) > 15, short
    assert "-h, --help" in short
    # Command lists show each command's first sentence whole, never cut with "...".
    listed = short.split("Commands:")[1] if "Commands:" in short else ""
    assert "..." not in listed, short


@pytest.mark.parametrize("path", [p for p, _ in LEAVES], ids=lambda p: " ".join(p))
def test_every_value_is_shown_with_one_placeholder_style(path: tuple[str, ...]) -> None:
    lines = help_text(*path, "-h").splitlines()
    options = lines[lines.index("Options:") + 1 :]
    for line in options:
        # `  --name VALUE   help`: a single space before the placeholder, two before the help.
        match = re.match(r"^  (?:-\w, )?--[\w-]+(?: / --[\w-]+)?(?: (\S+))?(?:  |$)", line)
        if match is None or match.group(1) is None:
            continue
        assert PLACEHOLDER.match(match.group(1)), line
        assert match.group(1) not in {"TEXT", "INTEGER", "FLOAT", "BOOLEAN"}, line
    for line in lines:
        assert "<" not in line.split("  ")[0], line  # no typer type names like <str>
    if "Arguments:" in lines:
        for line in lines[lines.index("Arguments:") + 1 : lines.index("Options:")]:
            if line.startswith("  ") and not line.startswith("   "):
                assert PLACEHOLDER.match(line.split()[0]), line


@pytest.mark.parametrize(
    "path", [p for p, _ in LEAVES if p not in NO_RESULT], ids=lambda p: " ".join(p)
)
def test_every_command_that_prints_a_result_has_json(path: tuple[str, ...]) -> None:
    command = dict(LEAVES)[path]
    assert any("--json" in getattr(p, "opts", ()) for p in command.params), path


def test_version() -> None:
    done = stride("--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"stride {version('stride')}"


def test_backfill_status_help_is_its_own() -> None:
    status = help_text("backfill", "status", "-h")
    trigger = help_text("backfill", "objective-foundation", "-h")
    assert "traceability" in trigger and "traceability" not in status
    assert "to report on" in status


# --- results as JSON ---------------------------------------------------------------------------


def test_result_commands_print_json(database_url: str, conn: Conn) -> None:
    added = stride("users", "add", "--json", database_url=database_url)
    user_id = json.loads(added.stdout)["id"]
    assert conn.execute("SELECT id::text FROM users").fetchone() == (user_id,)

    issued = json.loads(
        stride("tokens", "issue", "--user", user_id, "--json", database_url=database_url).stdout
    )
    revoked = stride("tokens", "revoke", issued["id"], "--json", database_url=database_url)
    assert json.loads(revoked.stdout) == {
        "id": issued["id"],
        "revoked": True,
        "already_revoked": False,
    }

    enqueue(conn, NewJob("a", {}, max_retries=0))
    [job] = claim_due_jobs(conn, "w", 1, 30)
    fail(conn, job, "boom")
    retried = stride("jobs", "retry", "--dead", "--json", database_url=database_url)
    assert json.loads(retried.stdout) == {"retried": 1, "job_type": None}
    complete_many(conn, claim_due_jobs(conn, "w", 1, 30))
    pruned = stride(
        "jobs", "prune", "--completed-older-than", "0s", "--json", database_url=database_url
    )
    assert json.loads(pruned.stdout) == {"pruned": 1, "completed_older_than_seconds": 0.0}

    migrated = stride("db", "migrate", "--json", database_url=database_url)
    assert json.loads(migrated.stdout) == {"applied": []}
    url = stride("db", "url", "--json", database_url=database_url)
    assert json.loads(url.stdout) == {"url": database_url, "origin": "flag"}


def test_demo_run_json_is_one_document(database_url: str, tmp_path: Path) -> None:
    done = stride(
        "demo",
        "run",
        "--users",
        "25",
        "--workers",
        "1",
        "--no-serve",
        "--json",
        database_url=database_url,
        env={"STRIDE_DATA_DIR": str(tmp_path / "pgdata")},
    )
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["demo"]["complete"] is True
    assert document["demo"]["seeded"]["users"] == 25
    assert document["trigger"]["outcome"] == "enqueued"
    assert document["run"]["users_total"] == 25
    assert "coverage" in " ".join(document["reports"])


# --- the specific fixes ------------------------------------------------------------------------


def test_db_stop_takes_database_url_and_never_stops_a_server_it_did_not_start(
    database_url: str, conn: Conn, tmp_path: Path
) -> None:
    env = {"STRIDE_DATA_DIR": str(tmp_path / "pgdata")}
    refused = stride("db", "stop", database_url=database_url, env=env)
    one_line_error(refused, 1, "--database-url", "did not start")
    assert conn.execute("SELECT 1").fetchone() == (1,)  # still up
    one_line_error(stride("db", "stop", "--database-url", "postgresql://", env=env), 2)
    nothing = stride("db", "stop", "--json", env={**env, "DATABASE_URL": ""})
    assert nothing.returncode == 0
    assert json.loads(nothing.stdout) == {"stopped": False, "data_dir": env["STRIDE_DATA_DIR"]}


def test_db_status_exits_1_while_migrations_are_pending(empty_database_url: str) -> None:
    pending = stride("db", "status", database_url=empty_database_url)
    assert pending.returncode == 1
    assert "pending" in pending.stdout and "run `stride db migrate`" in pending.stderr
    assert stride("db", "migrate", database_url=empty_database_url).returncode == 0
    current = stride("db", "status", "--json", database_url=empty_database_url)
    assert current.returncode == 0
    assert {m["state"] for m in json.loads(current.stdout)} == {"applied"}


def test_jobs_retry_names_an_unknown_job_type(database_url: str, conn: Conn) -> None:
    line = one_line_error(
        stride(
            "jobs", "retry", "--dead", "--job-type", "projection.updte", database_url=database_url
        ),
        2,
        "--job-type",
        "projection.updte",
    )
    assert "projection.update" in line and "inference.objective_backfill" in line
    known = stride(
        "jobs", "retry", "--dead", "--job-type", "projection.update", database_url=database_url
    )
    assert known.returncode == 0 and "retried 0 dead jobs" in known.stdout
    # A type no handler runs, but whose jobs died, can be retried (e.g. after a rename).
    enqueue(conn, NewJob("legacy.type", {}, max_retries=0))
    [job] = claim_due_jobs(conn, "w", 1, 30)
    fail(conn, job, "no handler")
    legacy = stride(
        "jobs", "retry", "--dead", "--job-type", "legacy.type", database_url=database_url
    )
    assert legacy.returncode == 0 and "retried 1 dead job" in legacy.stdout


@pytest.mark.parametrize("age", ["99999999999w", "5300w", "1e9d"])
def test_jobs_prune_refuses_absurd_ages_in_one_line(database_url: str, age: str) -> None:
    done = stride("jobs", "prune", "--completed-older-than", age, database_url=database_url)
    one_line_error(done, 2, "--completed-older-than")
    assert done.stdout == ""


def test_backfill_status_fails_first_and_lists_the_known_sources(
    database_url: str, conn: Conn
) -> None:
    none_yet = stride("backfill", "status", database_url=database_url)
    one_line_error(none_yet, 1, "manual.objective_backfill", "no runs at all")
    assert none_yet.stdout == ""  # no reports about a run that does not exist
    conn.execute("INSERT INTO users DEFAULT VALUES")
    for source in ("deploy.a", "deploy.b"):
        assert (
            stride(
                "backfill",
                "objective-foundation",
                "--source",
                source,
                "--no-verify",
                database_url=database_url,
            ).returncode
            == 0
        )
    for args in ((), ("--wait", "--timeout", "600")):
        done = stride("backfill", "status", *args, database_url=database_url)
        line = one_line_error(done, 1, "manual.objective_backfill")
        assert "'deploy.b', 'deploy.a'" in line  # newest first
        assert done.stdout == ""


def test_human_output_uses_iso_8601_times(database_url: str, conn: Conn) -> None:
    user_id = stride("users", "add", database_url=database_url).stdout.strip()
    stride("tokens", "issue", "--user", user_id, database_url=database_url)
    enqueue(conn, NewJob("t", {}))
    for args in (("users", "list"), ("tokens", "list"), ("db", "status"), ("jobs", "list")):
        done = stride(*args, database_url=database_url)
        assert done.returncode == 0, (args, done.stderr)
        assert ISO_TIME.search(done.stdout), (args, done.stdout)
        assert not SPACED_TIME.search(done.stdout), (args, done.stdout)
