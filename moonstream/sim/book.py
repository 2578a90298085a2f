"""A simulated limit order book in integer ticks and lots that follows the simulated price.

Exchange-agnostic: :meth:`LevelBook.move` moves the top of book to a new best bid and returns the
levels that changed (quantity 0 = the level is gone), which an exchange formatter turns into its own
diff messages. The book stays bounded: it tops itself up to ``max_levels`` + 10 % levels a side,
prunes the furthest beyond + 30 %, places no level further than ``max_depth_ticks`` from the top, and
:meth:`LevelBook.trim` cuts it to a snapshot's depth. All randomness comes from the caller's numpy Generator.
"""

from __future__ import annotations

import logging
import math

import numpy as np

log = logging.getLogger(__name__)

Changes = dict[int, int]
"""Price in ticks -> new quantity in lots (0 deletes the level)."""


class LevelBook:
    """Bids and asks as ``{price_ticks: lots}`` with a one-tick spread at the top.

    ``scale_ticks`` is the mean distance (ticks from the top) of the levels that churn; levels are
    dense near the top and sparse further out, like a real futures book.
    """

    def __init__(
        self,
        rng: np.random.Generator,
        best_bid: int,
        *,
        max_levels: int = 1000,
        scale_ticks: float = 500.0,
        max_depth_ticks: int = 20_000,
        median_lots: float = 50.0,
    ) -> None:
        self.rng = rng
        self.max_levels = max_levels
        self.scale_ticks = max(0.6 * max_levels, scale_ticks)
        self.max_depth_ticks = max(max_depth_ticks, int(8 * self.scale_ticks))
        self.median_lots = max(1.0, median_lots)
        self._target = max_levels + max_levels // 10  # what the book tops itself up to
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}
        self._carry: tuple[Changes, Changes] = ({}, {})  # deletions made by trim(), sent next move
        self.best_bid = best_bid
        self.best_ask = best_bid + 1
        self._rand: list[float] = []
        self._fill_initial()

    # -- random numbers in batches (scalar Generator calls are slow) ---------------------------

    def _uniforms(self) -> list[float]:
        if len(self._rand) < 64:
            self._rand = self.rng.random(8192).tolist()
        return self._rand

    def _lots(self) -> int:
        u = self._uniforms().pop()
        # log-uniform over [median/8, median*8]: many small levels, a few large walls
        return max(1, int(self.median_lots * 8.0 ** (2.0 * u - 1.0)))

    def _distance(self) -> int:
        u = self._uniforms().pop()
        return int(-self.scale_ticks * math.log1p(-u))  # exponential, 0 = the top

    def _fill_initial(self) -> None:
        for side, sign, top in ((self.bids, -1, self.best_bid), (self.asks, 1, self.best_ask)):
            side[top] = self._lots()
            tries = 0
            while len(side) < self._target and tries < 20 * self.max_levels:
                tries += 1
                d = self._distance()
                if d <= self.max_depth_ticks:
                    side.setdefault(top + sign * d, self._lots())

    # -- moving ----------------------------------------------------------------------------------

    def move(self, new_bid: int, churn: int) -> tuple[Changes, Changes]:
        """Put the top at ``new_bid`` / ``new_bid + 1``, churn ``churn`` random levels; the changes."""
        bids, asks = self.bids, self.asks
        bid_changes, ask_changes = self._carry
        self._carry = ({}, {})
        new_ask = new_bid + 1
        old_bid, old_ask = self.best_bid, self.best_ask
        if new_bid < old_bid:  # price fell: bids above the new top are gone (taken)
            _remove_range(bids, new_bid + 1, old_bid, bid_changes)
            self._refill(asks, new_ask, old_ask - 1, ask_changes)
        elif new_bid > old_bid:  # price rose: asks below the new top are gone
            _remove_range(asks, old_ask, new_ask - 1, ask_changes)
            self._refill(bids, old_bid + 1, new_bid, bid_changes)
        for side, top, changes in ((bids, new_bid, bid_changes), (asks, new_ask, ask_changes)):
            if top not in side:
                side[top] = changes[top] = self._lots()
        self.best_bid, self.best_ask = new_bid, new_ask
        for _ in range(churn):
            self._churn_one(bid_changes, ask_changes)
        for side, changes, sign, top in ((bids, bid_changes, -1, new_bid), (asks, ask_changes, 1, new_ask)):
            if len(side) < self._target:  # liquidity comes back after the price moved
                for _ in range(max(3, (self._target - len(side)) // 10)):
                    d = self._distance()
                    if d <= self.max_depth_ticks and top + sign * d not in side:
                        side[top + sign * d] = changes[top + sign * d] = self._lots()
        for side, changes, sign in ((bids, bid_changes, -1), (asks, ask_changes, 1)):
            if len(side) > self._target + self.max_levels // 5:
                self._prune(side, changes, sign)
        return bid_changes, ask_changes

    def _refill(self, side: dict[int, int], low: int, high: int, changes: Changes) -> None:
        """New levels appear in the gap the price left behind (at most 20 of them)."""
        width = high - low + 1
        if width <= 0:
            return
        count = min(20, max(1, width // 3))
        uniforms = self._uniforms()
        for _ in range(count):
            tick = low + int(uniforms.pop() * width)
            if tick not in side:
                side[tick] = changes[tick] = self._lots()

    def _churn_one(self, bid_changes: Changes, ask_changes: Changes) -> None:
        uniforms = self._uniforms()
        is_bid = uniforms.pop() < 0.5
        d = self._distance()
        if d > self.max_depth_ticks:
            return
        if is_bid:
            side, tick, changes = self.bids, self.best_bid - d, bid_changes
        else:
            side, tick, changes = self.asks, self.best_ask + d, ask_changes
        if d > 0 and tick in side and uniforms.pop() < 0.3:
            del side[tick]
            changes[tick] = 0
        else:
            side[tick] = changes[tick] = self._lots()

    def _prune(self, side: dict[int, int], changes: Changes, sign: int) -> None:
        """Drop the levels furthest from the top until ``max_levels`` + 10 % remain."""
        ordered = sorted(side, reverse=sign < 0)  # best first
        for tick in ordered[self._target :]:
            del side[tick]
            changes[tick] = 0

    def trim(self, levels: int) -> None:
        """Keep only the best ``levels`` a side; the deletions go out with the next :meth:`move`.

        Called before a REST snapshot of ``levels`` levels, so the snapshot holds the whole book and a
        reader who syncs from it knows every level (deeper ones would otherwise be invisible to it).
        """
        for side, changes, best_first in (
            (self.bids, self._carry[0], True),
            (self.asks, self._carry[1], False),
        ):
            if len(side) > levels:
                for tick in sorted(side, reverse=best_first)[levels:]:
                    del side[tick]
                    changes[tick] = 0

    def top(self) -> tuple[int, int, int, int]:
        """``(bid_ticks, bid_lots, ask_ticks, ask_lots)``."""
        return self.best_bid, self.bids[self.best_bid], self.best_ask, self.asks[self.best_ask]

    def snapshot(self, levels: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """The best ``levels`` of each side: bids best (highest) first, asks best (lowest) first."""
        bids = sorted(self.bids.items(), reverse=True)[:levels]
        asks = sorted(self.asks.items())[:levels]
        return bids, asks


def _remove_range(side: dict[int, int], low: int, high: int, changes: Changes) -> None:
    """Delete every level with ``low <= tick <= high``."""
    if high < low:
        return
    if high - low + 1 <= len(side):
        for tick in range(low, high + 1):
            if tick in side:
                del side[tick]
                changes[tick] = 0
    else:
        for tick in [t for t in side if low <= t <= high]:
            del side[tick]
            changes[tick] = 0
