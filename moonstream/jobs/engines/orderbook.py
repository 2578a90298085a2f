"""The ``orderbook`` engine: Binance USDT-M book reconstruction, integrity check and 30 s frames.

Pure: ``step_orderbook(state, events, symbol, minute) -> (state, OrderbookOutputs)``; no I/O, no
clock. The state is plain JSON (decimal strings) and carries the book, the pre-snapshot diff buffer
and the running totals from one minute to the next (given back the very state dict it returned, the
step reuses the book it parsed instead of parsing it again: same results, see "parsed books kept
between minutes" below). Rules (docs/engines.md, "Order book"):

- diffs are buffered (at most :data:`MAX_BUFFERED_DIFFS`, oldest dropped and counted) until a REST
  snapshot is seen; diffs with ``u < lastUpdateId`` are dropped; the first applied diff must bridge
  ``U <= lastUpdateId <= u``; afterwards every diff's ``pu`` must equal the previous ``u``;
- any ``pu`` mismatch is a gap (no tolerance): counted, the book is discarded, diffs are buffered
  again and the book resyncs from the next snapshot in the stream;
- integrity: a bookTicker whose ``u`` equals an applied diff's ``u`` must show the reconstructed best
  bid and ask, whichever of the two arrives first;
- frames: see :mod:`moonstream.jobs.engines.orderbook_frames`.

Bybit v5 and OKX v5 books (:mod:`~moonstream.jobs.engines.orderbook_bybit`,
:mod:`~moonstream.jobs.engines.orderbook_okx`) run beside the Binance one, each under its own state
key, with their stats under ``books``. Frames come from **one** book per minute, never a merge:
Binance when it is present (events this minute, or a book or buffer in the state), else the first
present of Bybit and OKX (``frame_source`` in the stats, ``exchange``/``src`` in the heatmap body).
"""

from __future__ import annotations

import logging
import os
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from moonstream.jobs.engines.market import decimal_text
from moonstream.jobs.engines.orderbook_binance import (
    _ZERO,
    EXCHANGE,
    MAX_BUFFERED_DIFFS,
    RECENT_APPLIED,
    STALE_NS,
    TOPS_KEPT,
    BinanceBook,
)
from moonstream.jobs.engines.orderbook_bybit import BybitBook, LevelBook
from moonstream.jobs.engines.orderbook_frames import (
    WINDOW_NS,
    Frame,
    SideDicts,
    WindowAccumulator,
    index_miss,
)
from moonstream.jobs.engines.orderbook_okx import OkxBook
from moonstream.jobs.events import BookDelta, BookSnapshot, BookTicker, DepthSnapshot, DepthUpdate, Event
from moonstream.native import compiled
from moonstream.publish.frames import SOURCE_CODES
from moonstream.timeutil import iso_ns

logger = logging.getLogger(__name__)

ENGINE_VERSION = "orderbook-2"
STATE_VERSION = 1
SOURCE_CODE = 1
"""The frame header's ``src`` for a Binance USDT-M book (``moonstream.publish.frames.SOURCE_CODES``);
a minute whose frames come from another exchange says so in :attr:`OrderbookOutputs.src`."""
LEVEL_BOOKS: dict[str, type[LevelBook]] = {"bybit": BybitBook, "okx": OkxBook}
"""The websocket snapshot/delta books, by exchange, in frame-source priority order after Binance."""
COUNTERS: tuple[str, ...] = (
    "snapshots_seen",
    "snapshots_used",
    "diffs_seen",
    "diffs_applied",
    "diffs_buffered",
    "diffs_dropped_stale",
    "diffs_dropped_overflow",
    "gaps",
    "syncs",
    "resyncs",
    "bridge_failures",
    "levels_trimmed",
    "integrity_compared",
    "integrity_mismatches",
)
"""Every counter of the stats document, per minute and as running totals."""


@dataclass(frozen=True)
class OrderbookOutputs:
    """What one minute produced: the frames of its :00 and :30 windows (None where the book was not
    synced at any moment of the window) and the JSON-ready stats body."""

    frames: tuple[Frame | None, Frame | None]
    stats: dict[str, Any]
    window_starts: tuple[int, int]
    source: str = EXCHANGE

    @property
    def src(self) -> int:
        """The frame header's ``src`` of the exchange the frames were drawn from."""
        return SOURCE_CODES[self.source]

    def heatmap_body(self) -> dict[str, Any]:
        """The ``orderbook_heatmap`` JSON body: always two entries, ``null`` for a missing frame."""
        return {
            "exchange": self.source,
            "src": self.src,
            "frames": [
                {"window_start": iso_ns(start), **frame.document()} if frame is not None else None
                for start, frame in zip(self.window_starts, self.frames, strict=True)
            ],
            "window_starts": [iso_ns(start) for start in self.window_starts],
        }


_BOOK_EVENTS = (DepthUpdate, DepthSnapshot, BookSnapshot, BookDelta)
_compiled_binance_run = compiled("binance_run")
_RUN_CONTEXT = (
    EXCHANGE,
    DepthUpdate,
    BookTicker,
    DepthSnapshot,
    (BookSnapshot, BookDelta),
    BinanceBook,
    WindowAccumulator,
    "synced",
    STALE_NS,
    TOPS_KEPT,
    RECENT_APPLIED,
    _ZERO,
    index_miss,
    "diffs_seen",
    "diffs_applied",
    "integrity_compared",
)
"""What ``binance_run`` (moonstream/native_src/run.c) reads: the loop's types and the book's constants."""


# --- parsed books kept between minutes ---------------------------------------------------------
#
# A backfill and the scheduler pass the state dict a step returned, unchanged (the same object), to
# the next minute's step. Parsing its books (thousands of decimal strings) is then wasted work: the
# step keeps, per symbol, the state dict it returned last and the level dicts it serialized into
# it, in the state's order (exactly what the parse builds: same keys, equal values, same order), and
# the next step given that very object takes them instead of parsing. An entry is used once (taken
# out, the dicts are mutated by the step that takes them); any other input (a copy, a loaded
# checkpoint, a second use of the same dict) is parsed as before. Outputs and states do not depend
# on whether an entry was used (tests/unit/test_orderbook.py runs both ways).


@dataclass(frozen=True)
class _KeptBooks:
    """What one step returned for ``symbol``: its state dict, and per exchange the state part, its
    rows lists (checked by identity too) and the level dicts serialized into them."""

    state: dict[str, Any]
    levels: dict[str, tuple[dict[str, Any], list[Any], list[Any], SideDicts]]


KEEP_BOOKS = True
"""Keep parsed books between minutes (set False to always parse the state)."""
_kept: dict[str, _KeptBooks] = {}
_kept_lock = threading.Lock()


def clear_kept_books() -> None:
    """Forget every kept book (the next step of each symbol parses its state)."""
    with _kept_lock:
        _kept.clear()


def _reset_after_fork() -> None:
    global _kept_lock
    _kept_lock = threading.Lock()
    _kept.clear()


os.register_at_fork(after_in_child=_reset_after_fork)


def _take_kept(state: dict[str, Any], symbol: str) -> dict[str, SideDicts]:
    """The kept level dicts for ``state`` if it is the very dict the last step of ``symbol``
    returned (and its book parts and rows are still those objects), by exchange; else none."""
    with _kept_lock:
        kept = _kept.pop(symbol, None)
    if kept is None or kept.state is not state or not KEEP_BOOKS:
        return {}
    out: dict[str, SideDicts] = {}
    for name, (part, bids, asks, levels) in kept.levels.items():
        if state.get(name) is not part or part.get("bids") is not bids or part.get("asks") is not asks:
            return {}
        if len(bids) != len(levels[0]) or len(asks) != len(levels[1]):
            return {}
        out[name] = levels
    return out


def _keep(symbol: str, state: dict[str, Any], levels: dict[str, SideDicts | None]) -> None:
    kept = {
        name: (state[name], state[name]["bids"], state[name]["asks"], sides)
        for name, sides in levels.items()
        if sides is not None
    }
    with _kept_lock:
        _kept[symbol] = _KeptBooks(state, kept)


def _clamp(t: int, low: int, high: int) -> int:
    return low if t < low else high if t > high else t


def _frame_source(
    binance: BinanceBook, books: dict[str, LevelBook], present: set[str]
) -> tuple[str, BinanceBook | LevelBook]:
    """The one book frames are drawn from this minute: Binance when present (events this minute,
    or a book or buffered diffs in the state), else the first present of :data:`LEVEL_BOOKS`
    (events this minute or a synced book), else Binance (no frames)."""
    if EXCHANGE in present or binance.status != "empty" or binance.buffer:
        return EXCHANGE, binance
    for name, book in books.items():
        if name in present or book.status == "synced":
            return name, book
    return EXCHANGE, binance


def step_orderbook(
    state: dict[str, Any], events: Sequence[Event], symbol: str, minute: int
) -> tuple[dict[str, Any], OrderbookOutputs]:
    """Advance the order-book engine over one minute of events (in receive order).

    ``state`` is this engine's previous state (``{}`` for a fresh start); ``minute`` counts minutes
    since the epoch. Only events of ``symbol`` are used: Binance diffs, snapshots and bookTickers,
    and Bybit/OKX book snapshots and deltas. The engine's clock is the exchange time of the frame
    source's messages (Binance: the diffs' ``E``; Bybit/OKX: the messages' ``ts``), clamped into the
    minute and never going backwards; the other books use their messages' clamped time.
    """
    kept = _take_kept(state, symbol)
    binance = BinanceBook.from_state(state.get(EXCHANGE), symbol, kept.get(EXCHANGE))
    totals: Counter[str] = Counter({k: int(v) for k, v in state.get("totals", {}).items()})
    present = {e.exchange for e in events if e.symbol == symbol and isinstance(e, _BOOK_EVENTS)}
    books: dict[str, LevelBook] = {
        name: cls.from_state(state.get(name), symbol, kept.get(name))
        for name, cls in LEVEL_BOOKS.items()
        if name in state or name in present
    }
    source, book = _frame_source(binance, books, present)
    start = minute * 60 * 1_000_000_000
    end = start + 2 * WINDOW_NS
    windows = [WindowAccumulator(symbol, s, s + WINDOW_NS) for s in (start, start + WINDOW_NS)]

    def open_window(index: int, t: int) -> None:
        book.window = windows[index]
        if book.status == "synced" and book.live_until() > t:
            book._open_window(t)

    def close_window(index: int, t: int) -> None:
        window = windows[index]
        if window.active:
            window.close_book(max(window.since, min(t, book.live_until())))

    open_window(0, start)
    clock = start
    current = 0

    def advance(ts_ns: int) -> None:
        """Move the clock to a frame-source message's time: switch windows, stop a stale book."""
        nonlocal clock, current
        if ts_ns > clock:  # clock = max(clock, clamp(ts_ns, start, end)), as start <= clock <= end
            clock = ts_ns if ts_ns < end else end
        if current == 0 and clock >= windows[0].end_ns:
            close_window(0, windows[0].end_ns)
            current = 1
            open_window(1, windows[1].start_ns)
        if book.status == "synced" and clock > book.live_until():
            close_window(current, clock)  # the book was stale: coverage stopped at live_until
            book._open_window(clock)

    on_diff, on_ticker = binance.on_diff, binance.on_ticker
    # ``binance_run`` in moonstream/native_src/run.c runs this loop (used when built) from event ``k`` while
    # the frame source is the Binance book, over the events it handles exactly as the code below
    # (skipped ones, the next diff of a synced chain with its advance, bookTickers the book has
    # passed); it stops at the first other event, which the code below runs.
    run = _compiled_binance_run if book is binance else None
    k, count = 0, len(events)
    while k < count:
        if run is not None:
            switch_at = windows[0].end_ns if current == 0 else end + 1  # no switch after the first
            done = run(events, k, symbol, binance, clock, end, switch_at, _RUN_CONTEXT)
            if done is NotImplemented:
                run = None
            else:
                k, clock = done
                if k >= count:
                    break
        event = events[k]
        k += 1
        if event.symbol != symbol:
            continue
        if event.exchange == EXCHANGE:
            if isinstance(event, DepthUpdate):
                advance(event.ts_ns)
                on_diff(event, clock)
            elif isinstance(event, BookTicker):
                on_ticker(event)
            elif isinstance(event, DepthSnapshot):
                binance.on_snapshot(event, clock)
        elif isinstance(event, BookSnapshot | BookDelta) and event.exchange in books:
            level_book = books[event.exchange]
            if level_book is book:
                advance(event.ts_ns)
                t = clock
            else:
                t = _clamp(event.ts_ns, start, end)
            if isinstance(event, BookSnapshot):
                level_book.on_snapshot(event, t)
            else:
                level_book.on_delta(event, t)
    if current == 0:
        close_window(0, windows[0].end_ns)
        open_window(1, windows[1].start_ns)
    close_window(1, windows[1].end_ns)
    frames = (windows[0].finish(), windows[1].finish())
    book.window = None
    binance.trim()
    minute_counts = {k: binance.counts.get(k, 0) for k in COUNTERS}
    totals.update(minute_counts)
    stats = _stats_body(binance, minute_counts, {k: totals.get(k, 0) for k in COUNTERS}, frames)
    stats["frame_source"] = source
    stats["books"] = {name: _level_book_stats(level_book) for name, level_book in books.items()}
    keep = KEEP_BOOKS
    levels: dict[str, SideDicts | None] = {}
    if keep:
        binance_state, levels[EXCHANGE] = binance.state_and_levels()
    else:
        binance_state = binance.to_state()
    new_state: dict[str, Any] = {
        "version": STATE_VERSION,
        EXCHANGE: binance_state,
        "totals": {k: totals.get(k, 0) for k in COUNTERS},
    }
    for name, level_book in books.items():
        if keep:
            new_state[name], levels[name] = level_book.state_and_levels()
        else:
            new_state[name] = level_book.to_state()
    if keep:
        _keep(symbol, new_state, levels)
    return new_state, OrderbookOutputs(frames, stats, (start, start + WINDOW_NS), source)


def _level_book_stats(book: LevelBook) -> dict[str, Any]:
    """A Bybit/OKX book's part of the stats (call once, at the minute's end: adds to the totals)."""
    minute = book.end_minute()
    synced = book.status == "synced"
    bid, ask = book.best_bid(), book.best_ask()
    return {
        "exchange": book.EXCHANGE,
        "status": book.status,
        "synced": synced,
        "stream_depth": book.depth,
        "last_update_id": book.last_id if synced else None,
        "last_seq": book.last_seq if synced else None,
        "depth": {
            "bid_levels": len(book.bids) if synced else 0,
            "ask_levels": len(book.asks) if synced else 0,
            "best_bid": decimal_text(bid) if synced and bid is not None else None,
            "best_ask": decimal_text(ask) if synced and ask is not None else None,
        },
        "this_minute": minute,
        "totals": {k: book.totals.get(k, 0) for k in book.COUNTERS},
    }


def _stats_body(
    book: BinanceBook, minute: dict[str, int], totals: dict[str, int], frames: tuple[Frame | None, ...]
) -> dict[str, Any]:
    bid, ask = book.best_bid(), book.best_ask()
    rng = book.complete_range
    synced = book.status == "synced"
    return {
        "exchange": EXCHANGE,
        "status": book.status,
        "synced": synced,
        "last_update_id": book.last_u if synced else None,
        "depth": {
            "bid_levels": len(book.bids) if synced else 0,
            "ask_levels": len(book.asks) if synced else 0,
            "best_bid": decimal_text(bid) if synced and bid is not None else None,
            "best_ask": decimal_text(ask) if synced and ask is not None else None,
            "complete_from": decimal_text(rng[0]) if synced and rng else None,
            "complete_to": decimal_text(rng[1]) if synced and rng else None,
        },
        "buffered_diffs": len(book.buffer),
        "frames": {"emitted": sum(f is not None for f in frames), "missing": sum(f is None for f in frames)},
        "this_minute": minute,
        "totals": totals,
    }


__all__ = [
    "COUNTERS",
    "ENGINE_VERSION",
    "EXCHANGE",
    "KEEP_BOOKS",
    "LEVEL_BOOKS",
    "MAX_BUFFERED_DIFFS",
    "SOURCE_CODE",
    "STALE_NS",
    "BinanceBook",
    "BybitBook",
    "OkxBook",
    "OrderbookOutputs",
    "clear_kept_books",
    "step_orderbook",
]
