"""The loader's daily collapse in SQL: the latest event per (user, type, UTC day), ties by id.

LOAD_EVENTS collapses `daily` types with a window over the index order instead
of a sort; this holds it to the rule the folds rely on (tests/unit/
test_daily_collapse.py), on histories with same-instant events, events either
side of UTC midnight, and a retraction naming one of them.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stride.storage.projection_store import load_events_for_users
from stride.storage.users import add_user

T0 = datetime(2026, 4, 1, 22, 0, tzinfo=UTC)

INSERT_EVENT = """
INSERT INTO events (id, user_id, event_type, "timestamp", data)
VALUES (%s, %s, %s, %s, %s::jsonb)
"""

# Offsets in minutes from T0: few distinct values, so several events share an
# instant (the id decides) and a day's events straddle midnight UTC.
offsets = st.lists(st.sampled_from([0, 59, 119, 120, 121, 180, 1440, 1441, 2000]), max_size=12)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(offsets, min_size=1, max_size=3), st.booleans())
def test_daily_types_load_as_the_latest_event_per_utc_day(
    conn: psycopg.Connection[Any], histories: list[list[int]], retract_one: bool
) -> None:
    users = [add_user(conn) for _ in histories]
    expected: set[UUID] = set()
    named: UUID | None = None
    for user_id, history in zip(users, histories, strict=True):
        latest: dict[object, tuple[datetime, UUID]] = {}
        for minutes in history:
            event_id, timestamp = uuid4(), T0 + timedelta(minutes=minutes)
            conn.execute(INSERT_EVENT, (event_id, user_id, "set.logged", timestamp, "{}"))
            day = timestamp.date()
            latest[day] = max(latest.get(day, (timestamp, event_id)), (timestamp, event_id))
        expected |= {event_id for _, event_id in latest.values()}
        if retract_one and history and named is None:
            # A named event is sent on its own and left out of its day's collapse.
            named = max(expected)
    if named is not None:
        expected = set()
        for user_id in users:
            rows = conn.execute(
                'SELECT id, "timestamp" FROM events WHERE user_id = %s AND id <> %s',
                (user_id, named),
            ).fetchall()
            latest2: dict[object, tuple[datetime, UUID]] = {}
            for event_id, timestamp in rows:
                day = timestamp.astimezone(UTC).date()
                latest2[day] = max(latest2.get(day, (timestamp, event_id)), (timestamp, event_id))
            expected |= {event_id for _, event_id in latest2.values()}
        owner = conn.execute("SELECT user_id FROM events WHERE id = %s", (named,)).fetchone()
        assert owner is not None
        retraction = {"retracted_event_id": str(named), "retracted_event_type": "set.logged"}
        conn.execute(
            INSERT_EVENT, (uuid4(), owner[0], "event.retracted", T0, json.dumps(retraction))
        )
        expected.add(named)
    loaded = load_events_for_users(conn, users, {"set.logged"}, {"set.logged"})
    got = {e.id for events in loaded.values() for e in events if e.event_type == "set.logged"}
    assert got == expected
