"""Timestamps on the wire: RFC 3339 in UTC with a `Z`, one formatter and one parser for the project."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})"
)


def iso(value: datetime | None) -> str | None:
    """RFC 3339 UTC with Z and millisecond precision: the one timestamp format on the wire."""
    if value is None:
        return None
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def parse_rfc3339(text: Any) -> datetime | None:
    """An RFC 3339 date-time with a time zone offset → aware UTC datetime, microsecond precision
    (digits beyond are cut). None for anything else, out-of-range moments included."""
    if not isinstance(text, str):
        return None
    match = _RFC3339.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    micro = (fraction or "0")[:6].ljust(6, "0")
    offset = "+00:00" if offset in ("Z", "z") else offset
    try:
        return datetime.fromisoformat(f"{year}-{month}-{day}T{hour}:{minute}:{second}.{micro}{offset}").astimezone(UTC)
    except (ValueError, OverflowError):
        return None
