"""`stride demo run` end to end: migrate, seed, real worker processes, backfill, reports."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import wait_until

from stride.backfill.reports import DrainProgress, RunProgress
from stride.backfill.trigger import TriggerResult
from stride.demo.population import SeedProgress, SeedSummary
from stride.demo.run import DemoSettings, fresh_demo_source, run_demo
from stride.storage.migrations import Migration

STRIDE = str(Path(sys.executable).with_name("stride"))


class RecordingObserver:
    """Keeps every step the demo reports, in order."""

    def __init__(self) -> None:
        self.steps: list[str] = []
        self.seed_progress: list[tuple[int, int]] = []
        self.drain_progress: list[RunProgress] = []

    def migrated(self, applied: Sequence[Migration]) -> None:
        self.steps.append(f"migrated {len(applied)}")

    @contextmanager
    def seeding(self, users: int) -> Iterator[SeedProgress]:
        self.steps.append(f"seeding {users}")
        yield lambda users_done, events: self.seed_progress.append((users_done, events))

    def seeded(self, summary: SeedSummary) -> None:
        self.steps.append(f"seeded {summary.users}")

    def workers_started(self, count: int, worker_log: Path) -> None:
        self.steps.append(f"workers {count}")

    def triggered(self, result: TriggerResult) -> None:
        self.steps.append(f"triggered {result.outcome} {result.users}")

    @contextmanager
    def draining(self) -> Iterator[DrainProgress]:
        self.steps.append("draining")
        yield self.drain_progress.append


def test_run_demo_backfills_every_seeded_user_through_worker_processes(
    database_url: str, tmp_path: Path
) -> None:
    settings = DemoSettings(users=40, seed=3, workers=2, worker_log=tmp_path / "workers.log")
    observer = RecordingObserver()

    result = run_demo(database_url, settings, observer)

    # The test database is migrated already, so no migration is left to apply.
    assert observer.steps == [
        "migrated 0",
        "seeding 40",
        "seeded 40",
        "workers 2",
        "triggered enqueued 40",
        "draining",
    ]
    assert observer.seed_progress[-1] == (40, result.seeded.events)
    assert observer.drain_progress and observer.drain_progress[-1].drained
    assert result.complete
    assert result.status is not None and result.status.run is not None
    assert result.status.run.users_with_both == 40
    assert result.status.users_on_older_model_versions == 0
    assert result.backfill_seconds > 0
    assert settings.worker_log.exists()


def test_demo_run_command(database_url: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [
            STRIDE,
            "demo",
            "run",
            "--users",
            "30",
            "--seed",
            "4",
            "--no-serve",
            "--database-url",
            database_url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "STRIDE_DATA_DIR": str(tmp_path / "pgdata")},
    )
    assert done.returncode == 0, done.stderr
    assert "seeded 30 users" in done.stdout
    assert "Coverage" in done.stdout
    assert "backfill of 30 users took" in done.stdout
    assert (tmp_path / "demo-workers.log").exists()


def test_each_demo_run_backfills_under_a_label_of_its_own(
    database_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "workers.log"
    first_settings = DemoSettings(users=20, seed=5, worker_log=log)
    first = run_demo(database_url, first_settings, RecordingObserver())
    # Labels carry the second: a demo started within the same one waits for the next.
    wait_until(lambda: fresh_demo_source() != first_settings.source, what="a new label")
    second = run_demo(
        database_url, DemoSettings(users=20, seed=5, worker_log=log), RecordingObserver()
    )
    assert first.complete and second.complete and second.seeded.already_seeded
    assert first.status is not None and second.status is not None
    runs = [first.status.run, second.status.run]
    assert runs[0] is not None and runs[1] is not None
    assert runs[0].source != runs[1].source
    assert all(r is not None and r.source.startswith("demo.") and not r.label_reused for r in runs)
    # The second run's reports count its own jobs, not the first run's as well.
    reports = {r.name: r for r in second.status.reports}
    assert reports["backfill_controller_status"].rows == [["completed", 1]]
    assert runs[1].job_counts == {"completed": runs[1].jobs_enqueued}
