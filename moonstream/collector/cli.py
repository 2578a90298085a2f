"""``moonstream collect``: run the live collector (also ``python -m moonstream.collector.cli collect``)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from moonstream.collector.config import CollectorConfig
from moonstream.config import ConfigError, build_config, load_toml_section


def _csv(text: str, upper: bool) -> list[str]:
    items = [s.strip() for s in text.split(",") if s.strip()]
    return [s.upper() if upper else s.lower() for s in items]


def collector_config(args: argparse.Namespace) -> CollectorConfig:
    """The ``[collector]`` table of ``--config`` with command-line overrides applied."""
    values: dict[str, Any] = load_toml_section(args.config, "collector")
    if args.data_url:
        values["data_url"] = args.data_url
    if args.spool_dir:
        values["spool_dir"] = args.spool_dir
    if args.collector_id:
        values["collector_id"] = args.collector_id
    if args.symbols:
        values["symbols"] = _csv(args.symbols, upper=True)
    if args.exchanges:
        values["exchanges"] = _csv(args.exchanges, upper=False)
    return build_config(CollectorConfig, values, section="collector")


def cmd_collect(args: argparse.Namespace) -> int:
    """Build the config and run the collector until SIGTERM/SIGINT."""
    from moonstream.collector.capture import run_collector

    return run_collector(collector_config(args))


def add_collect_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``collect`` on an ``add_subparsers()`` object; returns the new parser."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "collect", help="capture live exchange feeds into raw minute files"
    )
    p.add_argument("--config", type=Path, help="TOML file with a [collector] table")
    p.add_argument("--data", dest="data_url", help="data store URL (default var/data)")
    p.add_argument("--spool", dest="spool_dir", help="spool directory for partial files (default var/spool)")
    p.add_argument("--id", dest="collector_id", help="collector id, [a-z0-9][a-z0-9-]{0,40} (default c1)")
    p.add_argument("--symbols", help="comma-separated symbols (default BTC,ETH,SOL)")
    p.add_argument("--exchanges", help="comma-separated exchanges (default binance)")
    p.set_defaults(func=cmd_collect)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry point with the same ``collect`` sub-command as ``moonstream``."""
    parser = argparse.ArgumentParser(prog="moonstream-collector")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    add_collect_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.func(args))
    except ConfigError as exc:
        logging.getLogger("moonstream").error("configuration: %s", exc)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
