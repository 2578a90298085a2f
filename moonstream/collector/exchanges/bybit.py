"""Bybit v5 linear (USDT perpetuals): the exchange module (topics, channel tags, live collector spec).

Public linear messages name their subscription in ``topic``, which comes first::

    {"topic":"publicTrade.BTCUSDT","type":"snapshot","ts":1672304486868,"data":[...]}

The raw-file channel tag is ``ws:`` plus the topic's first part (``ws:orderbook``, ``ws:publicTrade``,
``ws:allLiquidation``, ``ws:tickers``; what :mod:`moonstream.jobs.normalize.bybit` reads). Replies
to our own requests (``{"success":true,"ret_msg":"pong","conn_id":"..","op":"ping"}``, subscription
acknowledgements) carry ``op`` and are ``ws:op``, kept in the connection's first symbol's file.
REST responses are recorded under ``rest:`` tags (:func:`rest_channel`; the live collector polls
the long/short account ratio, ``rest:ratio:account-ratio``).
The module's :data:`SPEC` (end of file) is what the live collector uses.
"""

from __future__ import annotations

import json
from typing import Any

from moonstream.collector.exchanges import CONNECTION, ExchangeSpec, RestPoll, WsPlan
from moonstream.symbols import Exchange, exchange_instrument, symbol_from_instrument

EXCHANGE = Exchange.BYBIT

DEFAULT_WS_URL = "wss://stream.bybit.com"
DEFAULT_REST_URL = "https://api.bybit.com"
WS_PATH = "/v5/public/linear"
ORDERBOOK_DEPTH = 50
LIVE_TOPICS = (f"orderbook.{ORDERBOOK_DEPTH}", "publicTrade", "allLiquidation", "tickers")
"""Per-symbol topics the collector subscribes to (``{topic}.{INSTRUMENT}``)."""
SYMBOLS_PER_CONNECTION = 10
TOPIC_CHANNELS = {
    "orderbook": "ws:orderbook",
    "publicTrade": "ws:publicTrade",
    "allLiquidation": "ws:allLiquidation",
    "tickers": "ws:tickers",
}
PING = '{"op":"ping"}'
PING_INTERVAL_S = 20.0
"""Bybit: "we recommend that you send the ping heartbeat packet every 20 seconds"."""
OP_CHANNEL = "ws:op"
RATIO_PATH = "/v5/market/account-ratio"
RATIO_CHANNEL = "rest:ratio:account-ratio"
RATIO_PERIOD = "5min"
"""Bybit's finest ``period`` (``5min``, ``15min``, ``30min``, ``1h``, ``4h``, ``1d``)."""
RATIO_INTERVAL_S = 60.0
REST_CHANNELS = {RATIO_PATH: RATIO_CHANNEL}
RATE_LIMIT_STATUSES = frozenset({403, 429})
"""Bybit v5 "Rate Limit": an IP over the limit gets HTTP 403 ("access too frequent"; banned for a
while), so 403 pauses every poll like a 429 does."""

_TOPIC_PREFIX = b'{"topic":"'
_ROUTE_CACHE: dict[bytes, tuple[str, str] | None] = {}
_ROUTE_CACHE_MAX = 4096


def symbol_of(instrument: str) -> str | None:
    """Our symbol for a Bybit linear instrument (``BTCUSDT`` -> ``BTC``), None for others."""
    return symbol_from_instrument(EXCHANGE, instrument)


def topic_target(topic: str) -> tuple[str, str] | None:
    """``(instrument, channel)`` of a topic, None if not one we record.

    ``orderbook.50.BTCUSDT`` -> ``("BTCUSDT", "ws:orderbook")``; ``tickers.BTCUSDT`` ->
    ``("BTCUSDT", "ws:tickers")``; ``kline.1.BTCUSDT`` -> None.
    """
    kind, _, rest = topic.partition(".")
    channel = TOPIC_CHANNELS.get(kind)
    if channel is None or not rest:
        return None
    instrument = rest.rpartition(".")[2]
    return (instrument, channel) if instrument else None


def subscribe_message(symbols: tuple[str, ...]) -> str:
    """``{"op":"subscribe","args":["orderbook.50.BTCUSDT","publicTrade.BTCUSDT",...]}`` (compact JSON)."""
    args = [f"{topic}.{exchange_instrument(EXCHANGE, s)}" for s in symbols for topic in LIVE_TOPICS]
    return json.dumps({"op": "subscribe", "args": args}, separators=(",", ":"))


def ws_connections(ws_base: str, symbols: tuple[str, ...]) -> list[WsPlan]:
    """One connection per up to 10 symbols, one subscribe message per symbol (4 topics each)."""
    url = f"{ws_base.rstrip('/')}{WS_PATH}"
    groups = [symbols[i : i + SYMBOLS_PER_CONNECTION] for i in range(0, len(symbols), SYMBOLS_PER_CONNECTION)]
    return [WsPlan(url, group, tuple(subscribe_message((s,)) for s in group)) for group in groups]


def _target(message: Any) -> tuple[str, str] | None:
    if not isinstance(message, dict):
        return None
    topic = message.get("topic")
    if isinstance(topic, str):
        found = topic_target(topic)
        if found is None:
            return None
        symbol = symbol_of(found[0])
        return None if symbol is None else (symbol, found[1])
    if "op" in message:
        return (CONNECTION, OP_CHANNEL)
    return None


def route_message(payload: bytes) -> tuple[str, str] | None:
    """``(symbol, channel)`` of a public linear message; ``(CONNECTION, "ws:op")`` for op replies.

    Reads the topic from the ``{"topic":"publicTrade.BTCUSDT",`` prefix (cached per topic) and
    parses the JSON only when the prefix is absent. ``b'{"topic":"tickers.BTCUSDT","type":
    "snapshot","data":{...},"cs":24987956059,"ts":1673272861686}'`` -> ``("BTC", "ws:tickers")``.
    """
    if payload.startswith(_TOPIC_PREFIX):
        end = payload.find(b'"', 10)
        if end > 10:
            name = payload[10:end]
            if name in _ROUTE_CACHE:
                return _ROUTE_CACHE[name]
            found = topic_target(name.decode("ascii", "replace"))
            symbol = None if found is None else symbol_of(found[0])
            result = None if found is None or symbol is None else (symbol, found[1])
            if len(_ROUTE_CACHE) < _ROUTE_CACHE_MAX:
                _ROUTE_CACHE[name] = result
            return result
    try:
        message = json.loads(payload)
    except ValueError:  # JSONDecodeError, UnicodeDecodeError
        return None
    return _target(message)


def rest_channel(path: str) -> str | None:
    """Channel tag of a REST path (``/v5/market/account-ratio`` -> ``rest:ratio:account-ratio``),
    None if unrecorded."""
    return REST_CHANNELS.get(path.rstrip("/"))


def rest_polls(symbol: str) -> tuple[RestPoll, ...]:
    """The long/short account ratio every 60 s: ``GET /v5/market/account-ratio?category=linear&
    symbol=BTCUSDT&period=5min&limit=1`` (the latest 5-minute row; a row repeats until the next
    period, the normalizer's dedup key drops the copies).

    Not polled: open interest (``/v5/market/open-interest`` is a 5-minute history; ``tickers``
    pushes ``openInterest`` as it changes) and the order book (``/v5/market/orderbook``: the
    ``orderbook.50`` topic starts every subscription with a snapshot, Bybit re-sends one itself
    after a problem on its side, and without a sequence check there is no gap to repair).
    """
    params = (
        ("category", "linear"),
        ("symbol", exchange_instrument(EXCHANGE, symbol)),
        ("period", RATIO_PERIOD),
        ("limit", "1"),
    )
    return (RestPoll(RATIO_CHANNEL, RATIO_PATH, params, RATIO_INTERVAL_S),)


def rate_limited_body(body: bytes) -> bool:
    """Whether an HTTP 200 body is Bybit's rate-limit error (documented sample)::

    {"retCode":10006,"retMsg":"Too many visits!","result":{},"retExtInfo":{},"time":1672738134824}
    """
    if b"10006" not in body:  # the cheap test first: almost every body is data
        return False
    try:
        doc = json.loads(body)
    except ValueError:
        return False
    return isinstance(doc, dict) and doc.get("retCode") == 10006


SPEC: ExchangeSpec = ExchangeSpec(
    name=EXCHANGE.value,
    default_ws_url=DEFAULT_WS_URL,
    default_rest_url=DEFAULT_REST_URL,
    connections=ws_connections,
    route=route_message,
    rest_polls=rest_polls,
    rate_limited_body=rate_limited_body,
    # No gap check: orderbook ``u`` is "a sequence" but its step is not documented; Bybit sends a
    # fresh snapshot itself when it has a problem ("u"=1 after a service restart), and a lost
    # connection starts over with a snapshot.
    new_sequencer=None,
    ping_interval_s=None,  # Bybit documents an application-level heartbeat instead
    ping_timeout_s=None,
    app_ping=PING,
    app_ping_interval_s=PING_INTERVAL_S,
    app_ping_timeout_s=10.0,
    max_connection_age_s=float("inf"),  # no documented connection age limit
    rate_limit_statuses=RATE_LIMIT_STATUSES,
    # Bybit's docs: after "403, access too frequent" stop all HTTP sessions and wait at least
    # 10 minutes (a ban is usually 30 minutes; hammering it makes it permanent).
    rate_limit_min_pause_s={403: 600.0},
)
