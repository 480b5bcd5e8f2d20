"""`stride events …`: append one event, import a JSONL file."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, BinaryIO

import typer
from rich.progress import (
    BarColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from stride.cli.common import (
    DatabaseUrlOption,
    JsonOption,
    connected,
    console,
    database,
    database_errors,
    err_console,
    fail,
    print_json,
    render_table,
    typer_app,
    usage_error,
)
from stride.cli.users import parse_uuid
from stride.domain.validation import EventValidationError, NewEvent, parse_json, parse_timestamp
from stride.storage.connection import DbConnection, connect
from stride.storage.event_import import (
    ImportAborted,
    ImportProgress,
    ImportSummary,
    import_jsonl,
    read_jsonl,
)
from stride.storage.event_store import append_event
from stride.storage.migrations import migration_status

app = typer_app("Append and import events.")

# Which flag carries each field the store validates, for usage errors.
FIELD_FLAGS = {
    "user_id": "--user",
    "event_type": "--type",
    "timestamp": "--timestamp",
    "data": "--data",
    "metadata": "--idempotency-key",
    "metadata.idempotency_key": "--idempotency-key",
}
REJECTS_SHOWN = 50


@app.command("append")
def append_command(
    user: Annotated[
        str, typer.Option("--user", metavar="UUID", help="The user's id.", show_default=False)
    ],
    event_type: Annotated[
        str,
        typer.Option(
            "--type", metavar="TYPE", help="Event type, e.g. set.logged.", show_default=False
        ),
    ],
    data: Annotated[
        str,
        typer.Option(
            "--data", metavar="JSON", help="Event data: a JSON object.", show_default=False
        ),
    ],
    timestamp: Annotated[
        str | None,
        typer.Option(
            "--timestamp", metavar="TIME", help="ISO 8601 with a UTC offset (default: now, UTC)."
        ),
    ] = None,
    idempotency_key: Annotated[
        str | None,
        typer.Option(
            "--idempotency-key", metavar="KEY", help="Re-sending the same key stores nothing new."
        ),
    ] = None,
    database_url: DatabaseUrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Append one event and print its id (a re-sent idempotency key prints the stored id)."""
    user_id = parse_uuid(user, "--user")
    try:
        payload: Any = parse_json(data, "--data")
    except EventValidationError as exc:
        usage_error(str(exc))
    if not isinstance(payload, dict):
        usage_error("--data: must be a JSON object, e.g. '{\"reps\": 5}'")
    try:
        moment = datetime.now(UTC) if timestamp is None else parse_timestamp(timestamp)
    except EventValidationError as exc:
        usage_error(f"--timestamp: {exc.message}")
    metadata = {} if idempotency_key is None else {"idempotency_key": idempotency_key}
    event = NewEvent(user_id, event_type, moment, payload, metadata)
    with connected(database_url) as conn:
        try:
            result = append_event(conn, event)
        except EventValidationError as exc:
            usage_error(f"{FIELD_FLAGS.get(exc.field, exc.field)}: {exc.message}")
    if as_json:
        print_json({"id": str(result.id), "duplicate": result.duplicate})
    elif result.duplicate:
        print(f"{result.id} (duplicate: already stored, nothing appended)")
    else:
        print(result.id)


@app.command("import")
def import_command(
    path: Annotated[
        str,
        typer.Argument(
            metavar="FILE",
            help="One JSON object per line: {user_id, event_type, timestamp, data, metadata?}; "
            "- reads standard input.",
            show_default=False,
        ),
    ],
    batch_size: Annotated[
        int, typer.Option("--batch-size", metavar="N", min=1, help="Lines per transaction.")
    ] = 1000,
    progress_interval: Annotated[
        float,
        typer.Option(
            "--progress-interval",
            metavar="SECONDS",
            min=0,
            help="When stderr is not a terminal: seconds between progress lines (0: every batch).",
        ),
    ] = 10.0,
    database_url: DatabaseUrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Import events from a JSONL file or standard input; bad lines never stop the good ones.

    Exits 0 when every line was stored (or was a duplicate), 1 when some were
    rejected or the database failed part-way (the summary says how far it got).
    """
    started = time.monotonic()
    from_stdin = path == "-"
    name = "standard input" if from_stdin else path
    with ExitStack() as stack:
        stream, total = (sys.stdin.buffer, None) if from_stdin else _open_file(path, stack)
        with database_errors():
            target = database(database_url)
            conn = stack.enter_context(connect(target.url, autocommit=True))
            _require_migrated(conn)
            try:
                with _import_progress(total, progress_interval) as advance:
                    summary = import_jsonl(
                        conn, read_jsonl(stream), batch_size=batch_size, on_progress=advance
                    )
            except ImportAborted as exc:
                _report(name, exc.summary, time.monotonic() - started, as_json, stopped=True)
                raise exc.cause from None
    _report(name, summary, time.monotonic() - started, as_json)
    if summary.rejected:
        raise typer.Exit(1)


def _open_file(path: str, stack: ExitStack) -> tuple[BinaryIO, int | None]:
    """The file to import and its size, or a usage error naming it."""
    if Path(path).is_dir():
        usage_error(f"FILE: {path!r} is a directory")
    try:
        stream = stack.enter_context(Path(path).open("rb"))  # noqa: SIM115 (the stack closes it)
    except FileNotFoundError:
        usage_error(f"FILE: {path!r} does not exist")
    except OSError as exc:
        usage_error(f"FILE: cannot read {path!r}: {exc.strerror}")
    return stream, os.fstat(stream.fileno()).st_size or None


def _require_migrated(conn: DbConnection) -> None:
    """One error up front, rather than one rejected line per line, on an unmigrated database."""
    pending = [m for m in migration_status(conn) if m.applied_at is None]
    if pending:
        fail(
            f"the database schema is not migrated ({len(pending)} migrations pending): "
            "run `stride db migrate` first"
        )


@contextmanager
def _import_progress(total_bytes: int | None, interval: float) -> Iterator[ImportProgress]:
    """Progress on stderr: a bar with the rate on a terminal, else a line every `interval` s."""
    started = time.monotonic()

    def rate(lines: int) -> str:
        elapsed = time.monotonic() - started
        return f"{lines / elapsed:,.0f}" if elapsed > 0 else "-"

    if err_console.is_terminal:
        columns = (
            TextColumn("importing"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[lines]:,} lines · {task.fields[rate]} lines/s"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=err_console, transient=True) as bar:
            task = bar.add_task("importing", total=total_bytes, lines=0, rate="-")

            def draw(consumed: int, lines: int, summary: ImportSummary) -> None:
                bar.update(task, advance=consumed, lines=lines, rate=rate(lines))

            yield draw
        return

    last_line = started

    def print_line(consumed: int, lines: int, summary: ImportSummary) -> None:
        nonlocal last_line
        now = time.monotonic()
        if now - last_line < interval:
            return
        last_line = now
        err_console.print(
            f"imported {lines:,} lines: {summary.accepted:,} accepted, "
            f"{summary.duplicates:,} duplicate, {summary.rejected:,} rejected "
            f"({rate(lines)} lines/s)",
            highlight=False,
            soft_wrap=True,
        )

    yield print_line


def _report(
    name: str, summary: ImportSummary, seconds: float, as_json: bool, *, stopped: bool = False
) -> None:
    if as_json:
        document = _summary_json(name, summary, seconds)
        document["stopped_early"] = stopped
        print_json(document)
    else:
        _render_summary(name, summary, seconds, stopped=stopped)


def _summary_json(name: str, summary: ImportSummary, seconds: float) -> dict[str, Any]:
    return {
        "file": name,
        "lines": summary.lines,
        "accepted": summary.accepted,
        "duplicates": summary.duplicates,
        "rejected": summary.rejected,
        "rejects": [
            {"line": r.line, "field": r.field, "reason": r.reason} for r in summary.rejects
        ],
        "rejects_omitted": summary.rejects_omitted,
        "seconds": round(seconds, 3),
    }


def _render_summary(name: str, summary: ImportSummary, seconds: float, *, stopped: bool) -> None:
    read = f"stopped at line {summary.lines:,} after" if stopped else f"{summary.lines:,} lines in"
    console.print(
        f"{name}: {summary.accepted:,} accepted, {summary.duplicates:,} duplicate, "
        f"{summary.rejected:,} rejected ({read} {seconds:.1f}s)",
        highlight=False,
        soft_wrap=True,
    )
    if not summary.rejects:
        return
    shown = summary.rejects[:REJECTS_SHOWN]
    render_table(
        "rejected lines", ["line", "field", "reason"], [(r.line, r.field, r.reason) for r in shown]
    )
    hidden = summary.rejected - len(shown)
    if hidden:
        console.print(
            f"… and {hidden:,} more rejected lines (--json lists up to 1,000)", highlight=False
        )
