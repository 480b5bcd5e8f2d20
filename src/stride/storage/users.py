"""Users: create one, list them, and tell which of a set of ids exist."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from stride.domain.ids import new_uuid7
from stride.storage.connection import DbConnection

SELECT_KNOWN_USERS = "SELECT id FROM users WHERE id = ANY(%(user_ids)s::uuid[])"

INSERT_USER = "INSERT INTO users (id) VALUES (%(id)s) ON CONFLICT (id) DO NOTHING RETURNING id"

# Ordered by the primary key, so the LIMIT reads the index, not every user.
SELECT_USERS = """
SELECT u.id, u.created_at, (SELECT count(*) FROM events e WHERE e.user_id = u.id)
FROM users u
ORDER BY u.id
LIMIT %(limit)s
"""


SELECT_USER = """
SELECT u.id, u.created_at, (SELECT count(*) FROM events e WHERE e.user_id = u.id)
FROM users u
WHERE u.id = %(user_id)s
"""


class DuplicateUserError(ValueError):
    """`add_user` was given an id that already exists."""

    def __init__(self, user_id: UUID) -> None:
        super().__init__(f"user {user_id} already exists")
        self.user_id = user_id


@dataclass(frozen=True, slots=True)
class UserRow:
    id: UUID
    created_at: datetime
    event_count: int


def add_user(conn: DbConnection, user_id: UUID | None = None) -> UUID:
    """Create a user (a fresh UUIDv7 unless `user_id` is given); a taken id raises."""
    new_id = user_id if user_id is not None else new_uuid7()
    row = conn.execute(INSERT_USER, {"id": new_id}).fetchone()
    if row is None:
        raise DuplicateUserError(new_id)
    created: UUID = row[0]
    return created


def list_users(conn: DbConnection, limit: int = 20) -> list[UserRow]:
    """The first `limit` users in id order, with their event counts.

    Ids stride generates are UUIDv7, so among them id order is creation order;
    an id the caller chose (any UUID) sorts by its value, not by when it was added.
    """
    rows = conn.execute(SELECT_USERS, {"limit": limit}).fetchall()
    return [UserRow(row[0], row[1], row[2]) for row in rows]


def find_user(conn: DbConnection, user_id: UUID) -> UserRow | None:
    """One user with their event count, or None when there is no such user."""
    row = conn.execute(SELECT_USER, {"user_id": user_id}).fetchone()
    return UserRow(row[0], row[1], row[2]) if row else None


def known_users(conn: DbConnection, user_ids: Iterable[UUID]) -> set[UUID]:
    """Which of `user_ids` exist."""
    rows = conn.execute(SELECT_KNOWN_USERS, {"user_ids": sorted(set(user_ids))}).fetchall()
    return {row[0] for row in rows}
