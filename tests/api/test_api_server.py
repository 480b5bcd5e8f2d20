"""The server process itself: probes, metrics, OpenAPI and docs, shutdown, several workers."""

from __future__ import annotations

import re
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql

from stride.storage.migrations import migrate
from tests.api.conftest import WHEN, ApiServer, new_token, running_server
from tests.conftest import wait_until


def test_healthz_and_readyz(api: ApiServer) -> None:
    with api.client() as http:
        assert http.get("/healthz").json() == {"status": "ok"}
        assert http.get("/readyz").json() == {"status": "ready", "problems": []}


def test_readyz_is_503_until_migrations_are_current(
    empty_database_url: str, tmp_path: Path
) -> None:
    with running_server(empty_database_url, tmp_path) as api, api.client() as http:
        answer = http.get("/readyz")
        assert answer.status_code == 503
        problems = answer.json()["problems"]
        assert "migration 0001_core_tables is pending" in problems
        assert http.get("/healthz").status_code == 200
        with psycopg.connect(empty_database_url, autocommit=True) as conn:
            migrate(conn)
        assert http.get("/readyz").status_code == 200


def test_readyz_is_503_while_the_database_is_unreachable_and_recovers(
    database_url: str, server_url: str, tmp_path: Path
) -> None:
    name = psycopg.conninfo.conninfo_to_dict(database_url)["dbname"]
    user, token = new_token(database_url)
    with running_server(database_url, tmp_path) as api, api.client(token) as http:
        assert http.get("/v1/me").status_code == 200
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(sql.Identifier(name))
            )
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )
            try:
                started = time.monotonic()
                answer = http.get("/readyz")
                assert answer.status_code == 503, answer.text
                assert "database not reachable" in answer.json()["problems"][0]
                assert time.monotonic() - started < 5
                events = http.post("/v1/events", json={"event_type": "set.logged"})
                assert events.status_code == 503
                assert events.json()["error"] == "database_unavailable"
            finally:
                admin.execute(
                    sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(sql.Identifier(name))
                )
        wait_until(lambda: http.get("/readyz").status_code == 200, timeout=30, what="recovery")
        assert http.post("/v1/events", json={"event_type": "set.logged"}).status_code == 201
    assert user


def test_metrics_time_requests_by_route_template_and_status(
    api: ApiServer, shared_database: str
) -> None:
    _, token = new_token(shared_database)
    with api.client(token) as http:
        http.get("/v1/projections/objective_state/active")  # 404: none yet
        http.get("/v1/no/such/route")
        text = http.get("/metrics").text
    assert re.search(
        r'stride_http_request_duration_seconds_count\{method="GET",'
        r'route="/v1/projections/\{projection_type\}/\{key\}",status="404"\} [1-9]',
        text,
    ), text
    assert 'route="<unmatched>",status="404"' in text
    assert "stride_http_request_duration_seconds_bucket" in text


def test_openapi_and_a_docs_page_that_loads_nothing_from_elsewhere(api: ApiServer) -> None:
    with api.client() as http:
        document = http.get("/openapi.json").json()
        page = http.get("/docs")
    paths = set(document["paths"])
    assert {
        "/v1/events",
        "/v1/projections",
        "/v1/projections/{projection_type}/{key}",
        "/v1/admin/backfills",
        "/v1/admin/backfills/{source}",
        "/v1/admin/queue",
        "/healthz",
        "/readyz",
    } <= paths
    schemas = document["components"]["schemas"]
    assert {"EventIn", "EventBatchIn", "ProjectionOut", "ErrorOut"} <= set(schemas)
    assert "set.logged" in schemas["EventIn"]["properties"]["event_type"]["enum"]
    assert document["components"]["securitySchemes"]["token"]["scheme"] == "bearer"
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    for path in paths:
        assert path.replace("{", "").split("}")[0][:20].split("{")[0] in html.replace("{", "")
    assert "<script" not in html
    assert not re.search(r"(src|href)=\"?(https?:)?//", html), "external resource in /docs"


def _waiting(http: httpx.Client) -> float:
    match = re.search(
        r"^stride_http_read_your_write_waiting(?:\{[^}]*\})? (\S+)$",
        http.get("/metrics").text,
        re.M,
    )
    return float(match.group(1)) if match else 0.0


def test_sigterm_lets_the_request_in_flight_finish(database_url: str, tmp_path: Path) -> None:
    _, token = new_token(database_url)
    with running_server(database_url, tmp_path) as api:
        with api.client(token) as http:
            event_id = http.post(
                "/v1/events", json={"event_type": "set.logged", "timestamp": WHEN}
            ).json()["id"]
            outcome: dict[str, Any] = {}

            def wait_for_projection() -> None:
                started = time.monotonic()
                with api.client(token) as own:
                    outcome["answer"] = own.get(
                        "/v1/projections/objective_state/active",
                        params={"after_event": event_id, "timeout": "2s"},
                    )
                outcome["seconds"] = time.monotonic() - started

            waiter = threading.Thread(target=wait_for_projection)
            waiter.start()
            wait_until(lambda: _waiting(http) >= 1, timeout=10, what="the request to be waiting")
        api.process.send_signal(signal.SIGTERM)

        def refused() -> bool:
            try:
                httpx.get(f"{api.base_url}/healthz", timeout=1)
            except httpx.TransportError:
                return True
            return False

        wait_until(refused, timeout=10, what="new connections to be refused")
        assert waiter.is_alive(), "the in-flight request should still be running"
        waiter.join(timeout=30)
        assert api.process.wait(timeout=30) == 0
    answer = outcome["answer"]
    assert answer.status_code == 202 and answer.json()["job_status"] == "waiting"
    assert outcome["seconds"] >= 2
    assert "Finished server process" in api.log()


@pytest.mark.slow
def test_several_worker_processes(database_url: str, tmp_path: Path) -> None:
    _, token = new_token(database_url)
    with running_server(database_url, tmp_path, "--workers", "2") as api:
        with api.client(token) as http:
            for _ in range(20):
                assert http.post("/v1/events", json={"event_type": "set.logged"}).status_code == 201
            metrics = http.get("/metrics").text
        counted = re.search(
            r'stride_http_request_duration_seconds_count\{method="POST",route="/v1/events",'
            r'status="201"\} (\S+)',
            metrics,
        )
        assert counted and float(counted.group(1)) == 20  # summed over both processes
        assert api.stop() == 0
    assert api.log().count("Started server process") == 2
