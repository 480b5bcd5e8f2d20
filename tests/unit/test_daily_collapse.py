"""The loader's contract with the folds: timestamp-only events may arrive collapsed.

The projection store loads `timestamp_only_event_types` (set.logged) as the latest
event per (type, UTC day), without data, except the events some retraction names,
which it sends on their own (also without data); retractions always come along, and
the folds decide which events they retract. That is only sound while the folds read
nothing else of those events and apply retractions themselves; this property test
holds them to it, on histories with retractions of every kind.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from uuid import UUID

from hypothesis import given, settings
from hypothesis import strategies as st
from tests.uuid_spellings import spellings

from stride.domain.events import RETRACTION_EVENT_TYPE, Event, retraction_target
from stride.projections.registry import READ_MODELS, fold_user

USER = UUID(int=1)
BASE = datetime(2026, 6, 1, tzinfo=UTC)
NOW = BASE + timedelta(days=120)
DAILY = frozenset().union(*(m.timestamp_only_event_types for m in READ_MODELS))


def loaded(events: list[Event]) -> list[Event]:
    """What the loader sends (storage.projection_store.LOAD_EVENTS), computed in memory."""
    named = {retraction_target(e.data) for e in events if e.event_type == RETRACTION_EVENT_TYPE}
    latest: dict[tuple[str, object], Event] = {}
    kept = []
    for event in events:
        if event.event_type not in DAILY:
            kept.append(event)
        elif event.id in named:
            kept.append(Event(event.id, event.user_id, event.event_type, event.timestamp, {}))
        else:
            key = (event.event_type, event.timestamp.astimezone(UTC).date())
            if key not in latest or event.order_key > latest[key].order_key:
                latest[key] = event
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
    # Retractions of sets, of other events, of earlier retractions and of unknown ids,
    # each naming its target in any accepted spelling.
    for i in range(draw(st.integers(min_value=0, max_value=12))):
        target = draw(st.sampled_from([e.id for e in events] + [UUID(int=99_999)]))
        events.append(
            Event(
                UUID(int=20_000 + i),
                USER,
                RETRACTION_EVENT_TYPE,
                BASE + timedelta(minutes=draw(minutes)),
                {"retracted_event_id": draw(spellings(target))},
            )
        )
    return events


@settings(max_examples=200, deadline=None)
@given(histories())
def test_folds_are_blind_to_collapsing_timestamp_only_events(events: list[Event]) -> None:
    full = fold_user(events, NOW, READ_MODELS)
    collapsed = fold_user(loaded(events), NOW, READ_MODELS)
    assert sorted(collapsed) == sorted(full)
    for row in full:
        assert json.dumps(collapsed[row], sort_keys=True) == json.dumps(full[row], sort_keys=True)
