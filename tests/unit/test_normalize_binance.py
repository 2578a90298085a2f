"""Binance USDT-M normalizer: real messages in, exact typed events out (docs/normalizers.md)."""

from __future__ import annotations

import gzip
import itertools
import json
import logging
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest

from moonstream.collector.rawfile import RawRecord
from moonstream.jobs.events import (
    BookTicker,
    ConnectionEvent,
    DepthSnapshot,
    DepthUpdate,
    LiquidatedSide,
    Liquidation,
    LongShortRatio,
    MarkPrice,
    OpenInterest,
    RatioKind,
    TakerSide,
    Trade,
    dedup_key,
)
from moonstream.jobs.normalize import (
    INTERNAL,
    NORMALIZERS,
    InvalidValue,
    MalformedMessage,
    NormalizeError,
    NormalizeStats,
    SymbolMismatch,
    UnknownChannel,
    binance,
    normalize_records,
)
from tests.conftest import TEST_DATA, shared_file

FIXTURES = TEST_DATA / "binance"
D = Decimal
RECV = 1_721_347_149_154_019_197


def payload(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def rec(channel: str, data: bytes | str, recv_ns: int = RECV, collector: str = "c1") -> RawRecord:
    raw = data.encode() if isinstance(data, str) else data
    return RawRecord(recv_ns, channel, raw, "binance", collector)


def one(channel: str, name: str, symbol: str = "BTC", recv_ns: int = RECV) -> object:
    events = binance.normalize(rec(channel, payload(name), recv_ns), symbol)
    assert len(events) == 1
    return events[0]


# --- each message type, every field ---------------------------------------------------------------


def test_depth_update_fields() -> None:
    event = one("ws:depth", "depth_update.json")
    assert event == DepthUpdate(
        exchange="binance",
        symbol="BTC",
        recv_ns=RECV,
        ts_ns=1_721_347_150_675_000_000,
        tx_ns=1_721_347_150_650_000_000,
        first_update_id=4_984_031_930_570,
        last_update_id=4_984_031_931_631,
        prev_last_update_id=4_984_031_930_451,
        bids=((D("5000.00"), D("2.024")), (D("63786.20"), D("2.667")), (D("63937.10"), D("0.299"))),
        asks=((D("64109.70"), D("0.000")), (D("64954.10"), D("1.584"))),
    )
    assert str(event.asks[0][0]) == "64109.70"  # exact text kept, trailing zeros included


def test_depth_update_bare_event_equals_enveloped() -> None:
    bare = json.dumps(json.loads(payload("depth_update.json"))["data"])
    assert binance.normalize(rec("ws:depth", bare), "BTC") == binance.normalize(
        rec("ws:depth", payload("depth_update.json")), "BTC"
    )


def test_depth_snapshot_fields() -> None:
    event = one("rest:depth", "depth_snapshot.json", recv_ns=1_721_347_021_281_597_601)
    assert isinstance(event, DepthSnapshot)
    assert event.last_update_id == 4_984_028_384_061
    assert event.ts_ns == 1_721_347_022_759_000_000  # E
    assert event.recv_ns == 1_721_347_021_281_597_601
    assert (len(event.bids), len(event.asks)) == (1000, 1000)
    assert event.bids[:2] == ((D("63943.90"), D("46.372")), (D("63943.80"), D("0.007")))
    assert event.asks[0][0] > event.bids[0][0]


def test_depth_snapshot_without_times_falls_back_to_recv_ns() -> None:
    data = json.loads(payload("depth_snapshot.json"))
    only_t = {k: v for k, v in data.items() if k != "E"}
    neither = {k: v for k, v in data.items() if k not in ("E", "T")}
    assert binance.parse_depth_snapshot(only_t, "BTC", 7).ts_ns == 1_721_347_022_750_000_000
    assert binance.parse_depth_snapshot(neither, "BTC", 7).ts_ns == 7


def test_trade_fields_taker_buy() -> None:
    assert one("ws:trade", "trade.json") == Trade(
        exchange="binance",
        symbol="BTC",
        recv_ns=RECV,
        ts_ns=1_721_347_025_617_000_000,
        trade_id=5_182_005_745,
        price=D("63944.00"),
        qty=D("0.003"),
        taker_side=TakerSide.BUY,  # "m": false -> the buyer was the taker
        aggregated=False,
        first_trade_id=None,
        last_trade_id=None,
        insurance_fund=False,
    )


def test_trade_insurance_fund_and_taker_sell() -> None:
    event = one("ws:trade", "trade_insurance_fund.json")
    assert isinstance(event, Trade)
    assert event.insurance_fund is True
    assert event.taker_side is TakerSide.SELL  # "m": true
    assert (event.trade_id, event.price, event.qty) == (3_535_191_080, D("28722.50"), D("0.001"))
    assert event.ts_ns == 1_680_652_874_400_000_000


def test_agg_trade_fields() -> None:
    assert one("ws:aggTrade", "agg_trade.json", symbol="CTK") == Trade(
        exchange="binance",
        symbol="CTK",
        recv_ns=RECV,
        ts_ns=1_626_992_741_421_000_000,
        trade_id=16_599_292,
        price=D("1.01100"),
        qty=D("10"),
        taker_side=TakerSide.BUY,
        aggregated=True,
        first_trade_id=23_961_322,
        last_trade_id=23_961_322,
        insurance_fund=False,
    )


def test_book_ticker_fields() -> None:
    assert one("ws:bookTicker", "book_ticker.json") == BookTicker(
        exchange="binance",
        symbol="BTC",
        recv_ns=RECV,
        ts_ns=1_721_347_022_507_000_000,
        update_id=4_984_028_370_881,
        bid_price=D("63943.90"),
        bid_qty=D("46.371"),
        ask_price=D("63944.00"),
        ask_qty=D("0.095"),
    )


def test_mark_price_fields() -> None:
    assert one("ws:markPrice", "mark_price.json") == MarkPrice(
        exchange="binance",
        symbol="BTC",
        recv_ns=RECV,
        ts_ns=1_680_652_701_000_000_000,
        mark_price=D("28147.27373413"),
        index_price=D("28159.75642857"),
        funding_rate=D("0.00002754"),
        next_funding_ns=1_680_652_800_000_000_000,
    )


def test_force_order_fields() -> None:
    event = one("ws:forceOrder", "force_order.json")
    assert event == Liquidation(
        exchange="binance",
        symbol="BTC",
        recv_ns=RECV,
        ts_ns=1_568_014_460_893_000_000,
        side=LiquidatedSide.LONG,
        price=D("9910"),
        avg_price=D("9910"),
        qty=D("0.014"),
        filled_qty=D("0.014"),
        last_filled_qty=D("0.014"),
        status="FILLED",
    )
    assert isinstance(event, Liquidation)
    assert event.notional_usd == D("138.740")


def test_side_conventions_follow_binance_docs() -> None:
    """Binance USDⓈ-M docs, "Aggregate Trade Streams" / "Trade Streams": ``"m": true, // Is the buyer
    the market maker?`` -> the seller took liquidity: taker SELL.

    "Liquidation Order Streams": "push force liquidation order information", ``"S":"SELL", // Side``
    is the side of the liquidation order, which closes the liquidated position: a long is closed by
    selling, a short by buying (https://developers.binance.com/docs/derivatives/usds-margined-futures/
    websocket-market-streams/Liquidation-Order-Streams; the moondev capture notes say the same:
    "SELL = a long was liquidated, BUY = a short was liquidated").
    """
    base = json.loads(payload("force_order.json"))
    assert binance.parse_force_order(base, "BTC", 1).side is LiquidatedSide.LONG
    base["o"]["S"] = "BUY"
    assert binance.parse_force_order(base, "BTC", 1).side is LiquidatedSide.SHORT

    trade = json.loads(payload("trade.json"))
    assert binance.parse_trade(trade, "BTC", 1).taker_side is TakerSide.BUY  # m false
    trade["data"]["m"] = True
    assert binance.parse_trade(trade, "BTC", 1).taker_side is TakerSide.SELL


def test_open_interest_fields() -> None:
    assert one("rest:oi", "open_interest.json") == OpenInterest(
        exchange="binance",
        symbol="BTC",
        recv_ns=RECV,
        ts_ns=1_589_437_530_011_000_000,
        open_interest_base=D("10659.509"),
    )


@pytest.mark.parametrize(
    ("endpoint", "kind"),
    [
        ("topLongShortAccountRatio", RatioKind.TOP_ACCOUNT),
        ("topLongShortPositionRatio", RatioKind.TOP_POSITION),
        ("globalLongShortAccountRatio", RatioKind.GLOBAL_ACCOUNT),
    ],
)
def test_long_short_ratio_rows(endpoint: str, kind: RatioKind) -> None:
    events = binance.normalize(rec(f"rest:ratio:{endpoint}", payload("top_account_ratio.json")), "BTC")
    assert events == [
        LongShortRatio(
            "binance", "BTC", RECV, 1_583_139_600_000_000_000, kind, D("1.8105"), D("0.6442"), D("0.3558")
        ),
        LongShortRatio(
            "binance", "BTC", RECV, 1_583_139_900_000_000_000, kind, D("0.5576"), D("0.3580"), D("0.6420")
        ),
    ]


def test_long_short_ratio_position_field_names() -> None:
    rows = json.loads(payload("top_account_ratio.json"))
    renamed = [
        {
            "longPosition" if k == "longAccount" else "shortPosition" if k == "shortAccount" else k: v
            for k, v in r.items()
        }
        for r in rows
    ]
    got = binance.parse_long_short_ratio(renamed, "BTC", 5, RatioKind.TOP_POSITION)
    assert [(e.long_share, e.short_share) for e in got] == [
        (D("0.6442"), D("0.3558")),
        (D("0.3580"), D("0.6420")),
    ]
    assert binance.parse_long_short_ratio([], "BTC", 5, RatioKind.TOP_POSITION) == []


def test_force_order_csv_fields() -> None:
    event = one("csv:forceOrder", "force_order.csv.txt")
    assert event == Liquidation(
        exchange="binance",
        symbol="BTC",
        recv_ns=RECV,
        ts_ns=1_723_971_641_090_000_000,
        side=LiquidatedSide.SHORT,
        price=D("59935.28"),
        avg_price=D("59697.40"),
        qty=D("0.025"),
        filled_qty=D("0.025"),
        last_filled_qty=D("0.025"),
        status="FILLED",
    )
    assert isinstance(event, Liquidation)
    assert event.notional_usd == D("0.025") * D("59697.40")  # avg price, not the order price


def test_force_order_csv_without_avg_price() -> None:
    event = one("csv:forceOrder", "force_order_no_avg.csv.txt", symbol="ETH")
    assert isinstance(event, Liquidation)
    assert event.avg_price is None
    assert (event.side, event.qty, event.filled_qty, event.last_filled_qty) == (
        LiquidatedSide.LONG,
        D("34.215"),
        D("34.215"),
        D("10.634"),
    )
    assert event.notional_usd == D("34.215") * D("2341.37")  # falls back to the order price


def test_agg_trade_csv_fields() -> None:
    assert one("csv:aggTrade", "agg_trade.csv.txt") == Trade(
        exchange="binance",
        symbol="BTC",
        recv_ns=RECV,
        ts_ns=1_737_897_219_873_000_000,
        trade_id=2_541_757_614,
        price=D("104943.5"),
        qty=D("0.15"),
        taker_side=TakerSide.BUY,  # is_buyer_maker False
        aggregated=True,
        first_trade_id=None,
        last_trade_id=None,
        insurance_fund=False,
    )


def test_agg_trade_csv_with_extra_columns() -> None:
    line = payload("agg_trade.csv.txt").decode() + ", 1, 2"
    event = binance.normalize(rec("csv:aggTrade", line), "BTC")[0]
    assert isinstance(event, Trade) and event.trade_id == 2_541_757_614


def test_kline_is_ignored_and_conn_lines_become_events() -> None:
    assert binance.normalize(rec("ws:kline", b"{not even json"), "BTC") == []
    events = binance.normalize(rec("conn:gap", b'{"from_ns": 1, "to_ns": 2}', collector="c9"), "BTC")
    assert events == [ConnectionEvent("binance", "BTC", RECV, "gap", {"from_ns": 1, "to_ns": 2}, "c9")]
    assert binance.normalize(rec("conn:open", b""), "BTC")[0].detail == {}  # type: ignore[union-attr]
    closed = binance.normalize(rec("conn:close", b"reset by peer"), "BTC")[0]
    assert isinstance(closed, ConnectionEvent) and closed.detail == {"text": "reset by peer"}


# --- errors -------------------------------------------------------------------------------------


def _mutated(name: str, **changes: object) -> bytes:
    msg = json.loads(payload(name))
    target = msg["data"] if "data" in msg else msg.get("o", msg)
    for key, value in changes.items():
        if value is None:
            del target[key]
        else:
            target[key] = value
    return json.dumps(msg).encode()


@pytest.mark.parametrize(
    ("channel", "data", "error", "reason"),
    [
        ("ws:depth", b'{"stream":"btcusdt@depth@0ms","data":{', MalformedMessage, "not JSON"),
        ("ws:depth", b"\xff\xfe", MalformedMessage, "not JSON"),
        ("ws:depth", b"[1, 2]", MalformedMessage, "not a JSON object"),
        ("ws:depth", _mutated("depth_update.json", pu=None), MalformedMessage, "missing field 'pu'"),
        ("ws:depth", _mutated("depth_update.json", e="trade"), MalformedMessage, "event type"),
        ("ws:depth", _mutated("depth_update.json", b=[["1.0"]]), MalformedMessage, "level"),
        ("ws:depth", _mutated("depth_update.json", b="x"), MalformedMessage, "not a list"),
        ("ws:depth", _mutated("depth_update.json", b=[["0.00", "1"]]), InvalidValue, "out of range"),
        ("ws:depth", _mutated("depth_update.json", a=[["-5", "1"]]), InvalidValue, "out of range"),
        ("ws:depth", _mutated("depth_update.json", a=[["5", "-1"]]), InvalidValue, "out of range"),
        ("ws:depth", _mutated("depth_update.json", a=[["NaN", "1"]]), InvalidValue, "non-number"),
        ("ws:depth", _mutated("depth_update.json", a=[["Infinity", "1"]]), InvalidValue, "out of range"),
        ("ws:depth", _mutated("depth_update.json", a=[["abc", "1"]]), InvalidValue, "non-number"),
        ("ws:depth", _mutated("depth_update.json", U=9, u=8), InvalidValue, "U=9 > u=8"),
        ("ws:depth", _mutated("depth_update.json", u=-1), InvalidValue, "negative"),
        ("ws:depth", _mutated("depth_update.json", E="soon"), InvalidValue, "not an integer"),
        ("ws:depth", _mutated("depth_update.json", s="ETHUSDT"), SymbolMismatch, "'ETHUSDT'"),
        ("ws:trade", _mutated("trade.json", p="0"), InvalidValue, "positive"),
        ("ws:trade", _mutated("trade.json", p="nan"), InvalidValue, "positive"),
        ("ws:trade", _mutated("trade.json", p="inf"), InvalidValue, "positive"),
        ("ws:trade", _mutated("trade.json", p="12,5"), InvalidValue, "not a number"),
        ("ws:trade", _mutated("trade.json", p=None), MalformedMessage, "missing field 'p'"),
        ("ws:trade", _mutated("trade.json", q="0"), InvalidValue, "> 0"),
        ("ws:trade", _mutated("trade.json", m="yes"), MalformedMessage, "m has JSON type str"),
        ("ws:trade", _mutated("trade.json", p=True), MalformedMessage, "JSON type bool"),
        ("ws:bookTicker", _mutated("book_ticker.json", B="-0.1"), InvalidValue, "B="),
        ("ws:markPrice", _mutated("mark_price.json", r="NaN"), InvalidValue, "not finite"),
        ("ws:forceOrder", _mutated("force_order.json", S="HOLD"), InvalidValue, "neither BUY nor SELL"),
        ("ws:forceOrder", _mutated("force_order.json", s="BTCUSDT_240927"), SymbolMismatch, "expected"),
        ("rest:oi", _mutated("open_interest.json", openInterest="-1"), InvalidValue, "openInterest"),
        ("rest:oi", b'{"code":-1121,"msg":"Invalid symbol."}', MalformedMessage, "code=-1121"),
        ("rest:depth", _mutated("depth_snapshot.json", lastUpdateId=None), MalformedMessage, "lastUpdateId"),
        ("rest:ratio:topLongShortAccountRatio", b'{"symbol":"BTCUSDT"}', MalformedMessage, "JSON array"),
        ("rest:ratio:topLongShortAccountRatio", b"[1]", MalformedMessage, "row is not a JSON object"),
        ("csv:forceOrder", payload("garbage_liq.csv.txt"), MalformedMessage, "2 columns"),
        ("csv:forceOrder", b"BTCUSDC,SELL,LIMIT,IOC,1,2,None,FILLED,1,1,1,2", SymbolMismatch, "BTCUSDC"),
        ("csv:forceOrder", b"BTC,SELL,LIMIT,IOC,1,0,None,FILLED,1,1,1,0", InvalidValue, "p="),
        ("csv:aggTrade", b"1, BTCUSDT, 7, 100.0, 1.0, 1, maybe", InvalidValue, "is_buyer_maker"),
        ("csv:aggTrade", b"1, ETHUSDT, 7, 100.0, 1.0, 1, True", SymbolMismatch, "ETHUSDT"),
        ("csv:aggTrade", b"1, BTCUSDT, 7, 100.0", MalformedMessage, "4 columns"),
        ("ws:depthx", b"{}", UnknownChannel, "ws:depthx"),
        ("rest:ratio:takerlongshortRatio", b"[]", UnknownChannel, "rest:ratio:"),
    ],
)
def test_errors(channel: str, data: bytes, error: type[NormalizeError], reason: str) -> None:
    with pytest.raises(error) as info:
        binance.normalize(rec(channel, data, recv_ns=42), "BTC")
    err = info.value
    assert reason in err.reason
    assert (err.exchange, err.channel, err.recv_ns) == ("binance", channel, 42)
    assert f"channel={channel}" in str(err) and "recv_ns=42" in str(err)
    assert len(str(err)) < 200  # a short reason, never the payload


def test_zero_quantity_level_is_legal_in_a_diff() -> None:
    event = one("ws:depth", "depth_update.json")
    assert isinstance(event, DepthUpdate)
    assert event.asks[0] == (D("64109.70"), D("0"))


# --- registry, stats, dedup ---------------------------------------------------------------------


def test_registry_has_binance() -> None:
    assert NORMALIZERS["binance"] is binance.normalize


def test_normalize_records_counts_dedups_and_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    depth = payload("depth_update.json")
    records = [
        rec("ws:depth", depth, collector="a"),
        rec("ws:depth", depth, recv_ns=RECV + 5, collector="b"),  # the other collector's copy
        rec("ws:trade", payload("trade.json")),
        rec("ws:trade", b"{broken"),
        rec("ws:trade", b"{broken again"),
        rec("ws:trade", _mutated("trade.json", s="ETHUSDT")),
        rec("conn:open", b"", collector="a"),
        rec("conn:open", b"", collector="b"),
        RawRecord(RECV, "ws:trade", b"{}", "kraken", "a"),
    ]
    stats = NormalizeStats()
    with caplog.at_level(logging.WARNING, logger="moonstream.jobs.normalize"):
        events = normalize_records(records, "BTC", stats)
    assert [type(e).__name__ for e in events] == [
        "DepthUpdate",
        "Trade",
        "ConnectionEvent",
        "ConnectionEvent",
    ]
    assert events[0].recv_ns == RECV  # the first copy is kept
    assert stats.records == 9
    assert stats.duplicates == 1
    assert stats.events == Counter({"DepthUpdate": 1, "Trade": 1, "ConnectionEvent": 2})
    assert stats.errors == Counter({"MalformedMessage": 2, "SymbolMismatch": 1, "UnknownChannel": 1})
    assert stats.event_total() == 4 and stats.error_total() == 4
    first_lines = [r for r in caplog.records if "MalformedMessage skipped" in r.getMessage()]
    assert len(first_lines) == 1  # once per (exchange, channel, class) per call
    assert "recv_ns=" in first_lines[0].getMessage() and "broken" not in first_lines[0].getMessage()
    assert any("1 more MalformedMessage" in r.getMessage() for r in caplog.records)
    assert all(r.exc_info is None for r in caplog.records)


def test_unexpected_exception_is_internal_and_does_not_stop(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(record: RawRecord, symbol: str) -> list[object]:
        raise ZeroDivisionError("bug")

    monkeypatch.setitem(NORMALIZERS, "buggy", broken)
    records = [
        RawRecord(1, "ws:trade", b"{}", "buggy", "a"),
        RawRecord(2, "ws:trade", b"{}", "buggy", "a"),
        rec("ws:trade", payload("trade.json")),
    ]
    stats = NormalizeStats()
    with caplog.at_level(logging.WARNING, logger="moonstream.jobs.normalize"):
        events = normalize_records(records, "BTC", stats)
    assert len(events) == 1 and stats.errors == Counter({INTERNAL: 2})
    tracebacks = [r for r in caplog.records if r.exc_info is not None]
    assert len(tracebacks) == 1


def test_stats_merge_and_dict() -> None:
    a = NormalizeStats(records=2, duplicates=1)
    a.events["Trade"] += 1
    b = NormalizeStats(records=3)
    b.errors["InvalidValue"] += 2
    a.merge(b)
    assert a.as_dict() == {
        "records": 5,
        "events": {"Trade": 1},
        "errors": {"InvalidValue": 2},
        "duplicates": 1,
    }


def test_dedup_keys_separate_what_differs() -> None:
    trade = one("ws:trade", "trade.json")
    agg = one("csv:aggTrade", "agg_trade.csv.txt")
    assert isinstance(trade, Trade) and isinstance(agg, Trade)
    assert dedup_key(trade) != dedup_key(agg)
    # the live aggTrade stream and the imported CSV of the same agg trade are one trade
    live = binance.parse_agg_trade(
        {
            "e": "aggTrade",
            "E": 1,
            "a": 2_541_757_614,
            "s": "BTCUSDT",
            "p": "104943.5",
            "q": "0.15",
            "f": 1,
            "l": 2,
        }
        | {"T": 1_737_897_219_873, "m": False},
        "BTC",
        9,
    )
    assert dedup_key(live) == dedup_key(agg)
    conn_a = binance.normalize(rec("conn:open", b"", collector="a"), "BTC")[0]
    conn_b = binance.normalize(rec("conn:open", b"", collector="b"), "BTC")[0]
    assert dedup_key(conn_a) != dedup_key(conn_b)
    with pytest.raises(TypeError):
        dedup_key("not an event")  # type: ignore[arg-type]


# --- real files ---------------------------------------------------------------------------------

_STREAM_CHANNEL = {
    "depth": "ws:depth",
    "trade": "ws:trade",
    "bookTicker": "ws:bookTicker",
    "markPrice": "ws:markPrice",
}


def _hftbacktest_records(path: Path, ns_scale: int) -> list[RawRecord]:
    out = []
    with gzip.open(path, "rb") as lines:
        for raw in lines:
            stamp, _, data = raw.rstrip(b"\n").partition(b" ")
            if data.startswith(b'{"stream"'):
                stream = json.loads(data)["stream"]
                channel = _STREAM_CHANNEL[stream.split("@")[1]]
            else:
                channel = "rest:depth"
            out.append(RawRecord(int(stamp) * ns_scale, channel, data, "binance", "hftbacktest"))
    return out


@pytest.mark.shared_data
@pytest.mark.parametrize(
    ("name", "symbol", "ns_scale", "depth", "trade", "book", "mark", "snap"),
    [
        ("btcusdt_20230404.dat.gz", "BTC", 1000, 4322, 2197, 6765, 99, 1),
        ("btcusdt_20230405.dat.gz", "BTC", 1000, 11788, 10738, 37440, 415, 0),
        ("btcusdt_20240718.gz", "BTC", 1, 3326, 974, 7113, 0, 1),
        ("btcusdt_20240719.gz", "BTC", 1, 5696, 9727, 45147, 0, 0),
        ("ethusdt_20240718.gz", "ETH", 1, 3273, 1640, 9089, 0, 1),
        ("ethusdt_20240719.gz", "ETH", 1, 5656, 12015, 38239, 0, 0),
    ],
)
def test_real_hftbacktest_file(
    name: str, symbol: str, ns_scale: int, depth: int, trade: int, book: int, mark: int, snap: int
) -> None:
    records = _hftbacktest_records(shared_file(f"hftbacktest-binance-usdm/{name}"), ns_scale)
    stats = NormalizeStats()
    events = normalize_records(records, symbol, stats)
    expected = {
        "DepthUpdate": depth,
        "Trade": trade,
        "BookTicker": book,
        "MarkPrice": mark,
        "DepthSnapshot": snap,
    }
    assert stats.events == Counter({k: v for k, v in expected.items() if v})
    assert stats.error_total() == 0 and stats.duplicates == 0
    assert len(events) == len(records) == stats.records
    diffs = [e for e in events if isinstance(e, DepthUpdate)]
    assert all(b.prev_last_update_id == a.last_update_id for a, b in itertools.pairwise(diffs))
    assert all(e.recv_ns > 1_600_000_000 * 10**9 for e in events)  # ns, not us
    funds = sum(1 for e in events if isinstance(e, Trade) and e.insurance_fund)
    assert funds == (1 if name == "btcusdt_20230405.dat.gz" else 0)


@pytest.mark.shared_data
def test_real_duplicate_liquidation_captures() -> None:
    """neoparth recorded the same stream twice; the copies differ only in the recorder's usd_size."""
    records = []
    for name in ("neoparth/binance.csv", "neoparth/binance_bigliqs.csv"):
        lines = shared_file(f"moondev-liq-captures/{name}").read_bytes().splitlines()
        records += [rec("csv:forceOrder", line, collector=name) for line in lines if line.startswith(b"BTC,")]
    assert len(records) == 34
    stats = NormalizeStats()
    events = normalize_records(records, "BTC", stats)
    assert len(events) == 17 and stats.duplicates == 17 and stats.error_total() == 0
    assert all(isinstance(e, Liquidation) and e.avg_price is None for e in events)


@pytest.mark.shared_data
def test_real_liquidation_and_trade_csvs_parse_except_the_garbage_line() -> None:
    stats = NormalizeStats()
    liq_lines = shared_file("moondev-liq-captures/alejandrome01/binance_liqs.csv").read_bytes().splitlines()
    trade_lines = shared_file("moondev-liq-captures/paulius/binance_trades.csv").read_bytes().splitlines()
    records = [rec("csv:forceOrder", line) for line in liq_lines if line.startswith((b"BTC,", b"<"))]
    records += [rec("csv:aggTrade", line) for line in trade_lines if b", BTCUSDT," in line]
    events = normalize_records(records, "BTC", stats)
    assert stats.errors == Counter({"MalformedMessage": 1})  # the one garbage line
    assert stats.events["Trade"] == sum(1 for line in trade_lines if b", BTCUSDT," in line)
    assert stats.duplicates == 0
    assert all(e.price > 0 for e in events if isinstance(e, Trade))


@pytest.mark.shared_data
def test_real_cryptofeed_agg_trades() -> None:
    path = shared_file("cryptofeed-sample/BINANCE_FUTURES.ws.1.0")
    count = Counter[str]()
    for raw in path.read_bytes().splitlines():
        stamp, sep, data = raw.partition(b": ")
        if not sep or b'"e":"aggTrade"' not in data:
            continue
        symbol = json.loads(data)["data"]["s"].removesuffix("USDT")
        record = RawRecord(int(float(stamp) * 1e9), "ws:aggTrade", data, "binance", "cryptofeed")
        for event in binance.normalize(record, symbol):
            assert isinstance(event, Trade) and event.aggregated
            count[symbol] += 1
    assert sum(count.values()) == 91
