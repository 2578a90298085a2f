"""One exchange websocket connection: connect, receive, record, detect stalls, reconnect with backoff.

The reconnect decision is pure (:func:`reconnect_delay`, :func:`failures_after`), in the style of
:func:`moonstream.store.retry.retry_delay`: the caller supplies the random draw.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import websockets
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from moonstream.collector.exchanges import CONNECTION, VENUE_WIDE, ExchangeSpec, WsPlan
from moonstream.collector.rawfile import encode_line
from moonstream.timeutil import NS_PER_MINUTE

log = logging.getLogger(__name__)

_MAX_EXPONENT = 62

# Exchanges whose router's answer for one of our symbols depends only on the stream name at the start
# of the message (Binance's ``{"stream":"btcusdt@depth@100ms",...``): the receive loop then routes a
# message by looking up its first _PREFIX_KEY_LEN bytes, when they hold that whole name.
_STREAM_NAME_PREFIX = {"binance": b'{"stream":"'}
_PREFIX_KEY_LEN = 40
_PREFIX_KEYS_MAX = 256


@dataclass(frozen=True)
class BackoffPolicy:
    """Reconnect backoff: ``min(cap, base * 2**(failures-1))`` with equal jitter; a connection that
    stayed up ``healthy_after_s`` resets the failure count."""

    base: float = 1.0
    cap: float = 30.0
    healthy_after_s: float = 60.0

    def __post_init__(self) -> None:
        if not self.base > 0 or not self.cap >= self.base or not self.healthy_after_s > 0:
            raise ValueError(f"invalid backoff policy {self!r}")


def failures_after(failures: int, connected_for_s: float | None, policy: BackoffPolicy) -> int:
    """The consecutive-failure count after a connection ended.

    ``connected_for_s`` is how long it was open (None if it never opened). A healthy connection
    (open at least ``policy.healthy_after_s``) resets the count, so its end counts as the first failure.
    """
    if connected_for_s is not None and connected_for_s >= policy.healthy_after_s:
        return 1
    return failures + 1


def reconnect_delay(failures: int, *, policy: BackoffPolicy, rand: float) -> float:
    """Seconds to wait before reconnecting after ``failures`` consecutive failures (1-based).

    Equal jitter: uniform in ``[c/2, c)`` with ``c = min(cap, base * 2**(failures-1))``, so with the
    defaults 0.5-1 s after the first failure, growing to 15-30 s. ``rand`` is a draw from ``[0, 1)``.
    """
    if failures < 1:
        raise ValueError(f"failures is 1-based, got {failures}")
    if not 0.0 <= rand < 1.0:
        raise ValueError(f"rand must be in [0, 1), got {rand}")
    ceiling = min(policy.cap, policy.base * 2.0 ** min(failures - 1, _MAX_EXPONENT))
    return ceiling / 2 + rand * ceiling / 2


class Sink(Protocol):
    """Where received lines go (the collector's bounded queue)."""

    def put(self, symbol: str, exchange: str, recv_ns: int, channel: str, payload: bytes) -> None: ...

    def put_line(self, file: tuple[str, int, str], recv_ns: int, line: bytes) -> None:
        """Like put, for a line already encoded: ``file`` is ``(symbol, minute, exchange)``, ``line``
        is ``b"%d %s %s\\n" % (recv_ns, channel_tag, payload)`` with ``recv_ns`` in that minute."""
        ...

    def file_lines(self, file: tuple[str, int, str]) -> tuple[list[bytes], int]:
        """The buffer of ``file``'s lines and a batch size: a receiver may append its encoded lines
        there itself while the buffer holds fewer, and calls put_line otherwise. The buffer stays
        the same list object."""
        ...

    def put_event(self, symbol: str, exchange: str, recv_ns: int, channel: str, payload: bytes) -> None:
        """Like put, but never dropped (connection events)."""
        ...


@dataclass
class ExchangeStats:
    """Counters of one exchange, read by the status document."""

    channels: dict[str, list[int]] = field(default_factory=dict)  # channel -> [messages, bytes]
    unrouted: int = 0
    skipped: int = 0  # venue-wide messages about none of our symbols: not written
    gaps: int = 0
    reconnects: int = 0
    last_message_ns: int | None = None
    rest_requests: int = 0
    rest_errors: int = 0
    rest_rate_limited: int = 0
    rest_last_error: str | None = None
    rest_blocked_until_ns: int | None = None


@dataclass
class ConnStats:
    """State of one connection, read by the status document."""

    url: str
    symbols: tuple[str, ...]
    connected: bool = False
    connected_since_ns: int | None = None
    attempts: int = 0
    reconnects: int = 0
    failures: int = 0
    messages: int = 0
    last_message_ns: int | None = None
    last_close_reason: str | None = None


def _event_payload(**fields: Any) -> bytes:
    return json.dumps(fields, separators=(",", ":"), sort_keys=True).encode()


class WsConnection:
    """Runs one :class:`WsPlan` until stopped: every message is recorded with its receive time.

    ``on_open`` is called after each successful connect (the REST side fetches snapshots);
    ``on_gap(symbol)`` after a sequence gap.
    """

    def __init__(
        self,
        spec: ExchangeSpec,
        plan: WsPlan,
        sink: Sink,
        stats: ExchangeStats,
        *,
        policy: BackoffPolicy,
        stall_timeout_s: float,
        open_timeout_s: float = 10.0,
        close_timeout_s: float = 2.0,
        max_connection_age_s: float | None = None,
        max_message_bytes: int = 8 * 1024 * 1024,
        on_open: Callable[[tuple[str, ...]], None] = lambda symbols: None,
        on_gap: Callable[[str], None] = lambda symbol: None,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.spec = spec
        self.plan = plan
        self.sink = sink
        self.stats = stats
        self.conn = ConnStats(plan.url, plan.symbols)
        self.policy = policy
        self.stall_timeout_s = stall_timeout_s
        self.open_timeout_s = open_timeout_s
        self.close_timeout_s = close_timeout_s
        self.max_age_s = max_connection_age_s or spec.max_connection_age_s
        self.max_message_bytes = max_message_bytes
        self.on_open = on_open
        self.on_gap = on_gap
        self.clock = clock
        self._symbols = frozenset(plan.symbols)
        self._sending: set[asyncio.Task[None]] = set()
        self._close_reason: str | None = None
        self._opened_at: float | None = None

    def _event(self, channel: str, **fields: Any) -> None:
        payload = _event_payload(url=self.plan.url, attempt=self.conn.attempts, **fields)
        now = self.clock()
        for symbol in self.plan.symbols:
            self.sink.put_event(symbol, self.spec.name, now, channel, payload)

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, receive and reconnect until ``stop`` is set (or the task is cancelled)."""
        while not stop.is_set():
            self.conn.attempts += 1
            if self.conn.attempts > 1:
                self.conn.reconnects += 1
                self.stats.reconnects += 1
            opened_at: float | None = None
            reason = "error"
            try:
                opened_at = await self._session()
                reason = self._close_reason or "closed"
            except asyncio.CancelledError:
                self._closed(self._opened_at, "shutdown")
                raise
            except ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd is not None else 1006
                reason = self._close_reason or f"closed:{code}"
                opened_at = self._opened_at
            except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as exc:
                reason = self._close_reason or f"error:{type(exc).__name__}"
                opened_at = self._opened_at
            except Exception as exc:  # a bug: log it with its traceback and keep the feed alive
                log.exception("%s connection %s failed unexpectedly", self.spec.name, self.plan.url)
                reason = f"error:{type(exc).__name__}"
                opened_at = self._opened_at
            connected_for = self._closed(opened_at, reason)
            if stop.is_set():
                break
            self.conn.failures = failures_after(self.conn.failures, connected_for, self.policy)
            delay = reconnect_delay(self.conn.failures, policy=self.policy, rand=random.random())
            log.warning(
                "%s connection closed (%s) after %s; reconnecting in %.2fs (failure %d)",
                self.spec.name,
                reason,
                "never opening" if connected_for is None else f"{connected_for:.1f}s",
                delay,
                self.conn.failures,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)

    def _closed(self, opened_at: float | None, reason: str) -> float | None:
        self.conn.last_close_reason = reason
        if opened_at is None:
            return None
        self.conn.connected = False
        self._event("conn:close", reason=reason, messages=self.conn.messages)
        return time.monotonic() - opened_at

    async def _session(self) -> float:
        """One connection's life; returns when it ends cleanly, raises otherwise."""
        self._close_reason = None
        self._opened_at = None
        async with websockets.connect(
            self.plan.url,
            open_timeout=self.open_timeout_s,
            close_timeout=self.close_timeout_s,
            ping_interval=self.spec.ping_interval_s,
            ping_timeout=self.spec.ping_timeout_s,
            max_size=self.max_message_bytes,
            proxy=None,
        ) as ws:
            self._opened_at = opened_at = time.monotonic()
            self.conn.connected = True
            self.conn.connected_since_ns = self.clock()
            self._event("conn:open", symbols=list(self.plan.symbols))
            log.info("%s connected: %s (attempt %d)", self.spec.name, self.plan.url, self.conn.attempts)
            for message in self.plan.subscribe:
                await ws.send(message)
            self.on_open(self.plan.symbols)
            watchdog = asyncio.create_task(self._watchdog(ws, opened_at))
            try:
                await self._receive(ws)
            finally:
                watchdog.cancel()
        return opened_at

    async def _receive(self, ws: Any) -> None:
        sequencer = self.spec.new_sequencer() if self.spec.new_sequencer is not None else None
        # channels the sequencer looks at (None: every one)
        watched = getattr(sequencer, "channels", None) if sequencer is not None else frozenset()
        recv = ws.recv
        route = self.spec.route
        exchange = self.spec.name
        channels = self.stats.channels
        symbols = self._symbols
        put = self.sink.put
        put_line = self.sink.put_line
        file_lines = self.sink.file_lines
        clock = self.clock
        conn = self.conn
        stats = self.stats
        # the hot path, for messages about one of our symbols: [file, its minute's start and end,
        # " channel tag ", counts, channel, whether the sequencer looks at it, the file's line buffer,
        # its batch size], by route target and (_STREAM_NAME_PREFIX) by the message's first bytes
        fast: dict[tuple[str, str], list[Any]] = {}
        by_prefix: dict[bytes, list[Any]] = {}
        name_prefix = _STREAM_NAME_PREFIX.get(exchange)
        key_len = _PREFIX_KEY_LEN
        while True:
            payload = await recv(decode=False)
            now = clock()
            entry = by_prefix.get(payload[:key_len])
            if entry is None:
                target = route(payload)
                entry = fast.get(target)  # type: ignore[arg-type]
                if (  # the prefix holds the whole stream name (its closing quote)
                    entry is not None
                    and name_prefix is not None
                    and payload.startswith(name_prefix)
                    and payload.find(b'"', len(name_prefix), key_len) > 0
                    and len(by_prefix) < _PREFIX_KEYS_MAX
                ):
                    by_prefix[payload[:key_len]] = entry
            if entry is not None:  # the hot path
                file, start, end, tag, counts, channel, check, lines, batch = entry
                counts[0] += 1
                counts[1] += len(payload)
                conn.messages += 1
                conn.last_message_ns = stats.last_message_ns = now
                if check:
                    gap = sequencer.check(file[0], channel, payload)  # type: ignore[union-attr]
                    if gap is not None:
                        self._gap(file[0], now, gap, ws)
                if start <= now < end:
                    if len(lines) < batch:
                        lines.append(b"%d%b%b\n" % (now, tag, payload))
                    else:  # written at once (or dropped and counted)
                        put_line(file, now, b"%d%b%b\n" % (now, tag, payload))
                elif now >= 0:  # a new minute
                    minute = now // NS_PER_MINUTE
                    entry[0] = file = (file[0], minute, exchange)
                    entry[1] = minute * NS_PER_MINUTE
                    entry[2] = entry[1] + NS_PER_MINUTE
                    entry[7], entry[8] = file_lines(file)
                    put_line(file, now, b"%d%b%b\n" % (now, tag, payload))
                else:
                    put(file[0], exchange, now, channel, payload)  # rejected (and counted) there
                continue
            if target is None or target[0] not in symbols:
                targets = self._other_targets(payload, target)
                if not targets:
                    continue
                channel = targets[0][1]
            else:
                targets = [target]
                symbol, channel = target
                check = sequencer is not None and (watched is None or channel in watched)
                if check:
                    gap = sequencer.check(symbol, channel, payload)  # type: ignore[union-attr]
                    if gap is not None:
                        self._gap(symbol, now, gap, ws)
            counts = channels.get(channel)
            if counts is None:
                counts = channels[channel] = [0, 0]
            if targets[0] is target:
                with contextlib.suppress(ValueError):  # an invalid channel tag: never the hot path
                    # " <tag> ": the line is then one formatting of (now, tag, payload), the cheapest
                    tag = b" %b " % encode_line(0, channel, b"").split(b" ")[1]
                    fast[target] = [(target[0], -1, exchange), 0, 0, tag, counts, channel, check, [], 0]
            counts[0] += 1
            counts[1] += len(payload)
            conn.messages += 1
            conn.last_message_ns = stats.last_message_ns = now
            for symbol, channel in targets:
                put(symbol, exchange, now, channel, payload)

    def _other_targets(self, payload: bytes, target: tuple[str, str] | None) -> list[tuple[str, str]]:
        """Where a message that is not about one of our symbols goes (see the exchanges package).

        A connection-level message goes to the first symbol; a venue-wide one to each of our
        symbols it concerns (none: dropped, counted in ``stats.skipped``); anything else is
        ``ws:unrouted`` in the first symbol's file, counted and logged.
        """
        fallback = self.plan.symbols[0]
        if target is not None and target[0] == CONNECTION:
            return [(fallback, target[1])]
        if target is not None and target[0] == VENUE_WIDE and self.spec.wide_symbols is not None:
            ours = [(s, target[1]) for s in self.spec.wide_symbols(payload) if s in self._symbols]
            if not ours:
                self.stats.skipped += 1
                self.conn.messages += 1
                self.conn.last_message_ns = self.stats.last_message_ns = self.clock()
            return ours
        stats = self.stats
        stats.unrouted += 1
        if stats.unrouted <= 10 or stats.unrouted % 1000 == 0:
            log.warning(
                "%s: unrouted message #%d (%d bytes): %r",
                self.spec.name,
                stats.unrouted,
                len(payload),
                payload[:80],
            )
        return [(fallback, "ws:unrouted")]

    def _gap(self, symbol: str, now: int, gap: dict[str, Any], ws: Any) -> None:
        self.stats.gaps += 1
        payload = _event_payload(url=self.plan.url, attempt=self.conn.attempts, **gap)
        self.sink.put_event(symbol, self.spec.name, now, "conn:gap", payload)
        resync = self.spec.resync(symbol, str(gap.get("channel"))) if self.spec.resync else ()
        if resync:
            log.warning("%s %s: sequence gap %s; resubscribing", self.spec.name, symbol, gap)
            task = asyncio.create_task(self._send_all(ws, resync))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)
        else:
            log.warning("%s %s: sequence gap %s; requesting a snapshot", self.spec.name, symbol, gap)
        self.on_gap(symbol)

    async def _send_all(self, ws: Any, messages: tuple[str, ...]) -> None:
        with contextlib.suppress(ConnectionClosed):  # the reconnect brings fresh snapshots anyway
            for message in messages:
                await ws.send(message)

    async def _watchdog(self, ws: Any, opened_at: float) -> None:
        """Close the connection on a stall (no message for ``stall_timeout_s``), an unanswered
        application-level ping, or at the age limit; send the exchange's application-level ping if
        it has one. Liveness is read from the message counter, so receiving costs no clock call."""
        spec = self.spec
        tick = min(1.0, self.stall_timeout_s / 4)
        if spec.app_ping is not None:
            tick = min(tick, spec.app_ping_interval_s / 4)
            if spec.app_ping_timeout_s is not None:
                tick = min(tick, spec.app_ping_timeout_s / 4)
        last_app_ping = opened_at
        pinged_at: float | None = None  # an app ping not yet followed by any message
        seen = self.conn.messages
        last_rx = opened_at
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            if self.conn.messages != seen:
                seen = self.conn.messages
                last_rx = now
                pinged_at = None
            if now - last_rx > self.stall_timeout_s:
                self._close_reason = "stall"
            elif now - opened_at > self.max_age_s:
                self._close_reason = "max_age"
            elif (
                pinged_at is not None
                and spec.app_ping_timeout_s is not None
                and now - pinged_at > spec.app_ping_timeout_s
            ):
                self._close_reason = "pong_timeout"
            elif spec.app_ping is not None and now - last_app_ping >= spec.app_ping_interval_s:
                last_app_ping = now
                if pinged_at is None:
                    pinged_at = now
                await ws.send(spec.app_ping)
                continue
            else:
                continue
            log.warning("%s: closing %s (%s)", spec.name, self.plan.url, self._close_reason)
            await ws.close(code=1000, reason=self._close_reason)
            return
