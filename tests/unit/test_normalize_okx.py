"""OKX v5 swap normalizer: documented and real messages in, exact typed events out (docs/normalizers.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from typing import Any

import pytest

from moonstream.collector.rawfile import RawRecord
from moonstream.jobs import instruments
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
from moonstream.jobs.instruments import CONTRACT_VALUES, UnknownInstrument, contract_value
from moonstream.jobs.normalize import (
    NORMALIZERS,
    InvalidValue,
    MalformedMessage,
    NormalizeError,
    NormalizeStats,
    SymbolMismatch,
    UnknownChannel,
    normalize_records,
    okx,
)
from tests.conftest import REPO_ROOT, TEST_DATA

FIXTURES = TEST_DATA / "okx"
D = Decimal
RECV = 1_692_266_434_100_000_000


def payload(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def message(name: str) -> dict[str, Any]:
    return json.loads(payload(name))


def cryptofeed(name: str) -> dict[str, Any]:
    """The message of a real ``<recv_ts>: <message>`` line of cryptofeed's OKX sample."""
    _, _, text = (FIXTURES / name).read_text(encoding="utf-8").partition(": ")
    return json.loads(text)


def rec(
    channel: str, data: bytes | str | dict[str, Any], recv_ns: int = RECV, collector: str = "c1"
) -> RawRecord:
    if isinstance(data, dict):
        data = json.dumps(data)
    raw = data.encode() if isinstance(data, str) else data
    return RawRecord(recv_ns, channel, raw, "okx", collector)


def as_btc_liquidation() -> dict[str, Any]:
    """The docs' liquidation example (IOST-USDT-SWAP) with its instrument rewritten to BTC-USDT-SWAP."""
    msg = message("liquidation_orders.json")
    msg["data"][0].update(instId="BTC-USDT-SWAP", instFamily="BTC-USDT", uly="BTC-USDT")
    return msg


# --- contract values ------------------------------------------------------------------------------


def test_contract_values_are_configured_and_documented() -> None:
    assert dict(CONTRACT_VALUES) == {
        "BTC-USDT-SWAP": D("0.01"),
        "ETH-USDT-SWAP": D("0.1"),
        "SOL-USDT-SWAP": D("1"),
    }
    # OKX's own open-interest example pins BTC's: oi (contracts) x 0.01 == oiCcy (BTC) exactly.
    row = message("open_interest.json")["data"][0]
    assert D(row["oi"]) * CONTRACT_VALUES["BTC-USDT-SWAP"] == D(row["oiCcy"])


def test_unknown_instrument_raises_never_one() -> None:
    with pytest.raises(
        UnknownInstrument, match="no contract value configured for instrument 'XRP-USDT-SWAP'"
    ):
        contract_value("XRP-USDT-SWAP")
    assert issubclass(UnknownInstrument, InvalidValue)
    with pytest.raises(TypeError):
        CONTRACT_VALUES["XRP-USDT-SWAP"] = D(1)  # type: ignore[index]
    assert contract_value("XRP-USDT-SWAP", {"XRP-USDT-SWAP": D("100")}) == D("100")


def test_unknown_instrument_is_counted_and_skipped() -> None:
    msg = message("trades.json")
    msg["arg"]["instId"] = msg["data"][0]["instId"] = "DOGE-USDT-SWAP"
    with pytest.raises(UnknownInstrument) as info:
        okx.normalize(rec("ws:trades", msg), "DOGE")
    assert (info.value.exchange, info.value.channel) == ("okx", "ws:trades")
    stats = NormalizeStats()
    events = normalize_records(
        [rec("ws:trades", msg), rec("ws:trades", payload("trades.json"))], "DOGE", stats
    )
    assert events == []
    assert stats.errors == {"UnknownInstrument": 1, "SymbolMismatch": 1}


def test_importing_instruments_first_works() -> None:
    """instruments imports the normalize package, which imports okx, which uses instruments."""
    code = "import moonstream.jobs.instruments as i; print(i.contract_value('SOL-USDT-SWAP'))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "1"


# --- each message type, every field ---------------------------------------------------------------


def test_trades_fields_in_base_units() -> None:
    events = okx.normalize(rec("ws:trades", payload("trades.json")), "BTC")
    assert events == [
        Trade(
            exchange="okx",
            symbol="BTC",
            recv_ns=RECV,
            ts_ns=1_630_048_897_897_000_000,
            trade_id=130_639_474,
            price=D("42219.9"),
            qty=D("0.0012060306"),  # 0.12060306 contracts x 0.01 BTC
            taker_side=TakerSide.BUY,
            aggregated=True,
            first_trade_id=130_639_472,  # count 3: trades 130639472..130639474
            last_trade_id=130_639_474,
            insurance_fund=False,
        )
    ]


def test_trades_size_conversion_follows_the_instrument() -> None:
    msg = message("trades.json")
    for symbol, expected in (("ETH", D("0.012060306")), ("SOL", D("0.12060306"))):
        msg["arg"]["instId"] = msg["data"][0]["instId"] = f"{symbol}-USDT-SWAP"
        assert okx.parse_trades(msg, symbol, RECV)[0].qty == expected


def test_real_2022_trade_shape_without_count() -> None:
    """A real BTC-USDT *spot* trade from cryptofeed's OKX sample (May 2022, before ``count``).

    As recorded it is rejected: spot is not our swap. With only ``instId`` rewritten to the swap
    (the sample holds no USDT swap), the old shape parses, and without ``count`` the first trade id
    is unknown.
    """
    msg = cryptofeed("cryptofeed_btc_usdt_spot_trade.txt")
    with pytest.raises(SymbolMismatch, match="'BTC-USDT'"):
        okx.parse_trades(msg, "BTC", RECV)
    msg["arg"]["instId"] = msg["data"][0]["instId"] = "BTC-USDT-SWAP"  # rewritten, see docstring
    (trade,) = okx.parse_trades(msg, "BTC", RECV)
    assert (trade.trade_id, trade.first_trade_id, trade.last_trade_id) == (338_476_307, None, 338_476_307)
    assert (trade.price, trade.qty, trade.taker_side) == (D("30236"), D("0.000002"), TakerSide.BUY)
    assert trade.ts_ns == 1_652_459_224_818_000_000


def test_real_coin_margined_swap_is_not_ours() -> None:
    msg = cryptofeed("cryptofeed_uni_usd_swap_trade.txt")
    with pytest.raises(SymbolMismatch, match="UNI-USD-SWAP"):
        okx.normalize(rec("ws:trades", json.dumps(msg)), "UNI")


def test_liquidation_fields_in_base_units() -> None:
    events = okx.normalize(rec("ws:liquidation-orders", as_btc_liquidation()), "BTC")
    assert events == [
        Liquidation(
            exchange="okx",
            symbol="BTC",
            recv_ns=RECV,
            ts_ns=1_692_266_434_010_000_000,
            side=LiquidatedSide.SHORT,
            price=D("0.007831"),
            avg_price=None,
            qty=D("0.13"),  # 13 contracts x 0.01
            filled_qty=D("0.13"),
            last_filled_qty=D("0.13"),
            status="FILLED",
        )
    ]


def test_liquidation_of_an_unconfigured_instrument_is_unknown_instrument() -> None:
    # The docs' example verbatim: IOST-USDT-SWAP has no configured contract value.
    with pytest.raises(UnknownInstrument, match="IOST-USDT-SWAP"):
        okx.normalize(rec("ws:liquidation-orders", payload("liquidation_orders.json")), "IOST")


def test_okx_liquidation_side_follows_okx_docs() -> None:
    """OKX v5 docs, "Liquidation orders channel" push data parameters:
    ``side | String | Order side buy sell Applicable to FUTURES/SWAP`` and
    ``posSide | String | Position mode side long: Hedge mode long short: Hedge mode short net: Net mode``.

    So ``posSide`` names the liquidated position in hedge mode, and in net mode the liquidation
    *order* closes it: ``sell`` closes a long, ``buy`` a short. The docs' own example pairs
    ``"posSide": "short"`` with ``"side": "buy"``.
    """
    base = as_btc_liquidation()
    detail = base["data"][0]["details"][0]
    assert (detail["posSide"], detail["side"]) == ("short", "buy")
    cases = [
        ("short", "buy", LiquidatedSide.SHORT),
        ("long", "sell", LiquidatedSide.LONG),
        ("net", "sell", LiquidatedSide.LONG),
        ("net", "buy", LiquidatedSide.SHORT),
        ("", "sell", LiquidatedSide.LONG),
    ]
    for pos_side, side, expected in cases:
        detail.update(posSide=pos_side, side=side)
        assert okx.parse_liquidation_orders(base, "BTC", 1)[0].side is expected, (pos_side, side)
    for pos_side, side in (("long", "buy"), ("short", "sell")):
        detail.update(posSide=pos_side, side=side)
        with pytest.raises(InvalidValue, match="contradicts"):
            okx.parse_liquidation_orders(base, "BTC", 1)


def test_trade_side_is_the_taker_side() -> None:
    """OKX v5 docs, "Trades channel": ``side | String | Trade side of taker buy sell``."""
    msg = message("trades.json")
    assert okx.parse_trades(msg, "BTC", 1)[0].taker_side is TakerSide.BUY
    msg["data"][0]["side"] = "sell"
    assert okx.parse_trades(msg, "BTC", 1)[0].taker_side is TakerSide.SELL


def test_venue_wide_liquidation_message_keeps_only_our_rows() -> None:
    msg = as_btc_liquidation()
    eth_row = json.loads(json.dumps(msg["data"][0]))
    eth_row.update(instId="ETH-USDT-SWAP", instFamily="ETH-USDT", uly="ETH-USDT")
    eth_row["details"][0].update(sz="4", bkPx="2500.1")
    msg["data"].insert(0, eth_row)
    btc = okx.parse_liquidation_orders(msg, "BTC", RECV)
    eth = okx.parse_liquidation_orders(msg, "ETH", RECV)
    assert [(e.symbol, e.price, e.qty) for e in btc] == [("BTC", D("0.007831"), D("0.13"))]
    assert [(e.symbol, e.price, e.qty) for e in eth] == [("ETH", D("2500.1"), D("0.4"))]
    with pytest.raises(SymbolMismatch, match="no liquidation row for 'SOL-USDT-SWAP'"):
        okx.parse_liquidation_orders(msg, "SOL", RECV)


def test_mark_price_fields() -> None:
    assert okx.normalize(rec("ws:mark-price", payload("mark_price.json")), "BTC") == [
        MarkPriceUpdate(
            exchange="okx",
            symbol="BTC",
            recv_ns=RECV,
            ts_ns=1_597_026_383_085_000_000,
            mark_price=D("0.1"),
            index_price=None,
            funding_rate=None,
            next_funding_ns=None,
        )
    ]


def test_open_interest_in_base_units() -> None:
    assert okx.normalize(rec("ws:open-interest", payload("open_interest.json")), "BTC") == [
        OpenInterest(
            exchange="okx",
            symbol="BTC",
            recv_ns=RECV,
            ts_ns=1_743_041_250_440_000_000,
            open_interest_base=D("22161.1301000000309"),  # oi 2216113.01000000309 contracts x 0.01
        )
    ]


def test_open_interest_disagreeing_with_oiccy_means_a_wrong_contract_value() -> None:
    msg = message("open_interest.json")
    msg["data"][0]["oiCcy"] = "221611.301000000309"  # as if ctVal were 0.1
    with pytest.raises(InvalidValue, match="disagrees with oiCcy"):
        okx.parse_open_interest(msg, "BTC", RECV)
    del msg["data"][0]["oiCcy"]  # without OKX's own figure there is nothing to check against
    assert okx.parse_open_interest(msg, "BTC", RECV)[0].open_interest_base == D("22161.1301000000309")


def test_rest_open_interest() -> None:
    row = message("open_interest.json")["data"][0]
    body = {"code": "0", "msg": "", "data": [row]}
    (event,) = okx.normalize(rec("rest:oi", body), "BTC")
    assert isinstance(event, OpenInterest)
    assert event.open_interest_base == D("22161.1301000000309")
    with pytest.raises(MalformedMessage, match="code='51001'"):
        okx.normalize(
            rec("rest:oi", {"code": "51001", "msg": "Instrument ID does not exist", "data": []}), "BTC"
        )


def test_contract_long_short_ratio_fields() -> None:
    """OKX's documented contract long/short ratio response: one event per ``[ts, ratio]`` row, in
    order, the ratio as sent and the shares derived from it (OKX sends no shares)."""
    channel = "rest:ratio:longShortAccountRatio"
    events = okx.normalize(rec(channel, payload("long_short_account_ratio_contract.json")), "BTC")
    common = {
        "exchange": "okx",
        "symbol": "BTC",
        "recv_ns": RECV,
        "ts_ns": 1_701_417_600_000_000_000,
        "kind": RatioKind.GLOBAL_ACCOUNT,
    }
    assert events == [
        LongShortRatio(
            **common,  # type: ignore[arg-type]
            long_short_ratio=D("1.1739"),
            long_share=D("0.5399972399834399006394038364"),  # 1.1739 / 2.1739
            short_share=D("0.4600027600165600993605961636"),  # 1 / 2.1739
        ),
        LongShortRatio(
            **common,  # type: ignore[arg-type]
            long_short_ratio=D("0.1236"),
            long_share=D("0.1100035599857600569597721609"),  # 0.1236 / 1.1236
            short_share=D("0.8899964400142399430402278391"),
        ),
    ]
    for event in events:
        assert isinstance(event, LongShortRatio)
        assert event.long_share + event.short_share == 1
        assert abs(event.long_share / event.short_share - event.long_short_ratio) < D("1e-25")
    assert isinstance(events[0], LongShortRatio)
    assert str(events[0].long_short_ratio) == "1.1739"  # the string as sent


def test_contract_long_short_ratio_error_bodies() -> None:
    channel = "rest:ratio:longShortAccountRatio"
    limited = {"code": "50011", "msg": "Rate limit reached. Please refer to API documentation.", "data": []}
    with pytest.raises(MalformedMessage, match="code='50011'") as info:
        okx.normalize(rec(channel, limited), "BTC")
    assert (info.value.exchange, info.value.channel) == ("okx", channel)
    assert okx.normalize(rec(channel, {"code": "0", "msg": "", "data": []}), "BTC") == []


def test_books_snapshot_fields_in_base_units() -> None:
    (event,) = okx.normalize(rec("ws:books", payload("books_snapshot.json")), "BTC")
    assert isinstance(event, BookSnapshot)
    assert (event.exchange, event.symbol, event.recv_ns, event.ts_ns) == (
        "okx",
        "BTC",
        RECV,
        1_597_026_383_085_000_000,
    )
    assert (event.depth, event.update_id, event.seq, event.checksum) == (400, 123_456, None, -855_196_043)
    assert event.contract_value == D("0.01")
    assert event.asks[:2] == ((D("8476.98"), D("4.15")), (D("8477"), D("0.07")))
    assert event.bids[:2] == ((D("8476.97"), D("2.56")), (D("8475.55"), D("1.01")))
    assert (len(event.bids), len(event.asks)) == (8, 8)
    # The exchange's own sizes (e.g. for OKX's checksum) come back exactly, as strings too.
    raw = message("books_snapshot.json")["data"][0]
    assert [str(qty / event.contract_value) for _, qty in event.asks] == [level[1] for level in raw["asks"]]


def test_books_update_and_keepalive() -> None:
    msg = message("books_snapshot.json")
    msg["action"] = "update"
    row = msg["data"][0]
    row.update(
        prevSeqId=123_456, seqId=123_457, asks=[["8476.98", "0", "0", "0"]], bids=[["8476.5", "12", "0", "2"]]
    )
    assert okx.parse_books(msg, "BTC", RECV, "books") == [
        BookDelta(
            exchange="okx",
            symbol="BTC",
            recv_ns=RECV,
            ts_ns=1_597_026_383_085_000_000,
            depth=400,
            update_id=123_457,
            prev_update_id=123_456,
            seq=None,
            checksum=-855_196_043,
            contract_value=D("0.01"),
            bids=((D("8476.5"), D("0.12")),),
            asks=((D("8476.98"), D("0.00")),),
        )
    ]
    row.update(prevSeqId=123_457, seqId=123_457, asks=[], bids=[])  # OKX keep-alive
    (alive,) = okx.parse_books(msg, "BTC", RECV, "books")
    assert isinstance(alive, BookDelta)
    assert (alive.prev_update_id, alive.update_id, alive.bids, alive.asks) == (123_457, 123_457, (), ())


def test_books5_is_a_five_level_snapshot() -> None:
    msg = message("books_snapshot.json")
    msg["arg"]["channel"] = "books5"
    del msg["action"]
    row = msg["data"][0]
    row.update(asks=row["asks"][:5], bids=row["bids"][:5])
    for key in ("checksum", "prevSeqId"):
        del row[key]
    (event,) = okx.normalize(rec("ws:books5", msg), "BTC")
    assert isinstance(event, BookSnapshot)
    assert (event.depth, event.update_id, event.checksum, len(event.asks)) == (5, 123_456, None, 5)
    msg["action"] = "update"
    with pytest.raises(MalformedMessage, match="action 'update' on books5"):
        okx.normalize(rec("ws:books5", msg), "BTC")


def test_events_tickers_and_connections() -> None:
    assert okx.normalize(rec("ws:event", '{"event":"subscribe","arg":{"channel":"trades"}}'), "BTC") == []
    with pytest.raises(MalformedMessage, match="code='60012'"):
        okx.normalize(rec("ws:event", '{"event":"error","code":"60012","msg":"Invalid request"}'), "BTC")
    ticker = '{"arg":{"channel":"tickers","instId":"BTC-USDT-SWAP"},"data":[{"last":"9999.99"}]}'
    assert okx.normalize(rec("ws:tickers", ticker), "BTC") == []
    assert okx.normalize(rec("conn:open", "", collector="c9"), "BTC") == [
        ConnectionEvent(exchange="okx", symbol="BTC", recv_ns=RECV, kind="open", detail={}, collector="c9")
    ]


def test_registered() -> None:
    assert NORMALIZERS["okx"] is okx.normalize
    assert {
        "ws:trades",
        "ws:liquidation-orders",
        "ws:mark-price",
        "ws:open-interest",
        "ws:books",
        "ws:books5",
        "ws:tickers",
        "ws:event",
        "ws:pong",
        "rest:oi",
        "rest:ratio:longShortAccountRatio",
    } == okx.CHANNELS


# --- bad input ------------------------------------------------------------------------------------

_DELETE = object()


def _with(msg: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    target: Any = msg
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return msg


def _update() -> dict[str, Any]:
    msg = message("books_snapshot.json")
    msg["action"] = "update"
    msg["data"][0]["prevSeqId"] = 123_455
    return msg


@pytest.mark.parametrize(
    ("channel", "make", "path", "value", "error", "reason"),
    [
        (
            "ws:trades",
            lambda: message("trades.json"),
            ("data", 0, "px"),
            "NaN",
            InvalidValue,
            "positive finite",
        ),
        (
            "ws:trades",
            lambda: message("trades.json"),
            ("data", 0, "px"),
            "-42219.9",
            InvalidValue,
            "positive",
        ),
        ("ws:trades", lambda: message("trades.json"), ("data", 0, "px"), "0", InvalidValue, "positive"),
        ("ws:trades", lambda: message("trades.json"), ("data", 0, "sz"), "-1", InvalidValue, "> 0"),
        ("ws:trades", lambda: message("trades.json"), ("data", 0, "sz"), "0", InvalidValue, "> 0"),
        ("ws:trades", lambda: message("trades.json"), ("data", 0, "sz"), "inf", InvalidValue, "finite"),
        (
            "ws:trades",
            lambda: message("trades.json"),
            ("data", 0, "side"),
            "Buy",
            InvalidValue,
            "neither buy",
        ),
        (
            "ws:trades",
            lambda: message("trades.json"),
            ("data", 0, "tradeId"),
            _DELETE,
            MalformedMessage,
            "'tradeId'",
        ),
        (
            "ws:trades",
            lambda: message("trades.json"),
            ("data", 0, "tradeId"),
            "-7",
            InvalidValue,
            "not an integer",
        ),
        ("ws:trades", lambda: message("trades.json"), ("data", 0, "count"), "0", InvalidValue, "count=0"),
        ("ws:trades", lambda: message("trades.json"), ("data", 0, "px"), True, MalformedMessage, "JSON type"),
        (
            "ws:trades",
            lambda: message("trades.json"),
            ("arg", "instId"),
            "ETH-USDT-SWAP",
            SymbolMismatch,
            "ETH",
        ),
        (
            "ws:trades",
            lambda: message("trades.json"),
            ("data", 0, "instId"),
            "BTC-USDT",
            SymbolMismatch,
            "BTC-USDT'",
        ),
        (
            "ws:trades",
            lambda: message("trades.json"),
            ("arg", "channel"),
            "trades-all",
            MalformedMessage,
            "channel",
        ),
        ("ws:trades", lambda: message("trades.json"), ("data",), {}, MalformedMessage, "not a list"),
        (
            "ws:liquidation-orders",
            as_btc_liquidation,
            ("data", 0, "details", 0, "bkPx"),
            "NaN",
            InvalidValue,
            "bkPx",
        ),
        (
            "ws:liquidation-orders",
            as_btc_liquidation,
            ("data", 0, "details", 0, "bkPx"),
            "-1",
            InvalidValue,
            "bkPx",
        ),
        (
            "ws:liquidation-orders",
            as_btc_liquidation,
            ("data", 0, "details", 0, "sz"),
            "-13",
            InvalidValue,
            "sz",
        ),
        (
            "ws:liquidation-orders",
            as_btc_liquidation,
            ("data", 0, "details", 0, "side"),
            "",
            InvalidValue,
            "side",
        ),
        (
            "ws:liquidation-orders",
            as_btc_liquidation,
            ("data", 0, "details", 0, "posSide"),
            "both",
            InvalidValue,
            "posSide",
        ),
        (
            "ws:liquidation-orders",
            as_btc_liquidation,
            ("data", 0, "details", 0, "ts"),
            _DELETE,
            MalformedMessage,
            "'ts'",
        ),
        (
            "ws:liquidation-orders",
            as_btc_liquidation,
            ("data", 0, "details"),
            None,
            MalformedMessage,
            "details",
        ),
        (
            "ws:mark-price",
            lambda: message("mark_price.json"),
            ("data", 0, "markPx"),
            "NaN",
            InvalidValue,
            "markPx",
        ),
        (
            "ws:mark-price",
            lambda: message("mark_price.json"),
            ("data", 0, "markPx"),
            "-0.1",
            InvalidValue,
            "markPx",
        ),
        (
            "ws:open-interest",
            lambda: message("open_interest.json"),
            ("data", 0, "oi"),
            "-1",
            InvalidValue,
            "oi",
        ),
        (
            "ws:open-interest",
            lambda: message("open_interest.json"),
            ("data", 0, "oi"),
            "NaN",
            InvalidValue,
            "oi",
        ),
        (
            "ws:books",
            lambda: message("books_snapshot.json"),
            ("data", 0, "asks", 0),
            ["NaN", "1", "0", "1"],
            InvalidValue,
            None,
        ),
        (
            "ws:books",
            lambda: message("books_snapshot.json"),
            ("data", 0, "asks", 0),
            ["0", "1", "0", "1"],
            InvalidValue,
            "out of range",
        ),
        (
            "ws:books",
            lambda: message("books_snapshot.json"),
            ("data", 0, "bids", 0),
            ["8476.97", "-2", "0", "1"],
            InvalidValue,
            "out of range",
        ),
        (
            "ws:books",
            lambda: message("books_snapshot.json"),
            ("data", 0, "bids", 0),
            ["8476.97"],
            MalformedMessage,
            "level",
        ),
        (
            "ws:books",
            lambda: message("books_snapshot.json"),
            ("data", 0, "checksum"),
            "-855196043",
            MalformedMessage,
            "checksum",
        ),
        (
            "ws:books",
            lambda: message("books_snapshot.json"),
            ("data", 0, "seqId"),
            _DELETE,
            MalformedMessage,
            "'seqId'",
        ),
        (
            "ws:books",
            lambda: message("books_snapshot.json"),
            ("action",),
            "partial",
            MalformedMessage,
            "action",
        ),
        ("ws:books", _update, ("data", 0, "prevSeqId"), _DELETE, MalformedMessage, "'prevSeqId'"),
        (
            "rest:ratio:longShortAccountRatio",
            lambda: message("long_short_account_ratio_contract.json"),
            ("data", 0, 1),
            "-1.2",
            InvalidValue,
            "longShortAcctRatio",
        ),
        (
            "rest:ratio:longShortAccountRatio",
            lambda: message("long_short_account_ratio_contract.json"),
            ("data", 0, 1),
            "Infinity",
            InvalidValue,
            "longShortAcctRatio",
        ),
        (
            "rest:ratio:longShortAccountRatio",
            lambda: message("long_short_account_ratio_contract.json"),
            ("data", 0, 0),
            "2023-12-01",
            InvalidValue,
            "ts",
        ),
        (
            "rest:ratio:longShortAccountRatio",
            lambda: message("long_short_account_ratio_contract.json"),
            ("data", 1),
            ["1701417600000"],
            MalformedMessage,
            "row",
        ),
        (
            "rest:ratio:longShortAccountRatio",
            lambda: message("long_short_account_ratio_contract.json"),
            ("data",),
            {"ts": "1701417600000"},
            MalformedMessage,
            "data",
        ),
        (
            "rest:ratio:longShortAccountRatio",
            lambda: message("long_short_account_ratio_contract.json"),
            ("code",),
            _DELETE,
            MalformedMessage,
            "code=None",
        ),
    ],
)
def test_bad_fields_are_rejected_with_context(
    channel: str,
    make: Any,
    path: tuple[Any, ...],
    value: Any,
    error: type[NormalizeError],
    reason: str | None,
) -> None:
    with pytest.raises(error, match=reason) as info:
        okx.normalize(rec(channel, _with(make(), path, value)), "BTC")
    assert (info.value.exchange, info.value.channel, info.value.recv_ns) == ("okx", channel, RECV)


@pytest.mark.parametrize("raw", [b"", b"{not json", b"\xff\xfe", b"[1,2]", b'{"arg":{"channel":"trades"}}'])
def test_undecodable_payloads_are_malformed(raw: bytes) -> None:
    with pytest.raises(MalformedMessage):
        okx.normalize(rec("ws:trades", raw), "BTC")


def test_unknown_channel() -> None:
    with pytest.raises(UnknownChannel, match="ws:candle1m"):
        okx.normalize(rec("ws:candle1m", "{}"), "BTC")


# --- de-duplication -------------------------------------------------------------------------------


def test_two_collectors_copies_of_a_minute_are_one() -> None:
    names: list[tuple[str, bytes | str]] = [
        ("ws:trades", payload("trades.json")),
        ("ws:liquidation-orders", json.dumps(as_btc_liquidation())),
        ("ws:mark-price", payload("mark_price.json")),
        ("ws:open-interest", payload("open_interest.json")),
        ("ws:books", payload("books_snapshot.json")),
        ("rest:ratio:longShortAccountRatio", payload("long_short_account_ratio_contract.json")),
    ]
    records = [
        rec(channel, data, RECV + i, collector)
        for collector in ("c1", "c2")
        for i, (channel, data) in enumerate(names)
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
    # the docs' ratio example holds two rows with one ts: the second is a duplicate, as are c2's two
    assert stats.duplicates == 5 + 3
    assert stats.error_total() == 0


def test_dedup_keys() -> None:
    (trade,) = okx.parse_trades(message("trades.json"), "BTC", RECV)
    assert dedup_key(trade) == ("Trade", "okx", "BTC", True, 130_639_474)
    (snap,) = okx.parse_books(message("books_snapshot.json"), "BTC", RECV, "books")
    assert dedup_key(snap) == ("BookSnapshot", "okx", "BTC", 400, 123_456, None)
    books5 = message("books_snapshot.json")
    books5["arg"]["channel"] = "books5"
    (snap5,) = okx.parse_books(books5, "BTC", RECV, "books5")
    assert dedup_key(snap5) == ("BookSnapshot", "okx", "BTC", 5, 123_456, None)  # same seqId, another book
    (delta,) = okx.parse_books(_update(), "BTC", RECV, "books")
    assert dedup_key(delta) == ("BookDelta", "okx", "BTC", 400, 123_455, 123_456, None)
    (liq,) = okx.parse_liquidation_orders(as_btc_liquidation(), "BTC", RECV)
    assert dedup_key(liq) == (
        "Liquidation",
        "okx",
        "BTC",
        1_692_266_434_010_000_000,
        LiquidatedSide.SHORT,
        D("0.007831"),
        D("0.13"),
        D("0.13"),
    )
    assert instruments.contract_value("BTC-USDT-SWAP") == D("0.01")
    ratio = okx.parse_contract_long_short_ratio(
        message("long_short_account_ratio_contract.json"), "BTC", RECV
    )
    assert dedup_key(ratio[0]) == (
        "LongShortRatio",
        "okx",
        "BTC",
        RatioKind.GLOBAL_ACCOUNT,
        1_701_417_600_000_000_000,
    )
