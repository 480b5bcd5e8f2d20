"""The runbook's own SQL for proving a repeat backfill complete, run as the operator would."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import psycopg
from tests.populations import make_population

from stride.app import build_registry
from stride.backfill.reports import current_model_versions, run_progress
from stride.backfill.trigger import trigger_backfill
from stride.queue.worker import Worker

RUNBOOK = (
    Path(__file__).resolve().parents[2] / "docs" / "runbooks" / "objective-foundation-backfill.md"
)
SECTION = "### Proving a repeat backfill complete"


def completeness_queries() -> list[str]:
    text = RUNBOOK.read_text(encoding="utf-8")
    section = text[text.index(SECTION) :]
    section = section[: section.index("\n### ", len(SECTION))]
    return re.findall(r"```sql\n(.*?)```", section, flags=re.DOTALL)


def run_query(conn: psycopg.Connection[Any], query: str, **values: str) -> list[tuple[Any, ...]]:
    """The query as the runbook prints it, placeholders replaced by quoted literals."""
    for name, value in values.items():
        query = query.replace(f"'<{name}>'", "'" + value.replace("'", "''") + "'")
    assert "<" not in query, "a placeholder was left unreplaced"
    return conn.execute(query.encode()).fetchall()


def drain(database_url: str) -> None:
    Worker(database_url, build_registry(), batch_size=200).run(once=True)


def test_the_runbooks_completeness_queries_tell_a_repeat_run_from_the_last_one(
    conn: psycopg.Connection[Any], database_url: str
) -> None:
    by_models, fanout = completeness_queries()
    make_population(conn, 15)
    source = "deploy.o'brien"  # quotes in a label stay data
    trigger_backfill(conn, source)
    drain(database_url)
    repeat = trigger_backfill(conn, source)
    assert repeat.job_id is not None
    models = current_model_versions()
    state_model = models[("objective_state", "active")]
    advisory_model = models[("objective_advisory", "overview")]

    # Before the repeat run has done anything: everyone is covered, no one refreshed.
    before = run_query(conn, by_models, **{"your-source": source})
    assert before == [(repeat.job_id, 15, state_model, advisory_model, 15, 0)]
    assert run_query(conn, fanout, **{"your-source": source, "job id": str(repeat.job_id)}) == []

    drain(database_url)
    after = run_query(conn, by_models, **{"your-source": source})
    assert after == [(repeat.job_id, 15, state_model, advisory_model, 15, 15)]
    jobs = run_query(conn, fanout, **{"your-source": source, "job id": str(repeat.job_id)})
    progress = run_progress(conn, source)
    assert progress is not None and progress.complete
    assert jobs == [("completed", progress.jobs_enqueued)]
