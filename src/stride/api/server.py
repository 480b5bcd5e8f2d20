"""Run the app under uvicorn (uvloop + httptools), in one or several worker processes.

Settings travel to the worker processes as STRIDE_API_* variables. uvicorn
handles SIGTERM/SIGINT: it stops accepting connections, lets in-flight requests
finish (up to `graceful_timeout` seconds), then runs the app's shutdown (pools
and the LISTEN connection close).
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from uvicorn.server import HANDLED_SIGNALS

from stride.api.config import ApiSettings

APP_FACTORY = "stride.api.app:create_app_from_env"


@contextmanager
def _shared_metrics_dir(workers: int) -> Iterator[None]:
    """Several workers share their Prometheus samples through a scratch directory."""
    if workers < 2:
        yield
        return
    path = tempfile.mkdtemp(prefix="stride-api-metrics-")
    previous = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        else:
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = previous
        shutil.rmtree(path, ignore_errors=True)


class _Server(uvicorn.Server):
    """uvicorn's server, minus re-raising the signal after its graceful shutdown: a
    shutdown that let every request finish is a clean exit (status 0), as for
    `stride worker`. (With several workers uvicorn's supervisor already exits 0.)"""

    @contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in HANDLED_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def serve(
    settings: ApiSettings,
    *,
    host: str,
    port: int,
    workers: int = 1,
    graceful_timeout: float = 30.0,
    access_log: bool = False,
) -> None:
    """Serve until SIGTERM/SIGINT; returns after a graceful shutdown."""
    os.environ.update(settings.to_env())
    with _shared_metrics_dir(workers):
        options: dict[str, Any] = {
            "factory": True,
            "host": host,
            "port": port,
            "workers": workers,
            "loop": "uvloop",
            "http": "httptools",
            "lifespan": "on",
            "access_log": access_log,
            "server_header": False,
            "timeout_graceful_shutdown": max(1, round(graceful_timeout)),
            "log_level": "info",
        }
        if workers > 1:
            # uvicorn's supervisor: on SIGTERM it stops every worker gracefully.
            uvicorn.run(APP_FACTORY, **options)
            return
        server = _Server(uvicorn.Config(APP_FACTORY, **options))
        server.run()
        if not server.started:
            raise SystemExit(3)
