"""Simulator speed: JSON figures on stdout (issue 6: 24 h x 3 symbols in under 10 minutes).

    .venv/bin/python bench/sim.py [--minutes 60] [--exchanges binance,bybit,okx]

Runs the default market for 1 symbol (one process) and for BTC, ETH, SOL (one process per symbol, up
to the CPU count) into a temporary local data store, with the given venues (default all three), and
extrapolates linearly to 24 hours. Wall clock on this machine; nothing here asserts a threshold.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from moonstream.sim import run_simulation
from moonstream.timeutil import parse_minute

START = parse_minute("2024-01-01T00:00")


def _size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def bench(
    symbols: list[str], minutes: int, workers: int | None, exchanges: tuple[str, ...]
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="moonstream-bench-sim-") as tmp:
        started = time.perf_counter()
        report = run_simulation(symbols, START, minutes, 1, tmp, workers=workers, exchanges=exchanges)
        wall = time.perf_counter() - started
        lines = sum(r.lines for r in report.symbols.values())
        per_minute_s = wall / minutes
        return {
            "symbols": symbols,
            "exchanges": list(exchanges),
            "workers": workers if workers is not None else min(len(symbols), os.cpu_count() or 1),
            "minutes": minutes,
            "wall_s": round(wall, 2),
            "simulated_minutes_per_wall_s": round(minutes / wall, 2),
            "symbol_minutes_per_wall_s": round(len(symbols) * minutes / wall, 2),
            "speedup_vs_real_time": round(minutes * 60 / wall, 1),
            "lines": lines,
            "lines_per_s": round(lines / wall),
            "liquidations": sum(r.liquidations for r in report.symbols.values()),
            "bytes_stored": _size(Path(tmp)),
            "extrapolated_24h_s": round(per_minute_s * 1440, 1),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=int, default=60)
    parser.add_argument("--exchanges", default="binance,bybit,okx", help="venues (comma-separated)")
    args = parser.parse_args()
    exchanges = tuple(e.strip() for e in args.exchanges.split(",") if e.strip())
    figures = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "one_symbol": bench(["BTC"], args.minutes, 1, exchanges),
        "three_symbols": bench(["BTC", "ETH", "SOL"], args.minutes, None, exchanges),
    }
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
