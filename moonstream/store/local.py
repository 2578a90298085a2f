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
shared where the lock file can be opened, so bytes and metadata are read as one version. Reads of
the bytes alone (``read_bytes``, ``exists``) take no lock: a write replaces the file by a rename, so
one open (or ``stat``) sees one version, whole.

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
import errno
import fcntl
import hashlib
import itertools
import json
import logging
import mimetypes
import os
import stat
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
# What pathlib's is_file/is_dir take for "no such file" rather than an error.
_STAT_ABSENT = frozenset((errno.ENOENT, errno.ENOTDIR, errno.EBADF, errno.ELOOP))

_O_READ = os.O_RDONLY | os.O_CLOEXEC
_O_TEMP = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_READ_SIZE = 64 * 1024


def guess_meta(key: str) -> ObjectMeta:
    """Default metadata for an object without a sidecar, from its extension."""
    suffix = os.path.splitext(key)[1].lower()
    content_type = _KNOWN_TYPES.get(suffix) or mimetypes.guess_type(key, strict=True)[0]
    return ObjectMeta(content_type=content_type or "application/octet-stream")


def md5_etag(data: bytes) -> str:
    """The etag of ``data`` as both stores report it for a single-part write: hex md5, unquoted."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _fsync_dir(path: str | Path) -> None:
    fd = os.open(path, _O_DIR)
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
        fd = os.open(root, _O_DIR)
        try:
            if _SYNCFS(fd) == 0:
                return
        finally:
            os.close(fd)
    os.sync()


def _is_dir(path: str) -> bool:
    try:
        return stat.S_ISDIR(os.stat(path).st_mode)
    except OSError as exc:
        if exc.errno in _STAT_ABSENT:
            return False
        raise


def _stat_mode(path: str) -> int:
    """``st_mode`` of ``path`` (symlinks followed), 0 where pathlib's ``is_file`` would say absent.
    (An absent path, the usual answer, costs no exception: ``access`` says so without raising.)"""
    if not os.access(path, os.F_OK):
        return 0
    try:
        return os.stat(path).st_mode
    except OSError as exc:
        if exc.errno in _STAT_ABSENT:
            return 0
        raise


def _ensure_dir(path: str | Path, sync: bool = True) -> None:
    """``mkdir -p`` that fsyncs each parent whose entries it changed (when ``sync``)."""
    path = os.fspath(path)
    if _is_dir(path):
        return
    parent = os.path.dirname(path)
    _ensure_dir(parent, sync)
    try:
        os.mkdir(path)
    except FileExistsError:
        if not _is_dir(path):
            raise
        return
    if sync:
        _fsync_dir(parent)


def _read_fd(fd: int) -> bytes:
    """Everything from ``fd``'s position to the end of the file (a read returning nothing)."""
    data = os.read(fd, _READ_SIZE)
    if not data:
        return data
    chunks = [data]
    if len(data) == _READ_SIZE:  # a large file: the rest in one read where its size says so
        more = os.fstat(fd).st_size - len(data)
        if more > 0:
            chunks.append(os.read(fd, more + 1))
    while chunks[-1]:
        chunks.append(os.read(fd, _READ_SIZE))
    return chunks[0] if len(chunks) == 2 else b"".join(chunks)


def _read_path(path: str) -> bytes:
    """The bytes of the file ``path``; raises what opening or reading it raises (``_MISSING`` for
    an absent file or a directory)."""
    fd = os.open(path, _O_READ)
    try:
        return _read_fd(fd)
    finally:
        os.close(fd)


def _read_if_present(path: str) -> bytes | None:
    """The bytes of the file ``path``, or None if there is none (checked first with ``access``,
    which costs no exception when it is absent, the usual case of a sidecar)."""
    if not os.access(path, os.F_OK):
        return None
    try:
        return _read_path(path)
    except _MISSING:
        return None


def _flock(fd: int, operation: int) -> int:
    """``fd`` once ``flock`` gave it the lock (closed if that failed)."""
    try:
        fcntl.flock(fd, operation)
    except BaseException:
        os.close(fd)
        raise
    return fd


class _TempNames:
    """Names for temp files: a random per-process part (drawn again in a forked child) and a
    counter, so a name costs no system call; ``O_EXCL`` keeps a clash (say, a crashed writer's
    leftover) from overwriting anything, and :func:`_open_temp` then draws a new random part."""

    def __init__(self) -> None:
        self.reseed()
        os.register_at_fork(after_in_child=self.reseed)

    def reseed(self) -> None:
        self._prefix = f"{TEMP_PREFIX}{os.urandom(5).hex()}"
        self._counter = itertools.count()

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter):06x}"


_TEMP_NAMES = _TempNames()


def _write_all(fd: int, data: bytes) -> None:
    written = os.write(fd, data)
    if written < len(data):
        with memoryview(data) as view:
            while written < len(data):
                written += os.write(fd, view[written:])


def _open_temp(folder: str, sync: bool) -> tuple[str, int]:
    """A new temp file in ``folder`` (created if missing), opened for writing: its name and fd."""
    for _ in range(8):
        tmp = f"{folder}/{_TEMP_NAMES.next()}"
        try:
            # 0o666 minus the umask, like any file: a web server must be able to read what we publish.
            return tmp, os.open(tmp, _O_TEMP, 0o666)
        except FileNotFoundError:
            _ensure_dir(folder, sync)  # a new folder: found missing by the open, not a stat each time
        except FileExistsError:
            _TEMP_NAMES.reseed()
    tmp = f"{folder}/{_TEMP_NAMES.next()}"
    return tmp, os.open(tmp, _O_TEMP, 0o666)


def _write_temp(folder: str | Path, data: bytes, sync: bool) -> str:
    """A new temp file in ``folder`` (created if missing) holding ``data``, fsynced with ``sync``."""
    tmp, fd = _open_temp(os.fspath(folder), sync)
    try:
        try:
            _write_all(fd, data)
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return tmp


def _atomic_write(path: str | Path, data: bytes, sync: bool = True) -> None:
    """Write ``data`` to ``path`` via a temp file in the same directory and ``os.replace``; with
    ``sync``, the file and then the directory are fsynced."""
    folder = os.path.dirname(path)
    tmp = _write_temp(folder, data, sync)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if sync:
        _fsync_dir(folder)


def _create_only(path: str | Path, data: bytes, sync: bool) -> bytes:
    """Give ``path`` the content ``data`` unless it exists (whole or not at all: a temp file linked
    into place); returns what ``path`` holds afterwards."""
    folder = os.path.dirname(path)
    tmp = _write_temp(folder, data, sync)
    try:
        try:
            os.link(tmp, path)
        except FileExistsError:
            return _read_path(os.fspath(path))
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    if sync:
        _fsync_dir(folder)
    return data


_META_JSON: dict[ObjectMeta, bytes] = {}
_META_PARSED: dict[bytes, ObjectMeta] = {}
_META_CACHE_SIZE = 256


def _meta_to_json(meta: ObjectMeta) -> bytes:
    data = _META_JSON.get(meta)
    if data is None:
        doc = {
            "content_type": meta.content_type,
            "cache_control": meta.cache_control,
            "content_encoding": meta.content_encoding,
        }
        data = json.dumps(doc, sort_keys=True).encode()
        if len(_META_JSON) >= _META_CACHE_SIZE:
            _META_JSON.clear()
        _META_JSON[meta] = data
    return data


def _meta_from_json(raw: bytes) -> ObjectMeta:
    meta = _META_PARSED.get(raw)
    if meta is None:
        meta = _parse_meta(raw)
        if len(_META_PARSED) >= _META_CACHE_SIZE:
            _META_PARSED.clear()
        _META_PARSED[raw] = meta
    return meta


def _parse_meta(raw: bytes) -> ObjectMeta:
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
        # The same places as plain strings: the hot paths join keys to them without pathlib.
        root = str(self.root)
        self._root_prefix = root if root.endswith("/") else f"{root}/"
        self._meta_prefix = f"{self._meta_root}/"
        self._lock_dir = str(self._lock_root)
        self._lock_paths = [f"{self._lock_dir}/{stripe:02x}.lock" for stripe in range(256)]

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    # -- paths and locks -------------------------------------------------------------------------

    def _object_path(self, key: str) -> str:
        return self._root_prefix + validate_key(key)

    def _sidecar_path(self, key: str) -> str:
        return self._meta_prefix + key

    def _lock_path(self, key: str) -> str:
        return self._lock_paths[hashlib.sha256(key.encode()).digest()[0]]

    def _lock_exclusive(self, key: str) -> int:
        """Take the key's stripe lock exclusively: the fd holding it (closing it releases the lock)."""
        path = self._lock_path(key)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except FileNotFoundError:  # the first write to this store
            _ensure_dir(self._lock_dir, self.fsync_each_write)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        return _flock(fd, fcntl.LOCK_EX)

    def _lock_shared(self, key: str) -> int | None:
        """Take the key's stripe lock shared: the fd holding it, or None where the lock file cannot be
        opened (a read-only or never-written store: nothing writes it concurrently)."""
        try:
            fd = os.open(self._lock_path(key), os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError:
            return None
        return _flock(fd, fcntl.LOCK_SH)

    @contextlib.contextmanager
    def _locked(self, key: str, *, exclusive: bool) -> Iterator[None]:
        """Hold the key's stripe lock; shared locks are skipped where the lock file cannot be opened."""
        fd = self._lock_exclusive(key) if exclusive else self._lock_shared(key)
        try:
            yield
        finally:
            if fd is not None:
                os.close(fd)  # releases the lock

    def _wrap_os_error(self, op: str, key: str, exc: OSError) -> StoreError:
        return StoreError(f"{self.url}: {op} {key!r} failed: {exc.strerror or exc}")

    # -- reading ---------------------------------------------------------------------------------

    def _read_meta(self, key: str) -> ObjectMeta:
        sidecar = self._sidecar_path(key)
        raw = _read_if_present(sidecar)
        if raw is None:
            try:
                raw = _read_path(f"{os.path.dirname(sidecar)}/{FOLDER_META}")
            except _MISSING:
                return guess_meta(key)
        try:
            return _meta_from_json(raw)
        except ValueError as exc:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
            logger.warning("%s: ignoring unreadable sidecar of %r (%s)", self.url, key, exc)
            return guess_meta(key)

    def _current_etag(self, path: str) -> str | None:
        try:
            fd = os.open(path, _O_READ)
        except _MISSING:
            return None
        try:
            if stat.S_ISDIR(os.fstat(fd).st_mode):
                return None  # what opening a directory as a file says: no object
            digest = hashlib.md5(usedforsecurity=False)
            while chunk := os.read(fd, 256 * 1024):
                digest.update(chunk)
            return digest.hexdigest()
        finally:
            os.close(fd)

    def read(self, key: str) -> StoredObject:
        """The object's bytes, etag and metadata; raises :class:`ObjectNotFound`."""
        path = self._object_path(key)
        try:
            fd = self._lock_shared(key)
            try:
                try:
                    data = _read_path(path)
                except _MISSING as exc:
                    raise ObjectNotFound(f"{self.url}: no object {key!r}") from exc
                meta = self._read_meta(key)
            finally:
                if fd is not None:
                    os.close(fd)
        except OSError as exc:
            raise self._wrap_os_error("read", key, exc) from exc
        return StoredObject(key=key, data=data, etag=md5_etag(data), meta=meta)

    def read_bytes(self, key: str) -> bytes:
        """The object's bytes alone (what :meth:`read` returns as ``data``); raises
        :class:`ObjectNotFound`. Takes no lock: a write replaces the file by a rename, so one
        open sees one version whole, and there is no metadata to match."""
        path = self._object_path(key)
        try:
            return _read_path(path)
        except _MISSING as exc:
            raise ObjectNotFound(f"{self.url}: no object {key!r}") from exc
        except OSError as exc:
            raise self._wrap_os_error("read", key, exc) from exc

    def head(self, key: str) -> StoredObject | None:
        """Etag and metadata without the body, or None if absent."""
        path = self._object_path(key)
        try:
            fd = self._lock_shared(key)
            try:
                etag = self._current_etag(path)
                if etag is None:
                    return None
                meta = self._read_meta(key)
            finally:
                if fd is not None:
                    os.close(fd)
        except OSError as exc:
            raise self._wrap_os_error("head", key, exc) from exc
        return StoredObject(key=key, data=b"", etag=etag, meta=meta)

    def exists(self, key: str) -> bool:
        """Whether the object exists (what ``head(key) is not None`` says), from one ``stat``."""
        path = self._object_path(key)
        try:
            return not stat.S_ISDIR(os.stat(path).st_mode)
        except _MISSING:
            return False
        except OSError as exc:
            raise self._wrap_os_error("head", key, exc) from exc

    def list(self, prefix: str = "") -> Iterator[str]:
        """Every key starting with ``prefix``, sorted; never sidecars, locks or temp files."""
        head, _, _ = validate_prefix(prefix).rpartition("/")
        if head.split("/")[0] == META_DIR:
            return iter(())
        keys: list[str] = []
        # What os.walk (top-down, symlinked folders not entered, unreadable folders skipped) finds
        # under the prefix's folder, with keys built from the names instead of relative paths.
        pending = [(f"{self._root_prefix}{head}" if head else str(self.root), f"{head}/" if head else "")]
        while pending:
            folder, rel = pending.pop()
            files: list[str] = []
            subfolders: list[tuple[str, str]] = []
            try:
                with os.scandir(folder) as entries:
                    for entry in entries:
                        name = entry.name
                        try:
                            is_dir = entry.is_dir()
                        except OSError:
                            is_dir = False
                        if not is_dir:
                            files.append(name)
                        elif not name.startswith(TEMP_PREFIX) and (rel or name != META_DIR):
                            try:
                                if entry.is_symlink():
                                    continue
                            except OSError:
                                pass
                            subfolders.append((entry.path, f"{rel}{name}/"))
            except OSError:
                continue  # as os.walk: a folder that cannot be read (or vanished) adds nothing
            keys.extend(
                key
                for name in files
                if not name.startswith(TEMP_PREFIX) and (key := rel + name).startswith(prefix)
            )
            pending.extend(subfolders)
        return iter(sorted(keys))

    # -- writing ---------------------------------------------------------------------------------

    def _write(
        self,
        key: str,
        path: str,
        data: bytes,
        meta: ObjectMeta,
        *,
        inherit: bool = False,
        mode: int | None = None,
    ) -> str:
        """Write the sidecar unless the object already has this metadata (its own or, without its
        own, its folder's), then the object. ``inherit`` (create): a folder without metadata yet
        takes this object's. ``mode``: the path's ``st_mode`` if the caller just took it."""
        if stat.S_ISDIR(_stat_mode(path) if mode is None else mode):
            raise StoreError(f"{self.url}: cannot write {key!r}: other keys live under it")
        sync = self.fsync_each_write
        sidecar = self._sidecar_path(key)
        sidecar_data = _meta_to_json(meta)
        own = _read_if_present(sidecar)
        if own != sidecar_data and (
            own is not None
            or self._folder_meta_for(os.path.dirname(sidecar), sidecar_data if inherit else None)
            != sidecar_data
        ):
            _atomic_write(sidecar, sidecar_data, sync)
        _atomic_write(path, data, sync)
        return md5_etag(data)

    def _folder_meta_for(self, folder: str, proposed: bytes | None) -> bytes | None:
        """The metadata of sidecar folder ``folder``; ``proposed`` becomes it if it has none yet.
        None if it has none (and none is proposed) or cannot have one (e.g. a key's folder is named
        like it): its objects keep sidecars of their own. Read each time (a read is cheap; a folder
        deleted meanwhile must not be trusted)."""
        path = f"{folder}/{FOLDER_META}"
        try:
            return _read_path(path)
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
            fd = self._lock_exclusive(key)
            try:
                mode = _stat_mode(path)
                if stat.S_ISREG(mode):
                    raise ObjectExists(f"{self.url}: {key!r} already exists")
                return self._write(key, path, data, meta, inherit=True, mode=mode)
            finally:
                os.close(fd)  # releases the lock
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
                        os.unlink(victim)
                    except _MISSING:
                        continue
                    if self.fsync_each_write:
                        _fsync_dir(os.path.dirname(victim))
        except OSError as exc:
            raise self._wrap_os_error("delete", key, exc) from exc
