"""Import cryptofeed raw captures (``BINANCE_FUTURES.ws.1.0``, ``OKX.ws.1.0``, ``*.http.*``).

Line shapes (timestamps are seconds with a fraction):

* ``<url> <-> <ts>`` - a connection opened; becomes ``conn:open`` for every symbol the URL names
  (Binance combined-stream URLs), otherwise counted as ``conn_unattributed``;
* ``<url> <- <ts>: <json>`` - an outgoing message (subscribe); skipped as ``outgoing``;
* ``<url> -> <ts>: <json>`` - a REST response; Binance ``/fapi/v1/depth?symbol=..`` becomes
  ``rest:depth`` (exchangeInfo and other endpoints are skipped as ``rest_unsupported``);
* ``<ts>: <json>`` - a received WS message, attributed to the exchange of the last connection
  (or, without one, by its shape: ``stream`` -> Binance, ``arg`` -> OKX);
* ``configuration: <json>`` - cryptofeed's own settings; skipped as ``config``.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qs, urlsplit

from moonstream.collector.exchanges import binance, okx
from moonstream.collector.importers.common import ImportBatch, parse_timestamp_ns
from moonstream.symbols import Exchange

log = logging.getLogger(__name__)

FORMAT = "cryptofeed"

_OPEN_RE = re.compile(rb"^(?P<url>\S+) <-> (?P<ts>[0-9.]+)$")
_OUTGOING_RE = re.compile(rb"^(?P<url>\S+) <- (?P<ts>[0-9.]+): ")
_REST_RE = re.compile(rb"^(?P<url>\S+) -> (?P<ts>[0-9.]+): ")
_INCOMING_RE = re.compile(rb"^(?P<ts>[0-9.]+): ")
_CONFIG_PREFIX = b"configuration: "


def exchange_of_url(url: str) -> Exchange | None:
    """``wss://fstream.binance.com/stream?..`` -> BINANCE, ``wss://ws.okx.com:8443/..`` -> OKX, else None."""
    host = urlsplit(url).hostname or ""
    if binance.is_usdm_host(host):
        return Exchange.BINANCE
    if okx.is_okx_host(host):
        return Exchange.OKX
    return None


def binance_url_symbols(url: str) -> list[str]:
    """Our symbols named by a Binance stream URL (``?streams=btcusdt@trade/ethusdt@depth`` or ``/ws/<s>``)."""
    parts = urlsplit(url)
    streams = [s for value in parse_qs(parts.query).get("streams", []) for s in value.split("/")]
    if not streams and parts.path.startswith("/ws/"):
        streams = parts.path[len("/ws/") :].split("/")
    symbols = set()
    for stream in streams:
        info = binance.parse_stream(stream)
        symbol = binance.symbol_of(info.instrument) if info and info.instrument else None
        if symbol is not None:
            symbols.add(symbol)
    return sorted(symbols)


def import_cryptofeed(lines: Iterable[tuple[int, bytes]], batch: ImportBatch) -> None:
    """Parse every line of a cryptofeed capture into ``batch`` (see the module docstring)."""
    connection: Exchange | None = None
    for number, line in lines:
        batch.lines_read += 1
        if not line.strip():
            batch.skip("blank")
        elif match := _OPEN_RE.match(line):
            url = match["url"].decode("utf-8", errors="replace")
            connection = exchange_of_url(url)
            _connection_opened(batch, number, url, connection, match["ts"])
        elif _OUTGOING_RE.match(line):
            batch.skip("outgoing")
        elif match := _REST_RE.match(line):
            _rest_line(
                batch, number, match["url"].decode("utf-8", "replace"), match["ts"], line[match.end() :]
            )
        elif match := _INCOMING_RE.match(line):
            _ws_line(batch, number, connection, match["ts"], line[match.end() :])
        elif line.startswith(_CONFIG_PREFIX):
            batch.skip("config")
        else:
            batch.skip("malformed", number, f"unrecognized line: {line[:80]!r}")


def _timestamp(batch: ImportBatch, number: int, stamp: bytes) -> int | None:
    try:
        return parse_timestamp_ns(stamp.decode("ascii"))
    except ValueError as exc:
        batch.skip("malformed", number, str(exc))
        return None


def _json(batch: ImportBatch, number: int, payload: bytes) -> Any:
    try:
        return json.loads(payload)
    except ValueError as exc:
        batch.skip("malformed", number, f"bad JSON ({exc}): {payload[:80]!r}")
        return None


def _connection_opened(
    batch: ImportBatch, number: int, url: str, exchange: Exchange | None, stamp: bytes
) -> None:
    symbols = binance_url_symbols(url) if exchange is Exchange.BINANCE else []
    if not symbols:
        batch.skip("conn_unattributed")
        return
    recv_ns = _timestamp(batch, number, stamp)
    if recv_ns is None or exchange is None:
        return
    payload = json.dumps({"url": url, "source": "cryptofeed"}, separators=(",", ":")).encode()
    for symbol in symbols:
        batch.add(symbol, exchange, recv_ns, "conn:open", payload)


def _rest_line(batch: ImportBatch, number: int, url: str, stamp: bytes, payload: bytes) -> None:
    exchange = exchange_of_url(url)
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    if exchange is Exchange.BINANCE:
        channel, names = binance.rest_channel(parts.path), query.get("symbol", [])
    elif exchange is Exchange.OKX:
        channel, names = okx.rest_channel(parts.path), query.get("instId", [])
    else:
        batch.skip("unsupported_exchange", number, f"REST response from {parts.hostname}")
        return
    if channel is None or len(names) != 1:
        batch.skip("rest_unsupported")
        return
    recv_ns = _timestamp(batch, number, stamp)
    if recv_ns is None or _json(batch, number, payload) is None:
        return
    symbol = binance.symbol_of(names[0]) if exchange is Exchange.BINANCE else okx.symbol_of(names[0])
    if symbol is None:
        batch.unknown_instrument(names[0])
        return
    batch.add(symbol, exchange, recv_ns, channel, payload)


def _ws_line(
    batch: ImportBatch, number: int, connection: Exchange | None, stamp: bytes, payload: bytes
) -> None:
    recv_ns = _timestamp(batch, number, stamp)
    message = None if recv_ns is None else _json(batch, number, payload)
    if recv_ns is None or message is None:
        return
    exchange = connection
    if exchange is None and isinstance(message, dict):
        exchange = Exchange.BINANCE if "stream" in message else Exchange.OKX if "arg" in message else None
    if exchange is Exchange.BINANCE:
        target = binance.ws_target(message)
        if target is None:
            reason = "control" if isinstance(message, dict) and "id" in message else "unknown_message"
            batch.skip(reason, number, f"not a recorded stream message: {payload[:80]!r}")
            return
        instrument, channel = target
        symbol = binance.symbol_of(instrument)
    elif exchange is Exchange.OKX:
        channel_or_none, instrument_or_none = okx.ws_channel(message), okx.ws_instrument(message)
        if channel_or_none is None or instrument_or_none is None:
            batch.skip("unknown_message", number, f"unattributable OKX message: {payload[:80]!r}")
            return
        channel, instrument = channel_or_none, instrument_or_none
        symbol = okx.symbol_of(instrument)
    else:
        batch.skip("unsupported_exchange", number, f"message of an unknown exchange: {payload[:80]!r}")
        return
    if symbol is None:
        batch.unknown_instrument(instrument)
        return
    batch.add(symbol, exchange, recv_ns, channel, payload)
