"""The ``market`` engine: one minute's price action, taker flow and liquidations per exchange.

Pure: (state, the minute's events) -> (state, document body). No I/O, no clock. A minute's events are
the ones *received* in that minute (the raw minute files are keyed by receive time), so a live run
and a backfill see exactly the same set.

Trade source per exchange and minute: the individual ``trade`` stream when the minute has any such
trade, otherwise aggregated trades (``aggTrade``), never both (they describe the same fills).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from moonstream.jobs.events import Event, LiquidatedSide, Liquidation, TakerSide, Trade, types_other_than

ENGINE_VERSION = "market-1"

_ZERO = Decimal(0)
# Enum members and iteration once: enum class attribute lookups are slow (EnumType.__getattr__).
_BUY, _SELL = TakerSide.BUY, TakerSide.SELL
_TAKER_SIDES = tuple(TakerSide)
_LIQ_SIDES = tuple(LiquidatedSide)
_IGNORED = types_other_than(Trade, Liquidation)


def decimal_text(value: Decimal) -> str:
    """Exact, plain (no exponent) decimal text with trailing zeros removed: ``63943.9``, ``0``.

    That is ``format(value, "f")`` stripped; ``str(value)`` is the same text, and cheaper, for a
    finite decimal it writes without an exponent (the usual price or size)."""
    text = str(value)
    if "E" in text or "N" in text or "n" in text:  # exponent form, NaN or Infinity
        if value == 0:
            return "0"
        text = format(value, "f")
    elif not value:  # a finite zero ("0.00", "-0")
        return "0"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


@dataclass
class _Flow:
    open: Decimal | None = None
    high: Decimal | None = None
    low: Decimal | None = None
    close: Decimal | None = None
    trades: int = 0
    base: dict[TakerSide, Decimal] = field(default_factory=lambda: {s: _ZERO for s in _TAKER_SIDES})
    quote: dict[TakerSide, Decimal] = field(default_factory=lambda: {s: _ZERO for s in _TAKER_SIDES})

    def add_all(self, trades: Sequence[Trade]) -> None:
        """Add trades in order (as one ``add`` per trade would: the first max/min wins ties)."""
        if not trades:
            return
        prices = [t.price for t in trades]
        if self.open is None:
            self.open, self.high, self.low = prices[0], max(prices), min(prices)
        else:
            assert self.high is not None and self.low is not None
            self.high, self.low = max(self.high, *prices), min(self.low, *prices)
        self.close = prices[-1]
        self.trades += len(trades)
        base, quote = self.base, self.quote
        for trade in trades:
            side, qty = trade.taker_side, trade.qty
            base[side] += qty
            quote[side] += qty * trade.price

    def document(self, source: str | None) -> dict[str, Any]:
        ohlc = None
        if self.open is not None:
            assert self.high is not None and self.low is not None and self.close is not None
            ohlc = {
                k: decimal_text(v)
                for k, v in (
                    ("open", self.open),
                    ("high", self.high),
                    ("low", self.low),
                    ("close", self.close),
                )
            }
        return {
            "trade_source": source,
            "ohlc": ohlc,
            "trade_count": self.trades,
            "taker_buy_base": decimal_text(self.base[_BUY]),
            "taker_sell_base": decimal_text(self.base[_SELL]),
            "taker_buy_quote": decimal_text(self.quote[_BUY]),
            "taker_sell_quote": decimal_text(self.quote[_SELL]),
        }


@dataclass
class _LiqTotals:
    count: int = 0
    qty: Decimal = _ZERO
    notional_usd: Decimal = _ZERO

    def add(self, liq: Liquidation) -> None:
        self.count += 1
        self.qty += liq.filled_qty
        self.notional_usd += liq.notional_usd

    def document(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "qty": decimal_text(self.qty),
            "notional_usd": decimal_text(self.notional_usd),
        }


def _pick_trades(trades: list[Trade]) -> tuple[str | None, list[Trade]]:
    singles = [t for t in trades if not t.aggregated]
    if singles:
        return "trade", singles
    aggregated = [t for t in trades if t.aggregated]
    return ("aggTrade", aggregated) if aggregated else (None, [])


def step_market(state: dict[str, Any], events: Iterable[Event]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Advance the market engine by one minute.

    ``state`` is ``{"last_price": {exchange: text}}`` (empty for a fresh start). Returns the new state
    and the document body: per exchange OHLC, taker volumes and trade counts, liquidations per
    liquidated side (count, filled quantity, USD notional), and the last known price.
    """
    trades_by_exchange: dict[str, list[Trade]] = {}
    liqs_by_exchange: dict[str, dict[LiquidatedSide, _LiqTotals]] = {}
    for event in events:
        if type(event) in _IGNORED:  # most events (book updates): one set lookup
            continue
        if isinstance(event, Trade):
            trades_by_exchange.setdefault(str(event.exchange), []).append(event)
        elif isinstance(event, Liquidation):
            per_side = liqs_by_exchange.setdefault(str(event.exchange), {s: _LiqTotals() for s in _LIQ_SIDES})
            per_side[event.side].add(event)

    last_price: dict[str, str] = dict(state.get("last_price", {}))
    exchanges: dict[str, Any] = {}
    total_liqs = {s: _LiqTotals() for s in _LIQ_SIDES}
    for exchange in sorted(set(trades_by_exchange) | set(liqs_by_exchange)):
        source, trades = _pick_trades(trades_by_exchange.get(exchange, []))
        flow = _Flow()
        flow.add_all(trades)
        if flow.close is not None:
            last_price[exchange] = decimal_text(flow.close)
        liqs = liqs_by_exchange.get(exchange, {s: _LiqTotals() for s in _LIQ_SIDES})
        for side, totals in liqs.items():
            total_liqs[side].count += totals.count
            total_liqs[side].qty += totals.qty
            total_liqs[side].notional_usd += totals.notional_usd
        exchanges[exchange] = {
            **flow.document(source),
            "liquidations": {side.value: liqs[side].document() for side in _LIQ_SIDES},
        }
    body = {
        "exchanges": exchanges,
        "liquidations": {side.value: total_liqs[side].document() for side in _LIQ_SIDES},
        "last_price": dict(sorted(last_price.items())),
    }
    return {"last_price": dict(sorted(last_price.items()))}, body
