"""Taker aggression: taker buy and sell volume (USD) per minute, with a 10-minute history.

Trade source per exchange and minute, as in the market engine: the individual trade stream when the
minute has any such trade, otherwise aggregated trades, never both. Sums are exact decimals.

State (JSON): ``{"history": [{"minute": int, "buy_usd": "<decimal>", "sell_usd": "<decimal>"}, ...]}``,
the newest :data:`HISTORY_MINUTES` (10) minutes that had trades, oldest first.

:func:`buy_share` gives the inference engine its split: the minute's ``buy / (buy + sell)``; a minute
with no trades falls back to the history's sums (``fallback`` = True); with no history at all, 0.5.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from moonstream.jobs.engines.market import decimal_text
from moonstream.jobs.events import TakerSide, Trade

HISTORY_MINUTES = 10
_BUY, _SELL = TakerSide.BUY, TakerSide.SELL  # enum class attribute lookups are slow (EnumType.__getattr__)


def pick_trades(trades: Iterable[Trade]) -> list[Trade]:
    """Per exchange, individual trades if the minute has any, else aggregated ones; receive order kept."""
    ordered = list(trades)
    with_singles = {t.exchange for t in ordered if not t.aggregated}
    return [t for t in ordered if not t.aggregated or t.exchange not in with_singles]


@dataclass(frozen=True)
class MinuteAggression:
    """One minute's taker volume in USD (exact)."""

    buy_usd: Decimal
    sell_usd: Decimal

    @property
    def total_usd(self) -> Decimal:
        return self.buy_usd + self.sell_usd


def minute_aggression(trades: Sequence[Trade]) -> MinuteAggression:
    """Taker buy/sell USD of already-picked trades."""
    buy = sell = Decimal(0)
    for t in trades:  # each side summed in trade order, as ``sum`` would
        side = t.taker_side
        if side is _BUY:
            buy += t.price * t.qty  # Trade.notional_usd
        elif side is _SELL:
            sell += t.price * t.qty
    return MinuteAggression(buy, sell)


def step_aggression(state: Mapping[str, Any], minute: int, current: MinuteAggression) -> dict[str, Any]:
    """Append this minute (if it had trades) and keep the entries of the last 10 minutes."""
    history = [h for h in state.get("history", []) if minute - HISTORY_MINUTES < int(h["minute"]) < minute]
    if current.total_usd > 0:
        history.append(
            {
                "minute": minute,
                "buy_usd": decimal_text(current.buy_usd),
                "sell_usd": decimal_text(current.sell_usd),
            }
        )
    return {"history": history}


def buy_share(state: Mapping[str, Any], current: MinuteAggression) -> tuple[float, bool]:
    """``(buy share, fallback)``: this minute's taker buy share, or the 10-minute history's."""
    if current.total_usd > 0:
        return float(current.buy_usd / current.total_usd), False
    buy = sum((Decimal(h["buy_usd"]) for h in state.get("history", [])), Decimal(0))
    sell = sum((Decimal(h["sell_usd"]) for h in state.get("history", [])), Decimal(0))
    if buy + sell > 0:
        return float(buy / (buy + sell)), True
    return 0.5, True
