"""OKX v5 USDT-swap messages for the simulated market, as the collector records them.

:class:`OkxFeed` turns OKX's share of each :class:`~moonstream.sim.market.Step` into raw-file lines
``(recv_ns, channel, payload)`` on one public connection per symbol, with the channel tags of
:mod:`moonstream.collector.exchanges.okx` (``ws:`` + OKX's channel name). Sizes are in
**contracts** of the instrument's ``ctVal`` (:mod:`moonstream.jobs.instruments`: BTC-USDT-SWAP 0.01
BTC, ETH 0.1, SOL 1); a symbol without a configured contract value has no OKX feed.

* ``conn:open`` then ``ws:event`` (one subscribe acknowledgement per channel) - once, at the start;
* ``ws:trades`` - one message per taker fill on OKX: ``side`` the taker side, ``sz`` contracts,
  ``tradeId`` the last id of ``count`` trades;
* ``ws:mark-price`` - every ``mark_price_ms`` (1 s; OKX pushes up to every 200 ms on change);
* ``ws:open-interest`` - every ``okx_oi_ms`` (3 s, as OKX documents: "pushed every 3 seconds when
  there are updates"), only when it changed since the previous push; ``oi`` in contracts, ``oiCcy``
  = ``oi`` x ctVal exactly (the normalizer checks it), ``oiUsd`` at the mark;
* ``ws:liquidation-orders`` (the venue-wide SWAP channel) - OKX documents a cap: "For futures and
  swaps, each contract will only show a maximum of one order per one-second period. This data
  doesn't represent the total number of liquidations on OKX." Which one is not documented; the
  simulator shows the **first** liquidation of each UTC second (a throttle) as soon as it happens
  (``ts`` its own time) and drops the rest of that second. Each message carries one row, for this
  symbol's instrument (the collector writes a venue-wide message to every symbol whose ``instId``
  it holds; symbols are simulated independently). ``bkPx`` is the bankruptcy price; ``posSide`` is
  ``net`` (net mode: the order side ``sell`` closes a long) for 70 % of the liquidations and the
  hedge-mode ``long``/``short`` for the rest.

OKX writes decimals without trailing zeros (``"42219.9"``, ``"13"``); so does the simulator.
"""

from __future__ import annotations

import json
import logging
import math
from decimal import Decimal
from fractions import Fraction

import numpy as np

from moonstream.collector.exchanges.okx import LIQUIDATION_ARG, LIVE_CHANNELS, WS_PATH
from moonstream.jobs import instruments
from moonstream.sim.binance import FeedBase, LiquidationSink, fixed
from moonstream.sim.market import LONG, Fill, LiquidationFill, MarketSim
from moonstream.sim.params import SimRates, SymbolSpec
from moonstream.symbols import Exchange, exchange_instrument

log = logging.getLogger(__name__)

HEDGE_MODE_SHARE = 0.3
"""Share of liquidations reported with a hedge-mode ``posSide`` (``long``/``short``) instead of ``net``."""
_HEDGE_CUT = -math.log1p(-HEDGE_MODE_SHARE)  # P(Exp(1) < cut) = HEDGE_MODE_SHARE


def trim(text: str) -> str:
    """OKX's decimal text: ``"42000.10"`` -> ``"42000.1"``, ``"13.000"`` -> ``"13"``."""
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def contract_value(symbol: str) -> Decimal | None:
    """OKX's ``ctVal`` of ``symbol``'s USDT swap, or None when none is configured (no OKX feed)."""
    inst = exchange_instrument(Exchange.OKX, symbol)
    return instruments.CONTRACT_VALUES.get(inst)


def contracts_per_lot(spec: SymbolSpec, ct_val: Decimal) -> tuple[int, int]:
    """``(units, decimals)``: one lot is ``units / 10**decimals`` contracts, exactly.

    BTC (lot 0.001, ctVal 0.01) -> ``(1, 1)`` (0.1 contract); ValueError if no power of ten up to
    10**18 makes it exact.
    """
    per_lot = Fraction(spec.lot_units, 10**spec.qty_decimals) / Fraction(ct_val)
    for decimals in range(19):
        scaled = per_lot * 10**decimals
        if scaled.denominator == 1:
            return int(scaled), decimals
    raise ValueError(f"{spec.symbol}: a lot is not a decimal number of contracts of {ct_val}")


class OkxFeed(FeedBase):
    """One symbol's OKX connection: OKX's fills, (capped) liquidations and open interest as lines."""

    venue = "okx"

    def __init__(
        self,
        spec: SymbolSpec,
        rates: SimRates,
        rng: np.random.Generator,
        on_liquidation: LiquidationSink | None = None,
    ) -> None:
        super().__init__(spec, rates, rng, on_liquidation)
        ct_val = contract_value(spec.symbol)
        if ct_val is None:
            raise ValueError(f"no OKX contract value configured for {spec.symbol}")
        self.ct_val = ct_val
        self._ct_units, self._ct_decimals = contracts_per_lot(spec, ct_val)
        self.instrument = exchange_instrument(Exchange.OKX, spec.symbol)
        inst = self.instrument
        self._s_trade = (
            f'{{"arg":{{"channel":"trades","instId":"{inst}"}},"data":[{{"instId":"{inst}","tradeId":"'
        )
        self._s_mark = (
            f'{{"arg":{{"channel":"mark-price","instId":"{inst}"}},"data":[{{"instType":"SWAP",'
            f'"instId":"{inst}","markPx":"'
        )
        self._s_oi = (
            f'{{"arg":{{"channel":"open-interest","instId":"{inst}"}},"data":[{{"instId":"{inst}",'
            f'"instType":"SWAP","oi":"'
        )
        family = inst.removesuffix("-SWAP")
        self._s_liq_tail = (
            f'],"instFamily":"{family}","instId":"{inst}","instType":"SWAP","uly":"{family}"}}]}}'
        )
        self.trade_id = int(rng.integers(100_000_000, 2_000_000_000))
        self.seq_id = int(rng.integers(1_000_000, 100_000_000))
        self._conn_id = f"{int(rng.integers(0, 1 << 32)):08x}"
        self._liq_second = -1
        self._last_oi: int | None = None
        self.counters = {"trades": 0, "liquidations": 0, "liquidations_sent": 0, "oi": 0}

    def price_text(self, ticks: int) -> str:
        return trim(super().price_text(ticks))

    def contracts_text(self, lots: int) -> str:
        """A size in lots as OKX contracts, exact: BTC 7 lots (0.007 BTC) -> ``"0.7"``."""
        return trim(fixed(lots * self._ct_units, self._ct_decimals))

    def start(self, t_ms: int) -> None:
        """Connect at ``t_ms``: ``conn:open`` and one subscribe acknowledgement per channel."""
        self._open(t_ms, f"wss://ws.okx.com:8443{WS_PATH}")
        args = [f'{{"channel":"{name}","instId":"{self.instrument}"}}' for name in LIVE_CHANNELS]
        wide = json.dumps(LIQUIDATION_ARG, separators=(",", ":"))
        args.insert(2, wide)  # the venue-wide liquidation channel, where the collector subscribes it
        for arg in args:
            self._ws(t_ms, "ws:event", f'{{"event":"subscribe","arg":{arg},"connId":"{self._conn_id}"}}')

    def _trade(self, fill: Fill) -> None:
        count = 1 + (fill.lots > 5) + (fill.lots > 50)
        self.trade_id += count
        self.seq_id += 1 + int(self._rand() * 4)
        side = "buy" if fill.taker_buy else "sell"
        self._ws(
            fill.t_ms,
            "ws:trades",
            f'{self._s_trade}{self.trade_id}","px":"{self.price_text(fill.price_ticks)}",'
            f'"sz":"{self.contracts_text(fill.lots)}","side":"{side}","ts":"{fill.t_ms}",'
            f'"count":"{count}","source":"0","seqId":{self.seq_id}}}]}}',
        )
        self.counters["trades"] += 1

    def _liquidation(self, item: LiquidationFill) -> None:
        """Show the first liquidation of each second; the rest of that second are not pushed."""
        t = item.fill.t_ms
        sent = t // 1000 != self._liq_second
        if sent:
            self._liq_second = t // 1000
            is_long = item.position.side == LONG
            side = "sell" if is_long else "buy"
            hedge = self._rand() < _HEDGE_CUT
            pos_side = ("long" if is_long else "short") if hedge else "net"
            self._ws(
                t,
                "ws:liquidation-orders",
                f'{{"arg":{{"channel":"liquidation-orders","instType":"SWAP"}},"data":[{{"details":[{{'
                f'"bkLoss":"0","bkPx":"{self.price_text(item.bk_ticks)}","ccy":"","posSide":"{pos_side}",'
                f'"side":"{side}","sz":"{self.contracts_text(item.fill.lots)}","ts":"{t}"}}'
                f"{self._s_liq_tail}",
            )
            self.counters["liquidations_sent"] += 1
        self.counters["liquidations"] += 1
        if self.on_liquidation is not None:
            self.on_liquidation(item, sent, self.venue)

    def _open_interest(self, t_ms: int, oi_lots: int, mid: float) -> None:
        if oi_lots == self._last_oi:
            return
        self._last_oi = oi_lots
        usd = fixed(round(oi_lots * self.spec.lot * mid * 100), 2)
        self._ws(
            t_ms,
            "ws:open-interest",
            f'{self._s_oi}{self.contracts_text(oi_lots)}","oiCcy":"{trim(self.qty_text(oi_lots))}",'
            f'"oiUsd":"{trim(usd)}","ts":"{t_ms}"}}]}}',
        )
        self.counters["oi"] += 1

    def step(
        self, t_ms: int, sim: MarketSim, fills: list[Fill], liquidations: list[LiquidationFill], oi_lots: int
    ) -> None:
        """OKX's messages of the step ending at ``t_ms`` (its fills and liquidations, its OI)."""
        by_fill = {id(item.fill): item for item in liquidations}
        for fill in fills:  # a liquidation-orders push follows its own fill on the tape
            self._trade(fill)
            item = by_fill.pop(id(fill), None) if by_fill else None
            if item is not None:
                self._liquidation(item)
        for item in by_fill.values():  # not expected: every liquidation fill is among the fills
            self._liquidation(item)
        if t_ms % self.rates.mark_price_ms == 0:
            self._ws(
                t_ms, "ws:mark-price", f'{self._s_mark}{trim(self.mark_text(sim.mid))}","ts":"{t_ms}"}}]}}'
            )
        if t_ms % self.rates.okx_oi_ms == 0:
            self._open_interest(t_ms, oi_lots, sim.mid)
