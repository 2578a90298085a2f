"""REST polls of one exchange: periodic endpoints, order-book snapshots on demand, rate-limit handling.

Requests run in worker threads (``urllib``, no proxy from the environment: base URLs are configured
explicitly), so a slow endpoint never blocks the websocket receive loop. Each response body is
recorded exactly as received under the poll's channel tag, with the receive time of the response.

A rate-limit answer (429, or 418 after ignoring 429s; Bybit's 403) blocks *every* poll of the exchange
until the ``Retry-After`` time (seconds), or, when the header is missing, for a backoff delay but at
least the exchange's documented ban (:func:`rate_limit_pause_s`).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import logging
import random
import time
import urllib.error
import urllib.request
from collections.abc import Callable

from moonstream.collector.connection import BackoffPolicy, ExchangeStats, Sink, reconnect_delay
from moonstream.collector.exchanges import ExchangeSpec, RestPoll

log = logging.getLogger(__name__)

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_HEADERS = {"User-Agent": "moonstream-collector", "Accept": "application/json"}
MAX_RETRY_AFTER_S = 3600.0


def http_get(url: str, timeout: float) -> tuple[int, dict[str, str], bytes]:
    """``(status, headers, body)`` of a GET; HTTP error statuses are returned, network errors raise."""
    request = urllib.request.Request(url, headers=_HEADERS)
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return response.status, dict(response.headers.items()), response.read()
    except urllib.error.HTTPError as exc:
        try:
            body = exc.read()
        except OSError:
            body = b""
        return exc.code, dict(exc.headers.items()) if exc.headers else {}, body


def retry_after_s(headers: dict[str, str]) -> float | None:
    """The ``Retry-After`` header in seconds (delta-seconds form only), capped; None if absent/invalid."""
    for name, value in headers.items():
        if name.lower() == "retry-after":
            try:
                seconds = float(value.strip())
            except ValueError:
                return None
            return min(max(seconds, 0.0), MAX_RETRY_AFTER_S) if seconds == seconds else None
    return None


def rate_limit_pause_s(
    status: int,
    headers: dict[str, str],
    failures: int,
    spec: ExchangeSpec,
    policy: BackoffPolicy,
    rand: float,
) -> float:
    """How long every poll of the exchange pauses after a rate-limit answer (pure).

    ``Retry-After`` when given; otherwise the reconnect backoff for the ``failures``-th limit in a
    row, but never less than the exchange's documented ban for that status."""
    delay = retry_after_s(headers)
    if delay is not None:
        return delay
    backoff = reconnect_delay(failures, policy=policy, rand=rand)
    return max(backoff, spec.rate_limit_min_pause_s.get(status, 0.0))


class RestPoller:
    """Runs the REST polls of one exchange for its symbols until stopped."""

    def __init__(
        self,
        spec: ExchangeSpec,
        symbols: tuple[str, ...],
        sink: Sink,
        stats: ExchangeStats,
        *,
        policy: BackoffPolicy,
        timeout_s: float = 10.0,
        snapshot_min_interval_s: float = 5.0,
        clock: Callable[[], int] = time.time_ns,
        fetch: Callable[[str, float], tuple[int, dict[str, str], bytes]] = http_get,
    ) -> None:
        self.spec = spec
        self.base_url = spec.rest_base_url()
        self.symbols = symbols
        self.sink = sink
        self.stats = stats
        self.policy = policy
        self.timeout_s = timeout_s
        self.snapshot_min_interval_s = snapshot_min_interval_s
        self.clock = clock
        self.fetch = fetch
        self._wanted: dict[str, asyncio.Event] = {s: asyncio.Event() for s in symbols}
        self._blocked_until = 0.0  # monotonic
        self._limit_failures = 0

    def request_snapshot(self, symbol: str) -> None:
        """Ask for a fresh order-book snapshot of ``symbol`` (after a connect or a sequence gap)."""
        event = self._wanted.get(symbol)
        if event is not None:
            event.set()

    def request_snapshots(self, symbols: tuple[str, ...]) -> None:
        """:meth:`request_snapshot` for each symbol (a connection just opened)."""
        for symbol in symbols:
            self.request_snapshot(symbol)

    async def run(self, stop: asyncio.Event) -> None:
        """One task per (symbol, poll) until ``stop`` is set."""
        tasks = [
            asyncio.create_task(self._loop(symbol, poll, stop), name=f"rest-{self.spec.name}-{symbol}")
            for symbol in self.symbols
            for poll in self.spec.rest_polls(symbol)
        ]
        try:
            await stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _loop(self, symbol: str, poll: RestPoll, stop: asyncio.Event) -> None:
        if poll.snapshot:
            await self._snapshot_loop(symbol, poll, stop)
            return
        # spread the first requests over a second, then poll on a fixed cadence
        await asyncio.sleep(random.random())
        next_at = time.monotonic()
        while not stop.is_set():
            await self._fetch_once(symbol, poll)
            next_at += poll.interval_s
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async def _snapshot_loop(self, symbol: str, poll: RestPoll, stop: asyncio.Event) -> None:
        wanted = self._wanted[symbol]
        failures = 0
        last_at = -float("inf")
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):  # a timeout is the hourly snapshot
                await asyncio.wait_for(wanted.wait(), timeout=poll.interval_s)
            wait = last_at + self.snapshot_min_interval_s - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            wanted.clear()
            last_at = time.monotonic()
            if await self._fetch_once(symbol, poll):
                failures = 0
            else:  # a snapshot is needed to rebuild the book: retry with backoff
                failures += 1
                await asyncio.sleep(reconnect_delay(failures, policy=self.policy, rand=random.random()))
                wanted.set()

    async def _fetch_once(self, symbol: str, poll: RestPoll) -> bool:
        """One request; True if a response was recorded."""
        blocked = self._blocked_until - time.monotonic()
        if blocked > 0:
            await asyncio.sleep(blocked)
        url = poll.url(self.base_url)
        stats = self.stats
        stats.rest_requests += 1
        try:
            status, headers, body = await asyncio.to_thread(self.fetch, url, self.timeout_s)
        except (OSError, http.client.HTTPException, ValueError) as exc:  # URLError, timeouts, resets
            stats.rest_errors += 1
            stats.rest_last_error = f"{poll.channel}: {type(exc).__name__}"
            log.warning("%s %s %s failed: %s", self.spec.name, symbol, poll.path, exc)
            return False
        now = self.clock()
        if status == 200:
            counts = stats.channels.setdefault(poll.channel, [0, 0])
            counts[0] += 1
            counts[1] += len(body)
            stats.last_message_ns = now
            self.sink.put(symbol, self.spec.name, now, poll.channel, body)
            limited = self.spec.rate_limited_body
            if limited is not None and limited(body):  # recorded: the normalizer rejects it
                stats.rest_errors += 1
                stats.rest_last_error = f"{poll.channel}: rate limit in an HTTP 200 body"
                self._rate_limited(poll, status, {}, now)
            else:
                self._limit_failures = 0
            return True
        stats.rest_errors += 1
        stats.rest_last_error = f"{poll.channel}: HTTP {status}"
        if status in self.spec.rate_limit_statuses:
            self._rate_limited(poll, status, headers, now)
        else:
            log.warning("%s %s %s: HTTP %d %r", self.spec.name, symbol, poll.path, status, body[:120])
        return False

    def _rate_limited(self, poll: RestPoll, status: int, headers: dict[str, str], now: int) -> None:
        """Count a rate-limit answer and pause every poll of the exchange (:func:`rate_limit_pause_s`)."""
        self.stats.rest_rate_limited += 1
        self._limit_failures += 1
        delay = rate_limit_pause_s(
            status, headers, self._limit_failures, self.spec, self.policy, random.random()
        )
        self._blocked_until = max(self._blocked_until, time.monotonic() + delay)
        self.stats.rest_blocked_until_ns = now + int(delay * 1e9)
        log.warning(
            "%s rate limit (HTTP %d) on %s: pausing every REST poll for %.1fs",
            self.spec.name,
            status,
            poll.path,
            delay,
        )
