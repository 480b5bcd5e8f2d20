"""Which backfill source labels have runs: what `backfill status` can report on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from stride.storage.connection import DbConnection

# Newest run first; index backfill_runs_source serves the look-up of one label.
KNOWN_SOURCES_SQL: Final = """
SELECT source FROM backfill_runs GROUP BY source ORDER BY max(created_at) DESC, source
"""
HAS_RUN_SQL: Final = "SELECT EXISTS (SELECT 1 FROM backfill_runs WHERE source = %s)"


@dataclass(frozen=True, slots=True)
class UnknownSource:
    """A label no backfill run has, and the labels that do (newest run first)."""

    source: str
    known: list[str]

    def describe(self, shown: int = 10) -> str:
        if not self.known:
            return f"no backfill was ever triggered for source {self.source!r} (no runs at all)"
        listed = ", ".join(repr(s) for s in self.known[:shown])
        more = len(self.known) - shown
        rest = f" and {more:,} more" if more > 0 else ""
        return (
            f"no backfill was ever triggered for source {self.source!r}; "
            f"sources with runs, newest first: {listed}{rest} (pass one with --source; "
            "`stride backfill history` lists every run)"
        )


def known_sources(conn: DbConnection) -> list[str]:
    """Every source label with a run, the one with the newest run first."""
    return [row[0] for row in conn.execute(KNOWN_SOURCES_SQL).fetchall()]


def unknown_source(conn: DbConnection, source: str) -> UnknownSource | None:
    """None when `source` has a run; else what to tell the operator instead."""
    row = conn.execute(HAS_RUN_SQL, (source,)).fetchone()
    if row is not None and row[0]:
        return None
    return UnknownSource(source, known_sources(conn))
