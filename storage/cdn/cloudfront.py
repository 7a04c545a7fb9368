"""``cloudfront`` (paths): ``CreateInvalidation``, at most 3000 paths each, the ``n``-th with
``CallerReference = f"{reference}-{n}"``. CloudFront ignores ``tags`` (it cannot purge by tag).
"""

from __future__ import annotations

from typing import Any

from .base import CdnPurgeError, _chunks, _path, _unique

CLOUDFRONT_MAX_PATHS = 3000


class CloudFrontPurger:
    """``cloudfront``: one invalidation per 3000 paths (sorted, deduplicated, each starting with ``/``).

    The ``n``-th batch has ``CallerReference = f"{reference}-{n}"``: retrying the same purge resubmits
    identical batches, which CloudFront answers with the existing invalidations instead of new ones.
    """

    def __init__(self, distribution_id: str, *, endpoint_url: str | None = None, client: Any = None) -> None:
        self.distribution_id = distribution_id
        if client is None:
            import boto3
            from botocore.config import Config

            client = boto3.session.Session().client(
                "cloudfront",
                endpoint_url=endpoint_url,
                region_name="us-east-1",
                config=Config(
                    retries={"max_attempts": 8, "mode": "standard"}, connect_timeout=5, read_timeout=30
                ),
            )
        self.client = client

    def purge(self, tags: list[str], paths: list[str], reference: str) -> None:
        items = sorted(_unique([_path(p) for p in paths]))
        for n, batch in enumerate(_chunks(items, CLOUDFRONT_MAX_PATHS)):
            try:
                self.client.create_invalidation(
                    DistributionId=self.distribution_id,
                    InvalidationBatch={
                        "Paths": {"Quantity": len(batch), "Items": batch},
                        "CallerReference": f"{reference}-{n}",
                    },
                )
            except Exception as exc:
                raise CdnPurgeError(
                    f"cloudfront: invalidation {reference}-{n} of {len(batch)} paths on "
                    f"{self.distribution_id} failed: {exc}"
                ) from exc
