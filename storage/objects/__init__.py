"""The object store for prerendered files: S3 (or any S3-compatible store) and a local directory.

Both implement `ObjectStore`; `base` holds the contract they share (keys, metadata, the version
guard) and `AsyncObjectStore`, `local` the directory store, `s3` the bucket store.
"""

from .base import AsyncObjectStore as AsyncObjectStore
from .base import ObjectStore as ObjectStore
from .base import StoredObject as StoredObject
from .base import validate_key as validate_key
from .base import version_of as version_of
from .local import LocalObjectStore as LocalObjectStore
from .s3 import ConcurrentWriteError as ConcurrentWriteError
from .s3 import S3ObjectStore as S3ObjectStore
from .s3 import s3_client as s3_client
