"""Backfill decisions that need no database: a run's outcome, moving rates, step sizes, labels."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stride.backfill.fanout import (
    DEFAULT_CHUNK_USERS,
    THROTTLED_LEAD_SECONDS,
    next_step_delay,
    step_chunk_users,
)
from stride.backfill.rates import MovingRate, RateSample, format_duration, format_rate
from stride.backfill.reports import POLL_COST_FACTOR, RunProgress, next_poll_delay, run_outcome
from stride.demo.run import fresh_demo_source

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        # controller, cancelled, open, given up, refreshed of 10
        (("pending", False, 0, 0, 0), "running"),
        (("processing", False, 0, 0, 10), "running"),
        (("completed", False, 3, 0, 10), "running"),  # e.g. a job pending on retry
        (("completed", False, 1, 2, 4), "running"),
        (("pending", True, 5, 0, 2), "cancelled"),
        (("cancelled", False, 0, 0, 2), "cancelled"),
        (("completed", True, 0, 0, 10), "cancelled"),  # cancelled at the last moment
        (("dead", False, 0, 0, 10), "failed"),
        (("completed", False, 0, 1, 9), "failed"),
        (("completed", False, 0, 0, 9), "incomplete"),
        (("completed", False, 0, 0, 10), "complete"),
        ((None, False, 0, 0, 10), "complete"),  # the controller job was pruned
    ],
)
def test_run_outcome(case: tuple[str | None, bool, int, int, int], expected: str) -> None:
    controller, cancelled, jobs_open, given_up, refreshed = case
    outcome = run_outcome(
        controller_status=controller,
        cancelled=cancelled,
        jobs_open=jobs_open,
        jobs_given_up=given_up,
        users_refreshed=refreshed,
        users_total=10,
    )
    assert outcome == expected


def progress(**changes: object) -> RunProgress:
    fields: dict[str, object] = {
        "job_id": 7,
        "source": "s",
        "controller_status": "completed",
        "users_total": 10,
        "users_fanned_out": 10,
        "jobs_enqueued": 30,
        "users_with_both": 10,
        "users_refreshed": 10,
        "users_not_on_current_model": 0,
        "job_counts": {"completed": 30},
        "created_at": T0,
        "fanout_done": True,
        "observed_at": T0 + timedelta(seconds=20),
        "last_settled_at": T0 + timedelta(seconds=5),
    }
    fields.update(changes)
    return RunProgress(**fields)  # type: ignore[arg-type]


def test_a_run_is_complete_only_when_all_of_its_own_work_is_done() -> None:
    assert progress().complete
    # Every user already had both projections, but this run refreshed none of them yet.
    assert not progress(users_refreshed=0, job_counts={"pending": 30}).complete
    # One job waits for its retry: not complete, and the problem says so.
    waiting = progress(job_counts={"completed": 29, "pending": 1}, jobs_waiting_retry=1)
    assert not waiting.complete
    assert any("1 of them waiting to retry" in p for p in waiting.problems())
    cancelled = progress(cancel_requested=True, users_refreshed=4)
    assert (cancelled.complete, cancelled.outcome) == (False, "cancelled")
    assert "refreshed 4 of 10 users" in cancelled.problems()[0]


def test_elapsed_runs_to_the_last_settled_job_once_drained_else_to_now() -> None:
    done = progress()
    assert done.elapsed_seconds == 5.0
    assert done.average_users_per_s == 2.0 and done.average_jobs_per_s == 6.0
    running = progress(job_counts={"completed": 20, "pending": 10}, users_refreshed=6)
    assert running.elapsed_seconds == 20.0


def test_moving_rate_averages_the_last_window_not_the_last_poll() -> None:
    rate = MovingRate(window=10)
    assert rate.users_per_s is None and rate.eta_seconds(100) is None
    rate.add(RateSample(0, 0, 0))  # the trigger
    # Steady 100 users/s and 300 jobs/s with one silent second every five.
    users = jobs = 0
    for second in range(1, 31):
        if second % 5:
            users += 125
            jobs += 375
        rate.add(RateSample(second, users, jobs))
    assert rate.users_per_s == pytest.approx(100, rel=0.15)
    assert rate.jobs_per_s == pytest.approx(300, rel=0.15)
    assert 10 <= rate.span <= 11
    eta = rate.eta_seconds(users + 1000)
    assert eta is not None and 8 < eta < 12


def test_a_late_watcher_starts_from_the_average_since_the_trigger() -> None:
    rate = MovingRate(window=10)
    rate.add(RateSample(0, 0, 0))  # the trigger, a minute before the first poll
    rate.add(RateSample(60, 6000, 18000))
    assert rate.users_per_s == 100 and rate.span == 60
    rate.add(RateSample(61, 6000, 18000))  # a quiet second does not zero the rate
    assert rate.users_per_s == pytest.approx(6000 / 61)


@given(st.lists(st.tuples(st.floats(0.01, 5), st.integers(0, 1000)), min_size=2, max_size=60))
def test_moving_rate_lies_between_the_slowest_and_fastest_step(
    steps: list[tuple[float, int]],
) -> None:
    rate = MovingRate(window=10)
    at, users = 0.0, 0
    rate.add(RateSample(at, users, 0))
    step_rates = []
    for gap, gained in steps:
        at, users = at + gap, users + gained
        rate.add(RateSample(at, users, 0))
        step_rates.append(gained / gap)
    measured = rate.users_per_s
    assert measured is not None
    assert min(step_rates) - 1e-6 <= measured <= max(step_rates) + 1e-6


def test_durations_and_rates_read_well() -> None:
    assert format_duration(None) == "-:--:--"
    assert format_duration(3725.4) == "1:02:05"
    assert format_rate(None) == "-"
    assert format_rate(2.25) == "2.2"
    assert format_rate(12345.6) == "12,346"


@pytest.mark.parametrize(
    ("max_rate", "users"),
    [(250, 500), (0.1, 1), (1e9, DEFAULT_CHUNK_USERS)],
)
def test_a_throttled_step_holds_about_two_seconds_of_work(
    max_rate: float | None, users: int
) -> None:
    assert step_chunk_users(max_rate) == users
    assert step_chunk_users(max_rate, start=40_001) == users


def test_unthrottled_steps_ramp_up_to_the_full_chunk() -> None:
    start, sizes = 1, []
    while start <= 20_000:
        sizes.append(step_chunk_users(None, start))
        start += sizes[-1]
    assert sizes == [500, 500, 1000, 2000, 4000, 5000, 5000, 5000]
    assert step_chunk_users(None, 1_000_001) == DEFAULT_CHUNK_USERS


def test_the_controller_comes_back_just_before_its_scheduled_work_runs_out() -> None:
    assert next_step_delay(None, T0) == 0.0
    assert next_step_delay(T0 + timedelta(seconds=2), T0) == 2 - THROTTLED_LEAD_SECONDS
    assert next_step_delay(T0 - timedelta(seconds=5), T0) == 0.0


def test_each_demo_run_gets_a_label_of_its_own() -> None:
    first = fresh_demo_source(datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC))
    assert first == "demo.20260304T050607Z"
    assert fresh_demo_source(datetime(2026, 3, 4, 5, 6, 8, tzinfo=UTC)) != first


def test_a_watcher_polls_every_second_until_a_poll_gets_expensive() -> None:
    assert next_poll_delay(1.0, 0.01, None) == 1.0
    # A 1 s poll (a 100k run) is followed by 5 s of rest: polling stays a sixth of a core.
    assert next_poll_delay(1.0, 1.0, None) == POLL_COST_FACTOR * 1.0 == 5.0
    assert next_poll_delay(1.0, 1.0, 2.5) == 2.5  # never sleeps past the deadline
    assert next_poll_delay(1.0, 1.0, -3.0) == 0.0
