"""What every importer shares: reading a source file, timestamps, the batch of minute files, the report."""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import zstandard

from moonstream.collector.rawfile import RawConflictError, is_valid_collector_id, write_minute_file
from moonstream.store.base import Store
from moonstream.symbols import Exchange, symbol_from_instrument
from moonstream.timeutil import iso_minute, minute_of

log = logging.getLogger(__name__)

_TIMESTAMP_RE = re.compile(r"^(\d{1,20})(?:\.(\d{1,18}))?$")
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
MAX_LOGGED_PER_REASON = 20
SUMMARY_SYMBOLS = 6


class ImportFormatError(Exception):
    """A source file is not in a known format, or cannot be attributed (e.g. ambiguous symbol)."""


def parse_timestamp_ns(text: str) -> int:
    """A receive timestamp in s, ms, µs or ns (unit from its magnitude) as integer ns since the epoch.

    ``1626992741.06217`` (s) -> 1626992741062170000; ``1680652700423575`` (µs) -> 1680652700423575000;
    ``1721347020984480942`` (ns) unchanged. The integer part decides the unit (< 1e11 s, < 1e14 ms,
    < 1e17 µs, else ns); a fraction is exact to the nanosecond. ValueError if not a plain decimal.
    """
    match = _TIMESTAMP_RE.match(text)
    if match is None:
        raise ValueError(f"not a timestamp: {text[:40]!r}")
    whole = int(match[1])
    if whole < 10**11:
        unit = 1_000_000_000
    elif whole < 10**14:
        unit = 1_000_000
    elif whole < 10**17:
        unit = 1_000
    else:
        unit = 1
    fraction = match[2] or ""
    return whole * unit + int(fraction.ljust(18, "0")) * unit // 10**18


def read_source(path: Path) -> bytes:
    """The decompressed bytes of a source file (gzip and zstd recognized by their magic bytes)."""
    data = path.read_bytes()
    try:
        if data.startswith(_GZIP_MAGIC):
            return gzip.decompress(data)
        if data.startswith(_ZSTD_MAGIC):
            reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=True)
            return reader.read()
    except (OSError, EOFError, zstandard.ZstdError) as exc:
        raise ImportFormatError(f"{path.name}: cannot decompress: {exc}") from exc
    return data


def collector_id_for(content: bytes) -> str:
    """``imp-`` + the first 10 hex digits of sha256 of the (decompressed) content."""
    collector = "imp-" + hashlib.sha256(content).hexdigest()[:10]
    assert is_valid_collector_id(collector)
    return collector


def iter_lines(content: bytes) -> Iterator[tuple[int, bytes]]:
    """``(line number from 1, line without its LF or CRLF)``; a final empty piece is not a line."""
    lines = content.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for number, line in enumerate(lines, start=1):
        yield number, line[:-1] if line.endswith(b"\r") else line


@dataclass(frozen=True)
class ImportReport:
    """What importing one file did. ``lines_read`` = records + skipped for one-record-per-line formats.

    ``records_by_symbol`` counts records placed in minute files, whether those files were new
    (``files_written``) or already stored byte-identical (``files_unchanged``).
    """

    path: str
    format: str
    collector: str
    lines_read: int = 0
    records_by_symbol: dict[str, int] = field(default_factory=dict)
    files_written: int = 0
    files_unchanged: int = 0
    files_conflict: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    skipped_symbols: dict[str, int] = field(default_factory=dict)
    unknown_instruments: dict[str, int] = field(default_factory=dict)
    first_minute: int | None = None
    last_minute: int | None = None
    error: str | None = None

    @property
    def records(self) -> int:
        return sum(self.records_by_symbol.values())

    def as_dict(self) -> dict[str, object]:
        return {
            "path": self.path,
            "format": self.format,
            "collector": self.collector,
            "lines_read": self.lines_read,
            "records": self.records,
            "records_by_symbol": dict(self.records_by_symbol),
            "files_written": self.files_written,
            "files_unchanged": self.files_unchanged,
            "files_conflict": self.files_conflict,
            "skipped": dict(self.skipped),
            "skipped_symbols": dict(self.skipped_symbols),
            "unknown_instruments": dict(self.unknown_instruments),
            "first_minute": None if self.first_minute is None else iso_minute(self.first_minute),
            "last_minute": None if self.last_minute is None else iso_minute(self.last_minute),
            "error": self.error,
        }

    def summary(self) -> str:
        """One line for the log and the CLI."""
        if self.error is not None:
            return f"{self.path}: FAILED: {self.error}"
        ranked = sorted(self.records_by_symbol.items(), key=lambda item: (-item[1], item[0]))
        symbols = ", ".join(f"{s} {n}" for s, n in ranked[:SUMMARY_SYMBOLS]) or "none"
        if len(ranked) > SUMMARY_SYMBOLS:
            symbols += f", {len(ranked) - SUMMARY_SYMBOLS} more symbols"
        skipped = ", ".join(f"{r} {n}" for r, n in sorted(self.skipped.items())) or "none"
        span = ""
        if self.first_minute is not None and self.last_minute is not None:
            span = f" {iso_minute(self.first_minute)}..{iso_minute(self.last_minute)}"
        return (
            f"{self.path}: {self.format} as {self.collector}: {self.lines_read} lines, "
            f"{self.records} records ({symbols}){span}; files {self.files_written} written, "
            f"{self.files_unchanged} unchanged, {self.files_conflict} conflicting; skipped: {skipped}"
        )


class ImportBatch:
    """Records of one source file grouped by (symbol, minute, exchange), then written as minute files."""

    def __init__(self, path: Path, fmt: str, collector: str, symbols: set[str] | None) -> None:
        self.path = path
        self.fmt = fmt
        self.collector = collector
        self.symbols = symbols
        self.lines_read = 0
        self._groups: dict[tuple[str, int, str], list[tuple[int, str, bytes]]] = {}
        self._records: Counter[str] = Counter()
        self._skipped: Counter[str] = Counter()
        self._skipped_symbols: Counter[str] = Counter()
        self._unknown: Counter[str] = Counter()
        self._files: Counter[str] = Counter()
        self._logged: Counter[str] = Counter()

    def add(self, symbol: str, exchange: Exchange, recv_ns: int, channel: str, payload: bytes) -> None:
        """One record for ``symbol``, unless the symbol filter excludes it (then counted as skipped)."""
        if self.symbols is not None and symbol not in self.symbols:
            self._skipped_symbols[symbol] += 1
            self._skipped["symbol_not_selected"] += 1
            return
        key = (symbol, minute_of(recv_ns), exchange.value)
        self._groups.setdefault(key, []).append((recv_ns, channel, payload))
        self._records[symbol] += 1

    def skip(self, reason: str, line_no: int | None = None, detail: str | None = None) -> None:
        """Count a skipped line; with ``detail``, also log a warning naming the file and line.

        At most :data:`MAX_LOGGED_PER_REASON` warnings per reason and file, then one "more" line.
        """
        self._skipped[reason] += 1
        if detail is None:
            return
        self._logged[reason] += 1
        where = f"{self.path.name}:{line_no}" if line_no is not None else self.path.name
        if self._logged[reason] <= MAX_LOGGED_PER_REASON:
            log.warning("%s: skipped (%s): %s", where, reason, detail)
        elif self._logged[reason] == MAX_LOGGED_PER_REASON + 1:
            log.warning("%s: more lines skipped as %s; not logging each", where, reason)

    def unknown_instrument(self, instrument: str) -> None:
        """A line about an instrument that is not a USDT perpetual (``BTCUSDC``, ``BTC-USDT``)."""
        self._unknown[instrument] += 1
        self._skipped["unknown_symbol"] += 1

    def write(self, store: Store) -> None:
        """Write every minute file (sorted by key); conflicts are logged and counted, never overwritten."""
        for symbol, minute, exchange in sorted(self._groups):
            lines = self._groups[(symbol, minute, exchange)]
            try:
                written = write_minute_file(store, symbol, minute, exchange, self.collector, lines)
            except RawConflictError as exc:
                log.error("%s: %s", self.path.name, exc)
                self._files["conflict"] += 1
                continue
            self._files["written" if written else "unchanged"] += 1

    def report(self) -> ImportReport:
        minutes = [minute for _, minute, _ in self._groups]
        return ImportReport(
            path=str(self.path),
            format=self.fmt,
            collector=self.collector,
            lines_read=self.lines_read,
            records_by_symbol=dict(sorted(self._records.items())),
            files_written=self._files["written"],
            files_unchanged=self._files["unchanged"],
            files_conflict=self._files["conflict"],
            skipped=dict(sorted(self._skipped.items())),
            skipped_symbols=dict(sorted(self._skipped_symbols.items())),
            unknown_instruments=dict(sorted(self._unknown.items())),
            first_minute=min(minutes) if minutes else None,
            last_minute=max(minutes) if minutes else None,
        )


def import_rows(
    lines: Iterable[tuple[int, bytes]],
    batch: ImportBatch,
    parse_row: Callable[[bytes], tuple[str, int]],
    channel: str,
) -> None:
    """One record per line for Binance CSV formats: ``parse_row`` gives ``(instrument, recv_ns)``.

    The payload is the line exactly as in the file (without its line ending). Lines ``parse_row``
    rejects (ValueError) are counted as ``malformed`` and logged with file and line number.
    """
    for number, line in lines:
        batch.lines_read += 1
        if not line.strip():
            batch.skip("blank")
            continue
        try:
            instrument, recv_ns = parse_row(line)
        except ValueError as exc:
            batch.skip("malformed", number, f"{exc}: {line[:100]!r}")
            continue
        symbol = symbol_from_instrument(Exchange.BINANCE, instrument)
        if symbol is None:
            batch.unknown_instrument(instrument)
            continue
        batch.add(symbol, Exchange.BINANCE, recv_ns, channel, line)
