"""Rates of a running backfill that mean something: moving averages, elapsed time, ETA.

Pure: fed samples of (time, users refreshed, jobs settled), it answers with the
rates over the last `window` seconds — not the last poll's jitter — and an ETA
from them.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

DEFAULT_WINDOW_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class RateSample:
    at: float  # seconds on one clock (stride uses the database server's)
    users: int  # users refreshed so far
    jobs: int  # jobs settled so far


class MovingRate:
    """Users/s and jobs/s over the shortest run of samples that spans the last `window` seconds.

    Keeping the newest sample at or before the window's start means the span
    is never shorter than the window once there is history: a watcher that
    joins a run late (its first sample being the trigger itself) gets the
    average since the trigger, not the noise of two polls a second apart.
    """

    def __init__(self, window: float = DEFAULT_WINDOW_SECONDS) -> None:
        if window <= 0:
            raise ValueError("the window must be positive")
        self.window = window
        self._samples: deque[RateSample] = deque()

    def add(self, sample: RateSample) -> None:
        if self._samples and sample.at <= self._samples[-1].at:
            return  # the clock did not move: nothing new to learn
        self._samples.append(sample)
        window_start = sample.at - self.window
        while len(self._samples) > 2 and self._samples[1].at <= window_start:
            self._samples.popleft()

    @property
    def span(self) -> float:
        """Seconds between the oldest and newest sample kept."""
        if len(self._samples) < 2:
            return 0.0
        return self._samples[-1].at - self._samples[0].at

    def _rate(self, first: int, last: int) -> float | None:
        span = self.span
        return max(0.0, (last - first) / span) if span > 0 else None

    @property
    def users_per_s(self) -> float | None:
        if not self._samples:
            return None
        return self._rate(self._samples[0].users, self._samples[-1].users)

    @property
    def jobs_per_s(self) -> float | None:
        if not self._samples:
            return None
        return self._rate(self._samples[0].jobs, self._samples[-1].jobs)

    def eta_seconds(self, users_total: int) -> float | None:
        """Seconds until `users_total` at the current users/s; None while that rate is unknown."""
        if not self._samples:
            return None
        left = users_total - self._samples[-1].users
        if left <= 0:
            return 0.0
        rate = self.users_per_s
        return left / rate if rate else None


def format_duration(seconds: float | None) -> str:
    """H:MM:SS, or '-:--:--' when unknown."""
    if seconds is None:
        return "-:--:--"
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def format_rate(per_second: float | None) -> str:
    """A rate with thousands separators; '-' while unknown."""
    if per_second is None:
        return "-"
    if per_second < 10:
        return f"{per_second:.1f}"
    return f"{per_second:,.0f}"
