"""A store in a local directory: objects are files under ``root``, written atomically.

Layout under ``root``::

    <key>                      the object's bytes, exactly (a web server can serve root as is)
    .meta/objects/<key>        sidecar JSON: content_type, cache_control, content_encoding
    .meta/objects/<dir>/.tmp-folder   the folder's metadata: that of the first object created in it
    .meta/locks/<xx>.lock      256 lock stripes (``xx`` = first byte of sha256(key)) for fcntl.flock

Sidecars mirror the object tree without a suffix, so two keys collide in the sidecar tree exactly when
they collide as files (``a`` and ``a/b`` cannot both exist in a directory store, unlike S3).

Every write goes to a ``.tmp-*`` file in the target directory, is fsynced, renamed over the target with
``os.replace`` and the directory fsynced. With ``fsync_each_write=False`` (the jobs' stores) the
fsyncs are left out and :meth:`LocalStore.barrier` syncs instead: writers put a barrier between an
object and whatever names it (the publisher between immutable objects and pointers, the state
between a checkpoint and its head, the calibrator between a version and its pointer), so a power loss
can lose the last writes but never leaves a pointer to a missing or torn object; a killed process
never leaves a torn object either way. The sidecar is written before the object, so an existing
object always has its sidecar; a crash between the two leaves the previous object with the new
metadata, never a torn object. Writers of one key (create, replace, put, delete) hold the key's stripe
lock exclusively, across processes, which makes create-only and compare-and-swap exact; readers hold it
shared where the lock file can be opened, so bytes and metadata are read as one version.

An object created (create-only) with its folder's metadata gets no sidecar of its own: a folder of
immutable versions holds objects that all share one, and creating a file is the dearest step of a
write on some file systems. The folder's metadata is written once, create-only, and never changed, so
an object that inherits it keeps its metadata. A read takes the object's own sidecar, else its
folder's, else guesses from the name. (``.tmp-folder`` can be neither a sidecar nor a folder: no key
segment starts with ``.tmp-``.)

The etag is the hex md5 of the bytes (unquoted), computed from the file, never cached.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import hashlib
import json
import logging
import mimetypes
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from moonstream.store.base import (
    TEMP_PREFIX,
    ObjectExists,
    ObjectMeta,
    ObjectNotFound,
    PreconditionFailed,
    Store,
    StoredObject,
    StoreError,
    validate_key,
    validate_prefix,
)

logger = logging.getLogger(__name__)

META_DIR = ".meta"
#: The name of a folder's metadata in the sidecar tree (see the module docstring).
FOLDER_META = f"{TEMP_PREFIX}folder"

# Content types of the files this project writes, independent of the machine's /etc/mime.types.
_KNOWN_TYPES = {
    ".json": "application/json",
    ".jsonl": "application/x-ndjson",
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".csv": "text/csv; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".bin": "application/octet-stream",
    ".zst": "application/zstd",
    ".gz": "application/gzip",
}

_MISSING = (FileNotFoundError, NotADirectoryError, IsADirectoryError)


def guess_meta(key: str) -> ObjectMeta:
    """Default metadata for an object without a sidecar, from its extension."""
    suffix = os.path.splitext(key)[1].lower()
    content_type = _KNOWN_TYPES.get(suffix) or mimetypes.guess_type(key, strict=True)[0]
    return ObjectMeta(content_type=content_type or "application/octet-stream")


def md5_etag(data: bytes) -> str:
    """The etag of ``data`` as both stores report it for a single-part write: hex md5, unquoted."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _libc_syncfs() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    try:
        return ctypes.CDLL(None, use_errno=True).syncfs  # Linux (glibc, musl)
    except (OSError, AttributeError):
        return None


_SYNCFS = _libc_syncfs()


def _sync_filesystem(root: Path) -> None:
    """Flush the file system holding ``root`` (``syncfs``; ``sync`` of every one where it is missing)."""
    if _SYNCFS is not None:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            if _SYNCFS(fd) == 0:
                return
        finally:
            os.close(fd)
    os.sync()


def _ensure_dir(path: Path, sync: bool = True) -> None:
    """``mkdir -p`` that fsyncs each parent whose entries it changed (when ``sync``)."""
    if path.is_dir():
        return
    _ensure_dir(path.parent, sync)
    try:
        path.mkdir()
    except FileExistsError:
        if not path.is_dir():
            raise
        return
    if sync:
        _fsync_dir(path.parent)


def _write_temp(folder: Path, data: bytes, sync: bool) -> Path:
    """A new temp file in ``folder`` (created if missing) holding ``data``, fsynced with ``sync``."""
    _ensure_dir(folder, sync)
    tmp = folder / f"{TEMP_PREFIX}{secrets.token_hex(8)}"
    # 0o666 minus the umask, like any file: a web server must be able to read what we publish.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if sync:
                fh.flush()
                os.fsync(fh.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return tmp


def _atomic_write(path: Path, data: bytes, sync: bool = True) -> None:
    """Write ``data`` to ``path`` via a temp file in the same directory and ``os.replace``; with
    ``sync``, the file and then the directory are fsynced."""
    tmp = _write_temp(path.parent, data, sync)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if sync:
        _fsync_dir(path.parent)


def _create_only(path: Path, data: bytes, sync: bool) -> bytes:
    """Give ``path`` the content ``data`` unless it exists (whole or not at all: a temp file linked
    into place); returns what ``path`` holds afterwards."""
    tmp = _write_temp(path.parent, data, sync)
    try:
        try:
            os.link(tmp, path)
        except FileExistsError:
            return path.read_bytes()
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    if sync:
        _fsync_dir(path.parent)
    return data


def _meta_to_json(meta: ObjectMeta) -> bytes:
    doc = {
        "content_type": meta.content_type,
        "cache_control": meta.cache_control,
        "content_encoding": meta.content_encoding,
    }
    return json.dumps(doc, sort_keys=True).encode()


def _meta_from_json(raw: bytes) -> ObjectMeta:
    doc = json.loads(raw)
    if not isinstance(doc, dict):
        raise ValueError("sidecar is not a JSON object")
    content_type = doc.get("content_type")
    cache_control = doc.get("cache_control")
    content_encoding = doc.get("content_encoding")
    if not isinstance(content_type, str):
        raise ValueError("sidecar content_type is not a string")
    for name, value in (("cache_control", cache_control), ("content_encoding", content_encoding)):
        if value is not None and not isinstance(value, str):
            raise ValueError(f"sidecar {name} is not a string or null")
    return ObjectMeta(content_type, cache_control, content_encoding)


class LocalStore(Store):
    """Objects as files under ``root``; see the module docstring for layout and guarantees.

    ``fsync_each_write=False`` (the jobs' stores) skips the per-write fsyncs and makes
    :meth:`barrier` sync the file system instead: the same atomicity (a killed process never leaves
    a torn object), and across a power loss the same ordering wherever the writer puts a barrier
    between an object and what names it, for one ``sync`` per barrier instead of four fsyncs per
    object.
    """

    def __init__(self, root: Path | str, *, fsync_each_write: bool = True) -> None:
        self.root = Path(root).absolute()
        self.fsync_each_write = fsync_each_write
        self.url = self.root.as_uri()
        self._meta_root = self.root / META_DIR / "objects"
        self._lock_root = self.root / META_DIR / "locks"

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    # -- paths and locks -------------------------------------------------------------------------

    def _object_path(self, key: str) -> Path:
        return self.root / validate_key(key)

    def _sidecar_path(self, key: str) -> Path:
        return self._meta_root / key

    @contextlib.contextmanager
    def _locked(self, key: str, *, exclusive: bool) -> Iterator[None]:
        """Hold the key's stripe lock; shared locks are skipped where the lock file cannot be opened."""
        stripe = hashlib.sha256(key.encode()).hexdigest()[:2]
        path = self._lock_root / f"{stripe}.lock"
        fd: int | None
        if exclusive:
            _ensure_dir(self._lock_root, self.fsync_each_write)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        else:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o666)
            except OSError:
                fd = None  # a read-only or never-written store: nothing writes it concurrently
        try:
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            if fd is not None:
                os.close(fd)  # releases the lock

    def _wrap_os_error(self, op: str, key: str, exc: OSError) -> StoreError:
        return StoreError(f"{self.url}: {op} {key!r} failed: {exc.strerror or exc}")

    # -- reading ---------------------------------------------------------------------------------

    def _read_meta(self, key: str) -> ObjectMeta:
        sidecar = self._sidecar_path(key)
        try:
            raw = sidecar.read_bytes()
        except _MISSING:
            try:
                raw = (sidecar.parent / FOLDER_META).read_bytes()
            except _MISSING:
                return guess_meta(key)
        try:
            return _meta_from_json(raw)
        except ValueError as exc:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
            logger.warning("%s: ignoring unreadable sidecar of %r (%s)", self.url, key, exc)
            return guess_meta(key)

    def _current_etag(self, path: Path) -> str | None:
        try:
            with path.open("rb") as fh:
                return hashlib.file_digest(fh, lambda: hashlib.md5(usedforsecurity=False)).hexdigest()
        except _MISSING:
            return None

    def read(self, key: str) -> StoredObject:
        """The object's bytes, etag and metadata; raises :class:`ObjectNotFound`."""
        path = self._object_path(key)
        try:
            with self._locked(key, exclusive=False):
                try:
                    data = path.read_bytes()
                except _MISSING as exc:
                    raise ObjectNotFound(f"{self.url}: no object {key!r}") from exc
                meta = self._read_meta(key)
        except OSError as exc:
            raise self._wrap_os_error("read", key, exc) from exc
        return StoredObject(key=key, data=data, etag=md5_etag(data), meta=meta)

    def head(self, key: str) -> StoredObject | None:
        """Etag and metadata without the body, or None if absent."""
        path = self._object_path(key)
        try:
            with self._locked(key, exclusive=False):
                etag = self._current_etag(path)
                if etag is None:
                    return None
                meta = self._read_meta(key)
        except OSError as exc:
            raise self._wrap_os_error("head", key, exc) from exc
        return StoredObject(key=key, data=b"", etag=etag, meta=meta)

    def list(self, prefix: str = "") -> Iterator[str]:
        """Every key starting with ``prefix``, sorted; never sidecars, locks or temp files."""
        head, _, _ = validate_prefix(prefix).rpartition("/")
        if head.split("/")[0] == META_DIR:
            return iter(())
        base = self.root / head if head else self.root
        keys: list[str] = []
        for dirpath, dirnames, filenames in os.walk(base):
            rel = os.path.relpath(dirpath, self.root)
            rel = "" if rel == "." else rel.replace(os.sep, "/") + "/"
            dirnames[:] = [
                d for d in dirnames if not d.startswith(TEMP_PREFIX) and not (rel == "" and d == META_DIR)
            ]
            for name in filenames:
                key = rel + name
                if not name.startswith(TEMP_PREFIX) and key.startswith(prefix):
                    keys.append(key)
        return iter(sorted(keys))

    # -- writing ---------------------------------------------------------------------------------

    def _write(self, key: str, path: Path, data: bytes, meta: ObjectMeta, *, inherit: bool = False) -> str:
        """Write the sidecar unless the object already has this metadata (its own or, without its
        own, its folder's), then the object. ``inherit`` (create): a folder without metadata yet
        takes this object's."""
        if path.is_dir():
            raise StoreError(f"{self.url}: cannot write {key!r}: other keys live under it")
        sync = self.fsync_each_write
        sidecar = self._sidecar_path(key)
        sidecar_data = _meta_to_json(meta)
        try:
            own: bytes | None = sidecar.read_bytes()
        except _MISSING:
            own = None
        if own != sidecar_data and (
            own is not None
            or self._folder_meta_for(sidecar.parent, sidecar_data if inherit else None) != sidecar_data
        ):
            _atomic_write(sidecar, sidecar_data, sync)
        _atomic_write(path, data, sync)
        return md5_etag(data)

    def _folder_meta_for(self, folder: Path, proposed: bytes | None) -> bytes | None:
        """The metadata of sidecar folder ``folder``; ``proposed`` becomes it if it has none yet.
        None if it has none (and none is proposed) or cannot have one (e.g. a key's folder is named
        like it): its objects keep sidecars of their own. Read each time (a read is cheap; a folder
        deleted meanwhile must not be trusted)."""
        path = folder / FOLDER_META
        try:
            return path.read_bytes()
        except _MISSING:
            if proposed is None:
                return None
        except OSError:
            return None
        try:
            return _create_only(path, proposed, self.fsync_each_write)
        except OSError:
            return None

    def barrier(self) -> None:
        """Make every write so far durable before any later one (a no-op when each write is)."""
        if not self.fsync_each_write:
            _sync_filesystem(self.root)

    def create(self, key: str, data: bytes, meta: ObjectMeta) -> str:
        """Write a new object; raise :class:`ObjectExists` if the key exists. Returns the etag."""
        path = self._object_path(key)
        try:
            with self._locked(key, exclusive=True):
                if path.is_file():
                    raise ObjectExists(f"{self.url}: {key!r} already exists")
                return self._write(key, path, data, meta, inherit=True)
        except OSError as exc:
            raise self._wrap_os_error("create", key, exc) from exc

    def replace(self, key: str, data: bytes, meta: ObjectMeta, *, expected_etag: str | None) -> str:
        """Compare-and-swap under the key's exclusive lock; see :meth:`Store.replace`."""
        path = self._object_path(key)
        try:
            with self._locked(key, exclusive=True):
                current = self._current_etag(path)
                if current != expected_etag:
                    state = "is absent" if current is None else f"has etag {current}"
                    wanted = "absent" if expected_etag is None else f"etag {expected_etag}"
                    raise PreconditionFailed(f"{self.url}: {key!r} {state}, expected {wanted}")
                return self._write(key, path, data, meta)
        except OSError as exc:
            raise self._wrap_os_error("replace", key, exc) from exc

    def put(self, key: str, data: bytes, meta: ObjectMeta) -> str:
        """Unconditional atomic write."""
        path = self._object_path(key)
        try:
            with self._locked(key, exclusive=True):
                return self._write(key, path, data, meta)
        except OSError as exc:
            raise self._wrap_os_error("put", key, exc) from exc

    def delete(self, key: str) -> None:
        """Remove the object, then its sidecar; absent is not an error. Empty directories stay."""
        path = self._object_path(key)
        try:
            with self._locked(key, exclusive=True):
                for victim in (path, self._sidecar_path(key)):
                    try:
                        victim.unlink()
                    except _MISSING:
                        continue
                    if self.fsync_each_write:
                        _fsync_dir(victim.parent)
        except OSError as exc:
            raise self._wrap_os_error("delete", key, exc) from exc
