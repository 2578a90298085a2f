"""A backfill that starts cold after the only order-book snapshot warms up from that snapshot: its
first minute is the same, byte for byte, as in a backfill that started at the snapshot (issue 4:
"Cold start in a backfill: search back for the nearest snapshot; never invent a book")."""

from __future__ import annotations

from pathlib import Path

import pytest

from moonstream.collector.importers import import_file
from moonstream.jobs.backfill import backfill, snapshot_minute_before
from moonstream.jobs.config import JobConfig
from moonstream.jobs.minute import PRODUCTS, JobContext
from moonstream.store import LocalStore
from moonstream.timeutil import parse_minute
from tests.conftest import shared_file

pytestmark = [pytest.mark.integration, pytest.mark.shared_data]


def _context(root: Path) -> JobContext:
    store = LocalStore(root / "data")
    import_file(shared_file("hftbacktest-binance-usdm/btcusdt_20240718.gz"), store, symbols={"BTC"})
    config = JobConfig(data_url=str(root / "data"), site_url=str(root / "site"), symbols=("BTC",),
                       exchanges=("binance",))  # fmt: skip
    return JobContext.open(config)


def test_cold_backfill_warms_up_from_the_nearest_snapshot(tmp_path: Path) -> None:
    snapshot, first = parse_minute("2024-07-18T23:57"), parse_minute("2024-07-18T23:59")
    from_snapshot, cold = _context(tmp_path / "a"), _context(tmp_path / "b")
    assert snapshot_minute_before(cold, "BTC", first) == snapshot
    assert snapshot_minute_before(cold, "BTC", snapshot) is None, "nothing before the recording"

    backfill(from_snapshot, ("BTC",), snapshot, first, progress=False)
    backfill(cold, ("BTC",), first, first, progress=False)
    for product in PRODUCTS:
        key = f"v1/BTC/{product}/2024-07-18/2359.json"
        assert cold.site.read_bytes(key) == from_snapshot.site.read_bytes(key), product
    assert not cold.site.exists("v1/BTC/market/2024-07-18/2358.json"), "warm-up minutes are not published"
    assert cold.site.exists("v1/BTC/orderbook_heatmap/2024-07-18/2359.bin"), "the book was there at 23:59"
