"""The embedded runtime (``moonstream run``) and the offline demo (``moonstream demo``).

``run`` is the whole embedded system in one process: the collector (on its own event-loop thread),
the per-symbol minute jobs (:mod:`moonstream.jobs.scheduler`) and the local site server. With no
exchange reachable the collector keeps reconnecting with backoff and ``v1/health.json`` says the
exchanges are disconnected.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from dataclasses import replace
from pathlib import Path
from types import FrameType

from moonstream.collector.capture import Collector
from moonstream.collector.config import CollectorConfig
from moonstream.collector.exchanges import EXCHANGES
from moonstream.config import build_config
from moonstream.jobs.config import JobConfig
from moonstream.jobs.minute import JobContext
from moonstream.jobs.scheduler import MinuteScheduler, ScheduleConfig
from moonstream.publish.server import serve_in_thread
from moonstream.publish.site import publish_static_assets
from moonstream.timeutil import parse_minute

logger = logging.getLogger(__name__)

DEMO_FILES = (
    "hftbacktest-binance-usdm/btcusdt_20240718.gz",
    "hftbacktest-binance-usdm/btcusdt_20240719.gz",
    "hftbacktest-binance-usdm/ethusdt_20240718.gz",
    "hftbacktest-binance-usdm/ethusdt_20240719.gz",
)
DEMO_RANGE = ("2024-07-18T23:57", "2024-07-19T00:05")
DEMO_SIM_START, DEMO_SIM_MINUTES, DEMO_SIM_SEED = "2024-01-01T00:00", 90, 7
#: The demo publishes its last minutes one at a time while serving, so the page moves.
DEMO_LIVE_MINUTES, DEMO_STEP_SECONDS = 30, 10.0


def _install_stop_handlers(stop: threading.Event) -> None:
    def handle(signum: int, _frame: FrameType | None) -> None:
        logger.info("received %s: finishing the running minute, then stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, handle)
    signal.signal(signal.SIGTERM, handle)


def run_scheduler(config: JobConfig, schedule: ScheduleConfig) -> int:
    """``moonstream schedule``: the per-symbol minute jobs alone, until SIGINT/SIGTERM."""
    ctx = JobContext.open(config)
    publish_static_assets(ctx.site, ctx.layout)
    stop = threading.Event()
    _install_stop_handlers(stop)
    scheduler = MinuteScheduler(ctx, schedule)
    scheduler.start()
    logger.info("minute jobs scheduled for %s (data %s, site %s)", ",".join(config.symbols),
                config.data_url, config.site_url)  # fmt: skip
    try:
        stop.wait()
    finally:
        scheduler.shutdown()
        logger.info("stopped cleanly")
    return 0


def _start_collector(config: JobConfig) -> tuple[Collector, asyncio.AbstractEventLoop, threading.Thread]:
    """The collector on its own event loop thread, recording into the jobs' data store."""
    exchanges = [e for e in config.exchanges if e in EXCHANGES]
    collector_config = build_config(
        CollectorConfig,
        {"data_url": config.data_url, "symbols": list(config.symbols), "exchanges": exchanges},
        section="collector",
    )
    collector = Collector(collector_config)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(collector.run(),), name="collector")
    thread.start()
    logger.info("collector recording %s from %s", ",".join(config.symbols), ",".join(exchanges))
    return collector, loop, thread


def run_embedded(config: JobConfig, *, host: str, port: int, schedule: ScheduleConfig | None = None) -> int:
    """Collector, minute jobs and the site server in one process, until SIGINT/SIGTERM."""
    ctx = JobContext.open(config)
    publish_static_assets(ctx.site, ctx.layout)
    server, _thread = serve_in_thread(ctx.site, host, port)
    bound_host, bound_port = server.server_address[:2]
    logger.info("site %s served at http://%s:%s/", config.site_url, bound_host, bound_port)
    logger.info("data store %s; symbols %s", config.data_url, ",".join(config.symbols))
    stop = threading.Event()
    _install_stop_handlers(stop)
    collector, loop, collector_thread = _start_collector(config)
    scheduler = MinuteScheduler(ctx, schedule or ScheduleConfig())
    scheduler.start()
    try:
        stop.wait()
    finally:
        loop.call_soon_threadsafe(collector.stop)
        collector_thread.join(timeout=60)
        scheduler.shutdown()
        server.shutdown()
        server.server_close()
        logger.info("stopped cleanly")
    return 0


def _shared_data_dir() -> Path:
    return Path(os.environ.get("MOONSTREAM_SHARED_DATA", Path.cwd().parent / "shared" / "data"))


def run_demo(config: JobConfig, *, host: str, port: int, serve: bool) -> int:
    """Real recordings from the shared data (or, without them, a simulated market) through the whole
    pipeline: import or simulate, backfill, then serve the site."""
    from moonstream.collector.importers import run_import
    from moonstream.jobs.backfill import backfill
    from moonstream.sim import run_simulation

    if config.data_url == JobConfig().data_url and config.site_url == JobConfig().site_url:
        config = replace(config, data_url="var/demo/data", site_url="var/demo/site")
    shared = _shared_data_dir()
    files = [shared / name for name in DEMO_FILES]
    if all(f.is_file() for f in files):
        symbols = tuple(s for s in config.symbols if s in ("BTC", "ETH")) or ("BTC", "ETH")
        config = replace(config, symbols=symbols, exchanges=("binance",))
        run_import(files, config.data_url, set(symbols), "auto")
        first, last = parse_minute(DEMO_RANGE[0]), parse_minute(DEMO_RANGE[1])
    else:
        logger.warning(
            "shared data not found at %s (set MOONSTREAM_SHARED_DATA): using the simulator", shared
        )
        config = replace(config, data_url=config.data_url + "-sim", site_url=config.site_url + "-sim",
                         exchanges=("binance",))  # fmt: skip
        first = parse_minute(DEMO_SIM_START)
        last = first + DEMO_SIM_MINUTES - 1
        run_simulation(config.symbols, first, DEMO_SIM_MINUTES, DEMO_SIM_SEED, config.data_url)
    ctx = JobContext.open(config)
    if not serve:
        backfill(ctx, config.symbols, first, last, workers=min(2, len(config.symbols)))
        return 0
    # Most of the range at once; then, while serving, the rest one minute every few seconds, so the
    # viewer's heatmaps move as they would live.
    live_from = max(first, last - DEMO_LIVE_MINUTES + 1)
    if live_from > first:
        backfill(ctx, config.symbols, first, live_from - 1, workers=min(2, len(config.symbols)))
    server, _thread = serve_in_thread(ctx.site, host, port)
    bound_host, bound_port = server.server_address[:2]
    logger.info("demo site at http://%s:%s/ (Ctrl-C to stop)", bound_host, bound_port)
    stop = threading.Event()
    _install_stop_handlers(stop)
    minute = live_from
    while minute <= last and not stop.is_set():
        backfill(ctx, config.symbols, minute, minute, progress=False)
        minute += 1
        stop.wait(DEMO_STEP_SECONDS)
    if minute > last:
        logger.info("demo: every minute published; still serving (Ctrl-C to stop)")
    while not stop.wait(1.0):
        pass
    server.shutdown()
    server.server_close()
    return 0


__all__ = ["run_demo", "run_embedded", "run_scheduler"]
