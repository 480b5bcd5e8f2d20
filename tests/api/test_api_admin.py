"""/v1/admin with an operator token: the backfill from trigger to verified, and the queue."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.api.conftest import STRIDE, WHEN, ApiServer, new_token, running_worker, scalar
from tests.conftest import wait_until


@pytest.fixture
def operator(api: ApiServer, shared_database: str) -> Any:
    _, token = new_token(shared_database, operator=True)
    with api.client(token) as http:
        yield http


def _status(http: httpx.Client, source: str) -> dict[str, Any]:
    answer = http.get(f"/v1/admin/backfills/{quote(source, safe='')}")
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def test_backfill_trigger_status_verify(
    operator: httpx.Client, api: ApiServer, shared_database: str, tmp_path: Path
) -> None:
    for _ in range(3):
        _, token = new_token(shared_database)
        with api.client(token) as http:
            http.post("/v1/events", json={"event_type": "profile.updated", "timestamp": WHEN})
    source = "api/backfill test #1"
    assert operator.get(f"/v1/admin/backfills/{quote(source, safe='')}").status_code == 404
    triggered = operator.post("/v1/admin/backfills", json={"source": source})
    assert triggered.status_code == 202, triggered.text
    body = triggered.json()
    assert body["outcome"] == "enqueued" and body["users"] >= 3
    again = operator.post("/v1/admin/backfills", json={"source": source})
    assert again.status_code == 200
    assert again.json()["outcome"] == "in_flight" and again.json()["job_id"] == body["job_id"]

    with running_worker(shared_database, tmp_path):
        status = wait_until(
            lambda: (s := _status(operator, source))["run"]["complete"] and s,
            timeout=60,
            what="the backfill to complete",
        )
    assert set(status["reports"]) == {
        "backfill_controller_status",
        "backfill_fanout_status",
        "backfill_coverage",
        "backfill_lag",
    }
    assert status["run"]["job_id"] == body["job_id"] and status["run"]["problems"] == []
    # The same document the CLI prints.
    cli = subprocess.run(
        [
            STRIDE,
            "backfill",
            "status",
            "--source",
            source,
            "--json",
            "--database-url",
            shared_database,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    printed = json.loads(cli.stdout)
    # Ages in the lag report move on between the two reads; the rest is identical.
    for name in ("backfill_controller_status", "backfill_fanout_status", "backfill_coverage"):
        assert printed["reports"][name] == status["reports"][name]
    assert (
        printed["reports"]["backfill_lag"]["columns"]
        == status["reports"]["backfill_lag"]["columns"]
    )
    assert printed["run"]["users_total"] == status["run"]["users_total"]

    verified = operator.post("/v1/admin/verifications", json={"sample": 5})
    assert verified.status_code == 200
    assert verified.json()["users_checked"] >= 3 and verified.json()["drifts"] == []


def test_cancel_stops_pending_fan_out(operator: httpx.Client, shared_database: str) -> None:
    new_token(shared_database)
    source = "to-cancel"
    assert operator.post("/v1/admin/backfills", json={"source": source}).status_code == 202
    answer = operator.delete(f"/v1/admin/backfills/{source}")
    assert answer.status_code == 200
    assert answer.json() == {"source": source, "runs_stopped": 1, "jobs_cancelled": 1}
    assert _status(operator, source)["run"]["controller_status"] == "cancelled"


def test_queue_status_and_retry_dead(operator: httpx.Client, shared_database: str) -> None:
    user, _ = new_token(shared_database)
    scalar(
        shared_database,
        "INSERT INTO background_jobs (job_type, status, error_message, completed_at, user_id) "
        "VALUES ('api.test', 'dead', 'boom', now(), %s) RETURNING id",
        (user,),
    )
    status = operator.get("/v1/admin/queue")
    assert status.status_code == 200
    body = status.json()
    assert body["counts"]["api.test"] == {"dead": 1}
    assert any(
        d["job_type"] == "api.test" and d["error_message"] == "boom" for d in body["latest_dead"]
    )
    retried = operator.post("/v1/admin/queue/retry-dead", json={"job_type": "api.test"})
    assert retried.json() == {"retried": 1}
    assert operator.get("/v1/admin/queue").json()["counts"]["api.test"] == {"pending": 1}
    assert operator.post("/v1/admin/queue/retry-dead", json={}).status_code == 200
