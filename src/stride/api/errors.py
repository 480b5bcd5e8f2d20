"""One error shape for every 4xx/5xx, and the handlers that produce it.

    {"error": "validation_failed", "message": "...",
     "errors": [{"field": "events[3].timestamp", "index": 3, "message": "..."}]}

`field` is a path into the request (body fields as `a.b[2].c`, parameters by
name) and `index` the position within a batch when the error is about one event.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import psycopg
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg_pool import PoolTimeout
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("stride.api")

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Tags of the event-or-batch union in loc paths: not part of what the client sent.
_UNION_TAGS = frozenset({"event", "batch"})


class FieldError(BaseModel):
    field: str
    index: int | None = None
    message: str


class ErrorOut(BaseModel):
    error: str
    message: str
    errors: list[FieldError] = []


class ApiError(HTTPException):
    """A client-facing error: status, a stable code, a sentence, and per-field details."""

    def __init__(
        self,
        status_code: int,
        code: str,
        message: str,
        *,
        errors: Sequence[FieldError] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(status_code, message, dict(headers) if headers else None)
        self.code = code
        self.message = message
        self.errors = list(errors)


def field_path(parts: Iterable[Any]) -> str:
    """('events', 3, 'data', 'a b') -> 'events[3].data["a b"]'."""
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        elif _IDENTIFIER.match(str(part)):
            text += f".{part}" if text else str(part)
        else:
            text += "[" + _quote(str(part)) + "]"
    return text or "body"


def _quote(key: str) -> str:
    printable = "".join(ch if ch.isprintable() else f"\\u{ord(ch):04x}" for ch in key[:64])
    return '"' + printable.replace('"', '\\"') + ("…" if len(key) > 64 else "") + '"'


def batch_index(parts: Sequence[Any]) -> int | None:
    """The batch position a body path points into (`events[i]…`), if any."""
    if len(parts) >= 2 and parts[0] == "events" and isinstance(parts[1], int):
        return parts[1]
    return None


def _error_response(status: int, body: ErrorOut, headers: Mapping[str, str] | None = None) -> Any:
    return JSONResponse(
        body.model_dump(mode="json"), status_code=status, headers=dict(headers or {})
    )


def _validation_errors(exc: RequestValidationError) -> list[FieldError]:
    found = []
    for error in exc.errors():
        loc = list(error.get("loc", ()))
        where = loc[0] if loc else "body"
        parts = [p for p in loc[1:] if not (where == "body" and p in _UNION_TAGS)]
        message = str(error.get("msg", "invalid"))
        if error.get("type") == "extra_forbidden":
            message = "unknown field"
        if message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        if where == "body":
            found.append(
                FieldError(field=field_path(parts), index=batch_index(parts), message=message)
            )
        else:
            found.append(
                FieldError(field=field_path(parts) if parts else str(where), message=message)
            )
    return found


def install_error_handlers(app: FastAPI) -> None:
    """Every error the app can raise, answered in the one shape."""

    async def api_error(_: Request, exc: Exception) -> Any:
        assert isinstance(exc, ApiError)
        body = ErrorOut(error=exc.code, message=exc.message, errors=exc.errors)
        return _error_response(exc.status_code, body, exc.headers)

    async def http_error(_: Request, exc: Exception) -> Any:
        assert isinstance(exc, StarletteHTTPException)
        codes = {404: "not_found", 405: "method_not_allowed"}
        code = codes.get(exc.status_code, "http_error")
        body = ErrorOut(error=code, message=str(exc.detail))
        return _error_response(exc.status_code, body, exc.headers)

    async def validation_error(_: Request, exc: Exception) -> Any:
        assert isinstance(exc, RequestValidationError)
        errors = _validation_errors(exc)
        first = errors[0] if errors else None
        summary = f"{first.field}: {first.message}" if first else "invalid request"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        body = ErrorOut(error="validation_failed", message=summary + more, errors=errors)
        return _error_response(422, body)

    async def database_unavailable(_: Request, exc: Exception) -> Any:
        log.warning("database unavailable: %s", " ".join(str(exc).split()))
        body = ErrorOut(error="database_unavailable", message="the database is not reachable")
        return _error_response(503, body, {"Retry-After": "1"})

    async def database_refused(_: Request, exc: Exception) -> Any:
        # Input validation should have caught it; say what PostgreSQL refused.
        assert isinstance(exc, psycopg.DataError)
        log.warning("database refused a value: %s", exc)
        message = "the database refused a value: " + " ".join(str(exc).split())
        return _error_response(422, ErrorOut(error="invalid_value", message=message))

    async def unexpected(_: Request, exc: Exception) -> Any:
        log.error("unhandled error", exc_info=exc)
        body = ErrorOut(error="internal_error", message="internal server error")
        return _error_response(500, body)

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(PoolTimeout, database_unavailable)
    app.add_exception_handler(psycopg.OperationalError, database_unavailable)
    app.add_exception_handler(psycopg.DataError, database_refused)
    app.add_exception_handler(Exception, unexpected)


_DESCRIPTIONS = {
    400: "Malformed JSON",
    401: "Missing, malformed, unknown, expired or revoked token (see WWW-Authenticate)",
    403: "An operator endpoint called with a user token",
    404: "No such resource for this token's user",
    413: "Body larger than the configured cap",
    415: "Body is not application/json",
    422: "Invalid field: `errors` names each one (and its batch index)",
    429: "Past the token's rate limit (see Retry-After)",
    503: "The database is not reachable",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for these error statuses, all in the ErrorOut shape."""
    return {code: {"model": ErrorOut, "description": _DESCRIPTIONS[code]} for code in codes}


def invalid(field: str, message: str, *, index: int | None = None) -> ApiError:
    """A 422 about one field."""
    return ApiError(
        422,
        "validation_failed",
        f"{field}: {message}",
        errors=[FieldError(field=field, index=index, message=message)],
    )
