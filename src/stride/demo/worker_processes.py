"""Run `stride worker` as child processes (the demo and the benchmarks use real processes)."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import IO


def spawn_workers(
    database_url: str, count: int, extra_args: Sequence[str] = (), log: IO[bytes] | None = None
) -> list[subprocess.Popen[bytes]]:
    """Start `count` worker processes against `database_url`."""
    command = [sys.executable, "-m", "stride.cli.main", "worker", "--database-url", database_url]
    return [
        subprocess.Popen(
            [*command, *extra_args],
            stdout=log if log is not None else subprocess.DEVNULL,
            stderr=log if log is not None else subprocess.DEVNULL,
        )
        for _ in range(count)
    ]


def stop_workers(processes: Sequence[subprocess.Popen[bytes]], timeout: float = 30.0) -> None:
    """SIGTERM (finish the work in hand), then wait; kill what does not exit in time."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def running_workers(
    database_url: str, count: int, extra_args: Sequence[str] = (), log: IO[bytes] | None = None
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Worker processes for the duration of a `with` block."""
    processes = spawn_workers(database_url, count, extra_args, log)
    try:
        yield processes
    finally:
        stop_workers(processes)
