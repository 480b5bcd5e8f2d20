"""Bearer tokens, pure: mint, parse, digest, check (no I/O).

A token reads `stride_<id>_<secret>`: `id` is 16 hex digits, public (it names
the token in `stride tokens list/revoke`), `secret` is 256 random bits in
URL-safe base64. Only SHA-256(secret) is stored. A fast digest is enough: the
secret is random, not a password, so there is nothing to brute-force.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

PREFIX = "stride"
SECRET_BYTES = 32  # 256 bits
_TOKEN = re.compile(r"^stride_(?P<id>[0-9a-f]{16})_(?P<secret>[A-Za-z0-9_-]{43})$")


@dataclass(frozen=True, slots=True)
class MintedToken:
    id: str
    secret: str

    @property
    def text(self) -> str:
        """What the client sends: shown once, never stored."""
        return f"{PREFIX}_{self.id}_{self.secret}"

    @property
    def digest(self) -> bytes:
        return secret_digest(self.secret)


def mint_token() -> MintedToken:
    """A fresh token id and 256-bit secret."""
    return MintedToken(secrets.token_hex(8), secrets.token_urlsafe(SECRET_BYTES))


def parse_token(text: str) -> tuple[str, str] | None:
    """(id, secret) of a well-formed token, else None."""
    match = _TOKEN.match(text)
    return (match["id"], match["secret"]) if match else None


def secret_digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("ascii")).digest()


def secret_matches(secret: str, stored_digest: bytes) -> bool:
    """Compare in constant time, so response timing reveals nothing about the digest."""
    return hmac.compare_digest(secret_digest(secret), stored_digest)
