"""GET /v1/projections…: reads, ETag/304, and read-your-write with a real worker."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from stride.api.models import ProjectionOut
from tests.api.conftest import WHEN, ApiServer, new_token, running_worker, scalar

OBJECTIVE = {
    "event_type": "objective.set",
    "timestamp": WHEN,
    "data": {"objective_id": "run-10k", "mode": "coach", "primary_goal": {"type": "endurance"}},
}


@pytest.fixture(scope="module")
def worker(shared_database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    with running_worker(shared_database, Path(tmp_path_factory.mktemp("worker"))):
        yield


def _append(http: httpx.Client, event: dict[str, Any]) -> str:
    answer = http.post("/v1/events", json=event)
    assert answer.status_code == 201, answer.text
    event_id: str = answer.json()["id"]
    return event_id


def _after(http: httpx.Client, event_id: str, timeout: str = "10s") -> httpx.Response:
    return http.get(
        "/v1/projections/objective_state/active",
        params={"after_event": event_id, "timeout": timeout},
    )


def test_read_your_write_answers_once_the_projection_covers_the_event(
    api: ApiServer, shared_database: str, worker: None
) -> None:
    _, token = new_token(shared_database)
    with api.client(token) as http:
        event_id = _append(http, OBJECTIVE)
        answer = _after(http, event_id)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["data"]["active_objective"]["objective_id"] == "run-10k"
        assert body["last_event_id"] == event_id and body["revision"] == 1
        # Each later write is seen by the very next read, never an older revision.
        for reps in range(3):
            later = _append(http, {"event_type": "set.logged", "data": {"reps": reps}})
            seen = _after(http, later)
            assert seen.status_code == 200
            assert seen.json()["revision"] == body["revision"] + reps + 1
    status = scalar(
        shared_database,
        "SELECT status FROM background_jobs WHERE payload ->> 'event_id' = %s",
        (event_id,),
    )
    assert status == "completed"


def test_read_your_write_wakes_on_notification_not_on_a_timer(
    api: ApiServer, shared_database: str, worker: None
) -> None:
    _, token = new_token(shared_database)
    with api.client(token) as http:
        _after(http, _append(http, OBJECTIVE))  # warm: the user has projections
        started = time.monotonic()
        answer = _after(http, _append(http, {"event_type": "profile.updated"}), timeout="20s")
        elapsed = time.monotonic() - started
    assert answer.status_code == 200
    assert elapsed < 5, f"took {elapsed:.2f}s"


def test_list_and_get_with_etags(api: ApiServer, shared_database: str, worker: None) -> None:
    _user, token = new_token(shared_database)
    with api.client(token) as http:
        assert http.get("/v1/projections").json() == {"projections": []}
        missing = http.get("/v1/projections/objective_state/active")
        assert missing.status_code == 404
        assert _after(http, _append(http, OBJECTIVE)).status_code == 200

        listed = http.get("/v1/projections")
        assert listed.status_code == 200
        kinds = [(p["type"], p["key"]) for p in listed.json()["projections"]]
        assert kinds == [("objective_advisory", "overview"), ("objective_state", "active")]
        only = http.get("/v1/projections", params={"type": "objective_state"}).json()
        assert [p["type"] for p in only["projections"]] == ["objective_state"]

        one = http.get("/v1/projections/objective_advisory/overview")
        assert one.status_code == 200
        etag = one.headers["etag"]
        body = one.json()
        assert set(body) == {
            "type",
            "key",
            "revision",
            "model_version",
            "updated_at",
            "last_event_id",
            "data",
        }
        assert body["model_version"] == body["data"]["model_version"]
        # Serialised by the route itself: it must still be the declared model.
        assert ProjectionOut.model_validate_json(one.content).key == "overview"
        same = http.get(
            "/v1/projections/objective_advisory/overview", headers={"If-None-Match": etag}
        )
        assert same.status_code == 304 and same.content == b""
        assert same.headers["etag"] == etag
        listed_again = http.get(
            "/v1/projections", headers={"If-None-Match": listed.headers["etag"]}
        )
        assert listed_again.status_code == 304

        # A new write changes both ETags.
        assert _after(http, _append(http, {"event_type": "set.logged"})).status_code == 200
        changed = http.get(
            "/v1/projections/objective_advisory/overview", headers={"If-None-Match": etag}
        )
        assert changed.status_code == 200 and changed.headers["etag"] != etag
        relisted = http.get("/v1/projections", headers={"If-None-Match": listed.headers["etag"]})
        assert relisted.status_code == 200
        # Weak and listed forms match too.
        assert (
            http.get(
                "/v1/projections/objective_advisory/overview",
                headers={"If-None-Match": f'"nope", W/{changed.headers["etag"]}'},
            ).status_code
            == 304
        )


def test_who_am_i(api: ApiServer, shared_database: str) -> None:
    user, token = new_token(shared_database, operator=True)
    with api.client(token) as http:
        body = http.get("/v1/me").json()
    assert body["user_id"] == str(user) and body["operator"] is True
    assert token.startswith(f"stride_{body['token_id']}_")


def test_bad_parameters(api: ApiServer, shared_database: str) -> None:
    _, token = new_token(shared_database)
    with api.client(token) as http:
        cases = {
            "/v1/projections/Objective/active": "projection_type",
            "/v1/projections/objective_state/act ive": "key",
            "/v1/projections/objective_state/active?after_event=42": "after_event",
            "/v1/projections/objective_state/active?after_event="
            "01a228fa-6a76-7000-b52d-5861441a84ca&timeout=soon": "timeout",
            "/v1/projections/objective_state/active?after_event="
            "01a228fa-6a76-7000-b52d-5861441a84ca&timeout=31s": "timeout",
            "/v1/projections?type=%27%3B%20DROP%20TABLE%20events": "type",
        }
        for url, field in cases.items():
            answer = http.get(url)
            assert answer.status_code == 422, (url, answer.text)
            assert [e["field"] for e in answer.json()["errors"]] == [field], url
