"""JSONL import: good lines stored in batches, bad ones numbered, a refused batch retried."""

from __future__ import annotations

import io
import json
from typing import Any

import psycopg
import pytest
from tests.hostile_lines import bad_lines, valid_line

from stride.domain.ids import new_uuid7
from stride.storage.event_import import ImportAborted, OverlongLine, import_jsonl, read_jsonl
from stride.storage.users import add_user

Conn = psycopg.Connection[Any]
WHEN = "2026-03-01T07:30:00Z"


def count(conn: Conn, query: str) -> int:
    row = conn.execute(query).fetchone()
    assert row is not None
    return int(row[0])


def jobs(conn: Conn) -> int:
    return count(conn, "SELECT count(*) FROM background_jobs WHERE job_type = 'projection.update'")


def events(conn: Conn) -> int:
    return count(conn, "SELECT count(*) FROM events")


def test_import_keeps_good_lines_and_numbers_the_bad_ones(conn: Conn) -> None:
    user = add_user(conn)
    event = {"user_id": str(user), "event_type": "set.logged", "timestamp": WHEN, "data": {}}
    good = json.dumps(event)
    stranger = json.dumps({**event, "user_id": str(new_uuid7())})
    lines = [good, "{oops", stranger, "", good.replace(WHEN, "2026-03-01"), good]
    summary = import_jsonl(conn, [(line + "\n").encode() for line in lines], batch_size=2)
    assert (summary.accepted, summary.duplicates, summary.rejected) == (2, 0, 3)
    assert [(r.line, r.field) for r in summary.rejects] == [
        (2, "line"),
        (3, "user_id"),
        (5, "timestamp"),
    ]
    assert (events(conn), jobs(conn)) == (2, 2)


def test_import_falls_back_to_line_by_line_when_the_database_refuses_a_batch(
    conn: Conn,
) -> None:
    user = add_user(conn)
    # A per-row check the validation knows nothing about, to make one row fail in SQL.
    conn.execute("ALTER TABLE events ADD CONSTRAINT no_poison CHECK (event_type <> 'poison')")
    lines = [
        f'{{"user_id": "{user}", "event_type": "{t}", "timestamp": "{WHEN}", "data": {{}}}}\n'
        for t in ("a", "poison", "b")
    ]
    summary = import_jsonl(conn, [line.encode() for line in lines], batch_size=10)
    assert (summary.accepted, summary.rejected) == (2, 1)
    assert summary.rejects[0].line == 2 and summary.rejects[0].field == "database"
    assert "no_poison" in summary.rejects[0].reason
    assert events(conn) == 2


def _hostile_file(user: str) -> tuple[bytes, list[tuple[int, str, str]]]:
    """1,500 valid lines, every kind of bad line, 10 valid lines; and the expected rejects."""
    lines = [valid_line(user, i) for i in range(1500)]
    expected = []
    for what, line, field in bad_lines(user):
        lines.append(line)
        expected.append((len(lines), field, what))
    lines += [valid_line(user, 1500 + i) for i in range(10)]
    return b"".join(lines), expected


def test_import_stores_every_valid_line_around_every_kind_of_bad_line(conn: Conn) -> None:
    user = str(add_user(conn))
    content, expected = _hostile_file(user)
    summary = import_jsonl(conn, read_jsonl(io.BytesIO(content)))
    assert (summary.accepted, summary.rejected) == (1510, len(expected))
    assert [(r.line, r.field) for r in summary.rejects] == [(n, f) for n, f, _ in expected], [
        (r.line, r.field, r.reason[:60]) for r in summary.rejects
    ]
    assert summary.lines == 1500 + len(expected) + 10
    assert (events(conn), jobs(conn)) == (1510, 1510)


def test_an_over_long_line_is_skipped_without_holding_it(conn: Conn) -> None:
    user = str(add_user(conn))
    good = valid_line(user, 1)
    content = good + b"x" * 10_000 + b"\n" + b"y" * 300 + valid_line(user, 2) + b"z" * 5000
    read = list(read_jsonl(io.BytesIO(content), max_line_bytes=len(good)))
    assert read == [
        good,
        OverlongLine(10_000),
        OverlongLine(300 + len(good) - 1),
        OverlongLine(5000),
    ]
    summary = import_jsonl(conn, read, max_line_bytes=len(good))
    assert (summary.accepted, summary.rejected) == (1, 3)
    assert summary.rejects[0].reason == f"10,000 bytes long; at most {len(good):,} bytes per line"


def test_a_failing_database_ends_the_import_with_one_error_not_a_reject_per_line(
    conn: Conn,
) -> None:
    user = str(add_user(conn))
    lines = [valid_line(user, i) for i in range(25)]
    import_jsonl(conn, lines[:10], batch_size=10)
    conn.execute("ALTER TABLE events RENAME TO events_gone")  # the schema changed underneath
    with pytest.raises(ImportAborted) as caught:
        import_jsonl(conn, lines[10:], batch_size=10)
    assert caught.value.summary.rejected == 0
    assert caught.value.summary.lines == 10  # stopped at the first batch
    assert isinstance(caught.value.cause, psycopg.errors.UndefinedTable)
