"""Publishing like a careful release tool: immutable objects first, pointers and manifests last.

A :class:`Publication` collects everything a job wants to publish; nothing touches the store until
:meth:`Publication.commit`. Commit writes every immutable object (create-only), and only when all of
them are in place updates the pointers (compare-and-swap), so no pointer ever names a missing object.
Used as ``with publication(store, layout) as pub: ...``, an exception inside the block writes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from moonstream.publish.encode import canonical_json, decode_json_object, gzip_bytes
from moonstream.publish.errors import ImmutableConflict, PublishError
from moonstream.publish.layout import SiteLayout
from moonstream.store.base import (
    ObjectExists,
    ObjectMeta,
    ObjectNotFound,
    PreconditionFailed,
    Store,
    StoredObject,
    StoreError,
)

logger = logging.getLogger(__name__)

#: How often a pointer update re-reads and retries after losing a compare-and-swap race.
POINTER_CAS_ATTEMPTS = 8

PointerMerge = Callable[[Any | None], Any | None]
"""Given the pointer's current document (None if absent), the new document, or None to leave it."""

BytesMerge = Callable[[bytes | None], bytes | None]
"""Like :data:`PointerMerge` for a binary pointer: current bytes (None if absent) to new bytes or None."""


@dataclass
class PublishReport:
    immutables_written: int = 0
    immutables_unchanged: int = 0
    pointers_written: int = 0
    pointers_unchanged: int = 0
    keys_written: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Immutable:
    key: str
    data: bytes
    meta: ObjectMeta


@dataclass(frozen=True)
class _Pointer:
    key: str
    merge: PointerMerge
    meta: ObjectMeta
    binary: bool = False


class Publication:
    """What one job publishes, committed in a safe order."""

    def __init__(self, store: Store, layout: SiteLayout, *, replace_immutable: bool = False) -> None:
        self._store = store
        self._layout = layout
        self._replace_immutable = replace_immutable
        self._immutables: list[_Immutable] = []
        self._pointers: list[_Pointer] = []
        # encodings of the documents queued as immutables, by identity: a ``latest`` pointer to the
        # same document reuses them instead of serializing and compressing it again
        self._encoded: dict[int, tuple[Any, bytes]] = {}
        self.report = PublishReport()

    @property
    def store(self) -> Store:
        """The store this publication commits to (for reads while queueing, e.g. history chunks)."""
        return self._store

    def encode_json(self, document: Any) -> bytes:
        data = canonical_json(document)
        return gzip_bytes(data) if self._layout.gzip_json else data

    def add_immutable_json(self, key: str, document: Any) -> None:
        data = self.encode_json(document)
        self._encoded[id(document)] = (document, data)
        self.add_immutable(key, data, self._layout.immutable_json_meta())

    def add_immutable(self, key: str, data: bytes, meta: ObjectMeta) -> None:
        self._immutables.append(_Immutable(key, data, meta))

    def update_pointer_json(self, key: str, merge: PointerMerge) -> None:
        """Queue a compare-and-swap update of a JSON pointer document computed by ``merge``."""
        self._pointers.append(_Pointer(key, merge, self._layout.pointer_json_meta()))

    def update_pointer_bytes(self, key: str, merge: BytesMerge, meta: ObjectMeta) -> None:
        """Queue a compare-and-swap update of a binary pointer object (stored as is) computed by ``merge``."""
        self._pointers.append(_Pointer(key, merge, meta, binary=True))

    def commit(self) -> PublishReport:
        report = self.report
        try:
            for item in self._immutables:
                self._write_immutable(item, report)
            if self._immutables and self._pointers:
                self._store.barrier()  # no pointer may name an object a power loss could take back
            for pointer in self._pointers:
                self._write_pointer(pointer, report)
        except StoreError as exc:
            raise PublishError(f"publishing to {self._store.url} failed: {type(exc).__name__}") from exc
        return report

    def _write_immutable(self, item: _Immutable, report: PublishReport) -> None:
        try:
            written = self._store.create_or_same(item.key, item.data, item.meta)
        except ObjectExists as exc:
            if not self._replace_immutable:
                raise ImmutableConflict(
                    f"{item.key} exists with different content (did an engine change?); publish to a new "
                    "site prefix or re-run with replace-immutable (CDN copies must then be invalidated)"
                ) from exc
            self._store.put(item.key, item.data, item.meta)
            logger.warning("replaced immutable object %s", item.key)
            written = True
        if written:
            report.immutables_written += 1
            report.keys_written.append(item.key)
        else:
            report.immutables_unchanged += 1

    def _encode_pointer(self, document: Any) -> bytes:
        queued = self._encoded.get(id(document))
        if queued is not None and queued[0] is document:
            return queued[1]
        return self.encode_json(document)

    def _write_pointer(self, pointer: _Pointer, report: PublishReport) -> None:
        for _ in range(POINTER_CAS_ATTEMPTS):
            current: StoredObject | None
            try:
                current = self._store.read(pointer.key)
                current_doc = (
                    current.data
                    if pointer.binary
                    else decode_json_object(current.data, current.meta.content_encoding)
                )
            except ObjectNotFound:
                current, current_doc = None, None
            new_doc = pointer.merge(current_doc)
            if new_doc is None:
                report.pointers_unchanged += 1
                return
            data = new_doc if pointer.binary else self._encode_pointer(new_doc)
            if current is not None and current.data == data:
                report.pointers_unchanged += 1
                return
            try:
                self._store.replace(
                    pointer.key, data, pointer.meta, expected_etag=current.etag if current else None
                )
            except PreconditionFailed:
                logger.info("pointer %s changed under us; re-reading", pointer.key)
                continue
            report.pointers_written += 1
            report.keys_written.append(pointer.key)
            return
        raise PublishError(f"pointer {pointer.key} kept changing; gave up after {POINTER_CAS_ATTEMPTS} tries")


@contextmanager
def publication(
    store: Store, layout: SiteLayout, *, replace_immutable: bool = False
) -> Iterator[Publication]:
    """Collect a publication; commit it only if the block finishes without an exception."""
    pub = Publication(store, layout, replace_immutable=replace_immutable)
    yield pub
    pub.commit()
