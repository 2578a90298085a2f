"""Bybit v5 linear normalizer: documented messages in, exact typed events out (docs/normalizers.md)."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal
from typing import Any

import pytest

from moonstream.collector.rawfile import RawRecord
from moonstream.jobs.events import (
    BookDelta,
    BookSnapshot,
    ConnectionEvent,
    LiquidatedSide,
    Liquidation,
    LongShortRatio,
    MarkPriceUpdate,
    OpenInterest,
    RatioKind,
    TakerSide,
    Trade,
    dedup_key,
)
from moonstream.jobs.normalize import (
    NORMALIZERS,
    InvalidValue,
    MalformedMessage,
    NormalizeError,
    NormalizeStats,
    SymbolMismatch,
    UnknownChannel,
    bybit,
    normalize_records,
)
from tests.conftest import REPO_ROOT, TEST_DATA

FIXTURES = TEST_DATA / "bybit"
D = Decimal
RECV = 1_739_502_303_300_000_000
SPEC_003 = REPO_ROOT.parent / "shared" / "spec" / "003_5603d3b5f1fa6dae.txt"


def payload(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def message(name: str) -> dict[str, Any]:
    return json.loads(payload(name))


def rec(
    channel: str, data: bytes | str | dict[str, Any], recv_ns: int = RECV, collector: str = "c1"
) -> RawRecord:
    if isinstance(data, dict):
        data = json.dumps(data)
    raw = data.encode() if isinstance(data, str) else data
    return RawRecord(recv_ns, channel, raw, "bybit", collector)


# --- each message type, every field ---------------------------------------------------------------


def test_public_trade_fields() -> None:
    events = bybit.normalize(rec("ws:publicTrade", payload("public_trade.json")), "BTC")
    assert events == [
        Trade(
            exchange="bybit",
            symbol="BTC",
            recv_ns=RECV,
            ts_ns=1_672_304_486_865_000_000,
            trade_id=uuid.UUID("20f43950-d8dd-5b31-9112-a178eb6023af").int,
            price=D("16578.50"),
            qty=D("0.001"),
            taker_side=TakerSide.BUY,
            aggregated=False,
            first_trade_id=None,
            last_trade_id=None,
            insurance_fund=False,
        )
    ]
    assert isinstance(events[0], Trade)
    assert str(events[0].price) == "16578.50"  # exact, trailing zero kept


def test_trade_id_is_the_uuid_integer_or_digits() -> None:
    assert bybit.trade_id("20f43950-d8dd-5b31-9112-a178eb6023af") == 0x20F43950D8DD5B319112A178EB6023AF
    assert bybit.trade_id("2290000000061666327") == 2_290_000_000_061_666_327
    with pytest.raises(InvalidValue, match="neither a UUID nor digits"):
        bybit.trade_id("not-a-trade-id")
    with pytest.raises(MalformedMessage):
        bybit.trade_id(123)


def test_several_trades_in_one_message_keep_their_order() -> None:
    msg = message("public_trade.json")
    second = dict(msg["data"][0], i="4d1b2a3c-0000-5b31-9112-a178eb6023af", S="Sell", p="16578.00", v="0.5")
    msg["data"].append(second)
    events = bybit.parse_public_trade(msg, "BTC", RECV)
    assert [(e.taker_side, e.price, e.qty) for e in events] == [
        (TakerSide.BUY, D("16578.50"), D("0.001")),
        (TakerSide.SELL, D("16578.00"), D("0.5")),
    ]


def test_all_liquidation_fields() -> None:
    events = bybit.normalize(rec("ws:allLiquidation", payload("all_liquidation.json")), "ROSE")
    assert events == [
        Liquidation(
            exchange="bybit",
            symbol="ROSE",
            recv_ns=RECV,
            ts_ns=1_739_502_302_929_000_000,
            side=LiquidatedSide.SHORT,
            price=D("0.04499"),
            avg_price=None,
            qty=D("20000"),
            filled_qty=D("20000"),
            last_filled_qty=D("20000"),
            status="FILLED",
        )
    ]
    assert isinstance(events[0], Liquidation)
    assert events[0].notional_usd == D("899.80000")


def test_bybit_liquidation_side_is_the_position_side_docs_win_over_spec_note() -> None:
    """Which position a Bybit ``allLiquidation`` message names.

    Bybit v5 docs, "All Liquidation" (bybit-exchange.github.io/docs/v5/websocket/public/all-liquidation):
    ``S | string | Position side. Buy,Sell. When you receive a Buy update, this means that a long
    position has been liquidated``. So ``S = Buy`` -> LONG liquidated, ``S = Sell`` -> SHORT.

    The original system's audit (spec/003, "Bybit side convention fix — verified ``Buy→short``,
    ``Sell→long`` in normalizer") reads ``S`` like Binance's order side, the opposite. The exchange
    documentation wins (spec/README: "the exchange documentation wins; say so in a test").
    """
    msg = message("all_liquidation.json")
    assert msg["data"][0]["S"] == "Sell"
    assert bybit.parse_all_liquidation(msg, "ROSE", 1)[0].side is LiquidatedSide.SHORT
    msg["data"][0]["S"] = "Buy"
    assert bybit.parse_all_liquidation(msg, "ROSE", 1)[0].side is LiquidatedSide.LONG  # spec/003 says SHORT


def test_the_spec_note_overruled_above_is_quoted_exactly() -> None:
    if not SPEC_003.is_file():
        pytest.skip(f"spec file {SPEC_003} is absent")
    assert "verified `Buy→short`, `Sell→long` in normalizer" in SPEC_003.read_text(encoding="utf-8")


def test_public_trade_side_is_the_taker_side() -> None:
    """Bybit v5 docs, "Trade": ``S | string | Side of taker. Buy,Sell``."""
    msg = message("public_trade.json")
    assert bybit.parse_public_trade(msg, "BTC", 1)[0].taker_side is TakerSide.BUY
    msg["data"][0]["S"] = "Sell"
    assert bybit.parse_public_trade(msg, "BTC", 1)[0].taker_side is TakerSide.SELL


def test_tickers_snapshot_gives_mark_price_and_open_interest() -> None:
    events = bybit.normalize(rec("ws:tickers", payload("tickers_snapshot.json")), "BTC")
    assert events == [
        MarkPriceUpdate(
            exchange="bybit",
            symbol="BTC",
            recv_ns=RECV,
            ts_ns=1_673_272_861_686_000_000,
            mark_price=D("17217.33"),
            index_price=D("17227.36"),
            funding_rate=D("-0.000212"),
            next_funding_ns=1_673_280_000_000_000_000,
        ),
        OpenInterest(
            exchange="bybit",
            symbol="BTC",
            recv_ns=RECV,
            ts_ns=1_673_272_861_686_000_000,
            open_interest_base=D("68744.761"),
        ),
    ]


def _delta(**fields: str) -> dict[str, Any]:
    return {
        "topic": "tickers.BTCUSDT",
        "type": "delta",
        "data": {"symbol": "BTCUSDT", **fields},
        "cs": 24987956060,
        "ts": 1673272861786,
    }


def test_tickers_delta_emits_only_the_fields_present() -> None:
    only_mark = bybit.parse_tickers(_delta(markPrice="17218.00", lastPrice="17216.50"), "BTC", RECV)
    assert only_mark == [
        MarkPriceUpdate(
            exchange="bybit",
            symbol="BTC",
            recv_ns=RECV,
            ts_ns=1_673_272_861_786_000_000,
            mark_price=D("17218.00"),
            index_price=None,
            funding_rate=None,
            next_funding_ns=None,
        )
    ]
    only_oi = bybit.parse_tickers(
        _delta(openInterest="68750.000", openInterestValue="1183700000.00"), "BTC", RECV
    )
    assert only_oi == [
        OpenInterest(
            exchange="bybit",
            symbol="BTC",
            recv_ns=RECV,
            ts_ns=1_673_272_861_786_000_000,
            open_interest_base=D("68750.000"),
        )
    ]
    assert bybit.parse_tickers(_delta(lastPrice="17216.50", bid1Price="17216.00"), "BTC", RECV) == []


def test_orderbook_snapshot_fields() -> None:
    events = bybit.normalize(rec("ws:orderbook", payload("orderbook_snapshot.json")), "BTC")
    assert events == [
        BookSnapshot(
            exchange="bybit",
            symbol="BTC",
            recv_ns=RECV,
            ts_ns=1_672_304_484_978_000_000,
            depth=50,
            update_id=18_521_288,
            seq=7_961_638_724,
            checksum=None,
            contract_value=D(1),
            bids=((D("16493.50"), D("0.006")), (D("16493.00"), D("0.100"))),
            asks=((D("16611.00"), D("0.029")), (D("16612.00"), D("0.213"))),
        )
    ]


def test_orderbook_delta_fields_and_zero_size_deletes() -> None:
    msg = {
        "topic": "orderbook.200.BTCUSDT",
        "type": "delta",
        "ts": 1672304485000,
        "data": {
            "s": "BTCUSDT",
            "b": [["16493.50", "0"]],
            "a": [["16611.00", "0.030"]],
            "u": 18521289,
            "seq": 7961638730,
        },
    }
    assert bybit.parse_orderbook(msg, "BTC", RECV) == BookDelta(
        exchange="bybit",
        symbol="BTC",
        recv_ns=RECV,
        ts_ns=1_672_304_485_000_000_000,
        depth=200,
        update_id=18_521_289,
        prev_update_id=None,
        seq=7_961_638_730,
        checksum=None,
        contract_value=D(1),
        bids=((D("16493.50"), D("0")),),
        asks=((D("16611.00"), D("0.030")),),
    )


def test_connection_events_are_bybit_events() -> None:
    events = bybit.normalize(rec("conn:close", '{"code":1006}', collector="c2"), "BTC")
    assert events == [
        ConnectionEvent(
            exchange="bybit", symbol="BTC", recv_ns=RECV, kind="close", detail={"code": 1006}, collector="c2"
        )
    ]


def test_account_ratio_fields() -> None:
    """Bybit's documented ``/v5/market/account-ratio`` response: the shares as sent, the ratio
    computed from them (Bybit sends none), the period's start as ``ts_ns``."""
    events = bybit.normalize(rec("rest:ratio:account-ratio", payload("account_ratio.json")), "BTC")
    assert events == [
        LongShortRatio(
            exchange="bybit",
            symbol="BTC",
            recv_ns=RECV,
            ts_ns=1_695_772_800_000_000_000,
            kind=RatioKind.GLOBAL_ACCOUNT,
            long_short_ratio=D("1.367984844896992659246980819"),  # 0.5777 / 0.4223, 28 digits
            long_share=D("0.5777"),
            short_share=D("0.4223"),
        )
    ]
    (event,) = events
    assert isinstance(event, LongShortRatio)
    assert str(event.long_share) == "0.5777" and str(event.short_share) == "0.4223"  # the strings, exactly
    assert abs(event.long_short_ratio * event.short_share - event.long_share) < D("1e-26")


def test_account_ratio_rows_in_order_and_empty_list() -> None:
    msg = message("account_ratio.json")
    row = msg["result"]["list"][0]
    msg["result"]["list"] = [
        row,
        {**row, "buyRatio": "0.5", "sellRatio": "0.5", "timestamp": "1695772500000"},
    ]
    events = bybit.parse_account_ratio(msg, "BTC", RECV)
    assert [(e.ts_ns, e.long_short_ratio) for e in events] == [
        (1_695_772_800_000_000_000, D("1.367984844896992659246980819")),
        (1_695_772_500_000_000_000, D("1")),
    ]
    msg["result"]["list"] = []
    assert bybit.parse_account_ratio(msg, "BTC", RECV) == []


def test_account_ratio_error_bodies() -> None:
    limited = {"retCode": 10006, "retMsg": "Too many visits!", "result": {}, "retExtInfo": {}, "time": 1}
    with pytest.raises(MalformedMessage, match="retCode=10006") as info:
        bybit.normalize(rec("rest:ratio:account-ratio", limited), "BTC")
    assert info.value.channel == "rest:ratio:account-ratio"
    with pytest.raises(MalformedMessage, match="retCode='0'"):
        bybit.parse_account_ratio({**message("account_ratio.json"), "retCode": "0"}, "BTC", RECV)


def test_registered() -> None:
    assert NORMALIZERS["bybit"] is bybit.normalize
    assert {
        "ws:publicTrade",
        "ws:allLiquidation",
        "ws:tickers",
        "ws:orderbook",
        "ws:op",
        "rest:ratio:account-ratio",
    } == bybit.CHANNELS


# --- bad input ------------------------------------------------------------------------------------


def _with(name: str, path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    msg = message(name)
    target: Any = msg
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return msg


_DELETE = object()


@pytest.mark.parametrize(
    ("channel", "name", "symbol", "path", "value", "error", "reason"),
    [
        (
            "ws:publicTrade",
            "public_trade.json",
            "BTC",
            ("data", 0, "p"),
            "NaN",
            InvalidValue,
            "positive finite",
        ),
        (
            "ws:publicTrade",
            "public_trade.json",
            "BTC",
            ("data", 0, "p"),
            "-16578.50",
            InvalidValue,
            "positive",
        ),
        ("ws:publicTrade", "public_trade.json", "BTC", ("data", 0, "p"), "0", InvalidValue, "positive"),
        ("ws:publicTrade", "public_trade.json", "BTC", ("data", 0, "v"), "-0.001", InvalidValue, "> 0"),
        ("ws:publicTrade", "public_trade.json", "BTC", ("data", 0, "v"), "Infinity", InvalidValue, "finite"),
        ("ws:publicTrade", "public_trade.json", "BTC", ("data", 0, "p"), None, MalformedMessage, "JSON type"),
        ("ws:publicTrade", "public_trade.json", "BTC", ("data", 0, "S"), "buy", InvalidValue, "neither Buy"),
        (
            "ws:publicTrade",
            "public_trade.json",
            "BTC",
            ("data", 0, "i"),
            _DELETE,
            MalformedMessage,
            "missing field 'i'",
        ),
        (
            "ws:publicTrade",
            "public_trade.json",
            "BTC",
            ("data", 0, "s"),
            "ETHUSDT",
            SymbolMismatch,
            "ETHUSDT",
        ),
        (
            "ws:publicTrade",
            "public_trade.json",
            "BTC",
            ("topic",),
            "publicTrade.ETHUSDT",
            SymbolMismatch,
            "topic",
        ),
        (
            "ws:publicTrade",
            "public_trade.json",
            "BTC",
            ("topic",),
            "trade.BTCUSDT",
            MalformedMessage,
            "topic",
        ),
        ("ws:publicTrade", "public_trade.json", "BTC", ("data",), {"T": 1}, MalformedMessage, "not a list"),
        (
            "ws:allLiquidation",
            "all_liquidation.json",
            "ROSE",
            ("data", 0, "S"),
            "Long",
            InvalidValue,
            "neither Buy",
        ),
        (
            "ws:allLiquidation",
            "all_liquidation.json",
            "ROSE",
            ("data", 0, "p"),
            "nan",
            InvalidValue,
            "positive",
        ),
        ("ws:allLiquidation", "all_liquidation.json", "ROSE", ("data", 0, "v"), "0", InvalidValue, "> 0"),
        ("ws:allLiquidation", "all_liquidation.json", "ROSE", ("data", 0, "T"), -5, InvalidValue, "negative"),
        ("ws:tickers", "tickers_snapshot.json", "BTC", ("data", "markPrice"), "-1", InvalidValue, "positive"),
        (
            "ws:tickers",
            "tickers_snapshot.json",
            "BTC",
            ("data", "fundingRate"),
            "NaN",
            InvalidValue,
            "finite",
        ),
        ("ws:tickers", "tickers_snapshot.json", "BTC", ("data", "openInterest"), "-3", InvalidValue, ">= 0"),
        (
            "ws:tickers",
            "tickers_snapshot.json",
            "BTC",
            ("data", "symbol"),
            "ETHUSDT",
            SymbolMismatch,
            "ETHUSDT",
        ),
        (
            "ws:tickers",
            "tickers_snapshot.json",
            "BTC",
            ("ts",),
            _DELETE,
            MalformedMessage,
            "missing field 'ts'",
        ),
        (
            "ws:orderbook",
            "orderbook_snapshot.json",
            "BTC",
            ("type",),
            "partial",
            MalformedMessage,
            "neither snapshot",
        ),
        (
            "ws:orderbook",
            "orderbook_snapshot.json",
            "BTC",
            ("topic",),
            "orderbook.BTCUSDT",
            MalformedMessage,
            "topic",
        ),
        (
            "ws:orderbook",
            "orderbook_snapshot.json",
            "BTC",
            ("data", "b", 0),
            ["0", "1"],
            InvalidValue,
            "out of range",
        ),
        (
            "ws:orderbook",
            "orderbook_snapshot.json",
            "BTC",
            ("data", "a", 0),
            ["16611.00"],
            MalformedMessage,
            "pair",
        ),
        ("ws:orderbook", "orderbook_snapshot.json", "BTC", ("data", "u"), _DELETE, MalformedMessage, "'u'"),
        (
            "rest:ratio:account-ratio",
            "account_ratio.json",
            "ETH",
            ("result", "list", 0, "symbol"),
            "BTCUSDT",
            SymbolMismatch,
            "ETHUSDT",
        ),
        (
            "rest:ratio:account-ratio",
            "account_ratio.json",
            "BTC",
            ("result", "list", 0, "sellRatio"),
            "0",
            InvalidValue,
            "sellRatio",
        ),
        (
            "rest:ratio:account-ratio",
            "account_ratio.json",
            "BTC",
            ("result", "list", 0, "buyRatio"),
            "-0.1",
            InvalidValue,
            "buyRatio",
        ),
        (
            "rest:ratio:account-ratio",
            "account_ratio.json",
            "BTC",
            ("result", "list", 0, "buyRatio"),
            "NaN",
            InvalidValue,
            "buyRatio",
        ),
        (
            "rest:ratio:account-ratio",
            "account_ratio.json",
            "BTC",
            ("result", "list", 0, "timestamp"),
            _DELETE,
            MalformedMessage,
            "'timestamp'",
        ),
        (
            "rest:ratio:account-ratio",
            "account_ratio.json",
            "BTC",
            ("result",),
            [],
            MalformedMessage,
            "result",
        ),
    ],
)
def test_bad_fields_are_rejected_with_context(
    channel: str,
    name: str,
    symbol: str,
    path: tuple[Any, ...],
    value: Any,
    error: type[NormalizeError],
    reason: str,
) -> None:
    with pytest.raises(error, match=reason) as info:
        bybit.normalize(rec(channel, _with(name, path, value)), symbol)
    assert (info.value.exchange, info.value.channel, info.value.recv_ns) == ("bybit", channel, RECV)


@pytest.mark.parametrize("raw", [b"", b"{not json", b"\xff\xfe", b"[1,2]", b"null"])
def test_undecodable_payloads_are_malformed(raw: bytes) -> None:
    with pytest.raises(MalformedMessage):
        bybit.normalize(rec("ws:publicTrade", raw), "BTC")


def test_unknown_channel() -> None:
    with pytest.raises(UnknownChannel, match="ws:kline"):
        bybit.normalize(rec("ws:kline", "{}"), "BTC")


# --- de-duplication -------------------------------------------------------------------------------


def test_two_collectors_copies_of_a_minute_are_one() -> None:
    records = [
        rec("ws:publicTrade", payload("public_trade.json"), RECV, "c1"),
        rec("ws:publicTrade", payload("public_trade.json"), RECV + 5, "c2"),
        rec(
            "ws:allLiquidation", payload("all_liquidation.json").replace(b"ROSEUSDT", b"BTCUSDT"), RECV, "c1"
        ),
        rec(
            "ws:allLiquidation",
            payload("all_liquidation.json").replace(b"ROSEUSDT", b"BTCUSDT"),
            RECV + 7,
            "c2",
        ),
        rec("ws:tickers", payload("tickers_snapshot.json"), RECV, "c1"),
        rec("ws:tickers", payload("tickers_snapshot.json"), RECV + 9, "c2"),
        rec("ws:orderbook", payload("orderbook_snapshot.json"), RECV, "c1"),
        rec("ws:orderbook", payload("orderbook_snapshot.json"), RECV + 3, "c2"),
        rec("rest:ratio:account-ratio", payload("account_ratio.json"), RECV, "c1"),
        rec("rest:ratio:account-ratio", payload("account_ratio.json"), RECV + 60, "c1"),  # the next poll
        rec("ws:publicTrade", _with("public_trade.json", ("data", 0, "p"), "NaN"), RECV, "c1"),
    ]
    stats = NormalizeStats()
    events = normalize_records(records, "BTC", stats)
    assert [type(e).__name__ for e in events] == [
        "Trade",
        "Liquidation",
        "MarkPriceUpdate",
        "OpenInterest",
        "BookSnapshot",
        "LongShortRatio",
    ]
    assert all(e.recv_ns == RECV for e in events)  # the first copy is kept
    assert stats.duplicates == 6
    assert stats.errors == {"InvalidValue": 1}


def test_dedup_keys() -> None:
    trade = bybit.parse_public_trade(message("public_trade.json"), "BTC", RECV)[0]
    assert dedup_key(trade) == (
        "Trade",
        "bybit",
        "BTC",
        False,
        uuid.UUID("20f43950-d8dd-5b31-9112-a178eb6023af").int,
    )
    snap = bybit.parse_orderbook(message("orderbook_snapshot.json"), "BTC", RECV)
    assert dedup_key(snap) == ("BookSnapshot", "bybit", "BTC", 50, 18_521_288, 7_961_638_724)
    delta_msg = _with("orderbook_snapshot.json", ("type",), "delta")
    delta = bybit.parse_orderbook(delta_msg, "BTC", RECV)
    assert dedup_key(delta) == ("BookDelta", "bybit", "BTC", 50, None, 18_521_288, 7_961_638_724)
    deeper = bybit.parse_orderbook(
        _with("orderbook_snapshot.json", ("topic",), "orderbook.200.BTCUSDT"), "BTC", RECV
    )
    assert dedup_key(deeper) != dedup_key(snap)  # another depth is another book
    mark = bybit.parse_tickers(message("tickers_snapshot.json"), "BTC", RECV)[0]
    assert dedup_key(mark) == ("MarkPriceUpdate", "bybit", "BTC", 1_673_272_861_686_000_000)
    (ratio,) = bybit.parse_account_ratio(message("account_ratio.json"), "BTC", RECV)
    assert dedup_key(ratio) == (
        "LongShortRatio",
        "bybit",
        "BTC",
        RatioKind.GLOBAL_ACCOUNT,
        1_695_772_800_000_000_000,
    )


def test_replies_to_our_own_requests_are_not_errors() -> None:
    from moonstream.collector.rawfile import RawRecord
    from moonstream.jobs.normalize import bybit as bybit_module, okx as okx_module

    pong = b'{"success":true,"ret_msg":"pong","conn_id":"x","op":"ping"}'
    assert bybit_module.normalize(RawRecord(1, "ws:op", pong, "bybit", "c1"), "BTC") == []
    assert okx_module.normalize(RawRecord(1, "ws:pong", b"pong", "okx", "c1"), "BTC") == []
