"""Publishing like a careful release tool: immutable objects first, pointers and manifests last.

A :class:`Publication` collects everything a job wants to publish; nothing touches the store until
:meth:`Publication.commit`. Commit writes every immutable object (create-only), and only when all of
them are in place updates the pointers (compare-and-swap), so no pointer ever names a missing object.
Used as ``with publication(store, layout) as pub: ...``, an exception inside the block writes nothing.

A backfill publishes a run of minutes whose pointers each minute rewrites (``latest``, indexes,
partial history chunks). Given a :class:`PointerBuffer`, a publication writes its immutable objects
at once but applies its pointer updates to documents held in memory; :meth:`PointerBuffer.flush`
then writes each changed pointer once, after a barrier, so the rule above still holds.
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


def encode_document(layout: SiteLayout, document: Any) -> bytes:
    """A JSON document's stored bytes: canonical JSON, gzip'd when the layout says so."""
    data = canonical_json(document)
    return gzip_bytes(data) if layout.gzip_json else data


def read_pointer(store: Store, key: str, *, binary: bool) -> tuple[StoredObject | None, Any | None]:
    """A pointer as stored and as its merge sees it: the bytes of a binary one, the decoded JSON of
    any other; ``(None, None)`` if absent. Decoding errors (ValueError, OSError, EOFError) propagate."""
    try:
        current = store.read(key)
    except ObjectNotFound:
        return None, None
    if binary:
        return current, current.data
    return current, decode_json_object(current.data, current.meta.content_encoding)


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

    def __init__(
        self,
        store: Store,
        layout: SiteLayout,
        *,
        replace_immutable: bool = False,
        pointers: PointerBuffer | None = None,
    ) -> None:
        if pointers is not None and pointers.store is not store:
            raise ValueError("a pointer buffer serves the store it was made for")
        self._store = store
        self._layout = layout
        self._replace_immutable = replace_immutable
        self._buffer = pointers
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
        return encode_document(self._layout, document)

    def pointer_document(self, key: str) -> Any | None:
        """A JSON pointer's document as the next update would see it (held ones included), None if
        absent. Raises what decoding raises (ValueError, OSError, EOFError) for an unreadable one."""
        if self._buffer is not None:
            return self._buffer.document(key)
        return read_pointer(self._store, key, binary=False)[1]

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
            if self._buffer is not None:
                # a held pointer to a document queued here keeps its bytes for the flush
                known = self._queued_encoding if self._buffer.layout == self._layout else None
                for pointer in self._pointers:
                    self._buffer.hold(pointer, report, known)
                return report
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

    def _queued_encoding(self, document: Any) -> bytes | None:
        """The stored bytes of ``document`` if it was queued here as an immutable, else None."""
        queued = self._encoded.get(id(document))
        return queued[1] if queued is not None and queued[0] is document else None

    def _encode_pointer(self, document: Any) -> bytes:
        data = self._queued_encoding(document)
        return self.encode_json(document) if data is None else data

    def _write_pointer(self, pointer: _Pointer, report: PublishReport) -> None:
        for _ in range(POINTER_CAS_ATTEMPTS):
            current, current_doc = read_pointer(self._store, pointer.key, binary=pointer.binary)
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
    store: Store,
    layout: SiteLayout,
    *,
    replace_immutable: bool = False,
    pointers: PointerBuffer | None = None,
) -> Iterator[Publication]:
    """Collect a publication; commit it only if the block finishes without an exception."""
    pub = Publication(store, layout, replace_immutable=replace_immutable, pointers=pointers)
    yield pub
    pub.commit()


@dataclass
class _Held:
    """One pointer as a :class:`PointerBuffer` holds it."""

    pointer: _Pointer  # the newest update's (key, meta and kind do not change between updates)
    base: StoredObject | None  # what the store held when last read or written (None: absent)
    document: Any | None  # ``base``'s document with ``merges`` applied (bytes for a binary pointer)
    merges: list[Callable[[Any | None], Any | None]] = field(default_factory=list)
    encoded: bytes | None = None  # ``document``'s stored bytes where its publication had them, else None


class PointerBuffer:
    """Pointer updates of many publications to one store, held in memory and written by :meth:`flush`.

    Each held pointer is read from the store once, then every update's merge is applied to the
    document in memory, so a run of minutes costs one write per pointer instead of one per minute.
    :meth:`flush` writes each changed pointer with compare-and-swap against what it read; when another
    writer changed it meanwhile, it re-reads and applies the held merges again, in order, exactly as
    the minutes would have one by one. Until then readers of the store see the previous flush, never
    a pointer to a missing object (immutables are written at commit; flush starts with a barrier).
    """

    def __init__(self, store: Store, layout: SiteLayout) -> None:
        self.store = store
        self.layout = layout
        self._held: dict[str, _Held] = {}

    def pending(self) -> int:
        """How many held pointers have updates not yet written."""
        return sum(1 for held in self._held.values() if held.merges)

    def document(self, key: str) -> Any | None:
        """The JSON document of ``key`` with the held updates applied (None if absent)."""
        held = self._held.get(key)
        if held is not None:
            return held.document
        return read_pointer(self.store, key, binary=False)[1]

    def hold(
        self,
        pointer: _Pointer,
        report: PublishReport,
        known: Callable[[Any], bytes | None] | None = None,
    ) -> None:
        """Apply one update in memory; counted as written when it changed the held document.
        ``known`` gives the stored bytes of a document where they are at hand (else None)."""
        held = self._held.get(pointer.key)
        if held is None:
            base, document = read_pointer(self.store, pointer.key, binary=pointer.binary)
            held = self._held[pointer.key] = _Held(pointer, base, document)
        held.pointer = pointer
        held.merges.append(pointer.merge)
        new_document = pointer.merge(held.document)
        if new_document is None or new_document == held.document:
            report.pointers_unchanged += 1
            return
        held.document = new_document
        held.encoded = None if known is None or pointer.binary else known(new_document)
        report.pointers_written += 1
        report.keys_written.append(pointer.key)

    def flush(self) -> PublishReport:
        """Write every changed pointer (after a barrier), once; raises :class:`PublishError`."""
        report = PublishReport()
        dirty = [held for held in self._held.values() if held.merges]
        if not dirty:
            return report
        try:
            self.store.barrier()  # the immutables the held documents name are durable first
            for held in dirty:
                self._write(held, report)
        except StoreError as exc:
            raise PublishError(f"publishing to {self.store.url} failed: {type(exc).__name__}") from exc
        return report

    def _write(self, held: _Held, report: PublishReport) -> None:
        pointer = held.pointer
        for _ in range(POINTER_CAS_ATTEMPTS):
            if held.document is None:
                break  # absent and no merge created it
            if pointer.binary:
                data = held.document
            elif held.encoded is not None:
                data = held.encoded
            else:
                data = encode_document(self.layout, held.document)
            if held.base is not None and held.base.data == data:
                break
            expected = held.base.etag if held.base is not None else None
            try:
                etag = self.store.replace(pointer.key, data, pointer.meta, expected_etag=expected)
            except PreconditionFailed:
                logger.info("pointer %s changed under a held update; re-reading", pointer.key)
                held.base, held.document = read_pointer(self.store, pointer.key, binary=pointer.binary)
                held.encoded = None
                for merge in held.merges:
                    merged = merge(held.document)
                    held.document = held.document if merged is None else merged
                continue
            held.base = StoredObject(pointer.key, data, etag, pointer.meta)
            report.pointers_written += 1
            report.keys_written.append(pointer.key)
            break
        else:
            raise PublishError(
                f"pointer {pointer.key} kept changing; gave up after {POINTER_CAS_ATTEMPTS} tries"
            )
        held.merges.clear()
