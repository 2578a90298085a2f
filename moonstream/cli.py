"""The ``moonstream`` command: one entry point, one sub-command per part.

Logging handlers are configured here and nowhere else; each command builds its frozen config once.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from moonstream.collector.cli import add_collect_parser
from moonstream.config import ConfigError, build_config, load_toml_section
from moonstream.jobs.config import DEFAULT_DATA_URL, DEFAULT_SITE_URL, JobConfig
from moonstream.sim.cli import add_simulate_parser
from moonstream.timeutil import parse_minute

logger = logging.getLogger("moonstream")


def _symbols(text: str) -> tuple[str, ...]:
    return tuple(s.strip().upper() for s in text.split(",") if s.strip())


def _job_config(args: argparse.Namespace) -> JobConfig:
    values = load_toml_section(args.config, "jobs")
    for name in ("data_url", "site_url"):
        if getattr(args, name, None):
            values[name] = getattr(args, name)
    if getattr(args, "symbols", None):
        values["symbols"] = list(_symbols(args.symbols))
    if getattr(args, "replace_immutable", False):
        values["replace_immutable"] = True
    return build_config(JobConfig, values, section="jobs")


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="TOML file with [jobs] / [schedule] / [collector] tables")
    parser.add_argument("--data", dest="data_url", help=f"data store URL (default {DEFAULT_DATA_URL})")
    parser.add_argument("--site", dest="site_url", help=f"site store URL (default {DEFAULT_SITE_URL})")


def cmd_import(args: argparse.Namespace) -> int:
    from moonstream.collector.importers import run_import

    symbols = None if args.symbols.lower() == "all" else set(_symbols(args.symbols))
    reports = run_import(
        [Path(p) for p in args.files], args.data_url or DEFAULT_DATA_URL, symbols, args.format
    )
    return 0 if reports else 1


def cmd_backfill(args: argparse.Namespace) -> int:
    from moonstream.jobs.backfill import backfill, plan_backfill, tune_gc_for_backfill
    from moonstream.jobs.minute import JobContext

    config = _job_config(args)
    ctx = JobContext.open(config)
    first, last = parse_minute(args.start), parse_minute(args.end)
    if args.dry_run:
        for plan in plan_backfill(ctx, config.symbols, first, last):
            print(
                f"{plan.symbol}: {plan.minutes} minutes, {plan.minutes_with_data} with raw files, "
                f"{plan.already_done} already done, {plan.to_process} to process"
            )
        return 0
    tune_gc_for_backfill()
    report = backfill(
        ctx, config.symbols, first, last, workers=args.workers, progress=False if args.no_progress else None
    )
    print(f"backfill done: {report.summary()}", file=sys.stderr)
    return 0


def cmd_minute(args: argparse.Namespace) -> int:
    from moonstream.jobs.minute import JobContext, run_minute

    config = _job_config(args)
    ctx = JobContext.open(config)
    for symbol in config.symbols:
        run_minute(ctx, symbol, parse_minute(args.minute))
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    import time

    from moonstream.jobs.retention import RetentionPolicy, prune_checkpoints
    from moonstream.store import open_store
    from moonstream.timeutil import minute_of

    config = _job_config(args)
    store = open_store(config.data_url)
    now = parse_minute(args.now) if args.now else minute_of(time.time_ns())
    policy = RetentionPolicy.from_config(config)
    for symbol in config.symbols:
        report = prune_checkpoints(store, symbol, now, policy, dry_run=args.dry_run)
        print(report.summary())
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from moonstream.publish.server import make_server
    from moonstream.store import open_store

    server = make_server(open_store(args.site_url or DEFAULT_SITE_URL), args.host, args.port)
    host, port = server.server_address[:2]
    logger.info("serving the site %s at http://%s:%s/", args.site_url or DEFAULT_SITE_URL, host, port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        logger.info("stopped")
    finally:
        server.server_close()
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from moonstream.jobs.scheduler import ScheduleConfig
    from moonstream.runtime import run_embedded

    schedule = build_config(ScheduleConfig, load_toml_section(args.config, "schedule"), section="schedule")
    return run_embedded(_job_config(args), host=args.host, port=args.port, schedule=schedule)


def cmd_schedule(args: argparse.Namespace) -> int:
    from moonstream.jobs.scheduler import ScheduleConfig
    from moonstream.runtime import run_scheduler

    schedule = build_config(ScheduleConfig, load_toml_section(args.config, "schedule"), section="schedule")
    return run_scheduler(_job_config(args), schedule)


def cmd_demo(args: argparse.Namespace) -> int:
    from moonstream.runtime import run_demo

    return run_demo(_job_config(args), host=args.host, port=args.port, serve=not args.no_serve)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="moonstream", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("import", help="import third-party recordings into raw minute files")
    p.add_argument("files", nargs="+")
    p.add_argument("--data", dest="data_url", help=f"data store URL (default {DEFAULT_DATA_URL})")
    p.add_argument(
        "--symbols", default="BTC,ETH,SOL", help="symbols to import, or 'all' (default BTC,ETH,SOL)"
    )
    p.add_argument("--format", default="auto", help="auto, hftbacktest, cryptofeed, liq-csv, trades-csv")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("backfill", help="run the minute job over a range of stored minutes")
    _add_common(p)
    p.add_argument("--symbols", help="comma-separated symbols (default: the configured ones)")
    p.add_argument("--from", dest="start", required=True, help="first minute, UTC, e.g. 2024-07-18T23:57")
    p.add_argument("--to", dest="end", required=True, help="last minute (inclusive)")
    p.add_argument(
        "--replace-immutable",
        action="store_true",
        help="replace immutable versions whose bytes changed (after an engine change)",
    )
    p.add_argument("--workers", type=int, default=1, help="processes, one symbol each (default 1)")
    p.add_argument("--dry-run", action="store_true", help="say what would be done, write nothing")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_backfill)

    p = sub.add_parser("minute", help="run one minute job")
    _add_common(p)
    p.add_argument("--symbols", help="comma-separated symbols")
    p.add_argument("--minute", required=True)
    p.set_defaults(func=cmd_minute)

    p = sub.add_parser(
        "prune",
        help="delete old state checkpoints: every minute's kept for checkpoint_keep_all_hours, "
        "then the :00 one's for checkpoint_keep_hourly_days ([jobs] config)",
    )
    _add_common(p)
    p.add_argument("--symbols", help="comma-separated symbols (default: the configured ones)")
    p.add_argument("--now", help="count ages from this minute, UTC (default: the current time)")
    p.add_argument("--dry-run", action="store_true", help="say what would be deleted, delete nothing")
    p.set_defaults(func=cmd_prune)

    add_collect_parser(sub)
    add_simulate_parser(sub)

    p = sub.add_parser("schedule", help="run the per-symbol minute jobs as minutes close")
    _add_common(p)
    p.add_argument("--symbols", help="comma-separated symbols")
    p.set_defaults(func=cmd_schedule)

    p = sub.add_parser("serve", help="serve the site store over HTTP with CDN headers")
    p.add_argument("--site", dest="site_url", help=f"site store URL (default {DEFAULT_SITE_URL})")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.set_defaults(func=cmd_serve)

    for name, func, text in (
        ("run", cmd_run, "the live embedded runtime"),
        ("demo", cmd_demo, "offline demo: shared data through the pipeline, then serve"),
    ):
        p = sub.add_parser(name, help=text)
        _add_common(p)
        p.add_argument("--symbols", help="comma-separated symbols")
        p.add_argument("--host", default="127.0.0.1")
        p.add_argument("--port", type=int, default=8080)
        if name == "demo":
            p.add_argument("--no-serve", action="store_true", help="build the site and exit")
        p.set_defaults(func=func)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("apscheduler").setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        logger.error("configuration: %s", exc)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
