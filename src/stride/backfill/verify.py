"""Prove projections are complete and current: recompute a sample in memory and diff.

A user may *have* projections that an older model computed; a stored
projection only counts as correct when recomputing it now gives the same data.
The recomputation uses the stored advisory's own `generated_at` as its clock,
so time-dependent warnings are compared like for like.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from stride.readmodels.refresh import recompute_users
from stride.storage.connection import DbConnection

# Fields that record when a projection was computed rather than what it says.
TIME_FIELDS = frozenset({"generated_at"})

SAMPLE_USERS = "SELECT id FROM users ORDER BY random() LIMIT %(n)s"

STORED = """
SELECT user_id, projection_type, key, data
FROM projections
WHERE user_id = ANY(%(user_ids)s)
"""


@dataclass(frozen=True, slots=True)
class Drift:
    user_id: UUID
    projection_type: str
    key: str
    path: str
    stored: Any
    recomputed: Any

    def as_dict(self) -> dict[str, Any]:
        return {
            "user_id": str(self.user_id),
            "projection": f"{self.projection_type}/{self.key}",
            "path": self.path,
            "stored": self.stored,
            "recomputed": self.recomputed,
        }


@dataclass(frozen=True, slots=True)
class VerifyResult:
    users_checked: int
    projections_checked: int
    drifts: list[Drift]


def first_difference(stored: Any, recomputed: Any, path: str = "") -> tuple[str, Any, Any] | None:
    """The first (path, stored, recomputed) where two JSON values differ, keys in sorted order."""
    if isinstance(stored, Mapping) and isinstance(recomputed, Mapping):
        for key in sorted(set(stored) | set(recomputed)):
            if key in TIME_FIELDS:
                continue
            where = f"{path}.{key}" if path else str(key)
            if key not in stored or key not in recomputed:
                return where, stored.get(key, "<absent>"), recomputed.get(key, "<absent>")
            found = first_difference(stored[key], recomputed[key], where)
            if found:
                return found
        return None
    if isinstance(stored, list) and isinstance(recomputed, list):
        for index, (left, right) in enumerate(zip(stored, recomputed, strict=False)):
            found = first_difference(left, right, f"{path}[{index}]")
            if found:
                return found
        if len(stored) != len(recomputed):
            return f"{path}.length", len(stored), len(recomputed)
        return None
    if stored != recomputed:
        return path or "<root>", stored, recomputed
    return None


def _clock_of(stored: Mapping[tuple[str, str], Any]) -> datetime:
    advisory = stored.get(("objective_advisory", "overview"))
    generated = advisory.get("generated_at") if isinstance(advisory, Mapping) else None
    if isinstance(generated, str):
        try:
            return datetime.fromisoformat(generated)
        except ValueError:
            pass
    return datetime.now(UTC)


def verify_users(conn: DbConnection, user_ids: Sequence[UUID]) -> VerifyResult:
    """Recompute every registered projection of `user_ids` and diff against storage."""
    stored: dict[UUID, dict[tuple[str, str], Any]] = {u: {} for u in user_ids}
    for user_id, ptype, key, data in conn.execute(STORED, {"user_ids": list(user_ids)}):
        stored[user_id][(ptype, key)] = data
    clocks = {user_id: _clock_of(stored[user_id]) for user_id in user_ids}
    recomputed_by_user = recompute_users(conn, user_ids, clocks)
    drifts: list[Drift] = []
    checked = 0
    for user_id in user_ids:
        for (ptype, key), data in sorted(recomputed_by_user[user_id].items()):
            checked += 1
            if (ptype, key) not in stored[user_id]:
                drifts.append(Drift(user_id, ptype, key, "<missing>", None, "<projection>"))
                continue
            found = first_difference(stored[user_id][(ptype, key)], data)
            if found:
                drifts.append(Drift(user_id, ptype, key, *found))
    return VerifyResult(len(user_ids), checked, drifts)


def verify_sample(conn: DbConnection, sample: int) -> VerifyResult:
    """Recompute `sample` random users and report any drift."""
    user_ids = [row[0] for row in conn.execute(SAMPLE_USERS, {"n": sample}).fetchall()]
    return verify_users(conn, user_ids)
