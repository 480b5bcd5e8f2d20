"""Forward-only plain-SQL migrations shipped in the package (storage/migrations/NNNN_name.sql)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from importlib import resources

import psycopg

from stride.storage.connection import AsyncDbConnection, DbConnection

MIGRATION_FILE = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")

# Any constant works; it only has to be the same in every stride process.
MIGRATION_LOCK_KEY = 0x5354_5244_4D49_4752  # "STRDMIGR"

CREATE_LEDGER = """
CREATE TABLE IF NOT EXISTS stride_migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""


LEDGER_EXISTS = "SELECT to_regclass('stride_migrations') IS NOT NULL"
SELECT_APPLIED_CHECKSUMS = "SELECT version, checksum FROM stride_migrations"


class MigrationError(Exception):
    """A migration failed or an applied one no longer matches its file."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class MigrationStatus:
    version: int
    name: str
    applied_at: datetime | None


def available_migrations() -> list[Migration]:
    """Every migration file shipped in the package, in version order."""
    folder = resources.files("stride.storage") / "migrations"
    found = []
    for entry in folder.iterdir():
        match = MIGRATION_FILE.match(entry.name)
        if match:
            found.append(
                Migration(int(match["version"]), match["name"], entry.read_text(encoding="utf-8"))
            )
    return sorted(found, key=lambda m: m.version)


def _applied(conn: DbConnection) -> dict[int, tuple[str, datetime]]:
    exists = conn.execute("SELECT to_regclass('stride_migrations') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return {}
    rows = conn.execute("SELECT version, checksum, applied_at FROM stride_migrations").fetchall()
    return {version: (checksum, applied_at) for version, checksum, applied_at in rows}


def migrate(conn: DbConnection) -> list[Migration]:
    """Apply pending migrations in one transaction; returns the ones applied.

    Safe to run twice and from several processes at once: the advisory lock
    makes concurrent runners queue up, and the ledger tells them what is done.
    """
    applied_now: list[Migration] = []
    with conn.transaction():
        # Transaction-scoped advisory lock: serialises concurrent migrators and
        # is released on commit or rollback, so a crash never leaves it held.
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
        conn.execute(CREATE_LEDGER)
        applied = _applied(conn)
        for migration in available_migrations():
            if migration.version in applied:
                if applied[migration.version][0] != migration.checksum:
                    raise MigrationError(
                        f"migration {migration.version:04d}_{migration.name} was changed after "
                        "it was applied; add a new migration instead"
                    )
                continue
            try:
                conn.execute(migration.sql.encode())
            except psycopg.Error as exc:
                raise MigrationError(
                    f"migration {migration.version:04d}_{migration.name} failed: {exc}"
                ) from exc
            conn.execute(
                "INSERT INTO stride_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                (migration.version, migration.name, migration.checksum),
            )
            applied_now.append(migration)
    return applied_now


def migration_status(conn: DbConnection) -> list[MigrationStatus]:
    """Each shipped migration with its applied time (None when pending)."""
    applied = _applied(conn)
    return [
        MigrationStatus(m.version, m.name, applied[m.version][1] if m.version in applied else None)
        for m in available_migrations()
    ]


async def migration_problems_async(aconn: AsyncDbConnection) -> list[str]:
    """Why the schema is not current: each shipped migration that is pending or was
    changed after it was applied (empty when current). For readiness probes."""
    exists = await (await aconn.execute(LEDGER_EXISTS)).fetchone()
    applied: dict[int, str] = {}
    if exists and exists[0]:
        rows = await (await aconn.execute(SELECT_APPLIED_CHECKSUMS)).fetchall()
        applied = dict(rows)
    problems = []
    for migration in available_migrations():
        label = f"{migration.version:04d}_{migration.name}"
        if migration.version not in applied:
            problems.append(f"migration {label} is pending")
        elif applied[migration.version] != migration.checksum:
            problems.append(f"migration {label} was changed after it was applied")
    return problems
