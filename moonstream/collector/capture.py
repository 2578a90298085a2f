"""The live collector: exchange connections and REST polls -> line buffers -> raw minute files.

One event loop and one thread, so that the data store can never stall a websocket:

* the asyncio event loop: one task per exchange connection (:class:`WsConnection`), one REST poller
  per exchange (:class:`RestPoller`), the status task and the flush task. Each received message is
  formatted into its raw-file line by the receiver (while the payload is in cache) and appended to
  the buffer of its file ``(symbol, minute, exchange)`` (:class:`LineBuffer`). The loop itself
  writes the buffers to the partial files (:class:`MinuteFileWriter`: one ``write()`` per file):
  every 10 ms, and at once when a file has a batch of lines (512) buffered. Writing there costs
  less than handing the lines to a writer thread (no second thread competing for the GIL, and the
  lines are still in cache); an appending ``write()`` to the local spool only copies into the page
  cache. So a SIGKILL loses at most the lines buffered: about 10 ms' worth;
* the store thread: every ``finalize_interval_s`` finalizes due minutes into the data store
  (compression and upload; a failing store is retried on the next tick; capture goes on) and
  writes the status document ``status/collector-{id}.json``. It never finalizes a minute that a
  line not yet written could belong to (:meth:`Collector._watermark`).

Shutdown (SIGTERM/SIGINT, or :meth:`Collector.stop`) is one idempotent path: cancel the tasks (each
connection records ``conn:close``), write the buffers, stop the store thread, ``MinuteFileWriter.close()``
(finalize due minutes, leave the current minute's partial file for the next start's ``recover()``),
write a final status document. See docs/collector.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import itertools
import json
import logging
import signal
import threading
import time
import weakref
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
_FLUSH_INTERVAL_S = 0.01  # queued lines reach the disk at most this late (a SIGKILL loses them)
_FLUSH_LINES = 512  # ... or as soon as this many are queued
_DROP_LOG_INTERVAL_S = 10.0

Item = EncodedItem  # ((symbol, minute, exchange), recv_ns, line)
FileId = tuple[str, int, str]  # (symbol, minute, exchange)


class _Lines(list[bytes]):
    """The encoded lines of one file not yet written (a list that can be weakly referenced)."""

    __slots__ = ("__weakref__", "file")

    def __init__(self, file: FileId) -> None:
        super().__init__()
        self.file = file


class LineBuffer:
    """Lines received but not yet written, one list per file (``(symbol, minute, exchange)``).

    Receivers keep a reference to the list of the file they write to and append to it directly; a
    list is emptied in place when written, so the reference stays valid. The lists of past minutes
    are dropped from the registry by :meth:`prune` once empty, but a list still held by a receiver
    (e.g. a rare channel, or after the clock stepped back) is still written if it gets lines."""

    def __init__(self) -> None:
        self._files: dict[FileId, _Lines] = {}
        self._retired: weakref.WeakValueDictionary[int, _Lines] = weakref.WeakValueDictionary()  # by id

    def lines_for(self, file: FileId) -> _Lines:
        lines = self._files.get(file)
        if lines is None:
            lines = self._files[file] = _Lines(file)
        return lines

    def __len__(self) -> int:
        """Lines buffered, all files."""
        n = sum(map(len, self._files.values()))
        return n + sum(map(len, self._retired.values())) if self._retired else n

    def take(self) -> list[tuple[FileId, list[bytes]]]:
        """Every file's buffered lines, in order; the buffers are left empty."""
        out: list[tuple[FileId, list[bytes]]] = []
        for lines in itertools.chain(
            self._files.values(), list(self._retired.values()) if self._retired else ()
        ):
            if lines:
                out.append((lines.file, lines[:]))
                lines.clear()
        return out

    def prune(self) -> None:
        """Drop the empty lists of minutes before the previous one (of the newest buffered)."""
        if not self._files:
            return
        newest = max(file[1] for file in self._files)
        for file in [f for f, lines in self._files.items() if f[1] < newest - 1 and not lines]:
            lines = self._files.pop(file)
            self._retired[id(lines)] = lines


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
        # lines between receive and disk, per file; written on the event loop
        self._queue = LineBuffer()
        self._capacity = config.queue_size
        self._batch = min(self._capacity, _FLUSH_LINES)
        self.queue_dropped = 0
        self.queue_high_water = 0
        self.write_errors = 0  # lines lost to failed writes
        self._write_failures = 0
        self.encode_errors = 0
        self.status_errors = 0
        self._last_drop_log = 0.0
        self._flush_inline = False  # while running: a full buffer is written at once (never dropped)
        self._pending_since_ns = clock()  # every line not yet written was received at or after this
        self._last_prune = 0.0
        self._store_stop = threading.Event()
        self._status_pending: bytes | None = None
        self._stop: asyncio.Event | None = None
        self._stop_requested = False
        self._running = False
        self._shutdown_done = False

    # -- the sink (called on the event loop) ----------------------------------------------------

    def put_line(self, file: tuple[str, int, str], recv_ns: int, line: bytes) -> None:
        """Buffer one encoded line (``file`` is ``(symbol, minute, exchange)``, the line is
        ``b"%d %s %s\\n" % (recv_ns, channel_tag, payload)``, ``recv_ns`` just read from the clock).

        A full buffer (``queue_size`` lines in all, or a batch for this file) is written at once
        while the collector runs; otherwise the line is dropped and counted."""
        buffers = self._queue
        lines = buffers.lines_for(file)
        if len(lines) >= self._batch or len(buffers) >= self._capacity:
            if self._flush_inline:
                self._flush(recv_ns)
            elif len(buffers) >= self._capacity:
                self._dropped()
                return
        lines.append(line)

    def file_lines(self, file: tuple[str, int, str]) -> tuple[list[bytes], int]:
        """The buffer of ``file``'s lines not yet written, and a batch size: a receiver appends its
        encoded lines there itself while the buffer holds fewer, and calls :meth:`put_line` otherwise.
        The list stays the same object (it is emptied when written)."""
        return self._queue.lines_for(file), self._batch

    def put(self, symbol: str, exchange: str, recv_ns: int, channel: str, payload: bytes) -> None:
        """Queue one received message for the writer; dropped and counted when the queue is full."""
        item = self._encode(symbol, exchange, recv_ns, channel, payload)
        if item is not None:
            self.put_line(*item)

    def put_event(self, symbol: str, exchange: str, recv_ns: int, channel: str, payload: bytes) -> None:
        """Queue a connection event; never dropped (there are few)."""
        item = self._encode(symbol, exchange, recv_ns, channel, payload)
        if item is not None:
            self._queue.lines_for(item[0]).append(item[2])

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

    def _flush(self, floor_ns: int | None = None) -> None:
        """Write every buffered line to its partial file: one ``write()`` per file, on the event loop.

        ``floor_ns``: the receive time of a line about to be buffered (stamped before this flush)."""
        batches = self._queue.take()
        written = 0
        for file, lines in batches:
            written += len(lines)
            try:
                self.writer.append_file_lines(file, lines)
            except Exception as exc:  # disk full, ...: the lines are lost; counted, logged
                self.write_errors += len(lines)
                self._write_failures += 1
                if self._write_failures <= 10 or self._write_failures % 100 == 0:
                    log.error(
                        "could not write %d line(s) to %s (%d write errors)",
                        len(lines),
                        file,
                        self.write_errors,
                        exc_info=exc,
                    )
        now = self.clock()
        # the store thread may finalize what ends before this: every line still buffered came later
        self._pending_since_ns = now if floor_ns is None else min(now, floor_ns)
        if written > self.queue_high_water:
            self.queue_high_water = written

    async def _flush_task(self) -> None:
        while True:
            await asyncio.sleep(_FLUSH_INTERVAL_S)
            try:
                self._flush()
                if time.monotonic() - self._last_prune >= 1.0:
                    self._last_prune = time.monotonic()
                    self._queue.prune()
            except Exception:  # a bug: keep flushing (write errors are handled in _flush)
                log.exception("flushing the line buffers failed")

    def _watermark(self) -> int:
        """Now, or if earlier the time after which every line not yet written was received (never
        finalize under it): read by the store thread, advanced by each flush after its writes."""
        return min(self.clock(), self._pending_since_ns)

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
        store_thread = threading.Thread(target=self._store_loop, name="collector-store", daemon=True)
        store_thread.start()
        self._running = True
        self._flush_inline = True
        tasks = self._start_tasks(self._stop)
        flusher = asyncio.create_task(self._flush_task(), name="flush")
        try:
            await self._stop.wait()
        finally:
            await self._shutdown(tasks, flusher, store_thread)

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
        self, tasks: list[asyncio.Task[None]], flusher: asyncio.Task[None], store_thread: threading.Thread
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
        flusher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await flusher
        self._flush_inline = False
        self._flush()
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
