"""`stride serve`: the HTTP API (uvicorn, uvloop, httptools), until SIGTERM or Ctrl-C."""

from __future__ import annotations

from typing import Annotated

import typer

from stride.api.config import ApiSettings, SettingsError, parse_duration, parse_size
from stride.api.server import serve
from stride.cli.common import (
    DatabaseUrlOption,
    connected,
    database,
    database_errors,
    err_console,
    usage_error,
)
from stride.storage.migrations import migrate, migration_status


def _env(name: str) -> str:
    return f"STRIDE_API_{name}"


def _size(flag: str, value: str) -> int:
    try:
        return parse_size(value)
    except ValueError as exc:
        usage_error(f"{flag}: {exc}")


def _seconds(flag: str, value: str) -> float:
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        usage_error(f"{flag}: {exc}")
    if seconds <= 0:
        usage_error(f"{flag}: must be positive")
    return seconds


def serve_command(
    host: Annotated[
        str, typer.Option("--host", metavar="HOST", envvar=_env("HOST"), help="Address to bind.")
    ] = ("127.0.0.1"),
    port: Annotated[
        int,
        typer.Option(
            "--port", metavar="PORT", envvar=_env("PORT"), min=0, max=65535, help="TCP port."
        ),
    ] = 8000,
    workers: Annotated[
        int,
        typer.Option("--workers", metavar="N", envvar=_env("WORKERS"), min=1, help="Processes."),
    ] = 1,
    max_body: Annotated[
        str,
        typer.Option(
            "--max-body",
            metavar="SIZE",
            envvar=_env("MAX_BODY_BYTES"),
            help="Largest request body (413 past it).",
        ),
    ] = "2MiB",
    max_batch: Annotated[
        int,
        typer.Option(
            "--max-batch", metavar="N", envvar=_env("MAX_BATCH"), min=1, help="Events per POST."
        ),
    ] = 1000,
    max_string_chars: Annotated[
        int,
        typer.Option(
            "--max-string-chars",
            metavar="N",
            envvar=_env("MAX_STRING_CHARS"),
            min=1,
            help="Longest JSON string.",
        ),
    ] = 10_000,
    max_depth: Annotated[
        int,
        typer.Option(
            "--max-depth",
            metavar="N",
            envvar=_env("MAX_DEPTH"),
            min=1,
            help="Deepest JSON nesting.",
        ),
    ] = 32,
    rate_limit: Annotated[
        float,
        typer.Option(
            "--rate-limit",
            metavar="RATE",
            envvar=_env("RATE_LIMIT"),
            min=0,
            help="Requests per second per token and process (0: no limit).",
        ),
    ] = 100.0,
    rate_burst: Annotated[
        int,
        typer.Option(
            "--rate-burst", metavar="N", envvar=_env("RATE_BURST"), min=1, help="Burst per token."
        ),
    ] = 200,
    max_wait: Annotated[
        str,
        typer.Option(
            "--max-wait",
            metavar="DURATION",
            envvar=_env("MAX_WAIT_SECONDS"),
            help="Longest after_event wait allowed.",
        ),
    ] = "30s",
    pool_size: Annotated[
        int,
        typer.Option(
            "--pool-size",
            metavar="N",
            envvar=_env("POOL_SIZE"),
            min=1,
            help="Async connections per process.",
        ),
    ] = 10,
    graceful_timeout: Annotated[
        str,
        typer.Option(
            "--graceful-timeout",
            metavar="DURATION",
            help="On SIGTERM, wait this long for requests.",
        ),
    ] = "30s",
    apply_migrations: Annotated[
        bool, typer.Option("--migrate", help="Apply pending migrations before serving.")
    ] = False,
    access_log: Annotated[bool, typer.Option("--access-log", help="Log every request.")] = False,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Serve the HTTP API (docs at /docs, OpenAPI at /openapi.json) until SIGTERM/Ctrl-C.

    Every setting also reads a STRIDE_API_* variable (e.g. STRIDE_API_RATE_LIMIT).
    """
    body_bytes = _size("--max-body", max_body)
    wait_seconds = _seconds("--max-wait", max_wait)
    grace = _seconds("--graceful-timeout", graceful_timeout)
    with database_errors():
        target = database(database_url)
        try:
            settings = ApiSettings(
                database_url=target.url,
                max_body_bytes=body_bytes,
                max_batch=max_batch,
                max_string_chars=max_string_chars,
                max_depth=max_depth,
                rate_limit=rate_limit,
                rate_burst=rate_burst,
                default_wait_seconds=min(2.0, wait_seconds),
                max_wait_seconds=wait_seconds,
                pool_size=pool_size,
            )
        except SettingsError as exc:
            usage_error(str(exc))
        with connected(target.url) as conn:
            if apply_migrations:
                migrate(conn)
            pending = [m for m in migration_status(conn) if m.applied_at is None]
    if pending:
        err_console.print(
            f"[yellow]warning:[/yellow] {len(pending)} migration(s) pending: /readyz answers 503 "
            "until `stride db migrate` (or `stride serve --migrate`)",
            highlight=False,
        )
    err_console.print(
        f"stride API on http://{host}:{port} ({workers} worker process"
        f"{'es' if workers > 1 else ''}); docs at /docs; {target.description}",
        highlight=False,
        soft_wrap=True,
    )
    serve(
        settings,
        host=host,
        port=port,
        workers=workers,
        graceful_timeout=grace,
        access_log=access_log,
    )
