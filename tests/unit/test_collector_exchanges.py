"""Bybit and OKX exchange modules (routing, subscriptions, book sequencing, REST polls) and batch appends."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from moonstream.collector.exchanges import CONNECTION, EXCHANGES, VENUE_WIDE, bybit, get_exchange, okx
from moonstream.collector.rawfile import MinuteFileWriter, RawFormatError, read_minute
from moonstream.jobs.events import LongShortRatio
from moonstream.jobs.normalize import NORMALIZERS, bybit as bybit_normalizer, okx as okx_normalizer
from moonstream.store import LocalStore
from tests.conftest import REPO_ROOT

DATA = REPO_ROOT / "tests" / "data"
T0 = 1_721_347_200_000_000_000  # 2024-07-19T00:00:00Z


def _doc(exchange: str, name: str) -> bytes:
    return (DATA / exchange / name).read_bytes().strip()


def test_registry_and_env_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    assert {"binance", "bybit", "okx"} <= set(EXCHANGES)
    assert get_exchange("bybit").ws_base_url() == "wss://stream.bybit.com"
    assert get_exchange("okx").ws_base_url() == "wss://ws.okx.com:8443"
    monkeypatch.setenv("MOONSTREAM_OKX_WS_URL", "ws://127.0.0.1:9/")
    monkeypatch.setenv("MOONSTREAM_BYBIT_REST_URL", "http://127.0.0.1:8")
    assert get_exchange("okx").ws_base_url() == "ws://127.0.0.1:9"
    assert get_exchange("bybit").rest_base_url() == "http://127.0.0.1:8"


def test_bybit_plan_and_routing() -> None:
    (plan,) = bybit.ws_connections("wss://stream.bybit.com", ("BTC", "ETH"))
    assert plan.url == "wss://stream.bybit.com/v5/public/linear"
    assert plan.subscribe[0] == (
        '{"op":"subscribe","args":["orderbook.50.BTCUSDT","publicTrade.BTCUSDT",'
        '"allLiquidation.BTCUSDT","tickers.BTCUSDT"]}'
    )
    assert len(bybit.ws_connections("x", tuple(f"S{i}" for i in range(25)))) == 3
    assert bybit.route_message(_doc("bybit", "orderbook_snapshot.json")) == ("BTC", "ws:orderbook")
    assert bybit.route_message(_doc("bybit", "public_trade.json")) == ("BTC", "ws:publicTrade")
    assert bybit.route_message(_doc("bybit", "tickers_snapshot.json")) == ("BTC", "ws:tickers")
    assert bybit.route_message(_doc("bybit", "all_liquidation.json")) == ("ROSE", "ws:allLiquidation")
    # topic not first: JSON fallback; op replies belong to the connection; unknowns are None
    assert bybit.route_message(b'{"type":"delta","topic":"tickers.ETHUSDT","data":{}}') == (
        "ETH",
        "ws:tickers",
    )
    pong = b'{"success":true,"ret_msg":"pong","conn_id":"0970e817","op":"ping"}'
    assert bybit.route_message(pong) == (CONNECTION, "ws:op")
    assert bybit.route_message(b'{"topic":"kline.1.BTCUSDT","data":[]}') is None
    assert bybit.route_message(b'{"topic":"tickers.BTCPERP","data":{}}') is None
    assert bybit.route_message(b"not json") is None
    assert bybit.topic_target("orderbook.500.SOLUSDT") == ("SOLUSDT", "ws:orderbook")
    assert bybit.SPEC.app_ping == '{"op":"ping"}' and bybit.SPEC.app_ping_interval_s == 20.0


def test_okx_plan_and_routing() -> None:
    (plan,) = okx.ws_connections("wss://ws.okx.com:8443", ("BTC",))
    assert plan.url == "wss://ws.okx.com:8443/ws/v5/public"
    assert json.loads(plan.subscribe[0]) == {
        "op": "subscribe",
        "args": [
            {"channel": "books", "instId": "BTC-USDT-SWAP"},
            {"channel": "trades", "instId": "BTC-USDT-SWAP"},
            {"channel": "liquidation-orders", "instType": "SWAP"},
            {"channel": "mark-price", "instId": "BTC-USDT-SWAP"},
            {"channel": "open-interest", "instId": "BTC-USDT-SWAP"},
        ],
    }
    assert okx.route_message(_doc("okx", "books_snapshot.json")) == ("BTC", "ws:books")
    assert okx.route_message(_doc("okx", "trades.json")) == ("BTC", "ws:trades")
    assert okx.route_message(_doc("okx", "mark_price.json")) == ("BTC", "ws:mark-price")
    assert okx.route_message(_doc("okx", "open_interest.json")) == ("BTC", "ws:open-interest")
    liquidation = _doc("okx", "liquidation_orders.json")
    assert okx.route_message(liquidation) == (VENUE_WIDE, "ws:liquidation-orders")
    assert okx.wide_symbols(liquidation) == ("IOST",)
    assert okx.route_message(b"pong") == (CONNECTION, "ws:pong")
    ack = b'{"event":"subscribe","arg":{"channel":"books","instId":"ETH-USDT-SWAP"},"connId":"a4d3ae55"}'
    assert okx.route_message(ack) == ("ETH", "ws:event")
    assert okx.route_message(b'{"event":"error","code":"60012","msg":"x","connId":"a"}') == (
        CONNECTION,
        "ws:event",
    )
    assert okx.route_message(b'{"arg":{"channel":"trades","instId":"BTC-USDT"},"data":[]}') is None
    assert okx.resync_messages("BTC", "ws:trades") == ()
    assert okx.resync_messages("BTC", "ws:books") == (
        '{"op":"unsubscribe","args":[{"channel":"books","instId":"BTC-USDT-SWAP"}]}',
        '{"op":"subscribe","args":[{"channel":"books","instId":"BTC-USDT-SWAP"}]}',
    )
    # the importer helpers still work
    assert okx.ws_channel(json.loads(liquidation)) == "ws:liquidation-orders"


def _book(action: str, prev: int, seq: int) -> bytes:
    return (
        f'{{"arg":{{"channel":"books","instId":"BTC-USDT-SWAP"}},"action":"{action}","data":[{{"asks":[],'
        f'"bids":[],"ts":"1597026383085","checksum":0,"prevSeqId":{prev},"seqId":{seq}}}]}}'
    ).encode()


def test_okx_book_sequencer() -> None:
    seq = okx.BookSequencer()
    assert seq.check("BTC", "ws:books", _book("snapshot", -1, 10)) is None
    assert seq.check("BTC", "ws:books", _book("update", 10, 15)) is None
    assert seq.check("BTC", "ws:books", _book("update", 15, 15)) is None  # keep-alive
    assert seq.check("BTC", "ws:books", _book("update", 15, 3)) is None  # sequence reset: seqId falls
    gap = seq.check("BTC", "ws:books", _book("update", 4, 9))
    assert gap == {
        "reason": "sequence",
        "channel": "ws:books",
        "expected_prev_seq_id": 3,
        "prev_seq_id": 4,
        "seq_id": 9,
    }
    assert seq.check("BTC", "ws:books", _book("update", 20, 30)) is None  # resyncing: wait for snapshot
    assert seq.check("BTC", "ws:books", _book("snapshot", -1, 100)) is None
    assert seq.check("BTC", "ws:books", _book("update", 99, 101)) is not None
    assert seq.check("BTC", "ws:trades", _book("update", 1, 2)) is None
    assert okx.BookSequencer.channels == frozenset({"ws:books"})


def test_bybit_rest_polls() -> None:
    """The long/short account ratio, per symbol, every 60 s, with the parameters Bybit documents
    for ``GET /v5/market/account-ratio``; its tag is one the Bybit normalizer reads."""
    (poll,) = bybit.rest_polls("ETH")
    assert (poll.channel, poll.interval_s, poll.snapshot) == ("rest:ratio:account-ratio", 60.0, False)
    assert poll.url("https://api.bybit.com/") == (
        "https://api.bybit.com/v5/market/account-ratio?category=linear&symbol=ETHUSDT&period=5min&limit=1"
    )
    assert bybit.rest_channel("/v5/market/account-ratio/") == poll.channel
    assert bybit.rest_channel("/v5/market/orderbook") is None
    assert poll.channel in bybit_normalizer.CHANNELS
    assert bybit.SPEC.rest_polls is bybit.rest_polls
    # Bybit answers an IP over its limit with 403 ("access too frequent"): it pauses every poll too
    assert bybit.SPEC.rate_limit_statuses == frozenset({403, 429})
    assert get_exchange("binance").rate_limit_statuses == frozenset({418, 429})


def test_okx_rest_polls() -> None:
    """The contract's long/short account ratio, per symbol, every 60 s; no open-interest or book
    poll (the websocket carries both)."""
    (poll,) = okx.rest_polls("SOL")
    assert (poll.channel, poll.interval_s, poll.snapshot) == ("rest:ratio:longShortAccountRatio", 60.0, False)
    assert poll.url("https://www.okx.com") == (
        "https://www.okx.com/api/v5/rubik/stat/contracts/long-short-account-ratio-contract"
        "?instId=SOL-USDT-SWAP&period=5m&limit=1"
    )
    assert okx.rest_channel(poll.path) == poll.channel  # the importers' tag for the same endpoint
    assert poll.channel in okx_normalizer.CHANNELS
    assert okx.SPEC.rate_limit_statuses == frozenset({418, 429})  # OKX: HTTP 429, code 50011


def test_rest_bodies_route_to_the_normalizers(tmp_path: Path) -> None:
    """A documented REST body under its poll's tag, written to a minute file and read back,
    normalizes to the exchange's events: the collector's tags and the normalizers' agree."""
    store = LocalStore(tmp_path / "data")
    for exchange, poll, body in (
        ("bybit", bybit.rest_polls("BTC")[0], _doc("bybit", "account_ratio.json")),
        ("okx", okx.rest_polls("BTC")[0], _doc("okx", "long_short_account_ratio_contract.json")),
    ):
        writer = MinuteFileWriter(tmp_path / "spool" / exchange, store, "c1")
        writer.append("BTC", exchange, T0 + 5, poll.channel, body)
        writer.close(T0 + 120 * 10**9)
        records = read_minute(store, "BTC", T0 // 60_000_000_000)
        (record,) = [r for r in records if r.exchange == exchange]
        assert (record.channel, record.payload) == (poll.channel, body)
        events = NORMALIZERS[exchange](record, "BTC")
        assert events and all(isinstance(e, LongShortRatio) and e.recv_ns == T0 + 5 for e in events)


def test_append_many_matches_append(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "data")
    items: list[tuple[str, str, int, str, bytes | str]] = [
        ("BTC", "okx", T0 + 1, "ws:books", b'{"a":1}'),
        ("ETH", "okx", T0 + 2, "ws:trades", b'{"b":2}'),
        ("BTC", "okx", T0 + 3, "ws:pong", "pong"),  # str payloads are UTF-8, as append does
        ("BTC", "okx", T0 + 4, "ws:books", b'{"c":\n3}\r'),  # CR/LF become spaces
        ("BTC", "okx", T0 + 60_000_000_000, "ws:books", b'{"next":"minute"}'),
        ("BTC", "okx", T0 + 5, "bad channel", b"{}"),
        ("BTC", "okx", -1, "ws:books", b"{}"),
    ]
    one = MinuteFileWriter(tmp_path / "one", store, "one")
    for item in items[:5]:
        one.append(*item)
    many = MinuteFileWriter(tmp_path / "many", store, "many")
    failed = many.append_many(items)
    assert [item for item, _ in failed] == items[5:]
    assert all(isinstance(exc, RawFormatError) for _, exc in failed)
    for name in ("one", "many"):
        files = sorted((tmp_path / name).rglob("*.partial"))
        assert len(files) == 3
    for a, b in zip(
        sorted((tmp_path / "one").rglob("*.partial")),
        sorted((tmp_path / "many").rglob("*.partial")),
        strict=True,
    ):
        assert a.read_bytes() == b.read_bytes()
    assert many.counters.lines == one.counters.lines == 5
    assert many.counters.bytes == one.counters.bytes
    assert many.counters.newline_replacements == one.counters.newline_replacements == 2
    # finalized minutes drop late lines, as append does
    many.finalize_all()
    assert many.append_many([("BTC", "okx", T0 + 9, "ws:books", b"{}")]) == []
    assert many.counters.late_lines_dropped == 1
    assert [r.payload for r in read_minute(store, "BTC", T0 // 60_000_000_000)][:2] == [b'{"a":1}', b"pong"]


def test_append_many_write_error_is_reported_per_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = MinuteFileWriter(tmp_path / "spool", LocalStore(tmp_path / "data"), "c1")
    writer.append("BTC", "bybit", T0, "ws:tickers", b"{}")
    (partial,) = writer._partials.values()
    assert partial.handle is not None

    def full(data: object) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(partial.handle, "write", full)
    items: list[tuple[str, str, int, str, bytes | str]] = [
        ("BTC", "bybit", T0 + i, "ws:tickers", b"{}") for i in range(1, 4)
    ]
    failed = writer.append_many(items)
    assert [item for item, _ in failed] == items and all(isinstance(e, OSError) for _, e in failed)
    assert writer.counters.lines == 1
    assert partial.path.read_bytes() == b"%d ws:tickers {}\n" % T0
