"""What the templates show, shaped from the core's report objects (pure: no I/O).

Formatting follows the CLI's rules (issue 14): numbers with thousands
separators, ISO-8601 UTC timestamps, durations as H:MM:SS, ids and error texts
never cut (the stylesheet wraps them).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from stride.api import service

STATUSES = ("pending", "retrying", "processing", "completed", "failed", "dead", "cancelled")
BLANK = "\u2013"  # an en dash: what a table shows for "no value"


# --- filters ---------------------------------------------------------------------------


def number(value: Any) -> str:
    """12345 -> '12,345'; 3.25 -> '3.25'; 1234.5 -> '1,235'; None -> BLANK."""
    if value is None:
        return BLANK
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, Decimal):
        value = float(value)
    if isinstance(value, float):
        if value != value:  # NaN
            return BLANK
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}".rstrip("0").rstrip(".")
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def rate(per_second: float | None) -> str:
    if per_second is None:
        return BLANK
    return f"{per_second:.1f}" if per_second < 10 else f"{per_second:,.0f}"


def duration(seconds: float | None) -> str:
    """H:MM:SS, or '-:--:--' when unknown: the CLI's format."""
    return service.format_duration(seconds)


def age(seconds: float | None) -> str:
    """A short age: '4.2 s', '3.5 min', '2.1 h', '3.0 d'."""
    if seconds is None:
        return BLANK
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def iso(moment: datetime | None) -> str:
    """ISO-8601 in UTC to the second: 2026-03-01T07:30:00Z."""
    if moment is None:
        return BLANK
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def cell(value: Any) -> str:
    """A report cell: numbers with separators, timestamps in ISO-8601, blanks as BLANK."""
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, str):
        try:
            return iso(datetime.fromisoformat(value))
        except ValueError:
            return value
    return number(value)


def percent(part: int, whole: int) -> float:
    return 100.0 * part / whole if whole else 0.0


FILTERS = {
    "number": number,
    "rate": rate,
    "duration": duration,
    "age": age,
    "iso": iso,
    "pretty_json": pretty_json,
    "cell": cell,
}


# --- the backfill page -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunPanel:
    """The current run as the page draws it: its outcome, progress, rates and ETA.

    Progress, outcome, elapsed time and average rate are `RunProgress`'s (this
    run's work only); the recent rates come from the run's throughput series, and
    the ETA divides the users left by the recent users/s.
    """

    run: service.RunProgress
    state: str  # the run's outcome: running, cancelled, failed, incomplete, complete
    percent: float
    users_per_s: float | None
    jobs_per_s: float | None
    eta_seconds: float | None

    @property
    def running(self) -> bool:
        return self.state == "running"

    @property
    def problems(self) -> list[str]:
        return self.run.problems() if self.run.drained else []


def run_panel(
    run: service.RunProgress, *, users_per_s: float | None, jobs_per_s: float | None
) -> RunPanel:
    done = min(run.users_refreshed, run.users_total)
    left = run.users_total - done
    running = run.outcome == "running"
    if left <= 0:
        eta: float | None = 0.0
    elif users_per_s and running:
        eta = left / users_per_s
    else:
        eta = None
    return RunPanel(
        run=run,
        state=run.outcome,
        percent=percent(done, run.users_total),
        users_per_s=users_per_s if running else None,
        jobs_per_s=jobs_per_s if running else None,
        eta_seconds=eta,
    )


# --- the queue page ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CountRow:
    job_type: str
    priority: int
    by_status: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.by_status.values())


def count_table(counts: Iterable[service.JobCount]) -> tuple[list[str], list[CountRow]]:
    """Rows of (job type, priority) with a count per status; the statuses as columns
    (the usual six first, any other after)."""
    rows: dict[tuple[str, int], dict[str, int]] = {}
    seen: set[str] = set()
    for c in counts:
        rows.setdefault((c.job_type, c.priority), {})[c.status] = c.count
        seen.add(c.status)
    columns = [*STATUSES, *sorted(seen - set(STATUSES))]
    ordered = sorted(rows.items(), key=lambda item: (item[0][0], -item[0][1]))
    return columns, [CountRow(t, p, by_status) for (t, p), by_status in ordered]


def totals_by_status(counts: Iterable[service.JobCount]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for c in counts:
        totals[c.status] = totals.get(c.status, 0) + c.count
    return totals


def chart_lines(job_types: Sequence[str], limit: int = 4) -> list[tuple[str, str | None, bool]]:
    """The queue chart's lines: every job type together, then the busiest few alone."""
    lines: list[tuple[str, str | None, bool]] = [("all jobs/s", None, False)]
    if len(job_types) > 1:
        lines.extend((f"{t} /s", t, False) for t in job_types[:limit])
    return lines
