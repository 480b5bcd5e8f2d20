"""Users: create with a generated or given id, list in id order with event counts."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import psycopg
import pytest

from stride.domain.validation import NewEvent
from stride.storage.event_store import append_events
from stride.storage.users import DuplicateUserError, add_user, known_users, list_users

Conn = psycopg.Connection[Any]
WHEN = "2026-03-01T07:30:00Z"


def test_add_user_with_a_given_id_and_a_duplicate(conn: Conn) -> None:
    wanted = UUID("00000000-0000-7000-8000-000000000001")
    assert add_user(conn, wanted) == wanted
    with pytest.raises(DuplicateUserError, match="already exists"):
        add_user(conn, wanted)
    generated = add_user(conn)
    assert generated.version == 7
    listed = list_users(conn, limit=10)
    assert [u.id for u in listed] == [wanted, generated]
    assert [u.event_count for u in listed] == [0, 0]


def test_list_is_in_id_order_not_the_order_users_were_added(conn: Conn) -> None:
    late = add_user(conn, UUID("ffffffff-ffff-7fff-bfff-ffffffffffff"))
    generated = add_user(conn)
    early = add_user(conn, UUID("00000000-0000-4000-8000-000000000000"))
    append_events(conn, [NewEvent(generated, "x", WHEN) for _ in range(3)])
    listed = list_users(conn)
    assert [u.id for u in listed] == [early, generated, late]
    assert [u.event_count for u in listed] == [0, 3, 0]
    assert [u.id for u in list_users(conn, limit=2)] == [early, generated]


def test_known_users_names_the_existing_ones(conn: Conn) -> None:
    alice, bob = add_user(conn), add_user(conn)
    stranger = UUID(int=7)
    assert known_users(conn, [alice, stranger, alice]) == {alice}
    assert known_users(conn, [bob, alice]) == {alice, bob}
    assert known_users(conn, []) == set()
