"""`stride events …`: append one event, import a JSONL file."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

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
    print_json,
    render_table,
    typer_app,
    usage_error,
)
from stride.cli.users import parse_uuid
from stride.domain.validation import EventValidationError, NewEvent, parse_timestamp
from stride.storage.connection import connect
from stride.storage.event_import import ImportSummary, import_jsonl
from stride.storage.event_store import append_event

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
    user: Annotated[str, typer.Option("--user", help="The user's UUID.", show_default=False)],
    event_type: Annotated[
        str, typer.Option("--type", help="Event type, e.g. set.logged.", show_default=False)
    ],
    data: Annotated[
        str, typer.Option("--data", help="Event data: a JSON object.", show_default=False)
    ],
    timestamp: Annotated[
        str | None,
        typer.Option("--timestamp", help="ISO 8601 with a UTC offset (default: now, UTC)."),
    ] = None,
    idempotency_key: Annotated[
        str | None,
        typer.Option("--idempotency-key", help="Re-sending the same key stores nothing new."),
    ] = None,
    database_url: DatabaseUrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Append one event and print its id (a re-sent idempotency key prints the stored id)."""
    user_id = parse_uuid(user, "--user")
    try:
        payload: Any = json.loads(data)
    except ValueError as exc:
        usage_error(f"--data: not valid JSON: {exc}")
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
        Path,
        typer.Argument(
            metavar="FILE.jsonl",
            help="One JSON object per line: {user_id, event_type, timestamp, data, metadata?}.",
            exists=True,
            dir_okay=False,
            readable=True,
        ),
    ],
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="Lines per transaction.")
    ] = 1000,
    database_url: DatabaseUrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Import events from a JSONL file; bad lines are reported and never stop the good ones.

    Exits 0 when every line was stored (or was a duplicate), 1 when some were rejected.
    """
    started = time.monotonic()
    with database_errors():
        target = database(database_url)
        with (
            connect(target.url, autocommit=True) as conn,
            path.open("rb") as stream,
            _progress(as_json) as progress,
        ):
            task = progress.add_task("importing", total=path.stat().st_size or None, lines=0)

            def advance(consumed: int, lines: int) -> None:
                progress.update(task, advance=consumed, lines=lines)

            summary = import_jsonl(conn, stream, batch_size=batch_size, on_progress=advance)
    seconds = time.monotonic() - started
    if as_json:
        print_json(_summary_json(path, summary, seconds))
    else:
        _render_summary(path, summary, seconds)
    if summary.rejected:
        raise typer.Exit(1)


def _progress(quiet: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[lines]:,} lines"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
        disable=quiet or not err_console.is_terminal,
    )


def _summary_json(path: Path, summary: ImportSummary, seconds: float) -> dict[str, Any]:
    return {
        "file": str(path),
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


def _render_summary(path: Path, summary: ImportSummary, seconds: float) -> None:
    console.print(
        f"{path}: {summary.accepted:,} accepted, {summary.duplicates:,} duplicate, "
        f"{summary.rejected:,} rejected ({summary.lines:,} lines in {seconds:.1f}s)",
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
