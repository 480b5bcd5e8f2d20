"""`stride users` and `stride events` end to end, as an operator runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
from tests.hostile_lines import bad_lines, valid_line

from stride.storage.migrations import available_migrations

STRIDE = str(Path(sys.executable).with_name("stride"))
WHEN = "2026-03-01T07:30:00Z"


def stride(*args: str, database_url: str | None = None) -> subprocess.CompletedProcess[str]:
    command = [STRIDE, *args]
    if database_url is not None:
        command += ["--database-url", database_url]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def scalar(database_url: str, query: str) -> Any:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(query).fetchone()
    assert row is not None
    return row[0]


@pytest.fixture
def user(database_url: str) -> str:
    done = stride("users", "add", database_url=database_url)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_users_add_and_list(database_url: str, user: str) -> None:
    given = "0190a000-0000-7000-8000-000000000001"
    assert stride("users", "add", "--id", given, database_url=database_url).stdout.strip() == given
    again = stride("users", "add", "--id", given, database_url=database_url)
    assert again.returncode == 1 and "already exists" in again.stderr
    listed = stride("users", "list", "--json", database_url=database_url)
    assert listed.returncode == 0
    assert {u["id"] for u in json.loads(listed.stdout)} == {given, user}


def test_append_then_resend_with_the_same_idempotency_key(database_url: str, user: str) -> None:
    args = ("events", "append", "--user", user, "--type", "set.logged", "--data", '{"reps": 5}')
    first = stride(*args, "--idempotency-key", "k1", "--json", database_url=database_url)
    second = stride(*args, "--idempotency-key", "k1", "--json", database_url=database_url)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    a, b = json.loads(first.stdout), json.loads(second.stdout)
    assert a["id"] == b["id"] and (a["duplicate"], b["duplicate"]) == (False, True)
    stamped = stride(*args, "--timestamp", "2026-03-01T09:30:00+02:00", database_url=database_url)
    assert stamped.returncode == 0
    assert scalar(database_url, "SELECT count(*) FROM events") == 2
    assert scalar(database_url, "SELECT count(*) FROM background_jobs") == 2


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--user", "nope"], "--user"),
        (["--data", "{not json"], "--data"),
        (["--data", "[1, 2]"], "--data"),
        (["--timestamp", "2026-03-01T07:30:00"], "--timestamp"),
        (["--timestamp", "soon"], "--timestamp"),
        (["--type", "  "], "--type"),
        (["--user", "0190a000-0000-7000-8000-0000000000ff"], "--user"),
    ],
)
def test_append_bad_flag_exits_2_naming_it(
    database_url: str, user: str, flags: list[str], named: str
) -> None:
    base = {"--user": user, "--type": "set.logged", "--data": "{}"}
    overrides = dict(zip(flags[::2], flags[1::2], strict=True))
    args = [item for pair in {**base, **overrides}.items() for item in pair]
    done = stride("events", "append", *args, database_url=database_url)
    assert done.returncode == 2
    assert named in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert scalar(database_url, "SELECT count(*) FROM events") == 0


def test_import_mixed_lines(database_url: str, user: str, tmp_path: Path) -> None:
    def line(**fields: Any) -> str:
        event = {"user_id": user, "event_type": "set.logged", "timestamp": WHEN, "data": {}}
        return json.dumps({**event, **fields})

    lines = [
        line(data={"reps": 5}),  # 1 ok
        line(timestamp="2026-03-01T07:30:00"),  # 2 naive
        "{broken",  # 3 not JSON
        line(metadata={"idempotency_key": "a"}),  # 4 ok
        line(metadata={"idempotency_key": "a"}),  # 5 duplicate
        "",  # 6 blank, skipped
        line(user_id="0190a000-0000-7000-8000-0000000000ff"),  # 7 unknown user
        line(data=[1]),  # 8 data not an object
        line(event_type="sleep.logged", data={"hours": 7.5}),  # 9 ok
    ]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")

    done = stride(
        "events", "import", str(path), "--json", "--batch-size", "3", database_url=database_url
    )
    assert done.returncode == 1, done.stderr
    summary = json.loads(done.stdout)
    assert (summary["accepted"], summary["duplicates"], summary["rejected"]) == (3, 1, 4)
    assert [(r["line"], r["field"]) for r in summary["rejects"]] == [
        (2, "timestamp"),
        (3, "line"),
        (7, "user_id"),
        (8, "data"),
    ]
    assert scalar(database_url, "SELECT count(*) FROM events") == 3
    assert scalar(database_url, "SELECT count(*) FROM background_jobs") == 3

    human = stride("events", "import", str(path), database_url=database_url)
    assert human.returncode == 1
    assert "2 accepted, 2 duplicate, 4 rejected" in human.stdout
    assert "naive timestamp" in human.stdout


def test_import_all_good_exits_0(database_url: str, user: str, tmp_path: Path) -> None:
    path = tmp_path / "good.jsonl"
    with path.open("w") as out:
        for i in range(2500):
            event = {
                "user_id": user,
                "event_type": "set.logged",
                "timestamp": WHEN,
                "data": {"reps": i % 12 + 1},
                "metadata": {"idempotency_key": f"set-{i}"},
            }
            out.write(json.dumps(event) + "\n")
    first = stride("events", "import", str(path), database_url=database_url)
    assert first.returncode == 0, first.stderr
    assert "2,500 accepted, 0 duplicate, 0 rejected" in first.stdout
    again = stride("events", "import", str(path), "--json", database_url=database_url)
    assert again.returncode == 0
    assert json.loads(again.stdout)["duplicates"] == 2500
    assert scalar(database_url, "SELECT count(*) FROM background_jobs") == 2500


def test_import_missing_file_exits_2(database_url: str, tmp_path: Path) -> None:
    done = stride("events", "import", str(tmp_path / "absent.jsonl"), database_url=database_url)
    assert done.returncode == 2 and "does not exist" in done.stderr


def test_import_from_stdin_stores_every_valid_line_and_lists_every_reject(
    database_url: str, user: str
) -> None:
    lines = [valid_line(user, i) for i in range(1500)]
    expected = []
    for _, line, field in bad_lines(user):
        lines.append(line)
        expected.append((len(lines), field))
    lines += [valid_line(user, 1500 + i) for i in range(10)]
    done = subprocess.run(
        [
            *(STRIDE, "events", "import", "-", "--json", "--batch-size", "500"),
            *("--progress-interval", "0", "--database-url", database_url),
        ],
        input=b"".join(lines),
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stderr.decode()
    summary = json.loads(done.stdout)
    assert (summary["file"], summary["accepted"], summary["rejected"]) == (
        "standard input",
        1510,
        len(expected),
    )
    assert [(r["line"], r["field"]) for r in summary["rejects"]] == expected
    assert scalar(database_url, "SELECT count(*) FROM events") == 1510
    # Progress on stderr: a line per batch here, with the rate.
    progress = done.stderr.decode().splitlines()
    assert progress and all("lines/s" in line for line in progress), progress
    assert progress[0].startswith("imported 500 lines: 500 accepted")


def test_import_into_an_unmigrated_database_is_one_error(
    empty_database_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(
        b"".join(valid_line("0190a000-0000-7000-8000-000000000001", i) for i in range(50))
    )
    done = stride("events", "import", str(path), database_url=empty_database_url)
    assert done.returncode == 1
    pending = len(available_migrations())
    assert done.stderr.strip().splitlines() == [
        f"error: the database schema is not migrated ({pending} migrations pending): "
        "run `stride db migrate` first"
    ]
    assert done.stdout == ""
