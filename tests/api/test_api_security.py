"""Security against a real server: tokens, cross-user access, operator routes, rate limits."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import (
    STRIDE,
    WHEN,
    ApiServer,
    add_user,
    new_token,
    running_server,
    scalar,
)
from tests.conftest import wait_until

PROTECTED = [
    ("GET", "/v1/me"),
    ("GET", "/v1/projections"),
    ("GET", "/v1/projections/objective_state/active"),
    ("POST", "/v1/events"),
    ("POST", "/v1/admin/backfills"),
    ("GET", "/v1/admin/backfills/manual.objective_backfill"),
    ("DELETE", "/v1/admin/backfills/manual.objective_backfill"),
    ("POST", "/v1/admin/verifications"),
    ("GET", "/v1/admin/queue"),
    ("POST", "/v1/admin/queue/retry-dead"),
]
OPERATOR_ONLY = [route for route in PROTECTED if route[1].startswith("/v1/admin")]


def _call(http: httpx.Client, method: str, path: str) -> httpx.Response:
    body = {"source": "s"} if path == "/v1/admin/backfills" else {}
    if method == "POST":
        return http.post(path, json=body)
    return http.request(method, path)


def _assert_401(answer: httpx.Response, error: str | None) -> None:
    assert answer.status_code == 401, answer.text
    challenge = answer.headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="stride"')
    if error:
        assert f'error="{error}"' in challenge
    assert answer.json()["error"] == "unauthorized"


def test_every_v1_route_needs_a_token(api: ApiServer) -> None:
    with api.client() as http:
        for method, path in PROTECTED:
            _assert_401(_call(http, method, path), None)
        # Not bearer, or an empty bearer, is the same as none.
        for header in ("Basic dXNlcjpwYXNz", "Bearer"):
            _assert_401(http.get("/v1/me", headers={"Authorization": header}), None)


@pytest.mark.parametrize(
    "token",
    [
        "nonsense",
        "stride_0123456789abcdef_" + "A" * 43,  # well-formed, never issued
        "stride_0123456789abcdef_" + "A" * 42 + "'",
        "stride_' OR '1'='1_" + "A" * 43,
        "stride_0123456789abcdef_" + "A" * 4000,
    ],
)
def test_bad_tokens_are_401(api: ApiServer, token: str) -> None:
    with api.client(token) as http:
        _assert_401(http.get("/v1/me"), "invalid_token")


def test_a_real_id_with_a_wrong_secret_is_401(api: ApiServer, shared_database: str) -> None:
    _, token = new_token(shared_database)
    forged = token[: -len("x")] + ("B" if token[-1] != "B" else "C")
    with api.client(forged) as http:
        _assert_401(http.get("/v1/me"), "invalid_token")
    with api.client(token) as http:
        assert http.get("/v1/me").status_code == 200


def test_expired_token_is_401(api: ApiServer, shared_database: str) -> None:
    past = datetime.now(UTC) - timedelta(seconds=1)
    _, token = new_token(shared_database, expires_at=past)
    with api.client(token) as http:
        answer = http.get("/v1/me")
    _assert_401(answer, "invalid_token")
    assert "expired" in answer.json()["message"]


def test_token_expiring_while_cached_is_refused_from_then_on(
    api: ApiServer, shared_database: str
) -> None:
    soon = datetime.now(UTC) + timedelta(seconds=1.5)
    _, token = new_token(shared_database, expires_at=soon)
    with api.client(token) as http:
        assert http.get("/v1/me").status_code == 200
        wait_until(lambda: http.get("/v1/me").status_code == 401, timeout=10, what="expiry")


def test_revoked_token_is_refused_at_once_even_when_cached(
    api: ApiServer, shared_database: str
) -> None:
    _, token = new_token(shared_database)
    token_id = token.split("_")[1]
    with api.client(token) as http:
        assert http.get("/v1/me").status_code == 200  # now in the server's cache
        revoked = subprocess.run(
            [STRIDE, "tokens", "revoke", token_id, "--database-url", shared_database],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert revoked.returncode == 0, revoked.stderr
        # The revocation's NOTIFY clears the cache; allow for its delivery only.
        wait_until(lambda: http.get("/v1/me").status_code == 401, timeout=2, what="revocation")
        answer = http.get("/v1/me")
    _assert_401(answer, "invalid_token")
    assert "revoked" in answer.json()["message"]


def test_user_token_on_operator_routes_is_403(api: ApiServer, shared_database: str) -> None:
    _, token = new_token(shared_database)
    with api.client(token) as http:
        for method, path in OPERATOR_ONLY:
            answer = _call(http, method, path)
            assert answer.status_code == 403, (path, answer.text)
            assert answer.json()["error"] == "forbidden"
            assert 'error="insufficient_scope"' in answer.headers["www-authenticate"]
    runs = scalar(shared_database, "SELECT count(*) FROM backfill_runs")
    assert runs == 0


def test_a_user_never_sees_another_users_projections(api: ApiServer, shared_database: str) -> None:
    alice, alice_token = new_token(shared_database)
    bob, bob_token = new_token(shared_database)
    scalar(
        shared_database,
        "INSERT INTO projections (user_id, projection_type, key, data) "
        "VALUES (%s, 'objective_state', 'active', '{\"secret\": \"alice\"}') RETURNING 1",
        (alice,),
    )
    with api.client(bob_token) as http:
        assert http.get("/v1/projections/objective_state/active").status_code == 404
        assert http.get("/v1/projections").json() == {"projections": []}
    with api.client(alice_token) as http:
        assert http.get("/v1/projections/objective_state/active").json()["data"] == {
            "secret": "alice"
        }
    assert bob != alice


def test_a_user_cannot_write_for_another_user(api: ApiServer, shared_database: str) -> None:
    victim = add_user(shared_database)
    attacker, token = new_token(shared_database)
    with api.client(token) as http:
        for body in (
            {"event_type": "set.logged", "user_id": str(victim)},
            {"events": [{"event_type": "set.logged", "user_id": str(victim)}]},
            {"event_type": "set.logged", "metadata": {"user_id": str(victim)}},
        ):
            http.post("/v1/events", json=body)
    assert scalar(shared_database, "SELECT count(*) FROM events WHERE user_id = %s", (victim,)) == 0
    # The one accepted body (metadata is free-form) was stored as the attacker's own event.
    assert (
        scalar(shared_database, "SELECT count(*) FROM events WHERE user_id = %s", (attacker,)) == 1
    )


def test_retracting_another_users_event_changes_nothing_of_theirs(
    api: ApiServer, shared_database: str
) -> None:
    _, victim_token = new_token(shared_database)
    _, attacker_token = new_token(shared_database)
    with api.client(victim_token) as http:
        victim_event = http.post(
            "/v1/events", json={"event_type": "set.logged", "timestamp": WHEN}
        ).json()["id"]
    with api.client(attacker_token) as http:
        retraction = {
            "event_type": "event.retracted",
            "data": {"retracted_event_id": victim_event, "retracted_event_type": "set.logged"},
        }
        assert http.post("/v1/events", json=retraction).status_code == 201
        # Nor can the attacker wait on (probe) the victim's event.
        assert (
            http.get(
                "/v1/projections/objective_state/active",
                params={"after_event": victim_event, "timeout": "0s"},
            ).status_code
            == 404
        )


def test_rate_limit_per_token(shared_database: str, tmp_path: Path) -> None:
    _, first = new_token(shared_database)
    _, second = new_token(shared_database)
    with running_server(shared_database, tmp_path, "--rate-limit", "1", "--rate-burst", "3") as api:
        with api.client(first) as http:
            answers = [http.get("/v1/me") for _ in range(4)]
        assert [a.status_code for a in answers] == [200, 200, 200, 429]
        limited = answers[-1]
        assert limited.json()["error"] == "rate_limited"
        assert int(limited.headers["retry-after"]) >= 1
        with api.client(second) as http:
            assert http.get("/v1/me").status_code == 200  # its own bucket
        with api.client() as http:
            assert http.get("/healthz").status_code == 200  # probes are not limited


def test_bodies_are_read_only_for_a_valid_token(api: ApiServer) -> None:
    """No parsing work for anonymous clients: 401 before 413, 415 or 400."""
    with api.client("stride_0123456789abcdef_" + "A" * 43) as http:
        for body, content_type in (
            (b"{" * 10, "application/json"),
            (b'{"a": "' + b"x" * (3 * 1024 * 1024) + b'"}', "application/json"),
            (b"a=b", "text/plain"),
        ):
            answer = http.post("/v1/events", content=body, headers={"Content-Type": content_type})
            _assert_401(answer, "invalid_token")
