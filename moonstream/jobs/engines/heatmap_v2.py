"""V2 liquidation heatmap: tape (what did liquidate) combined with projections (what should).

Raw path (used by zones and, later, the calibrator) and display path are kept strictly apart
(spec/002 §6, spec/004 "DISPLAY vs LOGIC BOUNDARY"): :func:`raw_heatmap` returns frozen buckets and
pools with no boost; :func:`display_levels` derives boosted copies for the published document only.

Per side:

- **Independent p99 normalization**: ``t = min(1, tape_usd / p99(tape))``,
  ``p = min(1, proj_usd / p99(proj))`` (p99 over the side's non-zero buckets, numpy's linear
  percentile), ``score = 0.35 t + 0.65 p``. Tape ($1-10k) and projections ($1-5M) thus compete on
  the same 0-1 scale.
- **Clustering**: buckets with a score, in price order; a bucket joins the current cluster while it is
  within ``2 × CLUSTER_RADIUS_PCT × src`` of the cluster's lowest bucket. A pool's price is the
  score-weighted mean; its ``notional_usd`` is the *measured* tape + projection USD of its buckets.
- **Pool selection**: pools under ``MIN_NOTIONAL_USD`` ($10k) are dropped; of at most
  ``MAX_POOLS_PER_SIDE`` (20), ``TAPE_RESERVED_POOLS`` (5) slots go first to the best pools holding
  real liquidations, the rest by score; so tape-only pools are never crowded out by projection
  pools (spec/002 M6). Ranking is by score, never by raw USD.
- **Display boost** (A3a-v2): a pool holding both tape and projection gets
  ``display_intensity = min(1, intensity × COMBINED_CLUSTER_BOOST)``; raw ``intensity`` unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, NamedTuple

from moonstream.jobs.engines.quantile import percentile
from moonstream.jobs.engines.tape import SIDES, bucket_index, bucket_price

TAPE_WEIGHT = 0.35
PROJECTION_WEIGHT = 0.65
CLUSTER_RADIUS_PCT = 0.005
MIN_NOTIONAL_USD = 10_000.0
MAX_POOLS_PER_SIDE = 20
TAPE_RESERVED_POOLS = 5
COMBINED_CLUSTER_BOOST = 1.5
RANGE_PCT = 0.10
MAX_GRID_BUCKETS = 1000


# Buckets and pools are immutable named tuples rather than frozen dataclasses: a minute builds
# hundreds of them, and a frozen dataclass's __init__ costs four times as much.


class Bucket(NamedTuple):
    """One price bucket of one side: measured USD from each source and the normalized score."""

    index: int  # type: ignore[assignment]  # the bucket index, shadowing tuple.index on purpose
    tape_usd: float
    projection_usd: float
    score: float


class Pool(NamedTuple):
    """A cluster of buckets (raw: no display boost)."""

    side: str
    price: float
    price_low: float
    price_high: float
    tape_usd: float
    projection_usd: float
    score: float
    bucket_count: int
    intensity: float = 0.0

    @property
    def notional_usd(self) -> float:
        return self.tape_usd + self.projection_usd

    @property
    def source(self) -> str:
        if self.tape_usd > 0 and self.projection_usd > 0:
            return "combined"
        return "tape" if self.tape_usd > 0 else "projection"


@dataclass(frozen=True)
class RawHeatmap:
    """The raw combined heatmap: buckets and selected pools per side, plus the p99 scales."""

    buckets: Mapping[str, tuple[Bucket, ...]]
    pools: Mapping[str, tuple[Pool, ...]]
    p99: Mapping[str, Mapping[str, float]]


def p99(values: Iterable[float]) -> float:
    """99th percentile of the positive values (0.0 when there are none)."""
    positive = sorted([v for v in values if v > 0])
    return percentile(positive, 99) if positive else 0.0


def combine_side(
    tape: Mapping[str, float], projection: Mapping[str, float]
) -> tuple[tuple[Bucket, ...], dict[str, float]]:
    """Buckets of one side with independently normalized, weighted scores."""
    scale_t, scale_p = p99(list(tape.values())), p99(list(projection.values()))
    buckets = []
    for key in sorted(set(tape) | set(projection), key=int):
        t_usd, p_usd = tape.get(key, 0.0), projection.get(key, 0.0)
        t = min(1.0, t_usd / scale_t) if scale_t > 0 else 0.0
        p = min(1.0, p_usd / scale_p) if scale_p > 0 else 0.0
        score = TAPE_WEIGHT * t + PROJECTION_WEIGHT * p
        if score > 0:
            buckets.append(Bucket(int(key), t_usd, p_usd, score))
    return tuple(buckets), {"tape": scale_t, "projection": scale_p}


def cluster(side: str, buckets: Sequence[Bucket], src: float, step: Decimal) -> list[Pool]:
    """Greedy price-ordered clustering (width ≤ 2 × radius × src)."""
    width = 2 * CLUSTER_RADIUS_PCT * src
    groups: list[list[Bucket]] = []
    prices: list[list[float]] = []  # bucket prices of each group
    first = 0.0  # price of the current group's lowest bucket
    for bucket in buckets:
        price = bucket_price(bucket.index, step)
        if groups and price - first <= width:
            groups[-1].append(bucket)
            prices[-1].append(price)
        else:
            groups.append([bucket])
            prices.append([price])
            first = price
    return [_pool(side, group, group_prices) for group, group_prices in zip(groups, prices, strict=True)]


def _pool(side: str, group: Sequence[Bucket], prices: Sequence[float]) -> Pool:
    score = sum(b.score for b in group)
    price = sum(p * b.score for p, b in zip(prices, group, strict=True)) / score
    return Pool(
        side,
        price,
        prices[0],
        prices[-1],
        sum(b.tape_usd for b in group),
        sum(b.projection_usd for b in group),
        score,
        len(group),
    )


def select_pools(pools: Sequence[Pool]) -> list[Pool]:
    """At most 20 pools ≥ $10k: 5 reserved for pools with tape, the rest by score (M6)."""
    eligible = [p for p in pools if p.notional_usd >= MIN_NOTIONAL_USD]
    by_score = sorted(eligible, key=lambda p: (-p.score, p.price))
    reserved = [p for p in by_score if p.tape_usd > 0][:TAPE_RESERVED_POOLS]
    taken = {id(p) for p in reserved}  # pools are distinct (disjoint price ranges): identity is equality
    rest = [p for p in by_score if id(p) not in taken]
    chosen = reserved + rest[: MAX_POOLS_PER_SIDE - len(reserved)]
    top = max((p.score for p in chosen), default=0.0)
    scaled = [
        Pool(
            p.side,
            p.price,
            p.price_low,
            p.price_high,
            p.tape_usd,
            p.projection_usd,
            p.score,
            p.bucket_count,
            p.score / top if top > 0 else 0.0,
        )
        for p in chosen
    ]
    return sorted(scaled, key=lambda p: p.price)


def raw_heatmap(
    tape: Mapping[str, Mapping[str, float]],
    projection: Mapping[str, Mapping[str, float]],
    src: float,
    step: Decimal,
) -> RawHeatmap:
    """The raw combined heatmap of both sides (no display boost anywhere)."""
    buckets: dict[str, tuple[Bucket, ...]] = {}
    pools: dict[str, tuple[Pool, ...]] = {}
    scales: dict[str, dict[str, float]] = {}
    for side in SIDES:
        buckets[side], scales[side] = combine_side(tape.get(side, {}), projection.get(side, {}))
        pools[side] = tuple(select_pools(cluster(side, buckets[side], src, step)))
    return RawHeatmap(buckets, pools, scales)


def display_levels(pools: Sequence[Pool]) -> list[dict[str, Any]]:
    """Published pool levels: raw fields plus the boosted ``display_intensity`` (display path only)."""
    levels = []
    for pool in pools:
        boosted = pool.intensity * COMBINED_CLUSTER_BOOST if pool.source == "combined" else pool.intensity
        levels.append(
            {
                "price": round(pool.price, 8),
                "price_low": pool.price_low,
                "price_high": pool.price_high,
                "notional_usd": round(pool.notional_usd, 2),
                "tape_usd": round(pool.tape_usd, 2),
                "projection_usd": round(pool.projection_usd, 2),
                "intensity": round(pool.intensity, 4),
                "display_intensity": round(min(1.0, boosted), 4),
                "source": pool.source,
                "bucket_count": pool.bucket_count,
            }
        )
    return levels


def grid_window(src: float, step: Decimal) -> tuple[int, int]:
    """Bucket index range ``src × (1 ± RANGE_PCT)``, narrowed symmetrically to ≤ 1000 buckets."""
    lo, hi = bucket_index(src * (1 - RANGE_PCT), step), bucket_index(src * (1 + RANGE_PCT), step)
    if hi - lo + 1 > MAX_GRID_BUCKETS:
        centre = bucket_index(src, step)
        lo = centre - MAX_GRID_BUCKETS // 2
        hi = lo + MAX_GRID_BUCKETS - 1
    return lo, hi


def window_buckets(raw: RawHeatmap, side: str, lo: int, hi: int) -> list[Bucket]:
    """The side's buckets with an index in ``[lo, hi]``, in index order."""
    return [b for b in raw.buckets[side] if lo <= b.index <= hi]


def grid_arrays(raw: RawHeatmap, lo: int, hi: int) -> dict[str, list[float]]:
    """Per-bucket arrays over the window: raw score (``*_intensity``) and measured USD per side."""
    out: dict[str, list[float]] = {}
    for side in SIDES:
        intensity = [0.0] * (hi - lo + 1)
        notional = [0.0] * (hi - lo + 1)
        for b in window_buckets(raw, side, lo, hi):
            intensity[b.index - lo] = round(b.score, 4)
            notional[b.index - lo] = round(b.tape_usd + b.projection_usd, 2)
        out[f"{side}_intensity"] = intensity
        out[f"{side}_notional_usd"] = notional
    return out
