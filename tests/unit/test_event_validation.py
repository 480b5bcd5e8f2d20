"""Event validation without a database: each bad field named, JSONL lines parsed strictly."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from uuid import UUID

import pytest

from stride.domain.validation import (
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
        (NewEvent(USER, "x", "2026-03-01T07:30:00"), "timestamp", "naive timestamp"),
        (NewEvent(USER, "x", datetime(2026, 3, 1)), "timestamp", "naive timestamp"),
        (NewEvent(USER, "x", "last tuesday"), "timestamp", "unparseable timestamp"),
        (NewEvent(USER, "x", 1700000000), "timestamp", "must be an ISO 8601 string"),  # type: ignore[arg-type]
        (NewEvent(USER, "x", WHEN, [1, 2]), "data", "must be a JSON object, got array"),
        (NewEvent(USER, "x", WHEN, "{}"), "data", "must be a JSON object, got string"),
        (NewEvent(USER, "x", WHEN, {"v": float("nan")}), "data", "not JSON-serialisable"),
        (NewEvent(USER, "x", WHEN, {"v": "a\x00b"}), "data", "NUL character"),
        (NewEvent(USER, "x", WHEN, {"v": ["\ud800"]}), "data", "unpaired UTF-16 surrogate"),
        (NewEvent(USER, "x", WHEN, {"\x00": 1}), "data", "NUL character"),
        (NewEvent(USER, "x", WHEN, {}, ["k"]), "metadata", "must be a JSON object"),
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
