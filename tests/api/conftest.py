"""A real `stride serve` process on a free port, over real HTTP, against a real database."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import psycopg
import pytest

from stride.api.service import issue_token
from tests.conftest import migrated_database, wait_until

STRIDE = str(Path(sys.executable).with_name("stride"))
WHEN = "2026-03-01T07:30:00Z"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class ApiServer:
    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path

    def client(self, token: str | None = None, **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=30, **kwargs)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, then the exit status (killing it only if it hangs)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(
                f"stride serve ignored SIGTERM for {timeout}s:\n{self.log()}"
            ) from None


@contextmanager
def running_server(
    database_url: str, log_dir: Path, *args: str, ready: bool = True
) -> Iterator[ApiServer]:
    """`stride serve` on a free port until the block ends (then SIGTERM)."""
    port = free_port()
    log_path = log_dir / f"serve-{port}.log"
    command = [STRIDE, "serve", "--port", str(port), "--database-url", database_url]
    command += ["--rate-limit", "0", *args]
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRIDE_API_")}
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    server = ApiServer(process, f"http://127.0.0.1:{port}", log_path)

    def up() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"stride serve exited {process.returncode}:\n{server.log()}")
        try:
            return httpx.get(f"{server.base_url}/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    try:
        if ready:
            wait_until(up, timeout=30, what="stride serve to answer /healthz")
        yield server
    finally:
        server.stop()


@contextmanager
def running_worker(database_url: str, log_dir: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A real `stride worker` (the product's handlers) until the block ends."""
    log_path = log_dir / "worker.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [STRIDE, "worker", "--database-url", database_url],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def add_user(database_url: str) -> UUID:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute("INSERT INTO users DEFAULT VALUES RETURNING id").fetchone()
    assert row is not None
    user_id: UUID = row[0]
    return user_id


def new_token(
    database_url: str,
    user_id: UUID | None = None,
    *,
    operator: bool = False,
    expires_at: datetime | None = None,
) -> tuple[UUID, str]:
    """A user (new unless given) and a fresh token for them."""
    user = user_id or add_user(database_url)
    with psycopg.connect(database_url, autocommit=True) as conn:
        issued = issue_token(conn, user, operator=operator, expires_at=expires_at)
    return user, issued.text


def scalar(database_url: str, query: str, params: Any = None) -> Any:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


@pytest.fixture(scope="module")
def shared_database(server_url: str, template_db: str) -> Iterator[str]:
    """One migrated database for a module's tests (each test makes its own users)."""
    with migrated_database(server_url, template_db, prefix="stride_api") as url:
        yield url


@pytest.fixture(scope="module")
def api(shared_database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """One server for a module's tests, on the module's database."""
    with running_server(shared_database, tmp_path_factory.mktemp("api")) as server:
        yield server
