"""The dashboard's HTML forms: application/x-www-form-urlencoded bodies, read with a cap.

Parsed here with the standard library rather than through a multipart parser:
the dashboard's forms carry a few short fields and never files.
"""

from __future__ import annotations

import email.message
import math
import re
from urllib.parse import parse_qsl

from starlette.requests import Request

MAX_FORM_BYTES = 16 * 1024
MAX_FIELDS = 20
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"


class FormError(Exception):
    """The request's body is not a form the dashboard can read; `status` says how."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _content_type(value: str | None) -> str:
    message = email.message.Message()
    message["content-type"] = value or ""
    return message.get_content_type()


async def read_form(request: Request, max_bytes: int = MAX_FORM_BYTES) -> dict[str, str]:
    """The form's fields (the first value of each name).

    415 for another content type, 413 past `max_bytes` (checked while
    streaming, not only on Content-Length), 400 for bytes that are not UTF-8 or
    for more than MAX_FIELDS fields.
    """
    if _content_type(request.headers.get("content-type")) != FORM_CONTENT_TYPE:
        raise FormError(415, f"send the form as {FORM_CONTENT_TYPE}")
    declared = request.headers.get("content-length")
    if (
        declared is not None
        and re.fullmatch(r"[0-9]{1,20}", declared)
        and int(declared) > max_bytes
    ):
        raise FormError(413, "the form is too large")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > max_bytes:
            raise FormError(413, "the form is too large")
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(
            text,
            keep_blank_values=True,
            strict_parsing=False,
            encoding="utf-8",
            errors="strict",
            max_num_fields=MAX_FIELDS,
        )
    except (UnicodeDecodeError, ValueError):
        raise FormError(400, "the form could not be read") from None
    fields: dict[str, str] = {}
    for name, value in pairs:
        fields.setdefault(name, value)
    return fields


def clean_text(value: str | None, *, max_chars: int) -> str | None:
    """One printable line, trimmed; None when blank. Raises ValueError when unprintable
    or too long."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if len(value) > max_chars:
        raise ValueError(f"at most {max_chars} characters")
    if any(not ch.isprintable() for ch in value):
        raise ValueError("control characters are not allowed")
    return value


def positive_number(value: str | None, *, name: str) -> float | None:
    """A positive finite number, or None when blank. Raises ValueError otherwise."""
    if value is None or not value.strip():
        return None
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{name} must be a number") from None
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"{name} must be a positive number")
    return number


def whole_number(value: str | None, *, name: str, low: int, high: int) -> int:
    """An integer within [low, high]. Raises ValueError otherwise."""
    if value is None or not re.fullmatch(r"[0-9]{1,12}", value.strip()):
        raise ValueError(f"{name} must be a whole number from {low} to {high}")
    number = int(value.strip())
    if not low <= number <= high:
        raise ValueError(f"{name} must be a whole number from {low} to {high}")
    return number
