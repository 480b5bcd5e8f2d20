"""Bearer tokens on every /v1 route, the per-token rate limit, and the operator check.

401 (with WWW-Authenticate, RFC 6750) for a missing, malformed, unknown,
expired or revoked token; 403 for a user token on an operator route; 429 with
Retry-After past the token's rate.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated
from uuid import UUID

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from stride.api import service
from stride.api.errors import ApiError
from stride.api.limits import RateLimiter
from stride.api.tokens import parse_token, secret_matches

REALM = 'Bearer realm="stride"'

bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="token",
    description="`Authorization: Bearer stride_<id>_<secret>`, from `stride tokens issue`.",
)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the token, its user, and whether it may use operator routes."""

    token_id: str
    user_id: UUID
    operator: bool
    expires_at: datetime | None


class TokenCache:
    """Stored tokens by id, so most requests skip the lookup.

    Trusted only while the process's LISTEN connection is up (a revocation
    notifies it and the cache is cleared); entries also expire after `max_age`.
    `generation` guards against a lookup that started before a clear putting
    a stale row back.
    """

    def __init__(
        self,
        max_age: float = 60.0,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_age = max_age
        self.max_entries = max_entries
        self._clock = clock
        self._entries: dict[str, tuple[float, service.StoredToken]] = {}
        self.generation = 0

    def get(self, token_id: str) -> service.StoredToken | None:
        entry = self._entries.get(token_id)
        if entry is None:
            return None
        if self._clock() - entry[0] > self.max_age:
            del self._entries[token_id]
            return None
        return entry[1]

    def put(self, token: service.StoredToken, generation: int) -> None:
        if generation != self.generation:
            return
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[token.id] = (self._clock(), token)

    def clear(self) -> None:
        self.generation += 1
        self._entries.clear()


def _unauthorized(description: str, *, error: str | None = "invalid_token") -> ApiError:
    challenge = (
        REALM if error is None else f'{REALM}, error="{error}", error_description="{description}"'
    )
    return ApiError(401, "unauthorized", description, headers={"WWW-Authenticate": challenge})


class Authenticator:
    """Turns an Authorization header into a Principal, or a 401."""

    def __init__(
        self,
        db: service.Database,
        cache: TokenCache,
        cache_trusted: Callable[[], bool],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._db = db
        self._cache = cache
        self._cache_trusted = cache_trusted
        self._clock = clock

    async def authenticate(self, credentials: HTTPAuthorizationCredentials | None) -> Principal:
        if credentials is None:
            raise _unauthorized("a bearer token is required", error=None)
        parsed = parse_token(credentials.credentials)
        if parsed is None:
            raise _unauthorized("the token is malformed")
        token_id, secret = parsed
        stored = await self._lookup(token_id)
        if stored is None or not secret_matches(secret, stored.secret_sha256):
            raise _unauthorized("the token is not valid")
        state = stored.state(self._clock())
        if state == "revoked":
            raise _unauthorized("the token was revoked")
        if state == "expired":
            raise _unauthorized("the token has expired")
        return Principal(stored.id, stored.user_id, stored.operator, stored.expires_at)

    async def _lookup(self, token_id: str) -> service.StoredToken | None:
        trusted = self._cache_trusted()
        if trusted:
            cached = self._cache.get(token_id)
            if cached is not None:
                return cached
        generation = self._cache.generation
        stored = await service.find_token(self._db, token_id)
        if stored is not None and trusted:
            self._cache.put(stored, generation)
        return stored


async def current_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> Principal:
    """The authenticated caller, within its rate (dependency of every /v1 route)."""
    authenticator: Authenticator = request.app.state.authenticator
    principal = await authenticator.authenticate(credentials)
    limiter: RateLimiter = request.app.state.limiter
    wait = limiter.acquire(principal.token_id)
    if wait > 0:
        raise ApiError(
            429,
            "rate_limited",
            f"more than {limiter.rate:g} requests per second with this token; retry later",
            headers={"Retry-After": RateLimiter.retry_after(wait)},
        )
    return principal


async def operator_principal(
    principal: Annotated[Principal, Depends(current_principal)],
) -> Principal:
    """The caller, who must hold an operator token (403 otherwise)."""
    if not principal.operator:
        raise ApiError(
            403,
            "forbidden",
            "this endpoint needs an operator token",
            headers={"WWW-Authenticate": f'{REALM}, error="insufficient_scope"'},
        )
    return principal


User = Annotated[Principal, Depends(current_principal)]
Operator = Annotated[Principal, Depends(operator_principal)]
