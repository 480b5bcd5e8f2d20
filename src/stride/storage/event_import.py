"""Import a JSONL stream of events: one transaction per batch, bad lines reported by number.

Every line is stored or rejected with its number and reason; a bad line never
stops the good ones. Only the database itself failing (unreachable, not
migrated, no permission) ends an import early, as one error with the summary
of what was stored so far.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO

import psycopg

from stride.domain.validation import (
    EventBatchError,
    EventValidationError,
    ValidEvent,
    event_from_json_line,
    validate_event,
)
from stride.storage.connection import DbConnection
from stride.storage.event_store import AppendResult, append_valid_events

# Longer than any valid line (data and metadata are at most 1 MiB serialised
# each): a bound on the memory one line may take.
MAX_LINE_BYTES = 4 * 1024 * 1024
_SKIP_CHUNK = 1024 * 1024

# SQLSTATE classes that belong to one row's values (data exception, integrity
# constraint, program limit such as an index row too large): the line is
# rejected. Any other error is the database's, not the line's.
ROW_ERROR_CLASSES = ("22", "23", "54")


@dataclass(frozen=True, slots=True)
class OverlongLine:
    """A line longer than the limit, read past without keeping it; `size` in bytes
    (without its newline)."""

    size: int


def read_jsonl(
    stream: BinaryIO, max_line_bytes: int = MAX_LINE_BYTES
) -> Iterator[bytes | OverlongLine]:
    """The lines of `stream`, holding at most `max_line_bytes` of one line in memory."""
    while True:
        line = stream.readline(max_line_bytes + 1)
        if not line:
            return
        if len(line) <= max_line_bytes or line.endswith(b"\n"):
            yield line
            continue
        size = len(line)
        while not line.endswith(b"\n"):
            line = stream.readline(_SKIP_CHUNK)
            if not line:
                break
            size += len(line)
        yield OverlongLine(size - line.endswith(b"\n"))


@dataclass(frozen=True, slots=True)
class RejectedLine:
    line: int
    field: str
    reason: str


@dataclass(slots=True)
class ImportSummary:
    lines: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    rejects: list[RejectedLine] = field(default_factory=list)

    @property
    def rejects_omitted(self) -> int:
        """Rejects counted but not kept (only the first `max_rejects_kept` are)."""
        return self.rejected - len(self.rejects)


class ImportAborted(Exception):
    """The database failed (not a line): `summary` counts what was stored before."""

    def __init__(self, summary: ImportSummary, cause: psycopg.Error) -> None:
        super().__init__(f"import stopped at line {summary.lines}: {cause}")
        self.summary = summary
        self.cause = cause


# (bytes consumed since last call, lines read, summary so far)
ImportProgress = Callable[[int, int, ImportSummary], None]


def import_jsonl(
    conn: DbConnection,
    lines: Iterable[bytes | OverlongLine],
    *,
    batch_size: int = 1000,
    max_rejects_kept: int = 1000,
    max_line_bytes: int = MAX_LINE_BYTES,
    on_progress: ImportProgress | None = None,
) -> ImportSummary:
    """Stream JSONL events into the store, one transaction per batch.

    Each line is validated on its own first, so a bad line is rejected with its
    number and reason while the good ones are stored. A batch the database still
    refuses is retried line by line. Raises ImportAborted when the database
    itself fails; the batches committed before stay committed.
    """
    summary = ImportSummary()
    batch: list[tuple[int, ValidEvent]] = []
    consumed = 0

    def reject(line_number: int, error: EventValidationError | str) -> None:
        summary.rejected += 1
        if len(summary.rejects) < max_rejects_kept:
            if isinstance(error, EventValidationError):
                summary.rejects.append(RejectedLine(line_number, error.field, error.message))
            else:
                summary.rejects.append(RejectedLine(line_number, "database", error))

    def flush() -> None:
        nonlocal consumed
        try:
            _import_batch(conn, batch, summary, reject)
        except psycopg.Error as exc:
            summary.rejects.sort(key=lambda r: r.line)
            raise ImportAborted(summary, exc) from exc
        batch.clear()
        if on_progress is not None and consumed:
            on_progress(consumed, summary.lines, summary)
        consumed = 0

    for line_number, raw in enumerate(lines, start=1):
        summary.lines = line_number
        if isinstance(raw, OverlongLine):
            consumed += raw.size
            reject(line_number, _overlong(raw.size, max_line_bytes))
            continue
        consumed += len(raw)
        if len(raw) - raw.endswith(b"\n") > max_line_bytes:
            reject(line_number, _overlong(len(raw) - raw.endswith(b"\n"), max_line_bytes))
            continue
        if not raw.strip():
            continue
        try:
            batch.append((line_number, validate_event(event_from_json_line(raw))))
        except EventValidationError as exc:
            reject(line_number, exc)
        if len(batch) >= batch_size:
            flush()
    flush()
    summary.rejects.sort(key=lambda r: r.line)
    return summary


def _overlong(size: int, limit: int) -> EventValidationError:
    return EventValidationError("line", f"{size:,} bytes long; at most {limit:,} bytes per line")


def _import_batch(
    conn: DbConnection,
    batch: list[tuple[int, ValidEvent]],
    summary: ImportSummary,
    reject: Callable[[int, EventValidationError | str], None],
) -> None:
    pending = batch
    try:
        try:
            results = append_valid_events(conn, [event for _, event in pending])
        except EventBatchError as exc:
            # Unknown users: reject those lines, insert the rest.
            bad = {e.index: e for e in exc.errors}
            for position, (line_number, _) in enumerate(pending):
                if position in bad:
                    reject(line_number, bad[position])
            pending = [item for position, item in enumerate(pending) if position not in bad]
            results = append_valid_events(conn, [event for _, event in pending])
    except EventBatchError:
        _import_line_by_line(conn, pending, summary, reject)
        return
    except psycopg.Error as exc:
        if not _is_row_error(conn, exc):
            raise
        _import_line_by_line(conn, pending, summary, reject)
        return
    _count(summary, results)


def _is_row_error(conn: DbConnection, exc: psycopg.Error) -> bool:
    """Whether `exc` is about one row's values, so retrying line by line can isolate it."""
    return not conn.broken and (exc.sqlstate or "")[:2] in ROW_ERROR_CLASSES


def _import_line_by_line(
    conn: DbConnection,
    batch: list[tuple[int, ValidEvent]],
    summary: ImportSummary,
    reject: Callable[[int, EventValidationError | str], None],
) -> None:
    for line_number, event in batch:
        try:
            _count(summary, append_valid_events(conn, [event]))
        except EventBatchError as exc:
            reject(line_number, exc.errors[0])
        except psycopg.Error as exc:
            if not _is_row_error(conn, exc):
                raise
            reject(line_number, " ".join(str(exc).split()) or type(exc).__name__)


def _count(summary: ImportSummary, results: Sequence[AppendResult]) -> None:
    for result in results:
        if result.duplicate:
            summary.duplicates += 1
        else:
            summary.accepted += 1
