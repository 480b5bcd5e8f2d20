"""Backfill source labels are checked where they come in: the trigger, the CLI, the script."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
from tests.populations import make_population

from stride.backfill.trigger import SOURCE_MAX_LENGTH, BackfillInputError, trigger_backfill

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "backfill-objective-foundation.sh"
STRIDE = str(Path(sys.executable).with_name("stride"))
Conn = psycopg.Connection[Any]

BAD_LABELS = [
    pytest.param("x" * (SOURCE_MAX_LENGTH + 1), "at most 200 characters", id="201-chars"),
    pytest.param("deploy." + "z" * 2650, "at most 200 characters", id="2657-chars"),
    pytest.param("deploy\nv2", "printable text on one line", id="newline"),
    pytest.param("deploy\tv2", "printable text on one line", id="tab"),
    pytest.param("deploy\x1b[31mv2", "printable text on one line", id="escape"),
    pytest.param("deploy\x00v2", "printable text on one line", id="nul"),
    pytest.param("   ", "empty or blank", id="blank"),
]


@pytest.mark.parametrize(("label", "message"), BAD_LABELS)
def test_trigger_refuses_a_bad_label_and_stores_nothing(
    conn: Conn, label: str, message: str
) -> None:
    make_population(conn, 3)
    with pytest.raises(BackfillInputError, match=message):
        trigger_backfill(conn, label)
    assert conn.execute("SELECT count(*) FROM background_jobs").fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM backfill_snapshot_users").fetchone() == (0,)


# A command line cannot carry a NUL byte.
COMMAND_LINE_LABELS = [label for label in BAD_LABELS if label.id != "nul"]


@pytest.mark.parametrize(("label", "message"), COMMAND_LINE_LABELS)
@pytest.mark.parametrize("entry", ["cli", "script"])
def test_cli_and_script_reject_a_bad_label_in_one_line_with_exit_2(
    database_url: str, conn: Conn, label: str, message: str, entry: str
) -> None:
    if entry == "cli":
        command = [STRIDE, "backfill", "objective-foundation", "--database-url", database_url]
    else:
        command = ["bash", str(SCRIPT), "--database-url", database_url]
    env = {**os.environ, "STRIDE_BIN": STRIDE}
    done = subprocess.run(
        [*command, "--source", label, "--no-verify"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert message in line
    assert conn.execute("SELECT count(*) FROM background_jobs").fetchone() == (0,)


@pytest.mark.parametrize(
    "label",
    ["y" * SOURCE_MAX_LENGTH, "déploiement 2026-11 · objectifs", "部署 v2", "deploy v2 🚀"],
)
def test_a_long_or_non_ascii_label_within_the_rules_is_accepted(conn: Conn, label: str) -> None:
    make_population(conn, 3)
    result = trigger_backfill(conn, label)
    assert result.outcome == "enqueued"
    assert conn.execute(
        "SELECT count(*) FROM background_jobs WHERE job_type = 'inference.objective_backfill' "
        "AND payload->>'source' = %s",
        (label,),
    ).fetchone() == (1,)
