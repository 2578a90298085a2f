"""Pure parts of the live collector: backoff, Binance routing and gap detection, REST helpers, config."""

from __future__ import annotations

import gzip
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from moonstream.collector.capture import Collector, iso_ns, status_key
from moonstream.collector.config import CollectorConfig
from moonstream.collector.connection import BackoffPolicy, failures_after, reconnect_delay
from moonstream.collector.exchanges import EXCHANGES, RestPoll, binance, get_exchange
from moonstream.collector.rawfile import read_minute
from moonstream.collector.rest import rate_limit_pause_s, retry_after_s
from moonstream.config import ConfigError, build_config
from moonstream.store import LocalStore
from moonstream.timeutil import NS_PER_MINUTE, NS_PER_SECOND
from tests.conftest import TEST_DATA, shared_file

POLICY = BackoffPolicy(base=1.0, cap=30.0, healthy_after_s=60.0)


def test_reconnect_delay_doubles_with_equal_jitter_and_caps() -> None:
    assert reconnect_delay(1, policy=POLICY, rand=0.0) == 0.5
    assert reconnect_delay(1, policy=POLICY, rand=0.999999) == pytest.approx(1.0, abs=1e-5)
    assert reconnect_delay(3, policy=POLICY, rand=0.0) == 2.0
    assert reconnect_delay(5, policy=POLICY, rand=0.5) == 12.0  # ceiling 16: 8 + 4
    assert reconnect_delay(6, policy=POLICY, rand=0.0) == 15.0  # ceiling capped at 30
    assert reconnect_delay(10_000, policy=POLICY, rand=0.999999) == pytest.approx(30.0, abs=1e-4)
    with pytest.raises(ValueError):
        reconnect_delay(0, policy=POLICY, rand=0.1)
    with pytest.raises(ValueError):
        reconnect_delay(1, policy=POLICY, rand=1.0)


def test_failures_reset_after_a_healthy_connection() -> None:
    assert failures_after(0, None, POLICY) == 1  # never opened
    assert failures_after(4, None, POLICY) == 5
    assert failures_after(4, 59.9, POLICY) == 5  # short-lived: keeps growing
    assert failures_after(7, 60.0, POLICY) == 1  # healthy: back to the first delay
    with pytest.raises(ValueError):
        BackoffPolicy(base=2.0, cap=1.0)


def test_binance_combined_stream_url_and_polls() -> None:
    spec = get_exchange("binance")
    assert EXCHANGES["binance"] is binance.SPEC
    (plan,) = spec.connections("wss://fstream.binance.com/", ("BTC",))
    assert plan.url == (
        "wss://fstream.binance.com/stream?streams=btcusdt@depth@100ms/btcusdt@aggTrade/"
        "btcusdt@forceOrder/btcusdt@markPrice@1s/btcusdt@bookTicker"
    )
    assert plan.symbols == ("BTC",)
    many = tuple(f"S{i}" for i in range(45))
    plans = spec.connections("wss://x", many)
    assert [len(p.symbols) for p in plans] == [40, 5]  # 200 streams per connection at most
    polls = {p.channel: p for p in spec.rest_polls("ETH")}
    assert polls["rest:depth"].url("https://fapi.binance.com") == (
        "https://fapi.binance.com/fapi/v1/depth?symbol=ETHUSDT&limit=1000"
    )
    assert polls["rest:depth"].snapshot and polls["rest:depth"].interval_s == 3600
    assert polls["rest:oi"].interval_s == 10 and not polls["rest:oi"].snapshot
    ratio = polls["rest:ratio:topLongShortPositionRatio"]
    assert (
        ratio.url("http://h/")
        == "http://h/futures/data/topLongShortPositionRatio?symbol=ETHUSDT&period=5m&limit=1"
    )
    assert ratio.interval_s == 60
    assert sorted(polls) == sorted(
        ["rest:depth", "rest:oi"] + [f"rest:ratio:{e}" for e in binance.RATIO_ENDPOINTS]
    )
    # every REST channel is the one the importers and normalizers already use for that path
    assert all(binance.rest_channel(p.path) == p.channel for p in polls.values())


def test_base_urls_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = get_exchange("binance")
    assert spec.ws_base_url() == "wss://fstream.binance.com"
    monkeypatch.setenv("MOONSTREAM_BINANCE_WS_URL", "ws://127.0.0.1:9/")
    monkeypatch.setenv("MOONSTREAM_BINANCE_REST_URL", "http://127.0.0.1:8")
    assert spec.ws_base_url() == "ws://127.0.0.1:9"
    assert spec.rest_base_url() == "http://127.0.0.1:8"
    with pytest.raises(ValueError, match="known: binance"):
        get_exchange("kraken")


def test_route_message() -> None:
    route = binance.route_message
    assert route(b'{"stream":"btcusdt@depth@100ms","data":{"u":1}}') == ("BTC", "ws:depth")
    assert route(b'{"stream":"ethusdt@markPrice@1s","data":{}}') == ("ETH", "ws:markPrice")
    assert route(b'{"stream":"solusdt@forceOrder","data":{}}') == ("SOL", "ws:forceOrder")
    # no prefix (spaces): falls back to a JSON parse
    assert route(b'{"stream": "btcusdt@bookTicker", "data": {}}') == ("BTC", "ws:bookTicker")
    # market-wide stream: attributed by the event's o.s
    assert route(b'{"stream":"!forceOrder@arr","data":{"o":{"s":"ETHUSDT"}}}') == ("ETH", "ws:forceOrder")
    assert route(b'{"stream":"btcusdt_250627@aggTrade","data":{}}') is None  # not a USDT perpetual
    assert route(b'{"stream":"btcusdt@unknownThing","data":{}}') is None
    assert route(b"not json at all") is None
    assert route(b'{"result":null,"id":1}') is None
    assert route(b"\xff\xfe") is None


def _real_lines(name: str, limit: int | None = None) -> list[bytes]:
    out: list[bytes] = []
    with gzip.open(shared_file(f"hftbacktest-binance-usdm/{name}"), "rb") as handle:
        for line in handle:
            payload = line.rstrip(b"\n").split(b" ", 1)[1]
            if payload.startswith(b'{"stream"'):
                out.append(payload)
            if limit is not None and len(out) >= limit:
                break
    return out


def test_route_and_sequence_on_real_messages() -> None:
    lines = _real_lines("btcusdt_20240719.gz")
    seen: dict[str, int] = {}
    for payload in lines:
        target = binance.route_message(payload)
        assert target is not None
        expected = binance.ws_target(json.loads(payload))
        assert expected is not None and target == (binance.symbol_of(expected[0]), expected[1])
        seen[target[1]] = seen.get(target[1], 0) + 1
    assert seen == {"ws:depth": 5696, "ws:trade": 9727, "ws:bookTicker": 45147}  # data README counts
    sequencer = binance.DepthSequencer()
    gaps = [g for p in lines if (g := sequencer.check("BTC", binance.route_message(p)[1], p))]  # type: ignore[index]
    assert gaps == []  # the pu chain never breaks in the recording
    depth = [p for p in lines if b"@depth" in p[:40]]
    sequencer = binance.DepthSequencer()
    results = [sequencer.check("BTC", "ws:depth", p) for p in depth[:10] + depth[11:20]]
    gap_at = [i for i, g in enumerate(results) if g is not None]
    assert gap_at == [10]
    gap = results[10]
    assert gap is not None
    assert gap["expected_pu"] == json.loads(depth[9])["data"]["u"]
    assert gap["pu"] == json.loads(depth[11])["data"]["pu"] == json.loads(depth[10])["data"]["u"]
    assert gap["u"] == json.loads(depth[11])["data"]["u"]
    assert sequencer.check("ETH", "ws:depth", depth[20]) is None  # per symbol: first message starts a chain


def test_retry_after() -> None:
    assert retry_after_s({"Retry-After": "7"}) == 7.0
    assert retry_after_s({"retry-after": " 2.5 "}) == 2.5
    assert retry_after_s({"Retry-After": "999999"}) == 3600.0
    assert retry_after_s({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}) is None
    assert retry_after_s({}) is None
    assert RestPoll("rest:oi", "/p", (), 1.0).url("http://h/") == "http://h/p"


def test_rate_limit_pause_honours_retry_after_then_the_documented_ban() -> None:
    bybit, okx = get_exchange("bybit"), get_exchange("okx")
    assert rate_limit_pause_s(403, {"Retry-After": "5"}, 1, bybit, POLICY, 0.5) == 5.0
    # Bybit's 403 without a header: at least the 10 minutes its docs ask for, never the 30 s backoff
    assert rate_limit_pause_s(403, {}, 1, bybit, POLICY, 0.5) == 600.0
    assert rate_limit_pause_s(403, {}, 9, bybit, POLICY, 0.999) == 600.0
    # a 429 (Bybit) or any status elsewhere without a header: the reconnect backoff
    assert rate_limit_pause_s(429, {}, 1, bybit, POLICY, 0.0) == reconnect_delay(1, policy=POLICY, rand=0.0)
    assert rate_limit_pause_s(429, {}, 3, okx, POLICY, 0.5) == reconnect_delay(3, policy=POLICY, rand=0.5)


def test_config_rejects_unknown_and_invalid() -> None:
    cfg = build_config(CollectorConfig, {"symbols": ["BTC"], "collector_id": "box-1"})
    assert cfg.symbols == ("BTC",) and cfg.exchanges == ("binance",)
    bad: Mapping[str, Any]
    for bad in (
        {"symbolz": ["BTC"]},
        {"symbols": []},
        {"symbols": ["btc"]},
        {"exchanges": ["kraken"]},
        {"collector_id": "A.B"},
        {"stall_timeout_s": 0},
        {"queue_size": -1},
        {"backoff_base_s": 5, "backoff_cap_s": 1},
    ):
        with pytest.raises(ConfigError):
            build_config(CollectorConfig, bad)


def test_queue_overflow_is_counted_and_status_reports_it(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "data")
    cfg = CollectorConfig(symbols=("BTC",), spool_dir=str(tmp_path / "spool"), queue_size=3)
    collector = Collector(cfg, store=store, clock=lambda: 1_721_347_200_000_000_000)
    for i in range(5):
        collector.put("BTC", "binance", 1_721_347_200_000_000_000 + i, "ws:trade", b"{}")
    collector.put_event("BTC", "binance", 1_721_347_200_000_000_009, "conn:open", b"{}")  # never dropped
    assert collector.queue_dropped == 2
    doc = collector.status_document()
    assert doc["queue"] == {"capacity": 3, "depth": 4, "high_water": 3, "dropped": 2}
    assert doc["generated_at"] == "2024-07-19T00:00:00.000Z"
    assert doc["exchanges"]["binance"]["connected"] is False
    assert status_key("c1") == "status/collector-c1.json"
    assert iso_ns(1_721_347_200_123_999_999) == "2024-07-19T00:00:00.123Z"


def test_line_buffers_are_written_whole_in_order_and_hold_back_finalizing(tmp_path: Path) -> None:
    t0 = 1_721_347_200_000_000_000  # a minute start
    now = [t0]
    store = LocalStore(tmp_path / "data")
    cfg = CollectorConfig(symbols=("BTC",), spool_dir=str(tmp_path / "spool"), finalize_grace_s=0.0)
    collector = Collector(cfg, store=store, clock=lambda: now[0])
    collector._flush_inline = True  # as while running: a full buffer is written at once
    file = ("BTC", t0 // NS_PER_MINUTE, "binance")
    lines, batch = collector.file_lines(file)
    expected = [b'%d ws:trade {"i":%d}\n' % (t0 + i, i) for i in range(batch + 1)]
    lines.extend(expected[:batch])  # what a receiver does
    collector.put_line(file, t0 + batch, expected[batch])
    assert collector.writer.counters.lines == batch and collector.queue_dropped == 0
    assert lines == expected[batch:] and len(collector._queue) == 1  # same list, emptied
    # the clock moves past the minute: the buffered line still holds the minute open
    now[0] = t0 + NS_PER_MINUTE + NS_PER_SECOND
    collector._store_tick()
    assert collector.writer.counters.files_finalized == 0
    collector._flush()
    collector._store_tick()
    assert collector.writer.counters.files_finalized == 1
    records = read_minute(store, "BTC", file[1])
    assert [b"%d %s %s\n" % (r.recv_ns, r.channel.encode(), r.payload) for r in records] == expected
    # a receiver's list of a pruned (past) minute is still written: the late line is counted
    collector.put_event("BTC", "binance", now[0] + NS_PER_MINUTE, "conn:open", b"{}")
    collector._queue.prune()
    lines.append(b"%d ws:trade {}\n" % (t0 + 7))
    assert len(collector._queue) == 2
    collector._flush()
    assert not collector._queue and collector.writer.counters.late_lines_dropped == 1


class _ListSink:
    def __init__(self) -> None:
        self.items: list[tuple[str, str, int, str, bytes]] = []

    def put(self, symbol: str, exchange: str, recv_ns: int, channel: str, payload: bytes) -> None:
        self.items.append((symbol, exchange, recv_ns, channel, payload))


BYBIT_TOO_MANY = (
    b'{"retCode":10006,"retMsg":"Too many visits!","result":{},"retExtInfo":{},"time":1672738134824}'
)
OKX_RATE_LIMIT = (
    b'{"code":"50011","msg":"Rate limit reached. Please refer to API documentation and throttle '
    b'requests accordingly.","data":[]}'
)


def test_rate_limit_errors_inside_an_http_200_body() -> None:
    from moonstream.collector.exchanges import bybit, okx

    assert bybit.rate_limited_body(BYBIT_TOO_MANY) and okx.rate_limited_body(OKX_RATE_LIMIT)
    ratio = (TEST_DATA / "bybit" / "account_ratio.json").read_bytes()
    assert not bybit.rate_limited_body(ratio) and not bybit.rate_limited_body(b"not json 10006")
    assert not okx.rate_limited_body(b'{"code":"0","data":[["1700000000000","50011"]]}')
    assert get_exchange("binance").rate_limited_body is None


def test_poller_records_an_in_body_rate_limit_then_pauses_with_growing_backoff() -> None:
    import asyncio

    from moonstream.collector.connection import ExchangeStats
    from moonstream.collector.rest import RestPoller

    spec = get_exchange("bybit")
    (poll,) = spec.rest_polls("BTC")
    answers = [(200, {}, BYBIT_TOO_MANY), (200, {}, BYBIT_TOO_MANY), (200, {}, b'{"retCode":0}')]
    sink, stats = _ListSink(), ExchangeStats()
    poller = RestPoller(
        spec, ("BTC",), sink, stats, policy=BackoffPolicy(base=0.001, cap=0.004, healthy_after_s=60.0),
        clock=lambda: 7, fetch=lambda url, timeout: answers.pop(0),
    )  # fmt: skip
    for _ in range(2):
        assert asyncio.run(poller._fetch_once("BTC", poll)) is True
    assert poller._limit_failures == 2  # consecutive limits: the backoff grows
    assert stats.rest_blocked_until_ns is not None and stats.rest_blocked_until_ns > 7
    assert asyncio.run(poller._fetch_once("BTC", poll)) is True
    # every body is recorded as received (the normalizer rejects the error bodies) ...
    assert [item[4] for item in sink.items] == [BYBIT_TOO_MANY, BYBIT_TOO_MANY, b'{"retCode":0}']
    # ... the two limits are counted and paused on, and the good answer resets the backoff
    assert (stats.rest_rate_limited, stats.rest_errors) == (2, 2)
    assert stats.rest_last_error == f"{poll.channel}: rate limit in an HTTP 200 body"
    assert poller._limit_failures == 0
