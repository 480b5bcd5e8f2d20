"""The embedded PostgreSQL: started on first use, reused afterwards, stopped on request."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from stride.storage.connection import (
    DatabaseConfigError,
    resolve_database,
    start_embedded,
    stop_embedded,
)


def backend_postmaster_pid(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'"
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_embedded_server_starts_once_and_is_reused(tmp_path: Path) -> None:
    pgdata = tmp_path / "pgdata"
    first = start_embedded(pgdata)
    try:
        assert (pgdata / "PG_VERSION").exists()
        server = backend_postmaster_pid(first)
        second = start_embedded(pgdata)
        assert second == first
        assert backend_postmaster_pid(second) == server  # same server, not a new one
        with psycopg.connect(first) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == ("stride",)
    finally:
        assert stop_embedded(pgdata) is True
    assert stop_embedded(pgdata) is False  # nothing left running
    # A stopped server starts again on the same data directory, data intact.
    again = start_embedded(pgdata)
    try:
        with psycopg.connect(again) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        stop_embedded(pgdata)


def test_resolution_order_flag_then_env_then_embedded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://env-host/db")
    assert resolve_database("postgresql://flag-host/db").origin == "flag"
    assert resolve_database(None).url == "postgresql://env-host/db"
    monkeypatch.delenv("DATABASE_URL")
    monkeypatch.setenv("STRIDE_DATA_DIR", str(tmp_path / "data"))
    try:
        target = resolve_database(None)
        assert target.origin == "embedded" and str(tmp_path / "data") in target.description
    finally:
        stop_embedded(tmp_path / "data")


@pytest.mark.parametrize(
    "url", ["", "   ", "host=x bogus=1", "mysql://x/y", "postgresql://h/db?bogus=1"]
)
def test_bad_urls_are_usage_errors_naming_the_flag(url: str) -> None:
    with pytest.raises(DatabaseConfigError, match="--database-url") as caught:
        resolve_database(url)
    assert caught.value.is_usage_error
