"""The real collector against loopback Bybit v5 / OKX v5 servers with faults, and their REST polls.

Like the Binance replay tests (test_collector_replay.py): a websocket server speaking the exchange's
public protocol (``tests.wsserver.ScriptedExchangeServer``: acks, pongs, the documented messages)
drops the connection, stalls (no data, no pongs) and sends garbage; a local HTTP server
(``tests.wsserver.LoopbackHttpServer``) answers the REST polls with the exchanges' documented
response bodies (``tests/data/{bybit,okx}``) after rate-limit and server errors. The collector runs
in this process with a fast clock (minutes end within seconds) and must record every message once,
byte-identical, and report each fault in its status document.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from moonstream.collector.capture import Collector, status_key
from moonstream.collector.config import CollectorConfig
from moonstream.collector.exchanges import EXCHANGES, RestPoll
from moonstream.collector.rawfile import RawRecord, ReadReport, iter_minutes, list_raw_minutes
from moonstream.jobs.events import LongShortRatio, RatioKind
from moonstream.jobs.normalize import NORMALIZERS
from moonstream.store import LocalStore
from moonstream.timeutil import NS_PER_MINUTE, NS_PER_SECOND
from tests.conftest import TEST_DATA
from tests.wsserver import FastClock, LoopbackHttpServer, ScriptedExchangeServer, collector_config

pytestmark = pytest.mark.integration

D = Decimal
BYBIT_RATIO = "rest:ratio:account-ratio"
OKX_RATIO = "rest:ratio:longShortAccountRatio"
BYBIT_RATIO_PATH = "/v5/market/account-ratio"
OKX_RATIO_PATH = "/api/v5/rubik/stat/contracts/long-short-account-ratio-contract"
OKX_RATIO_FIXTURE = "long_short_account_ratio_contract.json"
# replies to our own requests (acks, pongs): recorded, but not part of the scripted data
REPLY_CHANNELS = frozenset({"ws:op", "ws:event", "ws:pong"})

# Replies shaped as the exchanges' docs show them (Bybit v5 "Connect"; OKX v5 "WebSocket" overview).
BYBIT_SUB_ACK = (
    '{"success":true,"ret_msg":"","conn_id":"3cd84cb1-4d06-4a05-930a-2efe5fc70f0f",'
    '"req_id":"","op":"subscribe"}'
)
BYBIT_PONG = '{"success":true,"ret_msg":"pong","conn_id":"0970e817-426e-429a-a679-ff7f55e0b16a","op":"ping"}'


def _doc(exchange: str, name: str) -> str:
    return (TEST_DATA / exchange / name).read_text().strip()


def _bybit_respond(message: str) -> list[str]:
    if message == '{"op":"ping"}':
        return [BYBIT_PONG]
    return [BYBIT_SUB_ACK] if '"op":"subscribe"' in message else []


def _okx_respond(message: str) -> list[str]:
    """``pong`` for ``ping``, one ack per subscribed arg (OKX's shape)."""
    if message == "ping":
        return ["pong"]
    request = json.loads(message)
    return [
        json.dumps({"event": request["op"], "arg": arg, "connId": "a4d3ae55"}, separators=(",", ":"))
        for arg in request["args"]
    ]


def _bybit_trades(n: int) -> list[str]:
    """``n`` distinct publicTrade messages built from the documented one (trade id ``i``, fill time
    ``T`` and message ``ts`` changed per message)."""
    doc = _doc("bybit", "public_trade.json")
    return [
        doc.replace("20f43950-d8dd-5b31-9112-a178eb6023af", str(uuid.UUID(int=k + 1)))
        .replace('"T":1672304486865', f'"T":{1672304486865 + k}')
        .replace('"ts":1672304486868', f'"ts":{1672304486868 + k}')
        for k in range(n)
    ]


def _okx_trades(n: int) -> list[str]:
    """``n`` distinct trades messages built from the documented one (``tradeId`` and ``ts`` changed)."""
    doc = _doc("okx", "trades.json")
    return [
        doc.replace('"tradeId":"130639474"', f'"tradeId":"{130639474 + k}"').replace(
            '"ts":"1630048897897"', f'"ts":"{1630048897897 + k}"'
        )
        for k in range(n)
    ]


def _config(tmp_path: Path, symbols: tuple[str, ...], exchange: str, **overrides: Any) -> CollectorConfig:
    """Loopback set-up with REST polls on and a long healthy period (backoff keeps growing)."""
    return collector_config(
        tmp_path, symbols, exchange, healthy_after_s=30.0, rest_enabled=True, rest_timeout_s=2.0, **overrides
    )


def _env(
    monkeypatch: pytest.MonkeyPatch, exchange: str, ws: ScriptedExchangeServer, rest: LoopbackHttpServer
) -> None:
    monkeypatch.setenv(f"MOONSTREAM_{exchange.upper()}_WS_URL", f"ws://127.0.0.1:{ws.port}")
    monkeypatch.setenv(f"MOONSTREAM_{exchange.upper()}_REST_URL", f"http://127.0.0.1:{rest.port}")


def _speed_up(
    monkeypatch: pytest.MonkeyPatch, exchange: str, *, poll_interval_s: float | None = None
) -> None:
    """Application pings every 0.2 s (so an idle but live server keeps the connection busy, and
    only a silent one stalls) and, optionally, REST polls every ``poll_interval_s`` instead of 60 s
    (so a poll retries within the test after an error). Paths and parameters are the real ones."""
    spec = EXCHANGES[exchange]
    # and no 10-minute pause after Bybit's 403 (unit-tested in test_collector_units)
    changes: dict[str, Any] = {"app_ping_interval_s": 0.2, "rate_limit_min_pause_s": {}}
    if poll_interval_s is not None:
        polls = spec.rest_polls

        def fast_polls(symbol: str) -> tuple[RestPoll, ...]:
            return tuple(dataclasses.replace(p, interval_s=poll_interval_s) for p in polls(symbol))

        changes["rest_polls"] = fast_polls
    monkeypatch.setitem(EXCHANGES, exchange, dataclasses.replace(spec, **changes))


def _run(
    config: CollectorConfig, clock: FastClock, until: Callable[[Collector], bool]
) -> tuple[Collector, int]:
    """Run the collector until ``until`` holds, then until the minute of that moment is finalized;
    stop it cleanly. Returns the collector and the (clock) time ``until`` first held: everything
    received before it is in finalized minute files."""
    collector = Collector(config, store=LocalStore(Path(config.data_url)), clock=clock)
    grace_ns = int((config.finalize_grace_s + 1) * NS_PER_SECOND)
    done_at: list[int] = []

    async def main() -> None:
        task = asyncio.create_task(collector.run())
        deadline = time.monotonic() + 40
        while True:
            assert not task.done(), "collector stopped on its own"
            assert time.monotonic() < deadline, f"timed out; status {collector.status_document()}"
            if not done_at and until(collector):
                done_at.append(clock())
            finalized_at = (done_at[0] // NS_PER_MINUTE + 1) * NS_PER_MINUTE + grace_ns if done_at else None
            if finalized_at is not None and not collector._queue and clock() > finalized_at:
                break
            await asyncio.sleep(0.02)
        collector.stop()
        await asyncio.wait_for(task, 20)

    asyncio.run(main())
    return collector, done_at[0]


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


def _status(tmp_path: Path, exchange: str) -> dict[str, Any]:
    document = json.loads(LocalStore(tmp_path / "data").read(status_key("test")).data)
    assert document["running"] is False
    status: dict[str, Any] = document["exchanges"][exchange]
    return status


def _data_received(c: Collector, exchange: str) -> int:
    """Scripted websocket frames received (data and unrouted garbage; not replies to our requests)."""
    channels = c.stats[exchange].channels.items()
    return sum(m for ch, (m, _) in channels if ch.startswith("ws:") and ch not in REPLY_CHANNELS)


def _recorded(c: Collector, exchange: str, channel: str) -> int:
    return c.stats[exchange].channels.get(channel, [0, 0])[0]


# ---------------------------------------------------------------------------------------------
# REST polls: fetched from the local server, recorded byte-identical, normalized


@pytest.mark.parametrize(
    ("exchange", "channel", "fixture", "expected_targets"),
    [
        (
            "bybit",
            BYBIT_RATIO,
            "account_ratio.json",
            {
                "BTC": f"{BYBIT_RATIO_PATH}?category=linear&symbol=BTCUSDT&period=5min&limit=1",
                "ETH": f"{BYBIT_RATIO_PATH}?category=linear&symbol=ETHUSDT&period=5min&limit=1",
            },
        ),
        (
            "okx",
            OKX_RATIO,
            OKX_RATIO_FIXTURE,
            {
                "BTC": f"{OKX_RATIO_PATH}?instId=BTC-USDT-SWAP&period=5m&limit=1",
                "ETH": f"{OKX_RATIO_PATH}?instId=ETH-USDT-SWAP&period=5m&limit=1",
            },
        ),
    ],
)
def test_rest_ratio_polls_land_in_minute_files_byte_identical(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    exchange: str,
    channel: str,
    fixture: str,
    expected_targets: dict[str, str],
) -> None:
    doc = _doc(exchange, fixture).encode()
    # per symbol: Bybit's body names the symbol (ETH's is the documented body with it rewritten);
    # OKX's names none, so every instrument gets the documented body
    bodies = {"BTC": doc, "ETH": doc.replace(b"BTCUSDT", b"ETHUSDT")}
    query_key = "symbol" if exchange == "bybit" else "instId"

    def answer(query: dict[str, list[str]]) -> bytes | None:
        (name,) = query[query_key]
        return bodies.get(name.replace("-USDT-SWAP", "").replace("USDT", ""))

    path = BYBIT_RATIO_PATH if exchange == "bybit" else OKX_RATIO_PATH
    respond = _bybit_respond if exchange == "bybit" else _okx_respond
    with (
        ScriptedExchangeServer([], respond, subscriptions=2 if exchange == "bybit" else 1) as ws,
        LoopbackHttpServer({path: answer}) as rest,
    ):
        _env(monkeypatch, exchange, ws, rest)
        config = _config(tmp_path, ("BTC", "ETH"), exchange)
        collector, done_at = _run(config, FastClock(), lambda c: _recorded(c, exchange, channel) >= 2)

    # one request per symbol (the next is 60 s later), at the documented path and parameters
    assert sorted(target for _, target, _ in rest.requests) == sorted(expected_targets.values())
    assert rest.statuses() == [200, 200]
    for symbol in ("BTC", "ETH"):
        records = [r for r in _records(tmp_path, symbol) if r.channel == channel]
        assert [r.payload for r in records] == [bodies[symbol]]  # byte-identical, in its symbol's file
        (record,) = records
        assert record.exchange == exchange and record.recv_ns <= done_at
        events = NORMALIZERS[exchange](record, symbol)
        assert events and all(isinstance(e, LongShortRatio) for e in events)
        first = events[0]
        assert isinstance(first, LongShortRatio)
        assert (first.symbol, first.kind, first.recv_ns) == (symbol, RatioKind.GLOBAL_ACCOUNT, record.recv_ns)
        if exchange == "bybit":
            assert (first.ts_ns, first.long_share, first.short_share) == (
                1_695_772_800_000_000_000,
                D("0.5777"),
                D("0.4223"),
            )
        else:
            assert (first.ts_ns, first.long_short_ratio) == (1_701_417_600_000_000_000, D("1.1739"))
    status = _status(tmp_path, exchange)
    assert status["channels"][channel] == {"messages": 2, "bytes": len(bodies["BTC"]) + len(bodies["ETH"])}
    assert status["rest"] == {
        "requests": 2,
        "errors": 0,
        "rate_limited": 0,
        "last_error": None,
        "blocked_until": None,
    }
    assert collector.stats[exchange].rest_requests == 2


# ---------------------------------------------------------------------------------------------
# Faults: drop, stall, garbage, rate limits


def _check_faults(
    tmp_path: Path,
    ws: ScriptedExchangeServer,
    messages: list[str],
    garbage: dict[int, str],
) -> list[RawRecord]:
    """What both exchanges' fault tests check on the websocket side; returns BTC's records."""
    # first connection, after the drop, after the stall; the idle end answers pings: no more stalls
    assert ws.connections >= 3
    records = _records(tmp_path, "BTC")
    data = [r.payload for r in records if r.channel.startswith("ws:") and r.channel not in REPLY_CHANNELS]
    unrouted = [r.payload for r in records if r.channel == "ws:unrouted"]
    assert [p for p in data if p not in unrouted] == [m.encode() for m in messages]  # all, once, in order
    assert unrouted == [garbage[i].encode() for i in sorted(garbage)]  # kept (lossless), tagged, in order
    closes = [json.loads(r.payload) for r in records if r.channel == "conn:close"]
    reasons = [c["reason"] for c in closes]
    assert reasons[:2] == ["closed:1006", "stall"]
    assert set(reasons[2:]) <= {"stall", "shutdown"}  # a loaded machine may stall once more
    assert [c["attempt"] for c in closes] == list(range(1, len(closes) + 1))
    opens = [json.loads(r.payload)["attempt"] for r in records if r.channel == "conn:open"]
    assert opens[: len(closes)] == list(range(1, len(closes) + 1))
    # every connection subscribed again and got its acks; the replies are recorded, not lost
    replies = [r.payload.decode() for r in records if r.channel in REPLY_CHANNELS]
    assert set(replies) <= set(ws.replies)
    return records


def _check_rest_faults(
    rest: LoopbackHttpServer, records: list[RawRecord], channel: str, body: bytes, status: dict[str, Any]
) -> None:
    """The scripted REST answers were 429 (Retry-After: 1), a rate limit without the header, 500,
    then 200s: every poll paused for the Retry-After second, errors were counted, and the bodies
    that came through are recorded byte-identical."""
    statuses = rest.statuses()
    assert statuses[:3] == [429, statuses[1], 500] and set(statuses[3:]) == {200}
    times = [t for t, _, _ in rest.requests]
    assert times[1] - times[0] >= 0.9  # nothing was requested during the Retry-After second
    recorded = [r.payload for r in records if r.channel == channel]
    assert recorded and set(recorded) == {body}
    assert len(recorded) <= status["channels"][channel]["messages"] <= statuses.count(200)
    assert status["rest"]["rate_limited"] == 2
    assert status["rest"]["errors"] == 3
    assert status["rest"]["requests"] >= 4
    assert status["rest"]["last_error"] == f"{channel}: HTTP 500"  # a server error: counted, not a pause


def _run_with_faults(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    exchange: str,
    messages: list[str],
    respond: Callable[[str], list[str]],
    garbage: dict[int, str],
    rest_path: str,
    failures: list[tuple[int, dict[str, str]]],
) -> tuple[list[RawRecord], ScriptedExchangeServer, LoopbackHttpServer, bytes]:
    """One collector against a server that drops the connection after message 100, stalls at 200 and
    sends ``garbage``, and a REST server that fails ``failures`` before answering; returns the
    records (checked by :func:`_check_faults`), both servers and the REST body."""
    channel = BYBIT_RATIO if exchange == "bybit" else OKX_RATIO
    body = _doc(exchange, "account_ratio.json" if exchange == "bybit" else OKX_RATIO_FIXTURE).encode()
    _speed_up(monkeypatch, exchange, poll_interval_s=0.2)
    with (
        ScriptedExchangeServer(
            messages, respond, interval_s=0.002, drop_after={100}, stall_at={200}, garbage_before=garbage
        ) as ws,
        LoopbackHttpServer({rest_path: body}, failures=failures) as rest,
    ):
        _env(monkeypatch, exchange, ws, rest)
        config = _config(tmp_path, ("BTC",), exchange, stall_timeout_s=1.0)

        def done(c: Collector) -> bool:
            return (
                _data_received(c, exchange) == len(messages) + len(garbage)
                and _recorded(c, exchange, channel) >= 2
            )

        _run(config, FastClock(), done)
    return _check_faults(tmp_path, ws, messages, garbage), ws, rest, body


def _check_status_after_faults(status: dict[str, Any], trade_channel: str, trades: int) -> None:
    assert status["reconnects"] >= 2 and status["connections"][0]["reconnects"] == status["reconnects"]
    assert status["connections"][0]["last_close_reason"] in ("stall", "shutdown")
    assert status["connected"] is False
    assert status["unrouted_messages"] == 2 and status["gaps"] == 0
    assert status["channels"][trade_channel]["messages"] == trades
    assert status["channels"]["ws:unrouted"]["messages"] == 2


def test_bybit_survives_drop_stall_garbage_and_rate_limits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    messages = _bybit_trades(300)
    garbage = {
        50: "this is not json",
        250: _doc("bybit", "public_trade.json").replace("BTCUSDT", "XRPUSDT"),  # not our symbol
    }
    # 429 with Retry-After, then 403 (Bybit's answer to an IP over its limit; no Retry-After), then 500
    failures = [(429, {"Retry-After": "1"}), (403, {}), (500, {})]
    records, ws, rest, body = _run_with_faults(
        tmp_path, monkeypatch, "bybit", messages, _bybit_respond, garbage, BYBIT_RATIO_PATH, failures
    )
    acks = [r for r in records if r.channel == "ws:op" and r.payload == BYBIT_SUB_ACK.encode()]
    assert len(acks) >= 3  # one subscription per connection
    assert (
        ws.received.count(
            '{"op":"subscribe","args":["orderbook.50.BTCUSDT","publicTrade.BTCUSDT",'
            '"allLiquidation.BTCUSDT","tickers.BTCUSDT"]}'
        )
        == ws.connections
    )
    assert rest.statuses()[1] == 403
    status = _status(tmp_path, "bybit")
    _check_rest_faults(rest, records, BYBIT_RATIO, body, status)
    _check_status_after_faults(status, "ws:publicTrade", len(messages))


def test_okx_survives_drop_stall_garbage_and_rate_limits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    messages = _okx_trades(300)
    garbage = {
        50: "this is not json",
        250: _doc("okx", "trades.json").replace("BTC-USDT-SWAP", "XRP-USDT-SWAP"),  # not our symbol
    }
    # OKX answers a rate limit with HTTP 429 (code 50011): once with Retry-After, once without
    failures = [(429, {"Retry-After": "1"}), (429, {}), (500, {})]
    records, ws, rest, body = _run_with_faults(
        tmp_path, monkeypatch, "okx", messages, _okx_respond, garbage, OKX_RATIO_PATH, failures
    )
    subscriptions = [m for m in ws.received if m != "ping"]
    assert len(subscriptions) == ws.connections and len(set(subscriptions)) == 1  # the same, each time
    acks = [json.loads(r.payload) for r in records if r.channel == "ws:event"]
    assert sum(a["arg"] == {"channel": "books", "instId": "BTC-USDT-SWAP"} for a in acks) >= 3
    assert rest.statuses()[1] == 429
    status = _status(tmp_path, "okx")
    _check_rest_faults(rest, records, OKX_RATIO, body, status)
    _check_status_after_faults(status, "ws:trades", len(messages))
