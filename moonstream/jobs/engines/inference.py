"""Entry inference: where new leveraged positions were opened, projected to their liquidation prices.

Inputs per minute: each exchange's open interest (base units, the last report of the minute), the
minute's reference price ``src`` (OHLC4) and range (high, low), the taker buy share (aggression).

Rules (spec/000, spec/002 M2 M5 M7 M15, spec/004 A1 A2), in this order each minute:

1. **Decay**: every projection × ``DECAY ** gap`` (0.995 per minute; ``gap`` catches up missing
   minutes); entries under ``MIN_BUCKET_USD`` ($100) are dropped.
2. **Sweep**: a long bucket at or above the minute's low, a short bucket at or below its high, is
   reduced by ``SWEEP_REDUCTION_FACTOR`` (70 %: ``usd × (1 − 0.70)``); what is left under
   ``SWEEP_MIN_BUCKET_USD`` ($100) is removed.
3. **OI delta**: only exchanges that reported this minute *and* have a previous value contribute:
   ``Δbase = Σ (oi_now − oi_prev)``, ``Δusd = Δbase × src``. A minute where **no exchange reported**
   (every poll failed: no ``OpenInterest`` event at all) is skipped: no opening, no closing, previous
   values kept — never read as zero OI (M15). An exchange that did not report keeps its last value.
4. **Opening** (``Δusd > 0`` and ≥ ``MIN_OI_CHANGE_PCT`` × previous total OI in USD): the new USD is
   split ``long = Δusd × b``, ``short = Δusd × (1 − b)`` with ``b`` = taker buy share clamped to
   [0.10, 0.90]; each side is spread over the *enabled* tiers by normalized weight (disabled 10x
   excluded, every ladder tier covered: M5 M7) at ``liq = src × (1 ∓ (1/L + BUFFER))``, BUFFER 0.002;
   contributions under $100 are skipped.
5. **Closing** (``Δusd < 0``): every projection × ``(1 − f)`` with
   ``f = min(0.25, |Δbase| / previous total OI base)`` — pro rata against the *previous* OI (M2),
   capped at 25 % per minute (A2).

State (JSON): ``{"long": {"<bucket>": {"<tier>": usd}}, "short": {...}, "oi_base": {exchange:
"<decimal>"}, "total_inferred": {"long": usd, "short": usd}}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from moonstream.jobs.engines.leverage import LeverageConfig
from moonstream.jobs.engines.market import decimal_text
from moonstream.jobs.engines.tape import SIDES, bucket_index, bucket_price

DECAY = 0.995
BUFFER = 0.002
MIN_BUCKET_USD = 100.0
MIN_CONTRIBUTION_USD = 100.0
MIN_OI_CHANGE_PCT = 0.00005
MIN_BUY_WEIGHT = 0.10
MAX_BUY_WEIGHT = 0.90
MAX_OI_REDUCTION_PER_MINUTE = 0.25
SWEEP_REDUCTION_FACTOR = 0.70
SWEEP_MIN_BUCKET_USD = 100.0

Projections = dict[str, dict[str, dict[str, float]]]
"""side -> bucket -> tier -> USD."""


@dataclass(frozen=True)
class InferenceReport:
    """What the inference did this minute (for ``liq_stats``)."""

    oi_skipped: bool
    oi_delta_base: Decimal
    oi_delta_usd: float
    buy_weight: float
    long_open_usd: float
    short_open_usd: float
    close_factor: float
    swept_buckets: dict[str, int]

    def document(self) -> dict[str, Any]:
        return {
            "oi_skipped": self.oi_skipped,
            "oi_delta_base": decimal_text(self.oi_delta_base),
            "oi_delta_usd": round(self.oi_delta_usd, 2),
            "buy_weight": round(self.buy_weight, 6),
            "long_open_usd": round(self.long_open_usd, 2),
            "short_open_usd": round(self.short_open_usd, 2),
            "close_factor": round(self.close_factor, 6),
            "swept_buckets": dict(self.swept_buckets),
        }


def liquidation_price(entry: float, leverage: int, side: str, buffer: float = BUFFER) -> float:
    """``entry × (1 − (1/L + buffer))`` for a long, ``entry × (1 + (1/L + buffer))`` for a short."""
    offset = 1.0 / leverage + buffer
    return entry * (1.0 - offset) if side == "long" else entry * (1.0 + offset)


def bucket_total(tiers: Mapping[str, float]) -> float:
    """A bucket's USD: the sum of its tiers in tier order (fixed summation order)."""
    if len(tiers) < 2:
        return sum(tiers.values())
    return sum(tiers[t] for t in sorted(tiers, key=int))


def side_totals(projections: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """``{bucket: usd}`` of one side, buckets in index order."""
    return {k: bucket_total(projections[k]) for k in sorted(projections, key=int)}


def _scale_bucket(tiers: Mapping[str, float], factor: float, floor: float) -> dict[str, float] | None:
    """The bucket's tiers × ``factor`` in tier order, without those <= 0; None when nothing is left
    or the bucket's total is under ``floor``."""
    scaled = {}
    for t in tiers if len(tiers) < 2 else sorted(tiers, key=int):
        value = tiers[t] * factor
        if value > 0:
            scaled[t] = value
    # already in tier order, so the plain sum is bucket_total()
    return scaled if scaled and sum(scaled.values()) >= floor else None


def _scale(
    side: Mapping[str, Mapping[str, float]], factor: float, floor: float
) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for key in sorted(side, key=int):
        tiers = _scale_bucket(side[key], factor, floor)
        if tiers is not None:
            out[key] = tiers
    return out


def _sweep(projections: Projections, side: str, high: float, low: float, step: Decimal) -> int:
    swept = 0
    buckets = projections[side]
    for key in list(buckets):  # buckets are independent: the order does not matter
        price = bucket_price(int(key), step)
        hit = price >= low if side == "long" else price <= high
        if not hit:
            continue
        swept += 1
        remaining = _scale_bucket(buckets[key], 1.0 - SWEEP_REDUCTION_FACTOR, SWEEP_MIN_BUCKET_USD)
        if remaining is not None:
            buckets[key] = remaining
        else:
            del buckets[key]
    return swept


def _project(
    projections: Projections, side: str, usd: float, src: float, config: LeverageConfig, step: Decimal
) -> float:
    added = 0.0
    for tier, weight in config.normalized_weights().items():
        contribution = usd * weight
        if contribution < MIN_CONTRIBUTION_USD:
            continue
        key = str(bucket_index(liquidation_price(src, tier, side), step))
        tiers = projections[side].setdefault(key, {})
        tiers[str(tier)] = tiers.get(str(tier), 0.0) + contribution
        added += contribution
    return added


def oi_delta(
    previous: Mapping[str, str], reports: Mapping[str, Decimal]
) -> tuple[Decimal, Decimal, dict[str, str]]:
    """``(Δbase over exchanges with both values, previous total base, new per-exchange values)``."""
    delta = Decimal(0)
    prev_total = Decimal(0)
    for exchange in sorted(reports):
        if exchange in previous:
            delta += reports[exchange] - Decimal(previous[exchange])
            prev_total += Decimal(previous[exchange])
    merged = dict(previous)
    merged.update({ex: decimal_text(v) for ex, v in reports.items()})
    return delta, prev_total, dict(sorted(merged.items()))


def step_inference(
    state: Mapping[str, Any],
    *,
    oi_reports: Mapping[str, Decimal],
    src: float | None,
    high: float | None,
    low: float | None,
    buy_share: float,
    config: LeverageConfig,
    step: Decimal,
    gap: int,
) -> tuple[dict[str, Any], InferenceReport]:
    """Advance the inference one minute; see the module docstring for the rules and their order."""
    projections: Projections = {
        side: _scale(state.get(side, {}), DECAY**gap, MIN_BUCKET_USD) for side in SIDES
    }
    swept = {side: 0 for side in SIDES}
    if high is not None and low is not None:
        swept = {side: _sweep(projections, side, high, low, step) for side in SIDES}
    previous_oi: dict[str, str] = dict(state.get("oi_base", {}))
    skipped = not oi_reports
    delta_base, prev_total, new_oi = oi_delta(previous_oi, oi_reports)
    buy_weight = min(MAX_BUY_WEIGHT, max(MIN_BUY_WEIGHT, buy_share))
    delta_usd = float(delta_base) * src if src else 0.0
    opened = {"long": 0.0, "short": 0.0}
    close_factor = 0.0
    if not skipped and src and delta_usd > 0:
        threshold = float(prev_total) * src * MIN_OI_CHANGE_PCT
        if delta_usd >= threshold:
            opened["long"] = _project(projections, "long", delta_usd * buy_weight, src, config, step)
            opened["short"] = _project(projections, "short", delta_usd * (1 - buy_weight), src, config, step)
    elif not skipped and delta_base < 0 and prev_total > 0:
        close_factor = min(MAX_OI_REDUCTION_PER_MINUTE, float(-delta_base / prev_total))
        projections = {side: _scale(projections[side], 1.0 - close_factor, MIN_BUCKET_USD) for side in SIDES}
    totals = state.get("total_inferred", {})
    new_state: dict[str, Any] = {
        side: {k: projections[side][k] for k in sorted(projections[side], key=int)} for side in SIDES
    }
    new_state["oi_base"] = new_oi if not skipped else previous_oi
    new_state["total_inferred"] = {side: float(totals.get(side, 0.0)) + opened[side] for side in SIDES}
    report = InferenceReport(
        skipped, delta_base, delta_usd, buy_weight, opened["long"], opened["short"], close_factor, swept
    )
    return new_state, report
