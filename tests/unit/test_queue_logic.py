"""Queue and backfill decisions that need no database: backoff, grouping, settling, keys."""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stride.backfill.fanout import fanout_dedup_key
from stride.backfill.trigger import controller_dedup_key
from stride.domain.events import OBJECTIVE_EVENT_TYPES
from stride.domain.job_types import BACKFILL_JOB_TYPE, PROJECTION_UPDATE_JOB_TYPE
from stride.queue.handlers import Registration
from stride.queue.jobs import ClaimedJob, RetryPolicy
from stride.queue.maintenance import leader_idle_timeout
from stride.queue.runner import (
    describe_error,
    group_by_type_and_priority,
    plan_settlement,
    units_of,
)
from stride.queue.user_locks import user_lock_key

LEASED_UNTIL = datetime(2026, 1, 1, tzinfo=UTC)


def job(job_id: int, job_type: str = "t", priority: int = 0) -> ClaimedJob:
    return ClaimedJob(
        id=job_id,
        job_type=job_type,
        payload={},
        user_id=None,
        priority=priority,
        attempt=1,
        max_retries=5,
        locked_by="w/0",
        locked_until=LEASED_UNTIL,
    )


def registration(*, batch: bool) -> Registration:
    return Registration("t", lambda ctx: None, batch=batch, serialize_by_user=False)


# --- retry policy ----------------------------------------------------------------------------


@given(
    attempt=st.integers(min_value=1, max_value=80),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_backoff_grows_exponentially_within_its_cap_and_jitter(attempt: int, seed: int) -> None:
    policy = RetryPolicy(base_seconds=1.5, max_seconds=300, jitter=0.25)
    ceiling = min(300, 1.5 * 2 ** (attempt - 1))
    delay = policy.delay(attempt, random.Random(seed))
    assert ceiling * 0.75 <= delay <= ceiling


@pytest.mark.parametrize(
    ("attempt", "expected"),
    [(-3, 2.0), (0, 2.0), (1, 2.0), (2, 4.0), (5, 32.0), (9, 512.0), (10, 600.0), (10_000, 600.0)],
)
def test_backoff_without_jitter_is_the_ceiling(attempt: int, expected: float) -> None:
    assert RetryPolicy(base_seconds=2, max_seconds=600, jitter=0).delay(attempt) == expected


def test_jitter_spreads_retries_of_jobs_that_failed_together() -> None:
    rng = random.Random(7)
    delays = {RetryPolicy(jitter=0.5).delay(3, rng) for _ in range(50)}
    assert len(delays) == 50
    assert all(4.0 <= d <= 8.0 for d in delays)


# --- grouping a claim ------------------------------------------------------------------------


@given(st.lists(st.tuples(st.sampled_from("abc"), st.integers(-2, 2)), max_size=40))
def test_grouping_keeps_every_job_once_in_claim_order(kinds: list[tuple[str, int]]) -> None:
    claimed = [job(i, t, p) for i, (t, p) in enumerate(kinds)]
    groups = group_by_type_and_priority(claimed)
    assert sorted(j.id for g in groups.values() for j in g) == [j.id for j in claimed]
    for (job_type, priority), members in groups.items():
        assert {(j.job_type, j.priority) for j in members} == {(job_type, priority)}
        assert [j.id for j in members] == sorted(j.id for j in members)
    # Groups come in the order their first job was claimed.
    firsts = [members[0].id for members in groups.values()]
    assert firsts == sorted(firsts)


def test_higher_priority_jobs_of_one_type_form_their_own_group_first() -> None:
    claimed = [job(1, "p", 0), job(2, "p", 0), job(3, "p", -10), job(4, "q", -10), job(5, "p", -10)]
    groups = group_by_type_and_priority(claimed)
    assert {key: [j.id for j in g] for key, g in groups.items()} == {
        ("p", 0): [1, 2],
        ("p", -10): [3, 5],
        ("q", -10): [4],
    }
    assert list(groups) == [("p", 0), ("p", -10), ("q", -10)]


@pytest.mark.parametrize(
    ("batch", "expected"),
    [(True, [[1, 2, 3]]), (False, [[1], [2], [3]]), (None, [[1], [2], [3]])],
    ids=["batch-handler", "single-handler", "no-handler"],
)
def test_units_batch_handlers_together_and_everything_else_alone(
    batch: bool | None, expected: list[list[int]]
) -> None:
    group = [job(1), job(2), job(3)]
    reg = None if batch is None else registration(batch=batch)
    assert [[j.id for j in unit] for unit in units_of(reg, group)] == expected


# --- settling a unit -------------------------------------------------------------------------


def settle_ids(
    unit: Sequence[ClaimedJob], busy: set[int], deferred: dict[int, float]
) -> tuple[list[int], list[tuple[int, float]]]:
    plan = plan_settlement(unit, busy, deferred, busy_delay=lambda: 0.25)
    return [j.id for j in plan.complete], [(j.id, d) for j, d in plan.defer]


@pytest.mark.parametrize(
    ("busy", "deferred", "completed", "later"),
    [
        (set(), {}, [1, 2, 3], []),
        ({2}, {}, [1, 3], [(2, 0.25)]),
        (set(), {3: 60.0}, [1, 2], [(3, 60.0)]),
        ({1}, {3: 5.0}, [2], [(1, 0.25), (3, 5.0)]),
        ({1, 2, 3}, {}, [], [(1, 0.25), (2, 0.25), (3, 0.25)]),
        (set(), {99: 1.0}, [1, 2, 3], []),  # a delay for a job not in the unit changes nothing
    ],
    ids=["all-done", "busy-user", "handler-deferred", "both", "all-busy", "foreign-id"],
)
def test_settle_plan_completes_what_ran_and_defers_busy_and_deferred_jobs(
    busy: set[int],
    deferred: dict[int, float],
    completed: list[int],
    later: list[tuple[int, float]],
) -> None:
    assert settle_ids([job(1), job(2), job(3)], busy, deferred) == (completed, later)


@given(
    n=st.integers(0, 30),
    busy=st.sets(st.integers(0, 29)),
    deferred=st.dictionaries(st.integers(0, 29), st.floats(0, 3600)),
)
def test_settle_plan_settles_each_job_exactly_once(
    n: int, busy: set[int], deferred: dict[int, float]
) -> None:
    unit = [job(i) for i in range(n)]
    completed, later = settle_ids(unit, busy, deferred)
    assert sorted(completed + [i for i, _ in later]) == list(range(n))
    # A busy job never reached the handler, so a handler's delay cannot apply to it.
    assert all(delay == 0.25 for i, delay in later if i in busy)


def test_error_descriptions_are_one_line_with_the_exception_type() -> None:
    assert describe_error(ValueError("bad\n  payload\tfield")) == "ValueError: bad payload field"
    assert describe_error(KeyError()) == "KeyError"


# --- dedup keys ------------------------------------------------------------------------------

SOURCES = st.text(min_size=1, max_size=20)
TYPES = st.sampled_from(OBJECTIVE_EVENT_TYPES)


@given(SOURCES, SOURCES)
def test_controller_keys_differ_exactly_when_sources_differ(first: str, second: str) -> None:
    assert (controller_dedup_key(first) == controller_dedup_key(second)) == (first == second)
    assert controller_dedup_key(first).startswith(f"{BACKFILL_JOB_TYPE}:")


@given(st.tuples(SOURCES, st.uuids(), TYPES), st.tuples(SOURCES, st.uuids(), TYPES))
def test_fanout_keys_identify_source_user_and_event_type(
    first: tuple[str, uuid.UUID, str], second: tuple[str, uuid.UUID, str]
) -> None:
    # Sources may contain ':' and still never make two targets share a key.
    assert (fanout_dedup_key(*first) == fanout_dedup_key(*second)) == (first == second)
    assert fanout_dedup_key(*first).startswith(f"{PROJECTION_UPDATE_JOB_TYPE}:")


# --- locks and leadership --------------------------------------------------------------------


@given(st.uuids())
def test_user_lock_key_is_a_signed_int32(user_id: uuid.UUID) -> None:
    assert -(2**31) <= user_lock_key(user_id) < 2**31


@given(st.floats(min_value=0.01, max_value=3600))
def test_a_live_leader_is_never_timed_out_between_two_rounds(interval: float) -> None:
    # The leader queries once per interval; its session may only be ended after
    # it missed several rounds, and never within the floor.
    assert leader_idle_timeout(interval) >= max(3 * interval, 2.0)
