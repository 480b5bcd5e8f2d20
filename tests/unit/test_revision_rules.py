"""Revisions: what an output may declare, and which jobs a worker is too old for."""

from __future__ import annotations

from typing import Any

import pytest

from stride.projections.registry import READ_MODELS, ReadModelOutput, outputs_of
from stride.readmodels.revisions import revisions_lacking, running_revisions

RUNNING = {"objective_state/active": 2, "objective_advisory/overview": 3}


@pytest.mark.parametrize(
    ("required", "lacking"),
    [
        (None, {}),
        ({}, {}),
        ({"objective_state/active": 2}, {}),
        ({"objective_state/active": 1, "objective_advisory/overview": 3}, {}),
        ({"objective_state/active": 3}, {"objective_state/active": 3}),
        (
            {"objective_advisory/overview": 4, "objective_state/active": 0},
            {"objective_advisory/overview": 4},
        ),
        ({"habit_streak/current": 1}, {"habit_streak/current": 1}),  # an output it lacks
        ({"habit_streak/current": 0}, {"habit_streak/current": 0}),  # not run at all
    ],
)
def test_revisions_lacking(required: Any, lacking: dict[str, int]) -> None:
    assert revisions_lacking(required, RUNNING) == lacking


@pytest.mark.parametrize(
    "required",
    [
        [],
        "objective_state/active",
        3,
        {"objective_state/active": "2"},
        {"objective_state/active": -1},
        {"objective_state/active": True},
        {"objective_state/active": 2.0},
    ],
)
def test_malformed_requirements_are_errors(required: Any) -> None:
    with pytest.raises(ValueError, match="revisions"):
        revisions_lacking(required, RUNNING)


@pytest.mark.parametrize("revision", [0, -1])
def test_revisions_start_at_1(revision: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ReadModelOutput("p", "k", "p/1", revision)


@pytest.mark.parametrize("revision", ["1", 1.0, True])
def test_revisions_are_integers(revision: Any) -> None:
    with pytest.raises(TypeError, match="must be an int"):
        ReadModelOutput("p", "k", "p/1", revision)


def test_running_revisions_name_every_output_of_the_registry() -> None:
    running = running_revisions()
    assert set(running) == {o.name for o in outputs_of(READ_MODELS)}
    assert all(isinstance(r, int) and r >= 1 for r in running.values())
    assert revisions_lacking(running, running) == {}
