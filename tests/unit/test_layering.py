"""The import contracts in pyproject.toml hold, and they catch an upward import.

`make lint` runs lint-imports on the package; this test also shows the
contracts are not vacuous: the same check over a copy of the package with one
upward import added must fail and name the offending import.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    """Run lint-imports with `tree`/src first on the path, using `tree`'s contracts."""
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(tree / "pyproject.toml"), "--no-cache"],
        cwd=tree,
        env={**os.environ, "PYTHONPATH": str(tree / "src")},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def package_copy(tmp_path: Path) -> Path:
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copytree(
        ROOT / "src" / "stride",
        tmp_path / "src" / "stride",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    return tmp_path


@pytest.mark.parametrize(
    ("module", "upward_import"),
    [
        ("domain/events.py", "import stride.storage.connection"),
        ("projections/registry.py", "import stride.storage.connection"),
        ("storage/event_store.py", "import stride.queue.jobs"),
        ("queue/jobs.py", "import stride.readmodels.refresh"),
        ("backfill/trigger.py", "import stride.cli.main"),
    ],
)
def test_an_upward_import_breaks_the_contracts(
    package_copy: Path, module: str, upward_import: str
) -> None:
    clean = _lint(package_copy)
    assert clean.returncode == 0, clean.stdout + clean.stderr

    target = package_copy / "src" / "stride" / module
    target.write_text(target.read_text() + f"\n{upward_import}  # noqa\n")
    broken = _lint(package_copy)

    assert broken.returncode != 0
    assert "BROKEN" in broken.stdout
    importer = "stride." + module.removesuffix(".py").replace("/", ".")
    assert importer in broken.stdout
