"""Hostile and broken input over real HTTP: a clear 4xx naming the field, nothing stored,
and the server keeps serving."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from uuid import UUID

import httpx
import psycopg
import pytest

from tests.api.conftest import WHEN, ApiServer, new_token, scalar

SQL = "x'); DROP TABLE events; --"
CONTROL = "a\x01b\x1bc\x7fd"
ODD_BUT_FINE = "tab\there\nnew line \u2028 ünï 😀 \\ \" ' %s %(x)s $1"


@pytest.fixture
def user(api: ApiServer, shared_database: str) -> Iterator[tuple[UUID, httpx.Client]]:
    user_id, token = new_token(shared_database)
    with api.client(token) as http:
        yield user_id, http
    # Whatever the test sent, the server still answers.
    with api.client() as probe:
        assert probe.get("/healthz").status_code == 200
    assert scalar(shared_database, "SELECT to_regclass('events') IS NOT NULL") is True


def _events(database_url: str, user_id: UUID) -> int:
    count: int = scalar(database_url, "SELECT count(*) FROM events WHERE user_id = %s", (user_id,))
    return count


def _post_raw(http: httpx.Client, body: bytes, content_type: str | None) -> httpx.Response:
    headers = {"Content-Type": content_type} if content_type else {}
    return http.post("/v1/events", content=body, headers=headers)


def test_malformed_json_is_400(user: tuple[UUID, httpx.Client], shared_database: str) -> None:
    user_id, http = user
    for body in (b'{"event_type": "set.logged",', b"{'a': 1}", b"", b"\xff\xfe", b'{"a": NaN}'):
        answer = _post_raw(http, body, "application/json")
        assert answer.status_code in (400, 422), (body, answer.text)
        if body:
            assert answer.status_code == 400 and answer.json()["error"] == "malformed_json"
    assert _events(shared_database, user_id) == 0


def test_wrong_or_missing_content_type_is_415(
    user: tuple[UUID, httpx.Client], shared_database: str
) -> None:
    user_id, http = user
    body = b'{"event_type": "set.logged"}'
    for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
        answer = _post_raw(http, body, content_type)
        assert answer.status_code == 415, answer.text
        assert answer.json()["error"] == "unsupported_media_type"
    assert _post_raw(http, body, "application/json; charset=utf-8").status_code == 201
    assert _events(shared_database, user_id) == 1


def test_body_must_be_an_event_or_a_batch(user: tuple[UUID, httpx.Client]) -> None:
    _, http = user
    cases: dict[str, Any] = {
        "body": [],
        "event_type": {},
        "events": {"events": []},
        "events[0]": {"events": ["set.logged"]},
        "data": {"event_type": "set.logged", "data": [1, 2]},
        "metadata": {"event_type": "set.logged", "metadata": "m"},
        "events[0].surprise": {"events": [{"event_type": "set.logged", "surprise": 1}]},
    }
    for field, body in cases.items():
        answer = http.post("/v1/events", json=body)
        assert answer.status_code == 422, (field, answer.text)
        assert answer.json()["errors"][0]["field"] == field, answer.text


def test_unknown_event_types(user: tuple[UUID, httpx.Client], shared_database: str) -> None:
    user_id, http = user
    for event_type in ("set.Logged", " set.logged", SQL, "x" * 5000, "", CONTROL):
        answer = http.post("/v1/events", json={"event_type": event_type})
        assert answer.status_code == 422, answer.text
        assert answer.json()["errors"][0]["field"] == "event_type"
    assert _events(shared_database, user_id) == 0


def test_nul_anywhere_is_422_naming_the_field(
    user: tuple[UUID, httpx.Client], shared_database: str
) -> None:
    user_id, http = user
    cases = {
        "data.note": {"event_type": "set.logged", "data": {"note": "a\x00b"}},
        'data["k\\u0000"]': {"event_type": "set.logged", "data": {"k\x00": 1}},
        "events[1].metadata.tags[2]": {
            "events": [
                {"event_type": "set.logged"},
                {"event_type": "set.logged", "metadata": {"tags": ["a", "b", "\x00"]}},
            ]
        },
        "idempotency_key": {"event_type": "set.logged", "idempotency_key": "k\x00"},
        "event_type": {"event_type": "set.logged\x00"},
    }
    for field, body in cases.items():
        answer = http.post("/v1/events", json=body)
        assert answer.status_code == 422, (field, answer.text)
        error = answer.json()["errors"][0]
        assert error["field"] == field, answer.text
        assert "NUL" in error["message"]
    # Raw (unescaped) control bytes inside a JSON string are malformed JSON.
    raw = _post_raw(
        http, b'{"event_type": "set.logged", "data": {"a": "x\x00y"}}', "application/json"
    )
    assert raw.status_code == 400
    assert _events(shared_database, user_id) == 0


def test_huge_strings_are_422(user: tuple[UUID, httpx.Client], shared_database: str) -> None:
    user_id, http = user
    huge = "x" * 10_001
    for field, body in {
        "data.note": {"event_type": "set.logged", "data": {"note": huge}},
        "idempotency_key": {"event_type": "set.logged", "idempotency_key": "k" * 201},
        "events[0].data": {"events": [{"event_type": "set.logged", "data": {huge: 1}}]},
    }.items():
        answer = http.post("/v1/events", json=body)
        assert answer.status_code == 422, answer.text
        assert answer.json()["errors"][0]["field"].startswith(field), answer.text
    fits = http.post("/v1/events", json={"event_type": "set.logged", "data": {"n": "x" * 10_000}})
    assert fits.status_code == 201
    assert _events(shared_database, user_id) == 1


def test_deep_nesting(user: tuple[UUID, httpx.Client], shared_database: str) -> None:
    user_id, http = user
    nested: Any = 1
    for _ in range(40):
        nested = {"a": nested}
    answer = http.post("/v1/events", json={"event_type": "set.logged", "data": nested})
    assert answer.status_code == 422
    error = answer.json()["errors"][0]
    assert error["field"].startswith("data.a.a.a") and "nested deeper" in error["message"]
    # Past the parser's own limit: refused as malformed, not a crash.
    very_deep = b'{"event_type": "set.logged", "data": {"a": ' + b"[" * 5000 + b"]" * 5000 + b"}}"
    assert _post_raw(http, very_deep, "application/json").status_code == 400
    shallow: Any = 1
    for _ in range(20):
        shallow = [shallow]
    ok = http.post("/v1/events", json={"event_type": "set.logged", "data": {"a": shallow}})
    assert ok.status_code == 201
    assert _events(shared_database, user_id) == 1


def test_oversize_bodies_are_413(user: tuple[UUID, httpx.Client], shared_database: str) -> None:
    user_id, http = user
    big = b'{"event_type": "set.logged", "data": {"s": "' + b"x" * (3 * 1024 * 1024) + b'"}}'
    declared = _post_raw(http, big, "application/json")
    assert declared.status_code == 413
    assert declared.json()["error"] == "body_too_large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while streaming
        for start in range(0, len(big), 65536):
            yield big[start : start + 65536]

    streamed = http.post(
        "/v1/events", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert streamed.status_code == 413
    assert _events(shared_database, user_id) == 0


def test_bad_timestamps(user: tuple[UUID, httpx.Client]) -> None:
    _, http = user
    for timestamp in ("2026-03-01T07:30:00", "yesterday", 1714550000, SQL, "2026-13-01T00:00:00Z"):
        answer = http.post("/v1/events", json={"event_type": "set.logged", "timestamp": timestamp})
        assert answer.status_code == 422, (timestamp, answer.text)
        assert answer.json()["errors"][0]["field"] == "timestamp"


def test_sql_and_control_characters_in_free_text_are_stored_verbatim(
    user: tuple[UUID, httpx.Client], shared_database: str
) -> None:
    user_id, http = user
    free_text = {SQL: SQL, CONTROL: CONTROL, ODD_BUT_FINE: [ODD_BUT_FINE]}
    event = {
        "event_type": "set.logged",
        "timestamp": WHEN,
        "data": free_text,
        "metadata": free_text,
        "idempotency_key": SQL,
    }
    first = http.post("/v1/events", json=event)
    assert first.status_code == 201, first.text
    with psycopg.connect(shared_database) as conn:
        stored = conn.execute(
            "SELECT data, metadata - 'idempotency_key', metadata ->> 'idempotency_key' "
            "FROM events WHERE id = %s",
            (UUID(first.json()["id"]),),
        ).fetchone()
    assert stored == (free_text, free_text, SQL)
    assert http.post("/v1/events", json=event).json() == {
        "id": first.json()["id"],
        "duplicate": True,
    }
    # Control characters where the API names things (keys, labels) are refused.
    refused = http.post("/v1/events", json={**event, "idempotency_key": CONTROL})
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["field"] == "idempotency_key"
    assert _events(shared_database, user_id) == 1


def test_sql_and_control_characters_in_operator_fields(
    api: ApiServer, shared_database: str
) -> None:
    _, token = new_token(shared_database, operator=True)
    with api.client(token) as http:
        stored = http.post("/v1/admin/backfills", json={"source": SQL})
        assert stored.status_code == 202, stored.text
        assert (
            scalar(shared_database, "SELECT source FROM backfill_runs WHERE source = %s", (SQL,))
            == SQL
        )
        for body in (
            {"source": CONTROL},
            {"source": "s\x00"},
            {"source": "   "},
            {"source": "s" * 201},
        ):
            answer = http.post("/v1/admin/backfills", json=body)
            assert answer.status_code == 422, answer.text
            assert answer.json()["errors"][0]["field"] == "source"
        assert http.get("/v1/admin/backfills/" + httpx.URL(SQL).raw_path.decode()).status_code in (
            200,
            404,
        )
        for path in ("/v1/admin/backfills/a%00b", "/v1/admin/backfills/a%01b"):
            answer = http.get(path)
            assert answer.status_code == 422, answer.text
            assert answer.json()["errors"][0]["field"] == "source"
        retried = http.post("/v1/admin/queue/retry-dead", json={"job_type": SQL})
        assert retried.json() == {"retried": 0}
        assert (
            http.post("/v1/admin/queue/retry-dead", json={"job_type": CONTROL}).status_code == 422
        )
        for sample in (0, -1, 10_001, "ten", 1.5):
            assert http.post("/v1/admin/verifications", json={"sample": sample}).status_code == 422
    assert scalar(shared_database, "SELECT count(*) FROM backfill_runs") == 1
