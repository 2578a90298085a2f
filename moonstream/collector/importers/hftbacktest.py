"""Import ``<recv_ts> <raw json>`` recordings (hftbacktest's Binance USDT-M collector format).

Each line is a receive timestamp (s with or without a fraction, ms, µs or ns) and the message as
received: a combined-stream message (``{"stream":"btcusdt@depth@0ms","data":{...}}``) or a REST depth
snapshot without envelope (``{"lastUpdateId":..,"E":..,"T":..,"bids":[..],"asks":[..]}``), which
belongs to the one symbol of the file's stream lines.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable

from moonstream.collector.exchanges import binance
from moonstream.collector.importers.common import ImportBatch, ImportFormatError, parse_timestamp_ns

log = logging.getLogger(__name__)

FORMAT = "hftbacktest"


def parse_hft_line(line: bytes) -> tuple[int, bytes]:
    """``(recv_ns, payload)`` of one line; ValueError if there is no timestamp and payload.

    ``b'1721347021080832061 {"stream":"btcusdt@bookTicker","data":{...}}'``
    -> ``(1721347021080832061, b'{"stream":"btcusdt@bookTicker","data":{...}}')``.
    """
    stamp, sep, payload = line.partition(b" ")
    if not sep or not payload:
        raise ValueError("no '<timestamp> <payload>'")
    return parse_timestamp_ns(stamp.decode("ascii", errors="replace")), payload


def import_hftbacktest(
    lines: Iterable[tuple[int, bytes]], batch: ImportBatch, *, symbol_hint: str | None = None
) -> None:
    """Parse every line into ``batch``; snapshot lines go to the file's single symbol.

    Raises :class:`ImportFormatError` (before anything is written) if the file has snapshot lines
    but not exactly one stream symbol and no ``symbol_hint``.
    """
    snapshots: list[tuple[int, bytes]] = []
    stream_symbols: set[str] = set()
    for number, line in lines:
        batch.lines_read += 1
        if not line.strip():
            batch.skip("blank")
            continue
        try:
            recv_ns, payload = parse_hft_line(line)
            message = json.loads(payload)
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            batch.skip("malformed", number, f"{exc}: {line[:80]!r}")
            continue
        if binance.is_depth_snapshot(message):
            snapshots.append((recv_ns, payload))
            continue
        target = binance.ws_target(message)
        if target is None:
            batch.skip("unknown_message", number, f"not a recorded stream message: {line[:80]!r}")
            continue
        instrument, channel = target
        symbol = binance.symbol_of(instrument)
        if symbol is None:
            batch.unknown_instrument(instrument)
            continue
        stream_symbols.add(symbol)
        batch.add(symbol, binance.EXCHANGE, recv_ns, channel, payload)
    if snapshots:
        symbol = _snapshot_symbol(stream_symbols, symbol_hint, batch)
        for recv_ns, payload in snapshots:
            batch.add(symbol, binance.EXCHANGE, recv_ns, "rest:depth", payload)


def _snapshot_symbol(stream_symbols: set[str], symbol_hint: str | None, batch: ImportBatch) -> str:
    if symbol_hint is not None:
        return symbol_hint
    if len(stream_symbols) == 1:
        return next(iter(stream_symbols))
    raise ImportFormatError(
        f"{batch.path.name}: depth snapshot lines carry no symbol and the file's streams name "
        f"{sorted(stream_symbols) or 'no symbol'}; pass a symbol hint"
    )
