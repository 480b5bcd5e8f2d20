"""`stride demo run` (what `make demo` runs) ends by serving the API with a working curl line."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
from pathlib import Path

import httpx

from tests.api.conftest import STRIDE, free_port
from tests.conftest import wait_until


def test_demo_prints_a_curl_line_that_reads_a_users_objective_state(
    database_url: str, tmp_path: Path
) -> None:
    port = free_port()
    log = tmp_path / "demo.log"
    command = [
        *(STRIDE, "demo", "run", "--users", "40", "--workers", "1"),
        *("--serve", "--port", str(port)),
    ]
    env = {**os.environ, "STRIDE_DATA_DIR": str(tmp_path / "pgdata"), "COLUMNS": "400"}
    with log.open("wb") as out:
        demo = subprocess.Popen(
            [*command, "--database-url", database_url],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        found = wait_until(
            lambda: re.search(r"^\s*(curl .*)$", log.read_text(), re.M), timeout=90, what="curl"
        )
        curl = shlex.split(found.group(1))
        assert curl[:3] == ["curl", "-s", "-H"]
        url = curl[-1]
        assert url == f"http://127.0.0.1:{port}/v1/projections/objective_state/active"

        def answered() -> httpx.Response | None:
            try:
                return httpx.get(url, headers=dict([curl[3].split(": ", 1)]), timeout=5)
            except httpx.TransportError:
                return None

        answer = wait_until(answered, timeout=30, what="the demo's API")
        assert answer.status_code == 200, answer.text
        assert answer.json()["type"] == "objective_state"
        assert "active_objective" in answer.json()["data"]
    finally:
        demo.send_signal(signal.SIGTERM)
        assert demo.wait(timeout=30) == 0, log.read_text()
