"""The simulator through the real command lines: ``simulate`` then ``backfill`` on its raw files.

The simulate command runs in a subprocess with two worker processes and must write the same bytes as
an in-process single-worker run; the backfill must normalize every record without error and publish
exactly the liquidations the Binance stream carried (the ground truth's ``sent`` ones).
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from moonstream.sim import SimRates, run_simulation
from moonstream.sim.groundtruth import read_groundtruth
from moonstream.store import open_store
from moonstream.timeutil import parse_minute

pytestmark = [pytest.mark.integration]

START = "2024-03-05T11:58"
MINUTES = 4
SYMBOLS = ("BTC", "ETH")
BUSY = SimRates(cascades_per_day=1440, opens_per_sec=20, mean_hold_minutes=30)


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], check=True, capture_output=True, text=True, timeout=300)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _doc(site: Path, key: str) -> dict:
    data = (site / key).read_bytes()
    return json.loads(gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data)


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    data = tmp_path_factory.mktemp("simdata")
    done = _run(
        "-m",
        "moonstream.sim.cli",
        "simulate",
        "--symbols",
        ",".join(SYMBOLS),
        "--start",
        START,
        "--minutes",
        str(MINUTES),
        "--seed",
        "21",
        "--data",
        str(data),
        "--workers",
        "2",
        "--rate",
        "cascades_per_day=1440",
        "--rate",
        "opens_per_sec=20",
        "--rate",
        "mean_hold_minutes=30",
    )
    return data, json.loads(done.stdout)


def test_cli_with_two_workers_matches_an_in_process_run(simulated: tuple[Path, dict], tmp_path: Path) -> None:
    data, report = simulated
    local = run_simulation(list(SYMBOLS), parse_minute(START), MINUTES, 21, str(tmp_path), BUSY, workers=1)
    assert local.run_id == report["run_id"]
    first, second = _files(data), _files(tmp_path)
    assert len([k for k in first if k.startswith("raw/")]) == len(SYMBOLS) * MINUTES
    assert first == second


def test_backfill_publishes_exactly_the_pushed_liquidations(
    simulated: tuple[Path, dict], tmp_path: Path
) -> None:
    data, report = simulated
    site = tmp_path / "site"
    last = parse_minute(START) + MINUTES - 1
    done = _run(
        "-m",
        "moonstream.cli",
        "backfill",
        "--symbols",
        ",".join(SYMBOLS),
        "--from",
        START,
        "--to",
        "2024-03-05T12:01",
        "--data",
        str(data),
        "--site",
        str(site),
        "--no-progress",
    )
    assert " 0 normalize errors" in done.stderr
    store = open_store(str(data))
    for symbol in SYMBOLS:
        truth = [r for r in read_groundtruth(store, report["run_id"], symbol) if r["type"] == "liq"]
        sent = [r for r in truth if r["sent"] and r["t"] < (last + 1) * 60_000 - 1000]
        assert len(truth) > len(sent) > 10
        count = {"long": 0, "short": 0}
        qty = {"long": Decimal(0), "short": Decimal(0)}
        closes = []
        for minute in ("2024-03-05/1158", "2024-03-05/1159", "2024-03-05/1200", "2024-03-05/1201"):
            doc = _doc(site, f"v1/{symbol}/market/{minute}.json")
            for side in ("long", "short"):
                count[side] += doc["liquidations"][side]["count"]
                qty[side] += Decimal(doc["liquidations"][side]["qty"])
            closes.append(doc["exchanges"]["binance"]["ohlc"]["close"])
        for side in ("long", "short"):
            want = [r for r in sent if r["side"] == side]
            assert count[side] == len(want)
            assert qty[side] == sum((Decimal(r["qty"]) for r in want), Decimal(0))
        assert len(set(closes)) > 1  # the price moves
