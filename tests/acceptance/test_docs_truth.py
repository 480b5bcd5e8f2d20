"""README and runbook say only what is true (issue 14 item 8), checked against the CLI."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from uuid import UUID

import click
import typer

from stride.cli.main import app

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", ROOT / "docs" / "runbooks" / "objective-foundation-backfill.md"]
STRIDE = str(Path(sys.executable).with_name("stride"))
MENTION = re.compile(r"`(stride(?: [a-z][a-z-]*)+)")


def resolves(words: list[str]) -> bool:
    """Whether `stride <words…>` names a command (extra words may be its arguments)."""
    command: click.Command = typer.main.get_command(app)
    for word in words:
        if not isinstance(command, click.Group):
            return True
        sub = command.commands.get(word)
        if sub is None:
            return False
        command = sub
    return not isinstance(command, click.Group) or not words


def test_every_command_the_docs_mention_exists() -> None:
    mentioned = {m.group(1) for doc in DOCS for m in MENTION.finditer(doc.read_text())}
    assert mentioned
    unknown = sorted(text for text in mentioned if not resolves(text.split()[1:]))
    assert unknown == []


def test_the_readme_lists_every_command() -> None:
    readme = (ROOT / "README.md").read_text()

    def leaves(command: click.Command, path: tuple[str, ...]) -> list[tuple[str, ...]]:
        if isinstance(command, click.Group):
            return [p for n, c in command.commands.items() for p in leaves(c, (*path, n))]
        return [path]

    missing = [
        " ".join(path)
        for path in leaves(typer.main.get_command(app), ())
        if f"`stride {' '.join(path)}" not in readme
    ]
    assert missing == []


def test_docs_say_how_to_get_stride_on_the_path() -> None:
    for doc in DOCS:
        assert "source .venv/bin/activate" in doc.read_text(), doc
    make = subprocess.run(
        ["make", "-n", "demo"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert "activate" in make.stdout


def test_training_modality_is_described_as_part_of_objective_state() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "objective state, which includes the user's training modality" in readme
    assert "objective advisory, training modality)" not in readme


def test_projections_show_rejects_unknown_types(database_url: str) -> None:
    done = subprocess.run(
        [
            STRIDE,
            "projections",
            "show",
            str(UUID(int=1)),
            "--type",
            "training_modality",
            "--database-url",
            database_url,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert "training_modality" in line
    assert "objective_advisory, objective_state" in line


def test_users_list_is_in_id_order_as_documented(database_url: str) -> None:
    def stride(*args: str) -> str:
        done = subprocess.run(
            [STRIDE, *args, "--database-url", database_url],
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout

    stride("users", "add", "--id", "ffffffff-0000-4000-8000-000000000000")
    stride("users", "add")
    stride("users", "add", "--id", "00000000-0000-4000-8000-000000000000")
    listed = [UUID(u["id"]) for u in json.loads(stride("users", "list", "--json"))]
    assert listed == sorted(listed)
    assert listed[0] == UUID("00000000-0000-4000-8000-000000000000")
    assert "not creation order" in stride("users", "list", "-h")
