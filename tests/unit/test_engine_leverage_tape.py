"""Leverage registry, price buckets, the liquidation tape and taker aggression."""

from __future__ import annotations

import math
from decimal import Decimal

import pytest

from moonstream.jobs.engines import aggression, tape
from moonstream.jobs.engines.leverage import (
    BTC_TIERS,
    BTC_WEIGHTS,
    LeverageConfig,
    leverage_config,
    v3_tier_weight,
)
from moonstream.jobs.events import LiquidatedSide, Liquidation, TakerSide, Trade


def liq(
    side: LiquidatedSide, price: str, qty: str, avg: str | None = None, ex: str = "binance"
) -> Liquidation:
    return Liquidation(
        ex,
        "BTC",
        1,
        1,
        side,
        Decimal(price),
        Decimal(avg) if avg else None,
        Decimal(qty),
        Decimal(qty),
        Decimal(qty),
        "FILLED",
    )


def trade(
    price: str, qty: str, side: TakerSide, tid: int, *, ex: str = "binance", agg: bool = False
) -> Trade:
    return Trade(ex, "BTC", tid, tid, tid, Decimal(price), Decimal(qty), side, agg, None, None, False)


def test_tier_ladders_per_symbol() -> None:
    btc = leverage_config("BTC")
    assert btc.tiers == (5, 10, 20, 25, 50, 75, 100, 125, 150, 200, 250)
    assert btc.weights == (1.0, 1.0, 0.9, 0.7, 0.35, 0.14, 0.08, 0.05, 0.03, 0.015, 0.008)
    assert leverage_config("ETH").tiers[-1] == 125 and len(leverage_config("ETH").tiers) == 8
    assert leverage_config("SOL").tiers == (5, 10, 20, 25, 50, 75)
    assert leverage_config("DOGE").tiers == (5, 10, 20, 50, 75, 100)


def test_disabled_tier_10x_excluded_and_M5_normalization_over_enabled_tiers_only() -> None:
    config = leverage_config("BTC")
    weights = config.normalized_weights()
    assert 10 not in weights and 10 not in config.enabled_tiers
    assert math.isclose(sum(weights.values()), 1.0)
    enabled_total = sum(w for t, w in zip(BTC_TIERS, BTC_WEIGHTS, strict=True) if t != 10)
    assert math.isclose(weights[5], 1.0 / enabled_total)
    assert v3_tier_weight(10) == 0.0 and v3_tier_weight(100) == 1.0


def test_M7_every_btc_tier_has_a_default_weight() -> None:
    weights = leverage_config("BTC").normalized_weights()
    assert sorted(weights) == [5, 20, 25, 50, 75, 100, 125, 150, 200, 250]
    assert all(w > 0 for w in weights.values())


def test_calibrator_weights_cannot_revive_disabled_tier() -> None:
    config = leverage_config("BTC").with_weights({10: 5.0, 20: 1.0, 50: 1.0})
    assert config.normalized_weights() == {
        5: 0.0,
        20: 0.5,
        25: 0.0,
        50: 0.5,
        75: 0.0,
        100: 0.0,
        125: 0.0,
        150: 0.0,
        200: 0.0,
        250: 0.0,
    }
    with pytest.raises(ValueError):
        LeverageConfig("X", (5, 10), (1.0,))


def test_bucket_grid_by_integer_index_sol() -> None:
    step = tape.bucket_step("SOL")
    prices = tape.grid(1400, 1700, step)
    assert prices[0] == 140.0 and prices[-1] == 170.0 and len(prices) == 301
    assert prices[123] == float(Decimal("152.3"))  # no drift from repeated addition
    assert tape.bucket_index(Decimal("150.04"), step) == 1500
    assert tape.bucket_index(Decimal("150.06"), step) == 1501
    assert tape.bucket_step("BTC") == Decimal("20") and tape.bucket_step("ETH") == Decimal("1.0")
    with pytest.raises(ValueError):
        tape.bucket_step("NOPE")


def test_tape_buckets_by_fill_price_and_side_with_exact_new_event_sums() -> None:
    events = [
        liq(LiquidatedSide.LONG, "60010", "0.1", avg="60005.5"),
        liq(LiquidatedSide.LONG, "60001", "0.003"),
        liq(LiquidatedSide.SHORT, "61000", "1.1", ex="okx"),
    ]
    state, new, per_ex = tape.step_tape({}, events, Decimal("20"), 1)
    assert new["long"].count == 2 and new["long"].notional_usd == Decimal("6000.55") + Decimal("180.003")
    assert new["short"].document() == {"count": 1, "notional_usd": "67100"}
    assert list(state["long"]) == ["3000"] and state["short"] == {"3050": 67100.0}
    assert per_ex["okx"]["short"].count == 1 and per_ex["binance"]["short"].count == 0
    assert state["total_events"] == 3 and state["total_notional"]["long"] == "6180.553"


def test_tape_decays_per_minute_and_catches_up_gaps() -> None:
    state = {"long": {"100": 1000.0}, "short": {}, "total_events": 1, "total_notional": {}}
    one, _, _ = tape.step_tape(state, [], Decimal("20"), 1)
    assert one["long"]["100"] == pytest.approx(995.0)
    five, _, _ = tape.step_tape(state, [], Decimal("20"), 5)
    assert five["long"]["100"] == pytest.approx(1000 * 0.995**5)
    gone, _, _ = tape.step_tape({"long": {"1": 1.001}, "short": {}}, [], Decimal("20"), 1)
    assert gone["long"] == {}


def test_aggression_picks_trade_source_and_keeps_10_minutes() -> None:
    trades = [
        trade("100", "1", TakerSide.BUY, 1, agg=True),
        trade("100", "1", TakerSide.BUY, 2),
        trade("100", "3", TakerSide.SELL, 3),
        trade("200", "1", TakerSide.SELL, 4, ex="bybit", agg=True),
    ]
    picked = aggression.pick_trades(trades)
    assert [t.trade_id for t in picked] == [2, 3, 4]
    now = aggression.minute_aggression(picked)
    assert now.buy_usd == Decimal(100) and now.sell_usd == Decimal(500)
    state: dict = {}
    for m in range(1, 15):
        state = aggression.step_aggression(state, m, now)
    assert [h["minute"] for h in state["history"]] == list(range(5, 15))
    share, fallback = aggression.buy_share(state, aggression.MinuteAggression(Decimal(0), Decimal(0)))
    assert fallback and share == pytest.approx(1 / 6)
    assert aggression.buy_share({}, aggression.MinuteAggression(Decimal(0), Decimal(0))) == (0.5, True)
