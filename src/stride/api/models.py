"""Request and response bodies: the OpenAPI document is generated from these."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
)

from stride.api.service import EVENT_TYPES, StoredProjection

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_LABEL_CHARS = 200


def _no_control_characters(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("contains a control character (U+0000 to U+001F or U+007F)")
    if not value.strip():
        raise ValueError("empty or blank")
    return value


def _known_event_type(value: str) -> str:
    if value not in EVENT_TYPES:
        shown = value if len(value) <= 60 else value[:60] + "…"
        raise ValueError(f"unknown event type {shown!r}; expected one of {', '.join(EVENT_TYPES)}")
    return value


def _iso_string(value: Any) -> Any:
    if value is not None and not isinstance(value, str):
        raise ValueError("must be an ISO 8601 string with a UTC offset, e.g. 2026-05-01T07:30:00Z")
    return value


Label = Annotated[
    str, Field(min_length=1, max_length=MAX_LABEL_CHARS), AfterValidator(_no_control_characters)
]
EventType = Annotated[
    str,
    Field(max_length=100, json_schema_extra={"enum": list(EVENT_TYPES)}),
    AfterValidator(_known_event_type),
]
Timestamp = Annotated[AwareDatetime | None, BeforeValidator(_iso_string)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- events ------------------------------------------------------------------------------


class EventIn(Strict):
    """One event for the token's user (the user is never named in the body)."""

    event_type: EventType
    timestamp: Timestamp = Field(
        default=None, description="When it happened, with a UTC offset; default: now."
    )
    data: dict[str, Any] = Field(default_factory=dict, description="The event's JSON object.")
    idempotency_key: Label | None = Field(
        default=None,
        description="Re-sending an event with the same key stores nothing and answers "
        "the id stored the first time (200 instead of 201).",
    )
    metadata: dict[str, Any] | None = Field(
        default=None, description="Free-form; `idempotency_key` goes in the field above."
    )


class EventBatchIn(Strict):
    """Up to 1,000 events (configurable), stored all together or not at all."""

    events: list[EventIn] = Field(min_length=1)


def _event_or_batch(value: Any) -> str:
    return "batch" if isinstance(value, dict) and "events" in value else "event"


EventsBody = Annotated[
    Annotated[EventIn, Tag("event")] | Annotated[EventBatchIn, Tag("batch")],
    Discriminator(_event_or_batch),
]


class AppendedEvent(BaseModel):
    id: UUID
    duplicate: bool = Field(description="True when an idempotency key matched a stored event.")


class AppendedBatch(BaseModel):
    events: list[AppendedEvent]


# --- projections -------------------------------------------------------------------------


class ProjectionOut(BaseModel):
    type: str
    key: str
    revision: int = Field(description="Counts the writes of this projection.")
    model_version: str | None
    updated_at: datetime
    last_event_id: UUID | None
    data: dict[str, Any]

    @classmethod
    def of(cls, stored: StoredProjection) -> ProjectionOut:
        return cls(
            type=stored.projection_type,
            key=stored.key,
            revision=stored.version,
            model_version=stored.model_version,
            updated_at=stored.updated_at,
            last_event_id=stored.last_event_id,
            data=stored.data,
        )


class ProjectionList(BaseModel):
    projections: list[ProjectionOut]


class ProjectionPending(BaseModel):
    """The wait ran out (or the event's job cannot run): what is stored now."""

    event_id: UUID
    covered: Literal[False] = False
    job_status: Literal["waiting", "stalled"] = Field(
        description="waiting: its projection.update job is pending or running; stalled: "
        "the job is dead, failed or cancelled, so only an operator (retry) can bring it in."
    )
    projection: ProjectionOut | None


# --- the token itself --------------------------------------------------------------------


class WhoAmI(BaseModel):
    user_id: UUID
    token_id: str
    operator: bool
    expires_at: datetime | None


# --- operator ------------------------------------------------------------------------------


class BackfillTriggerIn(Strict):
    source: Label = Field(description="Label for traceability; one run per source in flight.")
    max_rate: float | None = Field(default=None, gt=0, description="Users per second at most.")


class BackfillTriggerOut(BaseModel):
    outcome: Literal["enqueued", "in_flight", "no_users"]
    job_id: int | None
    users: int
    message: str


class ReportOut(BaseModel):
    title: str
    columns: list[str]
    rows: list[list[Any]]


class BackfillRunOut(BaseModel):
    """The latest run of a source, counting that run's own work (RunProgress.as_dict)."""

    job_id: int
    source: str
    outcome: Literal["running", "cancelled", "failed", "incomplete", "complete"]
    complete: bool
    cancelled: bool
    cancelled_at: datetime | None
    controller_status: str | None = Field(description="None when the job was pruned.")
    users_total: int
    users_fanned_out: int
    jobs_enqueued: int
    users_with_both_projections: int
    users_refreshed_since_trigger: int = Field(
        description="Both objective projections written after this run's trigger by the "
        "current model versions."
    )
    users_not_on_current_model: int
    fanout_job_counts: dict[str, int] = Field(description="This run's fan-out jobs by status.")
    jobs_waiting_retry: int
    created_at: datetime
    observed_at: datetime
    elapsed_seconds: float
    average_users_per_s: float | None
    average_jobs_per_s: float | None
    fanout_done: bool
    max_rate: float | None
    label_runs: int = Field(description="Runs the source label has had, this one included.")
    label_reused: bool
    problems: list[str]


class BackfillStatusOut(BaseModel):
    source: str
    reports: dict[str, ReportOut] = Field(description="The runbook's four reports, by name.")
    run: BackfillRunOut | None
    users_on_older_model_versions: int


class BackfillCancelOut(BaseModel):
    source: str
    runs_stopped: int
    jobs_cancelled: int


class VerifyIn(Strict):
    sample: int = Field(default=100, ge=1, le=10_000, description="Random users to recompute.")


class DriftOut(BaseModel):
    user_id: UUID
    projection: str
    path: str
    stored: Any
    recomputed: Any


class VerifyOut(BaseModel):
    users_checked: int
    projections_checked: int
    drifts: list[DriftOut]


class DeadJobOut(BaseModel):
    id: int
    job_type: str
    attempt: int
    error_message: str | None
    died_at: datetime | None


class QueueStatusOut(BaseModel):
    counts: dict[str, dict[str, int]] = Field(description="Jobs by type, then by status.")
    oldest_due_pending_seconds: float | None
    expired_leases: int
    latest_dead: list[DeadJobOut]


class RetryDeadIn(Strict):
    job_type: Label | None = Field(default=None, description="Only dead jobs of this type.")


class RetryDeadOut(BaseModel):
    retried: int


# --- probes --------------------------------------------------------------------------------


class HealthOut(BaseModel):
    status: Literal["ok"]


class ReadyOut(BaseModel):
    status: Literal["ready", "not_ready"]
    problems: list[str]
