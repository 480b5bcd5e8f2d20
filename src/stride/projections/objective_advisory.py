"""`objective_advisory/overview` (docs/contract.md §4.3): warning-only advice on the objective.

Nothing here blocks anything (`policy_role: advisory_only`). Computed from the folded
objective state (the typed `ObjectiveState`, not its rendered JSON) plus the user's
override events and training timestamps.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from stride.domain.events import TRAINING_EVENT_TYPES, Event
from stride.domain.modality import ENDURANCE, STRENGTH, UNKNOWN, Modality, goal_family
from stride.domain.normalise import (
    MISSING_REQUIRED,
    IgnoredFields,
    Scalar,
    as_text,
    as_token,
    aware_utc,
    event_data,
    iso_utc,
    ordered_events,
    parse_review_point,
    token,
)
from stride.projections import objective_state
from stride.projections.objective_state import OVERRIDE_RECORDED, Objective, ObjectiveState

SCHEMA_VERSION: Final = "objective_advisory.v1"
MODEL_VERSION: Final = "objective_advisory/2026.11.1"
# Grows by one with every change of this fold's logic, a rollback included (a
# rollback is deployed as a new, higher revision); MODEL_VERSION names it. The
# advisory is folded from the objective state, so a change of that fold's
# logic is a change of this one too: bump both.
REVISION: Final = 1

POLICY_ROLE: Final = "advisory_only"
STALENESS_DAYS: Final = 21
RECENT_OVERRIDE_DAYS: Final = 30
MAX_RECENT_OVERRIDES: Final = 25
MAX_SUMMARY_KEYS: Final = 50
LOW_CONFIDENCE: Final = 0.55
MISMATCH_SHARE_PERCENT: Final = 80
MISMATCH_MIN_DAYS: Final = 6
TARGET_KEYS: Final = ("target", "target_metric", "target_exercise", "value", "unit")

TRACKABILITY_GAP: Final = "objective_trackability_gap"
DEFAULT_INFERRED: Final = "objective_default_inferred"
METRIC_STALENESS: Final = "objective_metric_staleness"
OVERRIDE_REVIEW_DUE: Final = "objective_override_review_due"
MODALITY_MISMATCH: Final = "objective_modality_mismatch"

SAFETY_INVARIANTS_NON_OVERRIDABLE: Final = (
    "advisory_never_blocks_logging",
    "constraint_markers_always_respected",
    "retracted_events_always_excluded",
    "malformed_data_recorded_never_fatal",
)
_TRAINING_TYPES: Final = frozenset(TRAINING_EVENT_TYPES)
_OPPOSITE: Final[Mapping[str, str]] = {STRENGTH: ENDURANCE, ENDURANCE: STRENGTH}


@dataclass(frozen=True, slots=True)
class Override:
    """One normalised advisory.override.recorded event."""

    event_id: str
    timestamp: datetime
    reason: str | None
    scope: str | None
    expected_outcome: str | None
    review_point: datetime | None
    actor: str | None

    def review_due(self, now: datetime) -> bool:
        return self.review_point is not None and self.review_point <= now

    def to_data(self, now: datetime) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "timestamp": iso_utc(self.timestamp),
            "reason": self.reason,
            "scope": self.scope,
            "expected_outcome": self.expected_outcome,
            "review_point": iso_utc(self.review_point) if self.review_point else None,
            "actor": self.actor,
            "review_due": self.review_due(now),
        }


def fold_objective_advisory(
    events: Sequence[Event], now: datetime, state: ObjectiveState
) -> dict[str, Any]:
    """`objective_advisory/overview` data from events in any order and the folded state."""
    return fold_ordered_advisory(ordered_events(events), now, state)


def fold_ordered_advisory(
    events: Sequence[Event], now: datetime, state: ObjectiveState
) -> dict[str, Any]:
    """The fold proper, for non-retracted events already in (timestamp, id) order."""
    now = aware_utc(now)
    ignored = IgnoredFields()
    overrides: list[Override] = []
    last_activity: datetime | None = None
    for event in events:
        kind = event.event_type
        if kind in _TRAINING_TYPES:
            last_activity = event.timestamp  # events are in time order
        elif kind == OVERRIDE_RECORDED:
            overrides.append(parse_override(event, ignored))
    objective = state.active
    trackability = _trackability(objective, last_activity)
    summary = _override_summary(overrides, now)
    warnings = [
        warning
        for warning in (
            _trackability_warning(trackability),
            _default_inferred_warning(objective),
            _staleness_warning(last_activity, now),
            _review_due_warning(overrides, now),
            _modality_mismatch_warning(objective, state.modality),
        )
        if warning is not None
    ]
    return {
        "schema_version": SCHEMA_VERSION,
        "model_version": MODEL_VERSION,
        "objective_state_model_version": objective_state.MODEL_VERSION,
        "policy_role": POLICY_ROLE,
        "generated_at": iso_utc(now),
        "warnings": warnings,
        "trackability": trackability,
        "objective_snapshot": objective.to_data(),
        "override_summary": summary,
        "safety_invariants_non_overridable": list(SAFETY_INVARIANTS_NON_OVERRIDABLE),
        "data_quality": ignored.as_data(),
    }


def parse_override(event: Event, ignored: IgnoredFields) -> Override:
    """Normalise one override; a missing reason is reported but the override still counts."""
    ignore = ignored.sink(event)
    data = event_data(event, ignore)
    reason = as_text(data.get("reason"), "reason", ignore)
    if reason is None:
        ignore("reason", MISSING_REQUIRED)
    return Override(
        event_id=str(event.id),
        timestamp=event.timestamp,
        reason=reason,
        scope=as_token(data.get("scope"), "scope", ignore),
        expected_outcome=as_text(data.get("expected_outcome"), "expected_outcome", ignore),
        review_point=parse_review_point(data.get("review_point"), "review_point", ignore),
        actor=as_token(data.get("actor"), "actor", ignore),
    )


# --- trackability and override summary ---------------------------------------------------


def _trackability(objective: Objective, last_activity: datetime | None) -> dict[str, Any]:
    """Whether progress on the objective can be measured, and what is missing."""
    metrics_count = len(objective.success_metrics or ())
    goal = objective.primary_goal or {}
    has_target = any(goal.get(key) not in (None, "") for key in TARGET_KEYS)
    gaps = []
    if metrics_count == 0:
        gaps.append("success_metrics_missing")
    if not has_target:
        gaps.append("primary_goal_target_missing")
    return {
        "status": "gap" if gaps else "tracked",
        "gaps": gaps,
        "success_metrics_count": metrics_count,
        "has_primary_goal_target": has_target,
        "last_activity_at": iso_utc(last_activity) if last_activity else None,
    }


def _override_summary(overrides: Sequence[Override], now: datetime) -> dict[str, Any]:
    """Counts over all overrides; `recent` lists the 25 newest of the last 30 days."""
    since = now - timedelta(days=RECENT_OVERRIDE_DAYS)
    recent = [o for o in overrides if o.timestamp >= since]
    by_actor: dict[str, int] = {}
    by_scope: dict[str, int] = {}
    for override in overrides:
        actor = override.actor or "unknown"
        scope = override.scope or "unspecified"
        by_actor[actor] = by_actor.get(actor, 0) + 1
        by_scope[scope] = by_scope.get(scope, 0) + 1
    return {
        "total_count": len(overrides),
        "recent_window_days": RECENT_OVERRIDE_DAYS,
        "recent_count": len(recent),
        "recent": [o.to_data(now) for o in reversed(recent[-MAX_RECENT_OVERRIDES:])],
        "review_due_count": sum(1 for o in overrides if o.review_due(now)),
        "by_actor": _bounded_counts(by_actor),
        "by_scope": _bounded_counts(by_scope),
    }


def _bounded_counts(counts: Mapping[str, int]) -> dict[str, int]:
    """Counts with sorted keys; past 50 keys the smallest fold into `other` (ties by name)."""
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    kept = dict(ranked[:MAX_SUMMARY_KEYS])
    rest = sum(count for _, count in ranked[MAX_SUMMARY_KEYS:])
    if rest:
        kept["(other)"] = kept.get("(other)", 0) + rest
    return dict(sorted(kept.items()))


# --- one function per warning code -------------------------------------------------------


def _warning(
    code: str, severity: str, confidence: float, message: str, evidence: dict[str, Any]
) -> dict[str, Any]:
    return {
        "code": code,
        "severity": severity,
        "confidence": round(min(1.0, max(0.0, confidence)), 2),
        "message": message,
        "evidence": evidence,
        "overridable": True,
    }


def _trackability_warning(trackability: Mapping[str, Any]) -> dict[str, Any] | None:
    """No success metrics, or a primary goal with no target of any kind."""
    if trackability["status"] != "gap":
        return None
    return _warning(
        TRACKABILITY_GAP,
        "warning",
        0.9,
        "Progress on the active objective cannot be measured yet.",
        {
            "gaps": list(trackability["gaps"]),
            "success_metrics_count": trackability["success_metrics_count"],
            "has_primary_goal_target": trackability["has_primary_goal_target"],
        },
    )


def _default_inferred_warning(objective: Objective) -> dict[str, Any] | None:
    """The objective was inferred, not stated, or is held with low confidence."""
    source = objective.source
    confidence = objective.effective_confidence()
    if source != "default_inferred" and confidence >= LOW_CONFIDENCE:
        return None
    return _warning(
        DEFAULT_INFERRED,
        "info",
        1.0 - confidence,
        "The active objective is inferred or uncertain; confirm or state one.",
        {"source": source, "confidence": confidence, "threshold": LOW_CONFIDENCE},
    )


def _staleness_warning(last_activity: datetime | None, now: datetime) -> dict[str, Any] | None:
    """No training event within the 21 days before `now`."""
    if last_activity is not None and last_activity >= now - timedelta(days=STALENESS_DAYS):
        return None
    days = (now - last_activity).days if last_activity is not None else None
    return _warning(
        METRIC_STALENESS,
        "warning",
        0.9,
        f"No training logged in the last {STALENESS_DAYS} days.",
        {
            "last_activity_at": iso_utc(last_activity) if last_activity else None,
            "days_since_last_activity": days,
            "threshold_days": STALENESS_DAYS,
        },
    )


def _review_due_warning(overrides: Sequence[Override], now: datetime) -> dict[str, Any] | None:
    """At least one override's review_point has passed."""
    due = [o for o in overrides if o.review_due(now)]
    if not due:
        return None
    return _warning(
        OVERRIDE_REVIEW_DUE,
        "info",
        1.0,
        f"{len(due)} advisory override(s) reached their review point.",
        {
            "review_due_count": len(due),
            "overrides": [
                {
                    "event_id": o.event_id,
                    "review_point": iso_utc(o.review_point) if o.review_point else None,
                    "scope": o.scope,
                }
                for o in reversed(due[-MAX_RECENT_OVERRIDES:])
            ],
        },
    )


def _modality_mismatch_warning(objective: Objective, modality: Modality) -> dict[str, Any] | None:
    """A strength/endurance goal while >=80% of >=6 classified days are the opposite family."""
    family = objective_goal_family(objective.primary_goal)
    opposite = _OPPOSITE.get(family)
    classified = modality.classified_family_days
    if opposite is None or classified < MISMATCH_MIN_DAYS:
        return None
    opposite_days = modality.days_by_family[opposite]
    if opposite_days * 100 < MISMATCH_SHARE_PERCENT * classified:
        return None
    return _warning(
        MODALITY_MISMATCH,
        "info",
        modality.confidence,
        f"The objective targets {family} but recent training is mostly {opposite}.",
        {
            "goal_family": family,
            "observed_family": opposite,
            "observed_share": round(opposite_days / classified, 4),
            "classified_family_days": classified,
            "threshold_share": MISMATCH_SHARE_PERCENT / 100,
        },
    )


def objective_goal_family(primary_goal: Mapping[str, Scalar] | None) -> str:
    """Training family the objective's primary goal states (type, then target_metric)."""
    goal = primary_goal or {}
    for key in ("type", "target_metric"):
        value = goal.get(key)
        if isinstance(value, str) and token(value):
            family = goal_family(value)
            if family != UNKNOWN:
                return family
    return UNKNOWN
