"""Import a JSONL stream of events: one transaction per batch, bad lines reported by number."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

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


ImportProgress = Callable[[int, int], None]  # (bytes consumed since last call, lines)


def import_jsonl(
    conn: DbConnection,
    lines: Iterable[bytes],
    *,
    batch_size: int = 1000,
    max_rejects_kept: int = 1000,
    on_progress: ImportProgress | None = None,
) -> ImportSummary:
    """Stream JSONL events into the store, one transaction per batch.

    Each line is validated on its own first, so a bad line is rejected with its
    number and reason while the good ones are stored. A batch the database still
    refuses is retried line by line.
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
        _import_batch(conn, batch, summary, reject)
        batch.clear()
        if on_progress is not None:
            on_progress(consumed, summary.lines)
        consumed = 0

    for line_number, raw in enumerate(lines, start=1):
        summary.lines = line_number
        consumed += len(raw)
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
    except (EventBatchError, psycopg.Error):
        if conn.broken:
            raise
        _import_line_by_line(conn, pending, summary, reject)
        return
    _count(summary, results)


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
            if conn.broken:
                raise
            reject(line_number, " ".join(str(exc).split()) or type(exc).__name__)


def _count(summary: ImportSummary, results: Sequence[AppendResult]) -> None:
    for result in results:
        if result.duplicate:
            summary.duplicates += 1
        else:
            summary.accepted += 1
