"""Binance USDT-M order-book reconstruction: the exchange's documented sync procedure, pure.

:class:`BinanceBook` buffers diffs until a REST snapshot, bridges it (``U <= lastUpdateId <= u``),
chains every later diff by ``pu``, treats any break as a gap (book dropped, resync from the next
snapshot), checks the book against bookTicker at equal update ids, and feeds level changes to the
current frame window. State is plain JSON (:meth:`BinanceBook.to_state`). See docs/engines.md.
"""

from __future__ import annotations

import logging
from bisect import bisect_left, insort
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from moonstream.jobs.engines.market import decimal_text
from moonstream.jobs.engines.orderbook_frames import (
    SideDicts,
    WindowAccumulator,
    decimal_cached,
    decimal_text_cached,
    decimal_text_memo,
    index_miss,
)
from moonstream.jobs.events import BookTicker, DepthSnapshot, DepthUpdate, Level
from moonstream.native import compiled

logger = logging.getLogger(__name__)

EXCHANGE = "binance"
MAX_BUFFERED_DIFFS = 500
"""Diffs kept while waiting for a snapshot: about 25 s of BTC @0ms (~20 diffs/s), 50 s at @100ms.
A REST snapshot needs only the diffs received during its request (6–7 in the real recordings)."""
MAX_LEVELS_PER_SIDE = 5000
"""Levels kept per side; beyond it the levels farthest from the top are trimmed (counted)."""
STALE_NS = 10 * 1_000_000_000
"""A synced book counts as live for at most 10 s of exchange time after its last diff; a frame's
coverage stops there (the feed may have ended). The ``pu`` chain, not this, decides correctness."""
TOPS_KEPT = 128
"""Best prices kept sorted per side (between this and twice this) for the best bid/ask."""
RECENT_APPLIED = 64
"""Best bid/ask remembered for this many last applied diffs (bookTicker arriving after its diff)."""
MAX_PENDING_TICKERS = 256
"""bookTickers remembered whose ``u`` is ahead of the book (arriving before their diff)."""

_ZERO = Decimal(0)
_compiled_set_levels = compiled("set_levels")
_compiled_side_state = compiled("side_state")
_compiled_sort_prices = compiled("sort_prices")


class Counts(dict[str, int]):
    """The book's event counters: ``counts[key] += 1`` counts from 0 (a missing key reads 0), as a
    :class:`~collections.Counter` does. A plain dict subclass: Counter's Python ``__delitem__``
    would send every ``counts[key] = ...`` through a slower, method-calling slot."""

    def __missing__(self, key: str) -> int:
        return 0


def _levels_json(levels: Sequence[Level]) -> list[list[str]]:
    text = decimal_text_cached
    return [[text(p), text(q)] for p, q in levels]


def _side_json(book: dict[Decimal, Decimal], descending: bool) -> list[list[str]]:
    """One side as ``[price, qty]`` texts, best first (prices are unique keys: sorting the keys
    gives the order of sorting the items)."""
    return _rows((p, book[p]) for p in sorted(book, reverse=descending))


def _rows(items: Iterable[tuple[Decimal, Decimal]]) -> list[list[str]]:
    """``[price, qty]`` texts of ``items`` in their order. Texts come from the memo of
    :func:`decimal_text_cached` (a text is never empty, so ``or`` falls back only on a miss)."""
    memo = decimal_text_memo()
    get, text = memo.get, decimal_text_cached
    return [[get(p) or text(p), get(q) or text(q)] for p, q in items]


def _side_sorted(book: dict[Decimal, Decimal], descending: bool) -> dict[Decimal, Decimal]:
    """The side as a new dict in state order (best first): exactly the order, keys and values
    (equal decimals) :meth:`BinanceBook.from_state` would build from the side's rows."""
    return {p: book[p] for p in sorted(book, reverse=descending)}


def _side_state(
    book: dict[Decimal, Decimal], descending: bool
) -> tuple[dict[Decimal, Decimal], list[list[str]]]:
    """:func:`_side_sorted` of the side and the :func:`_rows` of its items (``side_state`` in
    moonstream/native_src/sides.c is this, compiled: used when built; it finds the texts of exact
    ``Decimal`` objects by their identity, in a table of its own, before the memo)."""
    done = _compiled_side_state(book, descending, decimal_text_memo(), decimal_text_cached)
    if done is not NotImplemented:
        return done
    side = _side_sorted(book, descending)
    return side, _rows(side.items())


def _levels_from_json(rows: Sequence[Sequence[str]]) -> tuple[Level, ...]:
    dec = decimal_cached
    return tuple((dec(p), dec(q)) for p, q in rows)


def _diff_to_json(diff: DepthUpdate) -> list[Any]:
    return [
        diff.first_update_id,
        diff.last_update_id,
        diff.prev_last_update_id,
        diff.ts_ns,
        diff.recv_ns,
        _levels_json(diff.bids),
        _levels_json(diff.asks),
    ]


def _diff_from_json(row: Sequence[Any], symbol: str) -> DepthUpdate:
    first, last, prev, ts_ns, recv_ns, bids, asks = row
    return DepthUpdate(
        exchange=EXCHANGE,
        symbol=symbol,
        recv_ns=int(recv_ns),
        ts_ns=int(ts_ns),
        tx_ns=int(ts_ns),
        first_update_id=int(first),
        last_update_id=int(last),
        prev_last_update_id=int(prev),
        bids=_levels_from_json(bids),
        asks=_levels_from_json(asks),
    )


@dataclass
class BinanceBook:
    """One Binance USDT-M book and its sync status: ``empty`` (buffering diffs, no snapshot),
    ``bridging`` (snapshot installed, waiting for the diff with ``U <= lastUpdateId <= u``) or
    ``synced``. ``window`` receives level changes while synced (set by the step)."""

    symbol: str
    status: str = "empty"
    last_u: int | None = None
    last_t: int | None = None
    bids: dict[Decimal, Decimal] = field(default_factory=dict)
    asks: dict[Decimal, Decimal] = field(default_factory=dict)
    buffer: list[DepthUpdate] = field(default_factory=list)
    ever_synced: bool = False
    complete_range: tuple[Decimal, Decimal] | None = None
    recent: list[tuple[int, Decimal | None, Decimal | None]] = field(default_factory=list)
    pending: dict[int, tuple[Decimal, Decimal]] = field(default_factory=dict)
    counts: Counts = field(default_factory=Counts)
    window: WindowAccumulator | None = None
    mismatch_logged: bool = False
    # The best prices of each side, ascending (see :class:`_Tops`), for the dict object in
    # ``_tops_books``; rebuilt when that dict is replaced (snapshot, discard, state) or runs out.
    _tops: list[list[Decimal]] = field(default_factory=lambda: [[], []])
    _tops_books: list[dict[Decimal, Decimal] | None] = field(default_factory=lambda: [None, None])

    # --- state -------------------------------------------------------------------------------

    @classmethod
    def from_state(
        cls, data: dict[str, Any] | None, symbol: str, levels: SideDicts | None = None
    ) -> BinanceBook:
        """Rebuild from :meth:`to_state` output (None or ``{}`` gives an empty book).

        ``levels``: the sides :meth:`state_and_levels` returned with ``data`` (taken over, not
        copied), used instead of parsing ``data``'s rows; everything else is parsed from ``data``."""
        book = cls(symbol)
        if not data:
            return book
        book.status = str(data["status"])
        book.last_u = data["last_u"]
        book.last_t = data["last_t"]
        if levels is not None:
            book.bids, book.asks = levels
        else:
            dec = decimal_cached
            book.bids = {dec(p): dec(q) for p, q in data["bids"]}
            book.asks = {dec(p): dec(q) for p, q in data["asks"]}
        book.buffer = [_diff_from_json(row, symbol) for row in data["buffer"]]
        book.ever_synced = bool(data["ever_synced"])
        rng = data["complete_range"]
        book.complete_range = None if rng is None else (Decimal(rng[0]), Decimal(rng[1]))
        dec = decimal_cached  # Decimal(text), shared for equal texts (decimals are immutable)
        book.recent = [
            (int(u), None if b is None else dec(b), None if a is None else dec(a))
            for u, b, a in data["recent"]
        ]
        book.pending = {int(u): (Decimal(b), Decimal(a)) for u, b, a in data["pending"]}
        return book

    def to_state(self) -> dict[str, Any]:
        """Plain JSON: decimal strings, bids high to low, asks low to high."""
        return self._state(_side_json(self.bids, True), _side_json(self.asks, False))

    def state_and_levels(self) -> tuple[dict[str, Any], SideDicts]:
        """:meth:`to_state` and, for :meth:`from_state` of exactly that state, both sides as new
        dicts in the state's order (the book keeps its own dicts)."""
        bids, bid_rows = _side_state(self.bids, True)
        asks, ask_rows = _side_state(self.asks, False)
        return self._state(bid_rows, ask_rows), (bids, asks)

    def _state(self, bids: list[list[str]], asks: list[list[str]]) -> dict[str, Any]:
        def text(value: Decimal | None) -> str | None:
            return None if value is None else decimal_text_cached(value)

        rng = self.complete_range
        return {
            "status": self.status,
            "last_u": self.last_u,
            "last_t": self.last_t,
            "bids": bids,
            "asks": asks,
            "buffer": [_diff_to_json(diff) for diff in self.buffer],
            "ever_synced": self.ever_synced,
            "complete_range": None if rng is None else [decimal_text(rng[0]), decimal_text(rng[1])],
            "recent": [[u, text(b), text(a)] for u, b, a in self.recent],
            "pending": [[u, text(b), text(a)] for u, (b, a) in sorted(self.pending.items())],
        }

    # --- top of book -------------------------------------------------------------------------

    def best_bid(self) -> Decimal | None:
        tops = self._side_tops(0)
        return tops[-1] if tops else None

    def best_ask(self) -> Decimal | None:
        tops = self._side_tops(1)
        return tops[0] if tops else None

    def _side_tops(self, side: int) -> list[Decimal]:
        """The side's best prices in ascending order: the highest bids / lowest asks of the book,
        **all** of the book's prices at or beyond the list's far end (empty only for an empty
        side). Kept by :meth:`_set_levels`; rebuilt from the dict when it is not the dict's or has
        run out while the side still has levels."""
        book = self.bids if side == 0 else self.asks
        tops = self._tops[side]
        if self._tops_books[side] is not book or (not tops and book):
            # the TOPS_KEPT highest bids / lowest asks, ascending (prices are unique keys: what
            # heapq.nlargest / nsmallest and a sort give; one C-level sort of the mostly sorted keys,
            # by integer keys where built: sort_prices in moonstream/native_src/exact.c)
            ordered = list(book)
            if _compiled_sort_prices(ordered, False) is not True:
                ordered.sort()
            best = ordered[-TOPS_KEPT:] if side == 0 else ordered[:TOPS_KEPT]
            tops = self._tops[side] = best
            self._tops_books[side] = book
        return tops

    def live_until(self) -> int:
        """Exchange time until which the book counts as live: :data:`STALE_NS` after the last diff."""
        return -1 if self.last_t is None else self.last_t + STALE_NS

    def mid(self) -> Decimal | None:
        bid, ask = self.best_bid(), self.best_ask()
        return None if bid is None or ask is None else (bid + ask) / 2

    def _set_levels(self, t: int, side: int, levels: Sequence[Level]) -> None:
        """Apply one side's levels (quantity 0 deletes), keep the best prices (:meth:`_side_tops`)
        and integrate each changed level into the frame window while synced.

        The window part is :meth:`WindowAccumulator.changes` inlined (this is the engine's inner
        loop): same operations, same order. ``set_levels`` in moonstream/native_src/book.c is this loop
        compiled (used when built; it leaves shapes it does not handle to this code)."""
        if not levels:
            return
        bids = side == 0
        book = self.bids if bids else self.asks
        arrays = (
            self.window.side_arrays(side) if self.window is not None and self.status == "synced" else None
        )
        track = arrays is not None
        tops = self._side_tops(side)
        done = _compiled_set_levels(
            book, tops, levels, side, t, arrays, index_miss, self._side_tops, TOPS_KEPT, _ZERO
        )
        if done is not NotImplemented:
            return
        if arrays is not None:
            index, step, i_min, n, cur, last, acc = arrays
        for price, qty in levels:
            old = book.get(price)
            if qty:
                book[price] = qty
                if old is None:
                    # A new price goes into the best prices when within them (or the side was
                    # empty). About half are a new best, placed without a search.
                    if not tops:
                        tops.append(price)
                    elif bids:
                        if price > tops[-1]:
                            tops.append(price)
                        elif price > tops[0]:
                            insort(tops, price)
                        if len(tops) > 2 * TOPS_KEPT:
                            del tops[:TOPS_KEPT]
                    else:
                        if price < tops[0]:
                            tops.insert(0, price)
                        elif price < tops[-1]:
                            insort(tops, price)
                        if len(tops) > 2 * TOPS_KEPT:
                            del tops[TOPS_KEPT:]
                    old = _ZERO
                elif old == qty:
                    continue
            elif old is not None:
                del book[price]
                if tops and (price >= tops[0] if bids else price <= tops[-1]):
                    # about half the deleted prices are the best: removed without a search
                    if price == (tops[-1] if bids else tops[0]):
                        tops.pop(-1 if bids else 0)
                    else:
                        del tops[bisect_left(tops, price)]
                    if not tops and book:
                        tops = self._side_tops(side)  # ran out: rebuilt from the rest of the side
            else:
                continue
            if track:
                try:
                    j = index[price] - i_min
                except KeyError:
                    j = index_miss(index, step, price) - i_min
                if 0 <= j < n:
                    value = cur[j]
                    if value is None:
                        cur[j] = price * (qty - old)
                        last[j] = t
                    else:
                        since = last[j]
                        if since != t:
                            acc[j] += float(value) * (t - since)
                            last[j] = t
                        cur[j] = value + price * (qty - old)

    # --- events ------------------------------------------------------------------------------

    def on_snapshot(self, snap: DepthSnapshot, t: int) -> None:
        """A REST snapshot: installed unless already synced, then the buffer is replayed."""
        self.counts["snapshots_seen"] += 1
        if self.status == "synced":
            return  # our chained book is exact; a periodic snapshot adds nothing
        if self.status == "bridging" and self.last_u is not None and snap.last_update_id <= self.last_u:
            return  # keep the newer snapshot already waiting for its bridge
        self.status = "bridging"
        self.last_u = snap.last_update_id
        self.bids = {p: q for p, q in snap.bids if q}
        self.asks = {p: q for p, q in snap.asks if q}
        low = min(self.bids) if self.bids else None
        high = max(self.asks) if self.asks else None
        self.complete_range = None if low is None or high is None else (low, high)
        buffered, self.buffer = self.buffer, []
        for diff in buffered:
            self.on_diff(diff, t, replay=True)

    def on_diff(self, diff: DepthUpdate, t: int, *, replay: bool = False) -> None:
        """One diff at exchange time ``t`` (``replay``: from the buffer, already counted as seen)."""
        if not replay:
            self.counts["diffs_seen"] += 1
        last_u = self.last_u
        if (
            self.status == "synced"
            and last_u is not None
            and diff.prev_last_update_id == last_u
            and diff.last_update_id > last_u
        ):
            self._apply(diff, t)  # the common case: the next diff of the chain
            self._record_top(diff.last_update_id)
            return
        if self.status == "empty":
            self._buffer(diff, count=not replay)
            return
        assert self.last_u is not None
        if diff.last_update_id < self.last_u or (
            self.status == "synced" and diff.last_update_id == self.last_u
        ):
            self.counts["diffs_dropped_stale"] += 1  # older than the snapshot, or a duplicate
            return
        if self.status == "bridging":
            if diff.first_update_id > self.last_u:
                # The snapshot is older than every diff we hold: it can never be bridged.
                self.counts["bridge_failures"] += 1
                logger.warning(
                    "%s: snapshot %d cannot be bridged (next diff starts at U=%d); waiting for another",
                    self.symbol,
                    self.last_u,
                    diff.first_update_id,
                )
                self._discard_book()
                self._buffer(diff, count=not replay)
                return
            self._apply(diff, t)
            self.status = "synced"
            self.counts["snapshots_used"] += 1
            self.counts["syncs"] += 1
            if self.ever_synced:
                self.counts["resyncs"] += 1
            self.ever_synced = True
            self._open_window(t)
            self._record_top(diff.last_update_id)
            return
        if diff.prev_last_update_id != self.last_u:
            self.counts["gaps"] += 1
            logger.warning(
                "%s: depth gap: pu=%d but the last applied u=%d; book dropped until the next snapshot",
                self.symbol,
                diff.prev_last_update_id,
                self.last_u,
            )
            if self.window is not None:
                self.window.close_book(t)
            self._discard_book()
            self._buffer(diff, count=not replay)
            return
        self._apply(diff, t)
        self._record_top(diff.last_update_id)

    def on_ticker(self, ticker: BookTicker) -> None:
        """Compare a bookTicker with the book at the same update id, now or when that diff arrives."""
        u = ticker.update_id
        if self.status == "synced" and self.last_u is not None and u <= self.last_u:
            for applied_u, bid, ask in reversed(self.recent):
                if applied_u == u:
                    self._compare(u, bid, ask, ticker.bid_price, ticker.ask_price)
                    break
            return
        self.pending[u] = (ticker.bid_price, ticker.ask_price)
        if len(self.pending) > MAX_PENDING_TICKERS:
            del self.pending[min(self.pending)]

    # --- internals ---------------------------------------------------------------------------

    def _buffer(self, diff: DepthUpdate, *, count: bool) -> None:
        self.buffer.append(diff)
        if count:
            self.counts["diffs_buffered"] += 1
        if len(self.buffer) > MAX_BUFFERED_DIFFS:
            del self.buffer[0]
            self.counts["diffs_dropped_overflow"] += 1

    def _discard_book(self) -> None:
        self.status = "empty"
        self.last_u = None
        self.last_t = None
        self.bids, self.asks = {}, {}
        self.complete_range = None
        self.recent = []

    def _apply(self, diff: DepthUpdate, t: int) -> None:
        self._set_levels(t, 0, diff.bids)
        self._set_levels(t, 1, diff.asks)
        self.last_u = diff.last_update_id
        self.last_t = t
        self.counts["diffs_applied"] += 1

    def _open_window(self, t: int) -> None:
        mid = self.mid()
        if self.window is not None and mid is not None and mid > 0:
            self.window.open_book(t, self.bids, self.asks, mid)

    def _record_top(self, u: int) -> None:
        bids, asks = self._side_tops(0), self._side_tops(1)  # best_bid(), best_ask() inlined
        bid = bids[-1] if bids else None
        ask = asks[0] if asks else None
        recent = self.recent
        recent.append((u, bid, ask))
        if len(recent) > RECENT_APPLIED:
            del recent[0]
        pending = self.pending
        if pending:
            quote = pending.pop(u, None)
            if quote is not None:
                self._compare(u, bid, ask, quote[0], quote[1])
            for stale in [k for k in pending if k <= u]:
                del pending[stale]

    def _compare(
        self, u: int, bid: Decimal | None, ask: Decimal | None, t_bid: Decimal, t_ask: Decimal
    ) -> None:
        self.counts["integrity_compared"] += 1
        if bid == t_bid and ask == t_ask:
            return
        self._mismatch(u, bid, ask, t_bid, t_ask)

    def _mismatch(
        self, u: int, bid: Decimal | None, ask: Decimal | None, t_bid: Decimal, t_ask: Decimal
    ) -> None:
        """The rest of :meth:`_compare` when the book and the bookTicker differ."""
        self.counts["integrity_mismatches"] += 1
        if not self.mismatch_logged:
            self.mismatch_logged = True
            logger.warning(
                "%s: integrity mismatch at u=%d: book %s/%s, bookTicker %s/%s",
                self.symbol,
                u,
                bid,
                ask,
                t_bid,
                t_ask,
            )

    def trim(self) -> None:
        """Keep at most :data:`MAX_LEVELS_PER_SIDE` levels a side, nearest the top."""
        for side, book in ((0, self.bids), (1, self.asks)):
            extra = len(book) - MAX_LEVELS_PER_SIDE
            if extra > 0:
                far = sorted(book)[:extra] if side == 0 else sorted(book)[-extra:]
                for price in far:
                    del book[price]
                self.counts["levels_trimmed"] += extra


__all__ = [
    "EXCHANGE",
    "MAX_BUFFERED_DIFFS",
    "MAX_LEVELS_PER_SIDE",
    "MAX_PENDING_TICKERS",
    "RECENT_APPLIED",
    "STALE_NS",
    "BinanceBook",
]
