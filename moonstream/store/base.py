"""The one store interface: local directory and S3 implement it the same way.

Keys are ``/``-separated relative paths (``v1/BTC/market/latest.json``). Every write is atomic: a reader
sees the old object or the new one, never a part. Two kinds of conditional write exist:

* :meth:`Store.create` - create-only (S3 ``If-None-Match: *``); immutable objects use it.
* :meth:`Store.replace` - compare-and-swap (S3 ``If-Match: <etag>``); pointers, manifests, state.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from dataclasses import dataclass

IMMUTABLE_CACHE_CONTROL = "public, max-age=31536000, immutable"


@dataclass(frozen=True)
class ObjectMeta:
    """HTTP metadata stored with an object and sent when it is served."""

    content_type: str = "application/octet-stream"
    cache_control: str | None = None
    content_encoding: str | None = None


@dataclass(frozen=True)
class StoredObject:
    key: str
    data: bytes
    etag: str
    meta: ObjectMeta


class StoreError(Exception):
    """Base of every store failure; messages name the store and key, never local secrets."""


class ObjectNotFound(StoreError):
    """The key does not exist."""


class ObjectExists(StoreError):
    """A create-only write found the key already present."""


class PreconditionFailed(StoreError):
    """A compare-and-swap write found the object changed (or present/absent) since it was read."""


class StoreUnavailable(StoreError):
    """The store kept failing (5xx, connection errors) after every retry."""


TEMP_PREFIX = ".tmp-"
"""Names starting with this are in-progress writes of a local store; no key part may start with it."""


def validate_key(key: str) -> str:
    """Reject keys that could escape a prefix, name a directory, or look like a temporary file."""
    if not key or key.startswith("/") or key.endswith("/") or "\\" in key or "\x00" in key:
        raise ValueError(f"invalid store key {key!r}")
    parts = key.split("/")
    if (
        "" in parts
        or "." in parts
        or ".." in parts
        or parts[0] == ".meta"
        or key.startswith(TEMP_PREFIX)  # a part starting with TEMP_PREFIX: the first or one after a "/"
        or f"/{TEMP_PREFIX}" in key
    ):
        raise ValueError(f"invalid store key {key!r}")
    return key


def validate_prefix(prefix: str) -> str:
    """Reject listing prefixes that could escape the store; ``""`` and partial names are fine."""
    if prefix.startswith("/") or "\\" in prefix or "\x00" in prefix:
        raise ValueError(f"invalid store prefix {prefix!r}")
    head, _, _ = prefix.rpartition("/")
    if head and any(part in ("", ".", "..") for part in head.split("/")):
        raise ValueError(f"invalid store prefix {prefix!r}")
    return prefix


class Store(abc.ABC):
    """A place objects live: read, list, create-only write, compare-and-swap replace."""

    url: str

    @abc.abstractmethod
    def read(self, key: str) -> StoredObject:
        """The object's bytes, etag and metadata; raises :class:`ObjectNotFound`."""

    @abc.abstractmethod
    def head(self, key: str) -> StoredObject | None:
        """Etag and metadata without the body (``data`` is ``b""``), or None if absent."""

    @abc.abstractmethod
    def list(self, prefix: str = "") -> Iterator[str]:
        """Every key under ``prefix`` (a plain string prefix), in sorted order."""

    @abc.abstractmethod
    def create(self, key: str, data: bytes, meta: ObjectMeta) -> str:
        """Write a new object; raise :class:`ObjectExists` if the key exists. Returns the etag."""

    @abc.abstractmethod
    def replace(self, key: str, data: bytes, meta: ObjectMeta, *, expected_etag: str | None) -> str:
        """Compare-and-swap: write only if the current etag is ``expected_etag``.

        ``expected_etag=None`` means "only if absent". Raises :class:`PreconditionFailed` otherwise.
        Returns the new etag.
        """

    @abc.abstractmethod
    def put(self, key: str, data: bytes, meta: ObjectMeta) -> str:
        """Unconditional atomic write (for objects only one writer ever owns)."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove the key if present (absent is not an error)."""

    def barrier(self) -> None:
        """Make every write so far durable before any write after this call.

        A no-op for stores whose writes are durable when they return (S3, a :class:`LocalStore`
        that fsyncs each write); writers call it between an object and whatever names it."""
        return None

    def read_bytes(self, key: str) -> bytes:
        return self.read(key).data

    def exists(self, key: str) -> bool:
        return self.head(key) is not None

    def create_or_same(self, key: str, data: bytes, meta: ObjectMeta) -> bool:
        """Create-only write that treats an identical existing object as success.

        Returns True if written, False if the same bytes were already there. Different bytes under
        an existing immutable key raise :class:`ObjectExists`: immutable means immutable.
        """
        try:
            self.create(key, data, meta)
            return True
        except ObjectExists:
            if self.read_bytes(key) == data:
                return False
            raise
