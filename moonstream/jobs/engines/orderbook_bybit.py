"""Bybit v5 order-book reconstruction (``orderbook.{depth}.{symbol}``), pure, and the shared base of
the websocket snapshot/delta books (:class:`LevelBook`, also used by the OKX book).

Rules (Bybit v5 docs, "WebSocket Stream / Public / Orderbook", docs/engines.md "Bybit and OKX"):

- "Once you have subscribed successfully, you will receive a snapshot. [...] If you receive a new
  snapshot message, you will have to reset your local orderbook": every snapshot replaces the book;
- ``u`` "Update ID. Is a sequence. Occasionally, you'll receive "u"=1, which is a snapshot data due
  to the restart of the service. So please overwrite your local orderbook": a delta must carry
  ``u == last u + 1``; ``u <= last u`` is a late copy (dropped, counted); a larger ``u`` is a gap
  (counted, the book is dropped until the next snapshot in the stream); ``u == 1`` marks a service
  restart (a snapshot follows; a *delta* with ``u == 1`` drops the book and waits for it);
- books of different depths are different books: the book follows the deepest stream it has seen.

State is plain JSON (:meth:`LevelBook.to_state`); no I/O, no clock.
"""

from __future__ import annotations

import heapq
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, ClassVar, Self

from moonstream.jobs.engines.orderbook_frames import (
    Change,
    SideDicts,
    WindowAccumulator,
    decimal_text_cached,
)
from moonstream.jobs.events import BookDelta, BookSnapshot, Level

logger = logging.getLogger(__name__)

STALE_NS = 10 * 1_000_000_000
"""As for Binance: a synced book counts as live for 10 s of exchange time after its last message."""

_ZERO = Decimal(0)


@dataclass
class LevelBook:
    """A depth-limited book built from in-band snapshots and deltas (Bybit, OKX).

    ``status`` is ``empty`` (no snapshot, or dropped after a gap) or ``synced``. ``depth`` is the
    number of levels of the stream the book follows; after every message each side is cut to it
    (a level that leaves the exchange's top ``depth`` is not deleted by the exchange). ``window``
    receives level changes while synced (set by the step). ``counts`` are this minute's counters,
    ``totals`` the running totals since the state began (both plain ints).
    """

    EXCHANGE: ClassVar[str] = ""
    COUNTERS: ClassVar[tuple[str, ...]] = ()
    REUSABLE_LEVELS: ClassVar[bool] = True
    """Whether the level dicts of :meth:`state_and_levels` equal what :meth:`from_state` parses from
    its state (decimal texts of the exact values), so they may stand in for the parse."""

    symbol: str
    status: str = "empty"
    depth: int | None = None
    last_id: int | None = None
    last_seq: int | None = None
    last_t: int | None = None
    ever_synced: bool = False
    bids: dict[Decimal, Decimal] = field(default_factory=dict)
    asks: dict[Decimal, Decimal] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)
    totals: Counter[str] = field(default_factory=Counter)
    window: WindowAccumulator | None = None

    # --- state -------------------------------------------------------------------------------

    @classmethod
    def from_state(cls, data: dict[str, Any] | None, symbol: str, levels: SideDicts | None = None) -> Self:
        """Rebuild from :meth:`to_state` output (None or ``{}`` gives an empty book).

        ``levels``: the sides :meth:`state_and_levels` returned with ``data`` (taken over, not
        copied), used instead of parsing ``data``'s levels; everything else is parsed from ``data``."""
        book = cls(symbol)
        if data:
            book.status = str(data["status"])
            book.depth = data["depth"]
            book.last_id = data["last_id"]
            book.last_seq = data["last_seq"]
            book.last_t = data["last_t"]
            book.ever_synced = bool(data["ever_synced"])
            book.totals = Counter({k: int(v) for k, v in data["totals"].items()})
            if levels is not None and cls.REUSABLE_LEVELS:
                book.bids, book.asks = levels
            else:
                book._levels_from_state(data)
        return book

    def to_state(self) -> dict[str, Any]:
        """Plain JSON; levels bids high to low, asks low to high."""
        return self._state(self._levels_to_state())

    def state_and_levels(self) -> tuple[dict[str, Any], SideDicts | None]:
        """:meth:`to_state` and, when :attr:`REUSABLE_LEVELS`, both sides as new dicts in the
        state's order, for :meth:`from_state` of exactly that state (the book keeps its own)."""
        if not self.REUSABLE_LEVELS:
            return self.to_state(), None
        bids = dict(sorted(self.bids.items(), reverse=True))
        asks = dict(sorted(self.asks.items()))
        text = decimal_text_cached
        rows = {
            "bids": [[text(p), text(q)] for p, q in bids.items()],
            "asks": [[text(p), text(q)] for p, q in asks.items()],
        }
        return self._state(rows), (bids, asks)

    def _state(self, levels: dict[str, Any]) -> dict[str, Any]:
        return {
            "status": self.status,
            "depth": self.depth,
            "last_id": self.last_id,
            "last_seq": self.last_seq,
            "last_t": self.last_t,
            "ever_synced": self.ever_synced,
            **levels,
            "totals": {k: self.totals.get(k, 0) for k in self.COUNTERS},
        }

    def _levels_to_state(self) -> dict[str, Any]:
        text = decimal_text_cached
        return {
            "bids": [[text(p), text(q)] for p, q in sorted(self.bids.items(), reverse=True)],
            "asks": [[text(p), text(q)] for p, q in sorted(self.asks.items())],
        }

    def _levels_from_state(self, data: dict[str, Any]) -> None:
        self.bids = {Decimal(p): Decimal(q) for p, q in data["bids"]}
        self.asks = {Decimal(p): Decimal(q) for p, q in data["asks"]}

    def end_minute(self) -> dict[str, int]:
        """This minute's counters (every one of :attr:`COUNTERS`), added to the totals."""
        minute = {k: self.counts.get(k, 0) for k in self.COUNTERS}
        self.totals.update(minute)
        return minute

    # --- top of book -------------------------------------------------------------------------

    def best_bid(self) -> Decimal | None:
        return max(self.bids) if self.bids else None

    def best_ask(self) -> Decimal | None:
        return min(self.asks) if self.asks else None

    def mid(self) -> Decimal | None:
        bid, ask = self.best_bid(), self.best_ask()
        return None if bid is None or ask is None else (bid + ask) / 2

    def live_until(self) -> int:
        """Exchange time until which the book counts as live: :data:`STALE_NS` after the last message."""
        return -1 if self.last_t is None else self.last_t + STALE_NS

    def top(self, side: int, n: int) -> list[Decimal]:
        """The best ``n`` prices of ``side`` (0 bids high to low, 1 asks low to high); prices are
        unique, so this is the head of the sorted side."""
        if side == 0:
            return heapq.nlargest(n, self.bids)
        return heapq.nsmallest(n, self.asks)

    # --- mutations ---------------------------------------------------------------------------

    def _set_level(self, t: int, side: int, price: Decimal, qty: Decimal) -> None:
        book = self.bids if side == 0 else self.asks
        old = book.get(price, _ZERO)
        if qty:
            book[price] = qty
        elif price in book:
            del book[price]
        if self.window is not None and self.status == "synced" and old != qty:
            self.window.level(t, side, price, old, qty)

    def _truncate(self, t: int) -> None:
        """Cut each side to :attr:`depth` levels (the farthest from the top go, in ascending price
        order)."""
        if self.depth is None:
            return
        for side, book in ((0, self.bids), (1, self.asks)):
            extra = len(book) - self.depth
            if extra > 0:
                if extra <= 8:
                    far = heapq.nsmallest(extra, book) if side == 0 else heapq.nlargest(extra, book)[::-1]
                else:
                    far = sorted(book)[:extra] if side == 0 else sorted(book)[-extra:]
                self._set_levels(t, side, [(price, _ZERO) for price in far])

    def _open_window(self, t: int) -> None:
        mid = self.mid()
        if self.window is not None and mid is not None and mid > 0:
            self.window.open_book(t, self.bids, self.asks, mid)

    def _close_window(self, t: int) -> None:
        if self.window is not None and self.window.active:
            self.window.close_book(max(self.window.since, t))

    def _install(self, snap: BookSnapshot, t: int) -> None:
        """Replace the whole book by ``snap`` (the frame window is closed and reopened at ``t``)."""
        was_synced = self.status == "synced"
        self._close_window(t)
        self.depth = snap.depth
        self.bids, self.asks = {}, {}
        self._load_levels(snap)
        self.last_id = snap.update_id
        self.last_seq = snap.seq
        self.last_t = t
        self.status = "synced"
        self.counts["snapshots_used"] += 1
        if was_synced:
            self.counts["resets"] += 1
        else:
            self.counts["syncs"] += 1
            if self.ever_synced:
                self.counts["resyncs"] += 1
        self.ever_synced = True
        self._truncate(t)
        self._open_window(t)

    def _load_levels(self, snap: BookSnapshot) -> None:
        self.bids = {p: q for p, q in snap.bids if q}
        self.asks = {p: q for p, q in snap.asks if q}

    def _apply(self, delta: BookDelta, t: int) -> None:
        self._apply_levels(delta, t)
        self._truncate(t)
        self.last_id = delta.update_id
        self.last_seq = delta.seq
        self.last_t = t
        self.counts["deltas_applied"] += 1

    def _apply_levels(self, delta: BookDelta, t: int) -> None:
        self._set_levels(t, 0, delta.bids)
        self._set_levels(t, 1, delta.asks)

    def _set_levels(self, t: int, side: int, levels: Sequence[Level]) -> None:
        """:meth:`_set_level` for each level in order, the window's changes handed over at once."""
        book = self.bids if side == 0 else self.asks
        window = self.window if self.status == "synced" else None
        changes: list[Change] = []
        for price, qty in levels:
            old = book.get(price, _ZERO)
            if qty:
                book[price] = qty
            elif price in book:
                del book[price]
            if old != qty:
                changes.append((price, old, qty))
        if window is not None and changes:
            window.changes(t, side, changes)

    def _discard(self, t: int) -> None:
        """Drop the book (a gap, a restart): no frames from it until the next snapshot."""
        self._close_window(t)
        self.status = "empty"
        self.last_id = None
        self.last_seq = None
        self.last_t = None
        self.bids, self.asks = {}, {}

    def on_snapshot(self, snap: BookSnapshot, t: int) -> None:
        """A snapshot of the exchange's stream at exchange time ``t`` (see the subclasses)."""
        raise NotImplementedError

    def on_delta(self, delta: BookDelta, t: int) -> None:
        """A delta of the exchange's stream at exchange time ``t`` (see the subclasses)."""
        raise NotImplementedError

    def _follows(self, depth: int) -> bool:
        """Whether a snapshot of ``depth`` may be installed: any while not synced, else one of the
        stream the book follows or of a deeper one (the book follows the deepest stream)."""
        if self.depth is None or depth == self.depth or self.status != "synced":
            return True
        if depth > self.depth:
            return True
        self.counts["other_depth_ignored"] += 1
        return False


BYBIT_COUNTERS: tuple[str, ...] = (
    "snapshots_seen",
    "snapshots_used",
    "deltas_seen",
    "deltas_applied",
    "deltas_unsynced",
    "deltas_dropped_stale",
    "other_depth_ignored",
    "gaps",
    "syncs",
    "resyncs",
    "resets",
    "service_restarts",
)
"""Bybit counters, per minute and as running totals (``orderbook_stats`` ``books.bybit``)."""


@dataclass
class BybitBook(LevelBook):
    """One Bybit v5 linear book (``orderbook.{depth}``), chained by ``u``."""

    EXCHANGE: ClassVar[str] = "bybit"
    COUNTERS: ClassVar[tuple[str, ...]] = BYBIT_COUNTERS

    def on_snapshot(self, snap: BookSnapshot, t: int) -> None:
        """A snapshot always resets the book ("you will have to reset your local orderbook")."""
        self.counts["snapshots_seen"] += 1
        if not self._follows(snap.depth):
            return
        if snap.update_id == 1:
            self.counts["service_restarts"] += 1  # "u"=1: snapshot after a restart of the service
        self._install(snap, t)

    def on_delta(self, delta: BookDelta, t: int) -> None:
        """A delta must carry ``u == last u + 1``."""
        self.counts["deltas_seen"] += 1
        if self.status != "synced" or self.last_id is None:
            self.counts["deltas_unsynced"] += 1  # no snapshot yet (or dropped): nothing to apply to
            return
        if delta.depth != self.depth:
            self.counts["other_depth_ignored"] += 1
            return
        u = delta.update_id
        if u == self.last_id + 1:
            self._apply(delta, t)
            return
        if u == 1:
            self.counts["service_restarts"] += 1
            logger.warning(
                "%s: bybit u=1 in a delta (service restart); book dropped until the snapshot", self.symbol
            )
            self._discard(t)
            return
        if u <= self.last_id:
            self.counts["deltas_dropped_stale"] += 1  # a late or duplicate copy
            return
        self.counts["gaps"] += 1
        logger.warning(
            "%s: bybit orderbook gap: u=%d after u=%d; book dropped until the next snapshot",
            self.symbol,
            u,
            self.last_id,
        )
        self._discard(t)


def levels_of(book: LevelBook, side: int, n: int) -> Sequence[Level]:
    """The best ``n`` levels of ``side`` as ``(price, qty)`` (tests, stats)."""
    levels = book.bids if side == 0 else book.asks
    return [(p, levels[p]) for p in book.top(side, n)]


__all__ = ["BYBIT_COUNTERS", "STALE_NS", "BybitBook", "LevelBook", "levels_of"]
