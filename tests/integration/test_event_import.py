"""JSONL import: good lines stored in batches, bad ones numbered, a refused batch retried."""

from __future__ import annotations

import json
from typing import Any

import psycopg

from stride.domain.ids import new_uuid7
from stride.storage.event_import import import_jsonl
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
