"""Run a simulation: per symbol, the market, its venues' feeds, raw minute files and ground truth.

Symbols are independent (each has its own Generators seeded from ``(seed, crc32(symbol))``), so they
run in parallel processes and the files do not depend on the number of workers. Raw files go to
``raw/{SYMBOL}/{YYYY-MM-DD}/{HHMM}/{exchange}.sim.jsonl.zst`` (collector id ``sim``), ground truth
and the run manifest under ``sim/{run_id}/`` (:mod:`moonstream.sim.groundtruth`).

**Venues.** One market (one price path, one Binance order book) is shared by the exchanges of the
run (``exchanges``, default Binance, Bybit and OKX). Each position is assigned to one venue when it
opens, with the probabilities ``SimRates.share_*`` (normalized over the run's venues), and every
noise trade too; a venue's tape carries its own fills, its liquidation stream its own
liquidations, its open interest its share of the background plus its own open positions. The
assignments come from their own Generator, so the market and the Binance feed draw exactly what
they drew before venues existed: ``exchanges=("binance",)`` writes the same Binance files as a
Binance-only simulator. A symbol without an OKX contract value has no OKX feed (its positions go to
the other venues).
"""

from __future__ import annotations

import bisect
import logging
import os
import time
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from moonstream.collector.rawfile import write_minute_file
from moonstream.sim.binance import BinanceFeed, FeedBase, Line
from moonstream.sim.bybit import BybitFeed
from moonstream.sim.groundtruth import GroundTruthWriter, write_manifest
from moonstream.sim.market import LONG, SHORT, LiquidationFill, MarketSim, Position
from moonstream.sim.okx import OkxFeed, contract_value
from moonstream.sim.params import VENUES, SimRates, symbol_spec
from moonstream.store import open_store
from moonstream.symbols import Exchange, is_valid_symbol
from moonstream.timeutil import NS_PER_MINUTE, iso_minute, minute_date_hhmm

log = logging.getLogger(__name__)

COLLECTOR_ID = "sim"
SIM_VERSION = "sim-2"
DEFAULT_EXCHANGES: tuple[str, ...] = VENUES
"""The ``moonstream simulate`` default: every venue (what ``JobConfig`` expects by default)."""
LIBRARY_DEFAULT_EXCHANGES: tuple[str, ...] = ("binance",)
""":func:`run_simulation`'s default: Binance only, so existing callers (the demo, the jobs benchmark,
the viewer and history tests) keep their byte-identical Binance-only data."""


@dataclass
class SymbolReport:
    """What one symbol's simulation produced."""

    symbol: str
    files_written: int = 0
    files_unchanged: int = 0
    lines: int = 0
    lines_dropped_after_end: int = 0
    trades: int = 0
    diffs: int = 0
    snapshots: int = 0
    positions_opened: int = 0
    liquidations: int = 0
    force_orders_sent: int = 0
    cascades: int = 0
    groundtruth_objects: int = 0
    first_price: float = 0.0
    last_price: float = 0.0
    wall_s: float = 0.0
    venues: dict[str, dict[str, int]] = field(default_factory=dict)


@dataclass
class SimReport:
    """A whole run: its id, per-symbol reports, and the wall time (measured outside the model)."""

    run_id: str
    start_minute: int
    minutes: int
    seed: int
    symbols: dict[str, SymbolReport] = field(default_factory=dict)
    wall_s: float = 0.0

    @property
    def simulated_minutes_per_second(self) -> float:
        """Symbol-minutes simulated per wall second."""
        return len(self.symbols) * self.minutes / self.wall_s if self.wall_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "start": iso_minute(self.start_minute),
            "minutes": self.minutes,
            "seed": self.seed,
            "wall_s": round(self.wall_s, 3),
            "symbol_minutes_per_s": round(self.simulated_minutes_per_second, 2),
            "symbols": {name: asdict(rep) for name, rep in self.symbols.items()},
        }


def default_run_id(start_minute: int, minutes: int, seed: int) -> str:
    """``20240101T0000-1440m-s7``: the same arguments give the same id."""
    day, hhmm = minute_date_hhmm(start_minute)
    return f"{day.replace('-', '')}T{hhmm}-{minutes}m-s{seed}"


def symbol_rngs(seed: int, symbol: str, extra: int = 0) -> list[np.random.Generator]:
    """Independent Generators from ``(seed, crc32(symbol))``: the market's, the Binance feed's, then
    ``extra`` more (venue assignment, Bybit feed, OKX feed). The first two do not depend on ``extra``."""
    children = np.random.SeedSequence([seed, zlib.crc32(symbol.encode())]).spawn(2 + extra)
    return [np.random.default_rng(child) for child in children]


class VenueDraw:
    """Draws the venue of each position and noise trade with the configured shares."""

    def __init__(self, shares: dict[str, float], rng: np.random.Generator) -> None:
        self.venues = list(shares)
        self.rng = rng
        cumulative, total = [], 0.0
        for share in shares.values():
            total += share
            cumulative.append(total)
        self._cut = cumulative[:-1]
        self._u: list[float] = []

    def pick(self) -> str:
        if len(self.venues) == 1:
            return self.venues[0]
        if not self._u:
            self._u = self.rng.random(4096).tolist()
        return self.venues[bisect.bisect_right(self._cut, self._u.pop())]


def symbol_venues(symbol: str, exchanges: tuple[str, ...]) -> tuple[str, ...]:
    """The run's venues that can list ``symbol`` (OKX needs a configured contract value)."""
    return tuple(v for v in exchanges if v != "okx" or contract_value(symbol) is not None)


def _pos_fields(pos: Position, feed: FeedBase) -> str:
    side = "long" if pos.side == LONG else "short"
    return (
        f'"entry":"{feed.price_text(pos.entry_ticks)}","id":{pos.pid},"lev":{pos.leverage},'
        f'"liq":{pos.liq!r},"qty":"{feed.qty_text(pos.lots)}","side":"{side}","venue":"{pos.venue}"'
    )


def _mix_doc(mix: dict[int, tuple[int, int, int]], feed: FeedBase) -> dict[str, list[Any]]:
    spec = feed.spec
    usd_per_unit = spec.tick * spec.lot
    return {
        str(lev): [count, feed.qty_text(lots), round(value * usd_per_unit, 2)]
        for lev, (count, lots, value) in sorted(mix.items())
    }


def simulate_symbol(
    symbol: str,
    start_minute: int,
    minutes: int,
    seed: int,
    data_url: str,
    rates: SimRates,
    run_id: str,
    exchanges: tuple[str, ...] = DEFAULT_EXCHANGES,
) -> SymbolReport:
    """Simulate one symbol and write its venues' raw minute files and ground truth to ``data_url``."""
    started = time.perf_counter()
    store = open_store(data_url)
    spec = symbol_spec(symbol)
    venues = symbol_venues(symbol, exchanges)
    market_rng, binance_rng, venue_rng, bybit_rng, okx_rng = symbol_rngs(seed, symbol, 3)
    sim = MarketSim(spec, rates, market_rng)
    gt = GroundTruthWriter(store, run_id, symbol)
    text = FeedBase(spec, rates, venue_rng)  # decimal text only

    def on_liquidation(item: LiquidationFill, sent: bool, venue: str) -> None:
        fill = item.fill
        gt.add(
            f'{{"bk":"{text.price_text(item.bk_ticks)}",{_pos_fields(item.position, text)},'
            f'"high":{item.high!r},"low":{item.low!r},"price":"{text.price_text(fill.price_ticks)}",'
            f'"sent":{"true" if sent else "false"},"t":{fill.t_ms},"type":"liq"}}'
        )

    feeds: dict[str, BinanceFeed | BybitFeed | OkxFeed] = {}
    if "binance" in venues:
        feeds["binance"] = BinanceFeed(spec, rates, binance_rng, on_liquidation)
    if "bybit" in venues:
        feeds["bybit"] = BybitFeed(spec, rates, bybit_rng, on_liquidation)
    if "okx" in venues:
        feeds["okx"] = OkxFeed(spec, rates, okx_rng, on_liquidation)
    draw = VenueDraw(rates.venue_shares(venues), venue_rng)
    shares = rates.venue_shares(venues)
    background = {v: round(sim.background_lots * shares[v]) for v in venues}
    position_lots = dict.fromkeys(venues, 0)
    report = SymbolReport(symbol, first_price=sim.mid)
    start_ms = start_minute * 60_000
    snapshot_ms = rates.snapshot_every_minutes * 60_000
    for venue, feed in feeds.items():
        if isinstance(feed, BybitFeed):
            feed.start(start_ms, sim, background[venue])
        else:
            feed.start(start_ms)
    pending: dict[str, list[Line]] = {v: [] for v in feeds}
    single = venues[0] if len(venues) == 1 else None
    for minute in range(start_minute, start_minute + minutes):
        opened: dict[int, dict[int, tuple[int, int, int]]] = {LONG: {}, SHORT: {}}
        for step in sim.minute(minute * 60_000):
            for pos in step.opened:
                pos.venue = draw.pick()
                position_lots[pos.venue] += pos.lots
            for fill in step.closed:
                assert fill.position is not None
                position_lots[fill.position.venue] -= fill.position.lots
            for item in step.liquidations:
                position_lots[item.position.venue] -= item.position.lots
            if single is not None:
                fills_of = {single: step.fills}
                liqs_of = {single: step.liquidations}
            else:
                fills_of = {v: [] for v in venues}
                for fill in step.fills:
                    venue = fill.position.venue if fill.position is not None else draw.pick()
                    fills_of[venue].append(fill)
                liqs_of = {v: [] for v in venues}
                for item in step.liquidations:
                    liqs_of[item.position.venue].append(item)
            for venue, feed in feeds.items():
                oi_lots = background[venue] + position_lots[venue]
                if isinstance(feed, BinanceFeed):
                    feed.step(step, sim, fills_of[venue], liqs_of[venue], oi_lots)
                    if step.t_ms == start_ms + rates.step_ms or (step.t_ms - start_ms) % snapshot_ms == 0:
                        feed.snapshot(step.t_ms, sim)
                else:
                    feed.step(step.t_ms, sim, fills_of[venue], liqs_of[venue], oi_lots)
            for pos in step.opened:
                gt.add(f'{{{_pos_fields(pos, text)},"t":{pos.open_ms},"type":"open"}}')
                count, lots, value = opened[pos.side].get(pos.leverage, (0, 0, 0))
                opened[pos.side][pos.leverage] = (
                    count + 1,
                    lots + pos.lots,
                    value + pos.entry_ticks * pos.lots,
                )
            for fill in step.closed:
                assert fill.position is not None
                gt.add(
                    f'{{"id":{fill.position.pid},"price":"{text.price_text(fill.price_ticks)}",'
                    f'"t":{fill.t_ms},"type":"close"}}'
                )
            report.positions_opened += len(step.opened)
        boundary = (minute + 1) * NS_PER_MINUTE
        for venue, feed in feeds.items():
            lines = pending[venue] + feed.take_lines()
            pending[venue] = [line for line in lines if line[0] >= boundary]
            current = [line for line in lines if line[0] < boundary]
            if not current:
                continue
            if write_minute_file(store, symbol, minute, Exchange(venue), COLLECTOR_ID, current):
                report.files_written += 1
            else:
                report.files_unchanged += 1
            report.lines += len(current)
            counts = report.venues.setdefault(venue, {"lines": 0})
            counts["lines"] += len(current)
        mix = sim.mix()
        gt.add_obj(
            {
                "type": "minute",
                "minute": iso_minute(minute),
                "t": (minute + 1) * 60_000,
                "close": text.price_text(sim.book.best_bid),
                "oi": text.qty_text(sum(background.values()) + sum(position_lots.values())),
                "oi_by_venue": {v: text.qty_text(background[v] + position_lots[v]) for v in venues},
                "mix": {"long": _mix_doc(mix[LONG], text), "short": _mix_doc(mix[SHORT], text)},
                "opened": {"long": _mix_doc(opened[LONG], text), "short": _mix_doc(opened[SHORT], text)},
            }
        )
        gt.end_minute(minute)
    gt.flush()
    report.lines_dropped_after_end = sum(len(lines) for lines in pending.values())
    for venue, feed in feeds.items():
        counts = report.venues.setdefault(venue, {"lines": 0})
        counts.update(feed.counters)
        if isinstance(feed, BinanceFeed):
            report.trades = feed.counters["trades"]
            report.diffs = feed.counters["diffs"]
            report.snapshots = feed.counters["snapshots"]
            report.force_orders_sent = feed.counters["forceOrder_sent"]
    report.liquidations = sum(feed.counters["liquidations"] for feed in feeds.values())
    report.cascades = sim.cascades
    report.groundtruth_objects = len(gt.keys)
    report.last_price = sim.mid
    report.wall_s = time.perf_counter() - started
    log.info(
        "simulated %s on %s: %d minutes, %d lines, %d liquidations, %d cascades, %.1fs",
        symbol,
        ",".join(venues),
        minutes,
        report.lines,
        report.liquidations,
        report.cascades,
        report.wall_s,
    )
    return report


def run_simulation(
    symbols: list[str] | tuple[str, ...],
    start_minute: int,
    minutes: int,
    seed: int,
    data_url: str,
    rates: SimRates | None = None,
    *,
    run_id: str | None = None,
    workers: int | None = None,
    exchanges: tuple[str, ...] | list[str] = LIBRARY_DEFAULT_EXCHANGES,
) -> SimReport:
    """Simulate ``minutes`` minutes from ``start_minute`` for each symbol into the data store.

    ``exchanges`` are the venues sharing the market (any of ``binance``, ``bybit``, ``okx``; default
    Binance only, as before the venues existed; the command line defaults to all three).
    Deterministic: the same arguments write byte-identical objects, whatever ``workers`` is
    (default: one process per symbol up to the CPU count; 1 runs in this process).
    """
    rates = rates or SimRates()
    if minutes <= 0:
        raise ValueError("minutes must be positive")
    exchanges = tuple(dict.fromkeys(exchanges))
    unknown = [e for e in exchanges if e not in VENUES]
    if unknown or not exchanges:
        raise ValueError(f"exchanges must be some of {', '.join(VENUES)}, got {list(exchanges)}")
    exchanges = tuple(v for v in VENUES if v in exchanges)  # canonical order: the draw's order
    symbols = list(dict.fromkeys(symbols))
    for symbol in symbols:
        if not is_valid_symbol(symbol):
            raise ValueError(f"invalid symbol {symbol!r}")
    run_id = run_id or default_run_id(start_minute, minutes, seed)
    started = time.perf_counter()
    count = workers if workers is not None else min(len(symbols), os.cpu_count() or 1)
    for symbol in symbols:
        if not symbol_venues(symbol, exchanges):
            raise ValueError(f"{symbol}: none of {', '.join(exchanges)} can be simulated for it")
        rates.venue_shares(symbol_venues(symbol, exchanges))  # ValueError now rather than in a worker
    args = [(s, start_minute, minutes, seed, data_url, rates, run_id, exchanges) for s in symbols]
    if count <= 1 or len(symbols) == 1:
        reports = [simulate_symbol(*a) for a in args]
    else:
        with ProcessPoolExecutor(max_workers=count) as pool:
            reports = list(pool.map(simulate_symbol, *zip(*args, strict=True)))
    report = SimReport(run_id, start_minute, minutes, seed, {r.symbol: r for r in reports})
    report.wall_s = time.perf_counter() - started
    manifest = {
        "version": SIM_VERSION,
        "run_id": run_id,
        "start": iso_minute(start_minute),
        "minutes": minutes,
        "seed": seed,
        "exchanges": list(exchanges),
        "collector": COLLECTOR_ID,
        "rates": asdict(rates),
        "symbols": {
            r.symbol: {
                "spec": asdict(symbol_spec(r.symbol)),
                "positions_opened": r.positions_opened,
                "liquidations": r.liquidations,
                "force_orders_sent": r.force_orders_sent,
                "cascades": r.cascades,
                "lines": r.lines,
                "first_price": r.first_price,
                "last_price": r.last_price,
                "venues": r.venues,
            }
            for r in reports
        },
    }
    write_manifest(open_store(data_url), run_id, _jsonable(manifest))
    return report


def _jsonable(value: Any) -> Any:
    """Dict keys to strings (leverage weights are keyed by int)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value
