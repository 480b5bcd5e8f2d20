"""JSONL lines an import must reject one by one, each with the field it must name."""

from __future__ import annotations

import json
from typing import Any

# Longer than stride's per-line limit (4 MiB).
OVER_LONG = 5 * 1024 * 1024
WHEN = "2026-03-01T07:30:00Z"
STRANGER = "0190a000-0000-7000-8000-0000000000ff"


def valid_line(user: str, index: int) -> bytes:
    event = {
        "user_id": user,
        "event_type": "set.logged",
        "timestamp": WHEN,
        "data": {"reps": index % 12 + 1},
        "metadata": {"idempotency_key": f"set-{index}"},
    }
    return json.dumps(event).encode() + b"\n"


def bad_lines(user: str) -> list[tuple[str, bytes, str]]:
    """(what, line, field named in the reject) for every kind of line that cannot be stored."""

    def line(**fields: Any) -> bytes:
        event = {"user_id": user, "event_type": "set.logged", "timestamp": WHEN, "data": {}}
        return json.dumps({**event, **fields}).encode() + b"\n"

    prefix = f'{{"user_id": "{user}", "event_type": "set.logged", "timestamp": "{WHEN}", '
    return [
        (
            "nested 5,000 deep",
            prefix.encode() + b'"data": {"x": ' + b"[" * 5000 + b"]" * 5000 + b"}}\n",
            "line",
        ),
        ("lone surrogate in the event type", line(event_type="set.logged\ud800"), "event_type"),
        ("invalid UTF-8", line(data={"note": "caf"}).replace(b"caf", b"caf\xff"), "line"),
        (
            "UTF-8-encoded surrogate",
            line(data={"n": "x"}).replace(b'"x"', b'"\xed\xa0\x80"'),
            "data",
        ),
        ("over-long line", line(data={"blob": "x" * (OVER_LONG)}), "line"),
        ("400-digit integer", prefix.encode() + b'"data": {"v": ' + b"9" * 400 + b"}}\n", "data"),
        ("year 10000 in UTC", line(timestamp="9999-12-31T23:59:59-12:00"), "timestamp"),
        ("year 0 in UTC", line(timestamp="0001-01-01T00:00:00+14:00"), "timestamp"),
        ("NaN", prefix.encode() + b'"data": {"v": NaN}}\n', "line"),
        ("1e400", prefix.encode() + b'"data": {"v": 1e400}}\n', "data"),
        ("NUL in a key", line(data={"a\x00": 1}), "data"),
        ("event type over 255 characters", line(event_type="x" * 3000), "event_type"),
        (
            "idempotency key over 512 characters",
            line(metadata={"idempotency_key": "k" * 3000}),
            "metadata.idempotency_key",
        ),
        (
            "integer too long to parse",
            prefix.encode() + b'"data": {"v": ' + b"1" * 5000 + b"}}\n",
            "line",
        ),
        ("unknown user", line(user_id=STRANGER), "user_id"),
        ("not an object", b"[1, 2, 3]\n", "line"),
        ("truncated", prefix.encode() + b"\n", "line"),
    ]
