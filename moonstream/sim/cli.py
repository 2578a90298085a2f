"""``moonstream simulate``: write simulated raw minute files and ground truth to the data store.

``moonstream/cli.py`` registers the command with :func:`add_simulate_parser`; this module also
runs on its own (``python -m moonstream.sim.cli simulate ...``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import fields

from moonstream.jobs.config import DEFAULT_DATA_URL
from moonstream.sim.params import SimRates
from moonstream.sim.runner import DEFAULT_EXCHANGES, SimReport, run_simulation
from moonstream.timeutil import parse_minute

log = logging.getLogger(__name__)

_RATE_OPTIONS = {
    f.name: f for f in fields(SimRates) if f.name != "leverage_weights"
}  # every numeric rate becomes --rate NAME=VALUE


def _leverage_mix(text: str) -> dict[int, float]:
    """``5:1,10:1,20:0.9`` -> ``{5: 1.0, 10: 1.0, 20: 0.9}``."""
    out: dict[int, float] = {}
    for part in text.split(","):
        lev, sep, weight = part.partition(":")
        if not sep:
            raise argparse.ArgumentTypeError(f"leverage mix item {part!r} is not LEV:WEIGHT")
        try:
            out[int(lev)] = float(weight)
        except ValueError:
            raise argparse.ArgumentTypeError(f"leverage mix item {part!r} is not LEV:WEIGHT") from None
    return out


def rates_from_args(args: argparse.Namespace) -> SimRates:
    """SimRates from ``--rate NAME=VALUE`` options and ``--leverage-mix``; ValueError if invalid."""
    values: dict[str, object] = {}
    for item in args.rate or []:
        name, sep, text = item.partition("=")
        field = _RATE_OPTIONS.get(name.strip())
        if not sep or field is None:
            raise ValueError(f"--rate {item!r}: expected NAME=VALUE with NAME one of {sorted(_RATE_OPTIONS)}")
        values[field.name] = int(text) if field.type in ("int", int) else float(text)
    if args.leverage_mix:
        values["leverage_weights"] = args.leverage_mix
    return SimRates(**values)  # type: ignore[arg-type]


def cmd_simulate(args: argparse.Namespace) -> int:
    """Run :func:`run_simulation` from parsed arguments; prints the report as JSON on stdout."""
    try:
        rates = rates_from_args(args)
    except ValueError as exc:
        log.error("simulate: %s", exc)
        return 2
    symbols = [s.strip().upper() for s in args.symbols.split(",") if s.strip()]
    try:
        report = _run(args, symbols, rates)
    except ValueError as exc:
        log.error("simulate: %s", exc)
        return 2
    print(json.dumps(report.as_dict(), indent=1, sort_keys=True))
    return 0


def _run(args: argparse.Namespace, symbols: list[str], rates: SimRates) -> SimReport:
    return run_simulation(
        symbols,
        parse_minute(args.start),
        args.minutes,
        args.seed,
        args.data_url or DEFAULT_DATA_URL,
        rates,
        run_id=args.run_id,
        workers=args.workers,
        exchanges=tuple(e.strip().lower() for e in args.exchanges.split(",") if e.strip()),
    )


def add_simulate_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``simulate`` on the ``moonstream`` sub-command parsers."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "simulate", help="write simulated exchange feeds (raw minute files) and ground truth"
    )
    p.add_argument("--symbols", default="BTC,ETH,SOL", help="comma-separated symbols (default BTC,ETH,SOL)")
    p.add_argument("--start", required=True, help="first minute, UTC, e.g. 2024-01-01T00:00")
    p.add_argument("--minutes", type=int, required=True, help="how many minutes to simulate")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same bytes)")
    p.add_argument("--data", dest="data_url", help=f"data store URL (default {DEFAULT_DATA_URL})")
    p.add_argument(
        "--exchanges",
        default=",".join(DEFAULT_EXCHANGES),
        help="venues sharing the market, comma-separated (default binance,bybit,okx; "
        "their shares: --rate share_bybit=0.3 ...)",
    )
    p.add_argument("--run-id", help="ground-truth folder name (default from start, minutes and seed)")
    p.add_argument("--workers", type=int, help="processes (default: one per symbol up to the CPU count)")
    p.add_argument(
        "--leverage-mix", type=_leverage_mix, help="LEV:WEIGHT,... (default: the spec's BTC ladder weights)"
    )
    p.add_argument(
        "--rate",
        action="append",
        metavar="NAME=VALUE",
        help="override a SimRates field, e.g. --rate trades_per_sec=20 (repeatable; docs/simulator.md)",
    )
    p.set_defaults(func=cmd_simulate)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry point: ``python -m moonstream.sim.cli simulate ...``."""
    parser = argparse.ArgumentParser(prog="moonstream")
    add_simulate_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
