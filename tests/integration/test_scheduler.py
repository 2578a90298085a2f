"""The APScheduler-driven runners over real recorded minutes, with the clock accelerated 60x.

BTC and ETH have real raw files for 23:57..00:05; SOL has none. Every minute must be published
once, in order, for every symbol, and SOL's absence must not delay BTC or ETH.
"""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path

import pytest

from moonstream.collector.importers import import_file
from moonstream.jobs.config import JobConfig
from moonstream.jobs.minute import JobContext
from moonstream.jobs.scheduler import MinuteScheduler, ScheduleConfig
from moonstream.store import LocalStore
from moonstream.timeutil import NS_PER_SECOND, parse_minute
from tests.conftest import shared_file

pytestmark = [pytest.mark.integration, pytest.mark.shared_data]

FILES = [f"hftbacktest-binance-usdm/{s}usdt_2024071{d}.gz" for s in ("btc", "eth") for d in (8, 9)]
FIRST, LAST = parse_minute("2024-07-18T23:57"), parse_minute("2024-07-19T00:05")


class AcceleratedClock:
    """Simulated time that runs ``speed`` times faster than the real clock."""

    def __init__(self, start_ns: int, speed: int) -> None:
        self.start_ns, self.speed, self.t0 = start_ns, speed, time.monotonic_ns()

    def __call__(self) -> int:
        return self.start_ns + (time.monotonic_ns() - self.t0) * self.speed


def test_every_minute_published_once_in_order_per_symbol(tmp_path: Path) -> None:
    data = LocalStore(tmp_path / "data")
    for name in FILES:
        import_file(shared_file(name), data, symbols={"BTC", "ETH"})
    config = JobConfig(
        data_url=str(tmp_path / "data"), site_url=str(tmp_path / "site"),
        symbols=("BTC", "ETH", "SOL"), exchanges=("binance",),
    )  # fmt: skip
    ctx = JobContext.open(config)
    schedule = ScheduleConfig(
        tick_seconds=0.05, minute_delay_seconds=3, late_wait_seconds=20, warmup_minutes=0
    )
    clock = AcceleratedClock((FIRST + 1) * 60 * NS_PER_SECOND + 3 * NS_PER_SECOND, speed=60)
    scheduler = MinuteScheduler(ctx, schedule, clock)
    scheduler.start()
    deadline = time.monotonic() + 90
    try:
        while time.monotonic() < deadline:
            if all(r.history and r.history[-1].minute >= LAST for r in scheduler.runners.values()):
                break
            time.sleep(0.1)
    finally:
        scheduler.shutdown()
    for symbol, runner in scheduler.runners.items():
        minutes = [r.minute for r in runner.history]
        assert minutes[: LAST - FIRST + 1] == list(range(FIRST, LAST + 1)), symbol
        assert len(minutes) == len(set(minutes)), f"{symbol}: a minute ran twice"
    for minute in range(FIRST, LAST + 1):
        day_hhmm = time.strftime("%Y-%m-%d/%H%M", time.gmtime(minute * 60))
        for symbol in ("BTC", "ETH", "SOL"):
            raw = (tmp_path / "site" / "v1" / symbol / "market" / f"{day_hhmm}.json").read_bytes()
            document = json.loads(gzip.decompress(raw))
            if symbol == "SOL":
                assert document["sources"]["missing_exchanges"] == ["binance"]
            else:
                assert document["exchanges"]["binance"]["trade_count"] > 0
    btc = {r.minute: r for r in scheduler.runners["BTC"].history}
    assert all(btc[m].records > 0 for m in range(FIRST, LAST + 1))


class ManualClock:
    def __init__(self, now_ns: int) -> None:
        self.now_ns = now_ns

    def __call__(self) -> int:
        return self.now_ns


def _site_objects(root: Path) -> dict[str, object]:
    """Every visible site object; health.json without its live-only fields."""
    objects: dict[str, object] = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        if not path.is_file() or key.startswith("."):
            continue
        if key == "v1/health.json":
            health = json.loads(gzip.decompress(path.read_bytes()))
            for entry in health["symbols"].values():
                entry.pop("lag_seconds"), entry.pop("late_files")
            objects[key] = health
        else:
            objects[key] = path.read_bytes()
    return objects


def test_live_minutes_equal_a_backfill_and_late_files_are_reported(tmp_path: Path) -> None:
    from moonstream.collector.rawfile import write_minute_file
    from moonstream.jobs.backfill import backfill
    from moonstream.jobs.scheduler import SymbolRunner
    from moonstream.publish.site import publish_static_assets

    for name in ("live", "backfilled"):
        store = LocalStore(tmp_path / name / "data")
        for file in FILES[:2]:
            import_file(shared_file(file), store, symbols={"BTC"})

    def config(name: str) -> JobConfig:
        root = tmp_path / name
        return JobConfig(data_url=str(root / "data"), site_url=str(root / "site"), symbols=("BTC",),
                         exchanges=("binance",))  # fmt: skip

    live = JobContext.open(config("live"))
    publish_static_assets(live.site, live.layout)  # as the runtime does at start
    clock = ManualClock(0)
    runner = SymbolRunner(live, "BTC", ScheduleConfig(late_wait_seconds=20, warmup_minutes=0), clock)
    for minute in range(FIRST, LAST + 1):
        clock.now_ns = (minute + 1) * 60 * NS_PER_SECOND + 25 * NS_PER_SECOND
        runner.tick()
    assert [r.minute for r in runner.history] == list(range(FIRST, LAST + 1))

    backfilled = JobContext.open(config("backfilled"))
    backfill(backfilled, ("BTC",), FIRST, LAST, progress=False)
    live_site, backfilled_site = (
        _site_objects(tmp_path / "live" / "site"),
        _site_objects(tmp_path / "backfilled" / "site"),
    )
    assert live_site == backfilled_site
    assert len([k for k in live_site if "/market/2024-" in k]) == LAST - FIRST + 1

    # A file for 00:04 arrives after 00:04 was published: the next live minute reports it.
    late_ns = (LAST - 1) * 60 * NS_PER_SECOND + 5
    write_minute_file(live.data, "BTC", LAST - 1, "binance", "late-1", [(late_ns, "conn:open", b"{}")])
    clock.now_ns = (LAST + 2) * 60 * NS_PER_SECOND + 25 * NS_PER_SECOND
    runner.tick()
    assert any(key.endswith("binance.late-1.jsonl.zst") for key in runner.late_files)
    health = json.loads(gzip.decompress((tmp_path / "live" / "site" / "v1" / "health.json").read_bytes()))
    assert health["symbols"]["BTC"]["late_files"] == 1
    assert health["symbols"]["BTC"]["last_minute"] == "2024-07-19T00:06:00Z"
