"""Throughput over time, kept up to date cheaply (pure: no I/O).

A `BucketSeries` holds completed jobs per time bucket, by job type, as counted
by the queue (stride.queue.status.completions). Each refresh counts only from
the first bucket that may still change: a transaction stamps `completed_at`
when it completes a job but commits a moment later, so the last `settle_seconds`
are recounted every time and everything before them is final. A refresh of a
busy queue thus reads seconds of completions, not the whole window.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

EPOCH = datetime(2000, 1, 1, tzinfo=UTC)  # the origin date_bin aligns buckets to


class CompletionRow(Protocol):
    @property
    def start(self) -> datetime: ...
    @property
    def job_type(self) -> str: ...
    @property
    def jobs(self) -> int: ...
    @property
    def users(self) -> int: ...


class CompletionBatch(Protocol):
    """What stride.queue.status.completions returns."""

    @property
    def since(self) -> datetime: ...
    @property
    def observed_at(self) -> datetime: ...
    @property
    def buckets(self) -> Sequence[CompletionRow]: ...


def floor_to_bucket(moment: datetime, bucket_seconds: float) -> datetime:
    """The start of the bucket holding `moment` (buckets aligned as date_bin aligns them)."""
    offset = (moment - EPOCH).total_seconds()
    return EPOCH + timedelta(seconds=math.floor(offset / bucket_seconds) * bucket_seconds)


@dataclass(slots=True)
class _Bucket:
    jobs: dict[str, int] = field(default_factory=dict)
    users: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Rates:
    """Per-second rates over the complete buckets of a recent window."""

    jobs_per_s: float | None
    users_per_s: float | None
    seconds: float  # how much time the rates cover


@dataclass(slots=True)
class BucketSeries:
    """Completed jobs per bucket from `start`, keeping at most `window_seconds` (if given)."""

    bucket_seconds: float
    start: datetime
    window_seconds: float | None = None
    settle_seconds: float = 5.0
    _buckets: dict[datetime, _Bucket] = field(default_factory=dict)
    _final_until: datetime | None = None
    observed_at: datetime | None = None

    def __post_init__(self) -> None:
        if self.bucket_seconds <= 0:
            raise ValueError("bucket_seconds must be positive")
        self.start = floor_to_bucket(self.start, self.bucket_seconds)

    def next_since(self) -> datetime:
        """Where the next count must start: the first bucket that may still change."""
        return self._final_until or self.start

    def merge(self, batch: CompletionBatch) -> None:
        """Replace every bucket from `batch.since` on with the batch's counts."""
        since = floor_to_bucket(batch.since, self.bucket_seconds)
        for start in [s for s in self._buckets if s >= since]:
            del self._buckets[start]
        for row in batch.buckets:
            if row.start < since:
                continue
            bucket = self._buckets.setdefault(row.start, _Bucket())
            bucket.jobs[row.job_type] = bucket.jobs.get(row.job_type, 0) + row.jobs
            bucket.users[row.job_type] = bucket.users.get(row.job_type, 0) + row.users
        self.observed_at = batch.observed_at
        settled = floor_to_bucket(
            batch.observed_at - timedelta(seconds=self.settle_seconds), self.bucket_seconds
        )
        self._final_until = max(since, settled)
        if self.window_seconds is not None:
            oldest = floor_to_bucket(
                batch.observed_at - timedelta(seconds=self.window_seconds), self.bucket_seconds
            )
            if oldest > self.start:
                self.start = oldest
            for start in [s for s in self._buckets if s < self.start]:
                del self._buckets[start]

    def _complete_starts(self, until: datetime | None = None) -> list[datetime]:
        """Starts of every bucket from `start` to the last one that has fully elapsed."""
        if self.observed_at is None:
            return []
        current = floor_to_bucket(self.observed_at, self.bucket_seconds)
        if until is not None:
            current = min(current, floor_to_bucket(until, self.bucket_seconds) + self._width)
        count = round((current - self.start).total_seconds() / self.bucket_seconds)
        return [self.start + self._width * i for i in range(max(0, count))]

    @property
    def _width(self) -> timedelta:
        return timedelta(seconds=self.bucket_seconds)

    def last_active(self) -> datetime | None:
        """The end of the latest bucket in which anything completed."""
        active = [s for s, b in self._buckets.items() if any(b.jobs.values())]
        return max(active) + self._width if active else None

    def job_types(self) -> list[str]:
        """Job types seen, busiest first."""
        totals: dict[str, int] = {}
        for bucket in self._buckets.values():
            for job_type, n in bucket.jobs.items():
                totals[job_type] = totals.get(job_type, 0) + n
        return sorted(totals, key=lambda t: (-totals[t], t))

    def values(
        self, job_type: str | None = None, *, users: bool = False, until: datetime | None = None
    ) -> list[float]:
        """Per-second rate in each complete bucket (zero where nothing completed)."""
        out = []
        for start in self._complete_starts(until):
            bucket = self._buckets.get(start)
            counts = (bucket.users if users else bucket.jobs) if bucket else {}
            n = counts.get(job_type, 0) if job_type is not None else sum(counts.values())
            out.append(n / self.bucket_seconds)
        return out

    def recent_rates(self, seconds: float, job_type: str | None = None) -> Rates:
        """Jobs/s and users/s over the complete buckets of the last `seconds`."""
        starts = self._complete_starts()
        wanted = max(1, round(seconds / self.bucket_seconds))
        starts = starts[-wanted:]
        if not starts:
            return Rates(None, None, 0.0)
        jobs = users = 0
        for start in starts:
            bucket = self._buckets.get(start)
            if bucket is None:
                continue
            if job_type is None:
                jobs += sum(bucket.jobs.values())
                users += sum(bucket.users.values())
            else:
                jobs += bucket.jobs.get(job_type, 0)
                users += bucket.users.get(job_type, 0)
        covered = len(starts) * self.bucket_seconds
        return Rates(jobs / covered, users / covered, covered)

    def chart(
        self,
        lines: Sequence[tuple[str, str | None, bool]],
        *,
        until: datetime | None = None,
        max_points: int = 600,
        smooth_buckets: int = 1,
    ) -> dict[str, Any]:
        """The chart document dashboard.js draws: one line per (label, job type, users?).

        Each point is the mean of the `smooth_buckets` buckets ending at it (workers
        complete jobs in batches, so single short buckets swing between 0 and bursts).
        A long series is drawn with wider buckets (each the mean of `factor` adjacent
        ones), so a poll never ships more than `max_points` values per line.
        """
        points = len(self._complete_starts(until))
        factor = max(1, math.ceil(points / max_points))

        def merged(values: list[float]) -> list[float]:
            if smooth_buckets > 1:
                values = [
                    sum(window) / len(window)
                    for window in (
                        values[max(0, i - smooth_buckets + 1) : i + 1] for i in range(len(values))
                    )
                ]
            groups = [values[i : i + factor] for i in range(0, len(values), factor)]
            return [round(sum(g) / len(g), 2) for g in groups]

        return {
            "bucket_seconds": self.bucket_seconds * factor,
            "start_ms": int(self.start.timestamp() * 1000),
            "points": math.ceil(points / factor),
            "lines": [
                {"label": label, "values": merged(self.values(t, users=u, until=until))}
                for label, t, u in lines
            ],
        }
