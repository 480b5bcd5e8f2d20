"""The API's pure pieces: settings parsing, tokens, rate limiting, body checks, coverage."""

from __future__ import annotations

from typing import Any

import pytest

from stride.api.config import ApiSettings, SettingsError, parse_duration, parse_size
from stride.api.errors import batch_index, field_path
from stride.api.limits import RateLimiter, check_json_shape
from stride.api.routes.projections import matches
from stride.api.tokens import mint_token, parse_token, secret_digest, secret_matches
from stride.api.waiting import coverage_of


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("2s", 2.0),
        ("500ms", 0.5),
        ("1.5", 1.5),
        ("2m", 120.0),
        ("90d", 90 * 86400.0),
        (" 3 s ", 3.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "-1s", "2 weeks", "1e3s", "2ss"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_parse_size() -> None:
    assert parse_size("65536") == 65536
    assert parse_size("512KiB") == parse_size("512k") == 512 * 1024
    assert parse_size("2MiB") == parse_size("2mb") == 2 * 1024 * 1024
    with pytest.raises(ValueError):
        parse_size("2GiB")


def test_settings_round_trip_through_the_environment() -> None:
    settings = ApiSettings(
        "postgresql:///x", max_body_bytes=1234, rate_limit=2.5, max_wait_seconds=9
    )
    assert ApiSettings.from_env(settings.to_env()) == settings
    with pytest.raises(SettingsError, match="STRIDE_API_DATABASE_URL"):
        ApiSettings.from_env({})
    with pytest.raises(SettingsError, match="STRIDE_API_MAX_BATCH"):
        ApiSettings.from_env({"STRIDE_API_DATABASE_URL": "x", "STRIDE_API_MAX_BATCH": "many"})
    with pytest.raises(SettingsError, match="max_batch"):
        ApiSettings("x", max_batch=0)


def test_tokens_are_256_bit_and_checked_by_digest() -> None:
    token = mint_token()
    assert parse_token(token.text) == (token.id, token.secret)
    assert len(token.secret) == 43  # 32 bytes, URL-safe base64 without padding
    assert secret_matches(token.secret, token.digest)
    assert not secret_matches(token.secret[:-1] + "A", token.digest) or token.secret[-1] == "A"
    assert secret_digest(token.secret) == token.digest and len(token.digest) == 32
    assert mint_token().secret != token.secret
    for bad in ("", token.text + "x", token.text.replace("stride_", "strid_"), token.id):
        assert parse_token(bad) is None


def test_rate_limiter_refills_at_the_rate() -> None:
    now = [0.0]
    limiter = RateLimiter(rate=2.0, burst=3, clock=lambda: now[0])
    assert [limiter.acquire("t") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.acquire("t") == pytest.approx(0.5)
    assert limiter.acquire("other") == 0.0
    now[0] = 0.5
    assert limiter.acquire("t") == 0.0
    assert limiter.acquire("t") > 0
    now[0] = 100.0
    assert [limiter.acquire("t") for _ in range(3)] == [0.0, 0.0, 0.0]  # capped at the burst
    assert limiter.acquire("t") > 0
    assert RateLimiter.retry_after(0.01) == "1" and RateLimiter.retry_after(2.1) == "3"
    assert RateLimiter(rate=0, burst=1).acquire("t") == 0.0


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


def test_json_shape_names_each_problem_with_its_path() -> None:
    body = {
        "events": [
            {"data": {"ok": "fine"}},
            {"data": {"note": "x" * 11}},
            {"data": {"bad\x00key": 1, "list": ["", "a\x00"]}},
        ]
    }
    problems = check_json_shape(body, max_depth=32, max_string_chars=10)
    assert [(p.index, p.field) for p in problems] == [
        (1, "events[1].data.note"),
        (2, 'events[2].data["bad\\u0000key"]'),
        (2, "events[2].data.list[1]"),
    ]
    deep = check_json_shape({"data": _nested(5)}, max_depth=4, max_string_chars=10)
    assert [(p.field, p.message) for p in deep] == [("data.a.a.a", "nested deeper than 4 levels")]
    assert check_json_shape({"data": _nested(3)}, max_depth=4, max_string_chars=10) == []
    assert check_json_shape(_nested(100_000), max_depth=32, max_string_chars=10)  # no recursion


def test_field_paths() -> None:
    assert field_path(["events", 3, "data", "a b"]) == 'events[3].data["a b"]'
    assert field_path([]) == "body"
    assert batch_index(["events", 3, "x"]) == 3 and batch_index(["data", 3]) is None


@pytest.mark.parametrize(
    ("statuses", "coverage"),
    [
        ([], "covered"),
        ([None], "covered"),
        (["completed"], "covered"),
        (["pending"], "waiting"),
        (["processing"], "waiting"),
        (["failed"], "stalled"),
        (["dead"], "stalled"),
        (["cancelled"], "stalled"),
        (["dead", "completed"], "covered"),
        (["dead", "pending"], "waiting"),
    ],
)
def test_coverage_of(statuses: list[str | None], coverage: str) -> None:
    assert coverage_of(statuses) == coverage


def test_if_none_match() -> None:
    assert matches('"1.5"', '"1.5"') and matches('W/"1.5"', '"1.5"')
    assert matches('"x", "1.5"', '"1.5"') and matches("*", '"1.5"')
    assert not matches(None, '"1.5"') and not matches('"1.6"', '"1.5"')
