"""Per-user serialisation: transaction-scoped advisory locks keyed by user id.

The two-int form of the advisory-lock functions takes (namespace, key), so these
locks live apart from the single-bigint keys used elsewhere (migrations). The
key folds the 128-bit uuid into 32 bits; two users that collide only serialise
with each other, which costs a little latency and never correctness.
"""

from __future__ import annotations

from collections.abc import Iterable
from uuid import UUID

from stride.storage.connection import DbConnection

# "STRU": any constant works as long as every stride process uses the same one.
USER_LOCK_NAMESPACE = 0x53545255

# pg_try_advisory_xact_lock: taken inside the handler's transaction and released
# by its commit or rollback, so a crashed worker never leaves a user locked; the
# try_ form returns at once when another transaction holds the user, so a busy
# user's job is deferred instead of blocking a worker.
TRY_LOCK_USERS_SQL = """
SELECT key FROM unnest(%s::int[]) AS key
WHERE pg_try_advisory_xact_lock(%s, key)
"""


# pg_advisory_xact_lock waits for each user a worker holds now (workers only
# try-lock, so they never wait on us and cannot deadlock with us); the keys are
# taken in ascending order (the sorted subquery is scanned as is), so two
# waiting lockers of overlapping users cannot deadlock each other either.
LOCK_USERS_SQL = """
SELECT count(pg_advisory_xact_lock(%s, key))
FROM (SELECT DISTINCT key FROM unnest(%s::int[]) AS key ORDER BY key) AS sorted_keys
"""


def user_lock_key(user_id: UUID) -> int:
    """Fold a uuid into a signed 32-bit advisory-lock key (xor of its four words)."""
    value = user_id.int
    folded = 0
    for _ in range(4):
        folded ^= value & 0xFFFF_FFFF
        value >>= 32
    return folded - (1 << 32) if folded >= (1 << 31) else folded


def try_lock_users(conn: DbConnection, user_ids: Iterable[UUID]) -> set[UUID]:
    """Lock each user for the current transaction if free; returns the users now held."""
    by_key: dict[int, list[UUID]] = {}
    for user_id in set(user_ids):
        by_key.setdefault(user_lock_key(user_id), []).append(user_id)
    if not by_key:
        return set()
    rows = conn.execute(TRY_LOCK_USERS_SQL, (list(by_key), USER_LOCK_NAMESPACE))
    return {user_id for (key,) in rows.fetchall() for user_id in by_key[key]}


def lock_users(conn: DbConnection, user_ids: Iterable[UUID]) -> None:
    """Lock each user for the current transaction, waiting while a worker holds one."""
    keys = sorted({user_lock_key(user_id) for user_id in user_ids})
    if keys:
        conn.execute(LOCK_USERS_SQL, (USER_LOCK_NAMESPACE, keys))
