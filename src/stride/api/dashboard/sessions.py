"""Dashboard sessions and CSRF tokens, pure: mint, digest, compare, cookie attributes.

The session cookie holds 256 random bits; only their SHA-256 is stored. It is
HttpOnly (no script reads it), SameSite=Strict (no other site's page sends it)
and scoped to /admin. Every state-changing request is a POST carrying the
session's synchronizer token (`csrf_token` form field), compared in constant
time. The sign-in form, which has no session yet, is protected the same way by
a short-lived cookie whose value the form echoes (double submit), so no other
site can sign a browser in under a token of its choosing.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta
from urllib.parse import urlsplit

from starlette.responses import Response

SESSION_COOKIE = "stride_admin_session"
SIGNIN_COOKIE = "stride_admin_signin"
COOKIE_PATH = "/admin"
SESSION_LIFETIME = timedelta(hours=12)
SIGNIN_LIFETIME = timedelta(minutes=30)
CSRF_FIELD = "csrf_token"


def new_secret() -> str:
    """256 random bits, URL-safe (a session id, a CSRF token)."""
    return secrets.token_urlsafe(32)


def session_digest(session_id: str) -> bytes:
    return hashlib.sha256(session_id.encode("utf-8", "surrogateescape")).digest()


def tokens_match(sent: str | None, expected: str) -> bool:
    """Constant-time comparison; a missing token never matches."""
    if not sent:
        return False
    return hmac.compare_digest(sent.encode("utf-8", "replace"), expected.encode("utf-8"))


def set_cookie(
    response: Response, name: str, value: str, *, secure: bool, max_age: timedelta
) -> None:
    """Set one of the dashboard's cookies: HttpOnly, SameSite=Strict, scoped to /admin."""
    response.set_cookie(
        name,
        value,
        max_age=int(max_age.total_seconds()),
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=secure,
    )


def clear_cookie(response: Response, name: str) -> None:
    response.delete_cookie(name, path=COOKIE_PATH, httponly=True, samesite="strict")


def safe_next(target: str | None, default: str = "/admin/backfill") -> str:
    """Where to go after signing in: a dashboard path on this site, else `default`.

    Refuses absolute and scheme-relative URLs (`//evil.example`), backslashes
    (browsers read `/\\evil` as `//evil`) and control characters, so the
    parameter cannot send the operator to another site.
    """
    if not target or not target.startswith("/admin") or "\\" in target:
        return default
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in target):
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return default
    return target
