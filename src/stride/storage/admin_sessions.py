"""Dashboard sign-in sessions (table admin_sessions, migration 0010).

A session is opened with an operator token and lives at most until its own
expiry, and no longer than that token: the lookup joins api_tokens, so a
revoked or expired token ends every session opened with it. Only the SHA-256
of the session id (the cookie's value) is stored. Minting ids and checking
CSRF tokens is the caller's business (stride.api.dashboard.sessions).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg.types.json import Jsonb

from stride.storage.connection import AsyncDbConnection, DbConnection

# Expired sessions are removed whenever a new one opens (index admin_sessions_expires).
DELETE_EXPIRED_SESSIONS = "DELETE FROM admin_sessions WHERE expires_at <= now()"

INSERT_SESSION = """
INSERT INTO admin_sessions (id_sha256, token_id, csrf_token, expires_at)
VALUES (%(digest)s, %(token_id)s, %(csrf_token)s, %(expires_at)s)
"""

# The session with its token's state; expired sessions are not found.
SELECT_SESSION = """
SELECT s.csrf_token, s.expires_at, s.flash IS NOT NULL,
       t.id, t.user_id, t.operator, t.expires_at, t.revoked_at
FROM admin_sessions s
JOIN api_tokens t ON t.id = s.token_id
WHERE s.id_sha256 = %(digest)s AND s.expires_at > now()
"""

DELETE_SESSION = "DELETE FROM admin_sessions WHERE id_sha256 = %(digest)s"

SET_FLASH = "UPDATE admin_sessions SET flash = %(flash)s WHERE id_sha256 = %(digest)s"

# Read and clear in one statement. FOR UPDATE: two page loads racing for the
# same message serialise here, so it is shown once.
POP_FLASH = """
UPDATE admin_sessions AS s SET flash = NULL
FROM (
    SELECT id_sha256, flash FROM admin_sessions
    WHERE id_sha256 = %(digest)s AND flash IS NOT NULL
    FOR UPDATE
) AS old
WHERE s.id_sha256 = old.id_sha256
RETURNING old.flash
"""

SET_VERIFICATION = """
UPDATE admin_sessions SET last_verification = %(result)s WHERE id_sha256 = %(digest)s
"""

SELECT_VERIFICATION = "SELECT last_verification FROM admin_sessions WHERE id_sha256 = %(digest)s"


@dataclass(frozen=True, slots=True)
class StoredSession:
    """A live session and the token that opened it (whose state the caller checks)."""

    csrf_token: str
    expires_at: datetime
    has_flash: bool
    token_id: str
    user_id: UUID
    operator: bool
    token_expires_at: datetime | None
    token_revoked_at: datetime | None

    def token_usable(self, now: datetime) -> bool:
        """The opening token is still an operator token, not revoked and not expired."""
        return (
            self.operator
            and self.token_revoked_at is None
            and (self.token_expires_at is None or self.token_expires_at > now)
        )


def insert_session(
    conn: DbConnection, digest: bytes, token_id: str, csrf_token: str, expires_at: datetime
) -> None:
    """Store a new session (and drop expired ones) in one transaction."""
    with conn.transaction():
        conn.execute(DELETE_EXPIRED_SESSIONS)
        conn.execute(
            INSERT_SESSION,
            {
                "digest": digest,
                "token_id": token_id,
                "csrf_token": csrf_token,
                "expires_at": expires_at,
            },
        )


async def find_session_async(aconn: AsyncDbConnection, digest: bytes) -> StoredSession | None:
    """The unexpired session with this id digest, else None."""
    cursor = await aconn.execute(SELECT_SESSION, {"digest": digest})
    row = await cursor.fetchone()
    return StoredSession(*row) if row else None


def delete_session(conn: DbConnection, digest: bytes) -> bool:
    """End a session; False when there was none."""
    return conn.execute(DELETE_SESSION, {"digest": digest}).rowcount == 1


def set_flash(conn: DbConnection, digest: bytes, message: str) -> None:
    """The message the session's next page shows once."""
    conn.execute(SET_FLASH, {"digest": digest, "flash": message})


async def pop_flash_async(aconn: AsyncDbConnection, digest: bytes) -> str | None:
    """The session's pending message, cleared as it is read."""
    cursor = await aconn.execute(POP_FLASH, {"digest": digest})
    row = await cursor.fetchone()
    return str(row[0]) if row else None


def set_verification(conn: DbConnection, digest: bytes, result: dict[str, Any]) -> None:
    conn.execute(SET_VERIFICATION, {"digest": digest, "result": Jsonb(result)})


async def get_verification_async(aconn: AsyncDbConnection, digest: bytes) -> dict[str, Any] | None:
    cursor = await aconn.execute(SELECT_VERIFICATION, {"digest": digest})
    row = await cursor.fetchone()
    return dict(row[0]) if row and row[0] is not None else None
