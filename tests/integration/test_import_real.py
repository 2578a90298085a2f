"""``moonstream import`` on the real shared recordings (skipped where ../shared/data is absent)."""

from __future__ import annotations

import csv
import gzip
from collections import Counter
from pathlib import Path

import pytest

from moonstream.collector.importers import import_file
from moonstream.collector.rawfile import (
    ReadReport,
    iter_minutes,
    list_raw_minutes,
    parse_raw_key,
    read_minute,
)
from moonstream.store import LocalStore
from moonstream.timeutil import minute_from_date_hhmm
from tests.conftest import shared_file

pytestmark = pytest.mark.shared_data

HFT = "hftbacktest-binance-usdm"
LIQS = "moondev-liq-captures"


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "data")


def _snapshot(store: LocalStore) -> dict[str, bytes]:
    return {key: store.read_bytes(key) for key in store.list("")}


def _channels(store: LocalStore, symbol: str) -> Counter[str]:
    minutes = list_raw_minutes(store, symbol)
    report = ReadReport()
    counts: Counter[str] = Counter()
    for _, records in iter_minutes(store, symbol, minutes[0], minutes[-1], report=report):
        counts.update(record.channel for record in records)
    assert (report.files_corrupt, report.lines_malformed) == ([], 0)
    return counts


def test_btc_2024_pair(store: LocalStore) -> None:
    first = shared_file(f"{HFT}/btcusdt_20240718.gz")
    second = shared_file(f"{HFT}/btcusdt_20240719.gz")
    line_counts = [gzip.decompress(p.read_bytes()).count(b"\n") for p in (first, second)]
    reports = [import_file(p, store, symbols={"BTC"}) for p in (first, second)]
    assert [r.records_by_symbol["BTC"] for r in reports] == line_counts == [11_414, 60_570]
    assert all(r.skipped == {} for r in reports)
    start = minute_from_date_hhmm("2024-07-18", "2357")
    assert list_raw_minutes(store, "BTC") == list(range(start, start + 9))  # 23:57 .. 00:05
    assert [r.files_written for r in reports] == [3, 6]
    counts = _channels(store, "BTC")
    assert counts == {"ws:depth": 3_326 + 5_696, "ws:trade": 974 + 9_727, "ws:bookTicker": 7_113 + 45_147,
                      "rest:depth": 1}  # fmt: skip
    (snapshot,) = [r for r in read_minute(store, "BTC", start) if r.channel == "rest:depth"]
    assert snapshot.recv_ns == 1721347021281597601
    assert snapshot.payload.startswith(b'{"lastUpdateId":4984028384061,"E":1721347022759')
    assert snapshot.collector == reports[0].collector

    before = _snapshot(store)
    again = [import_file(p, store, symbols={"BTC"}) for p in (first, second)]
    assert [(r.files_written, r.files_unchanged) for r in again] == [(0, 3), (0, 6)]
    assert _snapshot(store) == before


def test_btc_2023_pair_meets_at_midnight_under_two_collectors(store: LocalStore) -> None:
    """The 2023 files end at 23:59:59.987 and start at 00:00:00.005 (receive time): adjacent minutes."""
    first = import_file(shared_file(f"{HFT}/btcusdt_20230404.dat.gz"), store, symbols=None)
    second = import_file(shared_file(f"{HFT}/btcusdt_20230405.dat.gz"), store, symbols=None)
    assert (first.records, second.records) == (13_384, 60_381)
    assert first.collector != second.collector
    midnight = minute_from_date_hhmm("2023-04-05", "0000")
    assert (first.last_minute, second.first_minute) == (midnight - 1, midnight)
    collectors = {parse_raw_key(k).minute: parse_raw_key(k).collector for k in store.list("raw/BTC/")}
    assert collectors[midnight - 1] == first.collector
    assert collectors[midnight] == second.collector
    counts = _channels(store, "BTC")
    assert counts == {"ws:depth": 4_322 + 11_788, "ws:trade": 2_197 + 10_738, "ws:bookTicker": 6_765 + 37_440,
                      "ws:markPrice": 99 + 415, "rest:depth": 1}  # fmt: skip


def test_duplicate_capture_keeps_both_recorders(store: LocalStore) -> None:
    """neoparth recorded the same liquidation stream twice at the same time: both files survive."""
    one = import_file(shared_file(f"{LIQS}/neoparth/binance.csv"), store, symbols={"BTC", "ETH"})
    two = import_file(shared_file(f"{LIQS}/neoparth/binance_bigliqs.csv"), store, symbols={"BTC", "ETH"})
    assert one.collector != two.collector
    assert (one.records_by_symbol, two.records_by_symbol) == ({"BTC": 17, "ETH": 42}, {"BTC": 17, "ETH": 42})
    shared_minutes = 0
    for minute in list_raw_minutes(store, "ETH"):
        records = read_minute(store, "ETH", minute)
        collectors = {r.collector for r in records}
        if collectors == {one.collector, two.collector}:
            shared_minutes += 1
            by_collector = Counter(r.collector for r in records)
            assert by_collector[one.collector] == by_collector[two.collector]
    assert shared_minutes > 0


def test_alejandrome01_liqs_have_exactly_one_garbage_line(store: LocalStore) -> None:
    path = shared_file(f"{LIQS}/alejandrome01/binance_liqs.csv")
    report = import_file(path, store, symbols=None)
    assert report.format == "liq-csv"
    assert report.lines_read == 102
    assert report.skipped.get("malformed") == 1
    assert report.records + report.skipped["unknown_symbol"] == 101
    assert report.records_by_symbol["BTC"] == 2


def _direct_liq_counts(path: Path, symbols: tuple[str, ...]) -> dict[str, int]:
    counts: Counter[str] = Counter()
    with path.open(newline="") as fh:
        for row in csv.reader(fh):
            for symbol in symbols:
                if row and row[0] in (symbol, f"{symbol}USDT"):
                    counts[symbol] += 1
    return dict(counts)


def test_paulius_liquidation_counts(store: LocalStore) -> None:
    path = shared_file(f"{LIQS}/paulius/binance.csv")
    expected = _direct_liq_counts(path, ("BTC", "ETH", "SOL"))
    report = import_file(path, store, symbols={"BTC", "ETH", "SOL"})
    assert report.records_by_symbol == expected == {"BTC": 61, "ETH": 96, "SOL": 68}
    assert report.lines_read == 3_510
    for symbol, count in expected.items():
        assert sum(_channels(store, symbol).values()) == count
        assert _channels(store, symbol).keys() == {"csv:forceOrder"}


def test_paulius_trades(store: LocalStore) -> None:
    path = shared_file(f"{LIQS}/paulius/binance_trades.csv")
    expected: Counter[str] = Counter()
    with path.open(newline="") as fh:
        for row in csv.reader(fh, skipinitialspace=True):
            expected[row[1].removesuffix("USDT")] += 1
    report = import_file(path, store, symbols=None)
    assert report.format == "trades-csv"
    assert report.records_by_symbol == dict(expected)
    assert report.records == 16_440
    window = minute_from_date_hhmm("2025-01-27", "1655")
    assert len(read_minute(store, "BTC", window)) > 0


def test_cryptofeed_binance_capture(store: LocalStore) -> None:
    report = import_file(shared_file("cryptofeed-sample/BINANCE_FUTURES.ws.1.0"), store, symbols=None)
    assert report.lines_read == 1_536
    assert report.skipped == {}
    assert report.records == 1_535 + 4  # every message, and conn:open for each of the 4 symbols
    totals: Counter[str] = Counter()
    for symbol in ("SUSHI", "AKRO", "KEEP", "CTK"):
        totals.update(_channels(store, symbol))
    assert totals == {
        "ws:depth": 764,
        "ws:bookTicker": 613,
        "ws:aggTrade": 91,
        "ws:kline": 67,
        "conn:open": 4,
    }


def test_cryptofeed_okx_capture_has_no_usdt_swap(store: LocalStore) -> None:
    report = import_file(shared_file("cryptofeed-sample/OKX.ws.1.0"), store, symbols=None)
    assert report.records == 0
    assert report.skipped == {"conn_unattributed": 1, "outgoing": 3, "unknown_symbol": 410}
    assert set(report.unknown_instruments) == {"BTC-USD-220527", "UNI-USD-SWAP", "BTC-USDT"}
    assert list(store.list("raw/")) == []
