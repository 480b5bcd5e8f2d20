"""Prove projections are complete and current: recompute a sample in memory and diff.

A user may *have* projections that an older model computed; a stored
projection only counts as correct when recomputing it now gives the same data.
The recomputation uses the stored advisory's own `generated_at` as its clock,
so time-dependent warnings are compared like for like.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from stride.projections.registry import outputs_of
from stride.readmodels.refresh import recompute_users
from stride.storage.connection import DbConnection

# Fields that record when a projection was computed rather than what it says.
TIME_FIELDS = frozenset({"generated_at"})

SAMPLE_USERS = "SELECT id FROM users ORDER BY random() LIMIT %(n)s"

STORED = """
SELECT user_id, projection_type, key, data, revision
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
class RevisionCheck:
    """The projections of one output stored by one revision (None: missing) that were checked.

    Drift on a lower revision than the running one is expected until a backfill
    rewrites it; drift on the running revision is a real discrepancy.
    """

    projection: str  # projection_type/key
    revision: int | None
    running_revision: int
    checked: int
    drifted: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "projection": self.projection,
            "revision": self.revision,
            "running_revision": self.running_revision,
            "checked": self.checked,
            "drifted": self.drifted,
        }


@dataclass(frozen=True, slots=True)
class VerifyResult:
    users_checked: int
    projections_checked: int
    drifts: list[Drift]
    by_revision: list[RevisionCheck] = field(default_factory=list)


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


def clock_of_stored(stored: Mapping[tuple[str, str], Any]) -> datetime:
    """The clock a user's projections were computed at: the stored advisory's `generated_at`
    (now when there is none), so a recomputation compares time-dependent fields like for
    like."""
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
    revisions: dict[tuple[UUID, str, str], int] = {}
    for user_id, ptype, key, data, revision in conn.execute(STORED, {"user_ids": list(user_ids)}):
        stored[user_id][(ptype, key)] = data
        revisions[(user_id, ptype, key)] = revision
    clocks = {user_id: clock_of_stored(stored[user_id]) for user_id in user_ids}
    recomputed_by_user = recompute_users(conn, user_ids, clocks)
    running = {output.row: output.revision for output in outputs_of()}
    tally: dict[tuple[str, str, int | None], list[int]] = {}
    drifts: list[Drift] = []
    checked = 0
    for user_id in user_ids:
        for (ptype, key), data in sorted(recomputed_by_user[user_id].items()):
            checked += 1
            counts = tally.setdefault((ptype, key, revisions.get((user_id, ptype, key))), [0, 0])
            counts[0] += 1
            if (ptype, key) not in stored[user_id]:
                counts[1] += 1
                drifts.append(Drift(user_id, ptype, key, "<missing>", None, "<projection>"))
                continue
            found = first_difference(stored[user_id][(ptype, key)], data)
            if found:
                counts[1] += 1
                drifts.append(Drift(user_id, ptype, key, *found))
    # Per output, stored revisions in order, missing rows last.
    order = sorted(tally, key=lambda t: (t[0], t[1], t[2] is None, t[2] or 0))
    by_revision = [
        RevisionCheck(
            f"{ptype}/{key}", revision, running[(ptype, key)], *tally[ptype, key, revision]
        )
        for ptype, key, revision in order
    ]
    return VerifyResult(len(user_ids), checked, drifts, by_revision)


def verify_sample(conn: DbConnection, sample: int) -> VerifyResult:
    """Recompute `sample` random users and report any drift."""
    user_ids = [row[0] for row in conn.execute(SAMPLE_USERS, {"n": sample}).fetchall()]
    return verify_users(conn, user_ids)
