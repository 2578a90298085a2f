"""The real collector against a local websocket server speaking Bybit v5 / OKX v5 public protocols.

The server replays the exchanges' documented example messages (``tests/data/bybit``,
``tests/data/okx``, plus messages built from them and said so), answers application-level pings and
subscription requests the way the exchanges document, and records what the collector sends. The
collector runs in this process with a fast clock so minutes end within a couple of seconds.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import websockets
from websockets.asyncio.server import ServerConnection

from moonstream.collector.capture import Collector, status_key
from moonstream.collector.config import CollectorConfig
from moonstream.collector.exchanges import EXCHANGES
from moonstream.collector.rawfile import RawRecord, ReadReport, iter_minutes, list_raw_minutes
from moonstream.store import LocalStore
from moonstream.timeutil import NS_PER_MINUTE, NS_PER_SECOND
from tests.conftest import REPO_ROOT
from tests.wsserver import FastClock, LoopbackWebsocketServer, collector_config

pytestmark = pytest.mark.integration

DATA = REPO_ROOT / "tests" / "data"

# Replies shaped as the exchanges' docs show them (Bybit v5 "Connect"; OKX v5 "WebSocket" overview).
BYBIT_SUB_ACK = (
    '{"success":true,"ret_msg":"","conn_id":"3cd84cb1-4d06-4a05-930a-2efe5fc70f0f",'
    '"req_id":"","op":"subscribe"}'
)
BYBIT_PONG = '{"success":true,"ret_msg":"pong","conn_id":"0970e817-426e-429a-a679-ff7f55e0b16a","op":"ping"}'
OKX_ERROR = '{"event":"error","code":"60012","msg":"Invalid request","connId":"a4d3ae55"}'


def _doc(exchange: str, name: str) -> str:
    return (DATA / exchange / name).read_text().strip()


class ExchangeServer(LoopbackWebsocketServer):
    """A websocket server thread: after the client's subscription, sends ``script`` (text frames)
    in order, ``interval_s`` apart (a list of frames: back to back); ``respond(message)`` gives the
    replies to each client message (acks, pongs, ...)."""

    def __init__(
        self,
        script: list[str | list[str]],
        respond: Callable[[str], list[str]],
        *,
        subscriptions: int = 1,
        interval_s: float = 0.0,
    ) -> None:
        self.script = script
        self.respond = respond
        self.subscriptions = subscriptions
        self.interval_s = interval_s
        self.received: list[str] = []
        self.sent: list[str] = []
        self.paths: list[str] = []
        super().__init__()

    async def _send(self, ws: ServerConnection, frame: str) -> None:
        await ws.send(frame)
        self.sent.append(frame)

    async def _handler(self, ws: ServerConnection) -> None:
        self.paths.append(ws.request.path if ws.request else "")
        subscribed = asyncio.Event()
        count = 0

        async def play() -> None:
            await subscribed.wait()
            for frames in self.script:
                for frame in [frames] if isinstance(frames, str) else frames:
                    await self._send(ws, frame)
                await asyncio.sleep(self.interval_s)

        player = asyncio.create_task(play())
        try:
            async for message in ws:
                assert isinstance(message, str)
                self.received.append(message)
                for reply in self.respond(message):
                    await self._send(ws, reply)
                if '"op":"subscribe"' in message:
                    count += 1
                    if count == self.subscriptions:
                        subscribed.set()
        except websockets.ConnectionClosed:
            pass
        finally:
            player.cancel()


def _clock() -> FastClock:
    return FastClock()  # 5 clock-seconds before a minute ends


def _run(config: CollectorConfig, clock: FastClock, until: Callable[[Collector], bool]) -> Collector:
    collector = Collector(config, store=LocalStore(Path(config.data_url)), clock=clock)
    exchange = config.exchanges[0]

    def finished(c: Collector) -> bool:
        last = c.stats[exchange].last_message_ns
        if last is None or c._queue or not until(c):
            return False
        due = (last // NS_PER_MINUTE + 1) * NS_PER_MINUTE + int((config.finalize_grace_s + 1) * NS_PER_SECOND)
        return clock() > due

    async def main() -> None:
        task = asyncio.create_task(collector.run())
        deadline = time.monotonic() + 30
        while not finished(collector):
            assert not task.done(), "collector stopped on its own"
            assert time.monotonic() < deadline, f"timed out; status {collector.status_document()}"
            await asyncio.sleep(0.02)
        collector.stop()
        await asyncio.wait_for(task, 20)

    asyncio.run(main())
    return collector


def _records(tmp_path: Path, symbol: str) -> list[RawRecord]:
    store = LocalStore(tmp_path / "data")
    minutes = list_raw_minutes(store, symbol)
    report = ReadReport()
    out: list[RawRecord] = []
    if minutes:
        for _, recs in iter_minutes(store, symbol, minutes[0], minutes[-1], report=report):
            out.extend(recs)
    assert report.files_corrupt == [] and report.lines_malformed == 0
    return out


def _ws(records: list[RawRecord]) -> list[tuple[str, bytes]]:
    return [(r.channel, r.payload) for r in records if r.channel.startswith("ws:")]


def _fast_pings(monkeypatch: pytest.MonkeyPatch, name: str, **changes: Any) -> None:
    monkeypatch.setitem(EXCHANGES, name, dataclasses.replace(EXCHANGES[name], **changes))


def _received_ws(c: Collector, exchange: str) -> int:
    s = c.stats[exchange]
    return sum(m for ch, (m, _) in s.channels.items() if ch.startswith("ws:")) + s.skipped


# ---------------------------------------------------------------------------------------------
# Bybit


def test_bybit_documented_messages_ping_and_subscription(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    snapshot = _doc("bybit", "orderbook_snapshot.json")
    # a delta built from the documented snapshot (same shape, next u and seq, one changed level)
    delta = (
        snapshot.replace('"type":"snapshot"', '"type":"delta"')
        .replace('"u":18521288', '"u":18521289')
        .replace('"seq":7961638724', '"seq":7961638725')
        .replace('[["16493.50","0.006"],["16493.00","0.100"]]', '[["16493.50","0"]]')
    )
    frames = [
        snapshot,
        _doc("bybit", "public_trade.json"),
        _doc("bybit", "all_liquidation.json"),  # ROSEUSDT: the docs' symbol
        _doc("bybit", "tickers_snapshot.json"),
        delta,
    ]
    script: list[str | list[str]] = list(frames)
    expected = {
        "BTC": [
            ("ws:orderbook", frames[0]),
            ("ws:publicTrade", frames[1]),
            ("ws:tickers", frames[3]),
            ("ws:orderbook", frames[4]),
        ],
        "ROSE": [("ws:allLiquidation", frames[2])],
    }

    def respond(message: str) -> list[str]:
        if message == '{"op":"ping"}':
            return [BYBIT_PONG]
        return [BYBIT_SUB_ACK] if '"op":"subscribe"' in message else []

    _fast_pings(monkeypatch, "bybit", app_ping_interval_s=0.2)
    with ExchangeServer(script, respond, subscriptions=2, interval_s=0.05) as server:
        monkeypatch.setenv("MOONSTREAM_BYBIT_WS_URL", f"ws://127.0.0.1:{server.port}")
        config = collector_config(tmp_path, ("BTC", "ROSE"), "bybit")

        def done(c: Collector) -> bool:
            pongs = server.sent.count(BYBIT_PONG)
            return pongs >= 2 and _received_ws(c, "bybit") == len(server.sent)

        _run(config, _clock(), done)

    assert server.paths == ["/v5/public/linear"]
    subscriptions = [m for m in server.received if m != '{"op":"ping"}']
    assert subscriptions == [
        '{"op":"subscribe","args":["orderbook.50.BTCUSDT","publicTrade.BTCUSDT","allLiquidation.BTCUSDT","tickers.BTCUSDT"]}',
        '{"op":"subscribe","args":["orderbook.50.ROSEUSDT","publicTrade.ROSEUSDT","allLiquidation.ROSEUSDT","tickers.ROSEUSDT"]}',
    ]
    assert server.received.count('{"op":"ping"}') >= 2
    btc, rose = _records(tmp_path, "BTC"), _records(tmp_path, "ROSE")
    # data messages: each under its symbol and channel, in order, byte-identical
    assert [x for x in _ws(btc) if x[0] != "ws:op"] == [(ch, p.encode()) for ch, p in expected["BTC"]]
    assert _ws(rose) == [(ch, p.encode()) for ch, p in expected["ROSE"]]
    # replies to our requests (acks, pongs) are kept, in order, in the first symbol's file
    replies = [p.decode() for ch, p in _ws(btc) if ch == "ws:op"]
    assert replies == [f for f in server.sent if f in (BYBIT_SUB_ACK, BYBIT_PONG)]
    assert [r.channel for r in btc if r.channel.startswith("conn:")] == ["conn:open"]  # close: next minute
    status = json.loads(LocalStore(tmp_path / "data").read(status_key("test")).data)["exchanges"]["bybit"]
    assert status["unrouted_messages"] == 0 and status["reconnects"] == 0
    assert status["channels"]["ws:orderbook"]["messages"] == 2


def test_bybit_unanswered_ping_reconnects(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fast_pings(monkeypatch, "bybit", app_ping_interval_s=0.2, app_ping_timeout_s=0.3)
    with ExchangeServer([_doc("bybit", "public_trade.json")], lambda message: []) as server:
        monkeypatch.setenv("MOONSTREAM_BYBIT_WS_URL", f"ws://127.0.0.1:{server.port}")
        config = collector_config(tmp_path, ("BTC",), "bybit")
        clock = _clock()
        reconnected_at: list[int] = []

        def closed_minute_finalized(c: Collector) -> bool:
            # the conn:close line may fall in a later minute than the last message: wait until the
            # minute of the reconnect has been finalized too, so the line is in a finalized file
            if c.stats["bybit"].reconnects < 1:
                return False
            reconnected_at[:1] = reconnected_at[:1] or [clock()]
            return clock() > (reconnected_at[0] // NS_PER_MINUTE + 1) * NS_PER_MINUTE + 2 * NS_PER_SECOND

        collector = _run(config, clock, closed_minute_finalized)

    closes = [json.loads(r.payload) for r in _records(tmp_path, "BTC") if r.channel == "conn:close"]
    assert "pong_timeout" in [c["reason"] for c in closes]  # the first close, unless a loaded machine stalled
    assert len(server.paths) >= 2 and collector.stats["bybit"].reconnects >= 1


# ---------------------------------------------------------------------------------------------
# OKX


def _okx_respond(snapshot: str) -> Callable[[str], list[str]]:
    """Acks like OKX's (one per arg), ``pong`` for ``ping``, and a fresh book snapshot after a
    resubscription of ``books``."""

    def respond(message: str) -> list[str]:
        if message == "ping":
            return ["pong"]
        request = json.loads(message)
        replies = [
            json.dumps({"event": request["op"], "arg": arg, "connId": "a4d3ae55"}, separators=(",", ":"))
            for arg in request["args"]
        ]
        if request["op"] == "subscribe" and request["args"] == [
            {"channel": "books", "instId": "BTC-USDT-SWAP"}
        ]:
            replies.append(snapshot)
        return replies

    return respond


def _okx_update(prev: int, seq: int) -> str:
    """A ``books`` update built from the documented snapshot's shape (one ask level changed)."""
    return (
        '{"arg":{"channel":"books","instId":"BTC-USDT-SWAP"},"action":"update","data":[{'
        '"asks":[["8476.98","415","0","13"]],"bids":[],"ts":"1597026383085","checksum":-855196043,'
        f'"prevSeqId":{prev},"seqId":{seq}}}]}}'
    )


OKX_SUBSCRIBE = (
    '{"op":"subscribe","args":[{"channel":"books","instId":"BTC-USDT-SWAP"},'
    '{"channel":"trades","instId":"BTC-USDT-SWAP"},{"channel":"liquidation-orders","instType":"SWAP"},'
    '{"channel":"mark-price","instId":"BTC-USDT-SWAP"},{"channel":"open-interest","instId":"BTC-USDT-SWAP"},'
    '{"channel":"books","instId":"ETH-USDT-SWAP"},{"channel":"trades","instId":"ETH-USDT-SWAP"},'
    '{"channel":"mark-price","instId":"ETH-USDT-SWAP"},{"channel":"open-interest","instId":"ETH-USDT-SWAP"}]}'
)


def test_okx_documented_messages_venue_wide_liquidations_and_ping(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    snapshot = _doc("okx", "books_snapshot.json")
    liquidation = _doc("okx", "liquidation_orders.json")  # IOST-USDT-SWAP only: none of ours
    row = json.loads(liquidation)["data"][0]
    # the documented message with rows for BTC and ETH added (instId rewritten), IOST's row kept
    rows = [{**row, "instId": "BTC-USDT-SWAP"}, row, {**row, "instId": "ETH-USDT-SWAP"}]
    mixed = json.dumps({"arg": {"channel": "liquidation-orders", "instType": "SWAP"}, "data": rows})
    eth_trade = _doc("okx", "trades.json").replace("BTC-USDT-SWAP", "ETH-USDT-SWAP")
    frames = [
        snapshot,
        _okx_update(123456, 123457),
        _doc("okx", "trades.json"),
        liquidation,
        _doc("okx", "mark_price.json"),
        mixed,
        _doc("okx", "open_interest.json"),
        eth_trade,
        _okx_update(123457, 123457),  # no change: OKX's keep-alive push
        OKX_ERROR,
    ]
    script: list[str | list[str]] = list(frames)
    expected_btc = [
        ("ws:books", frames[0]),
        ("ws:books", frames[1]),
        ("ws:trades", frames[2]),
        ("ws:mark-price", frames[4]),
        ("ws:liquidation-orders", mixed),
        ("ws:open-interest", frames[6]),
        ("ws:books", frames[8]),
    ]
    expected_eth = [("ws:liquidation-orders", mixed), ("ws:trades", eth_trade)]

    _fast_pings(monkeypatch, "okx", app_ping_interval_s=0.2)
    with ExchangeServer(script, _okx_respond(snapshot), interval_s=0.05) as server:
        monkeypatch.setenv("MOONSTREAM_OKX_WS_URL", f"ws://127.0.0.1:{server.port}")
        config = collector_config(tmp_path, ("BTC", "ETH"), "okx")

        def done(c: Collector) -> bool:
            return server.sent.count("pong") >= 2 and _received_ws(c, "okx") == len(server.sent)

        collector = _run(config, _clock(), done)

    assert server.paths == ["/ws/v5/public"]
    assert server.received[0] == OKX_SUBSCRIBE
    assert set(server.received[1:]) == {"ping"}
    btc, eth = _records(tmp_path, "BTC"), _records(tmp_path, "ETH")
    data = ("ws:event", "ws:pong")
    assert [x for x in _ws(btc) if x[0] not in data] == [(ch, p.encode()) for ch, p in expected_btc]
    assert [x for x in _ws(eth) if x[0] not in data] == [(ch, p.encode()) for ch, p in expected_eth]
    # acks go to the instrument they name (liquidation-orders' and errors: the first symbol)
    acks = [json.loads(p) for ch, p in _ws(eth) if ch == "ws:event"]
    assert {a["arg"]["channel"] for a in acks} == {"books", "trades", "mark-price", "open-interest"}
    btc_events = [p.decode() for ch, p in _ws(btc) if ch == "ws:event"]
    assert len(btc_events) == 6 and btc_events[-1] == OKX_ERROR
    assert [p for ch, p in _ws(btc) if ch == "ws:pong"] == [b"pong"] * server.sent.count("pong")
    # the IOST-only liquidation message concerns none of our symbols: not written, counted
    assert all(liquidation.encode() != p for _, p in _ws(btc) + _ws(eth))
    stats = collector.stats["okx"]
    assert stats.skipped == 1 and stats.unrouted == 0 and stats.gaps == 0
    status = json.loads(LocalStore(tmp_path / "data").read(status_key("test")).data)["exchanges"]["okx"]
    assert status["skipped_messages"] == 1
    assert status["channels"]["ws:liquidation-orders"]["messages"] == 1


def test_okx_book_gap_resubscribes_for_a_fresh_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    snapshot = _doc("okx", "books_snapshot.json")
    fresh = snapshot.replace('"seqId":123456', '"seqId":200000')
    script: list[str | list[str]] = [
        snapshot,
        _okx_update(123456, 123460),
        [
            _okx_update(123470, 123480),  # prevSeqId should be 123460: a gap
            _okx_update(123480, 123490),  # in flight before the resubscription: no second gap
        ],
    ]
    with ExchangeServer(script, _okx_respond(fresh), interval_s=0.05) as server:
        monkeypatch.setenv("MOONSTREAM_OKX_WS_URL", f"ws://127.0.0.1:{server.port}")
        config = collector_config(tmp_path, ("BTC",), "okx")

        def done(c: Collector) -> bool:
            return fresh in server.sent and _received_ws(c, "okx") == len(server.sent)

        collector = _run(config, _clock(), done)

    books = '[{"channel":"books","instId":"BTC-USDT-SWAP"}]'
    assert server.received[1:] == [
        '{"op":"unsubscribe","args":' + books + "}",
        '{"op":"subscribe","args":' + books + "}",
    ]
    records = _records(tmp_path, "BTC")
    tags = [(r.channel, r.payload) for r in records if r.channel in ("ws:books", "conn:gap")]
    assert [ch for ch, _ in tags] == ["ws:books", "ws:books", "conn:gap", "ws:books", "ws:books", "ws:books"]
    gap = json.loads(tags[2][1])
    assert gap == {
        "attempt": 1,
        "channel": "ws:books",
        "expected_prev_seq_id": 123460,
        "prev_seq_id": 123470,
        "reason": "sequence",
        "seq_id": 123480,
        "url": f"ws://127.0.0.1:{server.port}/ws/v5/public",
    }
    assert tags[-1][1] == fresh.encode()
    assert collector.stats["okx"].gaps == 1
