"""Pure output rules of the CLI: cell formats, column widths, worker assembly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stride.cli.common import age_text, column_widths, format_cell, iso_time
from stride.queue.status import HeldJobs, WorkersReport, assemble_workers, owner_of

T0 = datetime(2026, 5, 1, 7, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "identifier", "shown"),
    [
        (1234567, False, "1,234,567"),
        (14530, True, "14530"),
        (Decimal("12345.50"), False, "12,345.50"),
        (1234.5, False, "1,234.5"),
        (True, False, "yes"),
        (None, False, ""),
        (
            datetime(2026, 5, 1, 9, 30, 15, 999, tzinfo=timezone(timedelta(hours=2))),
            False,
            "2026-05-01T07:30:15Z",
        ),
        ("inference.objective_backfill", False, "inference.objective_backfill"),
    ],
)
def test_format_cell(value: object, identifier: bool, shown: str) -> None:
    assert format_cell(value, identifier=identifier) == shown


def test_iso_time_and_ages() -> None:
    assert iso_time(T0) == "2026-05-01T07:30:00Z"
    assert [age_text(s) for s in (None, 4.24, 192, 7500, 300000)] == [
        "",
        "4.2s",
        "3m 12s",
        "2h 05m",
        "3d 11h",
    ]


def test_widths_are_natural_when_everything_fits() -> None:
    assert column_widths(["id", "type"], [["7", "projection.update"]], 80) == [2, 17]


def test_widths_keep_words_whole_and_wrap_text() -> None:
    error = "psycopg.errors.UniqueViolation: duplicate key value violates unique constraint"
    widths = column_widths(
        ["id", "job type", "error"], [["123", "inference.objective_backfill", error]], 80
    )
    assert widths is not None
    assert widths[1] == len("inference.objective_backfill")
    assert widths[2] >= len("psycopg.errors.UniqueViolation:")
    assert sum(widths) + 2 * 2 <= 80


def test_widths_give_up_when_words_cannot_sit_side_by_side() -> None:
    user = "0190a000-0000-7000-8000-000000000001"
    assert (
        column_widths(["user", "projection"], [[user, "objective_advisory/overview"]], 60) is None
    )


@given(
    st.lists(
        st.lists(st.text(alphabet="ab .-", max_size=40), min_size=3, max_size=3),
        min_size=1,
        max_size=5,
    ),
    st.integers(min_value=20, max_value=200),
)
def test_widths_never_split_a_word_and_never_exceed_the_width(
    rows: list[list[str]], width: int
) -> None:
    headers = ["a", "b", "c"]
    widths = column_widths(headers, rows, width)
    if widths is None:
        return
    assert sum(widths) + 2 * (len(headers) - 1) <= width
    for index, column_width in enumerate(widths):
        for row in rows:
            assert all(len(word) <= column_width for word in row[index].split())


def test_lease_owners_belong_to_their_worker() -> None:
    assert owner_of("h:1:aa/3", ["h:1:a", "h:1:aa"]) == "h:1:aa"
    assert owner_of("h:1:aa", ["h:1:aa"]) == "h:1:aa"
    assert owner_of("h:1:aab/0", ["h:1:aa"]) is None


def test_workers_are_joined_with_what_their_runners_hold() -> None:
    heartbeats = [
        ("h:1:aa", "h", 1, 2, None, 30.0, T0, T0, 3.0),
        ("h:2:bb", "h", 2, 1, ["projection.update"], 30.0, T0, T0, 95.0),
    ]
    held = [
        HeldJobs("h:1:aa/0", 3, T0, 12.0, T0 + timedelta(seconds=20), True),
        HeldJobs("h:1:aa/1", 1, T0 + timedelta(seconds=5), 7.0, T0 + timedelta(seconds=9), True),
        HeldJobs("old:9:zz/0", 2, T0, 40.0, T0 - timedelta(seconds=1), False),
    ]
    workers = assemble_workers(heartbeats, held)
    assert [(w.worker_id, w.live, w.registered, w.jobs_in_hand) for w in workers] == [
        ("h:1:aa", True, True, 4),
        ("h:2:bb", False, True, 0),
        ("old:9:zz", False, False, 2),
    ]
    first = workers[0]
    assert first.oldest_lease_started_at == T0 and first.oldest_lease_seconds == 12.0
    assert first.next_lease_expiry == T0 + timedelta(seconds=9)

    report = WorkersReport(workers, {"projection.update": 5, "inference.objective_backfill": 1})
    assert report.unclaimed == {}  # the live worker claims every type
    only_b = WorkersReport(workers[1:], {"projection.update": 5})
    assert only_b.unclaimed == {"projection.update": 5}  # its worker is silent
