"""History chunks from real backfills: imported Binance BTC recordings, and a simulated 3-hour run.

The chunks and the index are read back from the site directory and checked against the per-minute
``.bin`` objects they are made of; a 720-minute window is fetched with the objects ``plan_fetches``
names, at most 13.
"""

from __future__ import annotations

import gzip
import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from moonstream.collector.importers import import_file
from moonstream.jobs.backfill import backfill
from moonstream.jobs.config import JobConfig
from moonstream.jobs.minute import JobContext
from moonstream.publish.frames import decode_frames, decode_liq_frames
from moonstream.publish.history import chunk_key, index_key, plan_fetches
from moonstream.publish.layout import SiteLayout
from moonstream.sim import SimRates, run_simulation
from moonstream.store.local import LocalStore
from moonstream.timeutil import parse_minute
from tests.conftest import shared_file

pytestmark = [pytest.mark.integration]

LAYOUT = SiteLayout()
FILES = ("hftbacktest-binance-usdm/btcusdt_20240718.gz", "hftbacktest-binance-usdm/btcusdt_20240719.gz")
DECODERS: dict[str, Callable[[bytes], Sequence[Any]]] = {
    "orderbook_heatmap": decode_frames,
    "liq_heatmap": decode_liq_frames,
}


def run_backfill(data: Path, site: Path, first: str, last: str) -> None:
    config = JobConfig(data_url=str(data), site_url=str(site), symbols=("BTC",), exchanges=("binance",))
    backfill(JobContext.open(config), ("BTC",), parse_minute(first), parse_minute(last), progress=False)


def read_index(site: Path, product: str) -> dict:
    data = (site / index_key(LAYOUT, "BTC", product)).read_bytes()
    return json.loads(gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data)


def minute_bins(site: Path, product: str, first: int, last: int) -> bytes:
    """The per-minute ``.bin`` objects of ``first..last`` concatenated (what the chunks are made of)."""
    parts = []
    for minute in range(first, last + 1):
        path = site / LAYOUT.version_key("BTC", product, minute, "bin")
        parts.append(path.read_bytes() if path.exists() else b"")
    return b"".join(parts)


def chunk(site: Path, product: str, hour: str, *, partial: bool = False) -> bytes:
    return (site / chunk_key(LAYOUT, "BTC", product, parse_minute(hour), partial=partial)).read_bytes()


@pytest.fixture(scope="module")
def real_site(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    paths = [shared_file(name) for name in FILES]
    data, site = tmp_path_factory.mktemp("data"), tmp_path_factory.mktemp("site")
    for path in paths:
        import_file(path, LocalStore(data), symbols={"BTC"})
    run_backfill(data, site, "2024-07-18T23:57", "2024-07-19T00:05")
    return data, site


@pytest.mark.shared_data
@pytest.mark.parametrize("product", sorted(DECODERS))
def test_real_backfill_chunks_and_index(real_site: tuple[Path, Path], product: str) -> None:
    _, site = real_site
    decode = DECODERS[product]
    per_minute = 2 if product == "orderbook_heatmap" else 1
    index = read_index(site, product)
    assert index["minute"] == "2024-07-19T00:05:00Z"
    assert index["frame_size"] == 4096
    assert set(index["hours"]) == {"2024-07-18T23:00:00Z", "2024-07-19T00:00:00Z"}

    # 23:xx: only 23:57-23:59 are published, so the hour is partial (an immutable chunk would have to
    # change when 23:00-23:56 are backfilled); its partial chunk holds those three minutes' frames.
    late = index["hours"]["2024-07-18T23:00:00Z"]
    assert late["complete"] is False
    assert late["minutes"][:57] == "-" * 57
    expected_23 = minute_bins(
        site, product, parse_minute("2024-07-18T23:57"), parse_minute("2024-07-18T23:59")
    )
    assert chunk(site, product, "2024-07-18T23:00", partial=True) == expected_23
    assert late["frames"] == sum(int(c) for c in late["minutes"][57:]) == len(expected_23) // 4096
    assert late["frames"] == 3 * per_minute
    assert not (site / chunk_key(LAYOUT, "BTC", product, parse_minute("2024-07-18T23:00"))).exists()

    # 00:xx: the current partial hour, six minutes.
    early = index["hours"]["2024-07-19T00:00:00Z"]
    assert early["complete"] is False and early["minutes"][6:] == "-" * 54
    partial_00 = chunk(site, product, "2024-07-19T00:00", partial=True)
    assert partial_00 == minute_bins(
        site, product, parse_minute("2024-07-19T00:00"), parse_minute("2024-07-19T00:05")
    )
    assert early["frames"] == len(partial_00) // 4096 == sum(int(c) for c in early["minutes"][:6])
    assert all(int(c) <= per_minute for c in early["minutes"][:6])
    assert early["frames"] >= 6 * per_minute - 1  # real data: an order-book window may lack a book

    frames = decode(expected_23 + partial_00)
    stamps = [f.ts for f in frames]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    assert stamps[0] == parse_minute("2024-07-18T23:57") * 60
    if product == "liq_heatmap":
        assert all(f.n_buckets > 0 and f.step == 20.0 for f in frames)
        assert all(f.price_min < f.src < f.price_max for f in frames)

    plan = plan_fetches(index, parse_minute("2024-07-18T12:06"), parse_minute("2024-07-19T00:05"))
    assert [f.url.rsplit("/", 2)[-2:] for f in plan] == [
        ["2024-07-18", "23.partial.bin"],
        ["2024-07-19", "00.partial.bin"],
    ]


@pytest.mark.shared_data
def test_backfilling_the_rest_of_the_hour_completes_it(real_site: tuple[Path, Path], tmp_path: Path) -> None:
    data, site = tmp_path / "data", tmp_path / "site"  # copies: the module's site stays as backfilled
    shutil.copytree(real_site[0], data)
    shutil.copytree(real_site[1], site)
    before = {p: chunk(site, p, "2024-07-18T23:00", partial=True) for p in DECODERS}
    run_backfill(data, site, "2024-07-18T23:00", "2024-07-18T23:56")  # minutes without raw data
    for product in DECODERS:
        entry = read_index(site, product)["hours"]["2024-07-18T23:00:00Z"]
        assert entry["complete"] is True
        assert entry["minutes"][:57] == "0" * 57  # published, no book and no price: no frames
        complete = chunk(site, product, "2024-07-18T23:00")
        assert complete == before[product] == chunk(site, product, "2024-07-18T23:00", partial=True)
        assert entry["frames"] == len(complete) // 4096
        plan = plan_fetches(
            read_index(site, product), parse_minute("2024-07-18T23:00"), parse_minute("2024-07-19T00:05")
        )
        assert [f.complete for f in plan] == [True, False]


def test_simulated_three_hours_fetch_any_720_minute_window_in_at_most_13(tmp_path: Path) -> None:
    data, site = tmp_path / "data", tmp_path / "site"
    start = parse_minute("2024-03-05T10:30")
    rates = SimRates(step_ms=500, trades_per_sec=2.0)  # lighter than the default, same message kinds
    run_simulation(["BTC"], start, 180, 1, str(data), rates, workers=1)
    run_backfill(data, site, "2024-03-05T10:30", "2024-03-05T13:29")
    last = start + 179
    for product, decode in DECODERS.items():
        index = read_index(site, product)
        hours = index["hours"]
        assert [h for h in hours if hours[h]["complete"]] == ["2024-03-05T11:00:00Z", "2024-03-05T12:00:00Z"]
        for hour in ("2024-03-05T11:00", "2024-03-05T12:00"):
            assert chunk(site, product, hour) == minute_bins(
                site, product, parse_minute(hour), parse_minute(hour) + 59
            )
        worst = 0
        for window_end in range(last - 90, last + 1):
            plan = plan_fetches(index, window_end - 719, window_end)
            worst = max(worst, len(plan))
            assert len(plan) <= 13
        assert worst == 4  # 10:xx partial, 11:xx and 12:xx complete, 13:xx partial
        plan = plan_fetches(index, last - 719, last)
        fetched = b"".join((site / f.url.lstrip("/")).read_bytes() for f in plan)
        assert sum(f.frames for f in plan) == len(fetched) // 4096
        assert fetched == minute_bins(site, product, start, last)
        stamps = [f.ts for f in decode(fetched)]
        assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
        assert len(stamps) == 180 * (2 if product == "orderbook_heatmap" else 1)
