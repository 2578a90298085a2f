"""Liquidation calibrator: one 15-minute window of liquidations -> updated leverage-tier weights.

Pure and deterministic (no I/O, no clock, no randomness). The calibrate job
(:mod:`moonstream.jobs.calibrate`) feeds it; the minute job's liquidation engine uses the weights it
returns (``state["calibrator_weights"]``). Constants are spec/000 "Calibrator Constants & Tuning
Parameters" and "Engine Instantiation Parameters / LiquidationCalibrator", cited by name.

Model (spec/000 "Path D: Calibrator Learning Loop"):

1. **Price path.** One bar per minute (open/high/low/close; ``src`` = OHLC4) for the
   ``MINUTE_CACHE_SIZE`` minutes up to the window end. Each bar's ``src`` is an *entry-price
   estimate*: a position of tier ``L`` opened at ``src`` has the level
   ``src × (1 ∓ (1/L + buffer))`` (the projection formula of the inference engine), shifted by the
   learned percent bias of its side (``level × (1 + bias)``).
2. **Volatility scaling.** ``vol_ewma`` (EWMA, ``VOL_EWMA_ALPHA``) of the absolute one-minute
   log returns of ``src`` over the window; ``scale = clamp(vol_ewma / VOL_BASELINE, VOL_SCALE_MIN,
   VOL_SCALE_MAX)``; the attribution temperature is ``TAU_PCT_BASE × scale`` and the hit decay scale
   ``DELTA_PCT_BASE × scale`` (busier markets blur attribution more).
3. **Soft attribution in percent space.** For a liquidation at price ``p`` in minute ``t``, each
   enabled tier's distance is ``d_L = min |p − level| / p`` over the entries of minutes ``<= t``. The
   event is *attributable* when its nearest level is within ``HIT_BUCKET_TOLERANCE`` buckets of
   ``p``; then ``r_L = w_L·exp(−d_L/τ) / Σ w·exp(−d/τ)`` (responsibility) and the tier's hit
   contribution is ``r_L·exp(−d_L/δ)`` for tiers within the tolerance. Disabled tiers (10x) take no
   part; an event whose nearest level of *all* tiers is a disabled tier's is counted as
   ``tier_disabled`` (spec BUG "10x tier").
4. **Approaches** (``APPROACH_PCT``): a tier's level from entry minute ``m`` is *approached* when a
   window minute after ``m`` traded within 0.75 % of it. ``approaches_L`` is the tier's exposure:
   how many of its levels the window's price path tested.
5. **Weight update.** Only tiers with approaches carry evidence. Among them the observed hit share
   ``o_L = H_L / ΣH`` is compared with the share the current weights expect,
   ``e_L = w_L·A_L / Σ w·A``; the proposal is ``w_L·o_L/e_L``, rescaled so the evidenced tiers keep
   their total mass (liquidations alone cannot tell how much weight sits on tiers the price never
   tested, so their weights are left as they are). Then anchoring (``ANCHOR_LAMBDA``:
   ``w = 0.9·w_old + 0.1·w_update``), the per-update ratio clamp ``new/old ∈ [0.85, 1.20]`` and the
   ``MAX_WEIGHT`` cap of 0.35, all satisfied *exactly* after normalization (water-filling, below).
6. **Entropy safety.** The Shannon entropy (nats) of the enabled weights may not fall below
   ``min(ENTROPY_FLOOR, H(old weights))``; if it would, the result is mixed with the uniform
   distribution by the smallest fraction (bisection) that restores it. Entropy is computed over
   enabled tiers only (spec/002 M8).
7. **Bias correction** (``BIAS_ETA``, ``BIAS_CAP``, ``MIN_BIAS_SAMPLES``): per side, the median of
   the signed percent misses ``(p − nearest level)/p`` of attributable events, ignoring misses
   larger than the offset limits (``MAX_OFFSET_PCT`` of the price and ``MAX_OFFSET_USD``), moves the
   bias by ``BIAS_ETA × median`` when at least ``MIN_BIAS_SAMPLES`` events back it, capped at
   ``±BIAS_CAP``.

With fewer than ``MIN_WINDOW_EVENTS`` attributable events the weights are carried unchanged (the
statistics are still reported).
"""

from __future__ import annotations

import itertools
import math
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from moonstream.jobs.engines.inference import BUFFER, liquidation_price

ENGINE_VERSION = "calibrator-1"

# --- spec/000 "Engine Instantiation Parameters / LiquidationCalibrator" ----------------------------
WINDOW_MINUTES = 15  # window_minutes=15 (viewer override of the default 30)
LEARNING_RATE = 0.10  # learning_rate=0.10; equal to ANCHOR_LAMBDA, which is the one applied
# --- spec/000 "Soft Attribution (percent-space)" ---------------------------------------------------
TAU_PCT_BASE = 0.0012  # responsibility temperature, 12 bps
DELTA_PCT_BASE = 0.0008  # hit contribution decay scale, 8 bps
HIT_BUCKET_TOLERANCE = 4  # max bucket distance for a hit (overrides the instantiation's 5)
# --- spec/000 "Volatility Scaling" -----------------------------------------------------------------
VOL_BASELINE = 0.0015  # neutral one-minute volatility, 15 bps: scale = vol_ewma / VOL_BASELINE
VOL_SCALE_MIN = 0.7
VOL_SCALE_MAX = 1.6
VOL_EWMA_ALPHA = 0.1
# --- spec/000 "Weight Update Stabilization" --------------------------------------------------------
ANCHOR_LAMBDA = 0.10  # w_new = 0.9 * w_old + 0.1 * w_update
RATIO_MIN = 0.85  # per-update ratio clamp: new_w / old_w in [0.85, 1.20]
RATIO_MAX = 1.20
MAX_WEIGHT = 0.35  # no single tier above 35 %
# --- spec/000 "Bias Correction (Phase 3, percent-based)" -------------------------------------------
BIAS_ETA = 0.10
BIAS_CAP = 0.008
MIN_BIAS_SAMPLES = 10
# --- spec/000 "Offset Limits" (bound the misses the bias may learn from) ---------------------------
MAX_OFFSET_PCT = 0.005
MAX_OFFSET_USD = 2000.0
# --- spec/000 "Approach & Zones" -------------------------------------------------------------------
APPROACH_PCT = 0.0075
MINUTE_CACHE_SIZE = 60  # minutes of price path whose bars serve as entry estimates
# --- spec/002 M8: the safety check's entropy threshold (nats, enabled tiers only) -------------------
ENTROPY_FLOOR = 1.6
# Ours: below this many attributable events a window carries the weights unchanged.
MIN_WINDOW_EVENTS = 5

SIDES = ("long", "short")


@dataclass(frozen=True)
class MinuteBar:
    """One minute of the price path (any consistent trade prices)."""

    minute: int
    open: float
    high: float
    low: float
    close: float

    @property
    def src(self) -> float:
        """OHLC4, the minute's entry-price estimate."""
        return (self.open + self.high + self.low + self.close) / 4.0


@dataclass(frozen=True)
class LiquidationObs:
    """One liquidation as the calibrator sees it: minute, liquidated side and price."""

    minute: int
    side: str  # "long" | "short"
    price: float


@dataclass(frozen=True)
class CalibratorMemory:
    """What the calibrator carries between windows besides the weights."""

    vol_ewma: float = VOL_BASELINE
    bias: Mapping[str, float] = field(default_factory=lambda: {"long": 0.0, "short": 0.0})

    def document(self) -> dict[str, Any]:
        return {"vol_ewma": self.vol_ewma, "bias": {s: self.bias.get(s, 0.0) for s in SIDES}}

    @classmethod
    def from_document(cls, doc: Mapping[str, Any] | None) -> CalibratorMemory:
        if not doc:
            return cls()
        bias = doc.get("bias") or {}
        return cls(float(doc.get("vol_ewma", VOL_BASELINE)), {s: float(bias.get(s, 0.0)) for s in SIDES})


@dataclass(frozen=True)
class CalibrationUpdate:
    """The outcome of one window: new weights (enabled tiers sum to 1, disabled 0), memory, stats."""

    weights: dict[int, float]
    memory: CalibratorMemory
    stats: dict[str, Any]
    updated: bool


def entropy(weights: Mapping[int, float]) -> float:
    """Shannon entropy (nats) of the positive weights (normalized first)."""
    total = math.fsum(w for w in weights.values() if w > 0)
    if total <= 0:
        return 0.0
    return -math.fsum((w / total) * math.log(w / total) for w in weights.values() if w > 0)


def normalize_weights(
    weights: Mapping[int, float], tiers: Sequence[int], disabled: frozenset[int]
) -> dict[int, float]:
    """Weights over ``tiers`` with disabled tiers 0 and enabled tiers summing to 1 (uniform if none)."""
    enabled = [t for t in tiers if t not in disabled]
    raw = {
        t: max(0.0, float(weights.get(t, 0.0))) if math.isfinite(weights.get(t, 0.0)) else 0.0
        for t in enabled
    }
    total = math.fsum(raw.values())
    out = {t: 0.0 for t in tiers}
    for t in enabled:
        out[t] = raw[t] / total if total > 0 else 1.0 / len(enabled)
    return out


def volatility(bars: Sequence[MinuteBar], prior: float) -> float:
    """EWMA (``VOL_EWMA_ALPHA``) of absolute one-minute log returns of ``src``, from ``prior``."""
    vol = prior
    for before, after in itertools.pairwise(bars):
        if before.src > 0 and after.src > 0:
            vol = (1 - VOL_EWMA_ALPHA) * vol + VOL_EWMA_ALPHA * abs(math.log(after.src / before.src))
    return vol


def vol_scale(vol_ewma: float) -> float:
    """``clamp(vol_ewma / VOL_BASELINE, VOL_SCALE_MIN, VOL_SCALE_MAX)``."""
    return min(VOL_SCALE_MAX, max(VOL_SCALE_MIN, vol_ewma / VOL_BASELINE))


def _water_fill(
    target: Mapping[int, float], low: Mapping[int, float], high: Mapping[int, float]
) -> dict[int, float]:
    """``clip(s·target, low, high)`` with the scale ``s`` that makes the sum 1 (bisection; the
    bounds must allow it: ``Σ low <= 1 <= Σ high``)."""

    def total(s: float) -> float:
        return math.fsum(min(high[t], max(low[t], s * target[t])) for t in target)

    lo_s, hi_s = 0.0, 1.0
    while total(hi_s) < 1.0 and hi_s < 1e12:
        hi_s *= 2.0
    for _ in range(200):
        mid = (lo_s + hi_s) / 2.0
        if total(mid) < 1.0:
            lo_s = mid
        else:
            hi_s = mid
    out = {t: min(high[t], max(low[t], hi_s * target[t])) for t in target}
    norm = math.fsum(out.values())
    return {t: v / norm for t, v in out.items()}


def stabilize(
    old: Mapping[int, float], proposal: Mapping[int, float], tiers: Sequence[int], disabled: frozenset[int]
) -> dict[int, float]:
    """Anchoring, ratio clamp, max-weight cap, normalization and the entropy floor (rules 5-6).

    ``old`` must already be normalized over the enabled tiers. The cap is ``max(MAX_WEIGHT, 1/n)``
    for ``n`` enabled tiers (0.35 cannot hold with fewer than three), and when the old weights
    themselves exceed the cap the ratio floor wins (weights leave an over-cap state at most 15 % a
    window).
    """
    enabled = [t for t in tiers if t not in disabled]
    if not enabled:
        return {t: 0.0 for t in tiers}
    cap = max(MAX_WEIGHT, 1.0 / len(enabled))
    anchored = {t: (1 - ANCHOR_LAMBDA) * old[t] + ANCHOR_LAMBDA * proposal.get(t, old[t]) for t in enabled}
    low = {t: RATIO_MIN * old[t] for t in enabled}
    high = {t: max(low[t], min(RATIO_MAX * old[t], cap)) for t in enabled}
    if math.fsum(high.values()) < 1.0:  # only if old weights were at or above the cap everywhere
        high = {t: RATIO_MAX * old[t] for t in enabled}
    new = _water_fill(anchored, low, high)
    floor = min(ENTROPY_FLOOR, entropy(old))
    if entropy(new) < floor - 1e-12:
        uniform = 1.0 / len(enabled)
        a, b = 0.0, 1.0
        for _ in range(60):
            mid = (a + b) / 2.0
            mixed = {t: (1 - mid) * new[t] + mid * uniform for t in enabled}
            if entropy(mixed) < floor:
                a = mid
            else:
                b = mid
        new = {t: (1 - b) * new[t] + b * uniform for t in enabled}
    return {t: (new.get(t, 0.0)) for t in tiers}


def _levels(
    bars: Sequence[MinuteBar], tiers: Sequence[int], bias: Mapping[str, float], buffer: float
) -> dict[tuple[str, int], list[tuple[int, float]]]:
    """(side, tier) -> [(entry minute, level)] for every bar."""
    out: dict[tuple[str, int], list[tuple[int, float]]] = {}
    for side in SIDES:
        shift = 1.0 + bias.get(side, 0.0)
        for tier in tiers:
            out[(side, tier)] = [
                (b.minute, liquidation_price(b.src, tier, side, buffer) * shift) for b in bars if b.src > 0
            ]
    return out


def _suffix_extremes(values: Sequence[float], pick: Callable[[float, float], float]) -> list[float]:
    """``[pick(values[i:]) for i in ...]``: the lowest (``min``) or highest (``max``) value from each
    position on (comparisons only, so "a later value reaches x" is "the suffix extreme reaches x")."""
    out = list(values)
    for i in range(len(out) - 2, -1, -1):
        out[i] = pick(out[i], out[i + 1])
    return out


def _approaches_and_crossings(
    levels: Mapping[tuple[str, int], Sequence[tuple[int, float]]],
    cache: Sequence[MinuteBar],
    tiers: Sequence[int],
    first: int,
) -> tuple[dict[int, int], dict[int, int], dict[tuple[str, int], dict[int, list[float]]]]:
    """Rule 4 per tier: approaches (a window bar after the entry came within ``APPROACH_PCT`` of the
    level), crossings (the first bar after the entry that reached the level is in the window) and,
    per (side, tier), the levels first crossed in each minute. ``cache`` is in minute order (and,
    as trade prices, free of NaN)."""
    minutes = [b.minute for b in cache]
    lows, highs = [b.low for b in cache], [b.high for b in cache]
    low_from, high_from = _suffix_extremes(lows, min), _suffix_extremes(highs, max)
    in_window = bisect_left(minutes, first)  # the first bar with minute >= first
    approaches = {t: 0 for t in tiers}
    crossings = {t: 0 for t in tiers}
    crossed_at: dict[tuple[str, int], dict[int, list[float]]] = {}
    for (side, tier), entries in levels.items():
        long = side == "long"
        by_minute: dict[int, list[float]] = {}
        for m, level in entries:
            later = bisect_right(minutes, m)  # bars [later:] are those after the entry minute
            tested = max(later, in_window)
            if tested < len(cache) and (
                low_from[tested] <= level * (1 + APPROACH_PCT)
                if long
                else high_from[tested] >= level * (1 - APPROACH_PCT)
            ):
                approaches[tier] += 1
            if later < len(cache) and (low_from[later] <= level if long else high_from[later] >= level):
                i = later
                while not (lows[i] <= level if long else highs[i] >= level):
                    i += 1
                if minutes[i] >= first:
                    crossings[tier] += 1
                    by_minute.setdefault(minutes[i], []).append(level)
        crossed_at[(side, tier)] = by_minute
    return approaches, crossings, crossed_at


def calibrate_window(
    weights: Mapping[int, float],
    tiers: Sequence[int],
    disabled: frozenset[int],
    liquidations: Sequence[LiquidationObs],
    bars: Sequence[MinuteBar],
    window: tuple[int, int],
    step: float,
    memory: CalibratorMemory | None = None,
    buffer: float = BUFFER,
) -> CalibrationUpdate:
    """One calibration window ``[first, last]`` (minutes, inclusive).

    ``bars`` is the price path (at most the last ``MINUTE_CACHE_SIZE`` minutes up to ``last`` are
    used); ``liquidations`` outside the window are ignored; ``step`` is the symbol's liquidation
    bucket step (for ``HIT_BUCKET_TOLERANCE``). See the module docstring for the rules.
    """
    memory = memory or CalibratorMemory()
    first, last = window
    old = normalize_weights(weights, tiers, disabled)
    enabled = [t for t in tiers if t not in disabled]
    cache = sorted((b for b in bars if last - MINUTE_CACHE_SIZE < b.minute <= last), key=lambda b: b.minute)
    window_bars = [b for b in cache if first <= b.minute <= last]
    vol = volatility(window_bars, memory.vol_ewma) if window_bars else memory.vol_ewma
    scale = vol_scale(vol)
    tau, delta = TAU_PCT_BASE * scale, DELTA_PCT_BASE * scale
    levels = _levels(cache, tiers, memory.bias, buffer)

    approaches, crossings, crossed_at = _approaches_and_crossings(levels, cache, tiers, first)

    resp = {t: 0.0 for t in tiers}
    hits = {t: 0.0 for t in tiers}
    nearest_counts = {t: 0 for t in tiers}
    misses: dict[str, list[float]] = {s: [] for s in SIDES}
    counts = {"events": 0, "attributable": 0, "unattributed": 0, "tier_disabled": 0, "no_level_crossed": 0}
    for ev in sorted(liquidations, key=lambda e: (e.minute, e.side, e.price)):
        if not first <= ev.minute <= last or ev.price <= 0 or ev.side not in SIDES:
            continue
        counts["events"] += 1
        dist: dict[int, tuple[float, float]] = {}  # tier -> (percent distance, signed miss)
        for tier in tiers:
            best: tuple[float, float] | None = None
            for level in crossed_at[(ev.side, tier)].get(ev.minute, ()):
                miss = (ev.price - level) / ev.price
                if best is None or abs(miss) < best[0]:
                    best = (abs(miss), miss)
            if best is not None:
                dist[tier] = best
        if not dist:
            counts["no_level_crossed"] += 1
            continue
        tolerance = HIT_BUCKET_TOLERANCE * step / ev.price
        nearest_all = min(dist, key=lambda t: (dist[t][0], t))
        if nearest_all in disabled and dist[nearest_all][0] <= tolerance:
            counts["tier_disabled"] += 1  # logged, excluded from every update (spec BUG "10x tier")
        usable = {t: dist[t] for t in enabled if t in dist}
        if not usable or min(d for d, _ in usable.values()) > tolerance:
            counts["unattributed"] += 1
            continue
        counts["attributable"] += 1
        nearest = min(usable, key=lambda t: (usable[t][0], t))
        nearest_counts[nearest] += 1
        d_min = usable[nearest][0]
        kernel = {t: old[t] * math.exp(-(d - d_min) / tau) for t, (d, _) in usable.items()}
        norm = math.fsum(kernel.values())
        if norm <= 0:  # every usable tier has weight 0: attribute by distance alone
            kernel = {t: math.exp(-(d - d_min) / tau) for t, (d, _) in usable.items()}
            norm = math.fsum(kernel.values())
        for t, (d, _) in usable.items():
            r = kernel[t] / norm
            resp[t] += r
            if d <= tolerance:
                hits[t] += r * math.exp(-d / delta)
        signed = usable[nearest][1]
        if abs(signed) <= min(MAX_OFFSET_PCT, MAX_OFFSET_USD / ev.price):
            misses[ev.side].append(signed)

    bias = dict(memory.bias)
    for side in SIDES:
        sample = sorted(misses[side])
        if len(sample) >= MIN_BIAS_SAMPLES:
            n = len(sample)
            median = sample[n // 2] if n % 2 else (sample[n // 2 - 1] + sample[n // 2]) / 2.0
            # A positive miss means the event lies beyond the level towards the entry: move levels up.
            bias[side] = max(-BIAS_CAP, min(BIAS_CAP, bias.get(side, 0.0) + BIAS_ETA * median))

    evidenced = [t for t in enabled if crossings[t] > 0]
    hit_total = math.fsum(hits[t] for t in evidenced)
    expect_total = math.fsum(old[t] * crossings[t] for t in evidenced)
    proposal: dict[int, float] = dict(old)
    updated = counts["attributable"] >= MIN_WINDOW_EVENTS and hit_total > 0 and expect_total > 0
    if updated:
        raw = {}
        for t in evidenced:
            raw[t] = (hits[t] / hit_total) * expect_total / crossings[t]
        block_old = math.fsum(old[t] for t in evidenced)
        block_new = math.fsum(raw.values())
        for t in evidenced:
            proposal[t] = raw[t] * block_old / block_new if block_new > 0 else old[t]
        new = stabilize(old, proposal, tiers, disabled)
    else:
        new = dict(old)

    tier_stats = {
        str(t): {
            "disabled": t in disabled,
            "attributed": round(resp[t], 6),
            "hits": round(hits[t], 6),
            "approaches": approaches[t],
            "crossings": crossings[t],
            "nearest": nearest_counts[t],
            "hit_rate": round(hits[t] / approaches[t], 6) if approaches[t] else None,
            "weight_before": round(old[t], 8),
            "weight_after": round(new[t], 8),
        }
        for t in tiers
    }
    stats = {
        **counts,
        "window": [first, last],
        "minutes_with_prices": len(window_bars),
        "vol_ewma": vol,
        "vol_scale": scale,
        "tau_pct": tau,
        "delta_pct": delta,
        "bias": {s: bias[s] for s in SIDES},
        "bias_samples": {s: len(misses[s]) for s in SIDES},
        "entropy_before": entropy({t: old[t] for t in enabled}),
        "entropy_after": entropy({t: new[t] for t in enabled}),
        "updated": updated,
        "tiers": tier_stats,
    }
    return CalibrationUpdate(new, CalibratorMemory(vol, bias), stats, updated)
