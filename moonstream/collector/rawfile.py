"""Raw minute files: the collector's output and the jobs' input (DESIGN §3, docs/formats.md).

One file per (symbol, UTC minute of local receive time, exchange, collector id)::

    raw/{SYMBOL}/{YYYY-MM-DD}/{HHMM}/{exchange}.{collector}.jsonl.zst

The file is one zstandard frame (level 3, content size and checksum written, no dictionary) of
lines ``<recv_ns> <channel> <payload>\\n`` in non-decreasing ``recv_ns`` order, where the payload
is the message exactly as received except that CR and LF bytes become spaces.

This module has three parts: the format (keys, lines, compression), the live
:class:`MinuteFileWriter` (append-only partial files, finalized at minute end plus a grace), and
the readers (:func:`list_raw_minutes`, :func:`read_minute`, :func:`iter_minutes`).
"""

from __future__ import annotations

import functools
import io
import logging
import operator
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import zstandard

from moonstream.native import compiled
from moonstream.store.base import ObjectExists, ObjectMeta, ObjectNotFound, Store, StoreError
from moonstream.symbols import Exchange, is_valid_symbol
from moonstream.timeutil import (
    NS_PER_MINUTE,
    minute_date_hhmm,
    minute_from_date_hhmm,
    minute_of,
    minute_start_ns,
)

log = logging.getLogger(__name__)

RAW_PREFIX = "raw/"
RAW_SUFFIX = ".jsonl.zst"
PARTIAL_SUFFIX = ".jsonl.partial"
CONFLICT_SUFFIX = ".jsonl.conflict"
ZSTD_LEVEL = 3
RAW_META = ObjectMeta(content_type="application/zstd")

_COLLECTOR_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,40}$")
_CHANNEL_RE = re.compile(r"^[a-z]+:[A-Za-z0-9:_.-]+$")
_KEY_RE = re.compile(
    r"^raw/(?P<symbol>[A-Z0-9]{1,20})/(?P<date>\d{4}-\d{2}-\d{2})/(?P<hhmm>\d{4})/"
    r"(?P<exchange>[a-z0-9]+)\.(?P<collector>[a-z0-9][a-z0-9-]{0,40})\.jsonl\.zst$"
)
_PARTIAL_NAME_RE = re.compile(
    r"^(?P<exchange>[a-z0-9]+)\.(?P<collector>[a-z0-9][a-z0-9-]{0,40})\.jsonl\.partial$"
)
_NEWLINES_TO_SPACES = bytes.maketrans(b"\r\n", b"  ")
_EXCHANGES = frozenset(e.value for e in Exchange)
_MINUTES_PER_DAY = 1440


class RawFileError(Exception):
    """Base of raw minute file failures."""


class RawFormatError(RawFileError, ValueError):
    """A malformed key, line or file."""


class RawConflictError(RawFileError):
    """A different object already exists under an immutable minute-file key."""


@dataclass(frozen=True, slots=True)
class RawRecord:
    """One received message: when it arrived, what it is, the bytes, and who recorded it."""

    recv_ns: int
    channel: str
    payload: bytes
    exchange: str
    collector: str


@dataclass(frozen=True, slots=True)
class RawKey:
    """The parts of a minute-file key; validated on construction."""

    symbol: str
    minute: int
    exchange: str
    collector: str

    def __post_init__(self) -> None:
        if not is_valid_symbol(self.symbol):
            raise RawFormatError(f"invalid symbol {self.symbol!r}")
        if self.exchange not in _EXCHANGES:
            raise RawFormatError(f"unknown exchange {self.exchange!r}")
        if not _COLLECTOR_RE.match(self.collector):
            raise RawFormatError(f"invalid collector id {self.collector!r}")
        if isinstance(self.minute, bool) or not isinstance(self.minute, int) or self.minute < 0:
            raise RawFormatError(f"invalid minute {self.minute!r}")

    @property
    def key(self) -> str:
        day, hhmm = minute_date_hhmm(self.minute)
        return f"{RAW_PREFIX}{self.symbol}/{day}/{hhmm}/{self.exchange}.{self.collector}{RAW_SUFFIX}"


def raw_key(symbol: str, minute: int, exchange: Exchange | str, collector: str) -> str:
    """``raw/BTC/2024-07-18/2357/binance.c1.jsonl.zst``; RawFormatError (a ValueError) if invalid."""
    return RawKey(symbol, minute, str(exchange), collector).key


def parse_raw_key(key: str) -> RawKey:
    """Inverse of :func:`raw_key`: ``raw/BTC/2024-07-18/2357/binance.c1.jsonl.zst`` -> RawKey."""
    match = _KEY_RE.match(key)
    if match is None:
        raise RawFormatError(f"not a raw minute-file key: {key!r}")
    try:
        minute = minute_from_date_hhmm(match["date"], match["hhmm"])
    except ValueError as exc:
        raise RawFormatError(f"invalid date/time in raw key {key!r}") from exc
    parsed = RawKey(match["symbol"], minute, match["exchange"], match["collector"])
    if parsed.key != key:  # e.g. 2024-7-1 style dates that strptime accepts
        raise RawFormatError(f"non-canonical raw key {key!r}")
    return parsed


def is_valid_collector_id(collector: str) -> bool:
    """Collector ids are ``[a-z0-9][a-z0-9-]{0,40}``: no dots, so keys split unambiguously."""
    return bool(_COLLECTOR_RE.match(collector))


# ---------------------------------------------------------------------------------------------
# Lines and files


@functools.lru_cache(maxsize=1024)
def _check_channel(channel: str) -> bytes:
    if not _CHANNEL_RE.match(channel):
        raise RawFormatError(f"invalid channel tag {channel!r}")
    return channel.encode("ascii")


def _clean_payload(payload: bytes | str) -> tuple[bytes, int]:
    """Payload bytes with CR/LF replaced by spaces, and how many were replaced."""
    data = payload.encode("utf-8") if isinstance(payload, str) else bytes(payload)
    replaced = data.count(b"\n") + data.count(b"\r")
    if replaced:
        data = data.translate(_NEWLINES_TO_SPACES)
    return data, replaced


def _encode(recv_ns: int, channel: str, payload: bytes | str) -> tuple[bytes, int]:
    if isinstance(recv_ns, bool) or not isinstance(recv_ns, int) or recv_ns < 0:
        raise RawFormatError(f"recv_ns must be a non-negative int, got {recv_ns!r}")
    data, replaced = _clean_payload(payload)
    return b"%d %s %s\n" % (recv_ns, _check_channel(channel), data), replaced


def encode_line(recv_ns: int, channel: str, payload: bytes | str) -> bytes:
    """One line of a minute file, newline included; CR/LF in the payload become spaces.

    ``encode_line(1721347021080832061, "ws:depth", b'{"stream":"btcusdt@depth@0ms","data":{}}')``
    gives ``b'1721347021080832061 ws:depth {"stream":"btcusdt@depth@0ms","data":{}}\\n'``.
    """
    return _encode(recv_ns, channel, payload)[0]


def parse_line(line: bytes, exchange: str, collector: str) -> RawRecord:
    """Parse one line (with or without its newline); RawFormatError if malformed.

    Sample: ``b'1721347021080832061 ws:bookTicker {"stream":"btcusdt@bookTicker","data":{"u":1}}'``
    -> ``RawRecord(1721347021080832061, "ws:bookTicker", b'{"stream":...}', exchange, collector)``.
    """
    if line.endswith(b"\n"):
        line = line[:-1]
    parts = line.split(b" ", 2)
    if len(parts) != 3:
        raise RawFormatError(f"raw line has no channel/payload: {line[:80]!r}")
    stamp, channel_bytes, payload = parts
    if not stamp.isdigit() or len(stamp) > 20:
        raise RawFormatError(f"raw line has a bad receive time: {line[:80]!r}")
    if b"\n" in payload or b"\r" in payload:
        raise RawFormatError(f"raw line payload contains CR/LF: {line[:80]!r}")
    try:
        channel = channel_bytes.decode("ascii")
        _check_channel(channel)
    except (UnicodeDecodeError, RawFormatError) as exc:
        raise RawFormatError(f"raw line has a bad channel tag: {line[:80]!r}") from exc
    return RawRecord(int(stamp), channel, payload, exchange, collector)


def parse_lines(lines: Iterable[bytes], exchange: str, collector: str) -> tuple[list[RawRecord], int]:
    """Every line :func:`parse_line` accepts as its record, in order, and how many it rejects.

    The same result as calling :func:`parse_line` on each line, faster: a minute file holds a handful
    of channel tags, so each distinct tag is validated once (by :func:`parse_line`) and the lines
    carrying an already validated tag only have their receive time and payload checked here (by the
    compiled ``parse_lines`` of moonstream/native_src/lines.c where built, up to the next other line).
    """
    records: list[RawRecord] = []
    append = records.append
    tags: dict[bytes, str] = {}  # tag bytes -> channel, validated
    malformed = 0
    lines = lines if type(lines) is list else list(lines)
    i = 0
    while i < len(lines):
        done = _compiled_parse_lines(lines, i, tags, exchange, collector, RawRecord, records)
        if done is not NotImplemented:
            i = done  # the lines before i are parsed; lines[i] is one the compiled loop leaves
        if i < len(lines):
            malformed += _parse_other_line(lines[i], tags, exchange, collector, append)
            i += 1
    return records, malformed


_compiled_parse_lines = compiled("parse_lines")


def _parse_other_line(
    line: bytes, tags: dict[bytes, str], exchange: str, collector: str, append: Callable[[RawRecord], None]
) -> int:
    """One line of :func:`parse_lines`: its record appended (1 returned if malformed, else 0)."""
    parts = line.split(b" ", 2)
    if len(parts) == 3:
        stamp, tag, payload = parts
        channel = tags.get(tag)
        if (
            channel is not None
            and stamp.isdigit()
            and len(stamp) <= 20
            and payload.find(b"\r") < 0  # not `in`: on CPython 3.11 `bytes in bytes` first
            and payload.find(b"\n") < 0  # tries an int and formats a TypeError (~2k instructions)
        ):
            append(RawRecord(int(stamp), channel, payload, exchange, collector))
            return 0
    try:
        record = parse_line(line, exchange, collector)
    except RawFormatError:
        return 1
    tags[record.channel.encode("ascii")] = record.channel
    append(record)
    return 0


def compress_minute(content: bytes) -> bytes:
    """One zstd frame, level 3, content size and checksum, no dictionary: same input, same bytes."""
    compressor = zstandard.ZstdCompressor(
        level=ZSTD_LEVEL, write_content_size=True, write_checksum=True, threads=0
    )
    return compressor.compress(content)


#: The largest content size (from the frame header) decompressed in one call into a buffer of that size.
_ONE_SHOT_MAX = 1 << 30


def decompress_minute(blob: bytes) -> bytes:
    """The lines of a minute file; RawFormatError if it is not exactly one complete zstd frame."""
    try:
        size = zstandard.frame_content_size(blob)
    except zstandard.ZstdError:
        size = -1
    if 0 <= size <= _ONE_SHOT_MAX:
        # Our files carry their content size: one call into a buffer of that size, which checks the
        # frame is whole (size and checksum) and alone; anything else takes the path below, which
        # says what is wrong.
        try:
            return zstandard.ZstdDecompressor().decompress(blob, allow_extra_data=False)
        except zstandard.ZstdError:
            pass
    decompressor = zstandard.ZstdDecompressor().decompressobj()
    try:
        content = decompressor.decompress(blob)
    except zstandard.ZstdError as exc:
        raise RawFormatError(f"undecodable zstd data: {exc}") from exc
    if not decompressor.eof:
        raise RawFormatError("truncated zstd frame")
    if decompressor.unused_data:
        raise RawFormatError(f"{len(decompressor.unused_data)} bytes after the zstd frame")
    return content


def _sorted_content(lines: list[tuple[int, bytes]]) -> bytes:
    lines.sort(key=lambda item: item[0])  # stable: ties keep their order
    return b"".join(line for _, line in lines)


def _store_minute(store: Store, key: str, blob: bytes) -> bool:
    """Create-only write; True if written, False if the same lines were already stored."""
    try:
        return store.create_or_same(key, blob, RAW_META)
    except ObjectExists:
        existing = store.read(key).data
    try:  # another zstd version may encode the same lines differently: compare content
        same = decompress_minute(existing) == decompress_minute(blob)
    except RawFormatError:
        same = False
    if same:
        return False
    raise RawConflictError(f"{key}: a different minute file already exists")


def write_minute_file(
    store: Store,
    symbol: str,
    minute: int,
    exchange: Exchange | str,
    collector: str,
    lines: Iterable[tuple[int, str, bytes | str]],
) -> bool:
    """Write one complete minute file from ``(recv_ns, channel, payload)`` lines in one go.

    Lines are sorted stably by ``recv_ns``; each must fall inside ``minute`` (ValueError otherwise,
    and for an empty file). Returns True if written, False if identical lines were already stored;
    raises :class:`RawConflictError` if different lines are stored under the key.
    """
    key = raw_key(symbol, minute, exchange, collector)
    start = minute_start_ns(minute)
    encoded: list[tuple[int, bytes]] = []
    for recv_ns, channel, payload in lines:
        line = encode_line(recv_ns, channel, payload)
        if not start <= recv_ns < start + NS_PER_MINUTE:
            raise ValueError(f"{key}: receive time {recv_ns} is outside the minute")
        encoded.append((recv_ns, line))
    if not encoded:
        raise ValueError(f"{key}: a minute file needs at least one line")
    return _store_minute(store, key, compress_minute(_sorted_content(encoded)))


# ---------------------------------------------------------------------------------------------
# Live writer


@dataclass
class WriterCounters:
    """What a :class:`MinuteFileWriter` has done since it started."""

    lines: int = 0
    bytes: int = 0
    newline_replacements: int = 0
    torn_lines_dropped: int = 0
    malformed_lines_dropped: int = 0
    late_lines_dropped: int = 0
    files_finalized: int = 0
    files_unchanged: int = 0
    files_conflict: int = 0
    finalize_errors: int = 0


Item = tuple[str, str, int, str, bytes | str]
"""One message for :meth:`MinuteFileWriter.append_many`: symbol, exchange, recv_ns, channel, payload."""


EncodedItem = tuple[tuple[str, int, str], int, bytes]
"""One encoded line for :meth:`MinuteFileWriter.append_lines`: (symbol, minute, exchange), recv_ns, line."""


_FIRST = operator.itemgetter(0)
_THIRD = operator.itemgetter(2)


def _clean_lines(lines: list[bytes]) -> tuple[bytes, int]:
    """Encoded lines joined, CR/LF inside each payload replaced by spaces; and how many were."""
    out = []
    replaced = 0
    for line in lines:
        recv, tag, rest = line.split(b" ", 2)
        payload, count = _clean_payload(rest[:-1])
        replaced += count
        out.append(b"%s %s %s\n" % (recv, tag, payload))
    return b"".join(out), replaced


@dataclass
class _Partial:
    path: Path
    key: RawKey
    handle: io.FileIO | None = None


class MinuteFileWriter:
    """Append received messages to per-minute partial files; finalize them into the store.

    Each append is one unbuffered ``write()`` of one complete line to a file opened append-only, so
    a killed process loses nothing it appended (the kernel has it); only a line torn by the kill
    itself can be lost, and it is dropped at recovery. Thread-safe; store I/O happens outside the
    lock. Call :meth:`recover` at start, :meth:`finalize_due` every second or so, and :meth:`close`
    (or :meth:`finalize_all`) at shutdown.
    """

    def __init__(
        self,
        spool_dir: Path,
        store: Store,
        collector_id: str,
        *,
        grace_ns: int = 2_000_000_000,
        max_open_files: int = 32,
    ) -> None:
        if not is_valid_collector_id(collector_id):
            raise ValueError(f"invalid collector id {collector_id!r}")
        self.spool_dir = Path(spool_dir)
        self.store = store
        self.collector_id = collector_id
        self.grace_ns = grace_ns
        self.max_open_files = max(1, max_open_files)
        self.counters = WriterCounters()
        self._lock = threading.Lock()
        self._partials: dict[tuple[str, int, str], _Partial] = {}
        self._open: OrderedDict[tuple[str, int, str], io.FileIO] = OrderedDict()
        self._finalized: OrderedDict[tuple[str, int, str], None] = OrderedDict()
        self._retry: list[_Partial] = []
        self._late_logged: set[tuple[str, int, str]] = set()

    # -- appending -------------------------------------------------------------------------

    def append(
        self, symbol: str, exchange: Exchange | str, recv_ns: int, channel: str, payload: bytes | str
    ) -> None:
        """Append one received message to the partial file of its receive-time minute."""
        line, replaced = _encode(recv_ns, channel, payload)
        ident = (symbol, minute_of(recv_ns), str(exchange))
        with self._lock:
            if ident in self._finalized:
                self._drop_late(ident)
                return
            partial = self._partials.get(ident)
            if partial is None:
                partial = self._track(RawKey(ident[0], ident[1], ident[2], self.collector_id))
            handle = self._handle(ident, partial)
            try:
                view = memoryview(line)
                while view:
                    view = view[handle.write(view) or 0 :]
            except OSError:  # e.g. disk full: never leave a fragment for the next line to join
                self._repair_tail(handle, partial.path)
                raise
            self.counters.lines += 1
            self.counters.bytes += len(line)
            self.counters.newline_replacements += replaced

    def append_many(self, items: Sequence[Item]) -> list[tuple[Item, Exception]]:
        """Append ``(symbol, exchange, recv_ns, channel, payload)`` items: what :meth:`append` does
        for each, in order, but with one ``write()`` per partial file for the whole batch.

        Returns the items that were not written, each with its exception: a line that cannot be
        encoded (RawFormatError, TypeError), or a failed write (e.g. disk full: an OSError for every
        line of that file in the batch; the file is cut back to its last complete line). Lines for
        an already finalized minute are dropped and counted, as in :meth:`append`.
        """
        failed: list[tuple[Item, Exception]] = []
        encoded: list[EncodedItem] = []
        source: dict[int, Item] = {}  # id(encoded item) -> the item it came from
        tags: dict[str, bytes] = {}
        for item in items:
            symbol, exchange, recv_ns, channel, payload = item
            try:
                tag = tags.get(channel) or tags.setdefault(channel, _check_channel(channel))
            except RawFormatError as exc:
                failed.append((item, exc))
                continue
            if type(recv_ns) is not int or recv_ns < 0:
                failed.append((item, RawFormatError(f"recv_ns must be a non-negative int, got {recv_ns!r}")))
                continue
            if isinstance(payload, str):  # UTF-8, as append does
                payload = payload.encode("utf-8")
            try:
                line = b"%d %b %b\n" % (recv_ns, tag, payload)
            except TypeError as exc:  # not bytes at all
                failed.append((item, exc))
                continue
            entry = ((symbol, recv_ns // NS_PER_MINUTE, str(exchange)), recv_ns, line)
            encoded.append(entry)
            source[id(entry)] = item
        failed.extend((source[id(entry)], exc) for entry, exc in self.append_lines(encoded))
        return failed

    def append_lines(self, items: Sequence[EncodedItem]) -> list[tuple[EncodedItem, Exception]]:
        """Append ``((symbol, minute, exchange), recv_ns, line)`` items whose lines the caller already
        encoded as ``b"%d %s %s\\n" % (recv_ns, channel_tag, payload)`` (``recv_ns`` in ``minute``, a
        valid channel tag), one ``write()`` per partial file (:meth:`append_many` encodes, then calls this). A
        payload's CR/LF is replaced here, as :meth:`append` does. Returns the items not written (a
        failed write: every line of that file in the batch), each with its exception.
        """
        groups: dict[tuple[str, int, str], list[bytes]] = {}
        idents = list(map(_FIRST, items))
        if idents and idents.count(idents[0]) == len(idents):  # one file (usual): no Python loop
            groups[idents[0]] = list(map(_THIRD, items))
        else:
            ident0: tuple[str, int, str] | None = None
            lines: list[bytes] = []
            for ident, _, line in items:  # consecutive items mostly share a file
                if ident is not ident0:
                    ident0 = ident
                    lines = groups.get(ident) or groups.setdefault(ident, [])
                lines.append(line)
        failed: list[tuple[EncodedItem, Exception]] = []
        with self._lock:
            for ident, group in groups.items():
                try:
                    self._write_group(ident, group)
                except (OSError, RawFormatError) as exc:
                    failed.extend((it, exc) for it in items if it[0] == ident)
        return failed

    def append_file_lines(self, ident: tuple[str, int, str], lines: list[bytes]) -> None:
        """Append lines already encoded as ``b"%d %s %s\\n" % (recv_ns, channel_tag, payload)`` (each
        ``recv_ns`` in the minute, a valid channel tag) to the partial file of ``ident`` =
        ``(symbol, minute, exchange)``, in one ``write()``; a payload's CR/LF is replaced here, as
        :meth:`append` does. Lines for an already finalized minute are dropped and counted. Raises
        OSError (the file is cut back to its last complete line: every line is lost) or
        RawFormatError (an invalid symbol or exchange)."""
        with self._lock:
            self._write_group(ident, lines)

    def _write_group(self, ident: tuple[str, int, str], group: list[bytes]) -> None:
        """One ``write()`` of one file's lines; the caller holds the lock."""
        if ident in self._finalized:
            for _ in group:
                self._drop_late(ident)
            return
        counters = self.counters
        data = b"".join(group)
        count = len(group)
        if data.count(b"\n") != count or b"\r" in data:  # CR/LF in a payload (rare)
            data, replaced = _clean_lines(group)
            counters.newline_replacements += replaced
        partial = self._partials.get(ident)
        if partial is None:
            partial = self._track(RawKey(ident[0], ident[1], ident[2], self.collector_id))
        handle = self._handle(ident, partial)
        view = memoryview(data)
        try:
            while view:
                view = view[handle.write(view) or 0 :]
        except OSError:  # never leave a fragment for the next line to join
            self._repair_tail(handle, partial.path)
            raise
        counters.lines += count
        counters.bytes += len(data)

    def _drop_late(self, ident: tuple[str, int, str]) -> None:
        self.counters.late_lines_dropped += 1
        if ident not in self._late_logged:
            self._late_logged.add(ident)
            log.warning("dropping late line(s) for already finalized minute file %s", ident)

    def _track(self, key: RawKey) -> _Partial:
        day, hhmm = minute_date_hhmm(key.minute)
        path = self.spool_dir / key.symbol / day / hhmm / f"{key.exchange}.{key.collector}{PARTIAL_SUFFIX}"
        partial = _Partial(path, key)
        self._partials[(key.symbol, key.minute, key.exchange)] = partial
        return partial

    def _handle(self, ident: tuple[str, int, str], partial: _Partial) -> io.FileIO:
        if partial.handle is not None:
            self._open.move_to_end(ident)
            return partial.handle
        while len(self._open) >= self.max_open_files:
            old_ident, old_handle = self._open.popitem(last=False)
            old_handle.close()
            self._partials[old_ident].handle = None
        partial.path.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC  # read too: for _repair_tail
        handle = io.FileIO(os.open(partial.path, flags, 0o644), "r+")
        self._repair_tail(handle, partial.path)
        partial.handle = handle
        self._open[ident] = handle
        return handle

    def _repair_tail(self, handle: io.FileIO, path: Path) -> None:
        """Cut a torn last line (left by a crash) before appending after it."""
        size = os.fstat(handle.fileno()).st_size
        if size == 0 or os.pread(handle.fileno(), 1, size - 1) == b"\n":
            return
        data = os.pread(handle.fileno(), size, 0)
        os.ftruncate(handle.fileno(), data.rfind(b"\n") + 1)
        self.counters.torn_lines_dropped += 1
        log.warning("dropped a torn last line (%d bytes) of %s", size - data.rfind(b"\n") - 1, path)

    # -- finalizing ------------------------------------------------------------------------

    def _is_due(self, minute: int, now_ns: int) -> bool:
        return minute_start_ns(minute + 1) + self.grace_ns < now_ns

    def finalize_due(self, now_ns: int) -> list[str]:
        """Finalize every partial file whose minute ended more than the grace before ``now_ns``.

        Returns the keys now present in the store (written, or already there with the same lines).
        """
        return self._finalize_where(lambda minute: self._is_due(minute, now_ns))

    def finalize_all(self) -> list[str]:
        """Finalize every partial file, the current minute's included (later lines for it are dropped).

        A restart within the same minute would then record a second, different file under the same
        key (a conflict); :meth:`close` avoids that by leaving the current minute to :meth:`recover`.
        """
        return self._finalize_where(lambda minute: True)

    def close(self, now_ns: int | None = None) -> list[str]:
        """Shutdown: finalize due minutes, close every handle, leave current minutes for recover()."""
        keys = self.finalize_due(time.time_ns() if now_ns is None else now_ns)
        with self._lock:
            for ident, handle in self._open.items():
                handle.close()
                self._partials[ident].handle = None
            self._open.clear()
        return keys

    def recover(self, *, include_current: bool = False, now_ns: int | None = None) -> list[str]:
        """At start: finalize leftover partial files of this collector id (from a crash or close()).

        Partial files of minutes not yet due are adopted (appends continue in them) unless
        ``include_current`` is set, in which case they are finalized too. Returns the keys finalized.
        """
        now = time.time_ns() if now_ns is None else now_ns
        with self._lock:
            for path in sorted(self.spool_dir.rglob(f"*{PARTIAL_SUFFIX}")):
                key = self._partial_key(path)
                if key is not None and (key.symbol, key.minute, key.exchange) not in self._partials:
                    self._partials[(key.symbol, key.minute, key.exchange)] = _Partial(path, key)
        return self._finalize_where(lambda minute: include_current or self._is_due(minute, now))

    def _partial_key(self, path: Path) -> RawKey | None:
        try:
            symbol, day, hhmm, name = path.relative_to(self.spool_dir).parts
            match = _PARTIAL_NAME_RE.match(name)
            if match is None:
                raise RawFormatError(f"bad partial file name {name!r}")
            key = parse_raw_key(
                f"{RAW_PREFIX}{symbol}/{day}/{hhmm}/{match['exchange']}.{match['collector']}{RAW_SUFFIX}"
            )
        except (ValueError, RawFormatError):
            log.warning("ignoring unexpected file in the spool directory: %s", path)
            return None
        if key.collector != self.collector_id:
            log.warning("ignoring partial file of another collector id %r: %s", key.collector, path)
            return None
        return key

    def _finalize_where(self, is_selected: Callable[[int], bool]) -> list[str]:
        with self._lock:
            selected = [ident for ident in self._partials if is_selected(ident[1])]
            batch = self._retry
            self._retry = []
            for ident in selected:
                partial = self._partials.pop(ident)
                if partial.handle is not None:
                    partial.handle.close()
                    del self._open[ident]
                    partial.handle = None
                batch.append(partial)
                self._finalized[ident] = None
            self._prune_finalized()
        return [key for partial in batch if (key := self._finalize_file(partial)) is not None]

    def _prune_finalized(self) -> None:
        if not self._finalized:
            return
        newest = max(minute for _, minute, _ in self._finalized)
        for ident in [ident for ident in self._finalized if ident[1] < newest - 60]:
            del self._finalized[ident]
            self._late_logged.discard(ident)

    def _finalize_file(self, partial: _Partial) -> str | None:
        key = partial.key.key
        try:
            content = self._complete_content(partial)
            if content:
                written = _store_minute(self.store, key, compress_minute(content))
                if written:
                    self.counters.files_finalized += 1
                else:
                    self.counters.files_unchanged += 1
        except RawConflictError:
            self.counters.files_conflict += 1
            aside = self._set_aside(partial.path)
            log.error("minute file %s already exists with different lines; kept %s", key, aside)
            return None
        except (OSError, StoreError):
            self.counters.finalize_errors += 1
            log.exception("could not finalize %s (will retry)", partial.path)
            with self._lock:
                self._retry.append(partial)
            return None
        with self._lock:
            partial.path.unlink(missing_ok=True)
            for parent in (partial.path.parent, partial.path.parent.parent):
                try:
                    parent.rmdir()
                except OSError:
                    break
        return key if content else None

    def _complete_content(self, partial: _Partial) -> bytes:
        """Complete, well-formed lines of a partial file, sorted stably by receive time.

        A torn last line is cut from the file itself, so a retry does not count it twice.
        """
        path = partial.path
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            log.warning("partial file %s vanished before it was finalized", path)
            return b""
        end = data.rfind(b"\n") + 1
        if end < len(data):
            self.counters.torn_lines_dropped += 1
            log.warning("dropped a torn last line (%d bytes) of %s", len(data) - end, path)
            os.truncate(path, end)
        start_ns = minute_start_ns(partial.key.minute)
        lines: list[tuple[int, bytes]] = []
        malformed = 0
        for raw in data[:end].split(b"\n")[:-1]:
            try:
                record = parse_line(raw, "", "")
            except RawFormatError:
                malformed += 1
                continue
            if not start_ns <= record.recv_ns < start_ns + NS_PER_MINUTE:
                malformed += 1
                continue
            lines.append((record.recv_ns, raw + b"\n"))
        if malformed:
            self.counters.malformed_lines_dropped += malformed
            log.warning("dropped %d malformed line(s) of %s", malformed, path)
        return _sorted_content(lines)

    def _set_aside(self, path: Path) -> Path:
        base = str(path)[: -len(PARTIAL_SUFFIX)]
        aside = Path(base + CONFLICT_SUFFIX)
        number = 1
        while aside.exists():
            number += 1
            aside = Path(f"{base}.{number}{CONFLICT_SUFFIX}")
        with self._lock:
            path.rename(aside)
        return aside


# ---------------------------------------------------------------------------------------------
# Readers


@dataclass
class ReadReport:
    """What reading minute files found; pass one to the readers to collect it across calls."""

    files_read: int = 0
    lines_read: int = 0
    lines_malformed: int = 0
    files_corrupt: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "files_read": self.files_read,
            "lines_read": self.lines_read,
            "lines_malformed": self.lines_malformed,
            "files_corrupt": list(self.files_corrupt),
        }


def _list_keys(store: Store, symbol: str, first: int | None, last: int | None) -> list[RawKey]:
    if not is_valid_symbol(symbol):
        raise ValueError(f"invalid symbol {symbol!r}")
    if first is not None and last is not None:
        if first > last:
            return []
        if first == last:  # one minute: list only its folder, not the whole day
            day, hhmm = minute_date_hhmm(first)
            prefixes = [f"{RAW_PREFIX}{symbol}/{day}/{hhmm}/"]
        else:
            days = range(first // _MINUTES_PER_DAY, last // _MINUTES_PER_DAY + 1)
            prefixes = [
                f"{RAW_PREFIX}{symbol}/{minute_date_hhmm(day * _MINUTES_PER_DAY)[0]}/" for day in days
            ]
    else:
        prefixes = [f"{RAW_PREFIX}{symbol}/"]
    keys: list[RawKey] = []
    for prefix in prefixes:
        for name in store.list(prefix):
            if not name.endswith(RAW_SUFFIX):
                continue
            try:
                key = parse_raw_key(name)
            except RawFormatError:
                log.warning("ignoring malformed raw key %s", name)
                continue
            if (first is None or key.minute >= first) and (last is None or key.minute <= last):
                keys.append(key)
    return keys


def list_raw_minutes(
    store: Store, symbol: str, first_minute: int | None = None, last_minute: int | None = None
) -> list[int]:
    """Sorted minutes (inclusive range) that have at least one finalized file for ``symbol``."""
    return sorted({key.minute for key in _list_keys(store, symbol, first_minute, last_minute)})


_CORRUPT_LOGGED: set[str] = set()


def list_raw_files(store: Store, symbol: str, minute: int) -> list[RawKey]:
    """The finalized files of ``symbol``'s ``minute`` (every exchange and collector), by key."""
    return sorted(_list_keys(store, symbol, minute, minute), key=lambda k: k.key)


def _read_file(store: Store, key: RawKey, report: ReadReport) -> list[RawRecord]:
    name = key.key
    try:
        content = decompress_minute(store.read_bytes(name))
    except (RawFormatError, ObjectNotFound) as exc:
        report.files_corrupt.append(name)
        if name not in _CORRUPT_LOGGED:  # once per process; the report lists it every time
            if len(_CORRUPT_LOGGED) >= 10_000:
                _CORRUPT_LOGGED.clear()
            _CORRUPT_LOGGED.add(name)
            log.error("unreadable raw minute file %s: %s", name, exc)
        return []
    report.files_read += 1
    lines = content.split(b"\n")
    if lines[-1]:
        log.warning("raw minute file %s does not end with a newline", name)
    else:
        lines.pop()
    records, malformed = parse_lines(lines, key.exchange, key.collector)
    if malformed:
        log.warning("raw minute file %s: %d malformed line(s) skipped", name, malformed)
    report.lines_read += len(records)
    report.lines_malformed += malformed
    return records


_RECV_NS = operator.attrgetter("recv_ns")


def _read_keys(store: Store, keys: list[RawKey], report: ReadReport) -> list[RawRecord]:
    records: list[RawRecord] = []
    for key in sorted(keys, key=lambda k: k.key):
        records.extend(_read_file(store, key, report))
    records.sort(key=_RECV_NS)  # stable: key order, then line order
    return records


def read_minute(
    store: Store, symbol: str, minute: int, *, report: ReadReport | None = None
) -> list[RawRecord]:
    """Every record of ``symbol``'s ``minute`` from all exchanges and collectors, by receive time.

    Ties keep file order (by key), then line order. Unreadable files and malformed lines are logged,
    skipped and added to ``report`` (the readable records are still returned). Store failures raise.
    """
    return _read_keys(store, _list_keys(store, symbol, minute, minute), report or ReadReport())


def iter_minutes(
    store: Store, symbol: str, first: int, last: int, *, report: ReadReport | None = None
) -> Iterator[tuple[int, list[RawRecord]]]:
    """``(minute, records)`` for every minute from ``first`` to ``last`` inclusive (empty if none)."""
    by_minute: dict[int, list[RawKey]] = {}
    for key in _list_keys(store, symbol, first, last):
        by_minute.setdefault(key.minute, []).append(key)
    used = report or ReadReport()
    for minute in range(first, last + 1):
        yield minute, _read_keys(store, by_minute.get(minute, []), used)
