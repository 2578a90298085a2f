"""Typed market events: what the normalizers produce and the engines consume.

These are *our* shapes, kept apart from any exchange's wire format (docs/normalizers.md):

- prices and sizes are exact :class:`decimal.Decimal` values parsed from the exchange's strings;
- every timestamp is an integer count of nanoseconds since the Unix epoch, UTC (``*_ns``);
- ``recv_ns`` is the local receive time recorded by the collector; ``ts_ns`` is the exchange's time;
- ``symbol`` is *our* symbol (``BTC``), never the exchange's instrument name (``BTCUSDT``);
- sides are enums whose meaning does not depend on the exchange.

All classes are frozen and slotted. :func:`dedup_key` gives the identity of an event by exchange ids,
so a job that merges two collectors' copies of the same minute can drop duplicates.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

Level = tuple[Decimal, Decimal]
"""One order-book level: ``(price, quantity)``; quantity 0 deletes the level in a diff."""


class TakerSide(enum.StrEnum):
    """The side of the aggressor (taker) of a trade."""

    BUY = "buy"
    SELL = "sell"


class LiquidatedSide(enum.StrEnum):
    """The position that was force-closed: a LONG is closed by a SELL order, a SHORT by a BUY order."""

    LONG = "long"
    SHORT = "short"


class RatioKind(enum.StrEnum):
    """Which long/short ratio series a :class:`LongShortRatio` row belongs to."""

    TOP_ACCOUNT = "top_account"
    TOP_POSITION = "top_position"
    GLOBAL_ACCOUNT = "global_account"


@dataclass(frozen=True, slots=True)
class Trade:
    """One trade print (or one aggregated trade when ``aggregated``).

    ``trade_id`` is the exchange's trade id, or the aggregate-trade id when ``aggregated``; then
    ``first_trade_id``/``last_trade_id`` give the range of trades it covers (None when unknown).
    ``insurance_fund`` marks a trade executed by the insurance fund (Binance ``X = INSURANCE_FUND``).
    """

    exchange: str
    symbol: str
    recv_ns: int
    ts_ns: int
    trade_id: int
    price: Decimal
    qty: Decimal
    taker_side: TakerSide
    aggregated: bool
    first_trade_id: int | None
    last_trade_id: int | None
    insurance_fund: bool

    @property
    def notional_usd(self) -> Decimal:
        """Quote (USDT) value of the trade: ``price × qty``."""
        return self.price * self.qty


@dataclass(frozen=True, slots=True)
class Liquidation:
    """A forced liquidation order as published by the exchange.

    ``price`` is the order's (bankruptcy) limit price, ``avg_price`` the average fill price when the
    exchange gives one, ``qty`` the original quantity, ``filled_qty`` the accumulated filled quantity
    and ``last_filled_qty`` the quantity of the last fill. ``status`` is the exchange's order status
    text (``FILLED``, ``PARTIALLY_FILLED``, ...).
    """

    exchange: str
    symbol: str
    recv_ns: int
    ts_ns: int
    side: LiquidatedSide
    price: Decimal
    avg_price: Decimal | None
    qty: Decimal
    filled_qty: Decimal
    last_filled_qty: Decimal
    status: str

    @property
    def notional_usd(self) -> Decimal:
        """Filled value in USD(T): ``filled_qty × avg_price`` (or ``× price`` without a usable avg)."""
        avg = self.avg_price
        unit = avg if avg is not None and avg > 0 else self.price
        return self.filled_qty * unit


@dataclass(frozen=True, slots=True)
class DepthUpdate:
    """An order-book diff. ``ts_ns`` is the event time (Binance ``E``), ``tx_ns`` the transaction
    time (``T``); ``first_update_id``/``last_update_id``/``prev_last_update_id`` are ``U``/``u``/``pu``.
    """

    exchange: str
    symbol: str
    recv_ns: int
    ts_ns: int
    tx_ns: int
    first_update_id: int
    last_update_id: int
    prev_last_update_id: int
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]


@dataclass(frozen=True, slots=True)
class DepthSnapshot:
    """A full order-book snapshot (REST). ``ts_ns`` is the exchange's time when the response carries
    one (Binance ``E``, else ``T``); older snapshots carry neither and ``ts_ns`` falls back to
    ``recv_ns``.
    """

    exchange: str
    symbol: str
    recv_ns: int
    ts_ns: int
    last_update_id: int
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]


@dataclass(frozen=True, slots=True)
class BookTicker:
    """Best bid and ask. ``update_id`` is the order-book update id the quote reflects (Binance ``u``)."""

    exchange: str
    symbol: str
    recv_ns: int
    ts_ns: int
    update_id: int
    bid_price: Decimal
    bid_qty: Decimal
    ask_price: Decimal
    ask_qty: Decimal


@dataclass(frozen=True, slots=True)
class MarkPrice:
    """Mark and index price, the current funding rate (a fraction: 0.0001 = 0.01 %) and the next
    funding time."""

    exchange: str
    symbol: str
    recv_ns: int
    ts_ns: int
    mark_price: Decimal
    index_price: Decimal
    funding_rate: Decimal
    next_funding_ns: int


@dataclass(frozen=True, slots=True)
class OpenInterest:
    """Open interest in base-asset units (contracts of 1 base unit on USDT-M)."""

    exchange: str
    symbol: str
    recv_ns: int
    ts_ns: int
    open_interest_base: Decimal


@dataclass(frozen=True, slots=True)
class LongShortRatio:
    """One row of a long/short ratio series. ``long_share``/``short_share`` are fractions of 1."""

    exchange: str
    symbol: str
    recv_ns: int
    ts_ns: int
    kind: RatioKind
    long_short_ratio: Decimal
    long_share: Decimal
    short_share: Decimal


@dataclass(frozen=True, slots=True)
class MarkPriceUpdate:
    """Mark price, index price and funding as far as one message carries them (Bybit, OKX).

    Unlike :class:`MarkPrice` (Binance's ``markPriceUpdate`` always carries all four), an exchange
    may push only what changed (Bybit ``tickers`` deltas) or only the mark price (OKX
    ``mark-price``): a field is ``None`` when the message did not carry it, i.e. it is unchanged,
    never zero. ``funding_rate`` is a fraction (0.0001 = 0.01 %).
    """

    exchange: str
    symbol: str
    recv_ns: int
    ts_ns: int
    mark_price: Decimal | None
    index_price: Decimal | None
    funding_rate: Decimal | None
    next_funding_ns: int | None


@dataclass(frozen=True, slots=True)
class BookSnapshot:
    """A full order book of a websocket stream (Bybit ``orderbook.N`` snapshot, OKX ``books``
    snapshot and every ``books5`` push): replaces the local book of that ``depth``.

    Exchange-neutral sequencing: ``update_id`` is the exchange's book sequence (Bybit ``u``, OKX
    ``seqId``); ``seq`` a cross sequence when the exchange has one (Bybit ``seq``, else None);
    ``checksum`` the exchange's book checksum when it sends one (OKX, else None). ``depth`` is the
    number of levels the stream maintains (Bybit 1/50/200/500, OKX 400 for ``books``, 5 for
    ``books5``): books of different depths are different books. Sizes are base units;
    ``contract_value`` is the factor applied to the exchange's sizes (OKX ``ctVal``, 1 on Bybit),
    so the exchange's own size is ``qty / contract_value`` exactly (e.g. for a checksum).
    ``bid_texts``/``ask_texts`` are, when the normalizer keeps them (OKX), the exchange's own
    ``(price, size)`` strings of each level exactly as sent (size in contracts), parallel to
    ``bids``/``asks``: OKX's checksum is computed on those strings. Not part of equality.
    """

    exchange: str
    symbol: str
    recv_ns: int
    ts_ns: int
    depth: int
    update_id: int
    seq: int | None
    checksum: int | None
    contract_value: Decimal
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]
    bid_texts: tuple[tuple[str, str], ...] | None = field(default=None, compare=False)
    ask_texts: tuple[tuple[str, str], ...] | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class BookDelta:
    """An incremental update to a :class:`BookSnapshot` of the same ``depth`` (Bybit ``delta``,
    OKX ``books`` ``update``). A level with quantity 0 deletes that price.

    ``prev_update_id`` is the ``update_id`` this delta follows when the exchange states it (OKX
    ``prevSeqId``); Bybit does not (None), its ``u`` is a sequence. Other fields as in
    :class:`BookSnapshot` (including the optional ``bid_texts``/``ask_texts``).
    """

    exchange: str
    symbol: str
    recv_ns: int
    ts_ns: int
    depth: int
    update_id: int
    prev_update_id: int | None
    seq: int | None
    checksum: int | None
    contract_value: Decimal
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]
    bid_texts: tuple[tuple[str, str], ...] | None = field(default=None, compare=False)
    ask_texts: tuple[tuple[str, str], ...] | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class ConnectionEvent:
    """A collector connection event (``conn:open``, ``conn:close``, ``conn:gap``, ...).

    ``kind`` is the text after ``conn:``; ``detail`` is the collector's JSON object (or
    ``{"text": ...}`` for a non-JSON payload); ``collector`` is the recording collector's id.
    Not hashable (``detail`` is a dict); use :func:`dedup_key` for identity.
    """

    exchange: str
    symbol: str
    recv_ns: int
    kind: str
    detail: dict[str, Any] = field(default_factory=dict)
    collector: str = ""


Event = (
    Trade
    | Liquidation
    | DepthUpdate
    | DepthSnapshot
    | BookTicker
    | MarkPrice
    | OpenInterest
    | LongShortRatio
    | ConnectionEvent
    | MarkPriceUpdate
    | BookSnapshot
    | BookDelta
)
"""Every event type a normalizer may return."""

EVENT_TYPES: tuple[type, ...] = (
    Trade,
    Liquidation,
    DepthUpdate,
    DepthSnapshot,
    BookTicker,
    MarkPrice,
    OpenInterest,
    LongShortRatio,
    ConnectionEvent,
    MarkPriceUpdate,
    BookSnapshot,
    BookDelta,
)


def types_other_than(*used: type) -> frozenset[type]:
    """The event types that are none of ``used``: a loop over a minute's events skips those (most
    of them, the book updates) with one set lookup on ``type(event)`` before its isinstance tests."""
    return frozenset(t for t in EVENT_TYPES if not issubclass(t, used))


def dedup_key(event: Event) -> tuple[Any, ...]:
    """The identity of an event by exchange ids: equal keys mean the same exchange message.

    Keys start with the event type name, the exchange and the symbol, then:
    trades: (aggregated, trade id); depth diffs: (U, u); snapshots: lastUpdateId; book tickers: u;
    mark prices: event time; open interest: exchange time; ratios: (kind, time);
    liquidations: (trade time, side, price, qty, filled qty); connection events: (collector, kind,
    recv time), so every collector's disconnects are kept; book deltas: (depth, prev update id,
    update id, seq); book snapshots: (depth, update id, seq); mark price updates: exchange time.
    """
    # Exact types first, the three that make up nearly every minute (the isinstance() chain below
    # gives the same keys, for subclasses too).
    if type(event) is DepthUpdate:
        return ("DepthUpdate", event.exchange, event.symbol, event.first_update_id, event.last_update_id)
    if type(event) is BookTicker:
        return ("BookTicker", event.exchange, event.symbol, event.update_id)
    if type(event) is Trade:
        return ("Trade", event.exchange, event.symbol, event.aggregated, event.trade_id)
    if isinstance(event, DepthUpdate):
        return ("DepthUpdate", event.exchange, event.symbol, event.first_update_id, event.last_update_id)
    if isinstance(event, BookTicker):
        return ("BookTicker", event.exchange, event.symbol, event.update_id)
    if isinstance(event, Trade):
        return ("Trade", event.exchange, event.symbol, event.aggregated, event.trade_id)
    if isinstance(event, Liquidation):
        return (
            "Liquidation",
            event.exchange,
            event.symbol,
            event.ts_ns,
            event.side,
            event.price,
            event.qty,
            event.filled_qty,
        )
    if isinstance(event, DepthSnapshot):
        return ("DepthSnapshot", event.exchange, event.symbol, event.last_update_id)
    if isinstance(event, MarkPrice):
        return ("MarkPrice", event.exchange, event.symbol, event.ts_ns)
    if isinstance(event, OpenInterest):
        return ("OpenInterest", event.exchange, event.symbol, event.ts_ns)
    if isinstance(event, LongShortRatio):
        return ("LongShortRatio", event.exchange, event.symbol, event.kind, event.ts_ns)
    if isinstance(event, ConnectionEvent):
        return ("ConnectionEvent", event.exchange, event.symbol, event.collector, event.kind, event.recv_ns)
    if isinstance(event, BookDelta):
        return (
            "BookDelta",
            event.exchange,
            event.symbol,
            event.depth,
            event.prev_update_id,
            event.update_id,
            event.seq,
        )
    if isinstance(event, BookSnapshot):
        return ("BookSnapshot", event.exchange, event.symbol, event.depth, event.update_id, event.seq)
    if isinstance(event, MarkPriceUpdate):
        return ("MarkPriceUpdate", event.exchange, event.symbol, event.ts_ns)
    raise TypeError(f"not an event: {type(event).__name__}")
