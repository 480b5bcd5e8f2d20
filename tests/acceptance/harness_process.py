"""A `worker_harness.py` process for acceptance tests, its stderr in a file the test reads."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.conftest import wait_until

HARNESS = Path(__file__).with_name("worker_harness.py")


class WorkerProcess:
    """A harness worker process whose stderr goes to a file the test can read."""

    def __init__(
        self, database_url: str, log: Path, *options: str, wait_ready: bool = True
    ) -> None:
        self.log = log
        self._stderr = log.open("w")
        self.process = subprocess.Popen(
            [sys.executable, str(HARNESS), "--database-url", database_url, *options],
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        if wait_ready:
            wait_until(self.ready)

    def ready(self) -> bool:
        """The harness said it is ready (or already exited)."""
        return "ready" in self.output() or self.process.poll() is not None

    def output(self) -> str:
        return self.log.read_text()

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float = 30) -> int:
        return self.process.wait(timeout)

    def close(self, *, graceful: bool = False) -> None:
        """Stop the process: SIGTERM first when `graceful` (it finishes its work in hand)."""
        if graceful and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(30)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._stderr.close()
