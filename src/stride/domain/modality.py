"""Training modality (docs/contract.md §4.2): declared, observed over 56 days, and resolved.

Open set: a signal we cannot classify stays `unknown` with low confidence, never forced
into a family. `set.logged` events are read by timestamp only (their data is not loaded).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Any, Final

from stride.domain.events import TRAINING_EVENT_TYPES, Event
from stride.domain.normalise import (
    EPOCH,
    NOT_A_LIST,
    NOT_AN_OBJECT,
    Ignore,
    IgnoredFields,
    as_text,
    as_token,
    day_index,
    event_data,
    ignore_nothing,
    is_blank,
    is_mapping,
    iso_utc,
    token,
)

STRENGTH: Final = "strength"
ENDURANCE: Final = "endurance"
HYBRID: Final = "hybrid"
UNKNOWN: Final = "unknown"
FAMILIES: Final = (STRENGTH, ENDURANCE, HYBRID)

WINDOW_DAYS: Final = 56
DOMINANT_SHARE_PERCENT: Final = 70
HYBRID_SHARE_PERCENT: Final = 25
MAX_BLOCKS: Final = 200
MAX_PROVIDERS: Final = 20

_FIRST_DAY: Final = (datetime.min.replace(tzinfo=UTC) - EPOCH).days

SET_LOGGED: Final = "set.logged"
SESSION_LOGGED: Final = "session.logged"
ACTIVITY_IMPORTED: Final = "external.activity_imported"
PROFILE_UPDATED: Final = "profile.updated"

# Declared modality is matched strictly against the spec's vocabulary.
DECLARED_FAMILIES: Final[Mapping[str, str]] = {
    "strength": STRENGTH,
    "bodybuilding": STRENGTH,
    "powerlifting": STRENGTH,
    "weightlifting": STRENGTH,
    "running": ENDURANCE,
    "cycling": ENDURANCE,
    "rowing": ENDURANCE,
    "swimming": ENDURANCE,
    "endurance": ENDURANCE,
    "triathlon": ENDURANCE,
    "hybrid": HYBRID,
    "crossfit": HYBRID,
}

BLOCK_FAMILIES: Final[Mapping[str, str]] = {
    "strength_set": STRENGTH,
    "explosive_power": STRENGTH,
    "continuous_endurance": ENDURANCE,
    "interval_endurance": ENDURANCE,
    "tempo_threshold": ENDURANCE,
    "speed_endurance": ENDURANCE,
    "circuit_hybrid": HYBRID,
}

# Activity words (sports, workout types) match by any underscore-separated part, so
# "virtual_ride" or "traditional_strength_training" classify; words of two families do not.
_ACTIVITY_WORDS: Final[Mapping[str, str]] = {
    **DECLARED_FAMILIES,
    "weights": STRENGTH,
    "weight": STRENGTH,
    "run": ENDURANCE,
    "jog": ENDURANCE,
    "jogging": ENDURANCE,
    "ride": ENDURANCE,
    "riding": ENDURANCE,
    "cycle": ENDURANCE,
    "bike": ENDURANCE,
    "biking": ENDURANCE,
    "swim": ENDURANCE,
    "row": ENDURANCE,
    "erg": ENDURANCE,
    "duathlon": ENDURANCE,
    "marathon": ENDURANCE,
}

# Goal types (primary_goal.type, target_metric) that state a training family.
_GOAL_WORDS: Final[Mapping[str, str]] = {
    **_ACTIVITY_WORDS,
    "hypertrophy": STRENGTH,
    "muscle": STRENGTH,
    "1rm": STRENGTH,
    "squat": STRENGTH,
    "bench": STRENGTH,
    "deadlift": STRENGTH,
    "aerobic": ENDURANCE,
    "vo2max": ENDURANCE,
    "5k": ENDURANCE,
    "10k": ENDURANCE,
    "half_marathon": ENDURANCE,
    "race": ENDURANCE,
}


def declared_family(raw: str) -> str:
    """The family a declared training_modality names, or `unknown` (docs/contract.md §4.2)."""
    return DECLARED_FAMILIES.get(token(raw), UNKNOWN)


def _family_by_words(value: str, words: Mapping[str, str]) -> str:
    """The single family named by `value` or any of its parts; `unknown` if none or several."""
    normalised = token(value)
    exact = words.get(normalised)
    if exact is not None:
        return exact
    found = {words[part] for part in normalised.split("_") if part in words}
    return found.pop() if len(found) == 1 else UNKNOWN


def activity_family(value: str) -> str:
    """Family of a session sport or imported workout_type ('run' -> endurance)."""
    return _family_by_words(value, _ACTIVITY_WORDS)


def goal_family(goal_type: str) -> str:
    """Family a goal type states ('endurance_base' -> endurance), `unknown` if it states none."""
    return _family_by_words(goal_type, _GOAL_WORDS)


def session_families(data: Mapping[str, Any], ignore: Ignore) -> frozenset[str]:
    """Families of one session: its classified blocks, else session_meta.sport, else unknown."""
    families = _block_families(data.get("blocks"), ignore)
    if families:
        return families
    meta = data.get("session_meta")
    if meta is None:
        return frozenset((UNKNOWN,))
    if not is_mapping(meta):
        ignore("session_meta", NOT_AN_OBJECT)
        return frozenset((UNKNOWN,))
    sport = as_text(meta.get("sport"), "session_meta.sport", ignore)
    return frozenset((activity_family(sport) if sport else UNKNOWN,))


def _block_families(blocks: object, ignore: Ignore) -> frozenset[str]:
    """Families named by block types; unclassified block types name none."""
    if blocks is None:
        return frozenset()
    if not isinstance(blocks, list | tuple):
        ignore("blocks", NOT_A_LIST)
        return frozenset()
    families: set[str] = set()
    for index, block in enumerate(islice(blocks, MAX_BLOCKS)):
        if not is_mapping(block):
            ignore(f"blocks[{index}]", NOT_AN_OBJECT)
            continue
        block_type = as_token(block.get("block_type"), f"blocks[{index}].block_type", ignore)
        family = BLOCK_FAMILIES.get(block_type) if block_type else None
        if family is not None:
            families.add(family)
    return frozenset(families)


def import_family(data: Mapping[str, Any], ignore: Ignore) -> tuple[str, str | None]:
    """Family of an imported activity by workout.workout_type, and its source.provider."""
    workout = data.get("workout")
    family = UNKNOWN
    if is_mapping(workout):
        workout_type = as_text(workout.get("workout_type"), "workout.workout_type", ignore)
        family = activity_family(workout_type) if workout_type else UNKNOWN
    elif workout is not None:
        ignore("workout", NOT_AN_OBJECT)
    source = data.get("source")
    provider = None
    if is_mapping(source):
        provider = as_token(source.get("provider"), "source.provider", ignore)
    elif source is not None:
        ignore("source", NOT_AN_OBJECT)
    return family, provider


@dataclass(frozen=True, slots=True)
class Modality:
    """The folded training modality, typed for the folds that read it; `to_data()` is the
    projection's `modality` block."""

    declared: str | None
    declared_raw: str | None
    declared_at: datetime | None
    # The rendered `observed` block (built once; its counts are read through the
    # properties below, whose shape `_observed_data` fixes).
    observed: Mapping[str, Any]
    resolved: str
    confidence: float
    source: str

    @property
    def days_by_family(self) -> Mapping[str, int]:
        """Classified training days per family (and `unknown`) in the window."""
        counts: Mapping[str, int] = self.observed["days_by_family"]
        return counts

    @property
    def classified_family_days(self) -> int:
        """Training days in the window classified into a family."""
        classified: int = self.observed["classified_family_days"]
        return classified

    def to_data(self) -> dict[str, Any]:
        return {
            "declared": self.declared,
            "declared_raw": self.declared_raw,
            "declared_at": iso_utc(self.declared_at) if self.declared_at else None,
            "observed": self.observed,
            "resolved": self.resolved,
            "confidence": self.confidence,
            "source": self.source,
        }


def fold_modality(events: Sequence[Event], ignored: IgnoredFields | None = None) -> dict[str, Any]:
    """Modality data from events already in (timestamp, id) order; see `modality_from_groups`."""
    groups: dict[str, list[Event]] = {}
    for event in events:
        groups.setdefault(event.event_type, []).append(event)
    return modality_from_groups(groups, ignored).to_data()


def modality_from_groups(
    groups: Mapping[str, Sequence[Event]], ignored: IgnoredFields | None = None
) -> Modality:
    """Modality from events grouped by type, each group in (timestamp, id) order."""
    declared, raw, declared_at = _declared(groups.get(PROFILE_UPDATED, ()), ignored)
    observed = _observed(groups, ignored)
    resolved, confidence, source = _resolve(declared, observed)
    return Modality(declared, raw, declared_at, observed, resolved, confidence, source)


def _declared(
    profiles: Sequence[Event], ignored: IgnoredFields | None
) -> tuple[str | None, str | None, datetime | None]:
    """Latest training_modality: null means 'not sent', a blank string clears it."""
    raw: str | None = None
    declared_at: datetime | None = None
    for event in profiles:
        ignore = ignored.sink(event) if ignored is not None else ignore_nothing
        value = event_data(event, ignore).get("training_modality")
        if value is None:
            continue
        text = as_text(value, "training_modality", ignore, max_len=200)
        if text is None and not is_blank(value):
            continue
        raw, declared_at = text, event.timestamp
    if raw is None:
        return None, None, declared_at
    return declared_family(raw), raw, declared_at


def latest_training(groups: Mapping[str, Sequence[Event]]) -> datetime | None:
    """Timestamp of the latest training event of any kind (groups in time order)."""
    latest = [events[-1].timestamp for t in TRAINING_EVENT_TYPES if (events := groups.get(t))]
    return max(latest) if latest else None


def _in_window(events: Sequence[Event], start: datetime) -> Sequence[Event]:
    """The suffix of time-ordered `events` at or after `start`."""
    first = bisect_left(events, start, key=_timestamp)
    return events[first:] if first else events


def _timestamp(event: Event) -> datetime:
    return event.timestamp


def _observed(
    groups: Mapping[str, Sequence[Event]], ignored: IgnoredFields | None
) -> dict[str, Any]:
    """Training days per family over the 56 UTC days ending at the latest training event."""
    latest = latest_training(groups)
    if latest is None:
        return _observed_data({}, None, None, {})
    last_day = day_index(latest)
    start = EPOCH + timedelta(days=_first_window_day(last_day))
    days: dict[str, set[int]] = {}
    # Hot path: most events are set.logged, read by timestamp only.
    sets = _in_window(groups.get(SET_LOGGED, ()), start)
    if sets:
        days[STRENGTH] = {(e.timestamp - EPOCH).days for e in sets}
    for event in _in_window(groups.get(SESSION_LOGGED, ()), start):
        ignore = ignored.sink(event) if ignored is not None else ignore_nothing
        for family in session_families(event_data(event, ignore), ignore):
            days.setdefault(family, set()).add(day_index(event.timestamp))
    providers: dict[str, int] = {}
    for event in _in_window(groups.get(ACTIVITY_IMPORTED, ()), start):
        ignore = ignored.sink(event) if ignored is not None else ignore_nothing
        family, provider = import_family(event_data(event, ignore), ignore)
        days.setdefault(family, set()).add(day_index(event.timestamp))
        if provider is not None:
            providers[provider] = providers.get(provider, 0) + 1
    return _observed_data(days, latest, last_day, providers)


def _observed_data(
    days: Mapping[str, set[int]],
    latest: datetime | None,
    last_day: int | None,
    providers: Mapping[str, int],
) -> dict[str, Any]:
    """The `observed` block: counts per family and each family's share of classified days."""
    counts = {family: len(days.get(family, ())) for family in (*FAMILIES, UNKNOWN)}
    classified = sum(counts[family] for family in FAMILIES)
    all_days: set[int] = set().union(*days.values()) if days else set()
    return {
        "window_days": WINDOW_DAYS,
        "window_start": _day_iso(_first_window_day(last_day)) if last_day is not None else None,
        "window_end": _day_iso(last_day) if last_day is not None else None,
        "latest_training_at": iso_utc(latest) if latest else None,
        "training_days": len(all_days),
        "classified_family_days": classified,
        "days_by_family": counts,
        "shares": {
            family: round(counts[family] / classified, 4) if classified else 0.0
            for family in FAMILIES
        },
        "import_providers": _top_counts(providers, MAX_PROVIDERS),
    }


def _first_window_day(last_day: int) -> int:
    """First UTC day of the 56-day window (never before datetime.min)."""
    return max(last_day - WINDOW_DAYS + 1, _FIRST_DAY)


def _day_iso(day: int) -> str:
    """ISO date of a UTC day index."""
    return (EPOCH + timedelta(days=day)).date().isoformat()


def _top_counts(counts: Mapping[str, int], cap: int) -> dict[str, int]:
    """The `cap` largest counts (ties by name), keys sorted: bounded and order-independent."""
    top = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:cap]
    return dict(sorted(top))


def _resolve(declared: str | None, observed: Mapping[str, Any]) -> tuple[str, float, str]:
    """(resolved family, confidence, source) by the rules of docs/contract.md §4.2."""
    if observed["training_days"] == 0:
        if declared is None:
            return UNKNOWN, 0.0, "none"
        return declared, (0.15 if declared == UNKNOWN else 0.4), "declared"
    counts: Mapping[str, int] = observed["days_by_family"]
    classified: int = observed["classified_family_days"]
    family = _dominant_family(counts, classified)
    if family == UNKNOWN:
        return UNKNOWN, round(min(0.25, 0.05 + 0.01 * observed["training_days"]), 2), "observed"
    return family, observed_confidence(classified), "observed"


def _dominant_family(counts: Mapping[str, int], classified: int) -> str:
    """>=70% one family -> it; >=2 families at >=25% each -> hybrid; else unknown."""
    if classified == 0:
        return UNKNOWN
    for family in FAMILIES:
        if counts[family] * 100 >= DOMINANT_SHARE_PERCENT * classified:
            return family
    substantial = [f for f in FAMILIES if counts[f] * 100 >= HYBRID_SHARE_PERCENT * classified]
    return HYBRID if len(substantial) >= 2 else UNKNOWN


def observed_confidence(classified_days: int) -> float:
    """Grows from 0.32 at one day to 0.95 at four weeks of classified family-days."""
    return round(0.3 + 0.65 * min(classified_days, 28) / 28, 2)
