"""Object stores: a local directory and S3, behind one interface (see :mod:`moonstream.store.base`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from moonstream.store.base import (
    IMMUTABLE_CACHE_CONTROL,
    ObjectExists,
    ObjectMeta,
    ObjectNotFound,
    PreconditionFailed,
    Store,
    StoredObject,
    StoreError,
    StoreUnavailable,
    validate_key,
    validate_prefix,
)
from moonstream.store.local import LocalStore
from moonstream.store.retry import (
    DEFAULT_RETRY_POLICY,
    ErrorKind,
    RetryPolicy,
    call_with_retries,
    retry_delay,
)

if TYPE_CHECKING:
    from moonstream.store.s3 import S3Store

__all__ = [
    "DEFAULT_RETRY_POLICY",
    "ENDPOINT_ENV_VARS",
    "IMMUTABLE_CACHE_CONTROL",
    "ErrorKind",
    "LocalStore",
    "ObjectExists",
    "ObjectMeta",
    "ObjectNotFound",
    "PreconditionFailed",
    "RetryPolicy",
    "S3Store",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "StoredObject",
    "call_with_retries",
    "open_store",
    "retry_delay",
    "s3_endpoint_from_env",
    "validate_key",
    "validate_prefix",
]

ENDPOINT_ENV_VARS = ("MOONSTREAM_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
"""Where an S3 endpoint override is looked up, first non-empty wins."""


def __getattr__(name: str) -> Any:
    """``S3Store`` on first use: boto3 takes about as long to import as the rest of the package,
    and a job on a local store (a backfill worker, ``moonstream run``) never needs it."""
    if name == "S3Store":
        from moonstream.store.s3 import S3Store

        return S3Store
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def s3_endpoint_from_env() -> str | None:
    """The S3 endpoint override from the environment (see :data:`ENDPOINT_ENV_VARS`), if any."""
    for name in ENDPOINT_ENV_VARS:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


def open_store(url: str, *, fsync_each_write: bool = True) -> Store:
    """The store a location URL names.

    * a plain path (``./var/site``) or ``file:///abs/path`` -> :class:`LocalStore` (directory created);
    * ``s3://bucket`` or ``s3://bucket/prefix`` -> :class:`S3Store`, endpoint from the environment.

    Any other scheme raises :class:`ValueError`. ``fsync_each_write=False`` opens a local store
    whose durability comes from :meth:`Store.barrier` (see :class:`LocalStore`); S3 ignores it.
    """
    if not url:
        raise ValueError("empty store URL: give a directory, file:///path or s3://bucket/prefix")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "":
        return _local(Path(url), fsync_each_write)
    if scheme == "file":
        if parts.netloc not in ("", "localhost") or parts.query or parts.fragment:
            raise ValueError(f"unsupported file URL {url!r}: use file:///absolute/path")
        return _local(Path(unquote(parts.path)), fsync_each_write)
    if scheme == "s3":
        if not parts.netloc or parts.query or parts.fragment:
            raise ValueError(f"invalid S3 URL {url!r}: use s3://bucket or s3://bucket/prefix")
        from moonstream.store.s3 import S3Store

        return S3Store(parts.netloc, unquote(parts.path).strip("/"), endpoint_url=s3_endpoint_from_env())
    raise ValueError(
        f"unsupported store URL scheme {parts.scheme!r} in {url!r}: "
        "use a directory path, file:///path or s3://bucket/prefix"
    )


def _local(root: Path, fsync_each_write: bool) -> LocalStore:
    root.mkdir(parents=True, exist_ok=True)
    return LocalStore(root, fsync_each_write=fsync_each_write)
