"""Operator-input errors (issue 9 item 6): one line on stderr and exit 2, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

STRIDE = str(Path(sys.executable).with_name("stride"))
USER = "0190a000-0000-7000-8000-000000000001"


def stride(
    *args: str | bytes, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [STRIDE, *args],
        capture_output=True,
        text=True,
        errors="replace",
        timeout=60,
        check=False,
        env=env,
    )


def one_line_usage_error(done: subprocess.CompletedProcess[str], *named: str) -> None:
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    for text in named:
        assert text in lines[0], lines[0]
    assert "Traceback" not in done.stderr and done.stdout == ""


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("backfill", "objective-foundation", "--source", b"caf\xff"), ("--source", "UTF-8")),
        (("backfill", "status", b"--source=caf\xe9"), ("--source", "UTF-8")),
        (("backfill", "objective-foundation", "--max-rate", "inf"), ("--max-rate", "finite")),
        (("backfill", "objective-foundation", "--max-rate", "nan"), ("--max-rate",)),
        (("backfill", "objective-foundation", "--max-rate", "-5"), ("--max-rate",)),
        (("backfill", "objective-foundation", "--max-rate", "0"), ("--max-rate",)),
        (("backfill", "objective-foundation", "--wait", "--timeout", "-1"), ("--timeout",)),
        (("backfill", "status", "--wait", "--timeout", "inf"), ("--timeout",)),
        (("backfill", "objective-foundation", "--bogus"), ("--bogus",)),
        (("events", "append", "--user", USER), ("--type",)),
        (("events", "import", "events.jsonl", "--batch-size", "0"), ("--batch-size",)),
        (("no-such-command",), ("no-such-command",)),
        (
            ("events", "append", "--user", USER, "--type", "x", "--data", "[" * 5000),
            ("--data", "nested deeper"),
        ),
        (
            ("events", "append", "--type", "x", "--data", "{}"),
            ("--user",),
        ),
        (
            (
                *("events", "append", "--user", USER, "--type", "x", "--data", "{}"),
                *("--timestamp", "9999-12-31T23:59:59-12:00"),
            ),
            ("--timestamp", "outside the range"),
        ),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(
    database_url: str, args: tuple[str | bytes, ...], named: tuple[str, ...]
) -> None:
    one_line_usage_error(stride(*args, "--database-url", database_url), *named)


@pytest.mark.parametrize("url", ["postgresql://", "postgresql:///", "postgresql://db-host:5432"])
def test_a_database_url_naming_no_host_or_database_is_refused(url: str) -> None:
    one_line_usage_error(stride("db", "status", "--database-url", url), "--database-url")
    env = {**os.environ, "DATABASE_URL": url}
    one_line_usage_error(stride("users", "list", env=env), "$DATABASE_URL")


def test_help_still_prints_in_full() -> None:
    done = stride("--help")
    assert done.returncode == 0 and "Commands" in done.stdout
    bare = stride("events")  # a group without a command shows its help
    assert "Append and import events." in bare.stdout + bare.stderr


def test_wait_with_a_timeout_and_no_workers_is_not_success(database_url: str) -> None:
    assert stride("users", "add", "--database-url", database_url).returncode == 0
    done = stride(
        "backfill",
        "objective-foundation",
        "--wait",
        "--timeout",
        "3",
        "--no-verify",
        "--database-url",
        database_url,
    )
    assert done.returncode == 1, done.stderr
    assert "timed out after 3s" in done.stderr
    assert "Traceback" not in done.stderr
