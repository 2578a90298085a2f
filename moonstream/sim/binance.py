"""Binance USDT-M messages for the simulated market, exactly as the collector would record them.

:class:`BinanceFeed` turns :class:`~moonstream.sim.market.Step` objects into raw-file lines
``(recv_ns, channel, payload)`` (docs/formats.md "Raw minute files"), one combined-stream
connection per symbol (``LIVE_STREAMS`` of :mod:`moonstream.collector.exchanges.binance`):

* ``ws:aggTrade`` - one per taker fill, ``m`` = buyer is maker (true when the taker sold);
* ``ws:depth`` (``<sym>@depth@100ms``) - one diff per step, ``pu`` = the previous diff's ``u``,
  ``U`` > ``pu``, ``U <= u``; quantities are absolute, 0 removes a level;
* ``ws:bookTicker`` - after every diff, with ``u`` = that diff's ``u`` and the book's top;
* ``ws:markPrice`` (``@markPrice@1s``) - every ``mark_price_ms``;
* ``ws:forceOrder`` - Binance's snapshot cap: per symbol, only the **latest** liquidation of each
  1000 ms window is pushed, at the window's end (``E``), with the liquidation's own time ``T``;
* ``rest:depth`` - 1000-level snapshot at the start and every ``snapshot_every_minutes``;
  ``lastUpdateId`` = the ``u`` of the diff published at the request time, so that diff bridges
  it (``U <= lastUpdateId <= u``); it is received ``rest_latency_ms`` later, after a few more
  diffs (which a reader must buffer, as with the real exchange);
* ``rest:oi`` - ``GET /fapi/v1/openInterest`` every ``oi_poll_ms``;
* ``conn:open`` - once, at the start.

WS receive times are event time + latency, strictly increasing along the connection. All numbers
are decimal text with the instrument's decimals, as Binance sends them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from moonstream.collector.exchanges.binance import LIVE_STREAMS
from moonstream.sim.market import LONG, Fill, LiquidationFill, MarketSim, Step
from moonstream.sim.params import SimRates, SymbolSpec

log = logging.getLogger(__name__)

Line = tuple[int, str, str]
LiquidationSink = Callable[[LiquidationFill, bool, str], None]
"""Called once per liquidation when its feed decides: ``(liquidation, pushed by the venue?, venue)``."""
_NS_PER_MS = 1_000_000
_SNAPSHOT_LEVELS = 1000
_FUNDING_MS = 8 * 3600 * 1000


def fixed(value: int, decimals: int) -> str:
    """``fixed(4200010, 2) == "42000.10"``: an integer count of 10**-decimals as decimal text."""
    if decimals == 0:
        return str(value)
    text = str(value).rjust(decimals + 1, "0")
    return f"{text[:-decimals]}.{text[-decimals:]}"


class FeedBase:
    """What every simulated connection shares: its lines, receive latencies and decimal text.

    ``lines`` collects ``(recv_ns, channel, payload)``; WS receive times are event time + latency,
    strictly increasing along the connection; REST results arrive ``rest_latency_ms`` later.
    """

    def __init__(
        self,
        spec: SymbolSpec,
        rates: SimRates,
        rng: np.random.Generator,
        on_liquidation: LiquidationSink | None = None,
    ) -> None:
        self.spec = spec
        self.rates = rates
        self.rng = rng
        self.on_liquidation = on_liquidation
        self.lines: list[Line] = []
        self._last_ws_ns = 0
        self._jitter: list[float] = []

    def _rand(self) -> float:
        if not self._jitter:
            self._jitter = self.rng.exponential(1.0, 4096).tolist()
        return self._jitter.pop()

    def _ws(self, event_ms: int, channel: str, payload: str) -> None:
        latency = self.rates.ws_latency_ms * (0.5 + 0.5 * self._rand())
        recv = max(self._last_ws_ns + 1_000, event_ms * _NS_PER_MS + int(latency * _NS_PER_MS))
        self._last_ws_ns = recv
        self.lines.append((recv, channel, payload))

    def _rest(self, request_ms: int, channel: str, payload: str) -> None:
        latency = self.rates.rest_latency_ms * (0.6 + 0.4 * self._rand())
        self.lines.append((request_ms * _NS_PER_MS + int(latency * _NS_PER_MS), channel, payload))

    def _open(self, t_ms: int, url: str) -> None:
        """``conn:open`` at ``t_ms``: the connection's first line."""
        self._last_ws_ns = t_ms * _NS_PER_MS
        self.lines.append((t_ms * _NS_PER_MS, "conn:open", f'{{"url":"{url}","source":"sim"}}'))

    def price_text(self, ticks: int) -> str:
        return fixed(ticks * self.spec.tick_units, self.spec.price_decimals)

    def qty_text(self, lots: int) -> str:
        return fixed(lots * self.spec.lot_units, self.spec.qty_decimals)

    def mark_text(self, mid: float, factor: float = 1.0) -> str:
        """``mid * factor`` with the instrument's price decimals (not rounded to the tick)."""
        scale = 10**self.spec.price_decimals
        return fixed(round(mid * factor * scale), self.spec.price_decimals)

    def take_lines(self) -> list[Line]:
        lines, self.lines = self.lines, []
        return lines


class BinanceFeed(FeedBase):
    """One symbol's Binance connection: formats steps into lines appended to ``self.lines``."""

    def __init__(
        self,
        spec: SymbolSpec,
        rates: SimRates,
        rng: np.random.Generator,
        on_liquidation: LiquidationSink | None = None,
    ) -> None:
        super().__init__(spec, rates, rng, on_liquidation)
        self.instrument = f"{spec.symbol}USDT"
        low = self.instrument.lower()
        self._s_agg = f'{{"stream":"{low}@aggTrade","data":{{"e":"aggTrade","E":'
        self._s_depth = f'{{"stream":"{low}@depth@{rates.step_ms}ms","data":{{"e":"depthUpdate","E":'
        self._s_book = f'{{"stream":"{low}@bookTicker","data":{{"e":"bookTicker","u":'
        self._s_mark = f'{{"stream":"{low}@markPrice@1s","data":{{"e":"markPriceUpdate","E":'
        self._s_force = f'{{"stream":"{low}@forceOrder","data":{{"e":"forceOrder","E":'
        streams = [name.replace("100ms", f"{rates.step_ms}ms") for name in LIVE_STREAMS]
        self._streams = "/".join(f"{low}@{name}" for name in streams)
        self._ids: list[int] = []
        self.update_id = int(rng.integers(3_000_000_000_000, 4_000_000_000_000))
        self.agg_id = int(rng.integers(1_000_000_000, 2_000_000_000))
        self.trade_id = self.agg_id * 2
        self._window: list[LiquidationFill] = []
        self.counters = {"forceOrder_sent": 0, "liquidations": 0, "snapshots": 0, "diffs": 0, "trades": 0}

    # -- plumbing -----------------------------------------------------------------------------------

    def _gap(self) -> int:
        if not self._ids:
            self._ids = self.rng.integers(1, 400, 4096).tolist()
        return int(self._ids.pop())

    def _levels(self, levels: Any) -> str:
        price, qty = self.price_text, self.qty_text
        return ",".join(f'["{price(t)}","{qty(q)}"]' for t, q in levels)

    # -- messages -----------------------------------------------------------------------------------

    def start(self, t_ms: int) -> None:
        """The connection opens at ``t_ms`` (before the first step)."""
        self._open(t_ms, f"wss://fstream.binance.com/stream?streams={self._streams}")

    def _agg_trade(self, fill: Fill) -> None:
        count = 1 + (fill.lots > 5) + (fill.lots > 50)
        first = self.trade_id + 1
        self.trade_id += count
        self.agg_id += 1
        maker = "false" if fill.taker_buy else "true"
        self._ws(
            fill.t_ms,
            "ws:aggTrade",
            f'{self._s_agg}{fill.t_ms + 1},"a":{self.agg_id},"s":"{self.instrument}",'
            f'"p":"{self.price_text(fill.price_ticks)}","q":"{self.qty_text(fill.lots)}",'
            f'"f":{first},"l":{self.trade_id},"T":{fill.t_ms},"m":{maker}}}}}',
        )
        self.counters["trades"] += 1

    def _depth(self, step: Step, book_top: tuple[int, int, int, int]) -> None:
        prev = self.update_id
        first = prev + self._gap()
        last = first + 2 * (len(step.bid_changes) + len(step.ask_changes)) + self._gap()
        self.update_id = last
        t = step.t_ms
        bids = self._levels(sorted(step.bid_changes.items()))
        asks = self._levels(sorted(step.ask_changes.items()))
        self._ws(
            t,
            "ws:depth",
            f'{self._s_depth}{t},"T":{t - 2},"s":"{self.instrument}","U":{first},"u":{last},'
            f'"pu":{prev},"b":[{bids}],"a":[{asks}]}}}}',
        )
        bid, bid_lots, ask, ask_lots = book_top
        self._ws(
            t,
            "ws:bookTicker",
            f'{self._s_book}{last},"s":"{self.instrument}","b":"{self.price_text(bid)}",'
            f'"B":"{self.qty_text(bid_lots)}","a":"{self.price_text(ask)}","A":"{self.qty_text(ask_lots)}",'
            f'"T":{t - 2},"E":{t}}}}}',
        )
        self.counters["diffs"] += 1

    def snapshot(self, t_ms: int, sim: MarketSim) -> None:
        """REST depth snapshot requested at ``t_ms`` (just after the diff published then)."""
        sim.book.trim(_SNAPSHOT_LEVELS)
        bids, asks = sim.book.snapshot(_SNAPSHOT_LEVELS)
        self._rest(
            t_ms,
            "rest:depth",
            f'{{"lastUpdateId":{self.update_id},"E":{t_ms + 5},"T":{t_ms},'
            f'"bids":[{self._levels(bids)}],"asks":[{self._levels(asks)}]}}',
        )
        self.counters["snapshots"] += 1

    def _mark(self, t_ms: int, mid: float) -> None:
        decimals = self.spec.price_decimals + 6
        scale = 10**decimals
        mark = fixed(round(mid * scale), decimals)
        index = fixed(round(mid * (1.0 - 0.0002) * scale), decimals)
        next_funding = (t_ms // _FUNDING_MS + 1) * _FUNDING_MS
        self._ws(
            t_ms,
            "ws:markPrice",
            f'{self._s_mark}{t_ms},"s":"{self.instrument}","p":"{mark}","P":"{mark}","i":"{index}",'
            f'"r":"0.00010000","T":{next_funding}}}}}',
        )

    def _open_interest(self, t_ms: int, oi_lots: int) -> None:
        self._rest(
            t_ms,
            "rest:oi",
            f'{{"openInterest":"{self.qty_text(oi_lots)}","symbol":"{self.instrument}","time":{t_ms}}}',
        )

    def _close_window(self, t_ms: int) -> None:
        """The 1000 ms window ending at ``t_ms``: push only its latest liquidation (Binance's cap)."""
        window = self._window
        if not window:
            return
        latest = window[-1]
        fill, pos = latest.fill, latest.position
        side = "SELL" if pos.side == LONG else "BUY"
        price, qty = self.price_text(fill.price_ticks), self.qty_text(fill.lots)
        self._ws(
            t_ms,
            "ws:forceOrder",
            f'{self._s_force}{t_ms},"o":{{"s":"{self.instrument}","S":"{side}","o":"LIMIT","f":"IOC",'
            f'"q":"{qty}","p":"{price}","ap":"{price}","X":"FILLED","l":"{qty}","z":"{qty}",'
            f'"T":{fill.t_ms}}}}}}}',
        )
        self.counters["forceOrder_sent"] += 1
        if self.on_liquidation is not None:
            for item in window:
                self.on_liquidation(item, item is latest, "binance")
        self._window = []

    def step(
        self,
        step: Step,
        sim: MarketSim,
        fills: list[Fill] | None = None,
        liquidations: list[LiquidationFill] | None = None,
        oi_lots: int | None = None,
    ) -> None:
        """Every message of one step, in event-time order.

        ``fills``/``liquidations`` are Binance's share of the step's (default: all of them) and
        ``oi_lots`` its open interest (default: the whole market's).
        """
        fills = step.fills if fills is None else fills
        liquidations = step.liquidations if liquidations is None else liquidations
        for fill in fills:
            self._agg_trade(fill)
        self._window.extend(liquidations)
        self.counters["liquidations"] += len(liquidations)
        t = step.t_ms
        if t % 1000 == 0:
            self._close_window(t)
        self._depth(step, sim.book.top())
        if t % self.rates.mark_price_ms == 0:
            self._mark(t, step.mid)
        if t % self.rates.oi_poll_ms == 0:
            self._open_interest(t, sim.open_interest_lots if oi_lots is None else oi_lots)
