"""The limits every worker session runs under, and telling a lost session from any other error.

A worker that freezes inside a transaction (SIGSTOP, a VM pause, a network
partition) keeps its session, its row locks and its advisory locks until the
server ends that session. The server must not wait for the client to come back:
every connection a worker opens — runners, lease keeper, listener, maintenance,
and whatever a handler opens from `JobContext.database_url` — carries
server-side limits tied to the lease, set at connect time through the
conninfo, so nothing depends on the client getting a statement through:

- `idle_in_transaction_session_timeout` = the lease: a transaction left idle
  that long belongs to a worker whose jobs are being reclaimed anyway, so the
  server ends it and its locks pass on. A handler that works longer than a
  lease between queries calls `ctx.heartbeat()`, which touches its transaction.
- `lock_timeout` = a quarter of the lease: any lock a runner or a handler waits
  for (the controller's `FOR UPDATE` on its run row, a row of `projections`,
  a dedup key being inserted) is given up on with SQLSTATE 55P03; the runner
  defers the jobs and tries later (runner.py).
- TCP keepalives and `tcp_user_timeout`, on both ends: a peer that vanished
  (partition, dead host) is noticed within about a lease, not after the
  kernel's two-hour keepalive default.

Sessions that are idle by design hold something too: the maintenance leader
its advisory lock, the listener its LISTEN (the server keeps every
notification until all listeners have read it). Each sets an
`idle_session_timeout` and queries more often than that while alive, so a
frozen worker loses them as well (maintenance.py, worker.py).

A connection is *lost* only when it is broken or closed. Every other database
error — a constraint, an oversized index row, a lock timeout, even an
OperationalError such as 54000 — leaves the session usable and is the job's
failure, never a reason to reconnect.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from stride.storage.connection import DbConnection

# Lock waits longer than this share of the lease mean a frozen or slow holder.
LOCK_TIMEOUT_SHARE = 0.25
MIN_LOCK_TIMEOUT_MS = 50
# At least one keepalive probe interval, whatever the lease.
MIN_KEEPALIVE_S = 1


@dataclass(frozen=True, slots=True)
class SessionLimits:
    """Server-side timeouts and TCP liveness settings derived from a lease."""

    idle_in_transaction_ms: int
    lock_timeout_ms: int
    keepalives_idle_s: int
    keepalives_interval_s: int
    keepalives_count: int
    tcp_user_timeout_ms: int

    @classmethod
    def for_lease(cls, lease_seconds: float) -> SessionLimits:
        lease_ms = max(1, round(lease_seconds * 1000))
        # Probes start after a third of the lease of silence; three unanswered
        # probes a sixth of a lease apart end the connection: about 0.8 leases.
        idle_s = max(MIN_KEEPALIVE_S, math.ceil(lease_seconds / 3))
        interval_s = max(MIN_KEEPALIVE_S, math.ceil(lease_seconds / 6))
        return cls(
            idle_in_transaction_ms=lease_ms,
            lock_timeout_ms=max(MIN_LOCK_TIMEOUT_MS, round(lease_ms * LOCK_TIMEOUT_SHARE)),
            keepalives_idle_s=idle_s,
            keepalives_interval_s=interval_s,
            keepalives_count=3,
            tcp_user_timeout_ms=lease_ms,
        )

    @property
    def lock_timeout_seconds(self) -> float:
        return self.lock_timeout_ms / 1000

    def server_settings(self) -> dict[str, str]:
        """GUCs the server applies to the session from its first statement on."""
        return {
            "idle_in_transaction_session_timeout": f"{self.idle_in_transaction_ms}ms",
            "lock_timeout": f"{self.lock_timeout_ms}ms",
            # The server's end of the socket: notices a vanished worker.
            "tcp_keepalives_idle": str(self.keepalives_idle_s),
            "tcp_keepalives_interval": str(self.keepalives_interval_s),
            "tcp_keepalives_count": str(self.keepalives_count),
            "tcp_user_timeout": str(self.tcp_user_timeout_ms),
        }

    def client_parameters(self) -> dict[str, Any]:
        """libpq parameters for the worker's end of the socket: notices a vanished server."""
        return {
            "keepalives": 1,
            "keepalives_idle": self.keepalives_idle_s,
            "keepalives_interval": self.keepalives_interval_s,
            "keepalives_count": self.keepalives_count,
            "tcp_user_timeout": self.tcp_user_timeout_ms,
        }


def session_conninfo(database_url: str, limits: SessionLimits) -> str:
    """`database_url` with the limits added; options already in the URL are kept ahead of ours.

    Ours come last in `options`, so they win over a conflicting setting in the
    URL: a worker's lease is what the limits must follow.
    """
    params = conninfo_to_dict(database_url)
    flags = " ".join(f"-c {name}={value}" for name, value in limits.server_settings().items())
    existing = str(params.get("options") or "").strip()
    params["options"] = f"{existing} {flags}".strip()
    params.update(limits.client_parameters())
    return make_conninfo("", **params)


def connection_lost(conn: DbConnection | None) -> bool:
    """Whether `conn` can no longer be used: the one test for "reconnect" in the queue."""
    return conn is None or conn.closed or conn.broken
