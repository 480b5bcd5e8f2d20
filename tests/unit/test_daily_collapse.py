"""The loader's contract with the folds: timestamp-only events may arrive collapsed.

The projection store loads `timestamp_only_event_types` (set.logged) as the latest
non-retracted event per (type, UTC day), without data. That is only sound while the
folds read nothing else of those events; this property test holds them to it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from uuid import UUID

from hypothesis import given, settings
from hypothesis import strategies as st

from stride.domain.events import Event
from stride.projections.registry import READ_MODELS, fold_user

USER = UUID(int=1)
BASE = datetime(2026, 6, 1, tzinfo=UTC)
NOW = BASE + timedelta(days=120)
DAILY = frozenset().union(*(m.timestamp_only_event_types for m in READ_MODELS))


def collapse(events: list[Event]) -> list[Event]:
    """What the loader sends: daily types reduced to the latest event per UTC day, no data."""
    latest: dict[tuple[str, object], Event] = {}
    kept = []
    for event in events:
        if event.event_type in DAILY:
            key = (event.event_type, event.timestamp.astimezone(UTC).date())
            if key not in latest or event.order_key > latest[key].order_key:
                latest[key] = event
        else:
            kept.append(event)
    kept.extend(Event(e.id, e.user_id, e.event_type, e.timestamp, {}) for e in latest.values())
    return kept


other_events = st.sampled_from(
    [
        ("session.logged", {"blocks": [{"block_type": "continuous_endurance"}]}),
        ("external.activity_imported", {"workout": {"workout_type": "strength_training"}}),
        ("profile.updated", {"training_modality": "hybrid"}),
        ("objective.set", {"objective_id": "o", "primary_goal": {"type": "endurance"}}),
        ("advisory.override.recorded", {"reason": "r", "review_point": "2026-07-01"}),
        ("goal.set", {"goal_type": "strength"}),
    ]
)


@st.composite
def histories(draw: st.DrawFn) -> list[Event]:
    minutes = st.integers(min_value=0, max_value=110 * 24 * 60)
    sets = draw(st.lists(minutes, max_size=60))
    others = draw(st.lists(st.tuples(minutes, other_events), max_size=15))
    events = [
        Event(
            UUID(int=100 + i),
            USER,
            "set.logged",
            BASE + timedelta(minutes=m),
            {"exercise": "squat", "reps": i},
        )
        for i, m in enumerate(sets)
    ]
    events.extend(
        Event(UUID(int=10_000 + i), USER, kind, BASE + timedelta(minutes=m), data)
        for i, (m, (kind, data)) in enumerate(others)
    )
    return events


@settings(max_examples=150, deadline=None)
@given(histories())
def test_folds_are_blind_to_collapsing_timestamp_only_events(events: list[Event]) -> None:
    full = fold_user(events, NOW, READ_MODELS)
    collapsed = fold_user(collapse(events), NOW, READ_MODELS)
    assert sorted(collapsed) == sorted(full)
    for row in full:
        assert json.dumps(collapsed[row], sort_keys=True) == json.dumps(full[row], sort_keys=True)
