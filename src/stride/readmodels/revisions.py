"""Revisions a piece of work asks for, and whether the running code has them.

A backfill run records the revision of every output the code that triggered
it runs (`running_revisions`), and its fan-out jobs carry that map in their
payload under `revisions`. During a rolling deploy a worker still running
older logic must not spend such a job on writing old projections (the run
would end with users on the old revision): `revisions_lacking` tells it which
outputs it is too old for, and it hands the job on to a newer worker.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from stride.projections.registry import READ_MODELS, ReadModel, outputs_of

# The payload field of a job that asks for at least these revisions.
REVISIONS_FIELD = "revisions"


def running_revisions(read_models: Iterable[ReadModel] = READ_MODELS) -> dict[str, int]:
    """`projection_type/key` -> revision, for every output of `read_models`."""
    return {output.name: output.revision for output in outputs_of(read_models)}


def revisions_lacking(required: object, running: Mapping[str, int]) -> dict[str, int]:
    """The outputs `required` asks for that `running` lacks or runs at a lower revision.

    `required` is a job payload's `revisions` value: absent (None) asks for
    nothing; otherwise a mapping of output name to a revision (an int >= 0).
    Raises ValueError when it is anything else, so the job fails rather than
    being run by whichever worker happens to claim it.
    """
    if required is None:
        return {}
    if not isinstance(required, Mapping):
        raise ValueError(f"{REVISIONS_FIELD} must be an object, not {type(required).__name__}")
    lacking: dict[str, int] = {}
    for name, revision in required.items():
        if isinstance(revision, bool) or not isinstance(revision, int) or revision < 0:
            raise ValueError(f"{REVISIONS_FIELD}.{name} must be an integer >= 0: {revision!r}")
        if running.get(str(name), -1) < revision:
            lacking[str(name)] = revision
    return lacking
