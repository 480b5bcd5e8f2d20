"""The route class of every API route: who is calling is settled before the body is read.

FastAPI reads and parses a request's body before it resolves dependencies, so an
anonymous client could make the server parse megabytes of JSON only to be told
401. For routes that take a body, the token is checked first (a cache hit, when
the dependency checks it again), then the content type (415), and only then is
the body read, capped and parsed (stride.api.limits.ApiRequest).
"""

from __future__ import annotations

import email.message
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from stride.api.auth import Authenticator, bearer_scheme
from stride.api.errors import ApiError
from stride.api.limits import ApiRequest

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def is_json(content_type: str | None) -> bool:
    if not content_type:
        return False
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


class ApiRoute(APIRoute):
    """Routes whose bodies are JSON (else 415), read only for a valid token."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        takes_body = self.body_field is not None

        async def handle(request: Request) -> Response:
            if takes_body and request.method in BODY_METHODS:
                authenticator: Authenticator = request.app.state.authenticator
                await authenticator.authenticate(await bearer_scheme(request))
                content_type = request.headers.get("content-type")
                if not is_json(content_type):
                    raise ApiError(
                        415,
                        "unsupported_media_type",
                        f"send the body as application/json, not {content_type or 'nothing'}",
                    )
            return await handler(ApiRequest(request.scope, request.receive))

        return handle
