"""CDN purge providers behind one protocol, chosen by ``CMS_CDN_PROVIDER``.

- ``none``: nothing (`NoPurger`, in `base` with the `CdnPurger` protocol and `CdnPurgeError`).
- ``cloudfront`` (paths): `CloudFrontPurger`, in `cloudfront`.
- ``fastly`` (tags): `FastlyPurger`, in `fastly`.
- ``cloudflare`` (tags): `CloudflarePurger`, in `cloudflare`.
- ``http`` (tags and paths, Varnish/nginx): `HttpPurger`, in `http`.

Tag-based providers ignore ``paths`` and CloudFront ignores ``tags`` (it cannot purge by tag).
"""

from .base import CdnPurgeError as CdnPurgeError
from .base import CdnPurger as CdnPurger
from .base import NoPurger as NoPurger
from .cloudflare import CloudflarePurger as CloudflarePurger
from .cloudfront import CloudFrontPurger as CloudFrontPurger
from .fastly import FastlyPurger as FastlyPurger
from .http import HttpPurger as HttpPurger
