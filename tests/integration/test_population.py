"""The synthetic population: deterministic, realistic in shape, idempotent, fast."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from tests.conftest import migrated_database

from stride.demo.population import SEED_REFERENCE, seed_population, seeded_user_ids
from stride.domain.events import OBJECTIVE_EVENT_TYPES
from stride.domain.validation import NewEvent
from stride.storage.event_store import append_event

Conn = psycopg.Connection[Any]

EVENT_ROWS = "SELECT id, user_id, event_type, timestamp, data, metadata FROM events ORDER BY id"
USER_ROWS = "SELECT id, created_at FROM users ORDER BY id"


@pytest.fixture
def other_database_url(server_url: str, template_db: str) -> Iterator[str]:
    """A second fresh database, to seed twice and compare."""
    with migrated_database(server_url, template_db) as url:
        yield url


@pytest.fixture(scope="module")
def population(server_url: str, template_db: str) -> Iterator[tuple[Conn, Any]]:
    """One 400-user population shared by the shape tests."""
    with (
        migrated_database(server_url, template_db, prefix="stride_pop") as url,
        psycopg.connect(url, autocommit=True) as conn,
    ):
        yield conn, seed_population(conn, 400, seed=1)


def scalar(conn: Conn, query: str, *params: Any) -> Any:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def test_same_seed_gives_the_same_rows(database_url: str, other_database_url: str) -> None:
    with (
        psycopg.connect(database_url, autocommit=True) as a,
        psycopg.connect(other_database_url, autocommit=True) as b,
    ):
        seed_population(a, 120, seed=7)
        seed_population(b, 120, seed=7)
        assert a.execute(USER_ROWS).fetchall() == b.execute(USER_ROWS).fetchall()
        assert a.execute(EVENT_ROWS).fetchall() == b.execute(EVENT_ROWS).fetchall()
        ids = [row[0] for row in a.execute(USER_ROWS)]
    assert ids == seeded_user_ids(120, seed=7)
    assert not set(ids) & set(seeded_user_ids(120, seed=8))


def test_shape_of_the_population(population: tuple[Conn, Any]) -> None:
    conn, summary = population
    assert summary.users == 400 and summary.users_already_present == 0
    assert scalar(conn, "SELECT count(*) FROM users") == 400
    assert scalar(conn, "SELECT count(*) FROM events") == summary.events
    empty = scalar(
        conn,
        "SELECT count(*) FROM users u"
        " WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.user_id = u.id)",
    )
    assert empty == summary.users_without_events
    assert 0.09 <= empty / 400 <= 0.21
    assert 55 <= summary.events / 400 <= 110  # ~80 per user, heavy-tailed
    types = dict(conn.execute("SELECT event_type, count(*) FROM events GROUP BY 1").fetchall())
    assert set(OBJECTIVE_EVENT_TYPES) <= set(types)
    assert {"meal.logged", "sleep.logged", "event.retracted"} <= set(types)
    assert types["set.logged"] > sum(types.values()) / 2  # most of the volume


def test_history_lies_before_the_reference_date(population: tuple[Conn, Any]) -> None:
    conn, _ = population
    first, last = conn.execute('SELECT min("timestamp"), max("timestamp") FROM events').fetchone()  # type: ignore[misc]
    assert last < SEED_REFERENCE
    assert (SEED_REFERENCE - first).days > 90  # spread over months


def test_seeding_queues_no_projection_jobs_but_later_appends_do(
    population: tuple[Conn, Any],
) -> None:
    conn, _ = population
    assert scalar(conn, "SELECT count(*) FROM background_jobs") == 0
    user = scalar(conn, "SELECT id FROM users ORDER BY id LIMIT 1")
    append_event(conn, NewEvent(user, "set.logged", datetime.now(UTC), {"reps": 3}))
    assert scalar(conn, "SELECT count(*) FROM background_jobs") == 1


def test_objective_fields_are_varied_and_sometimes_malformed(population: tuple[Conn, Any]) -> None:
    conn, _ = population
    modalities = dict(
        conn.execute(
            "SELECT data ->> 'training_modality', jsonb_typeof(data -> 'training_modality')"
            " FROM events WHERE event_type = 'profile.updated' AND data ? 'training_modality'"
        ).fetchall()
    )
    assert {"strength", "running", "crossfit"} <= set(modalities)
    assert {"climbing", "yoga", "tennis", "dance"} & set(modalities)  # open-set unknowns
    assert set(modalities.values()) - {"string"}  # garbage: numbers, nulls, arrays...
    modes = {
        row[0]
        for row in conn.execute(
            "SELECT data ->> 'mode' FROM events WHERE event_type = 'objective.set'"
        )
    }
    assert {"journal", "collaborate", "coach"} <= modes
    review_points = [
        date.fromisoformat(row[0][:10])
        for row in conn.execute(
            "SELECT data ->> 'review_point' FROM events"
            " WHERE event_type = 'advisory.override.recorded' AND data ->> 'review_point' ~ '^\\d'"
        )
    ]
    reference = SEED_REFERENCE.date()
    assert any(p < reference for p in review_points) and any(p > reference for p in review_points)
    blocks = scalar(
        conn,
        "SELECT count(*) FROM events WHERE event_type = 'session.logged'"
        " AND jsonb_typeof(data -> 'blocks') = 'array'",
    )
    workout_types = scalar(
        conn,
        "SELECT count(DISTINCT data #>> '{workout,workout_type}') FROM events"
        " WHERE event_type = 'external.activity_imported'",
    )
    assert blocks > 0 and workout_types >= 5


def test_retractions_point_at_earlier_events_of_the_same_user(
    population: tuple[Conn, Any],
) -> None:
    conn, _ = population
    rows = conn.execute(
        """
        SELECT r.timestamp >= t.timestamp, r.data ->> 'retracted_event_type' = t.event_type
        FROM events r
        LEFT JOIN events t
          ON t.id = (r.data ->> 'retracted_event_id')::uuid AND t.user_id = r.user_id
        WHERE r.event_type = 'event.retracted'
        """
    ).fetchall()
    assert rows and all(row == (True, True) for row in rows)


def test_event_ids_are_uuid7_and_follow_time_within_a_user(population: tuple[Conn, Any]) -> None:
    conn, _ = population
    out_of_order = scalar(
        conn,
        """
        SELECT count(*) FROM (
            SELECT event_type, timestamp,
                   lag(timestamp) OVER (PARTITION BY user_id ORDER BY id) AS previous
            FROM events
        ) e
        WHERE event_type <> 'event.retracted' AND previous > timestamp
        """,
    )
    assert out_of_order == 0
    assert scalar(conn, "SELECT count(*) FROM events WHERE substr(id::text, 15, 1) <> '7'") == 0


def test_reseed_is_a_no_op_and_a_larger_count_adds_only_new_users(conn: Conn) -> None:
    first = seed_population(conn, 60, seed=3)
    before = conn.execute(EVENT_ROWS).fetchall()
    again = seed_population(conn, 60, seed=3)
    assert again.already_seeded and (again.users, again.events) == (0, 0)
    assert conn.execute(EVENT_ROWS).fetchall() == before
    more = seed_population(conn, 90, seed=3)
    assert (more.users, more.users_already_present) == (30, 60)
    assert scalar(conn, "SELECT count(*) FROM users") == 90
    assert scalar(conn, "SELECT count(*) FROM events") == first.events + more.events


def test_a_200_user_seed_is_fast(conn: Conn) -> None:
    started = time.monotonic()
    summary = seed_population(conn, 200, seed=11)
    elapsed = time.monotonic() - started
    assert summary.events > 10_000
    assert elapsed < 15, f"200 users took {elapsed:.1f}s"


def test_demo_seed_command(database_url: str) -> None:
    stride = str(Path(sys.executable).with_name("stride"))
    command = [stride, "demo", "seed", "--users", "50", "--seed", "5"]
    command += ["--database-url", database_url]
    first = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert first.returncode == 0, first.stderr
    assert "seeded 50 users" in first.stdout and "events/s" in first.stdout
    again = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert again.returncode == 0
    assert "already seeded" in again.stdout
    bad = subprocess.run(
        [stride, "demo", "seed", "--users", "0", "--database-url", database_url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 2 and "--users" in bad.stderr
