"""A backfill as an operator lives it, with real `stride worker` processes and the real CLI:
organic traffic first, honest progress and completeness, rates through a real terminal."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from tests.conftest import wait_until
from tests.populations import make_population

from stride.backfill.reports import RunProgress, run_progress

STRIDE = [sys.executable, "-m", "stride.cli.main"]
Conn = psycopg.Connection[Any]


def stride(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*STRIDE, *args], capture_output=True, text=True, timeout=120)


@contextmanager
def workers(database_url: str, count: int = 1, *extra: str) -> Iterator[None]:
    """`count` real worker processes (concurrency 1 each, the default), SIGTERMed on exit."""
    processes = [
        subprocess.Popen(
            [*STRIDE, "worker", "--database-url", database_url, *extra],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(count)
    ]
    try:
        yield
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            assert process.wait(timeout=30) == 0


def trigger(database_url: str, source: str, *extra: str) -> subprocess.CompletedProcess[str]:
    result = stride(
        "backfill",
        "objective-foundation",
        "--database-url",
        database_url,
        "--source",
        source,
        "--no-verify",
        *extra,
    )
    assert result.returncode == 0, result.stderr
    return result


def progress_of(conn: Conn, source: str) -> RunProgress:
    progress = run_progress(conn, source)
    assert progress is not None
    return progress


def status_json(database_url: str, source: str) -> tuple[int, dict[str, Any]]:
    result = stride(
        "backfill", "status", "--database-url", database_url, "--source", source, "--json"
    )
    return result.returncode, json.loads(result.stdout)


@pytest.mark.slow
def test_an_organic_event_is_projected_within_2s_during_a_throttled_backfill_on_one_runner(
    conn: Conn, database_url: str
) -> None:
    users = make_population(conn, 5000)
    triggered = trigger(database_url, "live", "--max-rate", "250")
    assert "(5,000 users snapshotted)" in triggered.stdout
    with workers(database_url, 1, "--concurrency", "1"):
        wait_until(
            lambda: progress_of(conn, "live").users_refreshed >= 250,
            timeout=30,
            what="the backfill under way",
        )
        latencies = []
        for user in users[-3:]:  # at the end of the snapshot: not refreshed for a while
            appended = stride(
                "events",
                "append",
                "--database-url",
                database_url,
                "--user",
                str(user),
                "--type",
                "objective.set",
                "--data",
                json.dumps({"objective_id": "organic", "mode": "coach"}),
            )
            assert appended.returncode == 0, appended.stderr
            event_id = appended.stdout.split()[-1]
            latency = wait_until(
                lambda user=user, event_id=event_id: conn.execute(
                    "SELECT p.updated_at - e.created_at FROM projections p "
                    "JOIN events e ON e.id = p.last_event_id "
                    "WHERE p.user_id = %s AND p.projection_type = 'objective_state' "
                    "AND p.last_event_id = %s",
                    (user, event_id),
                ).fetchone(),
                timeout=10,
                what="the organic event projected",
            )[0]
            latencies.append(latency)
        during = progress_of(conn, "live")
    assert max(latencies) < timedelta(seconds=2), latencies
    # The backfill was still far from done: the organic events did not wait for it.
    assert not during.drained and during.users_refreshed < 5000


# Per source: users fanned out, and fan-out jobs completed (the run's own work).
OWN_WORK = """
SELECT (SELECT next_position - 1 FROM backfill_runs r WHERE r.source = s.source),
       (SELECT count(*) FROM background_jobs j
        WHERE j.job_type = 'projection.update' AND j.payload->>'source' = s.source
          AND j.status = 'completed')
FROM unnest(%s::text[]) AS s(source)
"""


def own_work(conn: Conn, sources: tuple[str, ...] = ("first", "second")) -> list[tuple[int, int]]:
    return [(int(users), int(jobs)) for users, jobs in conn.execute(OWN_WORK, (list(sources),))]


@pytest.mark.slow
def test_two_backfills_of_different_sources_progress_at_once(conn: Conn, database_url: str) -> None:
    make_population(conn, 400)
    trigger(database_url, "first", "--max-rate", "40")
    trigger(database_url, "second", "--max-rate", "40")
    claimed = (
        "SELECT count(*) = 2 FROM background_jobs "
        "WHERE job_type = 'inference.objective_backfill' AND started_at IS NOT NULL"
    )
    # The first worker alone claims both controllers (in one batch); a second one joins.
    with workers(database_url, 1):
        wait_until(lambda: conn.execute(claimed).fetchone() == (True,), what="both claimed")
        with workers(database_url, 1):
            # Each run needs ten seconds at 40 users/s; within eight both have fanned out
            # and run jobs of their own (both snapshots hold the same users, so refreshed
            # users cannot tell the runs apart) and neither has finished: no runner holds
            # one controller while the other waits behind it.
            both = wait_until(
                lambda: (
                    all(users >= 80 and jobs >= 100 for users, jobs in own_work(conn))
                    and own_work(conn)
                ),
                timeout=8,
                what="both runs progressing",
            )
            assert all(users < 400 for users, _ in both)
            # Their controllers run one short step at a time: neither is held for long.
            held = conn.execute(
                "SELECT max(clock_timestamp() - started_at) FROM background_jobs "
                "WHERE job_type = 'inference.objective_backfill' AND status = 'processing'"
            ).fetchone()
            assert held is None or held[0] is None or held[0] < timedelta(seconds=2)
            for source in ("first", "second"):
                stride("backfill", "cancel", "--database-url", database_url, "--source", source)


@pytest.mark.slow
def test_a_repeat_backfill_counts_its_own_work_and_a_cancelled_one_never_passes(
    conn: Conn, database_url: str
) -> None:
    make_population(conn, 300)
    trigger(database_url, "deploy.v1")
    assert stride("worker", "--database-url", database_url, "--once").returncode == 0
    code, first = status_json(database_url, "deploy.v1")
    assert code == 0 and first["run"]["complete"] is True

    # The next deploy: every user already has both projections, from the first run.
    trigger(database_url, "deploy.v2", "--max-rate", "30")
    code, before = status_json(database_url, "deploy.v2")
    assert code == 1
    assert before["run"]["users_refreshed_since_trigger"] == 0
    assert before["run"]["users_with_both_projections"] == 300
    assert before["run"]["complete"] is False and before["run"]["outcome"] == "running"
    coverage = before["reports"]["backfill_coverage"]
    assert (
        dict(zip(coverage["columns"], coverage["rows"][0], strict=True))[
            "users_missing_objective_surfaces_all_users"
        ]
        == 0
    )  # the runbook's coverage proves nothing after a repeat deploy

    with workers(database_url):
        wait_until(
            lambda: progress_of(conn, "deploy.v2").users_refreshed >= 30,
            timeout=20,
            what="some users refreshed",
        )
        cancel = stride(
            "backfill", "cancel", "--database-url", database_url, "--source", "deploy.v2"
        )
        assert cancel.returncode == 0 and "1 run(s) stopped" in cancel.stdout
        wait_until(lambda: progress_of(conn, "deploy.v2").drained, what="the cancel settled")

    code, after = status_json(database_url, "deploy.v2")
    run = after["run"]
    assert code == 1
    assert (run["outcome"], run["cancelled"], run["complete"]) == ("cancelled", True, False)
    refreshed = run["users_refreshed_since_trigger"]
    assert 30 <= refreshed < 300
    text = stride("backfill", "status", "--database-url", database_url, "--source", "deploy.v2")
    assert text.returncode == 1
    assert f"it refreshed {refreshed} of 300 users" in " ".join(text.stderr.split())
    history = stride("backfill", "history", "--database-url", database_url, "--json")
    outcomes = [(r["source"], r["outcome"]) for r in json.loads(history.stdout)["runs"]]
    assert outcomes == [("deploy.v2", "cancelled"), ("deploy.v1", "complete")]


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")
LIVE_RATE = re.compile(r"([\d,.]+) users/s · ([\d,.]+) jobs/s · [\d,]+ jobs open")
FINAL_RATE = re.compile(r"average ([\d,.]+) users/s, ([\d,.]+) jobs/s")


class Terminal:
    """A command on a real pseudo-terminal, its screen output collected as lines."""

    def __init__(self, argv: list[str], columns: int = 120) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR")}
        env["TERM"] = "xterm-256color"
        self.process = subprocess.Popen(
            argv, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True
        )
        os.close(slave)
        self.master = master
        self.chunks: list[bytes] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO once the command has exited
                return
            if not data:
                return
            self.chunks.append(data)

    def lines(self) -> list[str]:
        text = ANSI.sub("", b"".join(self.chunks).decode("utf-8", "replace"))
        return [line.strip() for line in re.split(r"[\r\n]+", text) if line.strip()]

    def wait(self, timeout: float) -> int:
        code = self.process.wait(timeout=timeout)
        self.reader.join(timeout=5)
        os.close(self.master)
        return code


@pytest.mark.slow
def test_status_wait_in_a_terminal_shows_the_runs_true_rate(conn: Conn, database_url: str) -> None:
    make_population(conn, 600)
    with workers(database_url):
        time.sleep(1)  # the worker is listening before the clock starts
        trigger(database_url, "watched", "--max-rate", "60")
        watch = ["backfill", "status", "--database-url", database_url, "--source", "watched"]
        terminal = Terminal([*STRIDE, *watch, "--wait"])
        wait_until(
            lambda: progress_of(conn, "watched").users_refreshed >= 300,
            timeout=30,
            what="the run half way",
        )
        mid_run = [m for line in terminal.lines() if (m := LIVE_RATE.search(line))]
        assert terminal.wait(timeout=60) == 0, "\n".join(terminal.lines()[-20:])
    done = progress_of(conn, "watched")
    assert done.complete and done.last_settled_at is not None
    true_average = done.users_total / (done.last_settled_at - done.created_at).total_seconds()
    assert mid_run, terminal.lines()[-10:]
    shown_mid_run = float(mid_run[-1].group(1).replace(",", ""))
    assert shown_mid_run == pytest.approx(true_average, rel=0.3)
    final = [m for line in terminal.lines() if (m := FINAL_RATE.search(line))]
    assert final, terminal.lines()[-10:]
    shown_at_end = float(final[-1].group(1).replace(",", ""))
    assert shown_at_end == pytest.approx(true_average, rel=0.3)
    assert any("elapsed 0:00:" in line and "ETA" in line for line in terminal.lines())
    assert any("600 of 600 users refreshed in 0:00:" in line for line in terminal.lines())
