"""Servers on loopback for the collector's tests: websocket servers on their own thread and event
loop (:class:`LoopbackWebsocketServer`, the base; :class:`ScriptedExchangeServer`, an exchange with
scripted faults) and a threaded HTTP server (:class:`LoopbackHttpServer`, REST answers and errors)."""

from __future__ import annotations

import asyncio
import http.server
import threading
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

import websockets
from websockets.asyncio.server import ServerConnection

from moonstream.collector.config import CollectorConfig


class LoopbackWebsocketServer:
    """Serves ``_handler`` (a subclass's) on 127.0.0.1 at a free ``port`` inside a ``with`` block."""

    def __init__(self) -> None:
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stopping: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._stopping is not None
        self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        async with websockets.serve(self._handler, "127.0.0.1", 0, compression=None) as server:
            self.port = server.sockets[0].getsockname()[1]
            self._ready.set()
            await self._stopping.wait()

    async def _handler(self, ws: ServerConnection) -> None:
        raise NotImplementedError


class ScriptedExchangeServer(LoopbackWebsocketServer):
    """An exchange-like websocket server (Bybit, OKX: the client subscribes, then data flows) with
    scripted faults, for resilience tests.

    On every connection it answers each client message with ``respond(message)`` (subscription
    acks, pongs) and, once ``subscriptions`` messages containing ``subscribe_marker`` arrived, sends
    ``messages`` from a cursor shared across connections (so a reconnect resumes where the last
    connection stopped), ``interval_s`` apart. Faults, keyed by message index, each fire once:

    * ``drop_after``: after sending that message, abort the TCP connection (no close frame; the
      client sees code 1006);
    * ``stall_at``: before sending that message, go silent, no data and no replies (a dead peer),
      until the client closes the connection;
    * ``garbage_before``: send this frame before that message.

    After the last message the server idles: it keeps answering the client (pings) and sends
    nothing else. ``received`` holds every client message, ``replies`` every reply sent, ``sent``
    ``(time.time(), frame)`` of every scripted frame (garbage included), ``paths`` each
    connection's request path.
    """

    def __init__(
        self,
        messages: list[str],
        respond: Callable[[str], list[str]],
        *,
        subscriptions: int = 1,
        subscribe_marker: str = '"op":"subscribe"',
        interval_s: float = 0.0,
        drop_after: set[int] | None = None,
        stall_at: set[int] | None = None,
        garbage_before: dict[int, str] | None = None,
    ) -> None:
        self.messages = messages
        self.respond = respond
        self.subscriptions = subscriptions
        self.subscribe_marker = subscribe_marker
        self.interval_s = interval_s
        self.drop_after = set(drop_after or ())
        self.stall_at = set(stall_at or ())
        self.garbage_before = dict(garbage_before or {})
        self.cursor = 0
        self.connections = 0
        self.received: list[str] = []
        self.replies: list[str] = []
        self.sent: list[tuple[float, str]] = []
        self.paths: list[str] = []
        super().__init__()

    async def _handler(self, ws: ServerConnection) -> None:
        self.connections += 1
        self.paths.append(ws.request.path if ws.request else "")
        subscribed = asyncio.Event()
        silent = False

        async def answer() -> None:
            count = 0
            async for message in ws:
                text = message if isinstance(message, str) else message.decode("utf-8", "replace")
                self.received.append(text)
                if silent:
                    continue
                for reply in self.respond(text):
                    await ws.send(reply)
                    self.replies.append(reply)
                if self.subscribe_marker in text:
                    count += 1
                    if count >= self.subscriptions:
                        subscribed.set()

        answering = asyncio.create_task(answer())
        waiting = asyncio.create_task(subscribed.wait())
        try:
            await asyncio.wait({answering, waiting}, return_when=asyncio.FIRST_COMPLETED)
            if not subscribed.is_set():
                return
            while self.cursor < len(self.messages):
                index = self.cursor
                if index in self.stall_at:
                    self.stall_at.discard(index)
                    silent = True
                    await ws.wait_closed()
                    return
                if index in self.garbage_before:
                    frame = self.garbage_before.pop(index)
                    await ws.send(frame)
                    self.sent.append((time.time(), frame))
                await ws.send(self.messages[index])
                self.sent.append((time.time(), self.messages[index]))
                self.cursor += 1
                if index in self.drop_after:
                    self.drop_after.discard(index)
                    await asyncio.sleep(0.1)  # let the kernel deliver what was sent, then cut
                    ws.transport.abort()
                    return
                if self.interval_s:
                    await asyncio.sleep(self.interval_s)
            await answering  # idle: keep answering until the client leaves
        except websockets.ConnectionClosed:
            return
        finally:
            answering.cancel()
            waiting.cancel()


class LoopbackHttpServer:
    """A threaded HTTP server on 127.0.0.1 at a free ``port``, inside a ``with`` block.

    ``GET path?query`` is answered with ``bodies[path]``: bytes, or a function of the parsed query
    (``{name: [values]}``) returning bytes (None: 404). The first requests get the ``failures``
    in order instead, each ``(status, headers)`` with the body ``failure_body``. ``requests`` holds
    ``(time.monotonic(), path with query, status)`` of every request.
    """

    def __init__(
        self,
        bodies: dict[str, bytes | Callable[[dict[str, list[str]]], bytes | None]],
        *,
        failures: list[tuple[int, dict[str, str]]] | None = None,
        failure_body: bytes = b'{"error":"scripted failure"}',
    ) -> None:
        self.bodies = bodies
        self.failures = list(failures or ())
        self.failure_body = failure_body
        self.requests: list[tuple[float, str, int]] = []
        self.lock = threading.Lock()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, headers, body = owner._answer(self.path)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _answer(self, target: str) -> tuple[int, dict[str, str], bytes]:
        path, _, query = target.partition("?")
        with self.lock:
            failure = self.failures.pop(0) if self.failures else None
        if failure is not None:
            status, headers, body = failure[0], failure[1], self.failure_body
        else:
            source = self.bodies.get(path)
            found = source(urllib.parse.parse_qs(query)) if callable(source) else source
            if found is None:
                status, headers, body = 404, {}, b'{"error":"not found"}'
            else:
                status, headers, body = 200, {}, found
        with self.lock:
            self.requests.append((time.monotonic(), target, status))
        return status, headers, body

    def statuses(self, path: str = "") -> list[int]:
        """The statuses answered so far, in order (for requests whose path starts with ``path``)."""
        with self.lock:
            return [status for _, target, status in self.requests if target.startswith(path)]

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


# --- collector test set-up shared by the Bybit/OKX suites ---------------------------------------


class FastClock:
    """Wall time running ``speed`` times faster from ``start_ns`` (default: 5 clock-seconds before a
    minute of 2024-07-19 ends, so a test crosses a minute boundary within a wall-second)."""

    def __init__(self, start_ns: int = (1_721_347_200 // 60 * 60 + 55) * 1_000_000_000, speed: float = 30.0):
        self.start_ns, self.speed, self.m0 = start_ns, speed, time.monotonic_ns()

    def __call__(self) -> int:
        return self.start_ns + int((time.monotonic_ns() - self.m0) * self.speed)


def collector_config(
    tmp_path: Path, symbols: tuple[str, ...], exchange: str, **overrides: Any
) -> CollectorConfig:
    """A collector config for loopback tests: short timeouts and backoff, fast finalizing and
    status, REST polls off unless ``rest_enabled=True``."""
    values: dict[str, Any] = {
        "symbols": symbols,
        "exchanges": (exchange,),
        "data_url": str(tmp_path / "data"),
        "spool_dir": str(tmp_path / "spool"),
        "collector_id": "test",
        "stall_timeout_s": 30.0,
        "open_timeout_s": 2.0,
        "close_timeout_s": 0.5,
        "backoff_base_s": 0.05,
        "backoff_cap_s": 0.2,
        "finalize_grace_s": 1.0,
        "finalize_interval_s": 0.05,
        "status_interval_s": 0.1,
        "rest_enabled": False,
    }
    values.update(overrides)
    return CollectorConfig(**values)
