"""Real Binance liquidations (paulius capture) through import and backfill: every minute's
``liq_stats`` counts the new tape events per side, and over the backfill they add up exactly to the
CSV's rows for that symbol (issue 5).

The CSV's own ``usd_size`` column is ``z × p`` (filled quantity × order price); ours is the filled value
``z × ap`` (average fill price, or ``p`` where the exchange gave none), recomputed here from the CSV's
fields. A long is liquidated by a SELL order.

The capture holds most liquidations twice (the recorder wrote each forceOrder event once per
listener; some copies differ only in ``usd_size``). An event is one liquidation however often it was
recorded: rows with the same time, side, price, quantity and filled quantity are one event, as the
jobs' de-duplication by exchange fields says. Binance pushes at most one liquidation per symbol per
second, so two distinct liquidations can never share all of those fields.
"""

from __future__ import annotations

import csv
import gzip
import json
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest

from moonstream.collector.importers import import_file
from moonstream.jobs.backfill import backfill
from moonstream.jobs.config import JobConfig
from moonstream.jobs.minute import JobContext
from moonstream.store import LocalStore
from moonstream.timeutil import parse_minute
from tests.conftest import shared_file

pytestmark = [pytest.mark.integration, pytest.mark.shared_data]

FIRST, LAST = "2025-01-27T16:50", "2025-01-27T17:20"
SYMBOLS = ("BTC", "ETH", "SOL")
DISTINCT_EVENTS_IN_WINDOW = 110  # of 213 BTC/ETH/SOL rows in the window


def expected_from_csv(path: Path) -> tuple[Counter[tuple[str, str]], dict[tuple[str, str], Decimal]]:
    counts: Counter[tuple[str, str]] = Counter()
    notional: dict[tuple[str, str], Decimal] = {}
    first_ms, last_ms = parse_minute(FIRST) * 60_000, (parse_minute(LAST) + 1) * 60_000
    seen: set[tuple[str, ...]] = set()
    with path.open(newline="") as handle:
        for row in csv.reader(handle):
            if len(row) < 12 or row[0] not in SYMBOLS or not first_ms <= int(row[10]) < last_ms:
                continue
            event = (row[0], row[1], row[4], row[5], row[9], row[10])  # s, S, q, p, z, T
            if event in seen:
                continue
            seen.add(event)
            side = "long" if row[1] == "SELL" else "short"
            avg = Decimal(row[6]) if row[6] not in ("", "None") and Decimal(row[6]) > 0 else Decimal(row[5])
            key = (row[0], side)
            counts[key] += 1
            notional[key] = notional.get(key, Decimal(0)) + Decimal(row[9]) * avg
    return counts, notional


def test_liq_stats_sum_to_the_csv_per_symbol_and_side(tmp_path: Path) -> None:
    source = shared_file("moondev-liq-captures/paulius/binance.csv")
    import_file(source, LocalStore(tmp_path / "data"), symbols=set(SYMBOLS))
    config = JobConfig(
        data_url=str(tmp_path / "data"),
        site_url=str(tmp_path / "site"),
        symbols=SYMBOLS,
        exchanges=("binance",),
    )
    backfill(JobContext.open(config), SYMBOLS, parse_minute(FIRST), parse_minute(LAST), progress=False)

    counts: Counter[tuple[str, str]] = Counter()
    notional: dict[tuple[str, str], Decimal] = {}
    for symbol in SYMBOLS:
        for minute in range(parse_minute(FIRST), parse_minute(LAST) + 1):
            day_hhmm = time.strftime("%Y-%m-%d/%H%M", time.gmtime(minute * 60))
            path = tmp_path / "site" / "v1" / symbol / "liq_stats" / f"{day_hhmm}.json"
            stats = json.loads(gzip.decompress(path.read_bytes()))
            for side in ("long", "short"):
                entry = stats["new_events"][side]
                counts[(symbol, side)] += entry["count"]
                notional[(symbol, side)] = notional.get((symbol, side), Decimal(0)) + Decimal(
                    entry["notional_usd"]
                )
    want_counts, want_notional = expected_from_csv(source)
    assert sum(want_counts.values()) == DISTINCT_EVENTS_IN_WINDOW
    assert counts == want_counts
    assert {k: v for k, v in notional.items() if v} == want_notional

    # The calibrate job ran at each quarter hour of the backfill, before that minute's job, and the
    # minutes after it use its weights (the 10x tier stays disabled).
    version_path = (
        tmp_path / "data" / "state" / "BTC" / "calibrator" / "versions" / "2025-01-27" / "1715.json"
    )
    version = json.loads(version_path.read_bytes())
    stats_path = tmp_path / "site" / "v1" / "BTC" / "liq_stats" / "2025-01-27" / "1716.json"
    stats = json.loads(gzip.decompress(stats_path.read_bytes()))
    used = stats["inference"]["leverage_weights"]
    assert version["weights"]["10"] == 0 and "10" not in used
    assert used == {tier: round(weight, 6) for tier, weight in version["weights"].items() if tier != "10"}
