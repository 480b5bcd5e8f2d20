"""Time-ordered UUIDv7 ids minted in Python."""

from __future__ import annotations

from stride.domain.ids import new_uuid7


def test_new_uuid7_is_strictly_increasing_within_a_millisecond_burst() -> None:
    ids = [new_uuid7() for _ in range(10_000)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
