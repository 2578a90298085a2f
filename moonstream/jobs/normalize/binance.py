"""Binance USDT-M futures: raw records -> typed events (docs/normalizers.md).

Each ``parse_*`` function is pure: it takes one decoded message (the combined-stream envelope
``{"stream": ..., "data": {...}}`` or the bare event), our symbol (``BTC``) and the receive time, and
returns events or raises a :class:`~moonstream.jobs.normalize.NormalizeError` subclass with a short
reason. :func:`normalize` decodes a :class:`RawRecord`, dispatches on its channel tag and attaches the
record's context (exchange, channel, recv_ns) to any error.

Side conventions (Binance USDⓈ-M docs):
- trade / aggTrade ``m`` is "Is the buyer the market maker?": ``m = true`` means the seller was the
  taker, so :attr:`TakerSide.SELL`; ``m = false`` means :attr:`TakerSide.BUY`.
- forceOrder ``S`` is the side of the liquidation order, which closes the liquidated position:
  ``SELL`` closes a long (:attr:`LiquidatedSide.LONG`), ``BUY`` closes a short (``SHORT``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import orjson

from moonstream.collector.rawfile import RawRecord
from moonstream.jobs.events import (
    BookTicker,
    ConnectionEvent,
    DepthSnapshot,
    DepthUpdate,
    Event,
    LiquidatedSide,
    Liquidation,
    LongShortRatio,
    MarkPrice,
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
    FINITE_CACHE,
    NS_PER_MS,
    NUMBER_CACHE_LIMIT,
    NUMBER_CACHES,
    connection_event,
    decode_json as _decode,
    finite as _finite,
    integer as _int,
    levels as _levels,
    missing_field as _missing_field,
    ms as _ms,
    obj as _obj,
    parser as _parser,
    positional_builder,
    price as _price,
    qty as _qty,
    short as _short,
)
from moonstream.native import compiled, native, not_built
from moonstream.symbols import Exchange, exchange_instrument

EXCHANGE: str = Exchange.BINANCE.value

_NS_PER_MS = NS_PER_MS


# --- helpers ------------------------------------------------------------------------------------

# The hot parsers build events positionally, without the dataclasses' keyword __init__ (see
# positional_builder: same events, fields checked at import).
_new_depth_update = positional_builder(
    DepthUpdate,
    (
        "exchange", "symbol", "recv_ns", "ts_ns", "tx_ns", "first_update_id", "last_update_id",
        "prev_last_update_id", "bids", "asks",
    ),
)  # fmt: skip
_new_trade = positional_builder(
    Trade,
    (
        "exchange", "symbol", "recv_ns", "ts_ns", "trade_id", "price", "qty", "taker_side", "aggregated",
        "first_trade_id", "last_trade_id", "insurance_fund",
    ),
)  # fmt: skip
_new_book_ticker = positional_builder(
    BookTicker,
    ("exchange", "symbol", "recv_ns", "ts_ns", "update_id", "bid_price", "bid_qty", "ask_price", "ask_qty"),
)
_new_mark_price = positional_builder(
    MarkPrice,
    (
        "exchange", "symbol", "recv_ns", "ts_ns", "mark_price", "index_price", "funding_rate",
        "next_funding_ns",
    ),
)  # fmt: skip


@functools.lru_cache(maxsize=256)
def _instrument(symbol: str) -> str:
    return exchange_instrument(Exchange.BINANCE, symbol)


def _event(msg: object, expected: str) -> dict[str, Any]:
    """The event object of a combined-stream envelope or a bare event, checked for its ``e``."""
    if type(msg) is not dict:
        raise MalformedMessage("message is not a JSON object")
    data: dict[str, Any] = msg
    if "stream" in data and "data" in data:
        data = data["data"]
        if type(data) is not dict:
            raise MalformedMessage("data is not a JSON object")
    etype = data.get("e")
    if etype is not None and etype != expected:
        raise MalformedMessage(f"event type {_short(etype)}, expected {expected!r}")
    return data


_INSTRUMENTS: dict[str, str] = {}  # symbol -> instrument, ahead of the lru_cache


def _instrument_of(symbol: str) -> str:
    """Binance's instrument name for our symbol (``BTCUSDT``), from a plain dict when seen before."""
    expected = _INSTRUMENTS.get(symbol)
    if expected is None:
        expected = _instrument(symbol)
        if len(_INSTRUMENTS) < 256:
            _INSTRUMENTS[symbol] = expected
    return expected


def _check_symbol(value: object, symbol: str) -> None:
    expected = _instrument_of(symbol)
    if value != expected:
        raise SymbolMismatch(f"symbol {_short(value)}, expected {expected!r}")


def _rest_body(msg: object) -> None:
    """Name Binance's REST error body ``{"code": -1121, "msg": "Invalid symbol."}`` when it is one."""
    if type(msg) is dict and "code" in msg and "msg" in msg:
        raise MalformedMessage(f"exchange error response code={_short(msg['code'])}")


_TAKER = {True: TakerSide.SELL, False: TakerSide.BUY}  # key: buyer is maker
_LIQUIDATED = {"SELL": LiquidatedSide.LONG, "BUY": LiquidatedSide.SHORT}  # key: liquidation order side


def _taker(buyer_is_maker: object) -> TakerSide:
    if type(buyer_is_maker) is not bool:
        raise MalformedMessage(f"m has JSON type {type(buyer_is_maker).__name__}")
    return _TAKER[buyer_is_maker]


def _liquidated(order_side: object) -> LiquidatedSide:
    side = _LIQUIDATED.get(order_side) if type(order_side) is str else None
    if side is None:
        raise InvalidValue(f"side {_short(order_side)} is neither BUY nor SELL")
    return side


# --- websocket streams ---------------------------------------------------------------------------


@_parser
def parse_depth_update(msg: Any, symbol: str, recv_ns: int) -> DepthUpdate:
    """``<sym>@depth@0ms`` / ``@100ms`` diff. Real sample (hftbacktest btcusdt_20240718)::

        {"stream":"btcusdt@depth@0ms","data":{"e":"depthUpdate","E":1721347150675,"T":1721347150650,
         "s":"BTCUSDT","U":4984031930570,"u":4984031931631,"pu":4984031930451,
         "b":[["5000.00","2.024"],["63786.20","2.667"],["63937.10","0.299"]],
         "a":[["64109.70","0.000"],["64954.10","1.584"]]}}

    ``ts_ns`` is ``E``, ``tx_ns`` is ``T``. A level with quantity 0 deletes that price; a zero or
    negative price is an :class:`InvalidValue`, as is ``U > u``.
    """
    data = _event(msg, "depthUpdate")
    _check_symbol(data["s"], symbol)
    first = _int(data["U"], "U")
    last = _int(data["u"], "u")
    if first > last:
        raise InvalidValue(f"U={first} > u={last}")
    ts_ns = _ms(data["E"], "E")
    tx_ns = _ms(data["T"], "T")
    prev = _int(data["pu"], "pu")
    return _new_depth_update(
        EXCHANGE,
        symbol,
        recv_ns,
        ts_ns,
        tx_ns,
        first,
        last,
        prev,
        _levels(data["b"], "b"),
        _levels(data["a"], "a"),
    )


@_parser
def parse_trade(msg: Any, symbol: str, recv_ns: int) -> Trade:
    """``<sym>@trade``. Real sample (hftbacktest btcusdt_20230405, an insurance-fund trade)::

        {"stream":"btcusdt@trade","data":{"e":"trade","E":1680652874406,"T":1680652874400,
         "s":"BTCUSDT","t":3535191080,"p":"28722.50","q":"0.001","X":"INSURANCE_FUND","m":true}}

    ``m = true``: the buyer was the maker, so the taker SOLD. ``X`` (MARKET / INSURANCE_FUND) may be
    absent in old messages (then MARKET).
    """
    data = _event(msg, "trade")
    _check_symbol(data["s"], symbol)
    ts_ns = _ms(data["T"], "T")
    trade_id = _int(data["t"], "t")
    price = _price(data["p"], "p")
    qty = _qty(data["q"], "q", allow_zero=False)
    taker_side = _taker(data["m"])
    return _new_trade(
        EXCHANGE,
        symbol,
        recv_ns,
        ts_ns,
        trade_id,
        price,
        qty,
        taker_side,
        False,  # aggregated
        None,  # first_trade_id
        None,  # last_trade_id
        data.get("X") == "INSURANCE_FUND",
    )


@_parser
def parse_agg_trade(msg: Any, symbol: str, recv_ns: int) -> Trade:
    """``<sym>@aggTrade``. Real sample (cryptofeed-sample BINANCE_FUTURES.ws.1.0)::

        {"stream":"ctkusdt@aggTrade","data":{"e":"aggTrade","E":1626992741575,"a":16599292,
         "s":"CTKUSDT","p":"1.01100","q":"10","f":23961322,"l":23961322,"T":1626992741421,"m":false}}

    ``trade_id`` is the aggregate id ``a``; ``f``/``l`` the first/last trade ids; ``ts_ns`` is ``T``.
    """
    data = _event(msg, "aggTrade")
    _check_symbol(data["s"], symbol)
    first = _int(data["f"], "f")
    last = _int(data["l"], "l")
    if first > last:
        raise InvalidValue(f"f={first} > l={last}")
    ts_ns = _ms(data["T"], "T")
    trade_id = _int(data["a"], "a")
    price = _price(data["p"], "p")
    qty = _qty(data["q"], "q", allow_zero=False)
    taker_side = _taker(data["m"])
    return _new_trade(
        EXCHANGE,
        symbol,
        recv_ns,
        ts_ns,
        trade_id,
        price,
        qty,
        taker_side,
        True,  # aggregated
        first,
        last,
        False,  # insurance_fund
    )


@_parser
def parse_book_ticker(msg: Any, symbol: str, recv_ns: int) -> BookTicker:
    """``<sym>@bookTicker``; ``ts_ns`` is ``E`` (else ``T``). Real sample (hftbacktest btcusdt_20240718)::

        {"stream":"btcusdt@bookTicker","data":{"e":"bookTicker","u":4984028370881,"s":"BTCUSDT",
         "b":"63943.90","B":"46.371","a":"63944.00","A":"0.095","T":1721347022507,"E":1721347022507}}

    ``update_id`` is ``u``, the order-book update id this best bid/ask reflects.
    """
    data = _event(msg, "bookTicker")
    _check_symbol(data["s"], symbol)
    ts_ns = _ms(data["E"] if "E" in data else data["T"], "E")
    update_id = _int(data["u"], "u")
    return _new_book_ticker(
        EXCHANGE,
        symbol,
        recv_ns,
        ts_ns,
        update_id,
        _price(data["b"], "b"),
        _qty(data["B"], "B"),
        _price(data["a"], "a"),
        _qty(data["A"], "A"),
    )


@_parser
def parse_mark_price(msg: Any, symbol: str, recv_ns: int) -> MarkPrice:
    """``<sym>@markPrice@1s``. Real sample (hftbacktest btcusdt_20230404)::

        {"stream":"btcusdt@markPrice@1s","data":{"e":"markPriceUpdate","E":1680652701000,
         "s":"BTCUSDT","p":"28147.27373413","P":"28142.15563565","i":"28159.75642857",
         "r":"0.00002754","T":1680652800000}}

    ``p`` mark price, ``i`` index price, ``r`` funding rate (may be negative), ``T`` next funding time.
    """
    data = _event(msg, "markPriceUpdate")
    _check_symbol(data["s"], symbol)
    return MarkPrice(
        exchange=EXCHANGE,
        symbol=symbol,
        recv_ns=recv_ns,
        ts_ns=_ms(data["E"], "E"),
        mark_price=_price(data["p"], "p"),
        index_price=_price(data["i"], "i"),
        funding_rate=_finite(data["r"], "r"),
        next_funding_ns=_ms(data["T"], "T"),
    )


@_parser
def parse_force_order(msg: Any, symbol: str, recv_ns: int) -> Liquidation:
    """``<sym>@forceOrder`` / ``!forceOrder@arr``. Sample from Binance's USDⓈ-M docs
    ("Liquidation Order Streams")::

        {"e":"forceOrder","E":1568014460893,"o":{"s":"BTCUSDT","S":"SELL","o":"LIMIT","f":"IOC",
         "q":"0.014","p":"9910","ap":"9910","X":"FILLED","l":"0.014","z":"0.014","T":1568014460893}}

    ``S`` is the liquidation order's side: SELL force-closes a LONG, BUY a SHORT. ``ts_ns`` is the
    order trade time ``T``.
    """
    data = _event(msg, "forceOrder")
    order = _obj(data["o"], "o")
    _check_symbol(order["s"], symbol)
    avg = _qty(order["ap"], "ap") if order.get("ap") is not None else None
    return Liquidation(
        exchange=EXCHANGE,
        symbol=symbol,
        recv_ns=recv_ns,
        ts_ns=_ms(order["T"], "T"),
        side=_liquidated(order["S"]),
        price=_price(order["p"], "p"),
        avg_price=avg,
        qty=_qty(order["q"], "q", allow_zero=False),
        filled_qty=_qty(order["z"], "z"),
        last_filled_qty=_qty(order["l"], "l"),
        status=str(order["X"]),
    )


# --- REST polls ----------------------------------------------------------------------------------


@_parser
def parse_depth_snapshot(msg: Any, symbol: str, recv_ns: int) -> DepthSnapshot:
    """``GET /fapi/v1/depth`` response (no symbol in it). Real sample (hftbacktest btcusdt_20240718,
    1000 levels a side cut to 2)::

        {"lastUpdateId":4984028384061,"E":1721347022759,"T":1721347022750,
         "bids":[["63943.90","46.372"],["63943.80","0.007"]],"asks":[["63944.00","0.167"],...]}

    ``ts_ns`` is ``E``, else ``T``; old snapshots carry neither, and then ``ts_ns = recv_ns``.
    """
    _rest_body(msg)
    data = _obj(msg, "message")
    if "E" in data:
        ts_ns = _ms(data["E"], "E")
    elif "T" in data:
        ts_ns = _ms(data["T"], "T")
    else:
        ts_ns = recv_ns
    return DepthSnapshot(
        exchange=EXCHANGE,
        symbol=symbol,
        recv_ns=recv_ns,
        ts_ns=ts_ns,
        last_update_id=_int(data["lastUpdateId"], "lastUpdateId"),
        bids=_levels(data["bids"], "bids"),
        asks=_levels(data["asks"], "asks"),
    )


@_parser
def parse_open_interest(msg: Any, symbol: str, recv_ns: int) -> OpenInterest:
    """``GET /fapi/v1/openInterest`` response. Sample from Binance's docs::

        {"openInterest":"10659.509","symbol":"BTCUSDT","time":1589437530011}

    ``openInterest`` is in base units (>= 0); ``ts_ns`` is ``time``.
    """
    _rest_body(msg)
    data = _obj(msg, "message")
    _check_symbol(data["symbol"], symbol)
    return OpenInterest(
        exchange=EXCHANGE,
        symbol=symbol,
        recv_ns=recv_ns,
        ts_ns=_ms(data["time"], "time"),
        open_interest_base=_qty(data["openInterest"], "openInterest"),
    )


RATIO_ENDPOINTS: dict[str, RatioKind] = {
    "topLongShortAccountRatio": RatioKind.TOP_ACCOUNT,
    "topLongShortPositionRatio": RatioKind.TOP_POSITION,
    "globalLongShortAccountRatio": RatioKind.GLOBAL_ACCOUNT,
}
"""``/futures/data/<endpoint>`` name (the ``rest:ratio:<endpoint>`` channel suffix) -> series kind."""


@_parser
def parse_long_short_ratio(msg: Any, symbol: str, recv_ns: int, kind: RatioKind) -> list[LongShortRatio]:
    """``GET /futures/data/{topLongShortAccountRatio,topLongShortPositionRatio,
    globalLongShortAccountRatio}``: a JSON array, one event per row. Sample from Binance's docs::

        [{"symbol":"BTCUSDT","longShortRatio":"1.8105","longAccount":"0.6442",
          "shortAccount":"0.3558","timestamp":"1583139600000"}]

    The USDⓈ-M docs name the shares ``longAccount``/``shortAccount`` for all three endpoints;
    ``longPosition``/``shortPosition`` (the COIN-M position endpoint's names) are accepted too.
    ``timestamp`` comes as a number or a string of digits.
    """
    _rest_body(msg)
    if type(msg) is not list:
        raise MalformedMessage("ratio response is not a JSON array")
    out: list[LongShortRatio] = []
    for raw in msg:
        row = _obj(raw, "row")
        _check_symbol(row["symbol"], symbol)
        long_key, short_key = (
            ("longAccount", "shortAccount") if "longAccount" in row else ("longPosition", "shortPosition")
        )
        out.append(
            LongShortRatio(
                exchange=EXCHANGE,
                symbol=symbol,
                recv_ns=recv_ns,
                ts_ns=_ms(row["timestamp"], "timestamp"),
                kind=kind,
                long_short_ratio=_qty(row["longShortRatio"], "longShortRatio"),
                long_share=_qty(row[long_key], long_key),
                short_share=_qty(row[short_key], short_key),
            )
        )
    return out


# --- importer CSV channels -----------------------------------------------------------------------


def _csv_fields(line: str, counts: tuple[int, ...]) -> list[str]:
    fields = [part.strip() for part in line.strip().split(",")]
    if len(fields) not in counts:
        raise MalformedMessage(
            f"CSV line has {len(fields)} columns, expected {' or '.join(map(str, counts))}"
        )
    return fields


def parse_force_order_csv(line: str, symbol: str, recv_ns: int) -> Liquidation:
    """``csv:forceOrder``: ``s,S,o,f,q,p,ap,X,l,z,T,usd_size``, the recorder having stripped ``USDT``
    (``BTC`` = BTCUSDT); ``ap`` may be ``None``; ``usd_size`` is ignored (not uniform across
    recorders). Real sample (moondev-liq-captures bandsthobaby/binance_bigliqs.csv)::

        BTC,BUY,LIMIT,IOC,0.025,59935.28,59697.40,FILLED,0.025,0.025,1723971641090,1498.382
    """
    s, side, _otype, _tif, q, p, ap, status, last, filled, stamp, _usd = _csv_fields(line, (12,))
    if s not in (symbol, _instrument(symbol)):
        raise SymbolMismatch(f"symbol {_short(s)}, expected {symbol!r}")
    return Liquidation(
        exchange=EXCHANGE,
        symbol=symbol,
        recv_ns=recv_ns,
        ts_ns=_ms(stamp, "T"),
        side=_liquidated(side),
        price=_price(p, "p"),
        avg_price=None if ap in ("None", "") else _qty(ap, "ap"),
        qty=_qty(q, "q", allow_zero=False),
        filled_qty=_qty(filled, "z"),
        last_filled_qty=_qty(last, "l"),
        status=status,
    )


_BOOL_TEXT = {"true": True, "false": False}


def parse_agg_trade_csv(line: str, symbol: str, recv_ns: int) -> Trade:
    """``csv:aggTrade``: ``event_time_ms, SYMBOL, agg_trade_id, price, qty, trade_time_ms,
    is_buyer_maker[, extra, extra]``. Real sample (moondev-liq-captures paulius/binance_trades.csv)::

        1737897220002, BTCUSDT, 2541757614, 104943.5, 0.15, 1737897219873, False
    """
    fields = _csv_fields(line, (7, 9))
    _check_symbol(fields[1], symbol)
    maker = _BOOL_TEXT.get(fields[6].lower())
    if maker is None:
        raise InvalidValue(f"is_buyer_maker={_short(fields[6])} is not True/False")
    return Trade(
        exchange=EXCHANGE,
        symbol=symbol,
        recv_ns=recv_ns,
        ts_ns=_ms(fields[5], "trade_time_ms"),
        trade_id=_int(fields[2], "agg_trade_id"),
        price=_price(fields[3], "price"),
        qty=_qty(fields[4], "qty", allow_zero=False),
        taker_side=_TAKER[maker],
        aggregated=True,
        first_trade_id=None,
        last_trade_id=None,
        insurance_fund=False,
    )


# --- connection events ---------------------------------------------------------------------------


# --- dispatch ------------------------------------------------------------------------------------

_JsonParser = Callable[[Any, str, int], Event]

_WS_OR_REST: dict[str, _JsonParser] = {
    "ws:depth": parse_depth_update,
    "ws:trade": parse_trade,
    "ws:aggTrade": parse_agg_trade,
    "ws:bookTicker": parse_book_ticker,
    "ws:markPrice": parse_mark_price,
    "ws:forceOrder": parse_force_order,
    "rest:depth": parse_depth_snapshot,
    "rest:oi": parse_open_interest,
}
_CSV: dict[str, Callable[[str, str, int], Event]] = {
    "csv:forceOrder": parse_force_order_csv,
    "csv:aggTrade": parse_agg_trade_csv,
}
_IGNORED = frozenset({"ws:kline"})
_RATIO_PREFIX = "rest:ratio:"

CHANNELS: frozenset[str] = frozenset(
    {*_WS_OR_REST, *_CSV, *_IGNORED, *(_RATIO_PREFIX + name for name in RATIO_ENDPOINTS)}
)
"""Every channel tag :func:`normalize` knows, besides ``conn:*``."""


def parse_connection(record: RawRecord, symbol: str) -> ConnectionEvent:
    """``conn:open`` / ``conn:close`` / ``conn:gap`` / ``conn:*``: the collector's own line."""
    return connection_event(record, symbol, EXCHANGE)


def _unwrapped(fn: Callable[..., Any]) -> _JsonParser:
    """The parser without its :func:`~moonstream.jobs.normalize.fields.parser` wrapper:
    :func:`normalize` turns a ``KeyError`` into :class:`MalformedMessage` itself, once."""
    inner: _JsonParser = getattr(fn, "__wrapped__", fn)
    return inner


_WS_OR_REST_BARE: dict[str, _JsonParser] = {channel: _unwrapped(fn) for channel, fn in _WS_OR_REST.items()}


def _dispatch(record: RawRecord, symbol: str, channel: str) -> list[Event]:
    if channel in _IGNORED:
        return []
    csv_parser = _CSV.get(channel)
    if csv_parser is not None:
        try:
            line = record.payload.decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedMessage("CSV line is not UTF-8") from None
        return [csv_parser(line, symbol, record.recv_ns)]
    if channel.startswith(_RATIO_PREFIX):
        kind = RATIO_ENDPOINTS.get(channel[len(_RATIO_PREFIX) :])
        if kind is not None:
            return list[Event](parse_long_short_ratio(_decode(record.payload), symbol, record.recv_ns, kind))
    elif channel.startswith("conn:"):
        return [parse_connection(record, symbol)]
    raise UnknownChannel(f"unknown channel {_short(channel)}")


_FAST_KINDS: dict[str, int] = (
    {}
    if native is None
    else {"ws:depth": 0, "ws:aggTrade": 1, "ws:bookTicker": 2, "ws:trade": 3, "ws:markPrice": 4}
)
"""Channels ``binance_event`` in moonstream/native_src/binance.c parses (its ``kind``: 0 depth update,
1 aggTrade, 2 bookTicker, 3 trade, 4 markPrice), when it is built."""
_binance_event = compiled("binance_event")
_normalize_run = compiled("normalize_run")
_FAST_CONTEXT = (
    *NUMBER_CACHES,
    NS_PER_MS,
    EXCHANGE,
    _new_depth_update,
    _new_trade,
    _new_book_ticker,
    _TAKER[True],
    _TAKER[False],
    _new_mark_price,
    *FINITE_CACHE,
    NUMBER_CACHE_LIMIT,
)
"""What ``binance_event`` reads (``CTX_*`` in moonstream/native_src/native.h, in this order)."""


def _parse(parser: _JsonParser, channel: str, msg: Any, symbol: str, recv_ns: int) -> Event:
    """``parser(msg, symbol, recv_ns)``; a well-formed depth update, aggTrade, bookTicker, trade or
    markPrice is parsed by the compiled ``binance_event`` when built (the same event:
    tests/unit/test_native.py)."""
    kind = _FAST_KINDS.get(channel)
    if kind is not None:
        event = _binance_event(kind, msg, symbol, _instrument_of(symbol), recv_ns, _FAST_CONTEXT)
        if event is not NotImplemented:
            return event
    return parser(msg, symbol, recv_ns)


RecordsRun = Callable[[list[RawRecord], int, set[Any], list[Event]], tuple[int, int]]


def compiled_run(symbol: str) -> RecordsRun | None:
    """The compiled loop of :func:`~moonstream.jobs.normalize.normalize_records` for this symbol's
    records of the channels ``binance_event`` parses (``normalize_run`` in moonstream/native_src/binance.c):
    ``run(records, start, seen, out) -> (next index, duplicates)``. None when it is not built."""
    run = _normalize_run
    if run is not_built:
        return None
    instrument = _instrument_of(symbol)

    def records_run(
        records: list[RawRecord], start: int, seen: set[Any], out: list[Event]
    ) -> tuple[int, int]:
        done: tuple[int, int] = run(
            records, start, seen, out, symbol, instrument, _FAST_KINDS, orjson.loads, _FAST_CONTEXT
        )
        return done

    return records_run


def normalize(record: RawRecord, symbol: str) -> list[Event]:
    """The events of one Binance USDT-M record for our ``symbol`` (``BTC``), in message order.

    Raises a :class:`~moonstream.jobs.normalize.NormalizeError` subclass carrying the record's
    exchange, channel and recv_ns: :class:`MalformedMessage`, :class:`InvalidValue`,
    :class:`SymbolMismatch` or :class:`UnknownChannel`. ``ws:kline`` is recorded but not used: ``[]``.
    """
    channel = record.channel
    try:
        parser = _WS_OR_REST_BARE.get(channel)
        if parser is None:
            return _dispatch(record, symbol, channel)
        try:
            return [_parse(parser, channel, _decode(record.payload), symbol, record.recv_ns)]
        except KeyError as exc:  # what the parsers' @_parser wrapper does
            raise _missing_field(exc) from None
    except NormalizeError as exc:
        raise exc.with_context(exchange=record.exchange, channel=channel, recv_ns=record.recv_ns) from None
