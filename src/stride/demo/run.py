"""`stride demo run`: migrate, seed, backfill through real worker processes, verify.

Each step is told to a `DemoObserver`, so the CLI can draw it; nothing here prints.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from stride.backfill.reports import (
    BackfillStatus,
    DrainProgress,
    backfill_status,
    wait_until_drained,
)
from stride.backfill.trigger import TriggerResult, trigger_backfill
from stride.demo.population import SeedProgress, SeedSummary, seed_population
from stride.demo.worker_processes import running_workers
from stride.storage.connection import connect, data_dir
from stride.storage.migrations import Migration, migrate


def fresh_demo_source(now: datetime | None = None) -> str:
    """A new source label per demo run, `demo.<UTC time>`: a second `make demo` starts a run
    of its own instead of adding to the first one's reports."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return f"demo.{moment:%Y%m%dT%H%M%S}Z"


def default_worker_log() -> Path:
    """Beside the embedded server's data directory, so `make clean` removes it too."""
    return data_dir().expanduser().resolve().parent / "demo-workers.log"


@dataclass(frozen=True, slots=True)
class DemoSettings:
    users: int = 5000
    seed: int = 1
    workers: int = 2
    source: str = field(default_factory=fresh_demo_source)
    worker_log: Path = field(default_factory=default_worker_log)


@dataclass(frozen=True, slots=True)
class DemoResult:
    seeded: SeedSummary
    trigger: TriggerResult
    status: BackfillStatus | None  # None when there was no user to backfill
    backfill_seconds: float  # from the workers' start to the drained fan-out

    @property
    def complete(self) -> bool:
        return self.status is not None and self.status.run is not None and self.status.run.complete


class DemoObserver(Protocol):
    """What the demo reports as it goes; `seeding` and `draining` frame a long step."""

    def migrated(self, applied: Sequence[Migration]) -> None: ...

    def seeding(self, users: int) -> AbstractContextManager[SeedProgress]: ...

    def seeded(self, summary: SeedSummary) -> None: ...

    def workers_started(self, count: int, worker_log: Path) -> None: ...

    def triggered(self, result: TriggerResult) -> None: ...

    def draining(self) -> AbstractContextManager[DrainProgress]: ...


def run_demo(database_url: str, settings: DemoSettings, observer: DemoObserver) -> DemoResult:
    """The whole story on `database_url`; the workers are stopped before the reports run."""
    with connect(database_url, autocommit=True) as conn:
        observer.migrated(migrate(conn))
        with observer.seeding(settings.users) as advance:
            seeded = seed_population(conn, settings.users, settings.seed, progress=advance)
        observer.seeded(seeded)
    settings.worker_log.parent.mkdir(parents=True, exist_ok=True)
    with (
        settings.worker_log.open("ab") as log,
        running_workers(database_url, settings.workers, log=log),
    ):
        observer.workers_started(settings.workers, settings.worker_log)
        started = time.monotonic()
        with connect(database_url, autocommit=True) as conn:
            trigger = trigger_backfill(conn, settings.source)
            observer.triggered(trigger)
            if trigger.outcome == "no_users":
                return DemoResult(seeded, trigger, None, 0.0)
            with observer.draining() as on_progress:
                wait_until_drained(conn, settings.source, on_progress=on_progress)
        elapsed = time.monotonic() - started
    with connect(database_url, autocommit=True) as conn:
        status = backfill_status(conn, settings.source)
    return DemoResult(seeded, trigger, status, elapsed)
