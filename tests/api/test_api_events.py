"""POST /v1/events against a real server: single, batch, idempotency, all-or-nothing."""

from __future__ import annotations

from uuid import UUID

from tests.api.conftest import WHEN, ApiServer, new_token, scalar


def _counts(database_url: str, user: UUID) -> tuple[int, int]:
    events = scalar(database_url, "SELECT count(*) FROM events WHERE user_id = %s", (user,))
    jobs = scalar(database_url, "SELECT count(*) FROM background_jobs WHERE user_id = %s", (user,))
    return events, jobs


def test_one_event_is_stored_for_the_token_user_and_enqueues_its_job(
    api: ApiServer, shared_database: str
) -> None:
    user, token = new_token(shared_database)
    event = {"event_type": "set.logged", "timestamp": WHEN, "data": {"reps": 5, "weight_kg": 80}}
    with api.client(token) as http:
        answer = http.post("/v1/events", json=event)
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["duplicate"] is False
    row = scalar(
        shared_database,
        "SELECT row(user_id, event_type, data ->> 'reps') FROM events WHERE id = %s",
        (UUID(body["id"]),),
    )
    assert row == (str(user), "set.logged", "5")
    job = scalar(
        shared_database,
        "SELECT payload ->> 'event_id' FROM background_jobs WHERE user_id = %s",
        (user,),
    )
    assert job == body["id"]


def test_timestamp_defaults_to_now(api: ApiServer, shared_database: str) -> None:
    _, token = new_token(shared_database)
    with api.client(token) as http:
        answer = http.post("/v1/events", json={"event_type": "profile.updated"})
    assert answer.status_code == 201, answer.text
    age = scalar(
        shared_database,
        'SELECT extract(epoch FROM now() - "timestamp") FROM events WHERE id = %s',
        (UUID(answer.json()["id"]),),
    )
    assert abs(float(age)) < 60


def test_resent_idempotency_key_answers_200_with_the_stored_id_and_creates_nothing(
    api: ApiServer, shared_database: str
) -> None:
    user, token = new_token(shared_database)
    event = {"event_type": "set.logged", "timestamp": WHEN, "idempotency_key": "log-1"}
    with api.client(token) as http:
        first = http.post("/v1/events", json=event)
        assert first.status_code == 201, first.text
        before = _counts(shared_database, user)
        again = http.post("/v1/events", json={**event, "data": {"reps": 99}})
    assert again.status_code == 200, again.text
    assert again.json() == {"id": first.json()["id"], "duplicate": True}
    assert _counts(shared_database, user) == before == (1, 1)
    stored_key = scalar(
        shared_database,
        "SELECT metadata ->> 'idempotency_key' FROM events WHERE user_id = %s",
        (user,),
    )
    assert stored_key == "log-1"


def test_the_same_key_for_two_users_is_two_events(api: ApiServer, shared_database: str) -> None:
    event = {"event_type": "set.logged", "timestamp": WHEN, "idempotency_key": "shared"}
    ids = []
    for _ in range(2):
        _, token = new_token(shared_database)
        with api.client(token) as http:
            answer = http.post("/v1/events", json=event)
        assert answer.status_code == 201
        ids.append(answer.json()["id"])
    assert ids[0] != ids[1]


def test_batch_is_stored_in_order_with_duplicates_marked(
    api: ApiServer, shared_database: str
) -> None:
    user, token = new_token(shared_database)
    events = [
        {
            "event_type": "set.logged",
            "timestamp": WHEN,
            "data": {"reps": i},
            "idempotency_key": f"b{i % 3}",
        }
        for i in range(5)
    ]
    with api.client(token) as http:
        answer = http.post("/v1/events", json={"events": events})
        assert answer.status_code == 201, answer.text
        results = answer.json()["events"]
        assert [r["duplicate"] for r in results] == [False, False, False, True, True]
        assert results[3]["id"] == results[0]["id"] and results[4]["id"] == results[1]["id"]
        resent = http.post("/v1/events", json={"events": events[:3]})
    assert resent.status_code == 200
    assert [r["id"] for r in resent.json()["events"]] == [r["id"] for r in results[:3]]
    assert _counts(shared_database, user) == (3, 3)


def test_batch_is_all_or_nothing_and_names_every_bad_event(
    api: ApiServer, shared_database: str
) -> None:
    user, token = new_token(shared_database)
    events = [
        {"event_type": "set.logged", "timestamp": WHEN},
        {"event_type": "set.logged", "timestamp": "yesterday"},
        {"event_type": "set.logged", "timestamp": WHEN},
        {"event_type": "made.up", "timestamp": WHEN},
    ]
    with api.client(token) as http:
        answer = http.post("/v1/events", json={"events": events})
    assert answer.status_code == 422, answer.text
    body = answer.json()
    assert body["error"] == "validation_failed"
    assert [(e["index"], e["field"]) for e in body["errors"]] == [
        (1, "events[1].timestamp"),
        (3, "events[3].event_type"),
    ]
    assert "made.up" in body["errors"][1]["message"]
    assert _counts(shared_database, user) == (0, 0)


def test_batch_cap(api: ApiServer, shared_database: str) -> None:
    user, token = new_token(shared_database)
    events = [{"event_type": "set.logged", "timestamp": WHEN}] * 1001
    with api.client(token) as http:
        over = http.post("/v1/events", json={"events": events})
        at_cap = http.post("/v1/events", json={"events": events[:1000]})
    assert over.status_code == 422
    assert over.json()["errors"][0]["field"] == "events"
    assert "1,000" in over.json()["message"]
    assert at_cap.status_code == 201
    assert _counts(shared_database, user) == (1000, 1000)


def test_conflicting_idempotency_keys_are_refused(api: ApiServer, shared_database: str) -> None:
    user, token = new_token(shared_database)
    event = {
        "event_type": "set.logged",
        "idempotency_key": "a",
        "metadata": {"idempotency_key": "b", "client": "app"},
    }
    with api.client(token) as http:
        answer = http.post("/v1/events", json={"events": [event]})
    assert answer.status_code == 422
    assert answer.json()["errors"][0] == {
        "field": "events[0].metadata.idempotency_key",
        "index": 0,
        "message": "differs from idempotency_key; give the key once",
    }
    assert _counts(shared_database, user) == (0, 0)


def test_metadata_is_stored(api: ApiServer, shared_database: str) -> None:
    user, token = new_token(shared_database)
    event = {"event_type": "set.logged", "metadata": {"client": "watch", "build": 7}}
    with api.client(token) as http:
        assert http.post("/v1/events", json=event).status_code == 201
    stored = scalar(shared_database, "SELECT metadata FROM events WHERE user_id = %s", (user,))
    assert stored == {"client": "watch", "build": 7}
