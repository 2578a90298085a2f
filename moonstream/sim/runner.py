"""Run a simulation: per symbol, the market, its Binance feed, raw minute files and ground truth.

Symbols are independent (each has its own Generator seeded from ``(seed, crc32(symbol))``), so they
run in parallel processes and the files do not depend on the number of workers. Raw files go to
``raw/{SYMBOL}/{YYYY-MM-DD}/{HHMM}/binance.sim.jsonl.zst`` (collector id ``sim``), ground truth and
the run manifest under ``sim/{run_id}/`` (:mod:`moonstream.sim.groundtruth`).
"""

from __future__ import annotations

import logging
import os
import time
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from moonstream.collector.rawfile import write_minute_file
from moonstream.sim.binance import BinanceFeed, Line
from moonstream.sim.groundtruth import GroundTruthWriter, write_manifest
from moonstream.sim.market import LONG, SHORT, LiquidationFill, MarketSim, Position
from moonstream.sim.params import SimRates, symbol_spec
from moonstream.store import open_store
from moonstream.symbols import Exchange, is_valid_symbol
from moonstream.timeutil import NS_PER_MINUTE, iso_minute, minute_date_hhmm

log = logging.getLogger(__name__)

COLLECTOR_ID = "sim"
SIM_VERSION = "sim-1"


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


def symbol_rngs(seed: int, symbol: str) -> tuple[np.random.Generator, np.random.Generator]:
    """Independent Generators for a symbol's market and its feed, from ``(seed, crc32(symbol))``."""
    market, feed = np.random.SeedSequence([seed, zlib.crc32(symbol.encode())]).spawn(2)
    return np.random.default_rng(market), np.random.default_rng(feed)


def _pos_fields(pos: Position, feed: BinanceFeed) -> str:
    side = "long" if pos.side == LONG else "short"
    return (
        f'"entry":"{feed.price_text(pos.entry_ticks)}","id":{pos.pid},"lev":{pos.leverage},'
        f'"liq":{pos.liq!r},"qty":"{feed.qty_text(pos.lots)}","side":"{side}"'
    )


def _mix_doc(mix: dict[int, tuple[int, int, int]], feed: BinanceFeed) -> dict[str, list[Any]]:
    spec = feed.spec
    usd_per_unit = spec.tick * spec.lot
    return {
        str(lev): [count, feed.qty_text(lots), round(value * usd_per_unit, 2)]
        for lev, (count, lots, value) in sorted(mix.items())
    }


def simulate_symbol(
    symbol: str, start_minute: int, minutes: int, seed: int, data_url: str, rates: SimRates, run_id: str
) -> SymbolReport:
    """Simulate one symbol and write its raw minute files and ground truth to ``data_url``."""
    started = time.perf_counter()
    store = open_store(data_url)
    spec = symbol_spec(symbol)
    market_rng, feed_rng = symbol_rngs(seed, symbol)
    sim = MarketSim(spec, rates, market_rng)
    gt = GroundTruthWriter(store, run_id, symbol)

    def on_liquidation(item: LiquidationFill, sent: bool) -> None:
        fill = item.fill
        gt.add(
            f'{{{_pos_fields(item.position, feed)},"high":{item.high!r},"low":{item.low!r},'
            f'"price":"{feed.price_text(fill.price_ticks)}","sent":{"true" if sent else "false"},'
            f'"t":{fill.t_ms},"type":"liq"}}'
        )

    feed = BinanceFeed(spec, rates, feed_rng, on_liquidation)
    report = SymbolReport(symbol, first_price=sim.mid)
    start_ms = start_minute * 60_000
    snapshot_ms = rates.snapshot_every_minutes * 60_000
    feed.start(start_ms)
    pending: list[Line] = []
    for minute in range(start_minute, start_minute + minutes):
        opened: dict[int, dict[int, tuple[int, int, int]]] = {LONG: {}, SHORT: {}}
        for step in sim.minute(minute * 60_000):
            feed.step(step, sim)
            if step.t_ms == start_ms + rates.step_ms or (step.t_ms - start_ms) % snapshot_ms == 0:
                feed.snapshot(step.t_ms, sim)
            for pos in step.opened:
                gt.add(f'{{{_pos_fields(pos, feed)},"t":{pos.open_ms},"type":"open"}}')
                count, lots, value = opened[pos.side].get(pos.leverage, (0, 0, 0))
                opened[pos.side][pos.leverage] = (
                    count + 1,
                    lots + pos.lots,
                    value + pos.entry_ticks * pos.lots,
                )
            for fill in step.closed:
                assert fill.position is not None
                gt.add(
                    f'{{"id":{fill.position.pid},"price":"{feed.price_text(fill.price_ticks)}",'
                    f'"t":{fill.t_ms},"type":"close"}}'
                )
            report.positions_opened += len(step.opened)
        lines = pending + feed.take_lines()
        boundary = (minute + 1) * NS_PER_MINUTE
        pending = [line for line in lines if line[0] >= boundary]
        current = [line for line in lines if line[0] < boundary]
        if write_minute_file(store, symbol, minute, Exchange.BINANCE, COLLECTOR_ID, current):
            report.files_written += 1
        else:
            report.files_unchanged += 1
        report.lines += len(current)
        mix = sim.mix()
        gt.add_obj(
            {
                "type": "minute",
                "minute": iso_minute(minute),
                "t": (minute + 1) * 60_000,
                "close": feed.price_text(sim.book.best_bid),
                "oi": feed.qty_text(sim.open_interest_lots),
                "mix": {"long": _mix_doc(mix[LONG], feed), "short": _mix_doc(mix[SHORT], feed)},
                "opened": {"long": _mix_doc(opened[LONG], feed), "short": _mix_doc(opened[SHORT], feed)},
            }
        )
        gt.end_minute(minute)
    gt.flush()
    report.lines_dropped_after_end = len(pending)
    report.trades = feed.counters["trades"]
    report.diffs = feed.counters["diffs"]
    report.snapshots = feed.counters["snapshots"]
    report.liquidations = feed.counters["liquidations"]
    report.force_orders_sent = feed.counters["forceOrder_sent"]
    report.cascades = sim.cascades
    report.groundtruth_objects = len(gt.keys)
    report.last_price = sim.mid
    report.wall_s = time.perf_counter() - started
    log.info(
        "simulated %s: %d minutes, %d lines, %d liquidations (%d pushed), %d cascades, %.1fs",
        symbol,
        minutes,
        report.lines,
        report.liquidations,
        report.force_orders_sent,
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
) -> SimReport:
    """Simulate ``minutes`` minutes from ``start_minute`` for each symbol into the data store.

    Deterministic: the same arguments write byte-identical objects, whatever ``workers`` is (default:
    one process per symbol up to the CPU count; 1 runs in this process).
    """
    rates = rates or SimRates()
    if minutes <= 0:
        raise ValueError("minutes must be positive")
    symbols = list(dict.fromkeys(symbols))
    for symbol in symbols:
        if not is_valid_symbol(symbol):
            raise ValueError(f"invalid symbol {symbol!r}")
    run_id = run_id or default_run_id(start_minute, minutes, seed)
    started = time.perf_counter()
    count = workers if workers is not None else min(len(symbols), os.cpu_count() or 1)
    args = [(s, start_minute, minutes, seed, data_url, rates, run_id) for s in symbols]
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
        "exchange": Exchange.BINANCE.value,
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
