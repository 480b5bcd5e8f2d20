"""Migrations: ordered, recorded, idempotent, safe under concurrency."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest

from stride.storage.migrations import available_migrations, migrate, migration_status


def test_migrate_twice_applies_once(empty_database_url: str) -> None:
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        first = migrate(conn)
        second = migrate(conn)
        status = migration_status(conn)
    assert [m.version for m in first] == [m.version for m in available_migrations()]
    assert second == []
    assert all(s.applied_at is not None for s in status)


def test_concurrent_migrators_apply_each_migration_once(empty_database_url: str) -> None:
    results: list[list[int]] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def run() -> None:
        try:
            with psycopg.connect(empty_database_url, autocommit=True) as conn:
                barrier.wait()
                results.append([m.version for m in migrate(conn)])
        except BaseException as exc:  # collected and re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    applied = sorted(v for r in results for v in r)
    assert applied == [m.version for m in available_migrations()]
    with psycopg.connect(empty_database_url) as conn:
        count = conn.execute("SELECT count(*) FROM stride_migrations").fetchone()
    assert count == (len(available_migrations()),)


def test_status_shows_pending_before_migrate(empty_database_url: str) -> None:
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        status = migration_status(conn)
    assert status and all(s.applied_at is None for s in status)


def test_events_are_append_only(conn: psycopg.Connection[Any]) -> None:
    user_id = conn.execute("INSERT INTO users DEFAULT VALUES RETURNING id").fetchone()[0]  # type: ignore[index]
    conn.execute(
        "INSERT INTO events (user_id, event_type, timestamp) VALUES (%s, 'set.logged', now())",
        (user_id,),
    )
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
        conn.execute("UPDATE events SET event_type = 'x'")
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
        conn.execute("DELETE FROM events")
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
        conn.execute("TRUNCATE events CASCADE")
    assert conn.execute("SELECT count(*) FROM events").fetchone() == (1,)


def test_insert_enqueues_one_job_per_event(conn: psycopg.Connection[Any]) -> None:
    user_id = conn.execute("INSERT INTO users DEFAULT VALUES RETURNING id").fetchone()[0]  # type: ignore[index]
    ids = conn.execute(
        "INSERT INTO events (user_id, event_type, timestamp) "
        "SELECT %s, 'set.logged', now() FROM generate_series(1, 3) RETURNING id",
        (user_id,),
    ).fetchall()
    jobs = conn.execute(
        "SELECT payload->>'event_id', payload->>'event_type', user_id FROM background_jobs "
        "WHERE job_type = 'projection.update' ORDER BY id"
    ).fetchall()
    assert sorted(j[0] for j in jobs) == sorted(str(i[0]) for i in ids)
    assert {j[1] for j in jobs} == {"set.logged"}
    assert {j[2] for j in jobs} == {user_id}
