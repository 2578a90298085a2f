"""OKX v5 USDT swaps: the exchange module (message shapes, channel tags, REST endpoints).

Pure dict and string work shared by the importers and the live collector (whose :data:`SPEC` is at
the end). Public messages carry their subscription in ``arg``: ``{"arg":{"channel":"books",
"instId":"BTC-USDT-SWAP"},"action":"update","data":[...]}``; the raw-file channel tag is ``ws:``
plus OKX's channel name (``ws:books``, ``ws:trades``, ``ws:liquidation-orders``), subscription
acknowledgements, notices and errors (messages with an ``event`` field) are ``ws:event``, and the
``pong`` answering our text ``ping`` is ``ws:pong``.
"""

from __future__ import annotations

import json
import re
from typing import Any

from moonstream.collector.exchanges import CONNECTION, VENUE_WIDE, ExchangeSpec, RestPoll, WsPlan
from moonstream.symbols import Exchange, exchange_instrument, symbol_from_instrument

EXCHANGE = Exchange.OKX

_CHANNEL_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
RATIO_PATH = "/api/v5/rubik/stat/contracts/long-short-account-ratio-contract"
RATIO_CHANNEL = "rest:ratio:longShortAccountRatio"
RATIO_PERIOD = "5m"
"""OKX's finest ``period`` for the contract long/short ratio (``5m/15m/30m/1H/...``)."""
RATIO_INTERVAL_S = 60.0
_REST_CHANNELS = {
    "/api/v5/market/books": "rest:depth",
    "/api/v5/market/books-full": "rest:depth",
    "/api/v5/public/open-interest": "rest:oi",
    RATIO_PATH: RATIO_CHANNEL,
}


def ws_channel(message: Any) -> str | None:
    """Channel tag of a public WS message: ``ws:books``, ``ws:trades``, or ``ws:event``; None if unknown."""
    if not isinstance(message, dict):
        return None
    if "event" in message:
        return "ws:event"
    arg = message.get("arg")
    name = arg.get("channel") if isinstance(arg, dict) else None
    if not isinstance(name, str) or not _CHANNEL_NAME_RE.match(name):
        return None
    return f"ws:{name}"


def ws_instrument(message: Any) -> str | None:
    """The instrument a message is about: ``arg.instId``, else the one ``instId`` all data rows share.

    ``{"arg":{"channel":"trades","instId":"BTC-USDT-SWAP"},"data":[...]}`` -> ``"BTC-USDT-SWAP"``.
    """
    if not isinstance(message, dict):
        return None
    arg = message.get("arg")
    if isinstance(arg, dict) and isinstance(arg.get("instId"), str):
        return str(arg["instId"])
    data = message.get("data")
    if not isinstance(data, list) or not data:
        return None
    names = {row.get("instId") for row in data if isinstance(row, dict)}
    if len(names) == 1:
        (name,) = names
        return name if isinstance(name, str) else None
    return None


def rest_channel(path: str) -> str | None:
    """Channel tag of a REST path (``/api/v5/market/books`` -> ``rest:depth``), None if unrecorded."""
    return _REST_CHANNELS.get(path.rstrip("/"))


def symbol_of(instrument: str) -> str | None:
    """Our symbol for an OKX instId (``BTC-USDT-SWAP`` -> ``BTC``), None unless it is a USDT swap."""
    return symbol_from_instrument(EXCHANGE, instrument)


def is_okx_host(host: str) -> bool:
    """True for OKX hosts (``ws.okx.com``, ``wsaws.okx.com``, ``www.okx.com``)."""
    host = host.lower()
    return host == "okx.com" or host.endswith(".okx.com")


# ---------------------------------------------------------------------------------------------
# Live collector: endpoints, subscription, routing, book sequence checks (ExchangeSpec)

DEFAULT_WS_URL = "wss://ws.okx.com:8443"
DEFAULT_REST_URL = "https://www.okx.com"
WS_PATH = "/ws/v5/public"
LIVE_CHANNELS = ("books", "trades", "mark-price", "open-interest")
"""Per-instrument channels the collector subscribes to; plus ``liquidation-orders`` once per
connection (``instType`` SWAP: it carries every swap, see :func:`wide_symbols`)."""
LIQUIDATION_ARG = {"channel": "liquidation-orders", "instType": "SWAP"}
SYMBOLS_PER_CONNECTION = 20
PING = "ping"
PING_INTERVAL_S = 25.0
"""OKX cuts a connection after 30 s without data; we send ``ping`` every 25 s and expect ``pong``."""
PONG = b"pong"

_ARG_PREFIX = b'{"arg":{'
_ROUTE_CACHE: dict[bytes, tuple[str, str] | None] = {}
_ROUTE_CACHE_MAX = 4096
_SEQ_RE = re.compile(rb'"seqId":(-?\d+)')
_PREV_SEQ_RE = re.compile(rb'"prevSeqId":(-?\d+)')
_SNAPSHOT_MARK = b'"action":"snapshot"'


def subscribe_args(symbols: tuple[str, ...]) -> list[dict[str, str]]:
    """Subscription args: per symbol ``books``, ``trades``, ``mark-price``, ``open-interest``, with
    ``liquidation-orders`` (SWAP) once, after the first symbol's ``trades``."""
    args: list[dict[str, str]] = []
    for symbol in symbols:
        inst = exchange_instrument(EXCHANGE, symbol)
        args.extend({"channel": channel, "instId": inst} for channel in LIVE_CHANNELS)
    if args:
        args.insert(2, dict(LIQUIDATION_ARG))
    return args


def op_message(op: str, args: list[dict[str, str]]) -> str:
    """``{"op":"subscribe","args":[{"channel":"books","instId":"BTC-USDT-SWAP"},...]}`` (compact)."""
    return json.dumps({"op": op, "args": args}, separators=(",", ":"))


def ws_connections(ws_base: str, symbols: tuple[str, ...]) -> list[WsPlan]:
    """One connection per up to 20 symbols, all subscribed with one message."""
    url = f"{ws_base.rstrip('/')}{WS_PATH}"
    groups = [symbols[i : i + SYMBOLS_PER_CONNECTION] for i in range(0, len(symbols), SYMBOLS_PER_CONNECTION)]
    return [WsPlan(url, group, (op_message("subscribe", subscribe_args(group)),)) for group in groups]


def arg_target(arg: Any) -> tuple[str, str] | None:
    """``(symbol, channel)`` of a subscription ``arg``: ``{"channel":"trades","instId":"BTC-USDT-SWAP"}``
    -> ``("BTC", "ws:trades")``; an arg without ``instId`` (``liquidation-orders`` by ``instType``)
    -> ``(VENUE_WIDE, "ws:liquidation-orders")``; None if unknown or not a USDT swap."""
    channel = ws_channel({"arg": arg})
    if channel is None or not isinstance(arg, dict):
        return None
    inst = arg.get("instId")
    if inst is None:
        return (VENUE_WIDE, channel)
    symbol = symbol_of(inst) if isinstance(inst, str) else None
    return None if symbol is None else (symbol, channel)


def route_message(payload: bytes) -> tuple[str, str] | None:
    """``(symbol, channel)`` of a public message; :data:`CONNECTION` for ``pong`` and events
    without an instrument, :data:`VENUE_WIDE` for ``liquidation-orders``; None if unknown.

    Reads the ``{"arg":{...}`` prefix (cached per arg) and parses the JSON only otherwise.
    ``b'{"arg":{"channel":"books","instId":"BTC-USDT-SWAP"},"action":"update","data":[..]}'``
    -> ``("BTC", "ws:books")``.
    """
    if payload.startswith(_ARG_PREFIX):
        end = payload.find(b"}", 8)
        if end > 8:
            arg = payload[7 : end + 1]
            if arg in _ROUTE_CACHE:
                return _ROUTE_CACHE[arg]
            try:
                result = arg_target(json.loads(arg))
            except ValueError:
                result = None
            if len(_ROUTE_CACHE) < _ROUTE_CACHE_MAX:
                _ROUTE_CACHE[arg] = result
            return result
    if payload == PONG:
        return (CONNECTION, "ws:pong")
    try:
        message = json.loads(payload)
    except ValueError:  # JSONDecodeError, UnicodeDecodeError
        return None
    if isinstance(message, dict) and "event" in message:
        inst = ws_instrument(message)
        symbol = symbol_of(inst) if inst is not None else None
        return (symbol or CONNECTION, "ws:event")
    if isinstance(message, dict) and "arg" in message:
        return arg_target(message["arg"])
    return None


def wide_symbols(payload: bytes) -> tuple[str, ...]:
    """Our symbols a venue-wide message concerns: those of its rows' ``instId`` (first-seen order).

    ``{"arg":{"channel":"liquidation-orders","instType":"SWAP"},"data":[{"details":[..],
    "instId":"BTC-USDT-SWAP",..},{..,"instId":"ETH-USDT-SWAP",..}]}`` -> ``("BTC", "ETH")``.
    """
    try:
        message = json.loads(payload)
    except ValueError:
        return ()
    data = message.get("data") if isinstance(message, dict) else None
    out: dict[str, None] = {}
    for row in data if isinstance(data, list) else ():
        inst = row.get("instId") if isinstance(row, dict) else None
        symbol = symbol_of(inst) if isinstance(inst, str) else None
        if symbol is not None:
            out[symbol] = None
    return tuple(out)


def rest_polls(symbol: str) -> tuple[RestPoll, ...]:
    """The contract's long/short account ratio every 60 s: ``GET /api/v5/rubik/stat/contracts/
    long-short-account-ratio-contract?instId=BTC-USDT-SWAP&period=5m&limit=1`` (the latest
    5-minute row; OKX allows 5 requests per 2 s per IP and instrument).

    The per-contract endpoint, not the per-currency ``long-short-account-ratio?ccy=BTC``, which
    mixes every BTC futures and swap (coin- and USDT-margined). Not polled: open interest
    (``/api/v5/public/open-interest``; the ``open-interest`` channel pushes it) and books snapshots
    (each (re)subscription of ``books`` starts with one; a gap resubscribes, see
    :func:`resync_messages`).
    """
    params = (("instId", exchange_instrument(EXCHANGE, symbol)), ("period", RATIO_PERIOD), ("limit", "1"))
    return (RestPoll(RATIO_CHANNEL, RATIO_PATH, params, RATIO_INTERVAL_S),)


def resync_messages(symbol: str, channel: str) -> tuple[str, ...]:
    """After a ``books`` gap: unsubscribe and resubscribe the book, whose first push is a snapshot."""
    if channel != "ws:books":
        return ()
    args = [{"channel": "books", "instId": exchange_instrument(EXCHANGE, symbol)}]
    return (op_message("unsubscribe", args), op_message("subscribe", args))


class BookSequencer:
    """OKX ``books`` chaining: an update's ``prevSeqId`` must equal the previous push's ``seqId``.

    A snapshot (``"action":"snapshot"``) starts a chain. After a gap the symbol's checks pause
    until the next snapshot (the one the resubscription brings), so in-flight updates of the old
    subscription do not count as further gaps. ``seqId`` may fall after a sequence reset; only
    ``prevSeqId`` is compared.
    """

    channels = frozenset({"ws:books"})

    def __init__(self) -> None:
        self._last: dict[str, int | None] = {}

    def check(self, symbol: str, channel: str, payload: bytes) -> dict[str, Any] | None:
        """Gap details ``{"reason":"sequence","expected_prev_seq_id":..,"prev_seq_id":..,"seq_id":..}``."""
        if channel != "ws:books":
            return None
        seq_match = _SEQ_RE.search(payload)
        if seq_match is None:
            return None
        seq = int(seq_match[1])
        if _SNAPSHOT_MARK in payload:
            self._last[symbol] = seq
            return None
        previous = self._last.get(symbol, -1)
        if previous is None:  # resyncing: wait for the snapshot
            return None
        prev_match = _PREV_SEQ_RE.search(payload)
        if prev_match is None:
            return None
        prev = int(prev_match[1])
        if previous == -1 or prev == previous:  # -1: no snapshot seen yet on this connection
            self._last[symbol] = seq
            return None
        self._last[symbol] = None
        return {
            "reason": "sequence",
            "channel": channel,
            "expected_prev_seq_id": previous,
            "prev_seq_id": prev,
            "seq_id": seq,
        }


def rate_limited_body(body: bytes) -> bool:
    """Whether an HTTP 200 body is OKX's rate-limit error (documented sample)::

        {"code":"50011","msg":"Rate limit reached. Please refer to API documentation and throttle
         requests accordingly.","data":[]}

    OKX documents it with HTTP 429 (handled as a status), but a proxy or gateway may pass it on as a
    200.
    """
    if b"50011" not in body:  # the cheap test first: almost every body is data
        return False
    try:
        doc = json.loads(body)
    except ValueError:
        return False
    return isinstance(doc, dict) and doc.get("code") == "50011"


SPEC: ExchangeSpec = ExchangeSpec(
    name=EXCHANGE.value,
    default_ws_url=DEFAULT_WS_URL,
    default_rest_url=DEFAULT_REST_URL,
    connections=ws_connections,
    route=route_message,
    rest_polls=rest_polls,
    rate_limited_body=rate_limited_body,
    new_sequencer=BookSequencer,
    ping_interval_s=None,  # OKX documents a text "ping" / "pong" heartbeat instead
    ping_timeout_s=None,
    app_ping=PING,
    app_ping_interval_s=PING_INTERVAL_S,
    app_ping_timeout_s=10.0,
    max_connection_age_s=float("inf"),  # no documented connection age limit
    wide_symbols=wide_symbols,
    resync=resync_messages,
)
