"""The retraction rule (stride.domain.events): which id a retraction names, what it retracts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.uuid_spellings import WHITESPACE, retracted_id_values, spellings

from stride.domain.events import (
    RETRACTION_EVENT_TYPE,
    Event,
    parse_uuid_text,
    retracted_event_ids,
    retraction_target,
    without_retracted,
)

USER = UUID(int=7)
T0 = datetime(2026, 5, 1, tzinfo=UTC)
TARGET = UUID("01234567-89ab-cdef-0123-456789abcdef")


@settings(max_examples=300, deadline=None)
@given(st.uuids().flatmap(lambda u: st.tuples(st.just(u), spellings(u))))
def test_every_accepted_spelling_names_its_uuid(case: tuple[UUID, str]) -> None:
    value, spelled = case
    assert retraction_target({"retracted_event_id": spelled}) == value
    # Every form accepted is one Python's own parser reads the same way.
    assert UUID(spelled.strip(WHITESPACE)) == value


@settings(max_examples=500, deadline=None)
@given(retracted_id_values())
def test_what_is_accepted_python_parses_alike(value: object) -> None:
    parsed = retraction_target({"retracted_event_id": value})
    if parsed is not None:
        assert isinstance(value, str)
        assert UUID(value.strip(WHITESPACE)) == parsed


@pytest.mark.parametrize(
    "spelled",
    [
        "01234567-89ab-cdef-0123-456789abcdef",
        "01234567-89AB-CDEF-0123-456789ABCDEF",
        "0123456789abcdef0123456789abcdef",
        "{01234567-89ab-cdef-0123-456789abcdef}",
        "urn:uuid:01234567-89ab-cdef-0123-456789abcdef",
        "urn:uuid:{0123456789abcdef0123456789abcdef}",
        " \t01234567-89ab-cdef-0123-456789abcdef\n",
        "0123-4567-89ab-cdef-0123-4567-89ab-cdef",
    ],
)
def test_accepted_forms(spelled: str) -> None:
    assert parse_uuid_text(spelled) == TARGET


@pytest.mark.parametrize(
    "value",
    [
        None,
        12345678901234567890123456789012,
        ["01234567-89ab-cdef-0123-456789abcdef"],
        "",
        "0123456789abcdef0123456789abcde",  # 31 digits
        "0123456789abcdef0123456789abcdef0",  # 33 digits
        "0123456789abcdef0123456789abcdeg",
        "-0123456789abcdef0123456789abcdef",  # hyphen before the first group of four
        "012-34567-89ab-cdef-0123-456789abcdef",  # hyphen inside a group of four
        "01234567--89ab-cdef-0123-456789abcdef",
        "{01234567-89ab-cdef-0123-456789abcdef",  # unbalanced brace
        "{{01234567-89ab-cdef-0123-456789abcdef}}",
        "{urn:uuid:01234567-89ab-cdef-0123-456789abcdef}",
        "URN:UUID:01234567-89ab-cdef-0123-456789abcdef",
        "uuid:01234567-89ab-cdef-0123-456789abcdef",
        "0x23456789abcdef0123456789abcdef",
        "{ 01234567-89ab-cdef-0123-456789abcdef }",
        "01234567-89ab-cdef-0123-456789abcdef\u00a0",  # not ASCII whitespace
    ],
)
def test_rejected_values_name_nothing(value: Any) -> None:
    assert retraction_target({"retracted_event_id": value}) is None


def test_data_that_is_not_an_object_names_nothing() -> None:
    assert retraction_target(["retracted_event_id"]) is None
    assert retraction_target({}) is None


# --- what a set of retractions retracts ------------------------------------------------------


def event(n: int, event_type: str = "objective.set") -> Event:
    return Event(UUID(int=n), USER, event_type, T0 + timedelta(hours=n), {})


def retraction(n: int, target: UUID | str) -> Event:
    data = {"retracted_event_id": str(target), "retracted_event_type": "objective.set"}
    return Event(UUID(int=n), USER, RETRACTION_EVENT_TYPE, T0 + timedelta(hours=n), data)


A, B = UUID(int=1), UUID(int=2)


@pytest.mark.parametrize(
    ("retractions", "retracted"),
    [
        pytest.param([], set(), id="none"),
        pytest.param([retraction(10, A)], {A}, id="plain"),
        pytest.param([retraction(10, str(A).upper())], {A}, id="spelled upper-case"),
        pytest.param([retraction(10, UUID(int=99))], {UUID(int=99)}, id="unknown id"),
        pytest.param([retraction(10, "not a uuid")], set(), id="unparsable"),
        # A retracted retraction stops retracting ...
        pytest.param([retraction(10, A), retraction(11, UUID(int=10))], {UUID(int=10)}, id="undo"),
        # ... and retracting the undo redoes it.
        pytest.param(
            [retraction(10, A), retraction(11, UUID(int=10)), retraction(12, UUID(int=11))],
            {A, UUID(int=11)},
            id="redo",
        ),
        # A second retraction of the same event still holds when the first is undone.
        pytest.param(
            [retraction(10, A), retraction(11, A), retraction(12, UUID(int=10))],
            {A, UUID(int=10)},
            id="two retractions, one undone",
        ),
        # Cycles cannot come out of the event store; none of their members comes into force.
        pytest.param([retraction(10, UUID(int=10))], set(), id="retracts itself"),
        pytest.param(
            [retraction(10, UUID(int=11)), retraction(11, UUID(int=10)), retraction(12, B)],
            {B},
            id="two retracting each other",
        ),
    ],
)
def test_retracted_event_ids(retractions: list[Event], retracted: set[UUID]) -> None:
    events = [event(1), event(2, "set.logged"), *retractions]
    assert retracted_event_ids(events) == retracted
    kept = without_retracted(events)
    assert [e.id for e in kept] == [e.id for e in (event(1), event(2)) if e.id not in retracted]


def test_without_retracted_orders_by_timestamp_then_id() -> None:
    late, early = event(5), event(3)
    tie = Event(UUID(int=4), USER, "goal.set", early.timestamp)
    assert [e.id for e in without_retracted([late, tie, early])] == [early.id, tie.id, late.id]
