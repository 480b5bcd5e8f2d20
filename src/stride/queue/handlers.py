"""The handler API: what a job handler receives, how it is registered, how it gives up.

A single-job handler gets a `JobContext`, a batch handler a `BatchContext` with
many jobs of one type; either runs inside the transaction that completes its
jobs (a single job's possibly shared with the jobs next to it, its writes in a
savepoint of their own), and either may defer a job instead (back to pending
later, no attempt spent), which is how a long piece of work runs as short steps. Raising an
exception retries the job with backoff (then `dead`); raising
`PermanentJobError` ends it `failed` at once, `JobCancelledError` `cancelled`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from stride.queue.jobs import ClaimedJob
from stride.storage.connection import DbConnection

Heartbeat = Callable[[Sequence[ClaimedJob]], bool]


class PermanentJobError(Exception):
    """Retrying cannot help (e.g. the payload is unusable): the job ends `failed`, no retries."""


class JobCancelledError(Exception):
    """The job's work was cancelled while a worker held it: the job ends `cancelled`."""


@dataclass(slots=True)
class JobContext:
    """What a single-job handler gets: its job and the connection inside its transaction.

    The runner may run several jobs' handlers in one transaction, each job's
    writes in a savepoint of its own; `first_use` opens that savepoint when the
    handler first asks for `conn`, so a handler that never touches the database
    costs no round trip for it.
    """

    _conn: DbConnection = field(repr=False)
    job: ClaimedJob
    worker_id: str
    database_url: str
    _heartbeat: Heartbeat = field(repr=False)
    deferred: float | None = None
    _first_use: Callable[[], None] | None = field(default=None, repr=False)

    @property
    def conn(self) -> DbConnection:
        """The connection, inside the transaction that completes this job."""
        if self._first_use is not None:
            first_use, self._first_use = self._first_use, None
            first_use()
        return self._conn

    def defer(self, seconds: float) -> None:
        """Put the job back to pending after `seconds` (its writes still commit), no attempt spent.

        A job that does a long piece of work one step per run defers itself
        after each step, so the runner is free for other jobs in between.
        """
        self.deferred = seconds

    def heartbeat(self) -> bool:
        """Extend the lease now; False when the job is no longer ours (stop working on it)."""
        return self._heartbeat([self.job])


@dataclass(slots=True)
class BatchContext:
    """What a batch handler gets: many jobs of one type, one transaction, a way to defer some."""

    conn: DbConnection
    jobs: list[ClaimedJob]
    worker_id: str
    database_url: str
    _heartbeat: Heartbeat = field(repr=False)
    deferred: dict[int, float] = field(default_factory=dict)

    def defer(self, job: ClaimedJob, seconds: float) -> None:
        """Put `job` back to pending after `seconds`, without spending an attempt."""
        self.deferred[job.id] = seconds

    def heartbeat(self) -> bool:
        """Extend the leases now; False when any job is no longer ours."""
        return self._heartbeat(self.jobs)


SingleHandler = Callable[[JobContext], None]
BatchHandler = Callable[[BatchContext], None]


@dataclass(frozen=True, slots=True)
class Registration:
    """A job type's handler; `serialize_by_user` runs one user's jobs one transaction at a time."""

    job_type: str
    handler: Callable[..., None]
    batch: bool
    serialize_by_user: bool


class HandlerRegistry:
    """Handlers by job type: single-job (`register`) or batch (`register_batch`)."""

    def __init__(self) -> None:
        self._registrations: dict[str, Registration] = {}

    def register(
        self, job_type: str, handler: SingleHandler, *, serialize_by_user: bool = False
    ) -> None:
        self._add(Registration(job_type, handler, False, serialize_by_user))

    def register_batch(
        self, job_type: str, handler: BatchHandler, *, serialize_by_user: bool = False
    ) -> None:
        self._add(Registration(job_type, handler, True, serialize_by_user))

    def _add(self, registration: Registration) -> None:
        if registration.job_type in self._registrations:
            raise ValueError(f"a handler for {registration.job_type!r} is already registered")
        self._registrations[registration.job_type] = registration

    def get(self, job_type: str) -> Registration | None:
        return self._registrations.get(job_type)

    @property
    def job_types(self) -> list[str]:
        return sorted(self._registrations)

    def __len__(self) -> int:
        return len(self._registrations)
