"""The session limits derived from a lease, and how they ride on the connection string."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from psycopg.conninfo import conninfo_to_dict

from stride.queue.sessions import SessionLimits, session_conninfo


@given(st.floats(min_value=0.1, max_value=86400))
def test_limits_follow_the_lease(lease: float) -> None:
    limits = SessionLimits.for_lease(lease)
    lease_ms = lease * 1000
    # A frozen transaction is ended after one lease, not later.
    assert abs(limits.idle_in_transaction_ms - lease_ms) <= 1
    # Lock waits give up well within a lease, but never absurdly early.
    assert 50 <= limits.lock_timeout_ms <= max(50, lease_ms / 4 + 1)
    # A vanished peer is noticed within about a lease (at least one second per probe).
    detect_s = limits.keepalives_idle_s + limits.keepalives_count * limits.keepalives_interval_s
    assert detect_s <= max(lease, 1) * 1.5 + 4
    assert limits.tcp_user_timeout_ms == round(lease_ms)


def test_the_worker_limits_come_after_the_url_options_and_keep_its_parameters() -> None:
    url = "postgresql://app:secret@db.internal:6432/stride?options=-c%20work_mem%3D8MB&sslmode=require"
    params = conninfo_to_dict(session_conninfo(url, SessionLimits.for_lease(30)))
    assert params["host"] == "db.internal" and params["port"] == "6432"
    assert params["user"] == "app" and params["password"] == "secret"
    assert params["sslmode"] == "require"
    assert params["options"].startswith("-c work_mem=8MB ")
    assert "-c idle_in_transaction_session_timeout=30000ms" in params["options"]
    assert "-c lock_timeout=7500ms" in params["options"]
    assert params["keepalives"] == "1" and params["tcp_user_timeout"] == "30000"


@pytest.mark.parametrize("url", ["postgresql:///stride?host=/run/pg", "dbname=stride"])
def test_any_url_form_takes_the_limits(url: str) -> None:
    params = conninfo_to_dict(session_conninfo(url, SessionLimits.for_lease(2)))
    assert params["dbname"] == "stride"
    assert "-c lock_timeout=500ms" in params["options"]
