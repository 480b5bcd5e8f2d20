"""What a request may cost: body size, JSON shape, and a rate per token.

Bodies are read and parsed here, before FastAPI sees them (a custom Request,
used by stride.api.routing.ApiRoute), so a bad body is refused with a precise
4xx and never reaches the store: 413 past the size cap (checked on
Content-Length and again while streaming), 400 for malformed JSON, 422 naming
the field for strings that are too long or hold NUL, and for nesting too deep.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import Request

from stride.api.config import ApiSettings
from stride.api.errors import ApiError, FieldError, batch_index, field_path
from stride.api.state import settings_of

# --- rate ----------------------------------------------------------------------------------


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """A token bucket per key (per API token): `rate` requests per second, bursts of `burst`.

    In-process: each server process keeps its own buckets.
    """

    MAX_KEYS = 100_000

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def acquire(self, key: str) -> float:
        """Take one request; returns 0 when allowed, else seconds until one would be."""
        if self.rate <= 0:
            return 0.0
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.MAX_KEYS:
                self._forget_full_buckets(now)
            bucket = self._buckets[key] = _Bucket(self.burst, now)
        else:
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate

    def _forget_full_buckets(self, now: float) -> None:
        # A bucket that has refilled is the same as no bucket at all.
        self._buckets = {
            key: b
            for key, b in self._buckets.items()
            if b.tokens + (now - b.updated) * self.rate < self.burst
        }

    @staticmethod
    def retry_after(seconds: float) -> str:
        return str(max(1, math.ceil(seconds)))


# --- body shape ------------------------------------------------------------------------------


def check_json_shape(value: Any, *, max_depth: int, max_string_chars: int) -> list[FieldError]:
    """Strings too long or holding NUL, and containers nested too deep, with their paths.

    Iterative (no recursion), in document order, stops at the first 20 problems.
    """
    problems: list[FieldError] = []
    stack: list[tuple[Any, tuple[Any, ...]]] = [(value, ())]
    while stack and len(problems) < 20:
        item, path = stack.pop()
        if isinstance(item, str):
            problem = _string_problem(item, max_string_chars)
            if problem:
                problems.append(_field_error(path, problem))
        elif isinstance(item, dict | list):
            if len(path) >= max_depth:
                problems.append(_field_error(path, f"nested deeper than {max_depth} levels"))
                continue
            if isinstance(item, dict):
                children = []
                for key, child in item.items():
                    problem = _string_problem(key, max_string_chars)
                    if problem:
                        problems.append(_field_error((*path, key), "key " + problem))
                    children.append((child, (*path, key)))
            else:
                children = [(child, (*path, i)) for i, child in enumerate(item)]
            stack.extend(reversed(children))  # popped in document order
    return problems


def _string_problem(text: str, max_chars: int) -> str | None:
    if len(text) > max_chars:
        return f"string of {len(text):,} characters; at most {max_chars:,}"
    if "\x00" in text:
        return "contains a NUL character (\\u0000), which cannot be stored"
    return None


def _field_error(path: tuple[Any, ...], message: str) -> FieldError:
    return FieldError(field=field_path(path), index=batch_index(path), message=message)


def parse_json_body(body: bytes, settings: ApiSettings) -> Any:
    """Parse and check a JSON body; raises ApiError (400 or 422)."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "malformed_json", f"the body is not valid JSON: {exc}") from None
    problems = check_json_shape(
        value, max_depth=settings.max_depth, max_string_chars=settings.max_string_chars
    )
    if problems:
        first = problems[0]
        raise ApiError(422, "validation_failed", f"{first.field}: {first.message}", errors=problems)
    return value


# --- request and route -------------------------------------------------------------------------


class ApiRequest(Request):
    """A request whose body is capped while it streams and parsed by `parse_json_body`."""

    async def body(self) -> bytes:
        if not hasattr(self, "_body"):
            limit = settings_of(self).max_body_bytes
            declared = self.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > limit:
                raise _too_large(limit)
            chunks: list[bytes] = []
            size = 0
            async for chunk in self.stream():
                size += len(chunk)
                if size > limit:
                    raise _too_large(limit)
                chunks.append(chunk)
            self._body = b"".join(chunks)
        return self._body

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = parse_json_body(await self.body(), settings_of(self))
        return self._json


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "body_too_large", f"the request body exceeds {limit:,} bytes")
