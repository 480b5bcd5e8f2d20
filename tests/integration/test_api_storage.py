"""The storage pieces the HTTP API relies on: projection writes notify once per
transaction, the read-your-write lookups use their index, tokens round-trip."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg
import pytest

from stride.api.tokens import mint_token, secret_matches
from stride.storage.projection_store import (
    EVENT_JOB_STATUSES,
    JOB_STATUSES_BY_EVENT,
    PROJECTIONS_CHANNEL,
    ProjectionWrite,
    write_projections,
)
from stride.storage.tokens import TOKENS_CHANNEL, insert_token, list_tokens, revoke_token

Conn = psycopg.Connection[Any]


def _user(conn: Conn) -> UUID:
    row = conn.execute("INSERT INTO users DEFAULT VALUES RETURNING id").fetchone()
    assert row is not None
    user_id: UUID = row[0]
    return user_id


def _write(user_id: UUID, key: str) -> ProjectionWrite:
    return ProjectionWrite(user_id, "objective_state", key, {"k": key}, "test/1", None, revision=1)


def test_projection_writes_notify_once_per_transaction_at_commit(
    conn: Conn, database_url: str
) -> None:
    users = [_user(conn) for _ in range(3)]
    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute(f"LISTEN {PROJECTIONS_CHANNEL}")
        with conn.transaction():
            assert write_projections(conn, [_write(u, "a") for u in users]).written == 3
            assert write_projections(conn, [_write(users[0], "b")]).written == 1
            assert list(listener.notifies(timeout=0.3)) == []  # nothing before commit
        notes = list(listener.notifies(timeout=1))
        assert [(n.channel, n.payload) for n in notes] == [(PROJECTIONS_CHANNEL, "written")]
        write_projections(conn, [])  # nothing written, nothing announced
        assert list(listener.notifies(timeout=0.3)) == []
    rows = conn.execute("SELECT count(*), sum(version) FROM projections").fetchone()
    assert rows == (4, 4)


# Many organic and backfill jobs, as after some traffic and a backfill.
POPULATE = """
INSERT INTO background_jobs (job_type, payload, status, user_id)
SELECT 'projection.update',
       CASE WHEN g % 4 = 0
            THEN jsonb_build_object('event_id', gen_random_uuid()::text, 'source', 'b')
            ELSE jsonb_build_object('event_id', gen_random_uuid()::text) END,
       CASE WHEN g % 10 = 0 THEN 'pending' ELSE 'completed' END,
       gen_random_uuid()
FROM generate_series(1, 40000) AS g
"""


def _plan_nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _plan_nodes(child)


@pytest.mark.parametrize("query", ["one", "many"])
def test_read_your_write_lookups_use_the_partial_index(conn: Conn, query: str) -> None:
    conn.execute(POPULATE)
    conn.execute("ANALYZE background_jobs")
    if query == "one":
        sql, params = EVENT_JOB_STATUSES, {"user_id": _user(conn), "event_id": UUID(int=7)}
    else:
        sql, params = JOB_STATUSES_BY_EVENT, {"event_ids": [str(UUID(int=i)) for i in range(50)]}
    row = conn.execute("EXPLAIN (FORMAT JSON) " + sql, params).fetchone()
    assert row is not None
    document = row[0] if isinstance(row[0], list) else json.loads(row[0])
    scans = [
        (n["Node Type"], n.get("Relation Name"), n.get("Index Name"))
        for n in _plan_nodes(document[0]["Plan"])
        if "Scan" in n["Node Type"]
    ]
    assert ("Seq Scan", "background_jobs", None) not in scans, scans
    assert any(s[2] == "background_jobs_organic_event" for s in scans), scans


def test_tokens_round_trip_and_revocation_notifies(conn: Conn, database_url: str) -> None:
    user = _user(conn)
    minted = mint_token()
    expires = datetime.now(UTC) + timedelta(days=1)
    stored = insert_token(conn, minted.id, minted.digest, user, operator=True, expires_at=expires)
    assert stored.state(datetime.now(UTC)) == "active"
    assert stored.state(expires + timedelta(seconds=1)) == "expired"
    [listed] = list_tokens(conn)
    assert listed.id == minted.id and listed.user_id == user and listed.operator
    assert secret_matches(minted.secret, listed.secret_sha256)
    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute(f"LISTEN {TOKENS_CHANNEL}")
        assert revoke_token(conn, minted.id) == "revoked"
        assert [n.channel for n in listener.notifies(timeout=1)] == [TOKENS_CHANNEL]
        assert revoke_token(conn, minted.id) == "already"
        assert list(listener.notifies(timeout=0.3)) == []
    assert revoke_token(conn, "0000000000000000") == "unknown"
    assert list_tokens(conn)[0].state(datetime.now(UTC)) == "revoked"
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        insert_token(
            conn, mint_token().id, minted.digest, UUID(int=1), operator=False, expires_at=None
        )
