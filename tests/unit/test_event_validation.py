"""Event validation without a database: each bad field named, JSONL lines parsed strictly."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from uuid import UUID

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stride.domain.validation import (
    MAX_JSON_CHARS,
    MAX_JSON_DEPTH,
    EventBatchError,
    EventValidationError,
    NewEvent,
    event_from_json_line,
    parse_timestamp,
    validate_event,
)

USER = UUID("0190a000-0000-7000-8000-000000000001")
WHEN = "2026-03-01T07:30:00Z"


@pytest.mark.parametrize(
    ("event", "field", "message"),
    [
        (NewEvent("not-a-uuid", "x", WHEN), "user_id", "not a UUID"),
        (NewEvent(42, "x", WHEN), "user_id", "must be a UUID string"),  # type: ignore[arg-type]
        (NewEvent(USER, "", WHEN), "event_type", "empty or blank"),
        (NewEvent(USER, "   ", WHEN), "event_type", "empty or blank"),
        (NewEvent(USER, None, WHEN), "event_type", "must be a string"),  # type: ignore[arg-type]
        (NewEvent(USER, " x", WHEN), "event_type", "leading or trailing whitespace"),
        (NewEvent(USER, "x\x00y", WHEN), "event_type", "NUL character"),
        (NewEvent(USER, "x\ud800", WHEN), "event_type", "unpaired UTF-16 surrogate (U+D800)"),
        (NewEvent(USER, "set\nlogged", WHEN), "event_type", "control character U+000A"),
        (NewEvent(USER, "x" * 256, WHEN), "event_type", "256 characters long; at most 255"),
        (NewEvent(USER, "x", "9999-12-31T23:59:59-12:00"), "timestamp", "outside the range"),
        (NewEvent(USER, "x", "0001-01-01T00:00:00+14:00"), "timestamp", "outside the range"),
        (NewEvent(USER, "x", datetime(1, 1, 1, tzinfo=UTC)), "timestamp", "outside the range"),
        (NewEvent(USER, "x", "2026-03-01T07:30:00"), "timestamp", "naive timestamp"),
        (NewEvent(USER, "x", datetime(2026, 3, 1)), "timestamp", "naive timestamp"),
        (NewEvent(USER, "x", "last tuesday"), "timestamp", "unparseable timestamp"),
        (NewEvent(USER, "x", 1700000000), "timestamp", "must be an ISO 8601 string"),  # type: ignore[arg-type]
        (NewEvent(USER, "x", WHEN, [1, 2]), "data", "must be a JSON object, got array"),
        (NewEvent(USER, "x", WHEN, "{}"), "data", "must be a JSON object, got string"),
        (NewEvent(USER, "x", WHEN, {"v": float("nan")}), "data", "at data.v: nan is not a finite"),
        (NewEvent(USER, "x", WHEN, {"v": [float("inf")]}), "data", "at data.v[0]: inf is not"),
        (
            NewEvent(USER, "x", WHEN, {"v": {"w": 10**400}}),
            "data",
            "at data.v.w: an integer of 401 digits is beyond what a double can hold",
        ),
        (NewEvent(USER, "x", WHEN, {"v": 2**1024}), "data", "beyond what a double can hold"),
        (NewEvent(USER, "x", WHEN, {"v": 10**5000}), "data", "beyond what a double can hold"),
        (NewEvent(USER, "x", WHEN, {"v": object()}), "data", "not JSON-serialisable"),
        (
            NewEvent(USER, "x", WHEN, {"v": "x" * MAX_JSON_CHARS}),
            "data",
            "characters serialised; at most 1,048,576",
        ),
        (NewEvent(USER, "x", WHEN, {"v": "a\x00b"}), "data", "NUL character"),
        (NewEvent(USER, "x", WHEN, {"v": ["\ud800"]}), "data", "unpaired UTF-16 surrogate"),
        (NewEvent(USER, "x", WHEN, {"\x00": 1}), "data", "NUL character"),
        (NewEvent(USER, "x", WHEN, {}, ["k"]), "metadata", "must be a JSON object"),
        (NewEvent(USER, "x", WHEN, {}, {"n": -(10**400)}), "metadata", "at metadata.n: an integer"),
        (
            NewEvent(USER, "x", WHEN, {}, {"idempotency_key": "k" * 513}),
            "metadata.idempotency_key",
            "513 characters long; at most 512",
        ),
        (
            NewEvent(USER, "x", WHEN, {}, {"idempotency_key": 7}),
            "metadata.idempotency_key",
            "must be a string, got number",
        ),
        (
            NewEvent(USER, "x", WHEN, {}, {"idempotency_key": " "}),
            "metadata.idempotency_key",
            "empty or blank",
        ),
    ],
)
def test_each_validation_error_names_its_field(event: NewEvent, field: str, message: str) -> None:
    with pytest.raises(EventValidationError) as caught:
        validate_event(event)
    assert caught.value.field == field
    assert message in caught.value.message


def _nested(depth: int) -> dict[str, object]:
    value: dict[str, object] = {}
    for _ in range(depth - 1):
        value = {"k": value}
    return value


def test_nesting_is_bounded_at_any_depth_without_recursion() -> None:
    assert validate_event(NewEvent(USER, "x", WHEN, _nested(MAX_JSON_DEPTH)))
    for depth in (MAX_JSON_DEPTH + 1, 5_000):
        with pytest.raises(EventValidationError) as caught:
            validate_event(NewEvent(USER, "x", WHEN, _nested(depth)))
        assert caught.value.field == "data"
        assert f"nested deeper than {MAX_JSON_DEPTH} levels" in caught.value.message


def test_numbers_a_double_holds_are_accepted_whatever_their_digits() -> None:
    for number in (2**64, -(2**63) - 1, 10**308, int(1.7976931348623157e308), 5e-324, -0.0):
        assert validate_event(NewEvent(USER, "x", WHEN, {"v": number}))
    with pytest.raises(EventValidationError):
        validate_event(NewEvent(USER, "x", WHEN, {"v": 2**1024 - 2**970}))  # rounds to inf


def test_the_timestamp_is_stored_in_utc() -> None:
    # PostgreSQL refuses the sub-minute offsets Python accepts; the instant is what counts.
    odd = datetime(2026, 3, 1, tzinfo=timezone(timedelta(microseconds=1)))
    valid = validate_event(NewEvent(USER, "x", odd))
    assert valid.timestamp == odd and valid.timestamp.utcoffset() == timedelta(0)


def test_messages_never_carry_raw_surrogates_or_whole_huge_values() -> None:
    for event in (
        NewEvent("\udcff" * 1000, "x", WHEN),
        NewEvent(USER, " \udcff", WHEN),
        NewEvent(USER, "x", "\udcff" * 1000),
    ):
        with pytest.raises(EventValidationError) as caught:
            validate_event(event)
        str(caught.value).encode("utf-8")
        assert len(str(caught.value)) < 300


def test_a_valid_event_is_serialised_for_the_insert() -> None:
    valid = validate_event(
        NewEvent(
            str(USER),
            "set.logged",
            "2026-03-01T09:30:00+02:00",
            {"reps": 5},
            {"idempotency_key": "k"},
        )
    )
    assert valid.user_id == USER
    assert valid.timestamp == datetime(2026, 3, 1, 7, 30, tzinfo=UTC)
    assert json.loads(valid.data_json) == {"reps": 5}
    assert json.loads(valid.metadata_json) == {"idempotency_key": "k"}
    assert valid.idempotency_key == "k"


def test_escaped_text_that_is_not_a_nul_or_surrogate_is_fine() -> None:
    # The fast path looks for \u0000 / \ud8.. in the JSON text; a literal backslash-u is data.
    valid = validate_event(NewEvent(USER, "x", WHEN, {"note": "\\u0000 and é"}))
    assert json.loads(valid.data_json) == {"note": "\\u0000 and é"}


def test_missing_metadata_is_an_empty_object_without_a_key() -> None:
    valid = validate_event(NewEvent(USER, "x", WHEN))
    assert (valid.metadata_json, valid.idempotency_key) == ("{}", None)


def test_parse_timestamp_keeps_the_instant_and_its_offset() -> None:
    moment = parse_timestamp(" 2026-03-01T09:30:00+02:00 ")
    assert moment == datetime(2026, 3, 1, 7, 30, tzinfo=UTC)
    assert moment.utcoffset() == timedelta(hours=2)
    aware = datetime(2026, 3, 1, tzinfo=timezone(timedelta(hours=-5)))
    assert parse_timestamp(aware) is aware


def test_batch_error_lists_records_in_order_and_counts_them() -> None:
    errors = [
        EventValidationError("timestamp", "bad").at(4),
        EventValidationError("data", "bad").at(1),
    ]
    batch = EventBatchError(errors, total=6)
    assert [e.index for e in batch.errors] == [1, 4]
    assert str(batch).startswith("2 of 6 events rejected: record 1: data: bad")


def test_batch_error_message_names_the_first_ten_only() -> None:
    batch = EventBatchError([EventValidationError("data", "bad").at(i) for i in range(12)], 12)
    assert "record 9:" in str(batch) and "record 10:" not in str(batch)
    assert str(batch).endswith("; and 2 more")


LINE = {"user_id": str(USER), "event_type": "set.logged", "timestamp": WHEN, "data": {}}


def test_a_json_line_becomes_a_new_event() -> None:
    event = event_from_json_line(json.dumps({**LINE, "metadata": {"idempotency_key": "k"}}))
    assert event == NewEvent(str(USER), "set.logged", WHEN, {}, {"idempotency_key": "k"})
    assert event_from_json_line(json.dumps(LINE).encode()).metadata is None


@pytest.mark.parametrize(
    ("line", "field", "message"),
    [
        (b"{oops", "line", "invalid JSON"),
        (b'{"user_id": NaN}', "line", "NaN is not valid JSON"),
        (b'{"user_id": "\xff"}', "line", "not valid UTF-8"),
        (b"[" * 5000 + b"]" * 5000, "line", "nested deeper than"),
        (b'{"data": ' * 5000 + b"{}" + b"}" * 5000, "line", "nested deeper than"),
        (b"[1, 2]", "line", "expected a JSON object, got array"),
        (json.dumps({k: v for k, v in LINE.items() if k != "data"}).encode(), "data", "missing"),
        (json.dumps({**LINE, "extra": 1}).encode(), "extra", "unknown field"),
    ],
)
def test_each_bad_json_line_names_its_problem(line: bytes, field: str, message: str) -> None:
    with pytest.raises(EventValidationError) as caught:
        event_from_json_line(line)
    assert caught.value.field == field
    assert message in caught.value.message


hostile_text = st.text(st.characters(exclude_categories=()), max_size=20)
json_lines = st.one_of(
    st.binary(max_size=200),
    hostile_text.map(lambda text: text.encode("utf-8", "surrogatepass")),
    st.builds(
        lambda key, value: json.dumps({**LINE, key: value}).encode(),
        st.sampled_from(["user_id", "event_type", "timestamp", "data", "metadata"]),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | hostile_text,
            lambda children: (
                st.lists(children, max_size=3) | st.dictionaries(hostile_text, children, max_size=3)
            ),
            max_leaves=10,
        ),
    ),
)


@settings(max_examples=300, deadline=None)
@given(json_lines)
def test_a_line_is_an_event_or_a_named_rejection_never_another_exception(line: bytes) -> None:
    try:
        validate_event(event_from_json_line(line))
    except EventValidationError as exc:
        assert exc.field and exc.message
        str(exc).encode("utf-8")
