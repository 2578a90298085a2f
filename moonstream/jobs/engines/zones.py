"""V3 zones: persistent liquidation zones, CREATED → REINFORCED (repeatable) → SWEPT / EXPIRED.

Fed each minute with the *raw* V2 pools (never the display-boosted levels). Constants (spec/000
"Zone Manager Configuration"): age 240 min, decay 0.995/min, weight in [0.05, 5.0], reinforcement
0.3, merge distance 0.05 %, expiry only when price is 2 % away.

Each minute, with ``gap`` = minutes since the previous step:

1. **Decay** (with catch-up across missing minutes, spec/002 M10): ``w ← w × 0.995^gap``.
2. **Sweep**: a long zone with ``low ≤ price``, a short zone with ``high ≥ price`` → SWEPT.
3. **Expire**: ``w < 0.05``, or (``minute − last_reinforced > 240`` and ``|price − src| / src > 2 %``)
   → EXPIRED. An old zone near price stays.
4. **Create / reinforce** from each raw pool on its proper side of price (long below ``src``, short
   above) at the bucket of the pool price: ``a = intensity × mix`` where ``mix`` is the USD-weighted
   V3 tier weight of the pool (tape USD counts 1.0, a projection tier counts its V3 weight, the
   disabled 10x never appears). A new zone gets ``w = min(a, 5)`` (only if ``a ≥ 0.05``); an
   existing one ``w ← min(w + 0.3 a, 5)``, ``count + 1``, source becomes ``combined`` when it differs.
   Tier contributions accumulate ``a × tier share``. The zone keeps the pool's *measured* USD
   (``notional_usd``, with the minute it was measured): notional is never derived from weight (M27).
5. **Merge** neighbours of one side within 0.05 % of their mid price: the heavier zone keeps its
   price, weights add (capped at 5), tier contributions add.

Every transition is reported as an event (``created``, ``reinforced``, ``swept``, ``expired``,
``merged``). State (JSON): ``{"zones": [zone, ...] in (side, index) order, "counters": {...}}``.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from moonstream.jobs.engines.heatmap_v2 import Pool
from moonstream.jobs.engines.leverage import v3_tier_weight
from moonstream.jobs.engines.tape import bucket_index, bucket_price

MAX_ZONE_AGE_MINUTES = 240
ZONE_DECAY_PER_MINUTE = 0.995
MIN_ZONE_WEIGHT = 0.05
MAX_ZONE_WEIGHT = 5.0
REINFORCEMENT_FACTOR = 0.3
CLUSTER_DISTANCE_PCT = 0.0005
EXPIRATION_PRICE_DIST_PCT = 0.02
COUNTERS = ("created", "reinforced", "swept", "expired", "merged")

Zone = dict[str, Any]


def _event(kind: str, zone: Zone, minute: int, step: Decimal, **extra: Any) -> dict[str, Any]:
    return {
        "type": kind,
        "side": zone["side"],
        "price": bucket_price(zone["index"], step),
        "weight": round(zone["weight"], 6),
        "source": zone["source"],
        "minute": minute,
        **extra,
    }


def _ordered_keys(projection: Mapping[str, Mapping[str, float]]) -> tuple[list[int], list[str]]:
    """The projection's bucket indexes and keys, in index order (for :func:`_pool_tiers`)."""
    pairs = sorted((int(key), key) for key in projection)
    return [i for i, _ in pairs], [key for _, key in pairs]


def _pool_tiers(
    pool: Pool,
    projection: Mapping[str, Mapping[str, float]],
    step: Decimal,
    ordered: tuple[list[int], list[str]],
) -> dict[str, float]:
    """USD per tier of the projection buckets inside the pool's price range (``ordered``: the
    projection's :func:`_ordered_keys`)."""
    lo, hi = bucket_index(pool.price_low, step), bucket_index(pool.price_high, step)
    indexes, keys = ordered
    tiers: dict[str, float] = {}
    for key in keys[bisect_left(indexes, lo) : bisect_right(indexes, hi)]:
        bucket = projection[key]
        for tier in bucket if len(bucket) < 2 else sorted(bucket, key=int):
            tiers[tier] = tiers.get(tier, 0.0) + bucket[tier]
    return tiers


def pool_weight(pool: Pool, tiers: Mapping[str, float]) -> tuple[float, dict[str, float]]:
    """``(a, tier contributions)`` for a pool: ``a = intensity × mix`` (see module docstring)."""
    order = sorted(tiers, key=int)
    total = pool.tape_usd + sum(tiers[t] for t in order)
    if total <= 0:
        return 0.0, {}
    weights = [v3_tier_weight(int(t)) for t in order]
    mix = (pool.tape_usd + sum(tiers[t] * w for t, w in zip(order, weights, strict=True))) / total
    a = pool.intensity * mix
    return a, {t: a * tiers[t] / total for t, w in zip(order, weights, strict=True) if w > 0}


def _decay_sweep_expire(
    zones: list[Zone],
    minute: int,
    gap: int,
    src: float | None,
    high: float | None,
    low: float | None,
    step: Decimal,
    events: list[dict[str, Any]],
) -> list[Zone]:
    kept = []
    factor = ZONE_DECAY_PER_MINUTE**gap
    for zone in zones:
        zone["weight"] *= factor
        price = bucket_price(zone["index"], step)
        lifespan = minute - zone["created_minute"]
        swept = (
            high is not None
            and low is not None
            and ((zone["side"] == "long" and low <= price) or (zone["side"] == "short" and high >= price))
        )
        if swept:
            events.append(_event("swept", zone, minute, step, lifespan_min=lifespan))
            continue
        age = minute - zone["last_reinforced_minute"]
        far = src is not None and src > 0 and abs(price - src) / src > EXPIRATION_PRICE_DIST_PCT
        if zone["weight"] < MIN_ZONE_WEIGHT or (age > MAX_ZONE_AGE_MINUTES and far):
            reason = "weight" if zone["weight"] < MIN_ZONE_WEIGHT else "age"
            events.append(_event("expired", zone, minute, step, lifespan_min=lifespan, reason=reason))
            continue
        kept.append(zone)
    return kept


def _apply_pool(
    by_key: dict[tuple[str, int], Zone],
    pool: Pool,
    tiers: Mapping[str, float],
    minute: int,
    step: Decimal,
    events: list[dict[str, Any]],
) -> None:
    a, contributions = pool_weight(pool, tiers)
    key = (pool.side, bucket_index(pool.price, step))
    zone = by_key.get(key)
    if zone is None:
        if a < MIN_ZONE_WEIGHT:
            return
        zone = {
            "side": pool.side,
            "index": key[1],
            "weight": min(a, MAX_ZONE_WEIGHT),
            "state": "created",
            "created_minute": minute,
            "last_reinforced_minute": minute,
            "reinforcement_count": 0,
            "source": pool.source,
            "tiers": dict(contributions),
        }
        by_key[key] = zone
        events.append(_event("created", zone, minute, step))
    else:
        before = zone["weight"]
        zone["weight"] = min(before + a * REINFORCEMENT_FACTOR, MAX_ZONE_WEIGHT)
        zone["state"] = "reinforced"
        zone["last_reinforced_minute"] = minute
        zone["reinforcement_count"] += 1
        if zone["source"] != pool.source:
            zone["source"] = "combined"
        for tier, value in contributions.items():
            zone["tiers"][tier] = zone["tiers"].get(tier, 0.0) + value
        zone["tiers"] = dict(sorted(zone["tiers"].items(), key=lambda kv: int(kv[0])))
        events.append(_event("reinforced", zone, minute, step, weight_before=round(before, 6)))
    zone["notional_usd"] = round(pool.notional_usd, 2)
    zone["tape_usd"] = round(pool.tape_usd, 2)
    zone["projection_usd"] = round(pool.projection_usd, 2)
    zone["notional_minute"] = minute


def _merge(zones: list[Zone], minute: int, step: Decimal, events: list[dict[str, Any]]) -> list[Zone]:
    out: list[Zone] = []
    for zone in zones:  # sorted by (side, index)
        prev = out[-1] if out else None
        if prev is not None and prev["side"] == zone["side"]:
            p1, p2 = bucket_price(prev["index"], step), bucket_price(zone["index"], step)
            if abs(p2 - p1) / ((p1 + p2) / 2) <= CLUSTER_DISTANCE_PCT:
                keep, other = (prev, zone) if prev["weight"] >= zone["weight"] else (zone, prev)
                keep["weight"] = min(keep["weight"] + other["weight"], MAX_ZONE_WEIGHT)
                for tier, value in other["tiers"].items():
                    keep["tiers"][tier] = keep["tiers"].get(tier, 0.0) + value
                keep["tiers"] = dict(sorted(keep["tiers"].items(), key=lambda kv: int(kv[0])))
                if keep["source"] != other["source"]:
                    keep["source"] = "combined"
                events.append(
                    _event("merged", keep, minute, step, merged_price=bucket_price(other["index"], step))
                )
                out[-1] = keep
                continue
        out.append(zone)
    return out


def step_zones(
    state: Mapping[str, Any],
    *,
    pools: Mapping[str, Sequence[Pool]],
    projection: Mapping[str, Mapping[str, Mapping[str, float]]],
    minute: int,
    gap: int,
    src: float | None,
    high: float | None,
    low: float | None,
    step: Decimal,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Advance the zones one minute; returns the new state and the minute's lifecycle events."""
    events: list[dict[str, Any]] = []
    zones = [{**z, "tiers": dict(z.get("tiers", {}))} for z in state.get("zones", [])]
    zones = _decay_sweep_expire(zones, minute, gap, src, high, low, step, events)
    by_key = {(z["side"], z["index"]): z for z in zones}
    if src:
        for side in ("long", "short"):
            side_projection = projection.get(side, {})
            ordered = _ordered_keys(side_projection)
            for pool in pools.get(side, ()):
                if (side == "long" and pool.price < src) or (side == "short" and pool.price > src):
                    tiers = _pool_tiers(pool, side_projection, step, ordered)
                    _apply_pool(by_key, pool, tiers, minute, step, events)
    zones = _merge([by_key[k] for k in sorted(by_key)], minute, step, events)
    counters = {c: int(state.get("counters", {}).get(c, 0)) for c in COUNTERS}
    for event in events:
        counters[event["type"]] += 1
    return {"zones": zones, "counters": counters}, events
