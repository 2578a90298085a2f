"""Order-book frames: 30-second, time-weighted resting liquidity on a ±10 % price grid.

Pure helpers used by :mod:`moonstream.jobs.engines.orderbook` (docs/engines.md, "Order book"):

- :func:`make_grid` builds a window's price grid **by integer index**: bucket ``j`` starts at
  ``(i_min + j) * step`` computed exactly in :class:`~decimal.Decimal`, never by repeated addition;
- :class:`WindowAccumulator` integrates the USD value resting in each bucket over the exchange time
  during which the book was synced, and :meth:`WindowAccumulator.finish` turns the integral into a
  :class:`Frame` (time-weighted average USD per bucket, u8 intensities, p50/p95, totals).

A frame is the **time-weighted average** of the resting size over the synced part of its 30 s window:
a level that rests for 3 s of 30 counts a tenth of one that rests all window, so a flashed order does
not paint a full-intensity cell, and the value does not depend on where in the window a snapshot of
the book happened to be taken.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np
import numpy.typing as npt

from moonstream.jobs.engines.market import decimal_text
from moonstream.jobs.engines.quantile import percentile
from moonstream.native import compiled

logger = logging.getLogger(__name__)

WINDOW_NS = 30 * 1_000_000_000
"""Frame window length: 30 s of exchange time; a minute has the :00 and the :30 window."""
RANGE_PCT = Decimal("0.10")
"""The grid spans mid × (1 ± RANGE_PCT), widened to whole buckets."""
MAX_BUCKETS = 1000
"""The binary record holds at most 1,000 buckets a side (docs/formats.md)."""
SYMBOL_STEPS: dict[str, Decimal] = {"BTC": Decimal("20"), "ETH": Decimal("1.0"), "SOL": Decimal("0.10")}
"""Bucket steps of the configured symbols (DESIGN §5); other symbols use :func:`default_step`."""
DEFAULT_STEP_TARGET = Decimal("0.0004")
"""Default rule: the smallest 1/2/5 × 10^k step >= mid × 0.0004, i.e. about 500 buckets over ±10 %."""

FloatArray = npt.NDArray[np.float64]
U8Array = npt.NDArray[np.uint8]
Change = tuple[Decimal, Decimal, Decimal]
"""A level change ``(price, old_qty, new_qty)`` (see :meth:`WindowAccumulator.changes`)."""
SideDicts = tuple[dict[Decimal, Decimal], dict[Decimal, Decimal]]
"""A book's bids and asks, price to quantity (what a book's ``state_and_levels`` hands over)."""

_ZERO = Decimal(0)
_compiled_open_side = compiled("open_side")
_CACHE_LIMIT = 1 << 18
"""Entries a memo below may hold before it is emptied (bounds memory on very long runs)."""
_INDEX_MEMO: dict[Decimal, dict[Decimal, int]] = {}
_TEXT_MEMO: dict[Decimal, str] = {}
_DECIMAL_MEMO: dict[str, Decimal] = {}


def price_index(step: Decimal) -> dict[Decimal, int]:
    """A memo ``price -> int(price // step)`` for one step (shared by every grid with that step).

    A plain dict, so the inner loops' lookups take the interpreter's fast path; a miss raises
    ``KeyError`` and is filled by :func:`index_miss`. The absolute index depends only on the two
    values, so a memo is exact: pure caching, no result ever depends on what is cached."""
    memo = _INDEX_MEMO.get(step)
    if memo is None:
        if len(_INDEX_MEMO) > 64:
            _INDEX_MEMO.clear()
        memo = _INDEX_MEMO[step] = {}
    elif len(memo) > _CACHE_LIMIT:
        memo.clear()
    return memo


def index_miss(index: dict[Decimal, int], step: Decimal, price: Decimal) -> int:
    """``int(price // step)``, stored into ``index`` (the :func:`price_index` memo of ``step``)."""
    i = index[price] = int(price // step)
    return i


def decimal_text_cached(value: Decimal) -> str:
    """:func:`~moonstream.jobs.engines.market.decimal_text`, memoized (state serialization).

    That text depends only on the decimal's value (trailing zeros are removed, ``0`` for zero), and
    equal values are equal dict keys, so the memo returns exactly what the function would."""
    text = _TEXT_MEMO.get(value)
    if text is None:
        if len(_TEXT_MEMO) > _CACHE_LIMIT:
            _TEXT_MEMO.clear()
        text = _TEXT_MEMO[value] = decimal_text(value)
    return text


def decimal_text_memo() -> dict[Decimal, str]:
    """The memo behind :func:`decimal_text_cached` (read-only use: fast lookups in a loop)."""
    return _TEXT_MEMO


def decimal_cached(text: str) -> Decimal:
    """``Decimal(text)``, memoized by the text (state loading): decimals are immutable and the
    same text always gives the same decimal, so sharing one object is exact."""
    value = _DECIMAL_MEMO.get(text)
    if value is None:
        if len(_DECIMAL_MEMO) > _CACHE_LIMIT:
            _DECIMAL_MEMO.clear()
        value = _DECIMAL_MEMO[text] = Decimal(text)
    return value


def default_step(mid: Decimal) -> Decimal:
    """The smallest ``m × 10**k`` (m in 1, 2, 5) that is at least ``mid × DEFAULT_STEP_TARGET``."""
    if mid <= 0:
        raise ValueError("mid must be positive")
    target = mid * DEFAULT_STEP_TARGET
    exponent = target.adjusted()  # floor(log10(target))
    for mantissa in (1, 2, 5, 10):
        candidate = Decimal(mantissa) * Decimal(10) ** exponent
        if candidate >= target:
            return candidate
    raise AssertionError("unreachable: 10 × 10**k >= target")  # pragma: no cover


def base_step(symbol: str, mid: Decimal) -> Decimal:
    """The symbol's configured step, else :func:`default_step` of the mid."""
    return SYMBOL_STEPS.get(symbol, default_step(mid))


@dataclass(frozen=True, slots=True)
class Grid:
    """A price grid: bucket ``j`` (0 <= j < n) covers ``[(i_min + j) × step, (i_min + j + 1) × step)``."""

    step: Decimal
    i_min: int
    n: int

    def price(self, j: int) -> Decimal:
        """Exact lower edge of bucket ``j``: ``(i_min + j) × step`` (by index, no accumulation)."""
        return (self.i_min + j) * self.step

    @property
    def price_min(self) -> Decimal:
        return self.price(0)

    @property
    def price_max(self) -> Decimal:
        """Lower edge of the last bucket (so ``n = (price_max - price_min) / step + 1``)."""
        return self.price(self.n - 1)

    def prices(self) -> FloatArray:
        """Every bucket's lower edge as float64, each converted from its exact decimal value."""
        return np.array([float(self.price(j)) for j in range(self.n)], dtype=np.float64)

    def bucket(self, price: Decimal) -> int | None:
        """The bucket holding ``price``, or None outside the grid."""
        j = int(price // self.step) - self.i_min
        return j if 0 <= j < self.n else None


def make_grid(mid: Decimal, step: Decimal) -> Grid:
    """The grid over ``mid × (1 ± RANGE_PCT)`` with ``step``; when that needs more than
    :data:`MAX_BUCKETS` buckets the step is multiplied by the smallest integer k that fits."""
    if mid <= 0 or step <= 0:
        raise ValueError("mid and step must be positive")
    low = mid * (1 - RANGE_PCT)
    high = mid * (1 + RANGE_PCT)
    k = 1
    while True:
        grid_step = step * k
        i_min = int(low // grid_step)
        n = int(high // grid_step) - i_min + 1
        if n <= MAX_BUCKETS:
            return Grid(grid_step, i_min, n)
        k = max(k + 1, math.ceil(k * n / MAX_BUCKETS))


@dataclass(frozen=True)
class Frame:
    """One 30 s frame. ``bid_usd``/``ask_usd`` are time-weighted average USD per bucket; the u8
    intensities are ``bid_usd``/``ask_usd`` scaled by ``norm_p95`` (see :func:`intensities`)."""

    start_ns: int
    grid: Grid
    coverage_ns: int
    bid_usd: FloatArray
    ask_usd: FloatArray
    bid_u8: U8Array
    ask_u8: U8Array
    norm_p50: float
    norm_p95: float
    total_bid_usd: float
    total_ask_usd: float

    def header(self) -> dict[str, float]:
        """The binary header's numbers (without ``src`` and ``n_buckets``), as floats."""
        return {
            "ts": self.start_ns / 1e9,
            "price_min": float(self.grid.price_min),
            "price_max": float(self.grid.price_max),
            "step": float(self.grid.step),
            "norm_p50": self.norm_p50,
            "norm_p95": self.norm_p95,
            "total_bid": self.total_bid_usd,
            "total_ask": self.total_ask_usd,
        }

    def document(self) -> dict[str, Any]:
        """JSON-ready: the header, the exact grid, coverage and both intensity rows."""
        return {
            **self.header(),
            "step_text": format(self.grid.step, "f"),
            "n_buckets": self.grid.n,
            "coverage_s": self.coverage_ns / 1e9,
            "bid": self.bid_u8.tolist(),
            "ask": self.ask_u8.tolist(),
        }


def intensities(bid: FloatArray, ask: FloatArray) -> tuple[U8Array, U8Array, float, float]:
    """u8 intensities of both sides on one scale, with the p50 and p95 of the non-zero values.

    ``0`` means nothing rests in the bucket; otherwise ``clip(rint(255 × v / p95), 1, 255)``, so any
    resting size is visible and the top 5 % of buckets saturate. Percentiles are numpy's linear
    interpolation over the non-zero buckets of both sides together; both are 0 for an empty frame.
    """
    both = np.concatenate([bid, ask])
    nonzero = both[both > 0]
    if nonzero.size == 0:
        return np.zeros(bid.size, np.uint8), np.zeros(ask.size, np.uint8), 0.0, 0.0
    ordered = sorted(nonzero.tolist())
    p50, p95 = percentile(ordered, 50.0), percentile(ordered, 95.0)

    def scale(values: FloatArray) -> U8Array:
        scaled = np.clip(np.rint(values * (255.0 / p95)), 1, 255)
        return np.where(values > 0, scaled, 0).astype(np.uint8)

    return scale(bid), scale(ask), p50, p95


SideArrays = tuple[dict[Decimal, int], Decimal, int, int, list[Decimal | None], list[int], list[float]]
"""One side of an active window, for a book's inner loop (:meth:`WindowAccumulator.side_arrays`):
``(index memo, step, i_min, n, current values, last change times, integrals)``; a price missing
from the memo is filled by :func:`index_miss`."""


class WindowAccumulator:
    """Integrates resting USD per bucket over one window ``[start_ns, end_ns)`` of exchange time.

    The engine calls :meth:`open_book` when the book is (or becomes) synced inside the window,
    :meth:`level` / :meth:`changes` for every level change while synced, :meth:`close_book` when it
    loses sync, and :meth:`finish` at the window end. The grid is fixed at the first
    :meth:`open_book` of the window (the mid at that moment). Current bucket values are exact
    decimals, integrals are float USD×ns that only ever add non-negative terms, so an empty bucket
    stays exactly 0.

    Per bucket ``j`` and side: ``_cur[side][j]`` is the exact resting USD (None: the bucket has not
    held a level since the book was opened), ``_last[side][j]`` the time of its last change and
    ``_acc[side][j]`` its integral. A bucket's integral gains ``float(value) × (t - last)`` at every
    change at a new ``t``, in time order, and at the close; a second change at the same ``t`` adds
    nothing (that term would be an exact ``+0.0``).
    """

    def __init__(self, symbol: str, start_ns: int, end_ns: int) -> None:
        self.symbol = symbol
        self.start_ns = start_ns
        self.end_ns = end_ns
        self.grid: Grid | None = None
        self.active = False
        self.coverage_ns = 0
        self.since = 0
        self._cur: tuple[list[Decimal | None], list[Decimal | None]] = ([], [])
        self._last: tuple[list[int], list[int]] = ([], [])
        self._acc: tuple[list[float], list[float]] = ([], [])
        self._index: dict[Decimal, int] = {}
        self._arrays: tuple[SideArrays, SideArrays] | None = None  # fixed with the grid

    def open_book(
        self, t: int, bids: dict[Decimal, Decimal], asks: dict[Decimal, Decimal], mid: Decimal
    ) -> None:
        """Start integrating at ``t`` from the full book (``mid`` fixes the grid if not yet set)."""
        if self.active:
            return
        if self.grid is None:
            grid = self.grid = make_grid(mid, base_step(self.symbol, mid))
            self._index = price_index(grid.step)
            self._acc = ([0.0] * grid.n, [0.0] * grid.n)
            self._arrays = (self._side_arrays(0), self._side_arrays(1))
        grid = self.grid
        index, step, i_min, n = self._index, grid.step, grid.i_min, grid.n
        for side, levels in enumerate((bids, asks)):
            # ``open_side`` in moonstream/native_src/sides.c is this loop compiled (used when built)
            cur: list[Decimal | None] = _compiled_open_side(levels, index, step, i_min, n, index_miss, _ZERO)
            if cur is NotImplemented:
                cur = [None] * n
                for price, qty in levels.items():
                    try:
                        j = index[price] - i_min
                    except KeyError:
                        j = index_miss(index, step, price) - i_min
                    if 0 <= j < n:
                        value = cur[j]
                        cur[j] = (_ZERO if value is None else value) + price * qty
            self._cur[side][:] = cur
            self._last[side][:] = [t] * n
        self.since = t
        self.active = True

    def side_arrays(self, side: int) -> SideArrays | None:
        """The arrays of ``side`` for a book's inner loop, None when not integrating. The loop must
        do exactly what :meth:`changes` does for each changed level."""
        if not self.active or self._arrays is None:
            return None
        return self._arrays[side]

    def _side_arrays(self, side: int) -> SideArrays:
        """The tuple :meth:`side_arrays` hands out (its lists are only ever changed in place)."""
        assert self.grid is not None
        grid = self.grid
        return self._index, grid.step, grid.i_min, grid.n, self._cur[side], self._last[side], self._acc[side]

    def level(self, t: int, side: int, price: Decimal, old_qty: Decimal, new_qty: Decimal) -> None:
        """A level of ``side`` (0 bid, 1 ask) changed from ``old_qty`` to ``new_qty`` at ``t``."""
        self.changes(t, side, ((price, old_qty, new_qty),))

    def changes(self, t: int, side: int, items: Iterable[Change]) -> None:
        """Levels of ``side`` (0 bid, 1 ask) changed at ``t``, in order: ``(price, old, new)``."""
        arrays = self.side_arrays(side)
        if arrays is None:
            return
        index, step, i_min, n, cur, last, acc = arrays
        for price, old_qty, new_qty in items:
            try:
                j = index[price] - i_min
            except KeyError:
                j = index_miss(index, step, price) - i_min
            if 0 <= j < n:
                value = cur[j]
                if value is None:
                    cur[j] = price * (new_qty - old_qty)
                    last[j] = t
                else:
                    since = last[j]
                    if since != t:
                        acc[j] += float(value) * (t - since)
                        last[j] = t
                    cur[j] = value + price * (new_qty - old_qty)

    def close_book(self, t: int) -> None:
        """Stop integrating at ``t`` (the book lost sync, or the window ends)."""
        if not self.active:
            return
        for side in (0, 1):
            cur, last, acc = self._cur[side], self._last[side], self._acc[side]
            for j, value in enumerate(cur):
                if value:
                    acc[j] += float(value) * (t - last[j])
            cur[:] = [None] * len(cur)
        self.coverage_ns += t - self.since
        self.active = False

    def finish(self) -> Frame | None:
        """Close at the window end; the frame, or None when the book was never synced in it."""
        self.close_book(self.end_ns)
        if self.grid is None or self.coverage_ns <= 0:
            return None
        grid = self.grid
        coverage = float(self.coverage_ns)
        sides = [np.array(acc, dtype=np.float64) / coverage for acc in self._acc]
        bid_u8, ask_u8, p50, p95 = intensities(sides[0], sides[1])
        return Frame(
            start_ns=self.start_ns,
            grid=grid,
            coverage_ns=self.coverage_ns,
            bid_usd=sides[0],
            ask_usd=sides[1],
            bid_u8=bid_u8,
            ask_u8=ask_u8,
            norm_p50=p50,
            norm_p95=p95,
            total_bid_usd=math.fsum(sides[0].tolist()),
            total_ask_usd=math.fsum(sides[1].tolist()),
        )


__all__ = [
    "MAX_BUCKETS",
    "RANGE_PCT",
    "SYMBOL_STEPS",
    "WINDOW_NS",
    "Change",
    "Frame",
    "Grid",
    "SideArrays",
    "SideDicts",
    "WindowAccumulator",
    "base_step",
    "decimal_cached",
    "decimal_text_cached",
    "decimal_text_memo",
    "default_step",
    "index_miss",
    "intensities",
    "make_grid",
    "price_index",
]
