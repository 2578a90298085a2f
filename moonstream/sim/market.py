"""The simulated market of one symbol: price path, leveraged traders, liquidations, order book.

Pure and deterministic: everything random comes from the numpy Generator it is given, time is the
simulated millisecond clock, nothing is read from the wall clock or global state. The model
(docs/simulator.md):

* **Price**: log mid-price moves every step (``SimRates.step_ms``, 100 ms) by a Gaussian shock
  whose per-minute variance follows GARCH(1,1) on the realized one-minute log return
  (``var' = omega + alpha * r^2 + beta * var``, capped at 25x the long-run variance), plus the drift
  of an occasional **cascade** (a 0.8-2.5 % push over 15-90 s, 60 % of them down, with 2.5x
  volatility and a burst of trades), plus the **impact** of the previous step's liquidation flow
  (``-impact * signed_usd / depth_usd_1pct * 1 %``), so liquidations feed further liquidations.
* **Traders** open positions (Poisson, ``opens_per_sec``) at the touch (long = taker buy at the
  ask, short = taker sell at the bid) with a leverage drawn from the configured mix and a
  log-normal USD size; each closes voluntarily after an exponential holding time (taker trade the
  other way) unless it is liquidated first.
* **Liquidation** (isolated margin): ``mmr = min(0.004, 0.5 / lev)``;
  long ``liq = entry * (1 - 1/lev + mmr)``, short ``liq = entry * (1 + 1/lev - mmr)``. A long is
  liquidated in the first step whose low (min of the step's start and end mid) is ``<= liq``, a
  short when the step's high is ``>= liq``; it fills at the tick at or beyond ``liq`` (long:
  ``floor(liq / tick)``, short: ``ceil(liq / tick)``) at the time the linear path crosses ``liq``.
* **Open interest** (base units) = a constant background + the size of every open simulated
  position (each is matched by an unmodelled passive counterparty).
"""

from __future__ import annotations

import heapq
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from moonstream.sim.book import Changes, LevelBook
from moonstream.sim.params import SimRates, SymbolSpec

log = logging.getLogger(__name__)

LONG = 1
SHORT = -1
MMR_BASE = 0.004
MMR_CAP = 0.5
_GARCH_ALPHA = 0.06
_GARCH_BETA = 0.92
_VAR_CAP = 25.0


def maintenance_margin_rate(leverage: int) -> float:
    """``min(0.004, 0.5 / leverage)``: 0.4 % up to 125x, less above so every tier has room."""
    return min(MMR_BASE, MMR_CAP / leverage)


def liquidation_price(side: int, entry: float, leverage: int) -> float:
    """Isolated-margin liquidation price of a position (``side`` is LONG or SHORT)."""
    mmr = maintenance_margin_rate(leverage)
    if side == LONG:
        return entry * (1.0 - 1.0 / leverage + mmr)
    return entry * (1.0 + 1.0 / leverage - mmr)


def bankruptcy_price(side: int, entry: float, leverage: int) -> float:
    """Where the position's margin is gone: long ``entry * (1 - 1/lev)``, short ``entry * (1 + 1/lev)``.

    Bybit's ``allLiquidation`` ``p`` and OKX's ``bkPx`` publish this price (not the fill price).
    """
    if side == LONG:
        return entry * (1.0 - 1.0 / leverage)
    return entry * (1.0 + 1.0 / leverage)


@dataclass(slots=True)
class Position:
    """One simulated trader's position."""

    pid: int
    side: int
    leverage: int
    entry_ticks: int
    lots: int
    liq: float
    open_ms: int
    venue: str = "binance"  # set by the runner when the position opens (runner.VenueDraw)


@dataclass(slots=True)
class Fill:
    """A taker trade: ``kind`` is ``open``, ``close``, ``liq`` or ``noise``."""

    t_ms: int
    price_ticks: int
    lots: int
    taker_buy: bool
    kind: str
    position: Position | None = None


@dataclass(slots=True)
class LiquidationFill:
    """A liquidation as it happened: the fill plus the step's price range (for the ground truth) and
    the bankruptcy price in ticks (at or beyond it: floor for a long, ceil for a short)."""

    fill: Fill
    position: Position
    low: float
    high: float
    bk_ticks: int = 0


@dataclass(slots=True)
class Step:
    """What happened in one step ``[t_ms - step_ms, t_ms)``: fills in time order, the book changes."""

    t_ms: int
    mid: float
    fills: list[Fill]
    liquidations: list[LiquidationFill]
    opened: list[Position]
    closed: list[Fill]
    bid_changes: Changes
    ask_changes: Changes


class MarketSim:
    """One symbol's market. Call :meth:`minute` for consecutive minutes; read the state between."""

    def __init__(self, spec: SymbolSpec, rates: SimRates, rng: np.random.Generator) -> None:
        self.spec = spec
        self.rates = rates
        self.rng = rng
        self.tick = spec.tick
        self.lot = spec.lot
        self.mid = spec.start_price
        self.var_long_run = (spec.daily_vol**2) / 1440.0
        self.var = self.var_long_run
        self.omega = self.var_long_run * (1.0 - _GARCH_ALPHA - _GARCH_BETA)
        self.tiers = np.array(spec.tiers, dtype=np.int64)
        weights = np.array(rates.leverage_weights_for(spec), dtype=np.float64)
        self.weights = weights / weights.sum()
        self.positions: dict[int, Position] = {}
        self._alive: list[int] = []
        self._alive_at: dict[int, int] = {}
        self._long_heap: list[tuple[float, int]] = []  # (-liq, pid): highest long liq first
        self._short_heap: list[tuple[float, int]] = []  # (liq, pid): lowest short liq first
        self._next_pid = 1
        self.position_lots = 0
        self._mix: dict[int, dict[int, tuple[int, int, int]]] = {LONG: {}, SHORT: {}}
        self.background_lots = max(1, round(spec.background_oi_usd / (spec.start_price * spec.lot)))
        self._flow_usd = 0.0
        self._cascade_left = 0
        self._cascade_drift = 0.0
        self.cascades = 0
        self.book = LevelBook(
            rng,
            self._bid_of(self.mid),
            max_levels=rates.book_levels,
            scale_ticks=spec.book_scale_pct / 100.0 * spec.start_price / spec.tick,
            max_depth_ticks=int(spec.book_depth_pct / 100.0 * spec.start_price / spec.tick),
            median_lots=spec.level_median_usd / (spec.start_price * spec.lot),
        )

    # -- helpers ------------------------------------------------------------------------------------

    def price_of(self, ticks: int) -> float:
        """The float nearest the exact decimal price of ``ticks`` (what ``float(price_text)`` gives)."""
        return ticks * self.spec.tick_units / 10**self.spec.price_decimals

    def _bid_of(self, price: float) -> int:
        return max(1, math.floor(price / self.tick))

    @property
    def open_interest_lots(self) -> int:
        """Open interest in lots: background + every open simulated position."""
        return self.background_lots + self.position_lots

    def _add_alive(self, pos: Position) -> None:
        self.positions[pos.pid] = pos
        self._alive_at[pos.pid] = len(self._alive)
        self._alive.append(pos.pid)
        self.position_lots += pos.lots
        self._mix_add(pos, 1)
        if pos.side == LONG:
            heapq.heappush(self._long_heap, (-pos.liq, pos.pid))
        else:
            heapq.heappush(self._short_heap, (pos.liq, pos.pid))

    def _remove_alive(self, pid: int) -> Position:
        pos = self.positions.pop(pid)
        index = self._alive_at.pop(pid)
        last = self._alive.pop()
        if last != pid:
            self._alive[index] = last
            self._alive_at[last] = index
        self.position_lots -= pos.lots
        self._mix_add(pos, -1)
        return pos

    def _mix_add(self, pos: Position, sign: int) -> None:
        per_lev = self._mix[pos.side]
        count, lots, value = per_lev.get(pos.leverage, (0, 0, 0))
        count += sign
        if count:
            per_lev[pos.leverage] = (count, lots + sign * pos.lots, value + sign * pos.entry_ticks * pos.lots)
        else:
            del per_lev[pos.leverage]

    def _compact_heaps(self) -> None:
        """Drop heap entries of positions that were closed (lazy deletion leaves them behind)."""
        alive = self.positions
        self._long_heap = [item for item in self._long_heap if item[1] in alive]
        self._short_heap = [item for item in self._short_heap if item[1] in alive]
        heapq.heapify(self._long_heap)
        heapq.heapify(self._short_heap)

    # -- one minute -------------------------------------------------------------------------------

    def _cascade_schedule(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-step drift, volatility multiplier and trade-rate multiplier for the coming minute."""
        rates, rng = self.rates, self.rng
        drift = np.zeros(n)
        volmult = np.ones(n)
        intensity = np.ones(n)
        start = 0
        if self._cascade_left == 0 and rng.random() < rates.cascades_per_day / 1440.0:
            start = int(rng.integers(n))
            size = rng.uniform(0.008, 0.025) * self.spec.daily_vol / 0.03
            seconds = rng.uniform(15.0, 90.0)
            direction = -1.0 if rng.random() < 0.6 else 1.0
            self._cascade_left = max(1, int(seconds * 1000 / rates.step_ms))
            self._cascade_drift = direction * size / self._cascade_left
            self.cascades += 1
        if self._cascade_left:
            stop = min(n, start + self._cascade_left)
            drift[start:stop] = self._cascade_drift
            volmult[start:stop] = 2.5
            intensity[start:stop] = rates.cascade_trade_boost
            self._cascade_left -= stop - start
        return drift, volmult, intensity

    def minute(self, minute_start_ms: int) -> Iterator[Step]:
        """The steps of one minute, in time order (each step's ``t_ms`` is its end)."""
        rates, rng, spec = self.rates, self.rng, self.spec
        step_ms = rates.step_ms
        n = 60_000 // step_ms
        dt = step_ms / 1000.0
        drift, volmult, intensity = self._cascade_schedule(n)
        shocks = rng.standard_normal(n) * math.sqrt(self.var / n) * volmult + drift
        n_noise = rng.poisson(rates.trades_per_sec * dt * intensity)
        n_open = rng.poisson(rates.opens_per_sec * dt, size=n)
        n_close = rng.poisson(len(self._alive) * dt / (rates.mean_hold_minutes * 60.0), size=n)
        total_open = int(n_open.sum())
        open_long = (rng.random(total_open) < rates.long_share).tolist()
        open_lev = rng.choice(self.tiers, size=total_open, p=self.weights).tolist()
        open_usd = (spec.median_position_usd * np.exp(1.2 * rng.standard_normal(total_open))).tolist()
        total_noise = int(n_noise.sum())
        noise_usd = (spec.median_trade_usd * np.exp(1.5 * rng.standard_normal(total_noise))).tolist()
        noise_u = rng.random(total_noise).tolist()
        times_u = rng.random(total_open + total_noise + int(n_close.sum())).tolist()
        close_u = rng.random(int(n_close.sum())).tolist()
        churn = rng.poisson(rates.depth_churn, size=n).tolist()
        shocks_l, drift_l = shocks.tolist(), drift.tolist()
        n_noise_l, n_open_l, n_close_l = n_noise.tolist(), n_open.tolist(), n_close.tolist()
        start_mid = self.mid
        for k in range(n):
            t0 = minute_start_ms + k * step_ms
            p_old = self.mid
            impact = -rates.impact * self._flow_usd / spec.depth_usd_1pct * 0.01
            p_new = p_old * math.exp(shocks_l[k] + impact)
            self.mid = p_new
            fills: list[Fill] = []
            liqs = self._sweep(t0, step_ms, p_old, p_new, fills)
            self._flow_usd = sum(
                (1.0 if f.fill.taker_buy else -1.0) * f.fill.price_ticks * self.tick * f.fill.lots * self.lot
                for f in liqs
            )
            opened: list[Position] = []
            for _ in range(n_open_l[k]):
                is_long = open_long.pop()
                t = t0 + int(times_u.pop() * step_ms)
                price = p_old + (p_new - p_old) * (t - t0) / step_ms
                bid = self._bid_of(price)
                entry = bid + 1 if is_long else bid
                lots = max(1, round(open_usd.pop() / (entry * self.tick * self.lot)))
                lev = int(open_lev.pop())
                side = LONG if is_long else SHORT
                liq = liquidation_price(side, self.price_of(entry), lev)
                pos = Position(self._next_pid, side, lev, entry, lots, liq, t)
                self._next_pid += 1
                opened.append(pos)
                fills.append(Fill(t, entry, lots, is_long, "open", pos))
            closed: list[Fill] = []
            for _ in range(n_close_l[k]):
                if not self._alive:
                    break
                pid = self._alive[int(close_u.pop() * len(self._alive))]
                pos = self._remove_alive(pid)
                t = t0 + int(times_u.pop() * step_ms)
                price = p_old + (p_new - p_old) * (t - t0) / step_ms
                bid = self._bid_of(price)
                sell = pos.side == LONG
                fill = Fill(t, bid if sell else bid + 1, pos.lots, not sell, "close", pos)
                fills.append(fill)
                closed.append(fill)
            bias = 0.5 - 0.2 * (drift_l[k] > 0) + 0.2 * (drift_l[k] < 0)  # P(taker sells)
            for _ in range(n_noise_l[k]):
                t = t0 + int(times_u.pop() * step_ms)
                price = p_old + (p_new - p_old) * (t - t0) / step_ms
                bid = self._bid_of(price)
                buy = noise_u.pop() >= bias
                lots = max(1, round(noise_usd.pop() / (price * self.lot)))
                fills.append(Fill(t, bid + 1 if buy else bid, lots, buy, "noise"))
            for pos in opened:
                self._add_alive(pos)
            fills.sort(key=_fill_time)
            bid_changes, ask_changes = self.book.move(self._bid_of(p_new), churn[k])
            yield Step(t0 + step_ms, p_new, fills, liqs, opened, closed, bid_changes, ask_changes)
        r = math.log(self.mid / start_mid)
        self.var = min(
            _VAR_CAP * self.var_long_run, self.omega + _GARCH_ALPHA * r * r + _GARCH_BETA * self.var
        )
        if len(self._long_heap) + len(self._short_heap) > 4 * len(self.positions) + 1000:
            self._compact_heaps()

    def _sweep(
        self, t0: int, step_ms: int, p_old: float, p_new: float, fills: list[Fill]
    ) -> list[LiquidationFill]:
        """Liquidate every position whose liquidation price the step's path crossed."""
        low, high = min(p_old, p_new), max(p_old, p_new)
        span = p_old - p_new
        out: list[LiquidationFill] = []
        for heap, is_long in ((self._long_heap, True), (self._short_heap, False)):
            while heap and ((-heap[0][0] >= low) if is_long else (heap[0][0] <= high)):
                _, pid = heapq.heappop(heap)
                if pid not in self.positions:
                    continue  # closed earlier: lazy deletion
                pos = self._remove_alive(pid)
                frac = (p_old - pos.liq) / span if span else 0.0
                t = t0 + int(min(max(frac, 0.0), 0.999) * step_ms)
                ticks = self._fill_ticks(pos.liq, is_long)
                fill = Fill(t, ticks, pos.lots, not is_long, "liq", pos)
                fills.append(fill)
                bk = bankruptcy_price(pos.side, self.price_of(pos.entry_ticks), pos.leverage)
                out.append(LiquidationFill(fill, pos, low, high, self._fill_ticks(bk, is_long)))
        out.sort(key=lambda item: (item.fill.t_ms, item.position.pid))
        return out

    def _fill_ticks(self, liq: float, is_long: bool) -> int:
        """The tick at or beyond ``liq``: floor for a long, ceil for a short (exact on a tick)."""
        x = liq * 10**self.spec.price_decimals / self.spec.tick_units
        nearest = round(x)
        if abs(x - nearest) < 1e-6:  # on a tick up to float noise: 41045.1 is tick 410451
            return nearest
        return math.floor(x) if is_long else math.ceil(x)

    def mix(self) -> dict[int, dict[int, tuple[int, int, int]]]:
        """Open positions per side and leverage: ``{side: {lev: (count, lots, entry_ticks*lots)}}``."""
        return {side: dict(per_lev) for side, per_lev in self._mix.items()}


def _fill_time(fill: Fill) -> int:
    return fill.t_ms
