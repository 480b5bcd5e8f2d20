"""Read-your-write waits that end without the projection: no worker runs in this module."""

from __future__ import annotations

import time
from typing import Any

import httpx

from tests.api.conftest import WHEN, ApiServer, new_token, scalar

OBJECTIVE = {"event_type": "objective.set", "timestamp": WHEN, "data": {"objective_id": "o"}}


def _append(http: httpx.Client, event: dict[str, Any]) -> str:
    answer = http.post("/v1/events", json=event)
    assert answer.status_code == 201, answer.text
    event_id: str = answer.json()["id"]
    return event_id


def _after(http: httpx.Client, event_id: str, timeout: str) -> httpx.Response:
    return http.get(
        "/v1/projections/objective_state/active",
        params={"after_event": event_id, "timeout": timeout},
    )


def test_without_a_worker_the_wait_ends_in_202_with_what_is_stored(
    api: ApiServer, shared_database: str
) -> None:
    _user, token = new_token(shared_database)
    with api.client(token) as http:
        event_id = _append(http, OBJECTIVE)
        started = time.monotonic()
        answer = _after(http, event_id, timeout="300ms")
        elapsed = time.monotonic() - started
    assert answer.status_code == 202
    assert answer.json() == {
        "event_id": event_id,
        "covered": False,
        "job_status": "waiting",
        "projection": None,
    }
    assert 0.3 <= elapsed < 3


def test_a_dead_job_answers_202_stalled_at_once(api: ApiServer, shared_database: str) -> None:
    _user, token = new_token(shared_database)
    with api.client(token) as http:
        event_id = _append(http, OBJECTIVE)
        scalar(
            shared_database,
            "UPDATE background_jobs SET status = 'dead' WHERE payload ->> 'event_id' = %s "
            "RETURNING id",
            (event_id,),
        )
        started = time.monotonic()
        answer = _after(http, event_id, timeout="20s")
    assert answer.status_code == 202
    assert answer.json()["job_status"] == "stalled"
    assert time.monotonic() - started < 5


def test_an_event_without_a_job_row_is_covered(api: ApiServer, shared_database: str) -> None:
    """A completed job that was pruned leaves no row: the event is covered."""
    _, token = new_token(shared_database)
    with api.client(token) as http:
        event_id = _append(http, OBJECTIVE)
        scalar(
            shared_database,
            "DELETE FROM background_jobs WHERE payload ->> 'event_id' = %s RETURNING id",
            (event_id,),
        )
        answer = _after(http, event_id, timeout="5s")
    assert answer.status_code == 404  # covered, and the user has no projection yet
    assert answer.json()["error"] == "not_found"


def test_another_users_event_is_not_found(api: ApiServer, shared_database: str) -> None:
    _, owner = new_token(shared_database)
    _, other = new_token(shared_database)
    with api.client(owner) as http:
        event_id = _append(http, OBJECTIVE)
    with api.client(other) as http:
        answer = _after(http, event_id, timeout="5s")
        unknown = _after(http, "01a228fa-6a76-7000-b52d-5861441a84ca", timeout="5s")
    assert answer.status_code == 404
    assert answer.json()["errors"][0]["field"] == "after_event"
    assert unknown.status_code == 404
    assert (
        unknown.json()["message"].replace("01a228fa-6a76-7000-b52d-5861441a84ca", event_id)
        == answer.json()["message"]
    )
