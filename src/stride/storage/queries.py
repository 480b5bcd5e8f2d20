"""Named SQL queries kept in .sql files under storage/sql/, loaded once."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

_NAME_LINE = re.compile(r"^-- name: (?P<name>[a-z0-9_]+)\s*$", re.MULTILINE)


@cache
def load_queries(filename: str) -> dict[str, str]:
    """Parse `-- name: x` sections of storage/sql/<filename> into {name: sql}."""
    text = (resources.files("stride.storage") / "sql" / filename).read_text(encoding="utf-8")
    parts = _NAME_LINE.split(text)
    # parts = [preamble, name1, body1, name2, body2, ...]
    queries = {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}
    if not queries:
        raise ValueError(f"no named queries in {filename}")
    return queries
