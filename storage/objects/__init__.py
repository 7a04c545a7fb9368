"""The object store for prerendered files (see `local`, which still holds all of it)."""

from .local import AsyncObjectStore as AsyncObjectStore
from .local import ConcurrentWriteError as ConcurrentWriteError
from .local import LocalObjectStore as LocalObjectStore
from .local import ObjectStore as ObjectStore
from .local import S3ObjectStore as S3ObjectStore
from .local import StoredObject as StoredObject
from .local import s3_client as s3_client
from .local import validate_key as validate_key
