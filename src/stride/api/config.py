"""The server's settings: one frozen value, read from STRIDE_API_* variables.

`stride serve` turns its flags into these variables before uvicorn starts its
worker processes, so every process builds the same settings from its
environment (`ApiSettings.from_env`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields

_DURATION = re.compile(r"^\s*(?P<amount>\d+(?:\.\d+)?)\s*(?P<unit>ms|s|m|h|d)?\s*$")
_DURATION_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SIZE = re.compile(r"^\s*(?P<amount>\d+)\s*(?P<unit>b|k|kb|kib|m|mb|mib)?\s*$", re.IGNORECASE)
_SIZE_BYTES = {None: 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024}
_SIZE_BYTES.update({"m": 1024**2, "mb": 1024**2, "mib": 1024**2})

ENV_PREFIX = "STRIDE_API_"


class SettingsError(ValueError):
    """A setting's value cannot be used; the message names the setting."""


def parse_duration(value: str) -> float:
    """'2s', '500ms', '1.5', '2m', '90d' -> seconds; raises ValueError otherwise."""
    match = _DURATION.match(value)
    if match is None:
        raise ValueError(f"expected a duration like 2s, 500ms or 90d, got {value!r}")
    return float(match["amount"]) * _DURATION_SECONDS[match["unit"]]


def parse_size(value: str) -> int:
    """'1048576', '512KiB', '2MiB' (also k, kb, m, mb) -> bytes; raises ValueError otherwise."""
    match = _SIZE.match(value)
    if match is None:
        raise ValueError(f"expected a size like 2MiB, 512KiB or 65536, got {value!r}")
    unit = match["unit"].lower() if match["unit"] else None
    return int(match["amount"]) * _SIZE_BYTES[unit]


@dataclass(frozen=True, slots=True)
class ApiSettings:
    """Everything configurable about one server process."""

    database_url: str
    max_body_bytes: int = 2 * 1024 * 1024
    max_batch: int = 1000
    max_string_chars: int = 10_000
    max_depth: int = 32
    # Requests per second per token, with bursts up to `rate_burst`; 0 turns it off.
    # Counted per server process: with --workers N a token gets up to N times this.
    rate_limit: float = 100.0
    rate_burst: int = 200
    default_wait_seconds: float = 2.0
    max_wait_seconds: float = 30.0
    pool_size: int = 10
    write_pool_size: int = 4

    def __post_init__(self) -> None:
        if not self.database_url:
            raise SettingsError("database_url: empty")
        for name in ("max_body_bytes", "max_batch", "max_string_chars", "max_depth"):
            if getattr(self, name) < 1:
                raise SettingsError(f"{name}: must be at least 1, got {getattr(self, name)}")
        for name in ("pool_size", "write_pool_size", "rate_burst"):
            if getattr(self, name) < 1:
                raise SettingsError(f"{name}: must be at least 1, got {getattr(self, name)}")
        if self.rate_limit < 0:
            raise SettingsError(f"rate_limit: must not be negative, got {self.rate_limit}")
        if not 0 < self.default_wait_seconds <= self.max_wait_seconds:
            raise SettingsError("default_wait_seconds: must be positive and at most max_wait")

    def to_env(self) -> dict[str, str]:
        """These settings as STRIDE_API_* variables (what `from_env` reads back)."""
        return {ENV_PREFIX + f.name.upper(): str(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ApiSettings:
        """Settings from STRIDE_API_* variables; unset ones keep their defaults."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is None:
                continue
            try:
                values[f.name] = _convert(f.name, raw)
            except ValueError as exc:
                raise SettingsError(f"{ENV_PREFIX}{f.name.upper()}: {exc}") from None
        if "database_url" not in values:
            raise SettingsError(f"{ENV_PREFIX}DATABASE_URL is not set")
        return cls(**values)  # type: ignore[arg-type]


def _convert(name: str, raw: str) -> object:
    if name == "database_url":
        return raw
    if name == "max_body_bytes":
        return parse_size(raw)
    if name in ("default_wait_seconds", "max_wait_seconds"):
        return parse_duration(raw)
    if name == "rate_limit":
        return float(raw)
    return int(raw)
