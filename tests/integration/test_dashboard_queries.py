"""What the dashboard reads and does, on real PostgreSQL: queue views, user views, run
history, model versions, retry of one job, sessions; and the plans of its queries."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from tests.populations import make_population

from stride.api.service import issue_token
from stride.backfill.reports import model_version_counts
from stride.backfill.sources import known_sources
from stride.backfill.trigger import trigger_backfill
from stride.queue.jobs import NewJob, claim_due_jobs, enqueue, mark_dead, retry_job
from stride.queue.status import (
    COMPLETIONS_SQL,
    GIVEN_UP_JOBS_SQL,
    SOURCE_COMPLETIONS_SQL,
    USER_JOBS_SQL,
    completions,
    queue_overview,
    user_jobs,
)
from stride.storage import admin_sessions
from stride.storage.event_store import latest_events
from stride.storage.users import add_user, find_user

Conn = psycopg.Connection[Any]


def _insert_job(conn: Conn, **fields: Any) -> int:
    columns = ", ".join(fields)
    values = ", ".join(f"%({name})s" for name in fields)
    row = conn.execute(
        f"INSERT INTO background_jobs ({columns}) VALUES ({values}) RETURNING id", fields
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_queue_overview_counts_priorities_leases_and_given_up_jobs(conn: Conn) -> None:
    user = add_user(conn)
    now = datetime.now(UTC)
    for _ in range(3):
        _insert_job(conn, job_type="a", priority=5, user_id=user)
    _insert_job(conn, job_type="a", priority=-10)
    for owner, until in (("w1", now + timedelta(minutes=1)), ("w1", now - timedelta(seconds=5))):
        _insert_job(
            conn,
            job_type="b",
            status="processing",
            attempt=1,
            locked_by=owner,
            locked_until=until,
            started_at=now - timedelta(seconds=30),
        )
    _insert_job(
        conn,
        job_type="b",
        status="processing",
        attempt=1,
        locked_by="w2",
        locked_until=now + timedelta(minutes=1),
        started_at=now - timedelta(seconds=3),
    )
    dead = _insert_job(
        conn,
        job_type="c",
        status="dead",
        attempt=6,
        error_message="ValueError: " + "x" * 5000,
        payload=Jsonb({"user_id": str(user), "n": 1}),
        completed_at=now,
    )
    _insert_job(conn, job_type="c", status="failed", attempt=1, completed_at=now)

    overview = queue_overview(conn)
    counts = {(c.job_type, c.status, c.priority): c.count for c in overview.counts}
    assert counts[("a", "pending", 5)] == 3 and counts[("a", "pending", -10)] == 1
    assert counts[("b", "processing", 0)] == 3
    assert overview.expired_leases == 1
    assert overview.oldest_due_pending_seconds is not None
    # `stride workers`' report rides along: lease owners without a heartbeat row.
    workers = {w.worker_id: w for w in overview.workers.workers}
    assert workers["w1"].jobs_in_hand == 2 and workers["w2"].jobs_in_hand == 1
    assert not workers["w1"].registered
    assert overview.workers.due_pending == {"a": 4}
    found = next(j for j in overview.given_up if j.id == dead)
    assert found.payload == {"user_id": str(user), "n": 1}
    assert found.error_message is not None and len(found.error_message) == 5012  # never cut
    assert found.max_retries == 5
    assert {j.status for j in overview.given_up} == {"dead", "failed"}
    assert sorted(overview.given_up_counts) == [("c", "dead", 1), ("c", "failed", 1)]


def test_queue_counts_show_jobs_waiting_for_a_retry_as_retrying(conn: Conn) -> None:
    _insert_job(conn, job_type="a", attempt=1, error_message="ValueError: boom")
    _insert_job(conn, job_type="a")
    counts = {(c.job_type, c.status): c.count for c in queue_overview(conn).counts}
    assert counts == {("a", "retrying"): 1, ("a", "pending"): 1}


def test_completions_are_bucketed_by_type_and_source(conn: Conn) -> None:
    base = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
    users = [add_user(conn) for _ in range(3)]
    for offset, user, source in (
        (0.5, users[0], "run-a"),
        (1.0, users[1], "run-a"),
        (1.5, users[1], "run-a"),
        (2.5, users[2], "run-b"),
        (2.6, users[2], None),
    ):
        payload = {"user_id": str(user)} | ({"source": source} if source else {})
        _insert_job(
            conn,
            job_type="projection.update",
            status="completed",
            user_id=user,
            payload=Jsonb(payload),
            completed_at=base + timedelta(seconds=offset),
        )
    _insert_job(conn, job_type="other", status="completed", completed_at=base)
    _insert_job(conn, job_type="other", status="completed", completed_at=base - timedelta(hours=1))

    everything = completions(conn, base, 2.0)
    rows = {(b.start, b.job_type): (b.jobs, b.users) for b in everything.buckets}
    assert rows == {
        (base, "projection.update"): (3, 2),
        (base, "other"): (1, 0),
        (base + timedelta(seconds=2), "projection.update"): (2, 1),
    }
    assert everything.observed_at > base
    run_a = completions(conn, base, 2.0, source="run-a")
    assert [(b.start, b.jobs, b.users) for b in run_a.buckets] == [(base, 3, 2)]
    later = completions(conn, base + timedelta(seconds=2), 2.0, source="run-b")
    assert [(b.jobs, b.users) for b in later.buckets] == [(1, 1)]


def test_user_views(conn: Conn) -> None:
    [_, user, other] = make_population(conn, 3, empty_every=99)  # the first has no events
    pending = enqueue(conn, NewJob("projection.update", {"user_id": str(user)}, user_id=user))
    enqueue(conn, NewJob("projection.update", {"user_id": str(other)}, user_id=other))
    [claimed] = claim_due_jobs(conn, "w", 1, 30, ["projection.update"])
    if claimed.user_id == user:  # the claim took ours: give the user a pending one again
        pending = enqueue(conn, NewJob("projection.update", {"n": 2}, user_id=user))
    job = enqueue(conn, NewJob("doomed", {"user_id": str(user)}, user_id=user)).job_id
    [doomed] = claim_due_jobs(conn, "w", 1, 30, ["doomed"])
    assert mark_dead(conn, doomed, "no handler")

    jobs = user_jobs(conn, user)
    assert {j.status for j in jobs} <= {"pending", "retrying", "processing", "dead"}
    assert pending.job_id in {j.id for j in jobs if j.status == "pending"}
    assert job in {j.id for j in jobs if j.status == "dead"}
    assert all(j.job_type in ("projection.update", "doomed") for j in jobs)
    assert not {j.id for j in user_jobs(conn, other)} & {j.id for j in jobs}

    found = find_user(conn, user)
    assert found is not None and found.id == user and found.event_count > 0
    assert find_user(conn, uuid.uuid4()) is None
    events = latest_events(conn, user, limit=3)
    assert len(events) == min(3, found.event_count)
    assert [e.timestamp for e in events] == sorted((e.timestamp for e in events), reverse=True)
    assert all(isinstance(e.data, dict) and isinstance(e.metadata, dict) for e in events)


def test_retry_job_revives_one_dead_job_only_while_its_key_is_free(conn: Conn) -> None:
    keyed = enqueue(conn, NewJob("doomed", {}, dedup_key="k1")).job_id
    plain = enqueue(conn, NewJob("doomed", {})).job_id
    for job in claim_due_jobs(conn, "w", 10, 30, ["doomed"]):
        assert mark_dead(conn, job, "no handler")
    assert retry_job(conn, plain)
    status = conn.execute(
        "SELECT status, attempt, completed_at FROM background_jobs WHERE id = %s", (plain,)
    ).fetchone()
    assert status == ("pending", 0, None)
    assert not retry_job(conn, plain)  # pending now: nothing to retry
    assert not retry_job(conn, 10**12)  # no such job

    # Another job holds the key: the dead one stays dead (it would run the same work twice).
    enqueue(conn, NewJob("doomed", {}, dedup_key="k1"))
    assert not retry_job(conn, keyed)
    assert conn.execute(
        "SELECT status FROM background_jobs WHERE id = %s", (keyed,)
    ).fetchone() == ("dead",)


def test_known_sources_and_model_versions(conn: Conn) -> None:
    make_population(conn, 6)
    assert known_sources(conn) == []
    trigger_backfill(conn, "sources-a")
    trigger_backfill(conn, "sources-b")
    assert known_sources(conn) == ["sources-b", "sources-a"]  # newest run first

    assert model_version_counts(conn) == []
    [user_a, user_b] = [r[0] for r in conn.execute("SELECT id FROM users LIMIT 2").fetchall()]
    conn.execute(
        """
        INSERT INTO projections (user_id, projection_type, key, data, model_version)
        VALUES (%s, 'objective_state', 'active', '{}', 'objective_state/0.1'),
               (%s, 'objective_state', 'active', '{}', 'objective_state/2026.11.1')
        """,
        (user_a, user_b),
    )
    versions = {(m.projection_type, m.model_version): m for m in model_version_counts(conn)}
    assert versions[("objective_state", "objective_state/0.1")].current is False
    assert versions[("objective_state", "objective_state/2026.11.1")].users == 1
    assert versions[("objective_state", "objective_state/2026.11.1")].current is True


def test_admin_sessions_live_no_longer_than_their_token(conn: Conn) -> None:
    user = add_user(conn)
    issued = issue_token(conn, user, operator=True, expires_at=None)
    digest = b"\x01" * 32
    admin_sessions.insert_session(
        conn, digest, issued.stored.id, "c" * 43, datetime.now(UTC) + timedelta(hours=1)
    )

    async def find() -> admin_sessions.StoredSession | None:
        async with await psycopg.AsyncConnection.connect(conn.info.dsn, autocommit=True) as aconn:
            return await admin_sessions.find_session_async(aconn, digest)

    found = asyncio.run(find())
    assert found is not None and found.token_usable(datetime.now(UTC))
    assert found.csrf_token == "c" * 43 and not found.has_flash

    admin_sessions.set_flash(conn, digest, "ok:done")

    async def pop() -> tuple[str | None, str | None]:
        async with await psycopg.AsyncConnection.connect(conn.info.dsn, autocommit=True) as aconn:
            first = await admin_sessions.pop_flash_async(aconn, digest)
            return first, await admin_sessions.pop_flash_async(aconn, digest)

    assert asyncio.run(pop()) == ("ok:done", None)

    conn.execute("UPDATE api_tokens SET revoked_at = now() WHERE id = %s", (issued.stored.id,))
    revoked = asyncio.run(find())
    assert revoked is not None and not revoked.token_usable(datetime.now(UTC))

    conn.execute("UPDATE admin_sessions SET expires_at = now() - interval '1 second'")
    assert asyncio.run(find()) is None
    # Opening another session sweeps the expired one away.
    admin_sessions.insert_session(
        conn, b"\x02" * 32, issued.stored.id, "d" * 43, datetime.now(UTC) + timedelta(hours=1)
    )
    assert conn.execute("SELECT count(*) FROM admin_sessions").fetchone() == (1,)
    assert admin_sessions.delete_session(conn, b"\x02" * 32)
    assert not admin_sessions.delete_session(conn, b"\x02" * 32)


# --- query plans on a queue that has seen traffic -------------------------------------------

# 100,000 jobs: mostly completed over the last day, some pending, a few running and dead.
POPULATE = """
INSERT INTO background_jobs (job_type, payload, status, user_id, priority, attempt,
                             locked_by, locked_until, started_at, completed_at)
SELECT 'projection.update',
       jsonb_build_object('source', 'plan-' || (g % 4), 'user_id', u::text),
       s.status, u, -10, 1,
       CASE WHEN s.status = 'processing' THEN 'w' || (g % 3) END,
       CASE WHEN s.status = 'processing' THEN now() + interval '1 minute' END,
       now() - interval '1 minute',
       CASE WHEN s.status IN ('completed', 'dead')
            THEN now() - (g % 86400) * interval '1 second' END
FROM generate_series(1, 100000) AS g
CROSS JOIN LATERAL (SELECT md5((g % 10000)::text)::uuid AS u) AS users
CROSS JOIN LATERAL (
    SELECT CASE WHEN g % 100 < 90 THEN 'completed' WHEN g % 100 < 98 THEN 'pending'
                WHEN g % 100 = 98 THEN 'processing' ELSE 'dead' END AS status
) AS s
"""


def _plan(conn: Conn, query: str, params: dict[str, Any]) -> list[tuple[str, str | None]]:
    def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
        yield plan
        for child in plan.get("Plans", []):
            yield from nodes(child)

    row = conn.execute("EXPLAIN (FORMAT JSON) " + query, params).fetchone()
    assert row is not None
    document = row[0] if isinstance(row[0], list) else json.loads(row[0])
    return [
        (n["Node Type"], n.get("Index Name"))
        for n in nodes(document[0]["Plan"])
        if "Scan" in n["Node Type"]
    ]


def test_dashboard_queries_use_indexes_not_seq_scans(conn: Conn) -> None:
    conn.execute(POPULATE)
    conn.execute("VACUUM ANALYZE background_jobs")
    recent = datetime.now(UTC) - timedelta(seconds=30)
    cases: list[tuple[str, str, dict[str, Any], str]] = [
        ("given-up jobs", GIVEN_UP_JOBS_SQL, {"limit": 50}, "background_jobs_given_up"),
        (
            "completions",
            COMPLETIONS_SQL,
            {"bucket": 5.0, "since": recent},
            "background_jobs_completed_at",
        ),
        (
            "a source's completions",
            SOURCE_COMPLETIONS_SQL,
            {"bucket": 2.0, "since": recent, "source": "plan-1"},
            "background_jobs_completed_at",
        ),
        (
            "a user's jobs",
            USER_JOBS_SQL,
            {"user_id": uuid.UUID("8f14e45f-ceea-167a-5a36-dedd4bea2543"), "limit": 50},
            "background_jobs_user_pending",
        ),
    ]
    for name, query, params, index in cases:
        scans = _plan(conn, query, params)
        assert not [s for s in scans if s[0] == "Seq Scan"], (name, scans)
        assert any(found == index for _, found in scans), (name, scans)
