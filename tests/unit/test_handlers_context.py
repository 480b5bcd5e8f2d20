"""JobContext: the connection is handed out through a hook the runner can use once."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from stride.queue.handlers import JobContext
from stride.queue.jobs import ClaimedJob
from stride.storage.connection import DbConnection

JOB = ClaimedJob(1, "t", {}, None, 0, 1, 5, "w", datetime(2026, 1, 1, tzinfo=UTC))
CONN = cast(DbConnection, object())


def test_first_use_runs_once_when_the_handler_asks_for_the_connection() -> None:
    calls: list[Any] = []
    context = JobContext(CONN, JOB, "w", "", lambda jobs: True, _first_use=lambda: calls.append(1))
    assert calls == []
    assert context.conn is CONN
    assert context.conn is CONN
    assert calls == [1]


def test_without_a_hook_the_connection_is_simply_there() -> None:
    assert JobContext(CONN, JOB, "w", "", lambda jobs: True).conn is CONN
