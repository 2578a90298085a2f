"""The real collector against a local websocket + HTTP server replaying recorded Binance messages.

The servers run in their own thread (own event loop), so the collector under test can run either in
this process (with a fast clock, so minutes end within a couple of seconds) or as a subprocess that
is killed with SIGKILL.
"""

from __future__ import annotations

import asyncio
import gzip
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import websockets
from websockets.asyncio.server import ServerConnection

from moonstream.collector.capture import Collector, status_key
from moonstream.collector.config import CollectorConfig
from moonstream.collector.rawfile import (
    PARTIAL_SUFFIX,
    MinuteFileWriter,
    RawRecord,
    ReadReport,
    iter_minutes,
    list_raw_minutes,
)
from moonstream.store import LocalStore
from moonstream.timeutil import NS_PER_MINUTE, NS_PER_SECOND
from tests.conftest import REPO_ROOT, shared_file
from tests.wsserver import LoopbackWebsocketServer

pytestmark = [pytest.mark.integration, pytest.mark.shared_data]

EXPECTED_PATH = (
    "/stream?streams=btcusdt@depth@100ms/btcusdt@aggTrade/btcusdt@forceOrder/"
    "btcusdt@markPrice@1s/btcusdt@bookTicker"
)
OI_BODY = b'{"symbol":"BTCUSDT","openInterest":"81234.567","time":1721347201000}'
RATIO_BODY = (
    b'[{"symbol":"BTCUSDT","longShortRatio":"1.5","longAccount":"0.6","shortAccount":"0.4","timestamp":1}]'
)


def _recorded(limit: int) -> list[bytes]:
    """The first ``limit`` combined-stream payloads of the real 2024-07-19 BTCUSDT recording."""
    out: list[bytes] = []
    with gzip.open(shared_file("hftbacktest-binance-usdm/btcusdt_20240719.gz"), "rb") as handle:
        for line in handle:
            payload = line.rstrip(b"\n").split(b" ", 1)[1]
            if payload.startswith(b'{"stream"'):
                out.append(payload)
                if len(out) >= limit:
                    break
    return out


def _recorded_snapshot() -> bytes:
    """The real 1000-level REST depth snapshot of the 2024-07-18 recording."""
    with gzip.open(shared_file("hftbacktest-binance-usdm/btcusdt_20240718.gz"), "rb") as handle:
        for line in handle:
            payload = line.rstrip(b"\n").split(b" ", 1)[1]
            if payload.startswith(b'{"lastUpdateId"'):
                return payload
    raise AssertionError("no snapshot line")


class ReplayServer(LoopbackWebsocketServer):
    """A websocket server sending ``messages`` in order across connections, with scripted faults.

    ``drop_after``: abort the TCP connection after sending these indexes; ``stall_at``: stop sending
    before this index (once) and wait for the client to give up; ``garbage_before``: send this frame
    before the message at that index. ``interval_s`` paces messages (0: as fast as possible);
    ``pause_before``: sleep this many real seconds before sending the message at that index.
    """

    def __init__(
        self,
        messages: list[bytes],
        *,
        drop_after: set[int] | None = None,
        stall_at: set[int] | None = None,
        garbage_before: dict[int, bytes] | None = None,
        interval_s: float = 0.0,
        loop_forever: bool = False,
        pause_before: dict[int, float] | None = None,
    ) -> None:
        self.messages = messages
        self.drop_after = set(drop_after or ())
        self.stall_at = set(stall_at or ())
        self.garbage_before = dict(garbage_before or {})
        self.interval_s = interval_s
        self.pause_before = dict(pause_before or {})
        self.loop_forever = loop_forever
        self.cursor = 0
        self.sent: list[tuple[float, bytes]] = []  # (time.time(), payload) once the frame is flushed
        self.paths: list[str] = []
        self.connections = 0
        super().__init__()

    async def _handler(self, ws: ServerConnection) -> None:
        self.connections += 1
        self.paths.append(ws.request.path if ws.request else "")
        try:
            while self.cursor < len(self.messages) or self.loop_forever:
                index = self.cursor
                if index in self.pause_before:
                    await asyncio.sleep(self.pause_before.pop(index))
                if index in self.stall_at:
                    self.stall_at.discard(index)
                    await ws.wait_closed()
                    return
                if index in self.garbage_before:
                    await ws.send(self.garbage_before.pop(index), text=True)
                payload = self.messages[index % len(self.messages)]
                await ws.send(payload, text=True)
                self.sent.append((time.time(), payload))
                self.cursor += 1
                if index in self.drop_after:
                    self.drop_after.discard(index)
                    await asyncio.sleep(0.1)  # let the kernel deliver what was sent, then cut
                    ws.transport.abort()
                    return
                if self.interval_s:
                    await asyncio.sleep(self.interval_s)
                elif index % 200 == 0:
                    await asyncio.sleep(0)
            await ws.wait_closed()
        except websockets.ConnectionClosed:
            return


class RestServer:
    """Binance-shaped REST answers; the first ``fail_429`` requests get 429 with Retry-After."""

    def __init__(self, snapshot: bytes, *, fail_429: int = 0, retry_after: str = "1") -> None:
        self.snapshot = snapshot
        self.fail_429 = fail_429
        self.retry_after = retry_after
        self.requests: list[tuple[float, str, int]] = []
        self.lock = threading.Lock()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                with owner.lock:
                    limited = owner.fail_429 > 0
                    if limited:
                        owner.fail_429 -= 1
                body, status = owner.body(path), 200
                if limited:
                    body, status = b'{"code":-1003,"msg":"Too many requests"}', 429
                elif body is None:
                    body, status = b'{"code":-1121,"msg":"Invalid symbol."}', 400
                with owner.lock:
                    owner.requests.append((time.monotonic(), self.path, status))
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                if limited:
                    self.send_header("Retry-After", owner.retry_after)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def body(self, path: str) -> bytes | None:
        if path == "/fapi/v1/depth":
            return self.snapshot
        if path == "/fapi/v1/openInterest":
            return OI_BODY
        if path.startswith("/futures/data/"):
            return RATIO_BODY
        return None

    def count(self, path: str, status: int | None = None) -> int:
        with self.lock:
            return sum(1 for _, p, s in self.requests if p.startswith(path) and status in (None, s))

    def __enter__(self) -> RestServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class FastClock:
    """Wall time that runs ``speed`` times faster, from ``start_ns``: minutes pass in seconds."""

    def __init__(self, start_ns: int, speed: float) -> None:
        self.start_ns = start_ns
        self.speed = speed
        self.m0 = time.monotonic_ns()

    def __call__(self) -> int:
        return self.start_ns + int((time.monotonic_ns() - self.m0) * self.speed)


def _config(tmp_path: Path, **overrides: Any) -> CollectorConfig:
    values: dict[str, Any] = {
        "symbols": ("BTC",),
        "data_url": str(tmp_path / "data"),
        "spool_dir": str(tmp_path / "spool"),
        "collector_id": "test",
        "stall_timeout_s": 0.6,
        "open_timeout_s": 2.0,
        "close_timeout_s": 0.5,
        "backoff_base_s": 0.05,
        "backoff_cap_s": 0.2,
        "healthy_after_s": 30.0,
        "finalize_grace_s": 1.0,  # clock seconds: 1/30 s of real time at speed 30
        "finalize_interval_s": 0.05,
        "status_interval_s": 0.1,
        "snapshot_min_interval_s": 0.0,
        "rest_timeout_s": 2.0,
    }
    values.update(overrides)
    return CollectorConfig(**values)


def _env(monkeypatch: pytest.MonkeyPatch, ws: ReplayServer, rest: RestServer) -> None:
    monkeypatch.setenv("MOONSTREAM_BINANCE_WS_URL", f"ws://127.0.0.1:{ws.port}")
    monkeypatch.setenv("MOONSTREAM_BINANCE_REST_URL", f"http://127.0.0.1:{rest.port}")


def _run_collector(
    config: CollectorConfig, clock: Callable[[], int], until: Callable[[Collector], bool], timeout: float = 30
) -> Collector:
    """Run the collector in this thread until ``until(collector)`` holds, then stop it cleanly."""
    store = LocalStore(Path(config.data_url))
    collector = Collector(config, store=store, clock=clock)

    async def main() -> None:
        task = asyncio.create_task(collector.run())
        deadline = time.monotonic() + timeout
        while not until(collector):
            assert not task.done(), "collector stopped on its own"
            assert time.monotonic() < deadline, f"timed out; status {collector.status_document()}"
            await asyncio.sleep(0.02)
        collector.stop()
        collector.stop()  # idempotent
        await asyncio.wait_for(task, 20)

    asyncio.run(main())
    return collector


def _records(root: Path, symbol: str = "BTC") -> tuple[list[RawRecord], ReadReport]:
    store = LocalStore(root)
    minutes = list_raw_minutes(store, symbol)
    report = ReadReport()
    records: list[RawRecord] = []
    if minutes:
        for _, recs in iter_minutes(store, symbol, minutes[0], minutes[-1], report=report):
            records.extend(recs)
    return records, report


def _ws_payloads(records: list[RawRecord]) -> list[bytes]:
    return [r.payload for r in records if r.channel.startswith("ws:") and r.channel != "ws:unrouted"]


def _minute_end_passed(clock: FastClock, last_recv_ns: int | None, grace_s: float) -> bool:
    if last_recv_ns is None:
        return False
    due = (last_recv_ns // NS_PER_MINUTE + 1) * NS_PER_MINUTE + int((grace_s + 1) * NS_PER_SECOND)
    return clock() > due


def test_replays_real_messages_byte_identical(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    messages = _recorded(5000)
    snapshot = _recorded_snapshot()
    # Start 10 clock-seconds (1/3 s real) before a minute ends and pause half-way for 15 clock-seconds,
    # so the replay crosses the minute boundary however fast the collector is.
    clock = FastClock((1_721_347_200 // 60 * 60 + 50) * NS_PER_SECOND, speed=30)
    with ReplayServer(messages, interval_s=0.0, pause_before={2500: 0.5}) as ws, RestServer(snapshot) as rest:
        _env(monkeypatch, ws, rest)
        config = _config(tmp_path, stall_timeout_s=30.0)

        def done(c: Collector) -> bool:
            s = c.stats["binance"]
            received = sum(m for ch, (m, _) in s.channels.items() if ch.startswith("ws:"))
            return (
                received == len(messages)
                and rest.count("/fapi/v1/depth") >= 1
                and rest.count("/futures/data/globalLongShortAccountRatio") >= 1
                and _minute_end_passed(clock, s.last_message_ns, config.finalize_grace_s)
                and not c._queue
            )

        collector = _run_collector(config, clock, done)

    assert ws.paths == [EXPECTED_PATH]
    records, report = _records(tmp_path / "data")
    assert report.files_corrupt == [] and report.lines_malformed == 0
    assert len(list_raw_minutes(LocalStore(tmp_path / "data"), "BTC")) >= 2
    assert _ws_payloads(records) == messages  # every message, in order, byte-identical
    channels = {r.channel for r in records}
    assert {"ws:depth", "ws:trade", "ws:bookTicker", "conn:open", "rest:depth", "rest:oi"} <= channels
    rest_depth = [r.payload for r in records if r.channel == "rest:depth"]
    assert rest_depth and all(p == snapshot for p in rest_depth)
    assert all(r.payload == OI_BODY for r in records if r.channel == "rest:oi")
    ratios = [r for r in records if r.channel.startswith("rest:ratio:")]
    assert {r.channel for r in ratios} == {
        "rest:ratio:topLongShortAccountRatio",
        "rest:ratio:topLongShortPositionRatio",
        "rest:ratio:globalLongShortAccountRatio",
    }
    opened = [json.loads(r.payload) for r in records if r.channel == "conn:open"]
    assert opened[0] == {
        "attempt": 1,
        "symbols": ["BTC"],
        "url": f"ws://127.0.0.1:{ws.port}{EXPECTED_PATH}",
    }
    # receive times never go backwards, and every line lies in its file's minute
    stamps = [r.recv_ns for r in records]
    assert stamps == sorted(stamps)

    status = json.loads(LocalStore(tmp_path / "data").read(status_key("test")).data)
    binance_status = status["exchanges"]["binance"]
    assert status["running"] is False and binance_status["connected"] is False
    assert binance_status["reconnects"] == 0 and binance_status["gaps"] == 0
    assert binance_status["channels"]["ws:depth"]["messages"] == sum(b"@depth" in m[:40] for m in messages)
    assert binance_status["channels"]["ws:bookTicker"]["bytes"] == sum(
        len(m) for m in messages if b"@bookTicker" in m[:40]
    )
    assert status["queue"]["dropped"] == 0
    assert status["writer"]["lines"] == collector.writer.counters.lines
    assert binance_status["connections"][0]["last_close_reason"] == "shutdown"


def test_survives_drop_stall_garbage_and_429(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    messages = _recorded(3000)
    clock = FastClock((1_721_347_200 // 60 * 60 + 50) * NS_PER_SECOND, speed=30)
    garbage = {100: b"this is not json", 2500: b'{"stream":"xrpusdt@aggTrade","data":{}}'}
    with (
        ReplayServer(messages, drop_after={700}, stall_at={1500}, garbage_before=garbage) as ws,
        RestServer(_recorded_snapshot(), fail_429=3, retry_after="1") as rest,
    ):
        _env(monkeypatch, ws, rest)
        config = _config(tmp_path)

        def done(c: Collector) -> bool:
            s = c.stats["binance"]
            received = sum(m for ch, (m, _) in s.channels.items() if ch.startswith("ws:"))
            return (
                received == len(messages) + len(garbage)
                and rest.count("/fapi/v1/depth", 200) >= 1
                and _minute_end_passed(clock, s.last_message_ns, config.finalize_grace_s)
                and not c._queue
            )

        _run_collector(config, clock, done)

    # first, after the drop, after the stall (the idle server at the end may stall it again)
    assert ws.connections >= 3
    records, report = _records(tmp_path / "data")
    assert report.files_corrupt == []
    assert _ws_payloads(records) == messages  # nothing lost across the faults
    unrouted = [r.payload for r in records if r.channel == "ws:unrouted"]
    assert unrouted == [garbage[100], garbage[2500]]  # kept (lossless), tagged, in order
    closes = [json.loads(r.payload) for r in records if r.channel == "conn:close"]
    reasons = [c["reason"] for c in closes]
    assert reasons[:2] == ["closed:1006", "stall"]
    assert set(reasons[2:]) <= {"stall", "shutdown"}  # idle at the end; the last minute may be partial
    assert [c["attempt"] for c in closes] == list(range(1, len(closes) + 1))
    opens = [json.loads(r.payload)["attempt"] for r in records if r.channel == "conn:open"]
    assert opens[: len(closes)] == list(range(1, len(closes) + 1))
    # the 429s paused REST for the Retry-After second, then the snapshot came through
    limited = [t for t, p, s in rest.requests if s == 429]
    after = [t for t, p, s in rest.requests if s == 200]
    assert len(limited) == 3 and after and min(after) - limited[0] >= 0.9
    assert [r.payload for r in records if r.channel == "rest:depth"]

    status = json.loads(LocalStore(tmp_path / "data").read(status_key("test")).data)
    b = status["exchanges"]["binance"]
    assert b["reconnects"] >= 2
    assert b["connections"][0]["last_close_reason"] in ("stall", "shutdown")
    assert b["unrouted_messages"] == 2
    assert b["rest"]["rate_limited"] == 3 and b["rest"]["errors"] >= 3
    assert b["rest"]["last_error"].endswith("HTTP 429")
    assert b["gaps"] == 0  # the depth chain continues across reconnects in this replay


def test_sequence_gap_is_recorded_and_triggers_a_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    messages = _recorded(2000)
    depth_indexes = [i for i, m in enumerate(messages) if b"@depth" in m[:40]]
    removed = depth_indexes[50]
    replayed = messages[:removed] + messages[removed + 1 :]
    clock = FastClock((1_721_347_200 // 60 * 60 + 50) * NS_PER_SECOND, speed=30)
    with ReplayServer(replayed) as ws, RestServer(_recorded_snapshot()) as rest:
        _env(monkeypatch, ws, rest)
        config = _config(tmp_path, stall_timeout_s=30.0)

        def done(c: Collector) -> bool:
            s = c.stats["binance"]
            received = sum(m for ch, (m, _) in s.channels.items() if ch.startswith("ws:"))
            return (
                received == len(replayed)
                and rest.count("/fapi/v1/depth", 200) >= 2
                and _minute_end_passed(clock, s.last_message_ns, config.finalize_grace_s)
                and not c._queue
            )

        _run_collector(config, clock, done)

    records, _ = _records(tmp_path / "data")
    assert _ws_payloads(records) == replayed
    gap_positions = [i for i, r in enumerate(records) if r.channel == "conn:gap"]
    assert len(gap_positions) == 1
    gap = json.loads(records[gap_positions[0]].payload)
    after = json.loads(records[gap_positions[0] + 1].payload)["data"]
    missing = json.loads(messages[removed])["data"]
    assert gap["reason"] == "sequence"
    assert gap["pu"] == after["pu"] == missing["u"] and gap["u"] == after["u"]
    assert gap["expected_pu"] == missing["pu"]
    # a snapshot at connect and one after the gap
    assert len([r for r in records if r.channel == "rest:depth"]) >= 2
    status = json.loads(LocalStore(tmp_path / "data").read(status_key("test")).data)
    assert status["exchanges"]["binance"]["gaps"] == 1


# ---------------------------------------------------------------------------------------------
# SIGKILL mid-minute, restart


def _start_collector(tmp_path: Path, ws: ReplayServer, rest: RestServer) -> subprocess.Popen[bytes]:
    env = dict(
        os.environ,
        PYTHONPATH=str(REPO_ROOT),
        MOONSTREAM_BINANCE_WS_URL=f"ws://127.0.0.1:{ws.port}",
        MOONSTREAM_BINANCE_REST_URL=f"http://127.0.0.1:{rest.port}",
    )
    args = [
        sys.executable,
        "-m",
        "moonstream.collector.cli",
        "collect",
        "--data",
        str(tmp_path / "data"),
        "--spool",
        str(tmp_path / "spool"),
        "--id",
        "kill-test",
        "--symbols",
        "BTC",
    ]
    log = (tmp_path / "collector.log").open("ab")
    return subprocess.Popen(args, env=env, cwd=REPO_ROOT, stdout=log, stderr=log)


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_sigkill_mid_minute_then_restart_loses_at_most_a_second(tmp_path: Path) -> None:
    messages = _recorded(20_000)
    with (
        ReplayServer(messages, interval_s=0.001) as ws,
        RestServer(_recorded_snapshot()) as rest,
    ):
        first = _start_collector(tmp_path, ws, rest)
        try:
            _wait(lambda: ws.connections >= 1 and len(ws.sent) >= 2500, 30, "the first connection")
            kill_at = time.time()
            first.send_signal(signal.SIGKILL)
            first.wait(10)
        finally:
            if first.poll() is None:
                first.kill()
        partials = list((tmp_path / "spool").rglob(f"*{PARTIAL_SUFFIX}"))
        assert partials, "a partial minute file is left behind by the kill"
        sent_before_kill = len(ws.sent)

        second = _start_collector(tmp_path, ws, rest)
        try:
            _wait(lambda: ws.connections >= 2 and len(ws.sent) >= sent_before_kill + 1000, 30, "restart")
            term_at = time.time()
            second.send_signal(signal.SIGTERM)
            assert second.wait(20) == 0
        finally:
            if second.poll() is None:
                second.kill()
        sent = list(ws.sent)

    store = LocalStore(tmp_path / "data")
    # everything finalized so far is readable; then finish the current minute the way a later start would
    _, report = _records(tmp_path / "data")
    assert report.files_corrupt == []
    MinuteFileWriter(tmp_path / "spool", store, "kill-test").recover(include_current=True)
    records, report = _records(tmp_path / "data")
    assert report.files_corrupt == [] and report.lines_malformed == 0
    got = set(_ws_payloads(records))
    assert not list((tmp_path / "spool").rglob(f"*{PARTIAL_SUFFIX}"))
    before_kill = [(t, p) for t, p in sent if t < kill_at]
    missing_before_kill = [t for t, p in before_kill if p not in got]
    assert all(t >= kill_at - 1.0 for t in missing_before_kill), "lost more than the last second"
    assert len(before_kill) - len(missing_before_kill) >= 2000  # the killed run's lines were recovered
    print(f"killed run: {len(before_kill)} sent, {len(missing_before_kill)} missing")
    # after the restart nothing is lost until the clean shutdown began
    assert all(p in got for t, p in sent if kill_at + 0.5 < t < term_at - 0.2 and t > 0)
    assert len(got) >= len([1 for t, _ in sent if t < term_at - 0.2]) - 1000
    closes = [json.loads(r.payload)["reason"] for r in records if r.channel == "conn:close"]
    assert closes == ["shutdown"]  # the killed run never wrote one; the second run did
    assert len([r for r in records if r.channel == "conn:open"]) == 2
    status = json.loads(store.read(status_key("kill-test")).data)
    assert status["running"] is False and status["exchanges"]["binance"]["messages"] > 0
