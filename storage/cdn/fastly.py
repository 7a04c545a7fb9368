"""``fastly`` (tags): ``POST {api}/service/{id}/purge`` with ``Surrogate-Key: k1 k2 …`` (≤ 256 keys each)
and ``Fastly-Key: <token>``. ``paths`` are ignored.
"""

from __future__ import annotations

import httpx

from .base import _chunks, _HttpPurger, _unique

FASTLY_MAX_KEYS = 256


class FastlyPurger(_HttpPurger):
    """``fastly``: surrogate-key purge, at most 256 keys per request."""

    provider = "fastly"

    def __init__(
        self,
        service_id: str,
        token: str,
        *,
        api_url: str = "https://api.fastly.com",
        client: httpx.Client | None = None,
    ) -> None:
        super().__init__(client)
        self.url = f"{api_url.rstrip('/')}/service/{service_id}/purge"
        self.token = token

    def purge(self, tags: list[str], paths: list[str], reference: str) -> None:
        for batch in _chunks(_unique(tags), FASTLY_MAX_KEYS):
            self._send(
                "POST",
                self.url,
                headers={
                    "Fastly-Key": self.token,
                    "Surrogate-Key": " ".join(batch),
                    "Accept": "application/json",
                },
            )
