"""The liquidation calibrator's rules (moonstream/jobs/engines/calibrator.py, spec/000 constants)."""

from __future__ import annotations

import itertools
import math

import pytest

from moonstream.jobs.engines import calibrator as cal
from moonstream.jobs.engines.inference import liquidation_price

TIERS = (5, 10, 20, 25, 50, 75, 100, 125, 150, 200, 250)
DISABLED = frozenset({10})
ENABLED = [t for t in TIERS if t not in DISABLED]
UNIFORM = {t: (0.0 if t in DISABLED else 1 / len(ENABLED)) for t in TIERS}
STEP = 20.0
WINDOW = (100, 114)


def _flat_bars(price: float, minutes: range) -> list[cal.MinuteBar]:
    return [cal.MinuteBar(m, price, price, price, price) for m in minutes]


def _crash_market(tier: int, n: int = 20) -> tuple[list[cal.MinuteBar], list[cal.LiquidationObs]]:
    """Flat at 50,000 before the window, then a dip in minute 110 down to 2 % below; ``n`` long
    liquidations exactly at the ``tier`` level of the flat entry price."""
    bars = _flat_bars(50_000.0, range(60, 110))
    bars.append(cal.MinuteBar(110, 50_000.0, 50_000.0, 49_000.0, 49_500.0))
    bars += _flat_bars(49_500.0, range(111, 115))
    level = liquidation_price(50_000.0, tier, "long")
    liqs = [cal.LiquidationObs(110, "long", level) for _ in range(n)]
    return bars, liqs


def test_constants_are_the_spec_values() -> None:
    assert (cal.TAU_PCT_BASE, cal.DELTA_PCT_BASE, cal.HIT_BUCKET_TOLERANCE) == (0.0012, 0.0008, 4)
    assert (cal.VOL_BASELINE, cal.VOL_SCALE_MIN, cal.VOL_SCALE_MAX, cal.VOL_EWMA_ALPHA) == (
        0.0015,
        0.7,
        1.6,
        0.1,
    )
    assert (cal.ANCHOR_LAMBDA, cal.RATIO_MIN, cal.RATIO_MAX, cal.MAX_WEIGHT) == (0.10, 0.85, 1.20, 0.35)
    assert (cal.BIAS_ETA, cal.BIAS_CAP, cal.MIN_BIAS_SAMPLES) == (0.10, 0.008, 10)
    assert (cal.MAX_OFFSET_PCT, cal.MAX_OFFSET_USD, cal.APPROACH_PCT) == (0.005, 2000.0, 0.0075)
    assert (cal.MINUTE_CACHE_SIZE, cal.WINDOW_MINUTES) == (60, 15)


def test_attribution_goes_to_the_tier_whose_level_was_hit() -> None:
    bars, liqs = _crash_market(75)
    up = cal.calibrate_window(UNIFORM, TIERS, DISABLED, liqs, bars, WINDOW, STEP)
    tiers = up.stats["tiers"]
    assert up.updated and up.stats["attributable"] == 20
    best = max(ENABLED, key=lambda t: tiers[str(t)]["attributed"])
    assert best == 75 and tiers["75"]["nearest"] == 20
    assert tiers["75"]["hits"] > 10 * max(tiers[str(t)]["hits"] for t in ENABLED if t != 75)
    # the hit tier gains, at most by the ratio clamp; every tier stays within [0.85, 1.20] x old
    assert up.weights[75] > UNIFORM[75]
    for t in ENABLED:
        assert cal.RATIO_MIN - 1e-9 <= up.weights[t] / UNIFORM[t] <= cal.RATIO_MAX + 1e-9


def test_soft_attribution_spreads_with_temperature() -> None:
    """An event halfway between two tiers' levels splits its responsibility between them."""
    bars, _ = _crash_market(75)
    mid = (liquidation_price(50_000.0, 75, "long") + liquidation_price(50_000.0, 100, "long")) / 2
    up = cal.calibrate_window(
        UNIFORM, TIERS, DISABLED, [cal.LiquidationObs(110, "long", mid)] * 6, bars, WINDOW, 100.0
    )
    a75, a100 = up.stats["tiers"]["75"]["attributed"], up.stats["tiers"]["100"]["attributed"]
    assert a75 == pytest.approx(a100, rel=1e-6) and a75 + a100 > 0.9 * 6


def test_unattributable_events_beyond_the_bucket_tolerance() -> None:
    bars, _ = _crash_market(75)
    far = liquidation_price(50_000.0, 75, "long") - 10 * STEP  # 10 buckets from any level crossed
    far_liqs = [cal.LiquidationObs(110, "long", far - 0.3 * i) for i in range(5)]
    up = cal.calibrate_window(UNIFORM, TIERS, DISABLED, far_liqs, bars, WINDOW, STEP)
    assert up.stats["unattributed"] == 5 and not up.updated and up.weights == UNIFORM


def test_disabled_tier_never_revived_and_tagged() -> None:
    bars, liqs = _crash_market(10, n=0)
    bars[-5] = cal.MinuteBar(110, 50_000.0, 50_000.0, 44_000.0, 45_000.0)  # deep enough for 10x
    level10 = liquidation_price(50_000.0, 10, "long")
    liqs = [cal.LiquidationObs(110, "long", level10)] * 12
    old = dict(UNIFORM)
    old[10] = 0.5  # even a non-zero incoming weight for a disabled tier is zeroed
    up = cal.calibrate_window(old, TIERS, DISABLED, liqs, bars, WINDOW, STEP)
    assert up.weights[10] == 0.0
    assert up.stats["tier_disabled"] == 12
    assert up.stats["tiers"]["10"]["attributed"] == 0.0 and up.stats["tiers"]["10"]["hits"] == 0.0
    assert math.fsum(up.weights.values()) == pytest.approx(1.0)


def test_max_weight_cap_and_normalization() -> None:
    old = {t: 0.0 for t in TIERS}
    old.update(
        {
            5: 0.34,
            20: 0.34,
            25: 0.05,
            50: 0.05,
            75: 0.05,
            100: 0.05,
            125: 0.04,
            150: 0.04,
            200: 0.02,
            250: 0.02,
        }
    )
    proposal = dict(old)
    proposal[5] = 5.0  # wants far more
    new = cal.stabilize(old, proposal, TIERS, DISABLED)
    assert max(new.values()) <= cal.MAX_WEIGHT + 1e-12
    assert math.fsum(new.values()) == pytest.approx(1.0)
    for t in ENABLED:
        assert cal.RATIO_MIN * old[t] - 1e-12 <= new[t] <= cal.RATIO_MAX * old[t] + 1e-12


def test_anchoring_moves_a_tenth_of_the_way() -> None:
    proposal = dict(UNIFORM)
    proposal[50], proposal[100] = UNIFORM[50] * 1.5, UNIFORM[100] * 0.5  # same total
    new = cal.stabilize(UNIFORM, proposal, TIERS, DISABLED)
    assert new[50] == pytest.approx(UNIFORM[50] * 1.05)
    assert new[100] == pytest.approx(UNIFORM[100] * 0.95)


def test_entropy_floor_stops_collapse() -> None:
    """Repeated windows that all point at one tier never concentrate the weights beyond the cap or
    below the entropy floor ``min(ENTROPY_FLOOR, H(old))``."""
    bars, liqs = _crash_market(75, n=40)
    weights = dict(UNIFORM)
    for _ in range(60):
        up = cal.calibrate_window(weights, TIERS, DISABLED, liqs, bars, WINDOW, STEP)
        assert up.stats["entropy_after"] >= min(cal.ENTROPY_FLOOR, up.stats["entropy_before"]) - 1e-9
        weights = up.weights
    assert max(weights.values()) <= cal.MAX_WEIGHT + 1e-12
    assert cal.entropy({t: weights[t] for t in ENABLED}) >= cal.ENTROPY_FLOOR - 1e-9


def test_entropy_floor_mixes_toward_uniform() -> None:
    tiers = (5, 20, 25)
    old = {5: 1 / 3, 20: 1 / 3, 25: 1 / 3}
    proposal = {5: 1.0, 20: 0.0, 25: 0.0}
    new = cal.stabilize(old, proposal, tiers, frozenset())
    assert cal.entropy(new) >= min(cal.ENTROPY_FLOOR, cal.entropy(old)) - 1e-9
    assert math.fsum(new.values()) == pytest.approx(1.0)


def test_volatility_scaling_is_clamped() -> None:
    assert cal.vol_scale(0.0) == cal.VOL_SCALE_MIN
    assert cal.vol_scale(1.0) == cal.VOL_SCALE_MAX
    assert cal.vol_scale(cal.VOL_BASELINE) == 1.0
    bars = [cal.MinuteBar(m, p, p, p, p) for m, p in enumerate([100.0, 101.0, 100.0])]
    vol = cal.volatility(bars, cal.VOL_BASELINE)
    expected = cal.VOL_BASELINE
    for r in (math.log(1.01), math.log(100 / 101)):
        expected = 0.9 * expected + 0.1 * abs(r)
    assert vol == pytest.approx(expected)


def test_bias_correction_learns_within_cap() -> None:
    bars, _ = _crash_market(75)
    level = liquidation_price(50_000.0, 75, "long")
    shifted = [cal.LiquidationObs(110, "long", level * 1.0012) for _ in range(12)]  # +12 bps miss
    up = cal.calibrate_window(UNIFORM, TIERS, DISABLED, shifted, bars, WINDOW, STEP)
    assert up.stats["bias_samples"]["long"] == 12
    assert up.memory.bias["long"] == pytest.approx(cal.BIAS_ETA * (1 - 1 / 1.0012), rel=1e-6)
    assert up.memory.bias["short"] == 0.0
    few = cal.calibrate_window(UNIFORM, TIERS, DISABLED, shifted[:9], bars, WINDOW, STEP)
    assert few.memory.bias["long"] == 0.0  # fewer than MIN_BIAS_SAMPLES
    capped = cal.CalibratorMemory(bias={"long": cal.BIAS_CAP, "short": 0.0})
    up2 = cal.calibrate_window(UNIFORM, TIERS, DISABLED, shifted, bars, WINDOW, STEP, capped)
    assert up2.memory.bias["long"] <= cal.BIAS_CAP


def test_untested_tiers_keep_their_weight_ratio() -> None:
    """Tiers whose levels the price never crossed carry no evidence: their weights only move with
    the renormalization (their ratios to each other are unchanged)."""
    bars, liqs = _crash_market(75)
    up = cal.calibrate_window(UNIFORM, TIERS, DISABLED, liqs, bars, WINDOW, STEP)
    assert up.stats["tiers"]["5"]["crossings"] == 0
    assert up.weights[5] == pytest.approx(up.weights[20]) == pytest.approx(up.weights[25])


def test_deterministic_and_order_independent() -> None:
    bars, liqs = _crash_market(100)
    liqs = liqs + [cal.LiquidationObs(110, "long", liquidation_price(50_000.0, 50, "long"))] * 3
    a = cal.calibrate_window(UNIFORM, TIERS, DISABLED, liqs, bars, WINDOW, STEP)
    b = cal.calibrate_window(
        UNIFORM, TIERS, DISABLED, list(reversed(liqs)), list(reversed(bars)), WINDOW, STEP
    )
    assert a.weights == b.weights and a.stats == b.stats and a.memory == b.memory


def test_quiet_window_carries_weights() -> None:
    bars = _flat_bars(50_000.0, range(60, 115))
    up = cal.calibrate_window(UNIFORM, TIERS, DISABLED, [], bars, WINDOW, STEP)
    assert not up.updated and up.weights == UNIFORM and up.stats["events"] == 0


def test_converges_toward_the_mix_when_tiers_are_identifiable() -> None:
    """A market where every tier's level is crossed in its own minute (one flat entry price, then a
    staircase down through the levels) and liquidations per tier follow a known mix: repeated
    windows move the uniform weights toward the mix (L1 distance falls every window)."""
    mix = dict(zip(TIERS, (1.0, 1.0, 0.9, 0.7, 0.35, 0.14, 0.08, 0.05, 0.03, 0.015, 0.008), strict=True))
    total = sum(mix[t] for t in ENABLED)
    truth = {t: mix[t] / total for t in ENABLED}
    entry = 50_000.0
    bars = _flat_bars(entry, range(40, 101))
    liqs: list[cal.LiquidationObs] = []
    for i, tier in enumerate(sorted(ENABLED, reverse=True)):  # 250x first, 5x last
        minute = 101 + i
        level = liquidation_price(entry, tier, "long")
        bars.append(cal.MinuteBar(minute, level + 5, level + 5, level - 1, level))
        liqs += [cal.LiquidationObs(minute, "long", level)] * round(400 * truth[tier])
    bars += _flat_bars(bars[-1].close, range(111, 115))
    weights = dict(UNIFORM)
    distances = [sum(abs(weights[t] - truth[t]) for t in ENABLED)]
    for _ in range(12):
        weights = cal.calibrate_window(weights, TIERS, DISABLED, liqs, bars, WINDOW, STEP).weights
        distances.append(sum(abs(weights[t] - truth[t]) for t in ENABLED))
    print("L1 per window:", [round(d, 4) for d in distances])
    assert all(b < a for a, b in itertools.pairwise(distances)), distances
    assert distances[-1] < 0.6 * distances[0]
