"""The live collector: exchange connections and REST polls -> bounded queue -> raw minute files.

Three kinds of worker, so that neither the disk nor the data store can stall a websocket:

* the asyncio event loop: one task per exchange connection (:class:`WsConnection`), one REST poller
  per exchange (:class:`RestPoller`), and the status task. Each received message becomes one item
  ``((symbol, minute, exchange), recv_ns, line)`` on a bounded queue, its raw-file line already
  formatted (by the receiver, while the payload is in cache); when the queue is full the item is
  dropped, counted and logged (connection events are never dropped);
* the writer thread: every 10 ms (sooner for a connection event, at once while a backlog lasts)
  drains the queue into :class:`MinuteFileWriter` (everything queued, up to 4096 lines: one
  ``write()`` per partial file in the spool directory); not waking it per message keeps the two
  threads from handing the GIL back and forth;
* the store thread: every ``finalize_interval_s`` finalizes due minutes into the data store (a
  failing store is retried on the next tick by the writer; capture goes on) and writes the status
  document ``status/collector-{id}.json``.

Shutdown (SIGTERM/SIGINT, or :meth:`Collector.stop`) is one idempotent path: cancel the tasks (each
connection records ``conn:close``), drain the queue, stop the threads, ``MinuteFileWriter.close()``
(finalize due minutes, leave the current minute's partial file for the next start's ``recover()``),
write a final status document. See docs/collector.md.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import datetime as dt
import itertools
import json
import logging
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from moonstream.collector.config import CollectorConfig
from moonstream.collector.connection import BackoffPolicy, ExchangeStats, WsConnection
from moonstream.collector.exchanges import ExchangeSpec, get_exchange
from moonstream.collector.rawfile import EncodedItem, MinuteFileWriter, RawFormatError, encode_line
from moonstream.collector.rest import RestPoller
from moonstream.store import ObjectMeta, Store, open_store
from moonstream.timeutil import NS_PER_MINUTE

log = logging.getLogger(__name__)

STATUS_SCHEMA_VERSION = 1
STATUS_META = ObjectMeta(content_type="application/json", cache_control="no-store")
_WRITER_WAIT_S = 0.01  # the writer writes what was queued meanwhile, so at most this late
_WRITER_MAX_BATCH = 4096
_DROP_LOG_INTERVAL_S = 10.0

Item = EncodedItem  # ((symbol, minute, exchange), recv_ns, line): encoded on the event loop


def status_key(collector_id: str) -> str:
    """``status/collector-{id}.json`` in the data store."""
    return f"status/collector-{collector_id}.json"


def iso_ns(ns: int | None) -> str | None:
    """``2024-07-19T00:00:01.123Z`` (UTC, milliseconds) or None."""
    if ns is None:
        return None
    seconds, rest = divmod(ns, 1_000_000_000)
    moment = dt.datetime.fromtimestamp(seconds, tz=dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{rest // 1_000_000:03d}Z"


class Collector:
    """One collector process: every configured exchange and symbol, one writer, one status document."""

    def __init__(
        self,
        config: CollectorConfig,
        *,
        store: Store | None = None,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.config = config
        self.clock = clock
        self.store = store if store is not None else open_store(config.data_url)
        self.writer = MinuteFileWriter(
            Path(config.spool_dir),
            self.store,
            config.collector_id,
            grace_ns=int(config.finalize_grace_s * 1e9),
        )
        self.policy = BackoffPolicy(config.backoff_base_s, config.backoff_cap_s, config.healthy_after_s)
        self.specs: dict[str, ExchangeSpec] = {name: get_exchange(name) for name in config.exchanges}
        self.stats: dict[str, ExchangeStats] = {name: ExchangeStats() for name in self.specs}
        self.connections: dict[str, list[WsConnection]] = {}
        self.pollers: dict[str, RestPoller] = {}
        self.started_ns = clock()
        # queue between receive and disk
        self._queue: collections.deque[Item] = collections.deque()
        self._capacity = config.queue_size
        self.queue_dropped = 0
        self.queue_high_water = 0
        self.write_errors = 0
        self.encode_errors = 0  # counted on the event loop (write_errors by the writer thread)
        self.status_errors = 0
        self._last_drop_log = 0.0
        self._inflight_ns: int | None = None
        self._wake = threading.Event()
        self._writer_stop = threading.Event()
        self._store_stop = threading.Event()
        self._status_pending: bytes | None = None
        self._stop: asyncio.Event | None = None
        self._stop_requested = False
        self._running = False
        self._shutdown_done = False

    # -- the sink (called on the event loop) ----------------------------------------------------

    def put_line(self, file: tuple[str, int, str], recv_ns: int, line: bytes) -> None:
        """Queue one encoded line (``file`` is ``(symbol, minute, exchange)``, the line is
        ``b"%d %s %s\\n" % (recv_ns, channel_tag, payload)``) for the writer; dropped and counted
        when the queue is full.

        The hot path: the line is formatted by the receiver while the payload is in cache, and the
        queue's high-water mark is sampled by the writer (and set at a drop)."""
        queue = self._queue
        if len(queue) < self._capacity:
            queue.append((file, recv_ns, line))  # the writer looks every _WRITER_WAIT_S
        else:
            self._dropped()

    def line_queue(self) -> tuple[collections.deque[Item], int]:
        """The queue and its capacity, for a receiver that appends ``(file, recv_ns, line)`` items
        itself while ``len(queue) < capacity`` (and calls :meth:`put_line` otherwise)."""
        return self._queue, self._capacity

    def put(self, symbol: str, exchange: str, recv_ns: int, channel: str, payload: bytes) -> None:
        """Queue one received message for the writer; dropped and counted when the queue is full."""
        item = self._encode(symbol, exchange, recv_ns, channel, payload)
        if item is not None:
            self.put_line(*item)

    def put_event(self, symbol: str, exchange: str, recv_ns: int, channel: str, payload: bytes) -> None:
        """Queue a connection event; never dropped (there are few)."""
        item = self._encode(symbol, exchange, recv_ns, channel, payload)
        if item is not None:
            self._queue.append(item)
            self._wake.set()

    def _encode(self, symbol: str, exchange: str, recv_ns: int, channel: str, payload: bytes) -> Item | None:
        """The queue item of one message; None (counted and logged as a write error) if it cannot be
        encoded. CR/LF in the payload are replaced by the writer."""
        try:
            head = encode_line(recv_ns, channel, b"")[:-1]  # checks recv_ns and the channel tag
            data = payload.encode("utf-8") if isinstance(payload, str) else payload
            line = b"%b%b\n" % (head, data)
        except (RawFormatError, TypeError) as exc:
            self.encode_errors += 1
            if self.encode_errors <= 10 or self.encode_errors % 1000 == 0:
                log.error(
                    "could not encode a %s line (%d encode errors)", channel, self.encode_errors, exc_info=exc
                )
            return None
        return (symbol, recv_ns // NS_PER_MINUTE, str(exchange)), recv_ns, line

    def _dropped(self) -> None:
        self.queue_dropped += 1
        self.queue_high_water = self._capacity
        now = time.monotonic()
        if self.queue_dropped == 1 or now - self._last_drop_log >= _DROP_LOG_INTERVAL_S:
            self._last_drop_log = now
            log.error(
                "write queue full (%d items): %d message(s) dropped so far; the disk is too slow",
                self._capacity,
                self.queue_dropped,
            )

    # -- threads -----------------------------------------------------------------------------

    def _writer_loop(self) -> None:
        queue = self._queue
        popleft = queue.popleft
        append_lines = self.writer.append_lines
        wake = self._wake
        stopping = self._writer_stop.is_set
        while True:
            n = len(queue)
            if n < _WRITER_MAX_BATCH and not stopping():
                # let lines accumulate (an event wakes us sooner): few large writes, and few handoffs
                # of the GIL between this thread and the receivers (it costs them more than the work)
                wake.wait(_WRITER_WAIT_S)
                wake.clear()
                n = len(queue)
            if not n:
                if stopping():
                    return
                continue
            # everything queued so far, in one write() per file; the watermark sees it until written
            if n > self.queue_high_water:
                self.queue_high_water = n
            self._inflight_ns = queue[0][1]
            batch = list(itertools.starmap(popleft, itertools.repeat((), min(n, _WRITER_MAX_BATCH))))
            try:
                failed = append_lines(batch)
            except Exception as error:  # a bug: count the batch as lost, keep writing
                failed = [(item, error) for item in batch]
            self._inflight_ns = None
            for item, exc in failed:
                self.write_errors += 1
                if self.write_errors <= 10 or self.write_errors % 1000 == 0:
                    log.error(
                        "could not write a line to %s (%d write errors)",
                        item[0],
                        self.write_errors,
                        exc_info=exc,
                    )

    def _watermark(self) -> int:
        """Now, or the receive time of the oldest line not yet written if earlier (never finalize
        under it). The queue is read before the writer's in-flight batch: the writer marks a batch
        in flight before taking it off the queue, so a line is always seen in one or the other."""
        now = self.clock()
        queue = self._queue
        if queue:
            with contextlib.suppress(IndexError):  # emptied meanwhile
                now = min(now, queue[0][1])
        inflight = self._inflight_ns
        return now if inflight is None else min(now, inflight)

    def _store_loop(self) -> None:
        while not self._store_stop.wait(self.config.finalize_interval_s):
            self._store_tick()

    def _store_tick(self) -> None:
        try:
            self.writer.finalize_due(self._watermark())
        except Exception:
            log.exception("finalizing minute files failed (will retry)")
        pending, self._status_pending = self._status_pending, None
        if pending is not None:
            self._put_status(pending)

    def _put_status(self, data: bytes) -> None:
        try:
            self.store.put(status_key(self.config.collector_id), data, STATUS_META)
        except Exception:
            self.status_errors += 1
            log.exception("could not write the status document")

    # -- status ------------------------------------------------------------------------------

    def status_document(self) -> dict[str, Any]:
        """The status document (docs/collector.md "Status document")."""
        now = self.clock()
        exchanges: dict[str, Any] = {}
        for name, stats in self.stats.items():
            conns = self.connections.get(name, [])
            exchanges[name] = {
                "connected": bool(conns) and all(c.conn.connected for c in conns),
                "last_message_at": iso_ns(stats.last_message_ns),
                "reconnects": stats.reconnects,
                "gaps": stats.gaps,
                "unrouted_messages": stats.unrouted,
                "skipped_messages": stats.skipped,
                "messages": sum(m for m, _ in stats.channels.values()),
                "channels": {
                    ch: {"messages": m, "bytes": b} for ch, (m, b) in sorted(stats.channels.items())
                },
                "connections": [
                    {
                        "url": c.conn.url,
                        "symbols": list(c.conn.symbols),
                        "connected": c.conn.connected,
                        "connected_since": iso_ns(c.conn.connected_since_ns) if c.conn.connected else None,
                        "attempts": c.conn.attempts,
                        "reconnects": c.conn.reconnects,
                        "messages": c.conn.messages,
                        "last_message_at": iso_ns(c.conn.last_message_ns),
                        "last_close_reason": c.conn.last_close_reason,
                    }
                    for c in conns
                ],
                "rest": {
                    "requests": stats.rest_requests,
                    "errors": stats.rest_errors,
                    "rate_limited": stats.rest_rate_limited,
                    "last_error": stats.rest_last_error,
                    "blocked_until": iso_ns(stats.rest_blocked_until_ns)
                    if stats.rest_blocked_until_ns is not None and stats.rest_blocked_until_ns > now
                    else None,
                },
            }
        return {
            "schema_version": STATUS_SCHEMA_VERSION,
            "collector_id": self.config.collector_id,
            "generated_at": iso_ns(now),
            "started_at": iso_ns(self.started_ns),
            "running": self._running,
            "symbols": list(self.config.symbols),
            "exchanges": exchanges,
            "queue": {
                "capacity": self._capacity,
                "depth": len(self._queue),
                "high_water": self.queue_high_water,
                "dropped": self.queue_dropped,
            },
            "writer": {
                **dataclasses.asdict(self.writer.counters),
                "write_errors": self.write_errors + self.encode_errors,
            },
        }

    def _status_bytes(self) -> bytes:
        return json.dumps(self.status_document(), indent=1, sort_keys=True).encode() + b"\n"

    async def _status_task(self) -> None:
        while True:
            self._status_pending = self._status_bytes()
            await asyncio.sleep(self.config.status_interval_s)

    # -- running -----------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the collector to shut down (idempotent; call on the event loop, e.g. a signal handler)."""
        if self._stop_requested:
            log.info("already stopping")
        self._stop_requested = True
        if self._stop is not None:
            self._stop.set()

    async def run(self) -> None:
        """Recover leftover partial files, capture until :meth:`stop`, then shut down cleanly."""
        self._stop = asyncio.Event()
        if self._stop_requested:
            self._stop.set()
        recovered = await asyncio.to_thread(self.writer.recover, now_ns=self.clock())
        if recovered:
            log.info("recovered %d minute file(s) left by a previous run", len(recovered))
        writer_thread = threading.Thread(target=self._writer_loop, name="collector-writer", daemon=True)
        store_thread = threading.Thread(target=self._store_loop, name="collector-store", daemon=True)
        writer_thread.start()
        store_thread.start()
        self._running = True
        tasks = self._start_tasks(self._stop)
        try:
            await self._stop.wait()
        finally:
            await self._shutdown(tasks, writer_thread, store_thread)

    def _start_tasks(self, stop: asyncio.Event) -> list[asyncio.Task[None]]:
        cfg = self.config
        tasks: list[asyncio.Task[None]] = []
        for name, spec in self.specs.items():
            poller = None
            if cfg.rest_enabled:
                poller = RestPoller(
                    spec,
                    cfg.symbols,
                    self,
                    self.stats[name],
                    policy=self.policy,
                    timeout_s=cfg.rest_timeout_s,
                    snapshot_min_interval_s=cfg.snapshot_min_interval_s,
                    clock=self.clock,
                )
                self.pollers[name] = poller
                tasks.append(asyncio.create_task(poller.run(stop), name=f"rest-{name}"))
            conns = [
                WsConnection(
                    spec,
                    plan,
                    self,
                    self.stats[name],
                    policy=self.policy,
                    stall_timeout_s=cfg.stall_timeout_s,
                    open_timeout_s=cfg.open_timeout_s,
                    close_timeout_s=cfg.close_timeout_s,
                    max_connection_age_s=cfg.max_connection_age_s,
                    max_message_bytes=cfg.max_message_bytes,
                    on_open=poller.request_snapshots if poller else lambda symbols: None,
                    on_gap=poller.request_snapshot if poller else lambda symbol: None,
                    clock=self.clock,
                )
                for plan in spec.connections(spec.ws_base_url(), cfg.symbols)
            ]
            self.connections[name] = conns
            for i, conn in enumerate(conns):
                tasks.append(asyncio.create_task(conn.run(stop), name=f"ws-{name}-{i}"))
        tasks.append(asyncio.create_task(self._status_task(), name="status"))
        return tasks

    async def _shutdown(
        self, tasks: list[asyncio.Task[None]], writer_thread: threading.Thread, store_thread: threading.Thread
    ) -> None:
        if self._shutdown_done:
            return
        self._shutdown_done = True
        log.info("shutting down: closing connections, draining %d queued line(s)", len(self._queue))
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for task, result in zip(tasks, results, strict=True):
            if isinstance(result, Exception):
                log.error("task %s ended with %r", task.get_name(), result, exc_info=result)
        self._writer_stop.set()
        self._wake.set()
        await asyncio.to_thread(writer_thread.join)
        self._store_stop.set()
        await asyncio.to_thread(store_thread.join)
        self._running = False
        keys = await asyncio.to_thread(self.writer.close, self.clock())
        await asyncio.to_thread(self._put_status, self._status_bytes())
        log.info(
            "stopped: %d minute file(s) finalized at shutdown, %d lines written, %d dropped",
            len(keys),
            self.writer.counters.lines,
            self.queue_dropped,
        )


def run_collector(config: CollectorConfig) -> int:
    """Run until SIGTERM/SIGINT; the production entry point (real clock). Returns an exit code."""

    async def main() -> None:
        collector = Collector(config)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, collector.stop)
        log.info(
            "collector %s: %s on %s, data %s",
            config.collector_id,
            ",".join(config.symbols),
            ",".join(config.exchanges),
            config.data_url,
        )
        await collector.run()

    asyncio.run(main())
    return 0
