"""Entry inference (OI deltas, projection, closing cap, sweeps, failed polls) and the V2 heatmap."""

from __future__ import annotations

import math
from decimal import Decimal

import pytest

from moonstream.jobs.engines import heatmap_v2, inference, quantile
from moonstream.jobs.engines.leverage import leverage_config
from moonstream.jobs.engines.tape import bucket_index

STEP = Decimal("20")
BTC = leverage_config("BTC")


def run(
    state: dict,
    reports: dict[str, str],
    *,
    src: float = 60000.0,
    high: float | None = None,
    low: float | None = None,
    buy: float = 0.5,
    gap: int = 1,
) -> tuple[dict, inference.InferenceReport]:
    return inference.step_inference(
        state,
        oi_reports={k: Decimal(v) for k, v in reports.items()},
        src=src,
        high=high,
        low=low,
        buy_share=buy,
        config=BTC,
        step=STEP,
        gap=gap,
    )


def total(state: dict, side: str) -> float:
    return sum(inference.side_totals(state[side]).values())


def test_first_report_sets_baseline_then_oi_increase_projects_per_enabled_tier() -> None:
    state, report = run({}, {"binance": "1000"})
    assert report.long_open_usd == 0 and state["oi_base"] == {"binance": "1000"}
    state, report = run(state, {"binance": "1010"}, buy=0.7)
    assert report.oi_delta_usd == pytest.approx(600_000.0)
    assert report.long_open_usd == pytest.approx(420_000.0) and report.short_open_usd == pytest.approx(
        180_000.0
    )
    tiers = {t for b in state["long"].values() for t in b}
    assert "10" not in tiers and "250" in tiers and "5" in tiers
    # liq = src × (1 − 1/L − 0.002) for longs, (1 + 1/L + 0.002) for shorts
    assert str(bucket_index(60000 * (1 - 1 / 20 - 0.002), STEP)) in state["long"]
    assert str(bucket_index(60000 * (1 + 1 / 20 + 0.002), STEP)) in state["short"]
    assert total(state, "long") == pytest.approx(420_000.0)


def test_buy_weight_clamped_to_10_90() -> None:
    state, _ = run({}, {"binance": "1000"})
    _, report = run(state, {"binance": "1010"}, buy=1.0)
    assert report.buy_weight == 0.9 and report.short_open_usd == pytest.approx(60_000.0)


def test_oi_usd_is_base_units_times_price_summed_across_exchanges() -> None:
    state, _ = run({}, {"binance": "1000", "bybit": "500"})
    _, report = run(state, {"binance": "1002", "bybit": "501", "okx": "9999"}, src=50000.0)
    assert report.oi_delta_base == Decimal(3)  # okx is new: baseline only
    assert report.oi_delta_usd == pytest.approx(150_000.0)


def test_M15_poll_with_every_exchange_failed_is_skipped_not_zero_oi() -> None:
    state, _ = run({}, {"binance": "1000"})
    state, _ = run(state, {"binance": "1010"})
    before = total(state, "long")
    after, report = run(state, {})
    assert report.oi_skipped and report.close_factor == 0.0
    assert after["oi_base"] == {"binance": "1010"}
    assert total(after, "long") == pytest.approx(before * 0.995)


def test_M2_close_factor_uses_previous_oi_pro_rata() -> None:
    state, _ = run({}, {"binance": "1000"})
    state, _ = run(state, {"binance": "1100"})
    before = total(state, "long")
    after, report = run(state, {"binance": "1067"})
    assert report.close_factor == pytest.approx(33 / 1100)
    assert total(after, "long") == pytest.approx(before * 0.995 * (1 - 33 / 1100), rel=1e-9)


def test_A2_oi_drop_closing_capped_at_25_percent_per_minute() -> None:
    state, _ = run({}, {"binance": "1000"})
    state, _ = run(state, {"binance": "1100"})
    before = total(state, "short")
    after, report = run(state, {"binance": "100"})
    assert report.close_factor == 0.25
    assert total(after, "short") == pytest.approx(before * 0.995 * 0.75, rel=1e-9)


def test_A1_sweep_reduces_bucket_by_sweep_factor() -> None:
    state = {
        "long": {"2900": {"20": 10_000.0}, "2800": {"20": 10_000.0}},
        "short": {"3190": {"50": 200.0}, "3200": {"50": 200.0}},
        "oi_base": {},
    }
    after, report = run(state, {}, high=63_900.0, low=57_900.0)
    assert after["long"]["2900"]["20"] == pytest.approx(10_000 * 0.995 * 0.30)
    assert after["long"]["2800"]["20"] == pytest.approx(10_000 * 0.995)
    assert "3190" not in after["short"]  # 200 × 0.995 × 0.3 < $100: removed
    assert "3200" in after["short"]  # 64000 > high: untouched
    assert report.swept_buckets == {"long": 1, "short": 1}


def test_projection_decay_catch_up_across_gap() -> None:
    state = {"long": {"2900": {"20": 10_000.0}}, "short": {}, "oi_base": {}}
    after, _ = run(state, {}, gap=30)
    assert after["long"]["2900"]["20"] == pytest.approx(10_000 * 0.995**30)


def test_independent_p99_normalization_and_weights() -> None:
    buckets, scales = heatmap_v2.combine_side({"1": 5_000.0}, {"2": 5_000_000.0, "3": 1_000_000.0})
    by_index = {b.index: b.score for b in buckets}
    assert by_index[1] == pytest.approx(0.35)  # tape alone saturates its own scale
    assert scales["projection"] == pytest.approx(float(__import__("numpy").percentile([1e6, 5e6], 99)))
    assert by_index[2] == pytest.approx(0.65)


def _projection_pools(n: int) -> dict[str, float]:
    # n projection buckets far apart (each its own cluster), $5M each
    return {str(2000 + 50 * i): 5_000_000.0 for i in range(n)}


def test_M6_tape_only_pools_not_crowded_out() -> None:
    tape = {"1500": 20_000.0}
    raw = heatmap_v2.raw_heatmap(
        {"long": tape, "short": {}}, {"long": _projection_pools(30), "short": {}}, 60000.0, STEP
    )
    pools = raw.pools["long"]
    assert len(pools) == heatmap_v2.MAX_POOLS_PER_SIDE
    assert any(p.source == "tape" and p.price_low == 30000.0 for p in pools)


def test_pool_selection_min_notional_and_max_20() -> None:
    raw = heatmap_v2.raw_heatmap(
        {"long": {"1500": 9_999.0}, "short": {}}, {"long": _projection_pools(25), "short": {}}, 60000.0, STEP
    )
    assert len(raw.pools["long"]) == 20
    assert all(p.notional_usd >= 10_000 for p in raw.pools["long"])


def test_clustering_radius_and_measured_notional() -> None:
    # 60000 × 0.005 × 2 = $600 width: buckets at 59000..59600 form one pool, 59640 starts another
    proj = {str(i): 10_000.0 for i in (2950, 2960, 2980, 2982)}
    pools = heatmap_v2.cluster("long", heatmap_v2.combine_side({}, proj)[0], 60000.0, STEP)
    assert [(p.price_low, p.price_high, p.bucket_count) for p in pools] == [
        (59000.0, 59600.0, 3),
        (59640.0, 59640.0, 1),
    ]
    assert pools[0].notional_usd == 30_000.0


def test_display_boost_kept_apart_from_raw_path() -> None:
    raw = heatmap_v2.raw_heatmap(
        {"long": {"2950": 50_000.0}, "short": {}},
        {"long": {"2951": 200_000.0, "2700": 400_000.0}, "short": {}},
        60000.0,
        STEP,
    )
    combined = next(p for p in raw.pools["long"] if p.source == "combined")
    levels = heatmap_v2.display_levels(raw.pools["long"])
    level = next(lv for lv in levels if lv["source"] == "combined")
    assert level["display_intensity"] == pytest.approx(min(1.0, combined.intensity * 1.5), abs=1e-4)
    assert level["intensity"] == round(combined.intensity, 4)
    again = heatmap_v2.raw_heatmap(
        {"long": {"2950": 50_000.0}, "short": {}},
        {"long": {"2951": 200_000.0, "2700": 400_000.0}, "short": {}},
        60000.0,
        STEP,
    )
    assert again == raw  # rendering the display did not touch the raw objects
    assert math.isclose(max(p.intensity for p in raw.pools["long"]), 1.0)


def test_grid_window_is_capped_at_1000_buckets() -> None:
    lo, hi = heatmap_v2.grid_window(60000.0, STEP)
    assert (lo, hi) == (2700, 3300)
    lo, hi = heatmap_v2.grid_window(150_000.0, STEP)
    assert hi - lo + 1 == 1000


# --- exact shortcuts: the same floats as the operations they replace -----------------------------


def test_percentile_gives_numpys_linear_percentile_bit_for_bit() -> None:
    """quantile.percentile repeats np.percentile's float operations (virtual index, then lerp)."""
    import random

    import numpy as np

    rng = random.Random(5)
    for n in [1, 2, 3, 7, 100, 101, 1000] + [rng.randint(1, 400) for _ in range(300)]:
        kind = rng.random()
        if kind < 0.3:
            values = [rng.uniform(0, 1e6) for _ in range(n)]
        elif kind < 0.6:
            values = [float(rng.choice((1, 2, 3))) * 10.0 ** rng.randint(-8, 12) for _ in range(n)]
        else:
            values = [rng.expovariate(1e-3) for _ in range(n)]
        values.sort()
        for q in (50, 95, 99):
            expected = float(np.percentile(np.array(values), q))
            assert quantile.percentile(values, q).hex() == expected.hex(), (n, q)


@pytest.mark.parametrize(
    "step", [Decimal("20"), Decimal("1.0"), Decimal("0.10"), Decimal("0.001"), Decimal("0.3")]
)
def test_bucket_price_is_the_decimal_product_as_float(step: Decimal) -> None:
    from moonstream.jobs.engines.tape import bucket_price, grid

    indexes = list(range(0, 3000)) + list(range(10**6, 10**6 + 3000)) + [7 * 10**8 + i for i in range(500)]
    for index in indexes:
        assert bucket_price(index, step) == float(Decimal(index) * step), index
    assert grid(10**6, 10**6 + 50, step) == [float(Decimal(i) * step) for i in range(10**6, 10**6 + 51)]
