"""Training modality (spec §4.2): declared, observed over 56 days, resolved, open set."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from uuid import UUID

import pytest

from stride.domain.events import Event
from stride.domain.modality import (
    activity_family,
    declared_family,
    fold_modality,
    goal_family,
    import_family,
    observed_confidence,
    session_families,
)
from stride.domain.normalise import IgnoredFields, ordered_events

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
USER = UUID(int=7)
_ids = itertools.count(1)


def ev(event_type: str, at: datetime, data: Any = None) -> Event:
    return Event(UUID(int=next(_ids)), USER, event_type, at, {} if data is None else data)


def ago(days: float) -> datetime:
    return NOW - timedelta(days=days)


def strength(day: float) -> Event:
    return ev("set.logged", ago(day))


def endurance(day: float) -> Event:
    return ev("external.activity_imported", ago(day), {"workout": {"workout_type": "run"}})


def hybrid(day: float) -> Event:
    return ev("session.logged", ago(day), {"blocks": [{"block_type": "circuit_hybrid"}]})


def unknown(day: float) -> Event:
    return ev("external.activity_imported", ago(day), {"workout": {"workout_type": "yoga"}})


def profile(day: float, modality: Any) -> Event:
    return ev("profile.updated", ago(day), {"training_modality": modality})


def modality(events: list[Event], ignored: IgnoredFields | None = None) -> dict[str, Any]:
    return fold_modality(ordered_events(events), ignored)


# --- vocabularies --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "family"),
    [
        ("strength", "strength"),
        ("bodybuilding", "strength"),
        ("powerlifting", "strength"),
        ("weightlifting", "strength"),
        ("running", "endurance"),
        ("cycling", "endurance"),
        ("rowing", "endurance"),
        ("swimming", "endurance"),
        ("endurance", "endurance"),
        ("triathlon", "endurance"),
        ("hybrid", "hybrid"),
        ("crossfit", "hybrid"),
        ("  CrossFit ", "hybrid"),
        ("POWERLIFTING", "strength"),
        ("yoga", "unknown"),
        ("marathon running", "unknown"),
        ("climbing", "unknown"),
    ],
)
def test_declared_family_is_strict_and_open_set(raw: str, family: str) -> None:
    assert declared_family(raw) == family


@pytest.mark.parametrize(
    ("value", "family"),
    [
        ("run", "endurance"),
        ("ride", "endurance"),
        ("swim", "endurance"),
        ("row", "endurance"),
        ("Virtual Ride", "endurance"),
        ("trail_run", "endurance"),
        ("open_water_swim", "endurance"),
        ("strength_training", "strength"),
        ("traditional_strength_training", "strength"),
        ("crossfit", "hybrid"),
        ("yoga", "unknown"),
        ("hiit", "unknown"),
        ("strength_run", "unknown"),  # names two families: never forced into one
        ("", "unknown"),
    ],
)
def test_activity_family(value: str, family: str) -> None:
    assert activity_family(value) == family


@pytest.mark.parametrize(
    ("goal_type", "family"),
    [
        ("strength_base", "strength"),
        ("hypertrophy", "strength"),
        ("endurance_base", "endurance"),
        ("marathon", "endurance"),
        ("hybrid_base", "hybrid"),
        ("general_health", "unknown"),
        ("health", "unknown"),
    ],
)
def test_goal_family(goal_type: str, family: str) -> None:
    assert goal_family(goal_type) == family


@pytest.mark.parametrize(
    ("data", "families"),
    [
        ({"blocks": [{"block_type": "strength_set"}]}, {"strength"}),
        ({"blocks": [{"block_type": "explosive_power"}]}, {"strength"}),
        ({"blocks": [{"block_type": "continuous_endurance"}]}, {"endurance"}),
        ({"blocks": [{"block_type": "interval_endurance"}]}, {"endurance"}),
        ({"blocks": [{"block_type": "tempo_threshold"}]}, {"endurance"}),
        ({"blocks": [{"block_type": "speed_endurance"}]}, {"endurance"}),
        ({"blocks": [{"block_type": "circuit_hybrid"}]}, {"hybrid"}),
        (
            {"blocks": [{"block_type": "strength_set"}, {"block_type": "tempo_threshold"}]},
            {"strength", "endurance"},
        ),
        # Unclassified blocks fall back to the sport, then to unknown.
        (
            {"blocks": [{"block_type": "recovery_session"}], "session_meta": {"sport": "cycling"}},
            {"endurance"},
        ),
        ({"blocks": [{"block_type": "technique_coordination"}]}, {"unknown"}),
        ({"blocks": [{"block_type": "plyometric_reactive"}]}, {"unknown"}),
        ({"session_meta": {"sport": "running"}}, {"endurance"}),
        ({"session_meta": {"sport": "powerlifting"}}, {"strength"}),
        ({"session_meta": {"sport": "climbing"}}, {"unknown"}),
        ({}, {"unknown"}),
        # Classified blocks win over the sport.
        (
            {"blocks": [{"block_type": "strength_set"}], "session_meta": {"sport": "running"}},
            {"strength"},
        ),
    ],
)
def test_session_families(data: dict[str, Any], families: set[str]) -> None:
    assert session_families(data, lambda f, r: None) == families


@pytest.mark.parametrize(
    ("data", "families", "problems"),
    [
        ({"blocks": "strength_set"}, {"unknown"}, [("blocks", "not_a_list")]),
        (
            {"blocks": [1, {"block_type": "strength_set"}]},
            {"strength"},
            [("blocks[0]", "not_an_object")],
        ),
        (
            {"blocks": [{"block_type": ["x"]}]},
            {"unknown"},
            [("blocks[0].block_type", "not_a_string")],
        ),
        ({"session_meta": "running"}, {"unknown"}, [("session_meta", "not_an_object")]),
        ({"session_meta": {"sport": 5}}, {"unknown"}, []),
    ],
)
def test_session_families_records_malformed_parts(
    data: dict[str, Any], families: set[str], problems: list[tuple[str, str]]
) -> None:
    seen: list[tuple[str, str]] = []
    assert session_families(data, lambda f, r: seen.append((f, r))) == families
    assert seen == problems


@pytest.mark.parametrize(
    ("data", "expected", "problems"),
    [
        (
            {"workout": {"workout_type": "run"}, "source": {"provider": "Strava"}},
            ("endurance", "strava"),
            [],
        ),
        ({"workout": {"workout_type": "strength_training"}}, ("strength", None), []),
        ({"workout": {"workout_type": "yoga"}}, ("unknown", None), []),
        ({"workout": "run"}, ("unknown", None), [("workout", "not_an_object")]),
        ({"workout": {}, "source": 3}, ("unknown", None), [("source", "not_an_object")]),
    ],
)
def test_import_family(
    data: dict[str, Any], expected: tuple[str, str | None], problems: list[tuple[str, str]]
) -> None:
    seen: list[tuple[str, str]] = []
    assert import_family(data, lambda f, r: seen.append((f, r))) == expected
    assert seen == problems


# --- declared --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("events", "declared", "raw"),
    [
        ([], None, None),
        ([profile(5, "Powerlifting")], "strength", "Powerlifting"),
        ([profile(5, "yoga")], "unknown", "yoga"),
        ([profile(9, "running"), profile(5, "crossfit")], "hybrid", "crossfit"),
        # Latest wins by timestamp, not by position in the input.
        ([profile(5, "crossfit"), profile(9, "running")], "hybrid", "crossfit"),
        # null means "not sent": the previous value stays.
        ([profile(9, "running"), profile(5, None)], "endurance", "running"),
        # A blank string clears the declaration.
        ([profile(9, "running"), profile(5, "  ")], None, None),
        # Unusable values are ignored; the previous value stays.
        ([profile(9, "running"), profile(5, ["strength"])], "endurance", "running"),
        (
            [profile(9, "running"), ev("profile.updated", ago(5), {"weight_kg": 80})],
            "endurance",
            "running",
        ),
    ],
)
def test_declared_latest_value_wins(
    events: list[Event], declared: str | None, raw: str | None
) -> None:
    result = modality(events)
    assert (result["declared"], result["declared_raw"]) == (declared, raw)


def test_declared_garbage_is_recorded() -> None:
    ignored = IgnoredFields()
    modality([profile(5, {"x": 1}), ev("profile.updated", ago(4), "not a dict")], ignored)
    reasons = {(e["field"], e["reason"]) for e in ignored.as_data()["ignored_fields"]}
    assert reasons == {("training_modality", "not_a_string"), ("data", "not_an_object")}


# --- observed and resolved -------------------------------------------------------------------


def days(make: Any, count: int, offset: int = 0) -> list[Event]:
    return [make(offset + day) for day in range(count)]


@pytest.mark.parametrize(
    ("events", "resolved", "source"),
    [
        pytest.param([], "unknown", "none", id="nothing"),
        pytest.param([profile(3, "running")], "endurance", "declared", id="declared-only"),
        pytest.param([profile(3, "yoga")], "unknown", "declared", id="declared-unknown"),
        pytest.param(days(strength, 10), "strength", "observed", id="all-strength"),
        pytest.param(days(endurance, 10), "endurance", "observed", id="all-endurance"),
        pytest.param(days(hybrid, 10), "hybrid", "observed", id="all-hybrid"),
        pytest.param(
            days(strength, 7) + days(endurance, 3, 20),
            "strength",
            "observed",
            id="70-percent-exactly",
        ),
        pytest.param(
            days(strength, 13) + days(endurance, 6, 20),
            "hybrid",
            "observed",
            id="68-32-two-families-over-25",
        ),
        pytest.param(
            days(strength, 6) + days(endurance, 4, 20), "hybrid", "observed", id="60-40-hybrid"
        ),
        pytest.param(
            days(strength, 3) + days(endurance, 1, 20), "strength", "observed", id="75-25-dominant"
        ),
        pytest.param(
            days(strength, 6) + days(endurance, 2, 20) + days(hybrid, 2, 30),
            "unknown",
            "observed",
            id="60-20-20-no-rule-applies",
        ),
        pytest.param(
            days(strength, 4) + days(endurance, 3, 20) + days(hybrid, 3, 30),
            "hybrid",
            "observed",
            id="40-30-30-hybrid",
        ),
        pytest.param(days(unknown, 10), "unknown", "observed", id="open-set-unknown-only"),
        pytest.param(
            [profile(3, "strength"), *days(unknown, 10)],
            "unknown",
            "observed",
            id="unknown-signal-not-forced-into-declared",
        ),
        pytest.param(
            [profile(3, "running"), *days(strength, 10)], "strength", "observed", id="observed-wins"
        ),
    ],
)
def test_resolved(events: list[Event], resolved: str, source: str) -> None:
    result = modality(events)
    assert (result["resolved"], result["source"]) == (resolved, source)


def test_unknown_signals_stay_low_confidence() -> None:
    result = modality(days(unknown, 40))
    assert result["resolved"] == "unknown"
    assert result["confidence"] <= 0.25
    assert result["observed"]["days_by_family"]["unknown"] == 40
    assert result["observed"]["classified_family_days"] == 0


@pytest.mark.parametrize(
    ("events", "confidence"),
    [
        ([], 0.0),
        ([profile(1, "yoga")], 0.15),
        ([profile(1, "running")], 0.4),
    ],
)
def test_confidence_without_training(events: list[Event], confidence: float) -> None:
    assert modality(events)["confidence"] == confidence


def test_confidence_grows_with_days() -> None:
    values = [modality(days(strength, n))["confidence"] for n in (1, 3, 7, 14, 28, 40)]
    assert values == sorted(values)
    assert values[0] < values[-1] <= 0.95
    assert observed_confidence(1) < observed_confidence(28) == observed_confidence(100)


def test_a_day_counts_once_per_family() -> None:
    same_day = NOW - timedelta(days=2)
    events = [
        *(ev("set.logged", same_day + timedelta(minutes=m)) for m in range(12)),
        ev("session.logged", same_day, {"blocks": [{"block_type": "strength_set"}]}),
        ev("external.activity_imported", same_day, {"workout": {"workout_type": "run"}}),
        ev("external.activity_imported", same_day, {"workout": {"workout_type": "ride"}}),
    ]
    observed = modality(events)["observed"]
    assert observed["days_by_family"] == {"strength": 1, "endurance": 1, "hybrid": 0, "unknown": 0}
    assert observed["training_days"] == 1
    assert observed["classified_family_days"] == 2
    assert observed["shares"] == {"strength": 0.5, "endurance": 0.5, "hybrid": 0.0}


@pytest.mark.parametrize(
    ("old_event_at", "counted"),
    [
        (datetime(2026, 1, 5, 0, 0, tzinfo=UTC), True),  # first day of the window
        (datetime(2026, 1, 4, 23, 59, tzinfo=UTC), False),  # the day before
        (datetime(2025, 6, 1, tzinfo=UTC), False),
    ],
)
def test_window_is_56_utc_days_ending_at_latest_training(
    old_event_at: datetime, counted: bool
) -> None:
    latest = datetime(2026, 3, 1, 23, 0, tzinfo=UTC)
    events = [
        ev("set.logged", latest),
        ev("external.activity_imported", old_event_at, {"workout": {"workout_type": "run"}}),
    ]
    observed = modality(events)["observed"]
    assert observed["window_start"] == "2026-01-05"
    assert observed["window_end"] == "2026-03-01"
    assert observed["days_by_family"]["endurance"] == (1 if counted else 0)


def test_window_ends_at_latest_training_event_not_now() -> None:
    long_ago = NOW - timedelta(days=400)
    events = [ev("set.logged", long_ago - timedelta(days=d)) for d in range(10)]
    result = modality(events)
    assert result["resolved"] == "strength"
    assert result["observed"]["training_days"] == 10


def test_window_uses_utc_days_for_offset_timestamps() -> None:
    plus_two = timezone(timedelta(hours=2))
    # 01:00 at +02:00 is 23:00 UTC the previous day: one UTC day with the 23:30 UTC event.
    events = [
        ev("set.logged", datetime(2026, 3, 2, 1, 0, tzinfo=plus_two)),
        ev("set.logged", datetime(2026, 3, 1, 23, 30, tzinfo=UTC)),
    ]
    observed = modality(events)["observed"]
    assert observed["training_days"] == 1
    assert observed["window_end"] == "2026-03-01"


class ExplodingData(Mapping[str, Any]):
    """A mapping that fails on any access: proves the fold never reads set.logged data."""

    def __getitem__(self, key: str) -> Any:
        raise AssertionError("set.logged data was read")

    def __iter__(self) -> Iterator[str]:
        raise AssertionError("set.logged data was read")

    def __len__(self) -> int:
        raise AssertionError("set.logged data was read")


def test_set_logged_is_read_by_timestamp_only() -> None:
    events = [ev("set.logged", ago(d), ExplodingData()) for d in range(5)]
    ignored = IgnoredFields()
    result = modality(events, ignored)
    assert result["observed"]["days_by_family"]["strength"] == 5
    assert ignored.total == 0


def test_import_providers_are_counted_in_window() -> None:
    events = [
        ev(
            "external.activity_imported",
            ago(day),
            {"workout": {"workout_type": kind}, "source": {"provider": provider}},
        )
        for day, kind, provider in [
            (1, "run", "Garmin"),
            (2, "run", "garmin"),
            (3, "ride", "Strava"),
        ]
    ]
    assert modality(events)["observed"]["import_providers"] == {"garmin": 2, "strava": 1}
