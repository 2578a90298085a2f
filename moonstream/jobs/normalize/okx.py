"""OKX v5 USDT swaps, public websocket and REST: raw records -> typed events (docs/normalizers.md).

Each ``parse_*`` function is pure: it takes one decoded WS message as received
(``{"arg":{"channel":"trades","instId":"BTC-USDT-SWAP"},"data":[...]}``) or REST response body,
our symbol (``BTC``) and the receive time, and returns events or raises a
:class:`~moonstream.jobs.normalize.NormalizeError` subclass with a short reason. :func:`normalize`
decodes a :class:`RawRecord`, dispatches on its channel tag (``ws:`` + OKX's channel name, see
:mod:`moonstream.collector.exchanges.okx`) and attaches the record's context to any error.

Sizes: OKX gives swap sizes in *contracts*. Every size in our events is in base units, converted
with the instrument's configured contract value (:func:`moonstream.jobs.instruments.contract_value`,
``ctVal``; BTC-USDT-SWAP 0.01 BTC): trade ``sz``, liquidation ``sz``, book level sizes and open
interest ``oi``. An instrument without a configured contract value is an
:class:`~moonstream.jobs.instruments.UnknownInstrument` error, never a 1.0 fallback.

Side conventions (OKX v5 docs, https://www.okx.com/docs-v5/en/#public-data-websocket):
- trades ``side`` is the "Trade side of taker": ``buy`` -> :attr:`TakerSide.BUY`.
- liquidation-orders ``details[].side`` is the "Order side" of the liquidation order and
  ``posSide`` the "Position mode side" (``long``/``short`` in hedge mode, ``net`` in net mode).
  ``posSide`` names the liquidated position when it is ``long``/``short``; in net mode the order
  side closes it: ``sell`` closes a LONG, ``buy`` a SHORT. A contradiction (``long`` with ``buy``)
  is an :class:`InvalidValue`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from decimal import Context, Decimal, InvalidOperation
from typing import Any

from moonstream.collector.rawfile import RawRecord
from moonstream.jobs import instruments
from moonstream.jobs.events import (
    BookDelta,
    BookSnapshot,
    Event,
    Level,
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
    integer as _int,
    ms as _ms,
    num as _num,
    obj as _obj,
    parser as _parser,
    price as _price,
    qty as _qty,
    short as _short,
)
from moonstream.symbols import Exchange, exchange_instrument

EXCHANGE: str = Exchange.OKX.value

_ZERO = Decimal(0)
_INF = Decimal("Infinity")
_EXACT = Context(prec=80)  # contracts × ctVal without rounding for any realistic size
_OI_TOLERANCE = Decimal("0.000001")  # relative; oi × ctVal vs the exchange's own oiCcy
_ONE = Decimal(1)
_RATIO_CONTEXT = Context(prec=28)  # shares derived from the ratio: the same digits in every thread

RATIO_CHANNEL = "rest:ratio:longShortAccountRatio"
"""``GET /api/v5/rubik/stat/contracts/long-short-account-ratio-contract`` (the collector's tag,
:mod:`moonstream.collector.exchanges.okx`)."""

BOOK_DEPTHS: dict[str, int] = {"books": 400, "books5": 5}
"""OKX book channel -> number of levels it maintains (``BookSnapshot.depth``)."""

_TAKER = {"buy": TakerSide.BUY, "sell": TakerSide.SELL}  # key: trades side, "Trade side of taker"
_POSITION = {"long": LiquidatedSide.LONG, "short": LiquidatedSide.SHORT}  # key: posSide (hedge mode)
_CLOSED_BY = {"sell": LiquidatedSide.LONG, "buy": LiquidatedSide.SHORT}  # key: liquidation order side


def _instrument(symbol: str) -> str:
    return exchange_instrument(Exchange.OKX, symbol)


def _contracts(value: object, name: str, ct_val: Decimal, *, allow_zero: bool = True) -> Decimal:
    """A size in contracts (finite, >= 0, > 0 unless ``allow_zero``) in base units: ``× ctVal``."""
    return _EXACT.multiply(_qty(value, name, allow_zero=allow_zero), ct_val)


def _message(msg: object, channel: str, symbol: str) -> list[Any]:
    """The ``data`` rows of a push message, its ``arg`` checked: channel, and ``instId`` if any."""
    data = _obj(msg, "message")
    if "event" in data:
        raise MalformedMessage(f"event {_short(data['event'])} message on a data channel")
    arg = _obj(data["arg"], "arg")
    if arg.get("channel") != channel:
        raise MalformedMessage(f"arg.channel {_short(arg.get('channel'))}, expected {channel!r}")
    if "instId" in arg:
        _check_instrument(arg["instId"], symbol)
    rows = data["data"]
    if type(rows) is not list:
        raise MalformedMessage("data is not a list")
    return rows


def _check_instrument(value: object, symbol: str) -> None:
    if value != _instrument(symbol):
        raise SymbolMismatch(f"instId {_short(value)}, expected {_instrument(symbol)!r}")


def _row(raw: object, symbol: str) -> dict[str, Any]:
    row = _obj(raw, "row")
    if "instId" in row:
        _check_instrument(row["instId"], symbol)
    return row


def _taker(value: object) -> TakerSide:
    side = _TAKER.get(value) if type(value) is str else None
    if side is None:
        raise InvalidValue(f"side {_short(value)} is neither buy nor sell")
    return side


def liquidated_side(order_side: object, pos_side: object) -> LiquidatedSide:
    """The liquidated position of an OKX liquidation detail (``side``, ``posSide``).

    ``posSide`` ``long``/``short`` (hedge mode) names it; ``net`` (or empty) leaves it to the order
    side, which closes it: ``sell`` -> LONG, ``buy`` -> SHORT. Both present and contradicting each
    other (``long`` with ``buy``) is an :class:`InvalidValue`.
    """
    closed = _CLOSED_BY.get(order_side) if type(order_side) is str else None
    if closed is None:
        raise InvalidValue(f"side {_short(order_side)} is neither buy nor sell")
    if pos_side in ("net", "", None):
        return closed
    position = _POSITION.get(pos_side) if type(pos_side) is str else None
    if position is None:
        raise InvalidValue(f"posSide {_short(pos_side)} is not long/short/net")
    if position is not closed:
        raise InvalidValue(f"posSide {pos_side} contradicts order side {order_side}")
    return position


# --- websocket channels --------------------------------------------------------------------------


@_parser
def parse_trades(msg: Any, symbol: str, recv_ns: int) -> list[Trade]:
    """``trades``: one aggregated :class:`Trade` per row. Sample from OKX's v5 docs ("Trades
    channel"; the docs' instrument is ``BTC-USDT``, shown here as the swap)::

        {"arg":{"channel":"trades","instId":"BTC-USDT-SWAP"},"data":[{"instId":"BTC-USDT-SWAP",
         "tradeId":"130639474","px":"42219.9","sz":"0.12060306","side":"buy","ts":"1630048897897",
         "count":"3","source":"0","seqId":1234}]}

    OKX sends "one message per taker order, filled price, source"; ``tradeId`` is "the last trade
    ID in the trades aggregation" and ``count`` the number of trades, so ``aggregated=True``,
    ``trade_id = last_trade_id = tradeId`` and ``first_trade_id = tradeId - count + 1`` (None when
    ``count`` is absent). ``side`` is the taker side. ``qty`` is ``sz`` (contracts) × ctVal.
    """
    rows = _message(msg, "trades", symbol)
    ct_val = instruments.contract_value(_instrument(symbol))
    out: list[Trade] = []
    for raw in rows:
        row = _row(raw, symbol)
        last = _int(row["tradeId"], "tradeId")
        first: int | None = None
        if row.get("count") is not None:
            count = _int(row["count"], "count")
            if count < 1 or count > last + 1:
                raise InvalidValue(f"count={count} does not fit tradeId={last}")
            first = last - count + 1
        out.append(
            Trade(
                exchange=EXCHANGE,
                symbol=symbol,
                recv_ns=recv_ns,
                ts_ns=_ms(row["ts"], "ts"),
                trade_id=last,
                price=_price(row["px"], "px"),
                qty=_contracts(row["sz"], "sz", ct_val, allow_zero=False),
                taker_side=_taker(row["side"]),
                aggregated=True,
                first_trade_id=first,
                last_trade_id=last,
                insurance_fund=False,
            )
        )
    return out


@_parser
def parse_liquidation_orders(msg: Any, symbol: str, recv_ns: int) -> list[Liquidation]:
    """``liquidation-orders`` (subscribed per ``instType``, venue-wide): one :class:`Liquidation`
    per detail of the rows for our instrument. Sample from OKX's v5 docs ("Liquidation orders
    channel"; the docs' instrument is ``IOST-USDT-SWAP``, shown here as BTC)::

        {"arg":{"channel":"liquidation-orders","instType":"SWAP"},"data":[{"details":[{
         "bkLoss":"0","bkPx":"0.007831","ccy":"","posSide":"short","side":"buy","sz":"13",
         "ts":"1692266434010"}],"instFamily":"BTC-USDT","instId":"BTC-USDT-SWAP",
         "instType":"SWAP","uly":"BTC-USDT"}]}

    The side comes from :func:`liquidated_side`. ``price`` is ``bkPx`` (bankruptcy price), ``sz``
    (contracts) × ctVal is ``qty = filled_qty = last_filled_qty``, no average price, status
    ``FILLED``; ``ts_ns`` is the detail's ``ts``. Rows for other instruments are skipped (the
    channel is venue-wide); a message without a row for ours is a :class:`SymbolMismatch`.
    """
    rows = _message(msg, "liquidation-orders", symbol)
    ours = _instrument(symbol)
    out: list[Liquidation] = []
    matched = False
    for raw in rows:
        row = _obj(raw, "row")
        if row["instId"] != ours:
            continue
        matched = True
        ct_val = instruments.contract_value(ours)
        details = row["details"]
        if type(details) is not list:
            raise MalformedMessage("details is not a list")
        for raw_detail in details:
            detail = _obj(raw_detail, "detail")
            size = _contracts(detail["sz"], "sz", ct_val, allow_zero=False)
            out.append(
                Liquidation(
                    exchange=EXCHANGE,
                    symbol=symbol,
                    recv_ns=recv_ns,
                    ts_ns=_ms(detail["ts"], "ts"),
                    side=liquidated_side(detail["side"], detail.get("posSide")),
                    price=_price(detail["bkPx"], "bkPx"),
                    avg_price=None,
                    qty=size,
                    filled_qty=size,
                    last_filled_qty=size,
                    status="FILLED",
                )
            )
    if not matched:
        raise SymbolMismatch(f"no liquidation row for {ours!r}")
    return out


@_parser
def parse_mark_price(msg: Any, symbol: str, recv_ns: int) -> list[MarkPriceUpdate]:
    """``mark-price``: one :class:`MarkPriceUpdate` per row, mark price only. Sample from OKX's v5
    docs ("Mark price channel"; the docs' instrument is ``LTC-USD-190628``, shown as our swap)::

        {"arg":{"channel":"mark-price","instId":"BTC-USDT-SWAP"},"data":[{"instType":"SWAP",
         "instId":"BTC-USDT-SWAP","markPx":"0.1","ts":"1597026383085"}]}

    ``index_price``, ``funding_rate`` and ``next_funding_ns`` are None (other OKX channels).
    """
    rows = _message(msg, "mark-price", symbol)
    out: list[MarkPriceUpdate] = []
    for raw in rows:
        row = _row(raw, symbol)
        out.append(
            MarkPriceUpdate(
                exchange=EXCHANGE,
                symbol=symbol,
                recv_ns=recv_ns,
                ts_ns=_ms(row["ts"], "ts"),
                mark_price=_price(row["markPx"], "markPx"),
                index_price=None,
                funding_rate=None,
                next_funding_ns=None,
            )
        )
    return out


def _open_interest(row: dict[str, Any], symbol: str, recv_ns: int) -> OpenInterest:
    ct_val = instruments.contract_value(_instrument(symbol))
    base = _contracts(row["oi"], "oi", ct_val)
    if row.get("oiCcy") not in (None, ""):
        coin = _qty(row["oiCcy"], "oiCcy")
        if abs(base - coin) > _OI_TOLERANCE * max(base, coin):
            raise InvalidValue(f"oi x ctVal={base} disagrees with oiCcy={_short(row['oiCcy'])}")
    return OpenInterest(
        exchange=EXCHANGE,
        symbol=symbol,
        recv_ns=recv_ns,
        ts_ns=_ms(row["ts"], "ts"),
        open_interest_base=base,
    )


@_parser
def parse_open_interest(msg: Any, symbol: str, recv_ns: int) -> list[OpenInterest]:
    """``open-interest``: one :class:`OpenInterest` per row. Sample from OKX's v5 docs ("Open
    interest channel", verbatim)::

        {"arg":{"channel":"open-interest","instId":"BTC-USDT-SWAP"},"data":[{
         "instId":"BTC-USDT-SWAP","instType":"SWAP","oi":"2216113.01000000309",
         "oiCcy":"22161.1301000000309","oiUsd":"1939251795.54769270396321","ts":"1743041250440"}]}

    ``open_interest_base`` is ``oi`` ("in units of contracts") × ctVal, checked against OKX's own
    ``oiCcy`` ("in currency units, like BTC") when present: a disagreement beyond 1e-6 relative
    means a wrong configured contract value and is an :class:`InvalidValue`. ``oiUsd`` is not
    carried (our OI is base units × price).
    """
    rows = _message(msg, "open-interest", symbol)
    return [_open_interest(_row(raw, symbol), symbol, recv_ns) for raw in rows]


def _book_levels(raw: object, name: str, ct_val: Decimal) -> tuple[Level, ...]:
    """``[["price", "contracts", "0", "orders"], ...]`` -> ((price, base units), ...)."""
    if type(raw) is not list:
        raise MalformedMessage(f"{name} is not a list")
    out: list[Level] = []
    append = out.append
    multiply = _EXACT.multiply
    try:
        for level in raw:
            if type(level) is not list or len(level) < 2:
                raise MalformedMessage(f"{name}: a level is not a [price, size, ...] list")
            price = _num(level[0], name)
            size = _num(level[1], name)
            if not (_ZERO < price < _INF and _ZERO <= size < _INF):  # NaN raises InvalidOperation
                raise InvalidValue(f"{name} level [{_short(level[0])}, {_short(level[1])}] out of range")
            append((price, multiply(size, ct_val)))
    except InvalidOperation:
        raise InvalidValue(f"{name}: a level holds a non-number") from None
    return tuple(out)


@_parser
def parse_books(msg: Any, symbol: str, recv_ns: int, channel: str) -> list[BookSnapshot | BookDelta]:
    """``books`` (``action`` ``snapshot``/``update``) and ``books5`` (every push a full 5-level
    book). Sample from OKX's v5 docs ("Order book channel"; the docs' instrument is ``BTC-USDT``,
    shown as the swap; 8 levels a side cut to 2)::

        {"arg":{"channel":"books","instId":"BTC-USDT-SWAP"},"action":"snapshot","data":[{
         "asks":[["8476.98","415","0","13"],["8477","7","0","2"]],
         "bids":[["8476.97","256","0","12"],["8475.55","101","0","1"]],
         "ts":"1597026383085","checksum":-855196043,"prevSeqId":-1,"seqId":123456}]}

    ``update_id`` is ``seqId``; a delta's ``prev_update_id`` is ``prevSeqId`` (a snapshot's is -1
    and dropped); ``checksum`` is carried as sent (a signed 32-bit integer, None if absent);
    ``depth`` is 400 for ``books``, 5 for ``books5``. Level sizes (contracts) × ctVal, with
    ``contract_value`` set to ctVal so contracts = ``qty / contract_value`` exactly. An update
    with ``prevSeqId == seqId`` and no levels is OKX's keep-alive and passes through unchanged.
    ``bid_texts``/``ask_texts`` keep every level's ``(price, size)`` strings exactly as sent (size
    in contracts): the order-book engine computes OKX's checksum on them.
    """

    def _texts(raw: list[Any]) -> tuple[tuple[str, str], ...] | None:
        """The levels' ``(price, size)`` strings as sent (validated by ``_book_levels``), or None
        when one of them is not a JSON string."""
        texts = tuple((level[0], level[1]) for level in raw)
        return texts if all(type(p) is str and type(q) is str for p, q in texts) else None

    rows = _message(msg, channel, symbol)
    depth = BOOK_DEPTHS[channel]
    action = msg.get("action", "snapshot")
    if action not in ("snapshot", "update") or (channel == "books5" and action != "snapshot"):
        raise MalformedMessage(f"action {_short(action)} on {channel}")
    ct_val = instruments.contract_value(_instrument(symbol))
    out: list[BookSnapshot | BookDelta] = []
    for raw in rows:
        row = _row(raw, symbol)
        checksum = row.get("checksum")
        if checksum is not None and type(checksum) is not int:
            raise MalformedMessage(f"checksum has JSON type {type(checksum).__name__}")
        ts_ns = _ms(row["ts"], "ts")
        update_id = _int(row["seqId"], "seqId")
        bids = _book_levels(row["bids"], "bids", ct_val)
        asks = _book_levels(row["asks"], "asks", ct_val)
        # OKX's checksum is computed on its own strings: keep them when they are strings.
        bid_texts = _texts(row["bids"])
        ask_texts = _texts(row["asks"])
        if action == "snapshot":
            out.append(
                BookSnapshot(
                    exchange=EXCHANGE,
                    symbol=symbol,
                    recv_ns=recv_ns,
                    ts_ns=ts_ns,
                    depth=depth,
                    update_id=update_id,
                    seq=None,
                    checksum=checksum,
                    contract_value=ct_val,
                    bids=bids,
                    asks=asks,
                    bid_texts=bid_texts,
                    ask_texts=ask_texts,
                )
            )
        else:
            out.append(
                BookDelta(
                    exchange=EXCHANGE,
                    symbol=symbol,
                    recv_ns=recv_ns,
                    ts_ns=ts_ns,
                    depth=depth,
                    update_id=update_id,
                    prev_update_id=_int(row["prevSeqId"], "prevSeqId"),
                    seq=None,
                    checksum=checksum,
                    contract_value=ct_val,
                    bids=bids,
                    asks=asks,
                    bid_texts=bid_texts,
                    ask_texts=ask_texts,
                )
            )
    return out


def parse_event(msg: Any) -> list[Event]:
    """``ws:event``: subscription acknowledgements (``[]``); ``"event":"error"`` is a
    :class:`MalformedMessage` naming OKX's error code, so a refused subscription is counted."""
    data = _obj(msg, "message")
    if data.get("event") == "error":
        raise MalformedMessage(f"exchange error event code={_short(data.get('code'))}")
    return []


# --- REST polls ----------------------------------------------------------------------------------


@_parser
def parse_rest_open_interest(msg: Any, symbol: str, recv_ns: int) -> list[OpenInterest]:
    """``GET /api/v5/public/open-interest`` (``rest:oi``): ``{"code":"0","msg":"","data":[row]}``
    with the rows of the ``open-interest`` channel; a ``code`` other than ``"0"`` is an error body.
    """
    data = _obj(msg, "message")
    if data.get("code") != "0":
        raise MalformedMessage(f"exchange error response code={_short(data.get('code'))}")
    rows = data["data"]
    if type(rows) is not list:
        raise MalformedMessage("data is not a list")
    return [_open_interest(_row(raw, symbol), symbol, recv_ns) for raw in rows]


@_parser
def parse_contract_long_short_ratio(msg: Any, symbol: str, recv_ns: int) -> list[LongShortRatio]:
    """``GET /api/v5/rubik/stat/contracts/long-short-account-ratio-contract?instId=...``
    (``rest:ratio:longShortAccountRatio``): one :class:`LongShortRatio` (``GLOBAL_ACCOUNT``) per
    row. Sample from OKX's v5 docs ("Get contract long/short ratio"; its ``//`` comments and
    trailing comma removed)::

        {"code":"0","msg":"","data":[["1701417600000","1.1739"],["1701417600000","0.1236"]]}

    Rows are ``[ts, longShortAcctRatio]``, "the ratio of users with net long vs net short
    positions" of all traders of the contract (the response names no instrument: the poll's
    ``instId`` is our symbol's). OKX sends only the ratio ``r``; every counted account is net long
    or net short, so the shares are derived: ``long_share = r / (1 + r)``, ``short_share =
    1 / (1 + r)`` (28 significant digits). ``ts_ns`` is ``ts``. A ``code`` other than ``"0"`` is an
    error body (:class:`MalformedMessage`).
    """
    data = _obj(msg, "message")
    if data.get("code") != "0":
        raise MalformedMessage(f"exchange error response code={_short(data.get('code'))}")
    rows = data["data"]
    if type(rows) is not list:
        raise MalformedMessage("data is not a list")
    out: list[LongShortRatio] = []
    for row in rows:
        if type(row) is not list or len(row) < 2:
            raise MalformedMessage("a row is not a [ts, ratio] list")
        ratio = _qty(row[1], "longShortAcctRatio")
        total = _ONE + ratio
        out.append(
            LongShortRatio(
                exchange=EXCHANGE,
                symbol=symbol,
                recv_ns=recv_ns,
                ts_ns=_ms(row[0], "ts"),
                kind=RatioKind.GLOBAL_ACCOUNT,
                long_short_ratio=ratio,
                long_share=_RATIO_CONTEXT.divide(ratio, total),
                short_share=_RATIO_CONTEXT.divide(_ONE, total),
            )
        )
    return out


# --- dispatch ------------------------------------------------------------------------------------

_JsonParser = Callable[[Any, str, int], Sequence[Event]]


def _book_parser(channel: str) -> _JsonParser:
    return lambda msg, symbol, recv_ns: parse_books(msg, symbol, recv_ns, channel)


_PARSERS: dict[str, _JsonParser] = {
    "ws:trades": parse_trades,
    "ws:liquidation-orders": parse_liquidation_orders,
    "ws:mark-price": parse_mark_price,
    "ws:open-interest": parse_open_interest,
    "ws:books": _book_parser("books"),
    "ws:books5": _book_parser("books5"),
    "rest:oi": parse_rest_open_interest,
    RATIO_CHANNEL: parse_contract_long_short_ratio,
}
# tickers: last price and best bid/ask with no sequence id, not used; pong: the collector's keepalive reply.
_IGNORED = frozenset({"ws:tickers", "ws:pong"})

CHANNELS: frozenset[str] = frozenset({*_PARSERS, *_IGNORED, "ws:event"})
"""Every channel tag :func:`normalize` knows, besides ``conn:*``."""


def _dispatch(record: RawRecord, symbol: str) -> list[Event]:
    channel = record.channel
    parser = _PARSERS.get(channel)
    if parser is not None:
        return list(parser(_decode(record.payload), symbol, record.recv_ns))
    if channel in _IGNORED:
        return []
    if channel == "ws:event":
        return parse_event(_decode(record.payload))
    if channel.startswith("conn:"):
        return [connection_event(record, symbol, EXCHANGE)]
    raise UnknownChannel(f"unknown channel {_short(channel)}")


def normalize(record: RawRecord, symbol: str) -> list[Event]:
    """The events of one OKX v5 swap record for our ``symbol`` (``BTC``), in message order.

    Raises a :class:`~moonstream.jobs.normalize.NormalizeError` subclass carrying the record's
    exchange, channel and recv_ns: :class:`MalformedMessage`, :class:`InvalidValue` (its subclass
    :class:`~moonstream.jobs.instruments.UnknownInstrument` for an instrument without a configured
    contract value), :class:`SymbolMismatch` or :class:`UnknownChannel`. ``ws:tickers`` is recorded
    but not used: ``[]``.
    """
    try:
        return _dispatch(record, symbol)
    except NormalizeError as exc:
        raise exc.with_context(
            exchange=record.exchange, channel=record.channel, recv_ns=record.recv_ns
        ) from None
