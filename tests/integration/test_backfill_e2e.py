"""Issue 2's end-to-end proof: import real Binance recordings, backfill, and check the site.

Runs the real command line in subprocesses against local-directory stores: the OHLC of every
published minute is recomputed here straight from the recorded file, a second backfill changes no
byte, and a backfill killed with SIGKILL and re-run ends with the same site as an undisturbed one.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest

from tests.conftest import shared_file

pytestmark = [pytest.mark.integration, pytest.mark.shared_data]

FILES = ("hftbacktest-binance-usdm/btcusdt_20240718.gz", "hftbacktest-binance-usdm/btcusdt_20240719.gz")
FIRST, LAST = "2024-07-18T23:57", "2024-07-19T00:05"
MINUTES = ["2024-07-18/2357", "2024-07-18/2358", "2024-07-18/2359"] + [f"2024-07-19/000{i}" for i in range(6)]


def moonstream(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "moonstream.cli", *args], check=True, capture_output=True, text=True, **kwargs
    )


def backfill_args(data: Path, site: Path, last: str = LAST) -> list[str]:
    return [
        "backfill",
        "--symbols",
        "BTC",
        "--from",
        FIRST,
        "--to",
        last,
        "--data",
        str(data),
        "--site",
        str(site),
        "--no-progress",
    ]


def site_snapshot(site: Path) -> dict[str, tuple[str, int]]:
    """Every file under the site directory (sidecars included): sha256 and mtime."""
    return {
        str(p.relative_to(site)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(site.rglob("*"))
        if p.is_file()
    }


def read_doc(site: Path, key: str) -> dict:
    data = (site / key).read_bytes()
    return json.loads(gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data)


def expected_minutes(paths: list[Path]) -> dict[str, dict]:
    """Recompute each minute's trade OHLC, count and taker volumes directly from the recorded lines."""
    trades: list[tuple[int, int, dict]] = []
    for path in paths:
        with gzip.open(path, "rt") as handle:
            for line in handle:
                ts_text, _, payload = line.partition(" ")
                message = json.loads(payload)
                if message.get("stream", "").endswith("@trade"):
                    trades.append((int(ts_text), len(trades), message["data"]))
    trades.sort(key=lambda t: (t[0], t[1]))
    minutes: dict[str, dict] = {}
    for recv_ns, _, trade in trades:
        stamp = time.gmtime(recv_ns // 1_000_000_000)
        key = time.strftime("%Y-%m-%d/%H%M", stamp)
        price, qty = Decimal(trade["p"]), Decimal(trade["q"])
        entry = minutes.setdefault(
            key,
            {"open": price, "high": price, "low": price, "count": 0, "buy": Decimal(0), "sell": Decimal(0)},
        )
        entry["high"], entry["low"], entry["close"] = (
            max(entry["high"], price),
            min(entry["low"], price),
            price,
        )
        entry["count"] += 1
        entry["sell" if trade["m"] else "buy"] += qty
    return minutes


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    paths = [shared_file(name) for name in FILES]
    data = tmp_path_factory.mktemp("data")
    moonstream("import", *map(str, paths), "--data", str(data), "--symbols", "BTC")
    return data


def test_backfill_publishes_each_minute_with_ohlc_of_the_raw_trades(imported: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    moonstream(*backfill_args(imported, site))
    expected = expected_minutes([shared_file(name) for name in FILES])
    assert sorted(expected) == MINUTES
    for minute in MINUTES:
        doc = read_doc(site, f"v1/BTC/market/{minute}.json")
        binance = doc["exchanges"]["binance"]
        want = expected[minute]
        assert binance["trade_source"] == "trade"
        assert {k: Decimal(v) for k, v in binance["ohlc"].items()} == {
            k: want[k] for k in ("open", "high", "low", "close")
        }
        assert binance["trade_count"] == want["count"]
        assert Decimal(binance["taker_buy_base"]) == want["buy"]
        assert Decimal(binance["taker_sell_base"]) == want["sell"]
        assert doc["minute"].replace("-", "").startswith(minute[:10].replace("-", ""))
    latest = read_doc(site, "v1/BTC/market/latest.json")
    assert latest == read_doc(site, f"v1/BTC/market/{MINUTES[-1]}.json")
    index = read_doc(site, "v1/index.json")
    assert index["symbols"]["BTC"]["products"]["market"]["latest"] == "/v1/BTC/market/latest.json"
    health = read_doc(site, "v1/health.json")
    assert health["symbols"]["BTC"]["last_minute"] == "2024-07-19T00:05:00Z"
    assert "/" not in json.dumps(health["symbols"]["BTC"]["exchanges"]).replace("\\/", "")


def test_second_backfill_changes_no_byte(imported: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    moonstream(*backfill_args(imported, site))
    before = site_snapshot(site)
    moonstream(*backfill_args(imported, site))
    assert site_snapshot(site) == before


def test_backfill_killed_and_rerun_equals_undisturbed(imported: Path, tmp_path: Path) -> None:
    # Two hours past the recording: the later minutes have no data, which keeps the run long enough to be
    # killed in the middle.
    last = "2024-07-19T02:00"
    reference_site = tmp_path / "reference"
    moonstream(*backfill_args(imported, reference_site, last))
    reference = site_snapshot(reference_site)

    # Fresh copies of the data store, so the killed run cannot reuse the reference run's state.
    data = tmp_path / "data"
    subprocess.run(["cp", "-a", str(imported), str(data)], check=True)
    for state in (data / "state").glob("*"):
        subprocess.run(["rm", "-rf", str(state)], check=True)
    site = tmp_path / "site"
    proc = subprocess.Popen(
        [sys.executable, "-m", "moonstream.cli", *backfill_args(data, site, last)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list((site / "v1" / "BTC" / "market").glob("2024-*/*.json"))) >= 30:
            break
        time.sleep(0.005)
    assert proc.poll() is None, "the backfill finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed = site_snapshot(site)
    versions = [k for k in killed if k.startswith("v1/BTC/market/2024-")]
    assert 30 <= len(versions) < len([k for k in reference if k.startswith("v1/BTC/market/2024-")])
    for key in versions:
        assert killed[key][0] == reference[key][0], f"{key} differs from the undisturbed run after the kill"
    # The pointer names a version that exists: immutable objects are written before pointers.
    latest = read_doc(site, "v1/BTC/market/latest.json")
    day, clock = latest["minute"][:10], latest["minute"][11:16].replace(":", "")
    assert read_doc(site, f"v1/BTC/market/{day}/{clock}.json") == latest
    moonstream(*backfill_args(data, site, last))
    visible = {
        k: v[0] for k, v in site_snapshot(site).items() if not any(p.startswith(".") for p in Path(k).parts)
    }
    reference_visible = {
        k: v[0] for k, v in reference.items() if not any(p.startswith(".") for p in Path(k).parts)
    }
    assert visible == reference_visible
