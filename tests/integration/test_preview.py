"""`backfill preview` on real PostgreSQL: what new logic would change, read only."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from tests.populations import make_population

from stride.app import build_registry
from stride.backfill.preview import (
    ADVISORY,
    STATE,
    latest_preview,
    preview_users,
    save_preview,
)
from stride.backfill.trigger import trigger_backfill
from stride.domain.events import Event
from stride.projections.registry import OBJECTIVE_FOUNDATION, Outputs, ReadModel
from stride.queue.worker import Worker

Conn = psycopg.Connection[Any]

WRITES = "SELECT count(*), sum(version), max(updated_at) FROM projections"


def backfilled(conn: Conn, database_url: str, users: int) -> list[Any]:
    ids = make_population(conn, users)
    trigger_backfill(conn, "deploy.v1")
    Worker(database_url, build_registry(), batch_size=100).run(once=True)
    return ids


def new_logic(relabel: str) -> ReadModel:
    """The next deploy's logic: endurance is resolved as hybrid, and every advisory
    gains a warning; everything else as today."""

    def fold(events: Sequence[Event], now: datetime) -> Outputs:
        outputs = OBJECTIVE_FOUNDATION.fold(events, now)
        state = outputs[STATE]
        if state["modality"]["resolved"] == "endurance":
            state["modality"] = {**state["modality"], "resolved": "hybrid"}
        advisory = outputs[ADVISORY]
        advisory["warnings"] = [*advisory["warnings"], {"code": relabel}]
        return outputs

    return dataclasses.replace(OBJECTIVE_FOUNDATION, fold=fold)


def read_only_url(database_url: str) -> str:
    params = conninfo_to_dict(database_url)
    params["options"] = "-c default_transaction_read_only=on"
    return make_conninfo("", **params)


def test_preview_of_the_running_code_after_its_backfill_finds_nothing_to_change(
    conn: Conn, database_url: str
) -> None:
    backfilled(conn, database_url, 30)
    before = conn.execute(WRITES).fetchone()
    # A session where every transaction is read only: the preview needs no write.
    result = preview_users(read_only_url(database_url), sample=None, batch_users=7)
    assert conn.execute(WRITES).fetchone() == before
    assert result.users_seen == 30 and result.users_changed == 0 and result.scope == "all"
    for changes in result.tally.outputs.values():
        assert changes.users_compared == 30 and changes.users_changed == 0
        assert dict(changes.stored_revisions) == {1: 30}
    assert sum(result.tally.modality.values()) == 30
    assert all(old == new for old, new in result.tally.modality)


def test_preview_counts_what_new_logic_would_change(conn: Conn, database_url: str) -> None:
    ids = backfilled(conn, database_url, 40)
    conn.execute(
        "DELETE FROM projections WHERE user_id = %s AND projection_type = 'objective_advisory'",
        (ids[5],),
    )
    endurance = {
        row[0]
        for row in conn.execute(
            "SELECT user_id FROM projections WHERE projection_type = 'objective_state' "
            "AND data -> 'modality' ->> 'resolved' = 'endurance'"
        ).fetchall()
    }
    assert endurance  # the population declares running: some resolve to endurance

    result = preview_users(
        database_url, sample=None, batch_users=9, read_models=[new_logic("x_new")]
    )
    state = result.tally.outputs[STATE]
    assert state.users_changed == len(endurance) and dict(state.fields) == {
        "modality": len(endurance)
    }
    advisory = result.tally.outputs[ADVISORY]
    assert advisory.users_missing == 1 and advisory.users_changed == 39
    assert dict(advisory.fields) == {"warnings": 39}
    assert result.tally.warnings_gained == {"x_new": 39} and not result.tally.warnings_lost
    assert result.tally.modality[("endurance", "hybrid")] == len(endurance)
    assert result.users_changed == 40
    examples = result.tally.examples
    assert set(examples["modality endurance -> hybrid"]) <= endurance
    assert examples["objective_advisory/overview would be created"] == [ids[5]]

    document = result.as_dict()
    assert document["users_previewed"] == 40 and document["users_total"] == 40
    assert document["warnings"] == {"x_new": {"gained": 39, "lost": 0}}
    assert {"from": "endurance", "to": "hybrid", "users": len(endurance)} in document[
        "modality_transitions"
    ]
    assert document["outputs"]["objective_advisory/overview"]["users_missing"] == 1
    saved = save_preview(conn, result)
    latest = latest_preview(conn)
    assert latest is not None and latest.id == saved and latest.result == document


def test_a_sample_previews_that_many_distinct_users_and_max_rate_paces_it(
    conn: Conn, database_url: str
) -> None:
    backfilled(conn, database_url, 25)
    slept: list[float] = []
    progress: list[tuple[int, int]] = []
    result = preview_users(
        database_url,
        sample=10,
        max_rate=4,
        sleep=slept.append,
        on_progress=lambda done, total: progress.append((done, total)),
    )
    assert result.scope == "sample" and result.users_seen == 10 and result.users_total == 25
    # Batches of at most max_rate users, each followed by the wait that keeps the pace.
    assert progress == [(0, 10), (4, 10), (8, 10), (10, 10)]
    assert len(slept) == 3 and sum(slept) > 1.5
    assert latest_preview(conn) is None  # nothing saved unless asked
