"""The dashboard's pure parts: throughput series, snapshots, sessions, forms, formatting."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from starlette.requests import Request

from stride.api.dashboard import views
from stride.api.dashboard.forms import FormError, read_form, whole_number
from stride.api.dashboard.series import BucketSeries, floor_to_bucket
from stride.api.dashboard.sessions import safe_next, session_digest, tokens_match
from stride.api.dashboard.snapshots import SnapshotCache

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Row:
    start: datetime
    job_type: str
    jobs: int
    users: int


@dataclass(frozen=True)
class Batch:
    since: datetime
    observed_at: datetime
    buckets: list[Row]


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


# --- series ----------------------------------------------------------------------------


def test_floor_to_bucket_aligns_like_date_bin() -> None:
    assert floor_to_bucket(at(7.9), 2.0) == at(6)
    assert floor_to_bucket(at(8), 2.0) == at(8)
    assert floor_to_bucket(at(4.99), 5.0) == at(0)


def test_series_counts_only_complete_buckets_and_fills_gaps_with_zero() -> None:
    series = BucketSeries(2.0, start=at(0))
    series.merge(
        Batch(at(0), at(9), [Row(at(0), "a", 10, 4), Row(at(4), "a", 6, 2), Row(at(8), "a", 2, 1)])
    )
    # Buckets 0, 2, 4, 6 have elapsed; 8 is still running at 9 s.
    assert series.values() == [5.0, 0.0, 3.0, 0.0]
    assert series.values(users=True) == [2.0, 0.0, 1.0, 0.0]


def test_series_recounts_the_unsettled_tail_and_keeps_the_settled_head() -> None:
    series = BucketSeries(2.0, start=at(0), settle_seconds=4.0)
    series.merge(Batch(at(0), at(20), [Row(at(0), "a", 2, 1), Row(at(16), "a", 4, 1)]))
    # Everything before floor(20 - 4) = 16 is final; the next count starts there.
    assert series.next_since() == at(16)
    # A late commit raised bucket 16 from 4 to 10; bucket 0 is not read again.
    series.merge(Batch(at(16), at(24), [Row(at(16), "a", 10, 3), Row(at(20), "a", 8, 2)]))
    values = series.values()
    assert values[0] == 1.0 and values[8] == 5.0 and values[10] == 4.0
    assert series.next_since() == at(20)


def test_series_window_drops_old_buckets() -> None:
    series = BucketSeries(5.0, start=at(0), window_seconds=20.0)
    series.merge(Batch(at(0), at(60), [Row(at(0), "a", 5, 1), Row(at(50), "a", 10, 1)]))
    assert series.start == at(40)
    assert series.values() == [0.0, 0.0, 2.0, 0.0]  # buckets 40..55; 60 is running


def test_recent_rates_average_the_last_complete_buckets_per_type() -> None:
    series = BucketSeries(2.0, start=at(0))
    rows = [Row(at(s), "a", 20, 10) for s in range(0, 20, 2)] + [Row(at(18), "b", 4, 4)]
    series.merge(Batch(at(0), at(21), rows))
    rates = series.recent_rates(4.0)
    # Buckets 16 and 18: (20 + 24) jobs, (10 + 14) users over 4 s.
    assert rates.jobs_per_s == pytest.approx(11.0)
    assert rates.users_per_s == pytest.approx(6.0)
    assert series.recent_rates(4.0, "b").jobs_per_s == pytest.approx(1.0)
    assert series.job_types() == ["a", "b"]


def test_chart_document_and_last_activity() -> None:
    series = BucketSeries(2.0, start=at(0))
    series.merge(Batch(at(0), at(30), [Row(at(2), "a", 4, 2), Row(at(6), "a", 2, 2)]))
    assert series.last_active() == at(8)
    doc = series.chart([("jobs/s", None, False), ("users/s", None, True)], until=at(6))
    assert doc["points"] == 4
    assert doc["start_ms"] == int(at(0).timestamp() * 1000)
    assert doc["lines"] == [
        {"label": "jobs/s", "values": [0.0, 2.0, 0.0, 1.0]},
        {"label": "users/s", "values": [0.0, 1.0, 0.0, 1.0]},
    ]


def test_long_charts_are_drawn_with_wider_buckets() -> None:
    series = BucketSeries(1.0, start=at(0))
    series.merge(Batch(at(0), at(10), [Row(at(s), "a", s, 1) for s in range(10)]))
    doc = series.chart([("jobs/s", None, False)], max_points=4)
    assert doc["bucket_seconds"] == 3.0 and doc["points"] == 4
    assert doc["lines"][0]["values"] == [1.0, 4.0, 7.0, 9.0]


def test_charts_can_draw_a_trailing_moving_average() -> None:
    series = BucketSeries(1.0, start=at(0))
    series.merge(Batch(at(0), at(4), [Row(at(1), "a", 4, 1), Row(at(3), "a", 8, 1)]))
    doc = series.chart([("jobs/s", None, False)], smooth_buckets=2)
    assert doc["lines"][0]["values"] == [0.0, 2.0, 2.0, 4.0]


def test_series_without_data_has_no_points() -> None:
    series = BucketSeries(2.0, start=at(0))
    assert series.values() == []
    assert series.recent_rates(10).jobs_per_s is None
    assert series.last_active() is None


# --- snapshots -----------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_snapshot_is_computed_once_then_served_and_refreshed_in_the_background() -> None:
    async def scenario() -> None:
        clock = Clock()
        cache = SnapshotCache(clock=clock)
        calls = 0

        async def compute() -> int:
            nonlocal calls
            calls += 1
            return calls

        first = await cache.get(("k",), compute, max_age=1.0)
        assert first is not None and first.value == 1
        assert (await cache.get(("k",), compute, max_age=1.0)).value == 1  # type: ignore[union-attr]
        assert calls == 1
        clock.now = 5.0
        stale = await cache.get(("k",), compute, max_age=1.0)
        assert stale is not None and stale.value == 1  # served at once...
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        fresh = await cache.get(("k",), compute, max_age=1.0)
        assert fresh is not None and fresh.value == 2  # ...refreshed behind it
        assert calls == 2

    asyncio.run(scenario())


def test_snapshot_refresh_is_single_flight_and_waits_only_for_the_first_reader() -> None:
    async def scenario() -> None:
        cache = SnapshotCache()
        release = asyncio.Event()
        calls = 0

        async def compute() -> str:
            nonlocal calls
            calls += 1
            await release.wait()
            return "done"

        assert await cache.get(("slow",), compute, max_age=1.0, wait=0.01) is None
        # A second reader while it computes: not waited for, not computed twice.
        assert await cache.get(("slow",), compute, max_age=1.0, wait=5.0) is None
        # wait=None joins the running computation.
        joined = asyncio.create_task(cache.get(("slow",), compute, max_age=1.0, wait=None))
        await asyncio.sleep(0)
        release.set()
        result = await joined
        assert result is not None and result.value == "done"
        assert calls == 1

    asyncio.run(scenario())


def test_failed_refresh_keeps_the_old_value_and_says_why() -> None:
    async def scenario() -> None:
        clock = Clock()
        cache = SnapshotCache(clock=clock)
        fail = False

        async def compute() -> str:
            if fail:
                raise RuntimeError("database went away")
            return "good"

        await cache.get(("k",), compute, max_age=1.0)
        fail = True
        clock.now = 10.0
        await cache.get(("k",), compute, max_age=1.0)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        kept = cache.peek(("k",))
        assert kept is not None and kept.value == "good"
        assert kept.error == "database went away"

    asyncio.run(scenario())


def test_first_computation_error_propagates() -> None:
    async def scenario() -> None:
        cache = SnapshotCache()

        async def compute() -> str:
            raise ValueError("boom")

        with pytest.raises(ValueError, match="boom"):
            await cache.get(("k",), compute, max_age=1.0)

    asyncio.run(scenario())


def test_slow_computations_refresh_less_often() -> None:
    async def scenario() -> None:
        clock = Clock()
        cache = SnapshotCache(clock=clock)
        calls = 0

        async def compute() -> int:
            nonlocal calls
            calls += 1
            return calls

        await cache.get(("k",), compute, max_age=1.0)
        entry = cache._entries[("k",)]
        entry.snapshot = type(entry.snapshot)(1, entry.snapshot.taken_at, seconds=3.0)
        clock.now = 4.0  # past max_age, but within twice the 3 s it took
        await cache.get(("k",), compute, max_age=1.0)
        await asyncio.sleep(0)
        assert calls == 1

    asyncio.run(scenario())


def test_invalidate_forgets_matching_keys_and_entries_are_capped() -> None:
    async def scenario() -> None:
        cache = SnapshotCache(max_entries=3)

        async def compute() -> int:
            return 1

        for n in range(5):
            await cache.get(("run", n), compute, max_age=1.0)
        assert sum(1 for n in range(5) if cache.peek(("run", n))) == 3
        cache.invalidate(lambda key: key[0] == "run")
        assert all(cache.peek(("run", n)) is None for n in range(5))

    asyncio.run(scenario())


# --- sessions and forms -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/admin/queue", "/admin/queue"),
        ("/admin/backfill?source=a%20b", "/admin/backfill?source=a%20b"),
        (None, "/admin/backfill"),
        ("https://evil.example/admin", "/admin/backfill"),
        ("//evil.example/admin", "/admin/backfill"),
        ("/admin\\@evil.example", "/admin/backfill"),
        ("/admin/\r\nSet-Cookie: x", "/admin/backfill"),
        ("/v1/projections", "/admin/backfill"),
        ("javascript:alert(1)", "/admin/backfill"),
    ],
)
def test_safe_next_only_goes_to_dashboard_paths(target: str | None, expected: str) -> None:
    assert safe_next(target) == expected


def test_tokens_match() -> None:
    assert tokens_match("abc", "abc")
    assert not tokens_match("abd", "abc")
    assert not tokens_match(None, "abc")
    assert not tokens_match("", "abc")
    assert not tokens_match("\udcff", "abc")
    assert session_digest("x") != session_digest("y") and len(session_digest("x")) == 32


def _request(body: bytes, content_type: str = "application/x-www-form-urlencoded") -> Request:
    chunks = [body[i : i + 7] for i in range(0, len(body), 7)] or [b""]

    async def receive() -> dict[str, Any]:
        chunk = chunks.pop(0) if chunks else b""
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/admin/x",
        "headers": [(b"content-type", content_type.encode())],
    }
    return Request(scope, receive)


def test_read_form() -> None:
    async def scenario() -> None:
        form = await read_form(_request(b"a=1&b=caf%C3%A9+x&a=2&empty="))
        assert form == {"a": "1", "b": "café x", "empty": ""}
        with pytest.raises(FormError) as wrong_type:
            await read_form(_request(b"{}", "application/json"))
        assert wrong_type.value.status == 415
        with pytest.raises(FormError) as too_big:
            await read_form(_request(b"a=" + b"x" * 100), max_bytes=50)
        assert too_big.value.status == 413
        with pytest.raises(FormError) as not_utf8:
            await read_form(_request(b"a=%FF"))
        assert not_utf8.value.status == 400
        with pytest.raises(FormError) as too_many:
            await read_form(_request(b"&".join(b"f%d=1" % n for n in range(50))))
        assert too_many.value.status == 400

    asyncio.run(scenario())


@pytest.mark.parametrize("value", ["0", "1001", "", "1.5", "-3", "²", " 12x"])
def test_whole_number_refuses(value: str) -> None:
    with pytest.raises(ValueError, match="whole number from 1 to 1000"):
        whole_number(value, name="n", low=1, high=1000)


def test_whole_number_accepts() -> None:
    assert whole_number(" 250 ", name="n", low=1, high=1000) == 250


# --- formatting and view shaping -------------------------------------------------------------


def test_formatting() -> None:
    assert views.number(1234567) == "1,234,567"
    assert views.number(3.25) == "3.25"
    assert views.number(1234.5) == "1,234"  # round half to even, as format() does
    assert views.number(None) == views.BLANK
    assert views.rate(3.14159) == "3.1"
    assert views.rate(2500.4) == "2,500"
    assert views.duration(3725) == "1:02:05"
    assert views.duration(None) == "-:--:--"
    assert views.age(30) == "30.0 s" and views.age(600) == "10.0 min"
    assert views.iso(datetime(2026, 3, 1, 8, 30, tzinfo=UTC)) == "2026-03-01T08:30:00Z"
    assert views.cell("2026-03-01T08:30:00+00:00") == "2026-03-01T08:30:00Z"
    assert views.cell("pending") == "pending"


@dataclass
class FakeRun:
    """The RunProgress fields the panel reads."""

    users_total: int = 1000
    users_refreshed: int = 400
    outcome: str = "running"
    drained: bool = False

    def problems(self) -> list[str]:
        return ["600 users not refreshed"]


def test_run_panel_while_running_divides_what_is_left_by_the_recent_rate() -> None:
    panel = views.run_panel(FakeRun(), users_per_s=50.0, jobs_per_s=150.0)  # type: ignore[arg-type]
    assert panel.state == "running" and panel.running
    assert panel.percent == pytest.approx(40.0)
    assert panel.eta_seconds == pytest.approx(12.0)
    assert (panel.users_per_s, panel.jobs_per_s) == (50.0, 150.0)
    assert panel.problems == []  # said once the run settles
    unknown = views.run_panel(FakeRun(), users_per_s=None, jobs_per_s=None)  # type: ignore[arg-type]
    assert unknown.eta_seconds is None


def test_run_panel_once_settled_shows_the_outcome_and_no_rates() -> None:
    done = FakeRun(users_refreshed=1000, outcome="complete", drained=True)
    panel = views.run_panel(done, users_per_s=80.0, jobs_per_s=240.0)  # type: ignore[arg-type]
    assert panel.state == "complete" and not panel.running
    assert panel.eta_seconds == 0.0 and panel.percent == 100.0
    assert panel.users_per_s is None and panel.jobs_per_s is None
    cancelled = FakeRun(users_refreshed=900, outcome="cancelled", drained=True)
    stopped = views.run_panel(cancelled, users_per_s=None, jobs_per_s=None)  # type: ignore[arg-type]
    assert stopped.state == "cancelled" and stopped.eta_seconds is None
    assert stopped.problems == ["600 users not refreshed"]


@dataclass(frozen=True)
class Count:
    job_type: str
    status: str
    priority: int
    count: int


def test_count_table_pivots_statuses_into_columns() -> None:
    counts = [
        Count("projection.update", "pending", -10, 5),
        Count("projection.update", "completed", -10, 7),
        Count("projection.update", "pending", 0, 2),
        Count("projection.update", "retrying", 0, 1),
        Count("weird", "paused", 0, 1),
    ]
    columns, rows = views.count_table(counts)  # type: ignore[arg-type]
    assert columns == [*views.STATUSES, "paused"]
    assert [(r.job_type, r.priority, r.total) for r in rows] == [
        ("projection.update", 0, 3),
        ("projection.update", -10, 12),
        ("weird", 0, 1),
    ]
    totals = views.totals_by_status(counts)  # type: ignore[arg-type]
    assert totals == {"pending": 7, "retrying": 1, "completed": 7, "paused": 1}
