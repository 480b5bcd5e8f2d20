"""What the event store accepts, the loader and the folds read back (spec §8, issue 9 item 3).

Hostile-but-JSON events either fail validation with a message naming the field,
or are stored, load back through the projection loader, fold and write their
projections without raising: never an event that kills its user's projection jobs.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from uuid import UUID

import psycopg
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import event as note_outcome
from hypothesis import strategies as st

from stride.domain.events import OBJECTIVE_EVENT_TYPES, RETRACTION_EVENT_TYPE
from stride.domain.validation import EventValidationError, NewEvent, validate_event
from stride.projections.registry import READ_MODELS, fold_user
from stride.storage.event_store import append_event
from stride.storage.projection_store import (
    ProjectionWrite,
    load_events_for_users,
    write_projections,
)
from stride.storage.users import add_user

Conn = psycopg.Connection[Any]
NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
FIELDS = {"user_id", "event_type", "timestamp", "data", "metadata", "metadata.idempotency_key"}

MAX_DOUBLE = 1.7976931348623157e308
extreme_integers = st.sampled_from(
    [
        2**53 + 1,
        2**63,
        2**64,
        -(2**63) - 1,
        10**308,
        int(MAX_DOUBLE),
        -int(MAX_DOUBLE),
        2**1024 - 2**970,  # rounds to infinity as a double
        2**1024,
        10**400,
        -(10**400),
    ]
)
# Every code point, lone surrogates and NUL included.
any_text = st.text(st.characters(exclude_categories=()), max_size=12)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | extreme_integers
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([MAX_DOUBLE, -MAX_DOUBLE, 5e-324, -0.0])
    | any_text
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(any_text, children, max_size=3)
    ),
    max_leaves=12,
)


def _nested(depth: int, leaf: Any, as_object: bool) -> Any:
    value = leaf
    for _ in range(depth):
        value = {"k": value} if as_object else [value]
    return value


deep_values = st.builds(
    _nested, st.integers(min_value=1, max_value=3000), json_scalars, st.booleans()
)
# The fields the folds read, so hostile values reach the folds' branches.
folded_fields = st.sampled_from(
    [
        "objective_id",
        "mode",
        "primary_goal",
        "secondary_goals",
        "anti_goals",
        "success_metrics",
        "constraint_markers",
        "hypothesis",
        "source",
        "confidence",
        "training_modality",
        "goal_type",
        "target_1rm_kg",
        "timeframe_weeks",
        "reason",
        "review_point",
        "scope",
        "actor",
        "session_meta",
        "blocks",
        "workout",
        "retracted_event_id",
    ]
)
event_data = st.dictionaries(folded_fields | any_text, json_values | deep_values, max_size=5)
# Weighted towards what the folds read, so most accepted events reach a fold.
known_types = st.sampled_from([*OBJECTIVE_EVENT_TYPES, RETRACTION_EVENT_TYPE])
event_types = st.one_of(known_types, known_types, known_types, any_text)
offsets = st.timedeltas(
    min_value=-timedelta(hours=23, minutes=59), max_value=timedelta(hours=23, minutes=59)
).map(timezone)
plausible_moments = st.datetimes(
    min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=offsets
)
moments = st.one_of(plausible_moments, plausible_moments, st.datetimes(timezones=offsets))
timestamps = st.one_of(moments, moments.map(datetime.isoformat), any_text)
metadata = (
    st.none()
    | st.fixed_dictionaries({}, optional={"idempotency_key": any_text})
    | (st.dictionaries(any_text, json_values, max_size=2))
)


def _stored_or_rejected(conn: Conn, event: NewEvent) -> None:
    """The property: a clear rejection, or an event that loads, folds and projects."""
    try:
        validate_event(event)
    except EventValidationError as exc:
        assert exc.field in FIELDS, exc.field
        assert exc.message
        str(exc).encode("utf-8")  # printable as it stands: no lone surrogate in the message
        note_outcome(f"rejected: {exc.field}")
        return
    note_outcome("stored")

    stored = append_event(conn, event)

    # Read back by type, whatever the type: the loader decodes data with orjson.
    loaded = load_events_for_users(conn, [event.user_id], [validate_event(event).event_type])
    (back,) = [e for e in loaded[event.user_id] if e.id == stored.id]  # type: ignore[index]
    assert back.timestamp == validate_event(event).timestamp
    row = conn.execute("SELECT data, metadata FROM events WHERE id = %s", (stored.id,)).fetchone()
    assert row is not None and isinstance(row[0], dict) and isinstance(row[1], dict)

    # What a projection job does with this user: load, fold, write.
    user_id = validate_event(event).user_id
    for read_model in READ_MODELS:
        history = load_events_for_users(
            conn, [user_id], read_model.input_event_types, read_model.timestamp_only_event_types
        )[user_id]
        outputs = fold_user(history, NOW, [read_model])
        declared = {output.row: output for output in read_model.outputs}
        with conn.transaction():
            write_projections(
                conn,
                [
                    ProjectionWrite(
                        user_id,
                        t,
                        k,
                        data,
                        declared[(t, k)].model_version,
                        None,
                        declared[(t, k)].revision,
                    )
                    for (t, k), data in outputs.items()
                ],
            )


@pytest.fixture
def fresh_user(conn: Conn) -> Any:
    """A new user per example: one example's stored event must not fail the next."""
    return lambda: add_user(conn)


@settings(
    max_examples=500,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    event_type=event_types,
    timestamp=timestamps,
    data=event_data,
    meta=metadata,
)
@example(event_type="objective.set", timestamp="9999-12-31T23:59:59-12:00", data={}, meta=None)
@example(event_type="profile.updated", timestamp="0001-01-01T00:00:00+14:00", data={}, meta=None)
@example(
    event_type="objective.set",
    timestamp="2026-03-01T07:30:00Z",
    data={"confidence": 10**400},
    meta=None,
)
@example(
    event_type="session.logged",
    timestamp="2026-03-01T07:30:00Z",
    data={"blocks": _nested(300, {"block_type": "strength_set"}, as_object=False)},
    meta=None,
)
@example(
    event_type="goal.set",
    timestamp="2026-03-01T07:30:00Z",
    data={},
    meta={"idempotency_key": "k" * 3000},
)
@example(event_type="x" * 3000, timestamp="2026-03-01T07:30:00Z", data={}, meta=None)
@example(event_type="set.logged\ud800", timestamp="2026-03-01T07:30:00Z", data={}, meta=None)
def test_a_hostile_event_is_rejected_by_name_or_projects(
    conn: Conn,
    fresh_user: Any,
    event_type: str,
    timestamp: Any,
    data: dict[str, Any],
    meta: dict[str, Any] | None,
) -> None:
    user: UUID = fresh_user()
    _stored_or_rejected(conn, NewEvent(user, event_type, timestamp, data, meta))


@pytest.mark.parametrize(
    ("timestamp", "accepted"),
    [
        ("9999-12-31T23:59:59-12:00", False),  # year 10000 in UTC
        ("0001-01-01T00:00:00+14:00", False),  # year 0 in UTC
        ("9999-12-30T23:59:59.999999Z", True),
        ("0001-01-02T00:00:00Z", True),
        ("9999-12-31T00:00:00Z", False),  # year 10000 in a session at UTC+14
        ("0001-01-01T23:59:59Z", False),  # year 0 in a session at UTC-12
    ],
)
def test_timestamps_at_the_edges_are_readable_in_every_session_time_zone(
    conn: Conn, timestamp: str, accepted: bool
) -> None:
    user = add_user(conn)
    event = NewEvent(user, "profile.updated", timestamp, {})
    if not accepted:
        with pytest.raises(EventValidationError) as caught:
            append_event(conn, event)
        assert caught.value.field == "timestamp"
        assert "outside the range" in caught.value.message
        return
    stored = append_event(conn, event)
    for zone in ("Pacific/Kiritimati", "Etc/GMT+12", "Asia/Manila", "UTC"):
        conn.execute("SELECT set_config('TimeZone', %s, false)", (zone,))
        (events,) = load_events_for_users(conn, [user], ["profile.updated"]).values()
        assert [e.id for e in events] == [stored.id]
