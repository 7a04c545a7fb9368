"""``cloudflare`` (tags): ``POST {api}/zones/{zone}/purge_cache`` with ``{"tags": […]}`` (≤ 100 tags each)
and ``Authorization: Bearer <token>``. ``paths`` are ignored.
"""

from __future__ import annotations

import httpx

from .base import CdnPurgeError, _chunks, _HttpPurger, _unique

CLOUDFLARE_MAX_TAGS = 100


class CloudflarePurger(_HttpPurger):
    """``cloudflare``: purge by cache tag, at most 100 tags per request; ``success: false`` is a failure."""

    provider = "cloudflare"

    def __init__(
        self,
        zone_id: str,
        token: str,
        *,
        api_url: str = "https://api.cloudflare.com/client/v4",
        client: httpx.Client | None = None,
    ) -> None:
        super().__init__(client)
        self.url = f"{api_url.rstrip('/')}/zones/{zone_id}/purge_cache"
        self.token = token

    def purge(self, tags: list[str], paths: list[str], reference: str) -> None:
        for batch in _chunks(_unique(tags), CLOUDFLARE_MAX_TAGS):
            response = self._send(
                "POST", self.url, json={"tags": batch}, headers={"Authorization": f"Bearer {self.token}"}
            )
            try:
                body = response.json()
            except ValueError:
                body = None
            if isinstance(body, dict) and body.get("success") is False:
                raise CdnPurgeError(f"cloudflare: purge_cache refused: {body.get('errors')!r}")
