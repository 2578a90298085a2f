"""Importers on tiny real samples (tests/data/binance/, or lines copied inline from the shared files)."""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import pytest

from moonstream.collector.exchanges import binance, okx
from moonstream.collector.importers import (
    ImportFormatError,
    detect_format,
    import_file,
    parse_timestamp_ns,
    run_import,
)
from moonstream.collector.importers.common import collector_id_for
from moonstream.collector.importers.liqcsv import liq_csv_instrument, parse_liq_row
from moonstream.collector.importers.tradecsv import parse_trade_row
from moonstream.collector.rawfile import RawRecord, list_raw_minutes, parse_raw_key, read_minute
from moonstream.store import LocalStore
from moonstream.timeutil import minute_from_date_hhmm, minute_of
from tests.conftest import TEST_DATA

HFT_NS = TEST_DATA / "binance" / "hftbacktest_btcusdt_20240718_ns.txt"
HFT_US = TEST_DATA / "binance" / "hftbacktest_btcusdt_20230404_us.txt"
CF_WS = TEST_DATA / "binance" / "cryptofeed_binance_futures_ws.txt"
CF_HTTP = TEST_DATA / "binance" / "cryptofeed_binance_futures_http.txt"
CF_OKX = TEST_DATA / "binance" / "cryptofeed_okx_ws.txt"

# Real rows of the moondev liquidation captures (file noted), in file order per source.
LIQ_ROWS = [
    b"<generator object binance_liquidation.<locals>.<genexpr> at 0x00000174585298C0>,175.54066740000002",
    b"1000PEPE,SELL,LIMIT,IOC,43942,0.0107751,0.0109313,FILLED,43942,43942,1718901133106,473.4794442",
    b"ETH,BUY,LIMIT,IOC,0.241,3329.70,3316.80,FILLED,0.241,0.241,1737910212449,802.4576999999999",
    b"BTCUSDC,SELL,LIMIT,IOC,0.001,99245.9,99649.9,FILLED,0.001,0.001,1737996812265,99.24589999999999",
    b"BTCUSDT,BUY,LIMIT,IOC,0.3,59910.98,59672.30,FILLED,0.109,0.300,1723973590302,17973.294",  # bandsthobaby
    b"BTC_250627,BUY,LIMIT,IOC,0.001,105042.2,None,FILLED,0.001,0.001,1750713333547,105.0422",  # neoparth
    b"Hello Arbitrage Trading BotADA,SELL,LIMIT,IOC,17616,0.55660,None,FILLED,3470,17616,"
    b"1750712378119,9805.0656",
    b"BCH,SELL,LIMIT,IOC,21.610,451.35,None,FILLED,0.644,21.610,1750712378119,9753.6735",
    b"BTC,BUY,LIMIT,IOC,0.025,59935.28,59697.40,FILLED,0.025,0.025,1723971641090,1498.382",
]
TRADE_ROWS = [
    b"1737897220002, BTCUSDT, 2541757614, 104943.5, 0.15, 1737897219873, False",  # paulius
    b"1737897221735, SOLUSDT, 849895163, 256.06, 77.0, 1737897221681, False",
    b"1723705729638, WIFUSDT, 189806429, 1.5289, 11409.7,1723705729627, False",  # bandsthobaby
    # adapted: a newer row shape with two more columns
    b"1737897221852, SOLUSDT, 849895164, 256.07, 135.0, 1737897221702, False, 1, 2",
    b"1737897221900, BTCUSDC, 1, 1.0, 1.0, 1737897221900, False",  # adapted: not a USDT perp
    b"1737897221900, BTCUSDT, 2541757615, 104943.5",  # adapted: torn row
]


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "data")


def _all_records(store: LocalStore, symbol: str) -> list[RawRecord]:
    records: list[RawRecord] = []
    for minute in list_raw_minutes(store, symbol):
        records.extend(read_minute(store, symbol, minute))
    return records


def _write(tmp_path: Path, name: str, lines: list[bytes], end: bytes = b"\n") -> Path:
    path = tmp_path / name
    path.write_bytes(end.join(lines) + end)
    return path


def _snapshot(store: LocalStore) -> dict[str, bytes]:
    return {key: store.read_bytes(key) for key in store.list("")}


# -- timestamps and exchange helpers ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("1626992741", 1626992741_000000000),  # s
        ("1626992741.06217", 1626992741_062170000),  # s with fraction (cryptofeed)
        ("1652459224.5300605", 1652459224_530060500),
        ("1718838893621", 1718838893621_000000),  # ms
        ("1718838893621.5", 1718838893621_500000),  # ms with fraction
        ("1680652700423575", 1680652700423575_000),  # µs (hftbacktest 2023)
        ("1721347020984480942", 1721347020984480942),  # ns (hftbacktest 2024)
        ("1.1234567891", 1_123456789),  # fraction beyond ns is truncated
    ],
)
def test_parse_timestamp_ns_units(text: str, ns: int) -> None:
    assert parse_timestamp_ns(text) == ns


@pytest.mark.parametrize("text", ["", "-1", "1e9", "abc", "1.", ".5", "1 2"])
def test_parse_timestamp_ns_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_timestamp_ns(text)


@pytest.mark.parametrize(
    ("stream", "expected"),
    [
        ("btcusdt@depth@0ms", ("BTCUSDT", "ws:depth")),
        ("btcusdt@depth", ("BTCUSDT", "ws:depth")),
        ("sushiusdt@depth@100ms", ("SUSHIUSDT", "ws:depth")),
        ("btcusdt@depth20@100ms", ("BTCUSDT", "ws:depth20")),
        ("btcusdt@trade", ("BTCUSDT", "ws:trade")),
        ("ctkusdt@aggTrade", ("CTKUSDT", "ws:aggTrade")),
        ("btcusdt@bookTicker", ("BTCUSDT", "ws:bookTicker")),
        ("btcusdt@markPrice@1s", ("BTCUSDT", "ws:markPrice")),
        ("btcusdt@markPrice", ("BTCUSDT", "ws:markPrice")),
        ("btcusdt@forceOrder", ("BTCUSDT", "ws:forceOrder")),
        ("!forceOrder@arr", (None, "ws:forceOrder")),
        ("ctkusdt@kline_1m", ("CTKUSDT", "ws:kline")),
        ("btcusdt@foo", None),
        ("!markPrice@arr@1s", None),
        ("btcusdt", None),
    ],
)
def test_binance_parse_stream(stream: str, expected: tuple[str | None, str] | None) -> None:
    info = binance.parse_stream(stream)
    assert (None if info is None else (info.instrument, info.channel)) == expected


def test_binance_ws_target_and_rest_channel() -> None:
    force = {"stream": "!forceOrder@arr", "data": {"e": "forceOrder", "o": {"s": "ETHUSDT", "S": "SELL"}}}
    assert binance.ws_target(force) == ("ETHUSDT", "ws:forceOrder")
    assert binance.ws_target({"stream": "!forceOrder@arr", "data": {}}) is None
    assert binance.ws_target({"result": None, "id": 1}) is None
    assert binance.rest_channel("/fapi/v1/depth") == "rest:depth"
    assert (
        binance.rest_channel("/futures/data/topLongShortAccountRatio")
        == "rest:ratio:topLongShortAccountRatio"
    )
    assert binance.rest_channel("/fapi/v1/exchangeInfo") is None
    assert binance.symbol_of("BTCUSDT") == "BTC"
    assert binance.symbol_of("BTCUSDT_250627") is None
    assert binance.symbol_of("BTCUSDC") is None


def test_okx_channel_and_instrument() -> None:
    books = {"arg": {"channel": "books", "instId": "BTC-USDT-SWAP"}, "action": "update", "data": []}
    assert (okx.ws_channel(books), okx.ws_instrument(books)) == ("ws:books", "BTC-USDT-SWAP")
    liq = {
        "arg": {"channel": "liquidation-orders", "instType": "SWAP"},
        "data": [{"instId": "ETH-USDT-SWAP"}],
    }
    assert (okx.ws_channel(liq), okx.ws_instrument(liq)) == ("ws:liquidation-orders", "ETH-USDT-SWAP")
    mixed = {"arg": {"channel": "liquidation-orders"}, "data": [{"instId": "A-USDT-SWAP"}, {"instId": "B"}]}
    assert okx.ws_instrument(mixed) is None
    event = {"event": "subscribe", "arg": {"channel": "trades", "instId": "BTC-USDT-SWAP"}}
    assert okx.ws_channel(event) == "ws:event"
    assert okx.symbol_of("BTC-USDT-SWAP") == "BTC"
    assert okx.symbol_of("BTC-USDT") is None
    assert okx.symbol_of("UNI-USD-SWAP") is None


# -- hftbacktest --------------------------------------------------------------------------------


def test_hftbacktest_ns_sample(store: LocalStore) -> None:
    report = import_file(HFT_NS, store, symbols=None)
    lines = HFT_NS.read_bytes().splitlines()
    assert report.format == "hftbacktest"
    assert report.collector == collector_id_for(HFT_NS.read_bytes())
    assert (report.lines_read, report.records_by_symbol, report.skipped) == (8, {"BTC": 8}, {})
    assert (report.files_written, report.files_unchanged) == (1, 0)
    minute = minute_from_date_hhmm("2024-07-18", "2357")
    assert list_raw_minutes(store, "BTC") == [minute] == [report.first_minute]
    records = read_minute(store, "BTC", minute)
    assert [r.recv_ns for r in records] == [int(line.split(b" ", 1)[0]) for line in lines]
    assert [r.payload for r in records] == [line.split(b" ", 1)[1] for line in lines]
    channels = [r.channel for r in records]
    assert channels == [
        *("ws:bookTicker", "ws:bookTicker", "ws:depth", "ws:depth"),
        *("rest:depth", "ws:depth", "ws:trade", "ws:bookTicker"),
    ]
    assert {(r.exchange, r.collector) for r in records} == {("binance", report.collector)}


def test_hftbacktest_microseconds_and_spaced_snapshot(store: LocalStore) -> None:
    report = import_file(HFT_US, store, symbols={"btc"})
    assert report.records_by_symbol == {"BTC": 4}
    records = _all_records(store, "BTC")
    assert [r.recv_ns for r in records] == [
        1680652700423575000,
        1680652700441533000,
        1680652700599351000,
        1680652701048293000,
    ]
    assert [r.channel for r in records] == ["ws:bookTicker", "ws:trade", "rest:depth", "ws:markPrice"]
    assert records[2].payload.startswith(b'{"lastUpdateId": 2710246765483, "E": 1680652700590')


def test_hftbacktest_gzip_gives_same_collector_and_bytes(tmp_path: Path, store: LocalStore) -> None:
    gz = tmp_path / "btcusdt_20240718.gz"
    gz.write_bytes(gzip.compress(HFT_NS.read_bytes()))
    first = import_file(HFT_NS, store, symbols=None)
    before = _snapshot(store)
    again = import_file(gz, store, symbols=None, fmt="hftbacktest")
    assert again.collector == first.collector
    assert (again.files_written, again.files_unchanged, again.records) == (0, 1, 8)
    assert _snapshot(store) == before


def test_hftbacktest_bad_lines_are_counted(
    tmp_path: Path, store: LocalStore, caplog: pytest.LogCaptureFixture
) -> None:
    lines = [
        *HFT_NS.read_bytes().splitlines()[:2],
        b"garbage",
        b"1721347021434998432 {not json",
        b'1721347021434998433 {"stream":"btcusdt@foo","data":{}}',
        b'1721347021434998434 {"stream":"btcusdc@trade","data":{"s":"BTCUSDC"}}',
        b"",
    ]
    path = _write(tmp_path, "mixed.txt", lines)
    with caplog.at_level(logging.WARNING):
        report = import_file(path, store, symbols=None)
    assert report.records_by_symbol == {"BTC": 2}
    assert report.skipped == {"blank": 1, "malformed": 2, "unknown_message": 1, "unknown_symbol": 1}
    assert report.unknown_instruments == {"BTCUSDC": 1}
    assert report.lines_read == 7 == report.records + sum(report.skipped.values())
    assert "mixed.txt:3" in caplog.text and "mixed.txt:4" in caplog.text


def test_hftbacktest_snapshot_symbol_must_be_unambiguous(tmp_path: Path, store: LocalStore) -> None:
    btc = HFT_NS.read_bytes().splitlines()
    eth = b'1721347021080846861 {"stream":"ethusdt@bookTicker","data":{"e":"bookTicker","s":"ETHUSDT"}}'
    path = _write(tmp_path, "two.txt", [*btc, eth])
    with pytest.raises(ImportFormatError, match="symbol hint"):
        import_file(path, store, symbols=None)
    assert list(store.list("raw/")) == []
    report = import_file(path, store, symbols=None, symbol_hint="BTC")
    assert report.records_by_symbol == {"BTC": 8, "ETH": 1}
    only_snapshot = _write(tmp_path, "snap.txt", [line for line in btc if b"lastUpdateId" in line])
    with pytest.raises(ImportFormatError):
        import_file(only_snapshot, store, symbols=None)


def test_symbol_filter_counts_skipped_symbols(store: LocalStore) -> None:
    report = import_file(HFT_NS, store, symbols={"ETH"})
    assert (report.records, report.skipped_symbols, report.skipped) == (
        0,
        {"BTC": 8},
        {"symbol_not_selected": 8},
    )
    assert list(store.list("raw/")) == []


def test_two_files_in_one_minute_both_survive(tmp_path: Path, store: LocalStore) -> None:
    lines = HFT_NS.read_bytes().splitlines()
    first = _write(tmp_path, "btcusdt_a.txt", lines[:5])
    second = _write(tmp_path, "btcusdt_b.txt", lines[5:])
    r1 = import_file(first, store, symbols=None)
    r2 = import_file(second, store, symbols=None)
    assert r1.collector != r2.collector
    minute = minute_from_date_hhmm("2024-07-18", "2357")
    keys = sorted(store.list("raw/BTC/"))
    assert [parse_raw_key(k).collector for k in keys] == sorted([r1.collector, r2.collector])
    assert [r.payload for r in read_minute(store, "BTC", minute)] == [
        line.split(b" ", 1)[1] for line in lines
    ]


# -- cryptofeed ---------------------------------------------------------------------------------


def test_cryptofeed_binance_ws_sample(store: LocalStore) -> None:
    report = import_file(CF_WS, store, symbols=None)
    assert report.format == "cryptofeed"
    assert report.skipped == {}
    assert report.records_by_symbol == {"AKRO": 1, "CTK": 3, "KEEP": 1, "SUSHI": 3}
    sushi = _all_records(store, "SUSHI")
    assert [(r.recv_ns, r.channel) for r in sushi] == [
        (1626992740179554000, "conn:open"),
        (1626992741062170000, "ws:bookTicker"),
        (1626992741081672000, "ws:depth"),
    ]
    assert sushi[0].payload.startswith(
        b'{"url":"wss://fstream.binance.com/stream?streams=sushiusdt@aggTrade/'
    )
    assert sushi[1].payload == CF_WS.read_bytes().splitlines()[1].split(b": ", 1)[1]
    assert [r.channel for r in _all_records(store, "CTK")] == ["conn:open", "ws:kline", "ws:aggTrade"]


def test_cryptofeed_rest_sample(store: LocalStore) -> None:
    report = import_file(CF_HTTP, store, symbols=None)
    assert report.records_by_symbol == {"AKRO": 1, "SUSHI": 1}
    assert report.skipped == {"config": 1, "rest_unsupported": 1}
    (record,) = _all_records(store, "SUSHI")
    assert (record.recv_ns, record.channel) == (1626992741301402000, "rest:depth")
    assert record.payload.startswith(b'{"lastUpdateId":600859605926,')


def test_cryptofeed_okx_sample_has_no_usdt_swaps(tmp_path: Path, store: LocalStore) -> None:
    report = import_file(CF_OKX, store, symbols=None)
    assert report.records == 0
    assert report.skipped == {"conn_unattributed": 1, "outgoing": 1, "unknown_symbol": 5}
    assert report.unknown_instruments == {"BTC-USD-220527": 4, "UNI-USD-SWAP": 1}
    # adapted from the same capture: the instrument changed to a USDT swap
    adapted = CF_OKX.read_bytes().replace(b"BTC-USD-220527", b"BTC-USDT-SWAP").splitlines()
    report = import_file(_write(tmp_path, "OKX.ws.2.0", adapted), store, symbols=None)
    assert report.records_by_symbol == {"BTC": 4}
    records = _all_records(store, "BTC")
    assert [r.channel for r in records] == ["ws:event", "ws:tickers", "ws:trades", "ws:books"]
    assert {r.exchange for r in records} == {"okx"}
    assert records[0].recv_ns == 1652459225503749100


# -- CSVs ---------------------------------------------------------------------------------------


def test_liq_csv_instrument_rules() -> None:
    assert liq_csv_instrument("BTC") == "BTCUSDT"
    assert liq_csv_instrument("1000PEPE") == "1000PEPEUSDT"
    assert liq_csv_instrument("BTCUSDT") == "BTCUSDT"
    assert liq_csv_instrument("BTCUSDC") == "BTCUSDC"
    assert liq_csv_instrument("USDC") == "USDCUSDT"
    assert liq_csv_instrument("BTC_250627") == "BTCUSDT_250627"
    assert liq_csv_instrument("Hello Arbitrage Trading BotADA") is None
    assert parse_liq_row(LIQ_ROWS[-1]) == ("BTCUSDT", 1723971641090_000000)
    with pytest.raises(ValueError, match="2 columns"):
        parse_liq_row(LIQ_ROWS[0])


def test_liq_csv_import(tmp_path: Path, store: LocalStore, caplog: pytest.LogCaptureFixture) -> None:
    path = _write(tmp_path, "binance_liqs.csv", LIQ_ROWS, end=b"\r\n")
    with caplog.at_level(logging.WARNING):
        report = import_file(path, store, symbols=None)
    assert report.format == "liq-csv"
    assert report.records_by_symbol == {"1000PEPE": 1, "BCH": 1, "BTC": 2, "ETH": 1}
    assert report.skipped == {"malformed": 2, "unknown_symbol": 2}
    assert report.unknown_instruments == {"BTCUSDC": 1, "BTCUSDT_250627": 1}
    assert report.lines_read == len(LIQ_ROWS)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert warnings[0].startswith("binance_liqs.csv:1: skipped (malformed)")
    assert warnings[1].startswith("binance_liqs.csv:7: skipped (malformed)")
    btc = _all_records(store, "BTC")
    assert [(r.recv_ns, r.channel, r.payload) for r in btc] == [
        (1723971641090_000000, "csv:forceOrder", LIQ_ROWS[8]),
        (1723973590302_000000, "csv:forceOrder", LIQ_ROWS[4]),
    ]


def test_trades_csv_import(tmp_path: Path, store: LocalStore) -> None:
    assert parse_trade_row(TRADE_ROWS[0]) == ("BTCUSDT", 1737897220002_000000)
    path = _write(tmp_path, "binance_trades.csv", TRADE_ROWS)
    report = import_file(path, store, symbols={"SOL", "BTC"})
    assert report.format == "trades-csv"
    assert report.records_by_symbol == {"BTC": 1, "SOL": 2}
    assert report.skipped == {"malformed": 1, "symbol_not_selected": 1, "unknown_symbol": 1}
    assert report.skipped_symbols == {"WIF": 1}
    sol = _all_records(store, "SOL")
    assert [(r.recv_ns, r.channel, r.payload) for r in sol] == [
        (1737897221735_000000, "csv:aggTrade", TRADE_ROWS[1]),
        (1737897221852_000000, "csv:aggTrade", TRADE_ROWS[3]),
    ]
    assert minute_of(sol[0].recv_ns) == minute_from_date_hhmm("2025-01-26", "1313")


# -- detection and the CLI entry ----------------------------------------------------------------


def test_detect_format() -> None:
    assert detect_format(HFT_NS.name, HFT_NS.read_bytes()) == "hftbacktest"
    assert detect_format(HFT_US.name, HFT_US.read_bytes()) == "hftbacktest"
    for path in (CF_WS, CF_HTTP, CF_OKX):
        assert detect_format(path.name, path.read_bytes()) == "cryptofeed"
    assert detect_format("x.csv", b"\n".join(LIQ_ROWS)) == "liq-csv"  # garbage first line outvoted
    assert detect_format("x.csv", b"\n".join(TRADE_ROWS)) == "trades-csv"
    with pytest.raises(ImportFormatError):
        detect_format("x.txt", b"hello\nworld\n")


def test_report_as_dict_and_summary(store: LocalStore) -> None:
    report = import_file(HFT_NS, store, symbols=None)
    doc = report.as_dict()
    assert doc["records"] == 8
    assert doc["first_minute"] == doc["last_minute"] == "2024-07-18T23:57:00Z"
    assert "8 records (BTC 8)" in report.summary()


def test_run_import_reports_every_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    unknown = _write(tmp_path, "notes.txt", [b"hello"])
    data_dir = tmp_path / "data"
    with caplog.at_level(logging.INFO):
        reports = run_import([unknown, HFT_NS], str(data_dir), None, "auto")
    assert [r.error is None for r in reports] == [False, True]
    assert "unknown format" in (reports[0].error or "")
    assert reports[1].records == 8
    assert any("8 records" in r.getMessage() for r in caplog.records)
    assert list_raw_minutes(LocalStore(data_dir), "BTC") == [minute_from_date_hhmm("2024-07-18", "2357")]
