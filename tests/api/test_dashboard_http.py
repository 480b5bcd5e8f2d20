"""/admin over real HTTP against a real `stride serve`: sessions, CSRF, headers, the forms.

The browser tests (tests/browser) drive the same pages through Chromium; these
check what a browser would not show: status codes, cookies, headers, and what an
attacker's requests get.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest

from stride.storage.tokens import revoke_token
from tests.api.conftest import ApiServer, add_user, new_token, scalar
from tests.conftest import wait_until
from tests.populations import make_population

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    match = CSRF.search(html)
    assert match, "no CSRF field in the page"
    return match.group(1)


def sign_in(api: ApiServer, token: str, next_path: str = "/admin/backfill") -> httpx.Response:
    """Sign a fresh client in; returns the sign-in POST's response (with its cookies)."""
    with api.client(follow_redirects=False) as client:
        form = client.get("/admin/signin")
        assert form.status_code == 200
        return client.post(
            "/admin/signin",
            data={"csrf_token": csrf_of(form.text), "token": token, "next": next_path},
        )


@pytest.fixture
def operator_token(shared_database: str) -> str:
    return new_token(shared_database, operator=True)[1]


@pytest.fixture
def session(api: ApiServer, operator_token: str) -> Iterator[httpx.Client]:
    """A client signed in with an operator token."""
    with api.client(follow_redirects=False) as client:
        form = client.get("/admin/signin")
        answer = client.post(
            "/admin/signin", data={"csrf_token": csrf_of(form.text), "token": operator_token}
        )
        assert answer.status_code == 303, answer.text
        yield client


def page_csrf(client: httpx.Client, path: str = "/admin/queue") -> str:
    page = client.get(path)
    assert page.status_code == 200, page.text
    return csrf_of(page.text)


def test_pages_polls_and_actions_need_a_session(api: ApiServer) -> None:
    with api.client(follow_redirects=False) as anonymous:
        page = anonymous.get("/admin/queue?x=1")
        assert page.status_code == 303
        assert page.headers["location"] == "/admin/signin?next=%2Fadmin%2Fqueue%3Fx%3D1"
        assert anonymous.get("/admin").headers["location"] == "/admin/backfill"
        poll = anonymous.get("/admin/live/backfill")
        assert poll.status_code == 401 and poll.json()["error"] == "signed_out"
        action = anonymous.post("/admin/queue/retry-type", data={"job_type": "x"})
        assert action.status_code == 403
        assert "session has ended" in action.text
    with api.client(follow_redirects=False, cookies={"stride_admin_session": "forged"}) as forged:
        assert forged.get("/admin/queue").status_code == 303


def test_sign_in_takes_operator_tokens_only(api: ApiServer, shared_database: str) -> None:
    _, user_token = new_token(shared_database)
    refused = sign_in(api, user_token)
    assert refused.status_code == 403 and "user token" in refused.text
    assert "stride_admin_session" not in refused.headers.get("set-cookie", "")

    bad = sign_in(api, "stride_0123456789abcdef_" + "A" * 43)
    assert bad.status_code == 401 and "not valid" in bad.text
    assert sign_in(api, "not a token").status_code == 401

    expired_user = add_user(shared_database)
    _, expired = new_token(
        shared_database,
        expired_user,
        operator=True,
        expires_at=datetime.now(UTC) - timedelta(minutes=1),
    )
    assert sign_in(api, expired).status_code == 401

    _, operator = new_token(shared_database, operator=True)
    with api.client(follow_redirects=False) as client:
        # No sign-in cookie, or a field that does not match it: refused (login CSRF).
        lone = client.post("/admin/signin", data={"csrf_token": "x" * 43, "token": operator})
        assert lone.status_code == 403
        client.get("/admin/signin")
        mismatched = client.post("/admin/signin", data={"csrf_token": "y" * 43, "token": operator})
        assert mismatched.status_code == 403
        assert "stride_admin_session" not in client.cookies


def test_session_cookie_is_httponly_samesite_strict(api: ApiServer, operator_token: str) -> None:
    answer = sign_in(api, operator_token, next_path="/admin/queue")
    assert answer.status_code == 303 and answer.headers["location"] == "/admin/queue"
    cookies = [v for k, v in answer.headers.multi_items() if k == "set-cookie"]
    session = next(c for c in cookies if c.startswith("stride_admin_session="))
    attributes = {a.strip().lower() for a in session.split(";")[1:]}
    assert {"httponly", "samesite=strict", "path=/admin"} <= attributes
    assert "secure" not in attributes  # plain http here; set over https
    assert any(c.startswith("stride_admin_signin=") and "max-age=0" in c.lower() for c in cookies)
    # 256 random bits, and only their digest in the table.
    value = session.split(";")[0].split("=", 1)[1].strip('"')
    assert len(value) >= 43


def test_sign_in_never_redirects_off_the_dashboard(api: ApiServer, operator_token: str) -> None:
    for target in ("//evil.example/admin", "https://evil.example/", "/admin\\@evil.example"):
        answer = sign_in(api, operator_token, next_path=target)
        assert answer.status_code == 303 and answer.headers["location"] == "/admin/backfill"


def test_every_action_needs_the_sessions_csrf_token(
    api: ApiServer, session: httpx.Client, operator_token: str, shared_database: str
) -> None:
    token = page_csrf(session)
    for path, fields in (
        ("/admin/queue/retry-type", {"job_type": "nothing.here"}),
        ("/admin/queue/retry", {"job_id": "1"}),
        ("/admin/backfill/trigger", {"source": "csrf-test"}),
        ("/admin/backfill/cancel", {"source": "csrf-test"}),
        ("/admin/backfill/verify", {"sample": "1"}),
        ("/admin/signout", {}),
    ):
        missing = session.post(path, data=fields)
        assert missing.status_code == 403, (path, missing.text)
        assert "CSRF" in missing.text
        wrong = session.post(path, data={**fields, "csrf_token": token[:-2] + "xx"})
        assert wrong.status_code == 403, path
    # Another session's token does not work in this one.
    other = sign_in(api, operator_token)
    other_client = api.client(follow_redirects=False, cookies=dict(other.cookies))
    with other_client:
        foreign = csrf_of(other_client.get("/admin/queue").text)
    assert foreign != token
    assert (
        session.post(
            "/admin/queue/retry-type", data={"job_type": "x", "csrf_token": foreign}
        ).status_code
        == 403
    )
    # Nothing above reached the database: no run was triggered.
    runs = "SELECT count(*) FROM backfill_runs WHERE source = 'csrf-test'"
    assert scalar(shared_database, runs) == 0
    # A JSON body is not a form: its token does not count.
    as_json = session.post("/admin/queue/retry-type", json={"job_type": "x", "csrf_token": token})
    assert as_json.status_code == 403
    # With the token: done, and the next page says so once.
    done = session.post("/admin/queue/retry-type", data={"job_type": "x", "csrf_token": token})
    assert done.status_code == 303 and done.headers["location"] == "/admin/queue#dead"
    follow = session.get("/admin/queue")
    assert "Retried 0 dead or failed x jobs." in follow.text
    assert "Retried 0" not in session.get("/admin/queue").text


def test_sign_out_and_revocation_end_the_session(api: ApiServer, shared_database: str) -> None:
    _, token = new_token(shared_database, operator=True)
    first = sign_in(api, token)
    cookie = {"stride_admin_session": first.cookies["stride_admin_session"]}
    with api.client(follow_redirects=False, cookies=cookie) as client:
        assert client.get("/admin/queue").status_code == 200
        out = client.post("/admin/signout", data={"csrf_token": page_csrf(client)})
        assert out.status_code == 303 and out.headers["location"] == "/admin/signin?signed_out=1"
        assert "max-age=0" in out.headers["set-cookie"].lower()
    # The old cookie replayed after sign-out: the session is gone on the server.
    with api.client(follow_redirects=False, cookies=cookie) as replay:
        assert replay.get("/admin/queue").status_code == 303

    second = sign_in(api, token)
    cookie = {"stride_admin_session": second.cookies["stride_admin_session"]}
    with api.client(follow_redirects=False, cookies=cookie) as client:
        assert client.get("/admin/queue").status_code == 200
        with psycopg.connect(shared_database, autocommit=True) as conn:
            token_id = token.split("_")[1]
            assert revoke_token(conn, token_id) == "revoked"
        assert client.get("/admin/queue").status_code == 303
        assert client.get("/admin/live/queue").status_code == 401


def test_pages_send_strict_headers_and_their_server_time(session: httpx.Client) -> None:
    for path in ("/admin/backfill", "/admin/queue", "/admin/users", "/admin/live/queue"):
        answer = session.get(path)
        assert answer.status_code == 200, path
        csp = answer.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert answer.headers["x-frame-options"] == "DENY"
        assert answer.headers["cache-control"] == "no-store"
        assert re.fullmatch(r"app;dur=\d+\.\d", answer.headers["server-timing"])
        if path != "/admin/live/queue":
            # Scripts only from files, never inline; nothing from another host.
            scripts = re.findall(r"<script[^>]*>", answer.text)
            assert scripts and all('src="/admin/static/' in s for s in scripts)
            assert "http://" not in answer.text.replace(str(session.base_url), "")
            assert "https://" not in answer.text
    script = session.get("/admin/static/dashboard.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert session.get("/admin/static/dashboard.css").headers["content-type"].startswith("text/css")
    assert session.get("/admin/static/missing.js").status_code == 404


def test_dashboard_stays_out_of_the_openapi_document(api: ApiServer) -> None:
    with api.client() as client:
        paths = client.get("/openapi.json").json()["paths"]
    assert not [p for p in paths if p.startswith("/admin")]


def test_forms_trigger_verify_retry_and_show_users(
    session: httpx.Client, shared_database: str
) -> None:
    with psycopg.connect(shared_database, autocommit=True) as conn:
        users = make_population(conn, 5)
    csrf = page_csrf(session, "/admin/backfill")
    # Labels are shown escaped, never as markup.
    source = "dash <img src=x onerror=alert(1)> " + uuid.uuid4().hex[:6]
    triggered = session.post("/admin/backfill/trigger", data={"source": source, "csrf_token": csrf})
    assert triggered.status_code == 303
    page = session.get(triggered.headers["location"])
    assert "Triggered run" in page.text and "users snapshotted" in page.text
    assert "<img src=x" not in page.text and "&lt;img src=x onerror=alert(1)&gt;" in page.text
    assert 'data-run-state="running"' in page.text
    again = session.post("/admin/backfill/trigger", data={"source": source, "csrf_token": csrf})
    assert "already in flight" in session.get(again.headers["location"]).text

    blank = session.post("/admin/backfill/trigger", data={"source": "  ", "csrf_token": csrf})
    assert "Give the run a source label" in session.get(blank.headers["location"]).text
    slow = session.post(
        "/admin/backfill/trigger", data={"source": "s", "max_rate": "-1", "csrf_token": csrf}
    )
    assert "positive number" in session.get(slow.headers["location"]).text

    # Cancel, after the confirmation page.
    confirm = session.get("/admin/backfill/cancel", params={"source": source})
    assert confirm.status_code == 200 and "Yes, cancel this run" in confirm.text
    cancelled = session.post("/admin/backfill/cancel", data={"source": source, "csrf_token": csrf})
    after = session.get(cancelled.headers["location"])
    assert "Cancelled 1 pending job of dash &lt;img" in after.text
    assert 'data-run-state="cancelled"' in after.text

    verified = session.post("/admin/backfill/verify", data={"sample": "3", "csrf_token": csrf})
    assert verified.status_code == 303 and verified.headers["location"].endswith("#verify")
    shown = session.get(verified.headers["location"]).text
    assert "Verified 3 random users" in shown and "data-drift-count" in shown
    too_many = session.post("/admin/backfill/verify", data={"sample": "5000", "csrf_token": csrf})
    assert "whole number from 1 to 1000" in session.get(too_many.headers["location"]).text

    # Retry one dead job.
    dead = scalar(
        shared_database,
        "INSERT INTO background_jobs (job_type, status, attempt, completed_at, error_message)"
        " VALUES ('dash.test', 'dead', 6, now(), 'boom') RETURNING id",
    )

    # The page shows a snapshot at most a poll old: wait for the row as a browser would.
    def queue_with_dead_job() -> str:
        text = session.get("/admin/queue").text
        return text if f'data-job-id="{dead}"' in text else ""

    queue = wait_until(queue_with_dead_job, timeout=30, what="the dead job on the queue page")
    assert "boom" in queue
    job = session.get(f"/admin/jobs/{dead}")
    assert job.status_code == 200 and "data-last-error>boom<" in job.text
    assert f"Retry job {dead}" in job.text
    assert session.get("/admin/jobs/999999999").status_code == 404
    assert session.get("/admin/jobs/x1").status_code == 422
    retried = session.post("/admin/queue/retry", data={"job_id": str(dead), "csrf_token": csrf})
    assert f"Job {dead} is pending again." in session.get(retried.headers["location"]).text
    assert scalar(shared_database, "SELECT status FROM background_jobs WHERE id = %s", (dead,)) == (
        "pending"
    )
    twice = session.post(
        "/admin/queue/retry", data={"job_id": str(dead), "csrf_token": csrf, "back": "job"}
    )
    assert twice.headers["location"] == f"/admin/jobs/{dead}"
    again = session.get(twice.headers["location"]).text
    assert "was not retried" in again and "data-job-status>pending<" in again

    # The user page.
    user = users[1]
    found = session.get("/admin/users", params={"user_id": str(user)})
    assert found.status_code == 200 and f"data-user-id>{user}<" in found.text
    assert "Latest events" in found.text
    missing = session.get("/admin/users", params={"user_id": str(uuid.uuid4())})
    assert missing.status_code == 404 and "data-user-missing" in missing.text
    assert session.get("/admin/users", params={"user_id": "nope"}).status_code == 422


def test_live_endpoints_answer_regions_and_charts(session: httpx.Client) -> None:
    backfill = session.get("/admin/live/backfill").json()
    assert set(backfill) == {"as_of", "regions", "charts"}
    assert set(backfill["regions"]) == {
        "run_region",
        "reports_region",
        "models_region",
        "history_region",
    }
    queue: dict[str, Any] = session.get("/admin/live/queue").json()
    assert set(queue["regions"]) == {
        "summary_region",
        "counts_region",
        "workers_region",
        "dead_region",
    }
    chart = queue["charts"]["queue"]
    assert chart["bucket_seconds"] == 5.0 and chart["lines"][0]["label"] == "all jobs/s"
    bad = session.get("/admin/live/backfill", params={"source": "a\x01b"})
    assert bad.status_code == 422
