"""Headless Chromium (Debian's `chromium` package) driven by Playwright's Python client.

The browser is the system one (`executable_path`): Playwright's own browser
downloads are never used, so the tests run offline. They skip, saying why, only
where no Chromium executable can be found; `.ci/run` installs the package.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
REPO = Path(__file__).resolve().parents[2]


def chromium_executable() -> str | None:
    """$STRIDE_CHROMIUM, else Debian's /usr/bin/chromium, else one on the PATH."""
    configured = os.environ.get("STRIDE_CHROMIUM")
    if configured:
        return configured if Path(configured).exists() else None
    for candidate in (
        "/usr/bin/chromium",
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
    ):
        if candidate and Path(candidate).exists():
            return candidate
    return None


@pytest.fixture(scope="session")
def chromium() -> str:
    path = chromium_executable()
    if path is None:
        pytest.skip(
            "browser tests need Chromium: `apt-get install -y chromium` (Debian), "
            "or set STRIDE_CHROMIUM to a Chromium executable"
        )
    return path


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where the tests leave screenshots: $STRIDE_ARTIFACTS, else build/artifacts."""
    path = Path(os.environ.get("STRIDE_ARTIFACTS", REPO / "build" / "artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def browser(chromium: str) -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()
