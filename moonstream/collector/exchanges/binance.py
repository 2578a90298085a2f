"""Binance USDT-M futures: the exchange module (stream names, channel tags, REST endpoints).

Everything here is pure string and dict work, shared by the importers and (later) the live
collector, which will add its endpoints and subscriptions to this module. Combined-stream messages
look like ``{"stream":"btcusdt@depth@100ms","data":{...}}``; the stream name gives the instrument
and the raw-file channel tag (``ws:depth``), see :func:`parse_stream`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from moonstream.symbols import Exchange, symbol_from_instrument

EXCHANGE = Exchange.BINANCE
REST_HOSTS = frozenset({"fapi.binance.com"})
WS_HOSTS = frozenset({"fstream.binance.com"})

_DEPTH_RE = re.compile(r"^depth(?P<levels>5|10|20)?(?:@\d+ms)?$")
_SIMPLE_STREAMS = {
    "trade": "ws:trade",
    "aggTrade": "ws:aggTrade",
    "bookTicker": "ws:bookTicker",
    "forceOrder": "ws:forceOrder",
    "ticker": "ws:ticker",
    "miniTicker": "ws:miniTicker",
}
_REST_CHANNELS = {
    "/fapi/v1/depth": "rest:depth",
    "/fapi/v1/openInterest": "rest:oi",
    "/futures/data/openInterestHist": "rest:oiHist",
    "/fapi/v1/premiumIndex": "rest:premiumIndex",
    "/futures/data/topLongShortAccountRatio": "rest:ratio:topLongShortAccountRatio",
    "/futures/data/topLongShortPositionRatio": "rest:ratio:topLongShortPositionRatio",
    "/futures/data/globalLongShortAccountRatio": "rest:ratio:globalLongShortAccountRatio",
    "/futures/data/takerlongshortRatio": "rest:ratio:takerlongshortRatio",
}


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """What a combined-stream name says: the instrument (None for market-wide streams) and channel."""

    instrument: str | None
    channel: str


def stream_channel(kind: str) -> str | None:
    """Channel tag for the part of a stream name after ``<symbol>@``; None if not one we record.

    ``depth@0ms``/``depth``/``depth@100ms`` -> ``ws:depth`` (diffs); ``depth20@100ms`` -> ``ws:depth20``
    (partial-book snapshots, a different schema); ``markPrice@1s`` -> ``ws:markPrice``;
    ``kline_1m`` -> ``ws:kline``.
    """
    depth = _DEPTH_RE.match(kind)
    if depth:
        return f"ws:depth{depth['levels'] or ''}"
    if kind in ("markPrice", "markPrice@1s"):
        return "ws:markPrice"
    if kind.startswith("kline_"):
        return "ws:kline"
    return _SIMPLE_STREAMS.get(kind)


def parse_stream(stream: str) -> StreamInfo | None:
    """``btcusdt@depth@0ms`` -> StreamInfo("BTCUSDT", "ws:depth"); ``!forceOrder@arr`` -> (None, ...).

    Returns None for streams we do not record (other market-wide arrays, unknown kinds).
    """
    if stream == "!forceOrder@arr":
        return StreamInfo(None, "ws:forceOrder")
    name, sep, kind = stream.partition("@")
    if not sep or not name or name.startswith("!"):
        return None
    channel = stream_channel(kind)
    return None if channel is None else StreamInfo(name.upper(), channel)


def event_instrument(data: Any) -> str | None:
    """The instrument an event names: ``s``, or ``o.s`` in a forceOrder event."""
    if not isinstance(data, dict):
        return None
    order = data.get("o")
    name = order.get("s") if isinstance(order, dict) else data.get("s")
    return name if isinstance(name, str) and name else None


def ws_target(message: Any) -> tuple[str, str] | None:
    """``(instrument, channel)`` of a combined-stream message, None if unknown or unattributable.

    ``{"stream":"btcusdt@trade","data":{"e":"trade","s":"BTCUSDT",...}}`` -> ``("BTCUSDT", "ws:trade")``.
    """
    if not isinstance(message, dict) or not isinstance(message.get("stream"), str):
        return None
    info = parse_stream(message["stream"])
    if info is None:
        return None
    instrument = info.instrument or event_instrument(message.get("data"))
    return None if instrument is None else (instrument, info.channel)


def is_depth_snapshot(message: Any) -> bool:
    """A REST ``/fapi/v1/depth`` response: ``{"lastUpdateId":..,"E":..,"T":..,"bids":[..],"asks":[..]}``."""
    return isinstance(message, dict) and {"lastUpdateId", "bids", "asks"} <= message.keys()


def rest_channel(path: str) -> str | None:
    """Channel tag of a REST endpoint path (``/fapi/v1/depth`` -> ``rest:depth``), None if unrecorded."""
    return _REST_CHANNELS.get(path.rstrip("/"))


def symbol_of(instrument: str) -> str | None:
    """Our symbol for a Binance instrument (``BTCUSDT`` -> ``BTC``); None for others (``BTCUSDT_250627``)."""
    return symbol_from_instrument(EXCHANGE, instrument)


def is_usdm_host(host: str) -> bool:
    """True for the USDT-M futures hosts (``fstream.binance.com``, ``fapi.binance.com``)."""
    return host.lower() in REST_HOSTS | WS_HOSTS
