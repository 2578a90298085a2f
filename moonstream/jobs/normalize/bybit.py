"""Bybit v5 linear (USDT perpetual) public websocket and REST: raw records -> typed events
(docs/normalizers.md).

Each ``parse_*`` function is pure: it takes one decoded WS message as received
(``{"topic":"publicTrade.BTCUSDT","type":"snapshot","ts":...,"data":...}``) or REST response body,
our symbol (``BTC``) and the receive time, and returns events or raises a
:class:`~moonstream.jobs.normalize.NormalizeError` subclass with a short reason. :func:`normalize`
decodes a :class:`RawRecord`, dispatches on its channel tag (``ws:publicTrade``,
``ws:allLiquidation``, ``ws:tickers``, ``ws:orderbook``, ``rest:ratio:account-ratio``, ``conn:*``)
and attaches the record's context to any error. Validation helpers are Binance's, so every
exchange rejects the same things.

Side conventions (Bybit v5 docs, https://bybit-exchange.github.io/docs/v5/websocket/public/):
- publicTrade ``S`` is "Side of taker. ``Buy``,``Sell``": ``Buy`` -> :attr:`TakerSide.BUY`.
- allLiquidation ``S`` is "Position side. ``Buy``,``Sell``. When you receive a ``Buy`` update, this
  means that a long position has been liquidated": ``Buy`` -> :attr:`LiquidatedSide.LONG`,
  ``Sell`` -> ``SHORT``. This is the *opposite* of Binance's ``forceOrder`` ``S`` (the order side)
  and of the original system's note (spec/003 "verified ``Buy→short``, ``Sell→long``"); Bybit's
  documentation wins.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from decimal import Context, Decimal
from typing import Any

from moonstream.collector.rawfile import RawRecord
from moonstream.jobs.events import (
    BookDelta,
    BookSnapshot,
    Event,
    LiquidatedSide,
    Liquidation,
    LongShortRatio,
    MarkPriceUpdate,
    OpenInterest,
    RatioKind,
    TakerSide,
    Trade,
)
from moonstream.jobs.normalize import (
    InvalidValue,
    MalformedMessage,
    NormalizeError,
    SymbolMismatch,
    UnknownChannel,
)
from moonstream.jobs.normalize.fields import (
    connection_event,
    decode_json as _decode,
    finite as _finite,
    integer as _int,
    levels as _levels,
    ms as _ms,
    obj as _obj,
    parser as _parser,
    price as _price,
    qty as _qty,
    short as _short,
)
from moonstream.symbols import Exchange, exchange_instrument

EXCHANGE: str = Exchange.BYBIT.value

_ONE = Decimal(1)
_RATIO_CONTEXT = Context(prec=28)  # buyRatio / sellRatio: the same digits whatever the thread's context

RATIO_CHANNEL = "rest:ratio:account-ratio"
"""``GET /v5/market/account-ratio`` (the collector's tag, :mod:`moonstream.collector.exchanges.bybit`)."""

_TAKER = {"Buy": TakerSide.BUY, "Sell": TakerSide.SELL}  # key: publicTrade S, "Side of taker"
_LIQUIDATED = {
    "Buy": LiquidatedSide.LONG,
    "Sell": LiquidatedSide.SHORT,
}  # key: allLiquidation S, "Position side"


def _taker(value: object) -> TakerSide:
    side = _TAKER.get(value) if type(value) is str else None
    if side is None:
        raise InvalidValue(f"S={_short(value)} is neither Buy nor Sell")
    return side


def _liquidated(value: object) -> LiquidatedSide:
    side = _LIQUIDATED.get(value) if type(value) is str else None
    if side is None:
        raise InvalidValue(f"S={_short(value)} is neither Buy nor Sell")
    return side


def _instrument(symbol: str) -> str:
    return exchange_instrument(Exchange.BYBIT, symbol)


def _message(msg: object, prefix: str, symbol: str) -> tuple[dict[str, Any], str]:
    """The message object, checked: ``topic`` is ``<prefix>.<SYMBOL>`` for our symbol.

    ``prefix`` ending with ``.`` matches any middle part (``orderbook.`` + ``50``); returns the
    message and the topic's middle part (``"50"``, or ``""``).
    """
    data = _obj(msg, "message")
    topic = data["topic"]
    if type(topic) is not str:
        raise MalformedMessage(f"topic has JSON type {type(topic).__name__}")
    head, _, instrument = topic.rpartition(".")
    if prefix.endswith("."):
        middle = head[len(prefix) :] if head.startswith(prefix) else ""
        if not middle:
            raise MalformedMessage(f"topic {_short(topic)} is not {prefix}<n>.<symbol>")
    elif head != prefix:
        raise MalformedMessage(f"topic {_short(topic)} is not {prefix}.<symbol>")
    else:
        middle = ""
    if instrument != _instrument(symbol):
        raise SymbolMismatch(f"topic {_short(topic)}, expected {_instrument(symbol)!r}")
    return data, middle


def _check_symbol(value: object, symbol: str) -> None:
    if value != _instrument(symbol):
        raise SymbolMismatch(f"symbol {_short(value)}, expected {_instrument(symbol)!r}")


def _rows(value: object, name: str) -> list[Any]:
    if type(value) is not list:
        raise MalformedMessage(f"{name} is not a list")
    return value


def trade_id(value: object) -> int:
    """Bybit's trade id ``i`` as an integer, for :class:`Trade` and its dedup key.

    Linear trade ids are UUID strings (``"20f43950-d8dd-5b31-9112-a178eb6023af"``): the id is the
    UUID's 128-bit integer, so equal strings give equal ids and distinct UUIDs never collide. A
    string of digits (the form Bybit uses on other markets) is taken as that integer.
    """
    if type(value) is not str:
        raise MalformedMessage(f"i has JSON type {type(value).__name__}")
    if value.isdigit() and value.isascii():
        return int(value)
    try:
        return uuid.UUID(value).int
    except ValueError:
        raise InvalidValue(f"i={_short(value)} is neither a UUID nor digits") from None


@_parser
def parse_public_trade(msg: Any, symbol: str, recv_ns: int) -> list[Trade]:
    """``publicTrade.{SYMBOL}``: one :class:`Trade` per row. Sample from Bybit's v5 docs ("Trade")::

        {"topic":"publicTrade.BTCUSDT","type":"snapshot","ts":1672304486868,
         "data":[{"T":1672304486865,"s":"BTCUSDT","S":"Buy","v":"0.001","p":"16578.50",
                  "L":"PlusTick","i":"20f43950-d8dd-5b31-9112-a178eb6023af","BT":false}]}

    ``S`` is the taker side; ``ts_ns`` is ``T`` (fill time); ``trade_id`` is :func:`trade_id` of
    ``i``. Not aggregated: each row is one trade (``aggregated=False``).
    """
    data, _ = _message(msg, "publicTrade", symbol)
    out: list[Trade] = []
    for raw in _rows(data["data"], "data"):
        row = _obj(raw, "trade")
        _check_symbol(row["s"], symbol)
        out.append(
            Trade(
                exchange=EXCHANGE,
                symbol=symbol,
                recv_ns=recv_ns,
                ts_ns=_ms(row["T"], "T"),
                trade_id=trade_id(row["i"]),
                price=_price(row["p"], "p"),
                qty=_qty(row["v"], "v", allow_zero=False),
                taker_side=_taker(row["S"]),
                aggregated=False,
                first_trade_id=None,
                last_trade_id=None,
                insurance_fund=False,
            )
        )
    return out


@_parser
def parse_all_liquidation(msg: Any, symbol: str, recv_ns: int) -> list[Liquidation]:
    """``allLiquidation.{SYMBOL}``: one :class:`Liquidation` per row. Sample from Bybit's v5 docs
    ("All Liquidation")::

        {"topic":"allLiquidation.ROSEUSDT","type":"snapshot","ts":1739502303204,
         "data":[{"T":1739502302929,"s":"ROSEUSDT","S":"Sell","v":"20000","p":"0.04499"}]}

    ``S`` is the *position* side ("When you receive a ``Buy`` update, this means that a long
    position has been liquidated"): ``Buy`` -> LONG, ``Sell`` -> SHORT. ``p`` is the bankruptcy
    price; ``v`` the executed size, so ``qty = filled_qty = last_filled_qty = v``, no average
    price, status ``FILLED``. ``ts_ns`` is ``T``.
    """
    data, _ = _message(msg, "allLiquidation", symbol)
    out: list[Liquidation] = []
    for raw in _rows(data["data"], "data"):
        row = _obj(raw, "liquidation")
        _check_symbol(row["s"], symbol)
        size = _qty(row["v"], "v", allow_zero=False)
        out.append(
            Liquidation(
                exchange=EXCHANGE,
                symbol=symbol,
                recv_ns=recv_ns,
                ts_ns=_ms(row["T"], "T"),
                side=_liquidated(row["S"]),
                price=_price(row["p"], "p"),
                avg_price=None,
                qty=size,
                filled_qty=size,
                last_filled_qty=size,
                status="FILLED",
            )
        )
    return out


_MARK_FIELDS = ("markPrice", "indexPrice", "fundingRate", "nextFundingTime")


@_parser
def parse_tickers(msg: Any, symbol: str, recv_ns: int) -> list[Event]:
    """``tickers.{SYMBOL}`` (linear): mark/index/funding and open interest. Sample from Bybit's v5
    docs ("Ticker", linear; 24h statistics and best bid/ask cut)::

        {"topic":"tickers.BTCUSDT","type":"snapshot","data":{"symbol":"BTCUSDT",
         "markPrice":"17217.33","indexPrice":"17227.36","openInterest":"68744.761",
         "openInterestValue":"1183601235.91","nextFundingTime":"1673280000000",
         "fundingRate":"-0.000212","bid1Price":"17215.50",...},"cs":24987956059,"ts":1673272861686}

    Bybit: "If a response param is not found in the message, then its value has not changed", and
    deltas carry only changed fields. So: a :class:`MarkPriceUpdate` when any of ``markPrice``,
    ``indexPrice``, ``fundingRate``, ``nextFundingTime`` is present (absent ones are None), an
    :class:`OpenInterest` when ``openInterest`` (base units) is present; ``[]`` when neither.
    ``ts_ns`` is the message ``ts``. ``openInterestValue`` (USD) is not carried: our OI is base
    units × price (DESIGN §5).
    """
    data, _ = _message(msg, "tickers", symbol)
    row = _obj(data["data"], "data")
    _check_symbol(row["symbol"], symbol)
    ts_ns = _ms(data["ts"], "ts")
    out: list[Event] = []
    if any(name in row for name in _MARK_FIELDS):
        out.append(
            MarkPriceUpdate(
                exchange=EXCHANGE,
                symbol=symbol,
                recv_ns=recv_ns,
                ts_ns=ts_ns,
                mark_price=_price(row["markPrice"], "markPrice") if "markPrice" in row else None,
                index_price=_price(row["indexPrice"], "indexPrice") if "indexPrice" in row else None,
                funding_rate=_finite(row["fundingRate"], "fundingRate") if "fundingRate" in row else None,
                next_funding_ns=(
                    _ms(row["nextFundingTime"], "nextFundingTime") if "nextFundingTime" in row else None
                ),
            )
        )
    if "openInterest" in row:
        out.append(
            OpenInterest(
                exchange=EXCHANGE,
                symbol=symbol,
                recv_ns=recv_ns,
                ts_ns=ts_ns,
                open_interest_base=_qty(row["openInterest"], "openInterest"),
            )
        )
    return out


@_parser
def parse_orderbook(msg: Any, symbol: str, recv_ns: int) -> BookSnapshot | BookDelta:
    """``orderbook.{depth}.{SYMBOL}``: ``type`` ``snapshot`` -> :class:`BookSnapshot`, ``delta`` ->
    :class:`BookDelta`. Sample from Bybit's v5 docs ("Orderbook"; levels cut)::

        {"topic":"orderbook.50.BTCUSDT","type":"snapshot","ts":1672304484978,
         "data":{"s":"BTCUSDT","b":[["16493.50","0.006"],["16493.00","0.100"]],
                 "a":[["16611.00","0.029"],["16612.00","0.213"]],"u":18521288,"seq":7961638724}}

    ``update_id`` is ``u`` ("Update ID. Is a sequence"; ``u = 1`` is a snapshot after a service
    restart), ``seq`` the cross sequence, ``depth`` from the topic, ``ts_ns`` the message ``ts``.
    No checksum, no previous id; sizes are base units (``contract_value`` 1). A delta level with
    size 0 deletes the price.
    """
    data, middle = _message(msg, "orderbook.", symbol)
    if not (middle.isdigit() and middle.isascii()):
        raise MalformedMessage(f"orderbook depth {_short(middle)} is not a number")
    body = _obj(data["data"], "data")
    _check_symbol(body["s"], symbol)
    kind = data["type"]
    ts_ns = _ms(data["ts"], "ts")
    update_id = _int(body["u"], "u")
    seq = _int(body["seq"], "seq") if body.get("seq") is not None else None
    bids = _levels(body["b"], "b")
    asks = _levels(body["a"], "a")
    if kind == "snapshot":
        return BookSnapshot(
            exchange=EXCHANGE,
            symbol=symbol,
            recv_ns=recv_ns,
            ts_ns=ts_ns,
            depth=int(middle),
            update_id=update_id,
            seq=seq,
            checksum=None,
            contract_value=_ONE,
            bids=bids,
            asks=asks,
        )
    if kind == "delta":
        return BookDelta(
            exchange=EXCHANGE,
            symbol=symbol,
            recv_ns=recv_ns,
            ts_ns=ts_ns,
            depth=int(middle),
            update_id=update_id,
            prev_update_id=None,
            seq=seq,
            checksum=None,
            contract_value=_ONE,
            bids=bids,
            asks=asks,
        )
    raise MalformedMessage(f"type {_short(kind)} is neither snapshot nor delta")


# --- REST polls ----------------------------------------------------------------------------------


@_parser
def parse_account_ratio(msg: Any, symbol: str, recv_ns: int) -> list[LongShortRatio]:
    """``GET /v5/market/account-ratio`` (``rest:ratio:account-ratio``): one
    :class:`LongShortRatio` (``GLOBAL_ACCOUNT``) per row. Sample from Bybit's v5 docs ("Get Long
    Short Ratio", indentation removed)::

        {"retCode":0,"retMsg":"OK","result":{"list":[{"symbol":"BTCUSDT","buyRatio":"0.5777",
         "sellRatio":"0.4223","timestamp":"1695772800000"}]},"retExtInfo":{},"time":1695785131028}

    ``buyRatio``/``sellRatio`` are "the ratio of Bybit Futures accounts with net long / net short
    position" (all accounts: ``GLOBAL_ACCOUNT``), so ``long_share``/``short_share``; Bybit sends no
    ratio of the two, so ``long_short_ratio`` = ``buyRatio / sellRatio`` (Bybit's own definition,
    28 significant digits; ``sellRatio`` 0 is an :class:`InvalidValue`). ``ts_ns`` is the row's
    ``timestamp`` (the period's start). A ``retCode`` other than 0 (``10006`` "Too many visits!",
    a bad parameter) is an error body: :class:`MalformedMessage` naming it.
    """
    data = _obj(msg, "message")
    code = data["retCode"]
    if type(code) is not int or code != 0:
        raise MalformedMessage(f"exchange error response retCode={_short(code)}")
    result = _obj(data["result"], "result")
    out: list[LongShortRatio] = []
    for raw in _rows(result["list"], "list"):
        row = _obj(raw, "row")
        _check_symbol(row["symbol"], symbol)
        long_share = _qty(row["buyRatio"], "buyRatio")
        short_share = _qty(row["sellRatio"], "sellRatio", allow_zero=False)
        out.append(
            LongShortRatio(
                exchange=EXCHANGE,
                symbol=symbol,
                recv_ns=recv_ns,
                ts_ns=_ms(row["timestamp"], "timestamp"),
                kind=RatioKind.GLOBAL_ACCOUNT,
                long_short_ratio=_RATIO_CONTEXT.divide(long_share, short_share),
                long_share=long_share,
                short_share=short_share,
            )
        )
    return out


# --- dispatch ------------------------------------------------------------------------------------

_JsonParser = Callable[[Any, str, int], Sequence[Event]]


def _one(parser: Callable[[Any, str, int], Event]) -> _JsonParser:
    return lambda msg, symbol, recv_ns: (parser(msg, symbol, recv_ns),)


_PARSERS: dict[str, _JsonParser] = {
    "ws:publicTrade": parse_public_trade,
    "ws:allLiquidation": parse_all_liquidation,
    "ws:tickers": parse_tickers,
    "ws:orderbook": _one(parse_orderbook),
    RATIO_CHANNEL: parse_account_ratio,
}

# ws:op: the exchange's replies to our own subscribe and ping messages (acks, pongs): nothing to normalize.
_IGNORED = frozenset({"ws:op"})

CHANNELS: frozenset[str] = frozenset({*_PARSERS, *_IGNORED})
"""Every channel tag :func:`normalize` knows, besides ``conn:*``."""


def _dispatch(record: RawRecord, symbol: str) -> list[Event]:
    channel = record.channel
    parser = _PARSERS.get(channel)
    if parser is not None:
        return list(parser(_decode(record.payload), symbol, record.recv_ns))
    if channel.startswith("conn:"):
        return [connection_event(record, symbol, EXCHANGE)]
    if channel in _IGNORED:
        return []
    raise UnknownChannel(f"unknown channel {_short(channel)}")


def normalize(record: RawRecord, symbol: str) -> list[Event]:
    """The events of one Bybit v5 linear record for our ``symbol`` (``BTC``), in message order.

    Raises a :class:`~moonstream.jobs.normalize.NormalizeError` subclass carrying the record's
    exchange, channel and recv_ns: :class:`MalformedMessage`, :class:`InvalidValue`,
    :class:`SymbolMismatch` or :class:`UnknownChannel`.
    """
    try:
        return _dispatch(record, symbol)
    except NormalizeError as exc:
        raise exc.with_context(
            exchange=record.exchange, channel=record.channel, recv_ns=record.recv_ns
        ) from None
