"""API bearer tokens (table api_tokens, migration 0007): store, list, revoke, look up.

Only a digest of each token's secret is stored; making and checking tokens is
the caller's business (stride.api.tokens). A revocation notifies
TOKENS_CHANNEL in its own statement, so API servers drop cached tokens at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from stride.storage.connection import AsyncDbConnection, DbConnection

TOKENS_CHANNEL = "stride_tokens"

INSERT_TOKEN = """
INSERT INTO api_tokens (id, secret_sha256, user_id, operator, expires_at)
VALUES (%(id)s, %(secret_sha256)s, %(user_id)s, %(operator)s, %(expires_at)s)
RETURNING created_at
"""

SELECT_TOKEN = """
SELECT id, secret_sha256, user_id, operator, created_at, expires_at, revoked_at
FROM api_tokens
WHERE id = %(id)s
"""

SELECT_TOKENS = """
SELECT id, secret_sha256, user_id, operator, created_at, expires_at, revoked_at
FROM api_tokens
ORDER BY created_at, id
"""

# The notification rides in the same statement (one row at most, so one call)
# and is delivered when the revocation commits.
REVOKE_TOKEN = """
WITH revoked AS (
    UPDATE api_tokens SET revoked_at = now()
    WHERE id = %(id)s AND revoked_at IS NULL
    RETURNING id
)
SELECT id, pg_notify('stride_tokens', 'revoked') FROM revoked
"""

TOKEN_EXISTS = "SELECT 1 FROM api_tokens WHERE id = %(id)s"


@dataclass(frozen=True, slots=True)
class StoredToken:
    id: str
    secret_sha256: bytes
    user_id: UUID
    operator: bool
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    def state(self, now: datetime) -> Literal["active", "expired", "revoked"]:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"


def _token(row: Any) -> StoredToken:
    id_, digest, user_id, operator, created_at, expires_at, revoked_at = row
    return StoredToken(id_, bytes(digest), user_id, operator, created_at, expires_at, revoked_at)


def insert_token(
    conn: DbConnection,
    token_id: str,
    secret_sha256: bytes,
    user_id: UUID,
    *,
    operator: bool,
    expires_at: datetime | None,
) -> StoredToken:
    """Store a token's digest; an unknown user raises psycopg.errors.ForeignKeyViolation."""
    row = conn.execute(
        INSERT_TOKEN,
        {
            "id": token_id,
            "secret_sha256": secret_sha256,
            "user_id": user_id,
            "operator": operator,
            "expires_at": expires_at,
        },
    ).fetchone()
    assert row is not None
    return StoredToken(token_id, secret_sha256, user_id, operator, row[0], expires_at, None)


def list_tokens(conn: DbConnection) -> list[StoredToken]:
    """Every token ever issued (revoked and expired ones too), oldest first."""
    return [_token(row) for row in conn.execute(SELECT_TOKENS).fetchall()]


def revoke_token(conn: DbConnection, token_id: str) -> Literal["revoked", "already", "unknown"]:
    """Revoke a token for good; says whether it was revoked now, before, or never existed."""
    with conn.transaction():
        if conn.execute(REVOKE_TOKEN, {"id": token_id}).fetchone() is not None:
            return "revoked"
        exists = conn.execute(TOKEN_EXISTS, {"id": token_id}).fetchone() is not None
    return "already" if exists else "unknown"


async def find_token_async(aconn: AsyncDbConnection, token_id: str) -> StoredToken | None:
    """The stored token with this id, whatever its state."""
    cursor = await aconn.execute(SELECT_TOKEN, {"id": token_id})
    row = await cursor.fetchone()
    return _token(row) if row else None
