"""OKX v5 order-book reconstruction (``books`` 400 levels, ``books5``), pure, with the CRC32 checksum.

Rules (OKX v5 docs, "Order book channel": "Sequence ID" and "Checksum"; docs/engines.md "Bybit and
OKX"):

- a snapshot (``prevSeqId = -1``) replaces the book; its checksum is verified on its own levels;
- an update applies when its ``prevSeqId`` equals the last applied ``seqId`` ("The prevSeqId in the
  new message matches with seqId of the previous message"); ``seqId`` smaller than ``prevSeqId`` is
  the documented sequence reset after maintenance and chains normally; ``prevSeqId == seqId`` with
  no levels is the documented keep-alive ("seqId is the same as the last sent message and
  prevSeqId equals to seqId"): nothing changes;
- an update entirely behind the book (``prevSeqId <= seqId <= last``) is a late copy: dropped;
  any other ``prevSeqId`` is a **gap**;
- after every applied message the checksum is verified: CRC32 of the top 25 bids and asks
  interleaved as ``bidPx:bidSz:askPx:askSz:...`` (the longer side continues alone), as a signed
  32-bit integer, on the exchange's **original strings** (size in contracts, not our base units).
  A mismatch is a gap. A checksum of 0 or none is not verified (OKX announced that from June 2026
  the field "will always return 0"; ``books5`` carries none).

A gap is counted, logged, and the book is dropped (no frames) until the next snapshot in the
stream: OKX only sends one on (re)subscribe, which the collector does after a gap.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Context, Decimal
from typing import Any, ClassVar

from moonstream.jobs.engines.orderbook_bybit import LevelBook
from moonstream.jobs.engines.orderbook_frames import Change
from moonstream.jobs.events import BookDelta, BookSnapshot, Level

logger = logging.getLogger(__name__)

CHECKSUM_LEVELS = 25
"""Levels a side in OKX's checksum string."""

OKX_COUNTERS: tuple[str, ...] = (
    "snapshots_seen",
    "snapshots_used",
    "snapshots_rejected",
    "deltas_seen",
    "deltas_applied",
    "deltas_unsynced",
    "deltas_dropped_stale",
    "other_depth_ignored",
    "heartbeats",
    "seq_resets",
    "seq_breaks",
    "checksums_verified",
    "checksums_skipped",
    "checksum_mismatches",
    "gaps",
    "syncs",
    "resyncs",
    "resets",
)
"""OKX counters, per minute and as running totals (``orderbook_stats`` ``books.okx``).
``gaps`` = ``seq_breaks`` + ``checksum_mismatches``."""

_EXACT = Context(prec=80)
_ZERO = Decimal(0)
Texts = tuple[str, str]


def checksum_string(bids: Sequence[Texts], asks: Sequence[Texts]) -> str:
    """OKX's check string: the top :data:`CHECKSUM_LEVELS` of each side (best first), interleaved
    ``bid1px:bid1sz:ask1px:ask1sz:...``; where one side is shorter the other continues alone."""
    parts: list[str] = []
    for i in range(CHECKSUM_LEVELS):
        if i < len(bids):
            parts += bids[i]
        if i < len(asks):
            parts += asks[i]
    return ":".join(parts)


def okx_checksum(bids: Sequence[Texts], asks: Sequence[Texts]) -> int:
    """CRC32 (zlib's, IEEE 802.3) of :func:`checksum_string`, as a signed 32-bit integer."""
    crc = zlib.crc32(checksum_string(bids, asks).encode("ascii"))
    return crc - (1 << 32) if crc >= 1 << 31 else crc


def level_texts(
    levels: Sequence[Level], texts: Sequence[Texts] | None, contract_value: Decimal
) -> list[Texts]:
    """The exchange's strings of ``levels``: ``texts`` when the event kept them, else rebuilt as
    ``format(price, "f")`` and ``format(qty / contract_value, "f")`` (exact: the normalizer
    multiplied exactly, so the quotient has the exponent of the size OKX sent)."""
    if texts is not None and len(texts) == len(levels):
        return [(p, q) for p, q in texts]
    return [(format(p, "f"), format(_EXACT.divide(q, contract_value), "f")) for p, q in levels]


@dataclass
class OkxBook(LevelBook):
    """One OKX v5 book, chained by ``seqId``/``prevSeqId`` and verified by checksum. ``texts`` keeps
    each resting level's original ``(price, size in contracts)`` strings for the checksum."""

    EXCHANGE: ClassVar[str] = "okx"
    COUNTERS: ClassVar[tuple[str, ...]] = OKX_COUNTERS
    REUSABLE_LEVELS: ClassVar[bool] = False
    """The state keeps OKX's size strings and the book's contract value; a live quantity (from an
    update's own contract value) need not equal what :meth:`from_state` rebuilds: always parsed."""

    contract_value: Decimal | None = None
    texts: tuple[dict[Decimal, Texts], dict[Decimal, Texts]] = field(default_factory=lambda: ({}, {}))

    # --- state: levels are kept as OKX sent them (contracts), base units rebuilt exactly ---------

    def _levels_to_state(self) -> dict[str, Any]:
        ct = self.contract_value
        return {
            "contract_value": None if ct is None else format(ct, "f"),
            "bids": [list(self.texts[0][p]) for p in sorted(self.bids, reverse=True)],
            "asks": [list(self.texts[1][p]) for p in sorted(self.asks)],
        }

    def _levels_from_state(self, data: dict[str, Any]) -> None:
        ct_text = data["contract_value"]
        self.contract_value = None if ct_text is None else Decimal(ct_text)
        self.texts = ({}, {})
        for side, rows in ((0, data["bids"]), (1, data["asks"])):
            book = self.bids if side == 0 else self.asks
            for price_text, size_text in rows:
                assert self.contract_value is not None
                price = Decimal(price_text)
                book[price] = _EXACT.multiply(Decimal(size_text), self.contract_value)
                self.texts[side][price] = (price_text, size_text)

    # --- checksum ------------------------------------------------------------------------------

    def checksum(self) -> int:
        """Our book's checksum (OKX's algorithm on the kept original strings)."""
        return okx_checksum(
            [self.texts[0][p] for p in self.top(0, CHECKSUM_LEVELS)],
            [self.texts[1][p] for p in self.top(1, CHECKSUM_LEVELS)],
        )

    def _verified(self, expected: int | None, t: int, update_id: int) -> bool:
        """Check the book against the message's checksum; a mismatch is a gap (book dropped)."""
        if not expected:
            self.counts["checksums_skipped"] += 1
            return True
        self.counts["checksums_verified"] += 1
        ours = self.checksum()
        if ours == expected:
            return True
        self.counts["checksum_mismatches"] += 1
        self.counts["gaps"] += 1
        logger.warning(
            "%s: okx checksum mismatch at seqId=%d: book %d, exchange %d; book dropped until a snapshot",
            self.symbol,
            update_id,
            ours,
            expected,
        )
        self._discard(t)
        return False

    # --- mutations -----------------------------------------------------------------------------

    def _set_text_level(self, t: int, side: int, price: Decimal, qty: Decimal, text: Texts) -> None:
        self._set_level(t, side, price, qty)  # a deletion also drops the strings
        if qty:
            self.texts[side][price] = text

    def _set_level(self, t: int, side: int, price: Decimal, qty: Decimal) -> None:
        super()._set_level(t, side, price, qty)
        if not qty:
            self.texts[side].pop(price, None)

    def _set_levels(self, t: int, side: int, levels: Sequence[Level]) -> None:
        super()._set_levels(t, side, levels)
        texts = self.texts[side]
        for price, qty in levels:
            if not qty:
                texts.pop(price, None)

    def _load_levels(self, snap: BookSnapshot) -> None:
        self.contract_value = snap.contract_value
        self.texts = ({}, {})
        for side, levels, texts in ((0, snap.bids, snap.bid_texts), (1, snap.asks, snap.ask_texts)):
            book = self.bids if side == 0 else self.asks
            for (price, qty), text in zip(
                levels, level_texts(levels, texts, snap.contract_value), strict=True
            ):
                if qty:
                    book[price] = qty
                    self.texts[side][price] = text

    def _apply_levels(self, delta: BookDelta, t: int) -> None:
        """:meth:`_set_text_level` for each level in order, the window's changes handed over at once."""
        window = self.window if self.status == "synced" else None
        for side, levels, texts in ((0, delta.bids, delta.bid_texts), (1, delta.asks, delta.ask_texts)):
            book, side_texts = (self.bids, self.texts[0]) if side == 0 else (self.asks, self.texts[1])
            changes: list[Change] = []
            for (price, qty), text in zip(
                levels, level_texts(levels, texts, delta.contract_value), strict=True
            ):
                old = book.get(price, _ZERO)
                if qty:
                    book[price] = qty
                    side_texts[price] = text
                else:
                    book.pop(price, None)
                    side_texts.pop(price, None)
                if old != qty:
                    changes.append((price, old, qty))
            if window is not None and changes:
                window.changes(t, side, changes)

    def _discard(self, t: int) -> None:
        super()._discard(t)
        self.texts = ({}, {})

    # --- events --------------------------------------------------------------------------------

    def on_snapshot(self, snap: BookSnapshot, t: int) -> None:
        """A snapshot replaces the book when its own checksum holds."""
        self.counts["snapshots_seen"] += 1
        if not self._follows(snap.depth):
            return
        if snap.checksum:
            bids = sorted(
                zip(snap.bids, level_texts(snap.bids, snap.bid_texts, snap.contract_value), strict=True),
                reverse=True,
            )
            asks = sorted(
                zip(snap.asks, level_texts(snap.asks, snap.ask_texts, snap.contract_value), strict=True)
            )
            ours = okx_checksum(
                [text for (_, qty), text in bids if qty][:CHECKSUM_LEVELS],
                [text for (_, qty), text in asks if qty][:CHECKSUM_LEVELS],
            )
            self.counts["checksums_verified"] += 1
            if ours != snap.checksum:
                self.counts["checksum_mismatches"] += 1
                self.counts["gaps"] += 1
                self.counts["snapshots_rejected"] += 1
                logger.warning(
                    "%s: okx snapshot seqId=%d fails its checksum (%d, exchange %d); rejected",
                    self.symbol,
                    snap.update_id,
                    ours,
                    snap.checksum,
                )
                self._discard(t)
                return
        else:
            self.counts["checksums_skipped"] += 1
        self._install(snap, t)

    def on_delta(self, delta: BookDelta, t: int) -> None:
        """An update: chained by ``prevSeqId``, then verified by checksum."""
        self.counts["deltas_seen"] += 1
        if self.status != "synced" or self.last_id is None:
            self.counts["deltas_unsynced"] += 1
            return
        if delta.depth != self.depth:
            self.counts["other_depth_ignored"] += 1
            return
        prev, seq, last = delta.prev_update_id, delta.update_id, self.last_id
        if prev != last:
            if prev is not None and prev < last and prev <= seq <= last:
                self.counts["deltas_dropped_stale"] += 1  # a late copy of a message already applied
                return
            self.counts["seq_breaks"] += 1
            self.counts["gaps"] += 1
            logger.warning(
                "%s: okx sequence gap: prevSeqId=%s, last seqId=%d; book dropped until the next snapshot",
                self.symbol,
                prev,
                last,
            )
            self._discard(t)
            return
        if seq == prev and not delta.bids and not delta.asks:
            self.counts["heartbeats"] += 1  # keep-alive: the book is live and unchanged
            self.last_t = t
            self._verified(delta.checksum, t, seq)
            return
        if seq < prev:
            self.counts["seq_resets"] += 1  # documented reset after maintenance: chains normally
        self._apply(delta, t)
        self._verified(delta.checksum, t, seq)


__all__ = ["CHECKSUM_LEVELS", "OKX_COUNTERS", "OkxBook", "checksum_string", "level_texts", "okx_checksum"]
