"""The simulator through the real command lines: ``simulate`` then ``backfill`` on its raw files.

The simulate command runs in a subprocess with two worker processes (Binance, Bybit and OKX sharing
the market) and must write the same bytes as an in-process single-worker run; the backfill must
normalize every record without error, find every exchange in every minute, and publish exactly the
liquidations the three streams carried (the ground truth's ``sent`` ones, per venue).
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from moonstream.collector.rawfile import iter_minutes
from moonstream.jobs.backfill import backfill
from moonstream.jobs.config import JobConfig
from moonstream.jobs.minute import JobContext
from moonstream.sim import SimRates, run_simulation
from moonstream.sim.groundtruth import read_groundtruth
from moonstream.store import open_store
from moonstream.timeutil import parse_minute

pytestmark = [pytest.mark.integration]

START = "2024-03-05T11:58"
MINUTES = 4
SYMBOLS = ("BTC", "ETH")
BUSY = SimRates(cascades_per_day=1440, opens_per_sec=20, mean_hold_minutes=30)
VENUES = ("binance", "bybit", "okx")  # the command line's default


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], check=True, capture_output=True, text=True, timeout=300)


def _backfill_cli(data: Path, site: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``moonstream backfill`` of the simulated range, in a subprocess (``env`` added to ours)."""
    return subprocess.run(
        [
            sys.executable,
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
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **env},
    )


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
    local = run_simulation(
        list(SYMBOLS), parse_minute(START), MINUTES, 21, str(tmp_path), BUSY, workers=1, exchanges=VENUES
    )
    assert local.run_id == report["run_id"]
    first, second = _files(data), _files(tmp_path)
    assert len([k for k in first if k.startswith("raw/")]) == 3 * len(SYMBOLS) * MINUTES  # 3 venues
    assert first == second


def _published(r: dict) -> tuple:
    """What a liquidation's stream row carries, as the normalizer's dedup key sees it: Binance
    publishes the fill price, Bybit and OKX the bankruptcy price."""
    return (r["venue"], r["t"], r["side"], r["price"] if r["venue"] == "binance" else r["bk"], r["qty"])


def _expected_liquidations(data: Path, run_id: str, symbol: str, last: int) -> dict[str, dict[str, int]]:
    """Per venue and side: the ground truth's pushed liquidations that were received by the end.

    Pushes of the last second may be received after the end (and dropped): those are counted from
    the raw files. Identical rows (same venue, time, side, price and size: two positions liquidated
    together) are one event after the normalizer's dedup, so distinct rows are counted.
    """
    end_ms = (last + 1) * 60_000
    truth = [r for r in read_groundtruth(open_store(str(data)), run_id, symbol) if r["type"] == "liq"]
    late_received: dict[str, int] = dict.fromkeys(VENUES, 0)
    for _, records in iter_minutes(open_store(str(data)), symbol, last, last):
        for record in records:
            msg = json.loads(record.payload)
            if record.channel == "ws:forceOrder":
                times = [msg["data"]["o"]["T"]]
            elif record.channel == "ws:allLiquidation":
                times = [row["T"] for row in msg["data"]]
            elif record.channel == "ws:liquidation-orders":
                times = [int(d["ts"]) for row in msg["data"] for d in row["details"]]
            else:
                continue
            late_received[record.exchange] += sum(t >= end_ms - 1000 for t in times)
    out: dict[str, dict[str, int]] = {}
    for venue in VENUES:
        sent = [r for r in truth if r["venue"] == venue and r["sent"]]
        early = {_published(r) for r in sent if r["t"] < end_ms - 1000}
        late = [r for r in sent if r["t"] >= end_ms - 1000]
        assert len(late) >= late_received[venue]
        out[venue] = {side: len({k for k in early if k[2] == side}) for side in ("long", "short")}
        out[venue]["late_received"] = late_received[venue]
        out[venue]["sent"] = len(sent)
        out[venue]["all"] = len([r for r in truth if r["venue"] == venue])
    return out


def test_backfill_publishes_exactly_the_pushed_liquidations(
    simulated: tuple[Path, dict], tmp_path: Path
) -> None:
    data, report = simulated
    site = tmp_path / "site"
    last = parse_minute(START) + MINUTES - 1
    done = _backfill_cli(data, site)
    assert " 0 normalize errors" in done.stderr
    assert "missing exchange-minutes none" in done.stderr
    store = open_store(str(data))
    for symbol in SYMBOLS:
        truth = [r for r in read_groundtruth(store, report["run_id"], symbol) if r["type"] == "liq"]
        sent = [
            r for r in truth if r["venue"] == "binance" and r["sent"] and r["t"] < (last + 1) * 60_000 - 1000
        ]
        assert len(truth) > len(sent) > 10
        count = {"long": 0, "short": 0}
        closes = []
        for minute in ("2024-03-05/1158", "2024-03-05/1159", "2024-03-05/1200", "2024-03-05/1201"):
            doc = _doc(site, f"v1/{symbol}/market/{minute}.json")
            for side in ("long", "short"):
                count[side] += doc["liquidations"][side]["count"]
            closes.append(doc["exchanges"]["binance"]["ohlc"]["close"])
        expected = _expected_liquidations(data, report["run_id"], symbol, last)
        for side in ("long", "short"):
            want = sum(expected[v][side] for v in VENUES)
            assert want <= count[side] <= want + sum(expected[v]["late_received"] for v in VENUES)
        assert len(set(closes)) > 1  # the price moves


def test_backfill_over_three_venues_counts_every_sent_liquidation(
    simulated: tuple[Path, dict], tmp_path: Path
) -> None:
    """The Python API: per venue and side, ``liq_stats`` new events equal the ground truth's."""
    data, report = simulated
    first = parse_minute(START)
    last = first + MINUTES - 1
    config = JobConfig(
        data_url=str(data), site_url=str(tmp_path / "site"), symbols=("BTC",), exchanges=VENUES
    )
    ctx = JobContext.open(config)
    result = backfill(ctx, ("BTC",), first, last, progress=False)
    assert result.errors == 0
    assert result.missing_exchange_minutes == {}
    assert result.minutes_processed == MINUTES
    got: dict[str, dict[str, int]] = {v: {"long": 0, "short": 0} for v in VENUES}
    total = {"long": 0, "short": 0}
    for minute in range(first, last + 1):
        raw = ctx.site.read(ctx.layout.version_key("BTC", "liq_stats", minute)).data
        doc = json.loads(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw)
        for side in ("long", "short"):
            total[side] += doc["new_events"][side]["count"]
            for venue, sides in doc["new_events_by_exchange"].items():
                got[venue][side] += sides[side]["count"]
    expected = _expected_liquidations(data, report["run_id"], "BTC", last)
    for venue in VENUES:
        assert expected[venue]["all"] > 0
        for side in ("long", "short"):
            extra = got[venue][side] - expected[venue][side]
            assert 0 <= extra <= expected[venue]["late_received"], (venue, side, got, expected)
    assert expected["bybit"]["sent"] == expected["bybit"]["all"]  # Bybit: no cap
    assert expected["okx"]["sent"] < expected["okx"]["all"]  # OKX: one a second
    assert expected["binance"]["sent"] < expected["binance"]["all"]  # Binance: one a second
    for side in ("long", "short"):
        assert total[side] == sum(got[v][side] for v in VENUES)


def test_backfill_without_the_compiled_loops_publishes_the_same_bytes(
    simulated: tuple[Path, dict], tmp_path: Path
) -> None:
    """``MOONSTREAM_NATIVE=0`` (the pure-Python inner loops, as on a machine without a C compiler)
    publishes exactly the site and state of the default run: every file, metadata included."""
    data, _ = simulated
    outputs = []
    for switch in ("1", "0"):
        root = tmp_path / f"native-{switch}"
        shutil.copytree(data / "raw", root / "data" / "raw")
        done = _backfill_cli(root / "data", root / "site", MOONSTREAM_NATIVE=switch)
        assert " 0 normalize errors" in done.stderr
        outputs.append((_files(root / "site"), _files(root / "data" / "state")))
    assert len(outputs[0][0]) > 50 and outputs[0][1]
    assert outputs[0] == outputs[1]
