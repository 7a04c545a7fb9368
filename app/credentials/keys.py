"""Key format: prefixed, checksummed, stored only as SHA-256 hashes."""

from __future__ import annotations

import hashlib
import secrets
import string
import zlib
from collections.abc import Iterable

ALPHABET = string.digits + string.ascii_letters
KIND_PREFIX = {"delivery": "cms_dk_", "preview": "cms_pk_", "management": "cms_mk_", "preview_token": "cms_pt_"}
PREFIX_KIND = {v: k for k, v in KIND_PREFIX.items()}
RANDOM_LEN = 32
CHECKSUM_LEN = 6
DISPLAY_LEN = 8

SCOPES = (
    "content:read", "content:write", "content:publish", "schema:write", "assets:write",
    "webhooks:manage", "credentials:manage", "audit:read",
)


def _base62(number: int, width: int) -> str:
    chars = []
    for _ in range(width):
        number, rem = divmod(number, 62)
        chars.append(ALPHABET[rem])
    return "".join(reversed(chars))


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode()), CHECKSUM_LEN)


def generate_secret(kind: str) -> str:
    body = "".join(secrets.choice(ALPHABET) for _ in range(RANDOM_LEN))
    return f"{KIND_PREFIX[kind]}{body}{_checksum(body)}"


def display_prefix(secret: str) -> str:
    """The non-secret start of a key, shown in inventories (e.g. cms_mk_8f3k2x9q)."""
    return secret[: len("cms_mk_") + DISPLAY_LEN]


def well_formed(secret: str) -> bool:
    """Cheap local check that rejects typos and random strings before any database work."""
    kind_prefix = secret[:7]
    if kind_prefix not in PREFIX_KIND or len(secret) != 7 + RANDOM_LEN + CHECKSUM_LEN:
        return False
    body, checksum = secret[7 : 7 + RANDOM_LEN], secret[7 + RANDOM_LEN :]
    return all(c in ALPHABET for c in body) and secrets.compare_digest(_checksum(body), checksum)


def hash_secret(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def presented_in(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The credential an ASGI request presents: the one parser of the full app and the delivery
    fast path. None: none presented; "": presented but unusable (a 401, never anonymous), which
    includes sending several Authorization or X-API-Key headers (which one counts is ambiguous)."""
    authorization = api_key = None
    for name, value in headers:
        if name == b"authorization":
            if authorization is not None:
                return ""
            authorization = value
        elif name == b"x-api-key":
            if api_key is not None:
                return ""
            api_key = value
    if authorization is not None:
        scheme, _, token = authorization.decode("latin-1").partition(" ")
        token = token.strip()
        return token if scheme.lower() == "bearer" and token else ""
    if api_key is not None:
        return api_key.decode("latin-1").strip()
    return None
