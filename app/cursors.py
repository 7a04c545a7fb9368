"""The one codec of opaque list cursors: base64url (no padding) of a msgspec struct's JSON.

Only a cursor this process could have written, byte for byte, decodes: anything else (another
encoding of the same JSON, extra fields, a wrong shape) is a 400 on `cursor`.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from typing import TypeVar

import msgspec

from .problems import malformed

T = TypeVar("T")

_B64URL = re.compile(r"[A-Za-z0-9_-]+")
_encoder = msgspec.json.Encoder()


def encode(value: msgspec.Struct) -> str:
    return base64.urlsafe_b64encode(_encoder.encode(value)).rstrip(b"=").decode("ascii")


def decode(text: str, kind: type[T], *, max_length: int, detail: str = "is not a valid cursor") -> T:
    """The struct in `text`, or `malformed("cursor", detail)`."""
    bad = malformed("cursor", detail)
    if len(text) > max_length or not _B64URL.fullmatch(text):
        raise bad
    try:
        value = msgspec.json.decode(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)), type=kind)
    except (binascii.Error, ValueError, msgspec.DecodeError, msgspec.ValidationError):
        raise bad from None
    if encode(value) != text:  # type: ignore[arg-type]
        raise bad
    return value


def page_after(items: list[T], key: Callable[[T], str], limit: int, after: str | None) -> tuple[list[T], str | None]:
    """A page of a small list sorted by `key`: the items after `after` (a key), and the next cursor
    (the page's last key) when more follow. For lists short enough to hold in memory (content
    types, locales)."""
    ordered = sorted(items, key=key)
    rest = [item for item in ordered if after is None or key(item) > after]
    page = rest[:limit]
    return page, key(page[-1]) if len(rest) > limit else None
