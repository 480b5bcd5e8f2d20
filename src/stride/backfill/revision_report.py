"""Users per stored revision, per read model output: how far a deploy's logic has spread.

`backfill status` prints it for every user (not only a run's snapshot): after a
complete backfill of the running code every user is on its revision, and a
count on a lower one (or missing) is what `--only-stale` would snapshot.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from stride.projections.registry import READ_MODELS, ReadModel
from stride.storage.connection import DbConnection

# One pass over the outputs' rows (the projections_type_key index narrows it to
# them), grouped by revision; plain reads, no locks beyond ACCESS SHARE.
USERS_PER_REVISION = """
SELECT p.projection_type, p.key, p.revision, count(*)
FROM projections p
JOIN unnest(%(projection_types)s::text[], %(keys)s::text[]) AS o(projection_type, key)
  ON p.projection_type = o.projection_type AND p.key = o.key
GROUP BY p.projection_type, p.key, p.revision
"""

USERS_TOTAL = "SELECT count(*) FROM users"


@dataclass(frozen=True, slots=True)
class OutputRevisions:
    """One output of a read model: users per stored revision, and users without the row."""

    read_model: str
    projection: str  # projection_type/key
    running_revision: int  # what the code asking runs
    users_by_revision: dict[int, int]
    users_missing: int

    @property
    def users_current(self) -> int:
        return self.users_by_revision.get(self.running_revision, 0)

    @property
    def users_behind(self) -> int:
        """Missing, or stored by a lower revision: what --only-stale snapshots."""
        older = sum(n for r, n in self.users_by_revision.items() if r < self.running_revision)
        return older + self.users_missing

    @property
    def users_ahead(self) -> int:
        """Stored by a higher revision than the running code's (newer workers wrote them)."""
        return sum(n for r, n in self.users_by_revision.items() if r > self.running_revision)

    def as_dict(self) -> dict[str, Any]:
        return {
            "read_model": self.read_model,
            "projection": self.projection,
            "running_revision": self.running_revision,
            "users_by_revision": {str(r): n for r, n in sorted(self.users_by_revision.items())},
            "users_missing": self.users_missing,
            "users_current": self.users_current,
            "users_behind": self.users_behind,
            "users_ahead": self.users_ahead,
        }


@dataclass(frozen=True, slots=True)
class RevisionReport:
    users_total: int
    outputs: list[OutputRevisions]

    def rows(self) -> list[tuple[str, str, str, str, str]]:
        """Table rows: read model, projection, revision (marked when running), users, share."""
        rows = []
        for output in self.outputs:
            counts: list[tuple[str, int]] = [
                (
                    f"{revision} (running)"
                    if revision == output.running_revision
                    else str(revision),
                    users,
                )
                for revision, users in sorted(output.users_by_revision.items())
            ]
            if output.running_revision not in output.users_by_revision:
                counts.append((f"{output.running_revision} (running)", 0))
            if output.users_missing:
                counts.append(("missing", output.users_missing))
            for label, users in counts:
                share = f"{users / self.users_total:.1%}" if self.users_total else "-"
                rows.append((output.read_model, output.projection, label, f"{users:,}", share))
        return rows

    def as_dict(self) -> dict[str, Any]:
        return {
            "users_total": self.users_total,
            "outputs": [output.as_dict() for output in self.outputs],
        }


def revision_report(
    conn: DbConnection, read_models: Collection[ReadModel] = READ_MODELS
) -> RevisionReport:
    """Users per stored revision of every output of `read_models` (running code: the registry)."""
    outputs = [(m, o) for m in read_models for o in m.outputs]
    counts: dict[tuple[str, str], dict[int, int]] = {o.row: {} for _, o in outputs}
    rows = conn.execute(
        USERS_PER_REVISION,
        {
            "projection_types": [o.projection_type for _, o in outputs],
            "keys": [o.key for _, o in outputs],
        },
    ).fetchall()
    for projection_type, key, revision, users in rows:
        counts[(projection_type, key)][revision] = users
    total_row = conn.execute(USERS_TOTAL).fetchone()
    users_total = int(total_row[0]) if total_row else 0
    return RevisionReport(
        users_total,
        [
            OutputRevisions(
                read_model=m.name,
                projection=o.name,
                running_revision=o.revision,
                users_by_revision=counts[o.row],
                users_missing=max(0, users_total - sum(counts[o.row].values())),
            )
            for m, o in outputs
        ],
    )
