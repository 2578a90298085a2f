"""Bybit v5 linear (USDT perpetual) messages for the simulated market, as the collector records them.

:class:`BybitFeed` turns Bybit's share of each :class:`~moonstream.sim.market.Step` into raw-file
lines ``(recv_ns, channel, payload)`` on one public linear connection per symbol, with the channel
tags of :mod:`moonstream.collector.exchanges.bybit` (``ws:`` + the topic's first part):

* ``conn:open`` then ``ws:op`` (the subscribe acknowledgement) - once, at the start;
* ``ws:publicTrade`` (``publicTrade.<SYM>``) - one message per taker fill on Bybit, ``S`` the taker
  side, ``i`` a UUID trade id, ``L`` the tick direction;
* ``ws:allLiquidation`` (``allLiquidation.<SYM>``) - **every** liquidation (no one-per-second cap),
  batched as Bybit documents ("push frequency: 500ms"): the liquidations of each 500 ms window go
  out in one message at the window's end (``ts``), each row with its own time ``T``, ``S`` the
  *position* side (``Buy`` = a long was liquidated), ``v`` the size and ``p`` the bankruptcy price;
* ``ws:tickers`` (``tickers.<SYM>``) - a snapshot at the start, then a delta every
  ``bybit_tickers_ms`` (default 1 s; Bybit pushes linear tickers every 100 ms, which would be most of
  the file) with ``markPrice``, ``indexPrice``, ``openInterestValue``, best bid/ask and, only when
  it changed since the previous push, ``openInterest`` (base units) - Bybit's deltas carry changed
  fields only.

Prices and sizes use the instrument's decimals (Bybit pads prices to the tick: ``"42000.10"``).
"""

from __future__ import annotations

import logging

import numpy as np

from moonstream.collector.exchanges.bybit import WS_PATH
from moonstream.sim.binance import FeedBase, LiquidationSink, fixed
from moonstream.sim.market import LONG, Fill, LiquidationFill, MarketSim
from moonstream.sim.params import SimRates, SymbolSpec

log = logging.getLogger(__name__)

LIQUIDATION_PUSH_MS = 500
"""Bybit: allLiquidation "Push frequency: 500ms"."""
_FUNDING_MS = 8 * 3600 * 1000
_UUID_STEP = 0x9E3779B97F4A7C15F39CC0605CEDC835  # odd: n -> base + n * step is a bijection mod 2**128
_UUID_MOD = 1 << 128


def uuid_text(value: int) -> str:
    """A 128-bit integer as a UUID string (``8-4-4-4-12`` lower-case hex)."""
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class BybitFeed(FeedBase):
    """One symbol's Bybit connection: Bybit's fills, liquidations and open interest as lines."""

    venue = "bybit"

    def __init__(
        self,
        spec: SymbolSpec,
        rates: SimRates,
        rng: np.random.Generator,
        on_liquidation: LiquidationSink | None = None,
    ) -> None:
        super().__init__(spec, rates, rng, on_liquidation)
        self.instrument = f"{spec.symbol}USDT"
        inst = self.instrument
        self._s_trade = f'{{"topic":"publicTrade.{inst}","type":"snapshot","ts":'
        self._s_liq = f'{{"topic":"allLiquidation.{inst}","type":"snapshot","ts":'
        self._s_tick = f'{{"topic":"tickers.{inst}","type":'
        self._uuid = int(rng.integers(0, 1 << 62)) << 66 | int(rng.integers(0, 1 << 62))
        self._trades = 0
        self._cs = int(rng.integers(10_000_000_000, 30_000_000_000))
        self._conn_id = uuid_text(int(rng.integers(0, 1 << 62)) << 64)
        self._last_ticks: int | None = None
        self._direction = "ZeroPlusTick"
        self._pending: list[LiquidationFill] = []
        self._last_oi: int | None = None
        self._last_funding = 0
        self.counters = {"trades": 0, "liquidations": 0, "liquidations_sent": 0, "tickers": 0}

    def _funding(self, t_ms: int) -> int:
        return (t_ms // _FUNDING_MS + 1) * _FUNDING_MS

    def start(self, t_ms: int, sim: MarketSim, oi_lots: int) -> None:
        """Connect at ``t_ms``: ``conn:open``, the subscribe acknowledgement, a tickers snapshot."""
        self._open(t_ms, f"wss://stream.bybit.com{WS_PATH}")
        self._ws(
            t_ms,
            "ws:op",
            f'{{"success":true,"ret_msg":"","conn_id":"{self._conn_id}","req_id":"","op":"subscribe"}}',
        )
        bid, bid_lots, ask, ask_lots = sim.book.top()
        self._last_oi = oi_lots
        self._last_funding = self._funding(t_ms)
        mark = self.mark_text(sim.mid)
        self._cs += 1
        self._ws(
            t_ms,
            "ws:tickers",
            f'{self._s_tick}"snapshot","data":{{"symbol":"{self.instrument}",'
            f'"lastPrice":"{self.price_text(bid)}","markPrice":"{mark}",'
            f'"indexPrice":"{self.mark_text(sim.mid, 1.0 - 0.0002)}",'
            f'"openInterest":"{self.qty_text(oi_lots)}",'
            f'"openInterestValue":"{self._oi_value(oi_lots, sim.mid)}",'
            f'"nextFundingTime":"{self._last_funding}","fundingRate":"0.0001",'
            f'"bid1Price":"{self.price_text(bid)}","bid1Size":"{self.qty_text(bid_lots)}",'
            f'"ask1Price":"{self.price_text(ask)}","ask1Size":"{self.qty_text(ask_lots)}"}},'
            f'"cs":{self._cs},"ts":{t_ms}}}',
        )
        self.counters["tickers"] += 1

    def _oi_value(self, oi_lots: int, mid: float) -> str:
        return fixed(round(oi_lots * self.spec.lot * mid * 100), 2)

    def _trade(self, fill: Fill) -> None:
        ticks = fill.price_ticks
        if self._last_ticks is not None and ticks != self._last_ticks:
            self._direction = "PlusTick" if ticks > self._last_ticks else "MinusTick"
        elif self._last_ticks is not None:
            self._direction = (
                "ZeroPlusTick" if self._direction in ("PlusTick", "ZeroPlusTick") else "ZeroMinusTick"
            )
        self._last_ticks = ticks
        self._trades += 1
        trade_id = uuid_text((self._uuid + self._trades * _UUID_STEP) % _UUID_MOD)
        side = "Buy" if fill.taker_buy else "Sell"
        self._ws(
            fill.t_ms,
            "ws:publicTrade",
            f'{self._s_trade}{fill.t_ms + 1},"data":[{{"T":{fill.t_ms},"s":"{self.instrument}","S":"{side}",'
            f'"v":"{self.qty_text(fill.lots)}","p":"{self.price_text(ticks)}","L":"{self._direction}",'
            f'"i":"{trade_id}","BT":false}}]}}',
        )
        self.counters["trades"] += 1

    def _push_liquidations(self, t_ms: int) -> None:
        """Push every pending liquidation whose 500 ms window ended by ``t_ms``, one message a window."""
        while self._pending:
            window_end = (self._pending[0].fill.t_ms // LIQUIDATION_PUSH_MS + 1) * LIQUIDATION_PUSH_MS
            if window_end > t_ms:
                return
            batch = [item for item in self._pending if item.fill.t_ms < window_end]
            self._pending = self._pending[len(batch) :]
            rows = ",".join(
                f'{{"T":{item.fill.t_ms},"s":"{self.instrument}",'
                f'"S":"{"Buy" if item.position.side == LONG else "Sell"}",'
                f'"v":"{self.qty_text(item.fill.lots)}","p":"{self.price_text(item.bk_ticks)}"}}'
                for item in batch
            )
            self._ws(window_end, "ws:allLiquidation", f'{self._s_liq}{window_end},"data":[{rows}]}}')
            self.counters["liquidations_sent"] += len(batch)
            if self.on_liquidation is not None:
                for item in batch:
                    self.on_liquidation(item, True, self.venue)

    def _tickers(self, t_ms: int, sim: MarketSim, oi_lots: int) -> None:
        bid, bid_lots, ask, ask_lots = sim.book.top()
        fields = [
            f'"symbol":"{self.instrument}","markPrice":"{self.mark_text(sim.mid)}"',
            f'"indexPrice":"{self.mark_text(sim.mid, 1.0 - 0.0002)}"',
        ]
        if oi_lots != self._last_oi:
            fields.append(f'"openInterest":"{self.qty_text(oi_lots)}"')
            self._last_oi = oi_lots
        fields.append(f'"openInterestValue":"{self._oi_value(oi_lots, sim.mid)}"')
        funding = self._funding(t_ms)
        if funding != self._last_funding:
            fields.append(f'"nextFundingTime":"{funding}"')
            self._last_funding = funding
        fields.append(
            f'"bid1Price":"{self.price_text(bid)}","bid1Size":"{self.qty_text(bid_lots)}",'
            f'"ask1Price":"{self.price_text(ask)}","ask1Size":"{self.qty_text(ask_lots)}"'
        )
        self._cs += 1 + int(self._rand() * 3)
        self._ws(
            t_ms,
            "ws:tickers",
            f'{self._s_tick}"delta","data":{{{",".join(fields)}}},"cs":{self._cs},"ts":{t_ms}}}',
        )
        self.counters["tickers"] += 1

    def step(
        self, t_ms: int, sim: MarketSim, fills: list[Fill], liquidations: list[LiquidationFill], oi_lots: int
    ) -> None:
        """Bybit's messages of the step ending at ``t_ms`` (its fills and liquidations, its OI)."""
        for fill in fills:
            self._trade(fill)
        self._pending.extend(liquidations)
        self.counters["liquidations"] += len(liquidations)
        self._push_liquidations(t_ms)
        if t_ms % self.rates.bybit_tickers_ms == 0:
            self._tickers(t_ms, sim, oi_lots)
