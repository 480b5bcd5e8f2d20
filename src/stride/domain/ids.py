"""Time-ordered UUIDs (version 7, RFC 9562), minted in Python.

Python 3.11 has no `uuid.uuid7`. Layout: 48-bit Unix milliseconds, version,
12-bit `rand_a`, variant, 62-bit `rand_b`. Within a process the ids are strictly
increasing: `rand_a` is a counter within a millisecond (RFC 9562 method 1), and
a burst of more than 4096 ids in one millisecond borrows the next millisecond.
"""

from __future__ import annotations

import secrets
import threading
import time
from uuid import UUID

_VERSION_AND_VARIANT = (0x7 << 76) | (0b10 << 62)
_lock = threading.Lock()
_last_timestamp_and_counter = 0  # (unix_ms << 12) | rand_a of the last id minted


def uuid7_int(unix_ms: int, rand_a: int, rand_b: int) -> int:
    """The 128-bit value of a version-7 UUID from its three fields (pure)."""
    return (
        ((unix_ms & 0xFFFF_FFFF_FFFF) << 80)
        | ((rand_a & 0xFFF) << 64)
        | (rand_b & 0x3FFF_FFFF_FFFF_FFFF)
        | _VERSION_AND_VARIANT
    )


def new_uuid7() -> UUID:
    """A fresh version-7 UUID, greater than every id this process minted before."""
    global _last_timestamp_and_counter
    now_ms = time.time_ns() // 1_000_000
    with _lock:
        # A clock step backwards must not break monotonicity: keep counting.
        timestamp_and_counter = max(now_ms << 12, _last_timestamp_and_counter + 1)
        _last_timestamp_and_counter = timestamp_and_counter
    return UUID(
        int=uuid7_int(
            timestamp_and_counter >> 12, timestamp_and_counter & 0xFFF, secrets.randbits(62)
        )
    )


def uuid7_unix_ms(value: UUID) -> int:
    """The millisecond timestamp a version-7 UUID carries."""
    return value.int >> 80
