"""Binance USDT-M futures: the exchange module (stream names, channel tags, REST endpoints).

Everything here is pure string and dict work, shared by the importers and the live collector
(whose :data:`SPEC` is at the end: endpoints, subscription, routing, REST polls, gap detection).
Combined-stream messages look like ``{"stream":"btcusdt@depth@100ms","data":{...}}``; the stream
name gives the instrument and the raw-file channel tag (``ws:depth``), see :func:`parse_stream`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from moonstream.collector.exchanges import ExchangeSpec, RestPoll, WsPlan
from moonstream.symbols import Exchange, exchange_instrument, symbol_from_instrument

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


# ---------------------------------------------------------------------------------------------
# Live collector: endpoints, subscription, routing, REST polls, sequence checks (ExchangeSpec)

DEFAULT_WS_URL = "wss://fstream.binance.com"
DEFAULT_REST_URL = "https://fapi.binance.com"
LIVE_STREAMS = ("depth@100ms", "aggTrade", "forceOrder", "markPrice@1s", "bookTicker")
"""Per-symbol streams the collector subscribes to, on one combined stream."""
DEPTH_SNAPSHOT_LIMIT = 1000
DEPTH_SNAPSHOT_INTERVAL_S = 3600.0
OPEN_INTEREST_INTERVAL_S = 10.0
RATIO_INTERVAL_S = 60.0
RATIO_ENDPOINTS = ("topLongShortAccountRatio", "topLongShortPositionRatio", "globalLongShortAccountRatio")
MAX_STREAMS_PER_CONNECTION = 200

_STREAM_PREFIX = b'{"stream":"'
_ROUTE_CACHE: dict[bytes, tuple[str, str] | None] = {}
_ROUTE_CACHE_MAX = 4096
_U_RE = re.compile(rb'"u":(\d+)')
_PU_RE = re.compile(rb'"pu":(\d+)')


def combined_stream_url(ws_base: str, symbols: tuple[str, ...]) -> str:
    """``{base}/stream?streams=btcusdt@depth@100ms/btcusdt@aggTrade/...`` for our symbols."""
    names = [f"{exchange_instrument(EXCHANGE, s).lower()}@{kind}" for s in symbols for kind in LIVE_STREAMS]
    return f"{ws_base.rstrip('/')}/stream?streams={'/'.join(names)}"


def ws_connections(ws_base: str, symbols: tuple[str, ...]) -> list[WsPlan]:
    """One combined-stream connection per up to 40 symbols (200 streams, Binance's limit per connection)."""
    per_conn = MAX_STREAMS_PER_CONNECTION // len(LIVE_STREAMS)
    groups = [symbols[i : i + per_conn] for i in range(0, len(symbols), per_conn)]
    return [WsPlan(combined_stream_url(ws_base, group), group) for group in groups]


def route_message(payload: bytes) -> tuple[str, str] | None:
    """``(symbol, channel)`` of a combined-stream message, None if unknown or not one of ours.

    Reads the stream name from the ``{"stream":"btcusdt@depth@100ms",`` prefix (cached per stream
    name) and parses the JSON only when the prefix is absent or names a market-wide stream.
    ``b'{"stream":"btcusdt@aggTrade","data":{...}}'`` -> ``("BTC", "ws:aggTrade")``.
    """
    if payload.startswith(_STREAM_PREFIX):
        end = payload.find(b'"', 11)
        if end > 11:
            name = payload[11:end]
            if name in _ROUTE_CACHE:
                return _ROUTE_CACHE[name]
            info = parse_stream(name.decode("ascii", "replace"))
            if info is None or info.instrument is not None:
                symbol = None if info is None or info.instrument is None else symbol_of(info.instrument)
                result = None if info is None or symbol is None else (symbol, info.channel)
                if len(_ROUTE_CACHE) < _ROUTE_CACHE_MAX:
                    _ROUTE_CACHE[name] = result
                return result
    try:
        message = json.loads(payload)
    except ValueError:  # JSONDecodeError, UnicodeDecodeError
        return None
    target = ws_target(message)
    if target is None:
        return None
    symbol = symbol_of(target[0])
    return None if symbol is None else (symbol, target[1])


def rest_polls(symbol: str) -> tuple[RestPoll, ...]:
    """Depth snapshot (1000 levels; at connect, after a gap, hourly), open interest every 10 s,
    and the three long/short ratios (``period=5m&limit=1``) every 60 s."""
    inst = exchange_instrument(EXCHANGE, symbol)
    polls = [
        RestPoll(
            "rest:depth",
            "/fapi/v1/depth",
            (("symbol", inst), ("limit", str(DEPTH_SNAPSHOT_LIMIT))),
            DEPTH_SNAPSHOT_INTERVAL_S,
            snapshot=True,
        ),
        RestPoll("rest:oi", "/fapi/v1/openInterest", (("symbol", inst),), OPEN_INTEREST_INTERVAL_S),
    ]
    for endpoint in RATIO_ENDPOINTS:
        path = f"/futures/data/{endpoint}"
        params = (("symbol", inst), ("period", "5m"), ("limit", "1"))
        polls.append(RestPoll(f"rest:ratio:{endpoint}", path, params, RATIO_INTERVAL_S))
    return tuple(polls)


class DepthSequencer:
    """Binance diff-depth chaining: each ``ws:depth`` message's ``pu`` must equal the previous ``u``."""

    channels = frozenset({"ws:depth"})

    def __init__(self) -> None:
        self._last_u: dict[str, int] = {}

    def check(self, symbol: str, channel: str, payload: bytes) -> dict[str, Any] | None:
        """Gap details ``{"reason": "sequence", "expected_pu": .., "pu": .., "u": ..}`` or None."""
        if channel != "ws:depth":
            return None
        u_match = _U_RE.search(payload)
        pu_match = _PU_RE.search(payload)
        if u_match is None or pu_match is None:
            return None
        u, pu = int(u_match[1]), int(pu_match[1])
        previous = self._last_u.get(symbol)
        self._last_u[symbol] = u
        if previous is None or pu == previous:
            return None
        return {"reason": "sequence", "channel": channel, "expected_pu": previous, "pu": pu, "u": u}


SPEC: ExchangeSpec = ExchangeSpec(
    name=EXCHANGE.value,
    default_ws_url=DEFAULT_WS_URL,
    default_rest_url=DEFAULT_REST_URL,
    connections=ws_connections,
    route=route_message,
    rest_polls=rest_polls,
    new_sequencer=DepthSequencer,
    # The server pings every 3 minutes and drops a client that misses 10 minutes of pongs
    # (websockets answers pings itself); our own pings detect a dead path sooner.
    ping_interval_s=20.0,
    ping_timeout_s=20.0,
    max_connection_age_s=23.5 * 3600,  # connections are cut at 24 h
)
