"""Preview what the running code would change, before a deploy's backfill rewrites anything.

Recomputes users with the running code (the two halves of
stride.readmodels.recompute_users: the same load and folds a backfill runs)
and compares with what is stored, without writing a projection: which users
would change, per read model output and per top-level field; per advisory
warning code, who would gain or lose it; how the resolved training modality
and the active objective's source would move; and a few example users per
kind of change, to look at with `stride projections show`.

Time fields (`generated_at`) are ignored, and each user is recomputed at the
clock of their stored advisory (as `backfill verify` does), so only changes of
logic show, not the passing of time.

Safe on a busy database: users are read in batches, keyset over users.id, each
batch in its own short READ ONLY transaction (no snapshot held for the whole
preview, nothing locked beyond ACCESS SHARE), optionally throttled. One
process: helper threads read the next batches while the folds run on this one.
"""

from __future__ import annotations

import gc
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal, TypeVar
from uuid import UUID

import orjson
from psycopg.types.json import Jsonb

from stride.backfill.verify import TIME_FIELDS, clock_of_stored
from stride.domain.events import Event
from stride.projections.registry import READ_MODELS, ReadModel, outputs_of
from stride.readmodels.refresh import fold_users, load_events_for_read_models
from stride.readmodels.revisions import running_revisions
from stride.storage.connection import DbConnection, connect

DEFAULT_SAMPLE = 1000
DEFAULT_BATCH_USERS = 1000
DEFAULT_EXAMPLES = 3
# Batches read at once, each on a connection of its own: on a busy server one
# batch's queries wait for CPU while another's run.
DEFAULT_READERS = 2

STATE: Final = ("objective_state", "active")
ADVISORY: Final = ("objective_advisory", "overview")
NONE: Final = "(none)"  # no stored projection, or no value in it

# Each batch is one short transaction: READ ONLY, so the server refuses any
# write whatever a future change to this module does; REPEATABLE READ, so a
# user's stored rows and events come from one snapshot; no JIT (it would spend
# about a second compiling each batch's event query, several times what the
# query takes) and no parallel workers (a preview leaves a busy server's cores
# to its traffic); work_mem enough for a batch's largest sort or hash (a
# plan without the events index's order sorts about 5 MB per 1,000 demo
# users) to stay in memory rather than spill to disk.
BATCH_TRANSACTION = (
    "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY; "
    "SET LOCAL jit = off; "
    "SET LOCAL max_parallel_workers_per_gather = 0; "
    "SET LOCAL work_mem = '32MB'"
)

COUNT_USERS = "SELECT count(*) FROM users"

# Keyset pagination: the next batch of users after the last one seen, a range
# scan of the primary key, so a batch costs the same at the end of the table as
# at its start.
FIRST_USERS = "SELECT id FROM users ORDER BY id LIMIT %(limit)s"
NEXT_USERS = "SELECT id FROM users WHERE id > %(after)s ORDER BY id LIMIT %(limit)s"

# A uniform random sample: every id is read once (16 bytes each) and the
# sample sorted, then walked in batches like the whole table.
SAMPLE_USERS = "SELECT id FROM users ORDER BY random() LIMIT %(n)s"

# The stored rows of the batch's users, data as text so orjson parses them.
STORED = """
SELECT user_id, projection_type, key, data::text, revision
FROM projections
WHERE user_id = ANY(%(user_ids)s)
"""

SAVE_PREVIEW = """
INSERT INTO backfill_previews (scope, users_seen, revisions, result)
VALUES (%(scope)s, %(users_seen)s, %(revisions)s, %(result)s)
RETURNING id
"""

LATEST_PREVIEW = """
SELECT id, created_at, result
FROM backfill_previews
ORDER BY created_at DESC, id DESC
LIMIT 1
"""

T = TypeVar("T")
Scope = Literal["sample", "all"]
Row = tuple[str, str]


@dataclass(frozen=True, slots=True)
class StoredRow:
    data: dict[str, Any]
    revision: int


@dataclass(slots=True)
class OutputChanges:
    """One output (projection_type/key) over the previewed users."""

    users_compared: int = 0
    users_changed: int = 0  # stored, and some top-level field would change
    users_missing: int = 0  # not stored: the backfill would create it
    fields: Counter[str] = field(default_factory=Counter)
    stored_revisions: Counter[int] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "users_compared": self.users_compared,
            "users_changed": self.users_changed,
            "users_missing": self.users_missing,
            "fields": dict(self.fields.most_common()),
            "stored_revisions": {str(r): n for r, n in sorted(self.stored_revisions.items())},
        }


def _transitions(counts: Counter[tuple[str, str]]) -> list[dict[str, Any]]:
    return [
        {"from": old, "to": new, "users": users}
        for (old, new), users in sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    ]


@dataclass(slots=True)
class PreviewTally:
    """The comparison, user by user; pure (no database), so it is unit tested on its own."""

    outputs: dict[Row, OutputChanges]
    examples_per_class: int = DEFAULT_EXAMPLES
    users_seen: int = 0
    users_changed: int = 0
    warnings_gained: Counter[str] = field(default_factory=Counter)
    warnings_lost: Counter[str] = field(default_factory=Counter)
    modality: Counter[tuple[str, str]] = field(default_factory=Counter)
    objective_source: Counter[tuple[str, str]] = field(default_factory=Counter)
    examples: dict[str, list[UUID]] = field(default_factory=dict)

    @classmethod
    def for_read_models(
        cls, read_models: Collection[ReadModel], examples_per_class: int = DEFAULT_EXAMPLES
    ) -> PreviewTally:
        return cls({o.row: OutputChanges() for o in outputs_of(read_models)}, examples_per_class)

    def _example(self, change_class: str, user_id: UUID) -> None:
        found = self.examples.setdefault(change_class, [])
        if len(found) < self.examples_per_class:
            found.append(user_id)

    def add_user(
        self,
        user_id: UUID,
        stored: Mapping[Row, StoredRow],
        recomputed: Mapping[Row, Mapping[str, Any]],
    ) -> None:
        """Compare one user's stored rows with what the running code computes for them."""
        self.users_seen += 1
        changed = False
        for row, new in recomputed.items():
            tally = self.outputs.get(row)
            if tally is None:
                continue
            name = f"{row[0]}/{row[1]}"
            tally.users_compared += 1
            old = stored.get(row)
            if old is None:
                tally.users_missing += 1
                changed = True
                self._example(f"{name} would be created", user_id)
                continue
            tally.stored_revisions[old.revision] += 1
            fields = changed_fields(old.data, new)
            if fields:
                tally.users_changed += 1
                changed = True
                self._example(f"{name} changes", user_id)
                for name_of_field in fields:
                    tally.fields[name_of_field] += 1
                    self._example(f"{name}.{name_of_field}", user_id)
        if changed:
            self.users_changed += 1
        self._objective_foundation(user_id, stored, recomputed)

    def _objective_foundation(
        self,
        user_id: UUID,
        stored: Mapping[Row, StoredRow],
        recomputed: Mapping[Row, Mapping[str, Any]],
    ) -> None:
        """Warnings, modality and objective source: what an operator of this read model reads."""
        old_advisory, new_advisory = stored.get(ADVISORY), recomputed.get(ADVISORY)
        if old_advisory is not None and new_advisory is not None:
            old_codes, new_codes = warning_codes(old_advisory.data), warning_codes(new_advisory)
            for code in sorted(new_codes - old_codes):
                self.warnings_gained[code] += 1
                self._example(f"warning {code} gained", user_id)
            for code in sorted(old_codes - new_codes):
                self.warnings_lost[code] += 1
                self._example(f"warning {code} lost", user_id)
        new_state = recomputed.get(STATE)
        if new_state is None:
            return
        old_state = stored.get(STATE)
        old_data: Mapping[str, Any] = old_state.data if old_state is not None else {}
        move = (resolved_modality(old_data), resolved_modality(new_state))
        self.modality[move] += 1
        if move[0] != move[1]:
            self._example(f"modality {move[0]} -> {move[1]}", user_id)
        move = (objective_source(old_data), objective_source(new_state))
        self.objective_source[move] += 1
        if move[0] != move[1]:
            self._example(f"active objective source {move[0]} -> {move[1]}", user_id)


def _canonical(data: Mapping[str, Any]) -> dict[str, Any]:
    """JSON as stored: what the projection store would write, read back (tuples as lists...)."""
    parsed: dict[str, Any] = orjson.loads(orjson.dumps(data, option=orjson.OPT_SORT_KEYS))
    return parsed


def changed_fields(stored: Mapping[str, Any], recomputed: Mapping[str, Any]) -> list[str]:
    """Top-level fields whose value would change (time fields ignored), in sorted order."""
    if stored == recomputed:
        # The common case, in one C-level comparison: folds return plain JSON values,
        # and recomputing at the stored clock reproduces the time fields too.
        return []
    new = _canonical(recomputed)
    missing = object()
    return [
        key
        for key in sorted(set(stored) | set(new))
        if key not in TIME_FIELDS and stored.get(key, missing) != new.get(key, missing)
    ]


def warning_codes(advisory: Mapping[str, Any]) -> set[str]:
    warnings = advisory.get("warnings")
    if not isinstance(warnings, list):
        return set()
    return {w["code"] for w in warnings if isinstance(w, dict) and isinstance(w.get("code"), str)}


def _text_at(data: Mapping[str, Any], *path: str) -> str:
    value: Any = data
    for key in path:
        if not isinstance(value, Mapping):
            return NONE
        value = value.get(key)
    return value if isinstance(value, str) else NONE


def resolved_modality(state: Mapping[str, Any]) -> str:
    return _text_at(state, "modality", "resolved")


def objective_source(state: Mapping[str, Any]) -> str:
    return _text_at(state, "active_objective", "source")


@dataclass(frozen=True, slots=True)
class PreviewResult:
    """A finished preview: storable (`as_dict`), printable by the CLI and the dashboard."""

    scope: Scope
    users_total: int  # users in the table when the preview started
    started_at: datetime
    duration_seconds: float
    running_revisions: dict[str, int]
    tally: PreviewTally

    @property
    def users_seen(self) -> int:
        return self.tally.users_seen

    @property
    def users_changed(self) -> int:
        """Users any of whose projections the running code would write differently."""
        return self.tally.users_changed

    def as_dict(self) -> dict[str, Any]:
        t = self.tally
        codes = sorted(set(t.warnings_gained) | set(t.warnings_lost))
        return {
            "scope": self.scope,
            "users_total": self.users_total,
            "users_previewed": t.users_seen,
            "users_changed": t.users_changed,
            "started_at": self.started_at.isoformat(),
            "duration_seconds": round(self.duration_seconds, 3),
            "running_revisions": self.running_revisions,
            "outputs": {f"{r[0]}/{r[1]}": changes.as_dict() for r, changes in t.outputs.items()},
            "warnings": {
                code: {"gained": t.warnings_gained[code], "lost": t.warnings_lost[code]}
                for code in codes
            },
            "modality_transitions": _transitions(t.modality),
            "active_objective_source_transitions": _transitions(t.objective_source),
            "examples": {k: [str(u) for u in v] for k, v in sorted(t.examples.items())},
        }


Progress = Callable[[int, int], None]  # (users done, users to do)


@dataclass(frozen=True, slots=True)
class LoadedBatch:
    """One batch of users as read from one snapshot: their stored rows and their events."""

    user_ids: list[UUID]
    stored: dict[UUID, dict[Row, StoredRow]]
    events: dict[UUID, list[Event]]


@contextmanager
def _batch_transaction(conn: DbConnection) -> Iterator[None]:
    with conn.transaction():
        conn.execute(BATCH_TRANSACTION)
        yield


def _stored(
    conn: DbConnection, user_ids: Sequence[UUID], rows: Collection[Row]
) -> dict[UUID, dict[Row, StoredRow]]:
    stored: dict[UUID, dict[Row, StoredRow]] = {u: {} for u in user_ids}
    for user_id, ptype, key, text, revision in conn.execute(
        STORED, {"user_ids": list(user_ids)}, prepare=True
    ):
        if (ptype, key) in rows:
            stored[user_id][(ptype, key)] = StoredRow(orjson.loads(text), revision)
    return stored


def _load(
    conn: DbConnection,
    user_ids: list[UUID],
    rows: Collection[Row],
    read_models: Collection[ReadModel],
) -> LoadedBatch:
    """One batch's stored rows and events, from one snapshot."""
    with _batch_transaction(conn):
        stored = _stored(conn, user_ids, rows)
        events = load_events_for_read_models(conn, user_ids, read_models)
    return LoadedBatch(user_ids, stored, events)


def _sampled_ids(conn: DbConnection, sample: int, batch_users: int) -> Iterator[list[UUID]]:
    with _batch_transaction(conn):
        ids = sorted(row[0] for row in conn.execute(SAMPLE_USERS, {"n": sample}).fetchall())
    for start in range(0, len(ids), batch_users):
        yield ids[start : start + batch_users]


def _keyset_ids(conn: DbConnection, batch_users: int) -> Iterator[list[UUID]]:
    after: UUID | None = None
    while True:
        with _batch_transaction(conn):
            query = FIRST_USERS if after is None else NEXT_USERS
            found = [r[0] for r in conn.execute(query, {"after": after, "limit": batch_users})]
        if not found:
            return
        yield found
        after = found[-1]


class _Readers:
    """Threads that read batches on connections of their own (one per thread)."""

    def __init__(self, database_url: str, count: int) -> None:
        self.database_url = database_url
        self.count = count
        self._local = threading.local()
        self._opened: list[DbConnection] = []
        self._lock = threading.Lock()

    def connection(self) -> DbConnection:
        conn: DbConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.database_url, autocommit=True, application_name="stride-preview")
            self._local.conn = conn
            with self._lock:
                self._opened.append(conn)
        return conn

    def _load_on_own_connection(
        self, load: Callable[[DbConnection, list[UUID]], T], ids: list[UUID]
    ) -> T:
        return load(self.connection(), ids)

    def read_ahead(
        self, id_batches: Iterator[list[UUID]], load: Callable[[DbConnection, list[UUID]], T]
    ) -> Iterator[T]:
        """`load` of each id batch, in order, `count` batches read at once while the
        caller works on the one before.

        Reading is mostly the server's work (the GIL is released while psycopg
        waits), comparing is this process's: overlapped, a batch costs about the
        longer of the two instead of their sum; and on a busy server several
        batches' queries run side by side. At most `count` batches wait in memory.
        """
        try:
            with ThreadPoolExecutor(self.count, thread_name_prefix="stride-preview") as pool:
                pending: deque[Future[T]] = deque()
                for ids in id_batches:
                    pending.append(pool.submit(self._load_on_own_connection, load, ids))
                    if len(pending) >= self.count:
                        yield pending.popleft().result()
                while pending:
                    yield pending.popleft().result()
        finally:
            for conn in self._opened:
                conn.close()


def _clock(stored: Mapping[Row, StoredRow]) -> datetime:
    advisory = stored.get(ADVISORY)
    return clock_of_stored({ADVISORY: advisory.data} if advisory is not None else {})


def compare_batch(
    batch: LoadedBatch, tally: PreviewTally, read_models: Collection[ReadModel] = READ_MODELS
) -> None:
    """Fold each user of the batch at the clock of their stored advisory and tally the diff."""
    clocks = {user_id: _clock(batch.stored[user_id]) for user_id in batch.user_ids}
    recomputed = fold_users(batch.events, clocks, read_models)
    for user_id in batch.user_ids:
        tally.add_user(user_id, batch.stored[user_id], recomputed[user_id])


# The cyclic garbage collector's thresholds while a preview runs in a process of
# its own (relaxed_gc). A batch allocates tens of thousands of containers
# (events, their data, stored documents) and none of them form cycles, yet with
# the default thresholds (700, 10, 10) the collector ran so often that it took
# about half the CPU of a preview (measured on 10,000 demo users: 7-9 s of CPU
# with the defaults, 4 s with these and gc.freeze()).
BULK_GC_THRESHOLDS: Final = (50_000, 50, 100)


@contextmanager
def relaxed_gc() -> Iterator[None]:
    """Collect garbage rarely while a bulk read runs; for a short-lived process of its own.

    The objects alive at the start (modules, the registry) are frozen out of
    every collection, and the thresholds raised; both are restored on exit.
    Process-wide settings: a server must not wrap a request in this.
    """
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(*BULK_GC_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def preview_users(
    database_url: str,
    *,
    sample: int | None = DEFAULT_SAMPLE,
    batch_users: int = DEFAULT_BATCH_USERS,
    max_rate: float | None = None,
    examples: int = DEFAULT_EXAMPLES,
    on_progress: Progress | None = None,
    read_models: Collection[ReadModel] = READ_MODELS,
    readers: int = DEFAULT_READERS,
    sleep: Callable[[float], None] = time.sleep,
) -> PreviewResult:
    """Preview `sample` random users (None: every user) against the running code.

    Opens its own connections: one walks the users, `readers` read batches.
    `max_rate` caps the users recomputed per second.
    """
    started_at = datetime.now(UTC)
    started = time.monotonic()
    if max_rate is not None:
        # About a second's worth of users per batch, so the pace stays even.
        batch_users = max(1, min(batch_users, int(max_rate)))
    tally = PreviewTally.for_read_models(read_models, examples)
    rows = set(tally.outputs)
    with connect(database_url, autocommit=True, application_name="stride-preview") as conn:
        total_row = conn.execute(COUNT_USERS).fetchone()
        users_total = int(total_row[0]) if total_row else 0
        to_do = users_total if sample is None else min(sample, users_total)
        id_batches = (
            _keyset_ids(conn, batch_users)
            if sample is None
            else _sampled_ids(conn, sample, batch_users)
        )
        if on_progress is not None:
            on_progress(0, to_do)
        loaded = _Readers(database_url, readers).read_ahead(
            id_batches, lambda reader, ids: _load(reader, ids, rows, read_models)
        )
        for batch in loaded:
            compare_batch(batch, tally, read_models)
            if on_progress is not None:
                # New users may arrive during an --all preview: the total grows with them.
                on_progress(tally.users_seen, max(to_do, tally.users_seen))
            if max_rate:
                ahead = tally.users_seen / max_rate - (time.monotonic() - started)
                if ahead > 0:
                    sleep(ahead)
    return PreviewResult(
        scope="all" if sample is None else "sample",
        users_total=users_total,
        started_at=started_at,
        duration_seconds=time.monotonic() - started,
        running_revisions=running_revisions(read_models),
        tally=tally,
    )


def save_preview(conn: DbConnection, result: PreviewResult) -> int:
    """Keep a finished preview's results (backfill_previews); returns its id."""
    row = conn.execute(
        SAVE_PREVIEW,
        {
            "scope": result.scope,
            "users_seen": result.users_seen,
            "revisions": Jsonb(result.running_revisions),
            "result": Jsonb(result.as_dict()),
        },
    ).fetchone()
    assert row is not None
    preview_id: int = row[0]
    return preview_id


@dataclass(frozen=True, slots=True)
class SavedPreview:
    id: int
    created_at: datetime
    result: dict[str, Any]  # PreviewResult.as_dict() of that run


def latest_preview(conn: DbConnection) -> SavedPreview | None:
    """The last preview saved, or None (for the dashboard: 'the preview's results')."""
    row = conn.execute(LATEST_PREVIEW).fetchone()
    return SavedPreview(*row) if row else None
