"""Snapshots of slow reads, refreshed in the background while someone looks (pure asyncio).

On a large database some of what the dashboard shows costs more than a page may
take (the runbook's coverage report reads every event; counting a run's
hundreds of thousands of jobs takes a few hundred milliseconds). Pages and live
polls therefore read a snapshot: a fresh one is returned as is; a stale one is
returned at once while one refresh per key runs in the background
(stale-while-revalidate); only a key never read before is waited for (or not,
with `wait=False`). A key is refreshed no more often than every `max_age`
seconds, nor more often than every twice its last computation time, so a
watched page never keeps the database busy more than half the time. Nothing is
computed for a page nobody opens.

Each server process keeps its own snapshots.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

log = logging.getLogger("stride.api.dashboard")

T = TypeVar("T")
Key = tuple[Any, ...]  # (view name, its arguments...)


@dataclass(frozen=True, slots=True)
class Snapshot(Generic[T]):
    """A value, when it was read (wall clock, for the page) and how long reading it took."""

    value: T
    taken_at: datetime
    seconds: float
    error: str | None = None  # the latest refresh failed: this is the value before it

    @property
    def age_seconds(self) -> float:
        return max(0.0, (datetime.now(UTC) - self.taken_at).total_seconds())


@dataclass(slots=True)
class _Entry:
    snapshot: Snapshot[Any]
    taken_at: float  # monotonic
    wanted_at: float  # monotonic: last time a page asked for it


@dataclass(slots=True)
class SnapshotCache:
    """Snapshots by key; see the module's docstring for when they refresh."""

    max_entries: int = 200
    clock: Callable[[], float] = time.monotonic
    _entries: dict[Key, _Entry] = field(default_factory=dict)
    _running: dict[Key, asyncio.Task[None]] = field(default_factory=dict)

    async def get(
        self,
        key: Key,
        compute: Callable[[], Awaitable[T]],
        *,
        max_age: float,
        wait: float | None = None,
    ) -> Snapshot[T] | None:
        """The snapshot for `key`. The request that first reads a key waits up to `wait`
        seconds for it and gets None when it is not ready by then; it goes on computing
        for the next read, and other reads meanwhile get None at once. With `wait=None`
        every read of a key never read before waits for it, as long as it takes.

        An error while computing a key never read before propagates; a failed
        refresh keeps the previous value and records the error on it.
        """
        now = self.clock()
        entry = self._entries.get(key)
        if entry is not None:
            entry.wanted_at = now
            if now - entry.taken_at > max(max_age, 2 * entry.snapshot.seconds):
                self._refresh(key, compute)
            snapshot: Snapshot[T] = entry.snapshot
            return snapshot
        running = self._running.get(key)
        if running is not None and wait is not None:
            # Another request started it and waits for it; this one does not wait too.
            return None
        task = running or self._refresh(key, compute)
        if wait is not None:
            done, _ = await asyncio.wait([task], timeout=wait)
            if not done:
                return None
        await asyncio.shield(task)
        fresh = self._entries.get(key)
        if fresh is None:  # dropped by invalidate() meanwhile: compute once more, inline
            return await self._compute_now(key, compute)
        result: Snapshot[T] = fresh.snapshot
        return result

    def invalidate(self, match: Callable[[Key], bool]) -> None:
        """Forget the snapshots whose key matches, so the next read waits for fresh data."""
        for key in [k for k in self._entries if match(k)]:
            del self._entries[key]

    def peek(self, key: Key) -> Snapshot[Any] | None:
        entry = self._entries.get(key)
        return entry.snapshot if entry else None

    async def _compute_now(self, key: Key, compute: Callable[[], Awaitable[T]]) -> Snapshot[T]:
        started = time.perf_counter()
        value = await compute()
        snapshot = Snapshot(value, datetime.now(UTC), time.perf_counter() - started)
        self._store(key, snapshot)
        return snapshot

    def _refresh(self, key: Key, compute: Callable[[], Awaitable[Any]]) -> asyncio.Task[None]:
        running = self._running.get(key)
        if running is not None:
            return running

        async def run() -> None:
            try:
                started = time.perf_counter()
                try:
                    value = await compute()
                except Exception as exc:
                    previous = self._entries.get(key)
                    if previous is None:
                        raise
                    log.warning("dashboard refresh of %r failed: %s", key, exc)
                    # Keep the old value, say why it is old, and wait a full period to retry.
                    failed = Snapshot(
                        previous.snapshot.value,
                        previous.snapshot.taken_at,
                        time.perf_counter() - started,
                        error=" ".join(str(exc).split()) or type(exc).__name__,
                    )
                    previous.snapshot = failed
                    previous.taken_at = self.clock()
                    return
                self._store(key, Snapshot(value, datetime.now(UTC), time.perf_counter() - started))
            finally:
                self._running.pop(key, None)

        task = asyncio.get_running_loop().create_task(run())
        # A background refresh nobody awaits must not end as an unretrieved exception.
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        self._running[key] = task
        return task

    def _store(self, key: Key, snapshot: Snapshot[Any]) -> None:
        now = self.clock()
        self._entries[key] = _Entry(snapshot, now, now)
        if len(self._entries) > self.max_entries:
            # Drop the entry nobody asked for the longest.
            oldest = min(self._entries, key=lambda k: self._entries[k].wanted_at)
            del self._entries[oldest]
