"""CDN purge providers (see `base`, which still holds all of them)."""

from .base import CdnPurgeError as CdnPurgeError
from .base import CdnPurger as CdnPurger
from .base import CloudflarePurger as CloudflarePurger
from .base import CloudFrontPurger as CloudFrontPurger
from .base import FastlyPurger as FastlyPurger
from .base import HttpPurger as HttpPurger
from .base import NoPurger as NoPurger
