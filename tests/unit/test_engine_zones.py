"""V3 zone lifecycle, the zone tracker, and the whole liquidations step (products, determinism)."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from moonstream.jobs.engines import zone_tracker, zones
from moonstream.jobs.engines.heatmap_v2 import Pool
from moonstream.jobs.engines.liquidations import PRODUCTS, step_liquidations
from moonstream.jobs.events import LiquidatedSide, Liquidation, MarkPrice, OpenInterest, TakerSide, Trade

STEP = Decimal("20")


def pool(side: str, price: float, intensity: float = 1.0, tape: float = 50_000.0, proj: float = 0.0) -> Pool:
    return Pool(side, price, price, price, tape, proj, intensity, 1, intensity)


def zstep(
    state: dict,
    minute: int,
    pools: dict,
    *,
    gap: int = 1,
    src: float = 60000.0,
    high: float | None = None,
    low: float | None = None,
    projection: dict | None = None,
) -> tuple[dict, list]:
    return zones.step_zones(
        state,
        pools=pools,
        projection=projection or {},
        minute=minute,
        gap=gap,
        src=src,
        high=high,
        low=low,
        step=STEP,
    )


def test_zone_created_then_reinforced_with_factor_and_cap() -> None:
    state, events = zstep({}, 1, {"long": [pool("long", 59000.0, 0.8)]})
    assert [e["type"] for e in events] == ["created"]
    assert state["zones"][0]["weight"] == pytest.approx(0.8) and state["zones"][0]["state"] == "created"
    state, events = zstep(state, 2, {"long": [pool("long", 59000.0, 0.5)]})
    assert events[0]["type"] == "reinforced"
    assert state["zones"][0]["weight"] == pytest.approx(0.8 * 0.995 + 0.5 * 0.3)
    assert state["zones"][0]["reinforcement_count"] == 1
    for m in range(3, 200):
        state, _ = zstep(state, m, {"long": [pool("long", 59000.0, 1.0)]})
    assert state["zones"][0]["weight"] <= zones.MAX_ZONE_WEIGHT


def test_zone_swept_by_price() -> None:
    state, _ = zstep({}, 1, {"long": [pool("long", 59000.0)], "short": [pool("short", 61000.0)]})
    state, events = zstep(state, 2, {}, high=60500.0, low=58990.0)
    assert [(e["type"], e["side"]) for e in events] == [("swept", "long")]
    assert [z["side"] for z in state["zones"]] == ["short"]
    assert state["counters"]["swept"] == 1


def test_zone_expires_below_min_weight() -> None:
    state, _ = zstep({}, 1, {"long": [pool("long", 59000.0, 0.06)]})
    state, events = zstep(state, 60, {}, gap=59)
    assert events[0]["type"] == "expired" and events[0]["reason"] == "weight"


def test_zone_expires_by_age_only_when_price_is_2_percent_away() -> None:
    state, _ = zstep({}, 0, {"long": [pool("long", 59000.0, 5.0)]})
    near, events = zstep(state, 241, {}, gap=241, src=59_500.0)  # 0.85 % away: kept
    assert events == [] and len(near["zones"]) == 1
    far, events = zstep(state, 241, {}, gap=241, src=61_000.0)  # 3.3 % away: expired
    assert events[0]["type"] == "expired" and events[0]["reason"] == "age" and far["zones"] == []


def test_M10_catch_up_decay_across_missing_minutes() -> None:
    state, _ = zstep({}, 1, {"long": [pool("long", 59000.0, 2.0)]})
    later, _ = zstep(state, 121, {}, gap=120)
    assert later["zones"][0]["weight"] == pytest.approx(2.0 * 0.995**120)


def test_zones_merge_within_0_05_percent() -> None:
    state, events = zstep({}, 1, {"short": [pool("short", 61000.0, 1.0), pool("short", 61020.0, 0.5)]})
    assert [e["type"] for e in events] == ["created", "created", "merged"]
    assert len(state["zones"]) == 1 and state["zones"][0]["weight"] == pytest.approx(1.5)
    state2, _ = zstep({}, 1, {"short": [pool("short", 61000.0), pool("short", 61100.0)]})
    assert len(state2["zones"]) == 2


def test_disabled_tier_never_in_zone_contributions() -> None:
    projection = {"long": {"2950": {"10": 50_000.0, "20": 50_000.0}}}
    state, _ = zstep(
        {}, 1, {"long": [pool("long", 59000.0, 1.0, tape=0.0, proj=100_000.0)]}, projection=projection
    )
    assert list(state["zones"][0]["tiers"]) == ["20"]
    assert state["zones"][0]["weight"] == pytest.approx(0.5 * 0.4)  # USD-weighted V3 tier mix


def test_tracker_enter_exit_ttl_and_peak_drop() -> None:
    s = zone_tracker.track_side([], [(100, 0.06), (200, 0.5)], 1)
    assert [z["index"] for z in s] == [200]  # 0.06 < enter margin 0.07
    s = zone_tracker.track_side(s, [(201, 0.4)], 2)
    assert s[0]["index"] == 200 and s[0]["strength"] == 0.4  # matched within one bucket
    s = zone_tracker.track_side(s, [(201, 0.14)], 3)
    assert s == []  # 0.14 < 30 % of peak 0.5
    s = zone_tracker.track_side([], [(300, 0.5)], 1)
    assert zone_tracker.track_side(s, [], 11) != [] and zone_tracker.track_side(s, [], 12) == []
    full = zone_tracker.track_side([], [(i * 10, 0.5) for i in range(5)], 1)
    assert len(full) == 5
    assert len(zone_tracker.track_side(full, [(i * 10, 0.5) for i in range(5)] + [(999, 0.55)], 2)) == 5
    swapped = zone_tracker.track_side(full, [(i * 10, 0.5) for i in range(5)] + [(999, 0.6)], 2)
    assert 999 in [z["index"] for z in swapped]


def _minute_events(m: int) -> list:
    d = Decimal
    ev: list = [
        Trade(
            "binance", "BTC", 1, 1, m * 10, d("60000") + m, d("1.5"), TakerSide.BUY, False, None, None, False
        ),
        Trade(
            "bybit",
            "BTC",
            2,
            2,
            m * 10 + 1,
            d("60100") - m,
            d("0.7"),
            TakerSide.SELL,
            False,
            None,
            None,
            False,
        ),
        OpenInterest("binance", "BTC", 3, 3, d(80_000 + 40 * m)),
        OpenInterest("okx", "BTC", 3, 3, d(30_000 + (m % 3) * 7)),
        MarkPrice("binance", "BTC", 4, 4, d("60050"), d("60040"), d("0.0001"), 0),
    ]
    if m % 2:
        ev.append(
            Liquidation(
                "okx",
                "BTC",
                5,
                5,
                LiquidatedSide.LONG,
                d("59700.1"),
                None,
                d("0.013"),
                d("0.013"),
                d("0.013"),
                "FILLED",
            )
        )
    ev.append(
        Liquidation(
            "binance",
            "BTC",
            6,
            6,
            LiquidatedSide.SHORT,
            d("60410"),
            d("60412.3"),
            d("0.2"),
            d("0.2"),
            d("0.2"),
            "FILLED",
        )
    )
    return ev


def _run(minutes: range, roundtrip: bool) -> list[str]:
    state: dict = {}
    out = []
    for m in minutes:
        state, bodies = step_liquidations(state, _minute_events(m), "BTC", m)
        if roundtrip:
            state = json.loads(json.dumps(state))
        out.append(json.dumps(bodies, sort_keys=True) + json.dumps(state, sort_keys=True))
    return out


def test_deterministic_and_state_is_plain_json() -> None:
    first = _run(range(1000, 1030), roundtrip=True)
    assert first == _run(range(1000, 1030), roundtrip=True)
    assert first == _run(range(1000, 1030), roundtrip=False)


def test_liq_stats_new_events_sum_exactly_to_input_notionals() -> None:
    state: dict = {}
    total = {"long": Decimal(0), "short": Decimal(0)}
    expected = {"long": Decimal(0), "short": Decimal(0)}
    for m in range(1, 41):
        events = _minute_events(m)
        for e in events:
            if isinstance(e, Liquidation):
                expected[e.side.value] += e.notional_usd
        state, bodies = step_liquidations(state, events, "BTC", m)
        assert set(bodies) == set(PRODUCTS)
        for side in ("long", "short"):
            total[side] += Decimal(bodies["liq_stats"]["new_events"][side]["notional_usd"])
    assert total == expected
    assert state["tape"]["total_notional"] == {k: format(v.normalize(), "f") for k, v in expected.items()}


def test_M27_zones_heatmap_notional_is_measured_not_fabricated_from_weight() -> None:
    state: dict = {}
    for m in range(1, 20):
        state, bodies = step_liquidations(state, _minute_events(m), "BTC", m)
    heat = bodies["liq_zones_heatmap"]["zones"]
    assert heat
    for z in heat:
        assert z["notional_usd"] != pytest.approx(z["weight"] * 100_000.0)
        assert z["notional_usd"] == pytest.approx(z["tape_usd"] + z["projection_usd"], abs=0.02)


def test_M20_v1_size_fields_named_after_symbol_and_v1_shape() -> None:
    state: dict = {}
    _, bodies = step_liquidations(state, _minute_events(1), "BTC", 1)
    v1 = bodies["liq_heatmap"]
    for key in (
        "ts",
        "src",
        "step",
        "price_min",
        "price_max",
        "prices",
        "long_intensity",
        "short_intensity",
        "long_notional_usd",
        "short_notional_usd",
        "long_size_btc",
        "short_size_btc",
        "top_long_zones",
        "top_short_zones",
        "norm",
    ):
        assert key in v1
    assert len(v1["prices"]) == len(v1["long_intensity"]) == len(v1["short_size_btc"])
    eth_events = [e for e in _minute_events(1) if not isinstance(e, Liquidation | OpenInterest)]
    eth_events = [type(e)(**{**{f: getattr(e, f) for f in e.__slots__}, "symbol": "ETH"}) for e in eth_events]
    _, eth = step_liquidations({}, eth_events, "ETH", 1)
    assert "long_size_eth" in eth["liq_heatmap"] and "long_size_btc" not in eth["liq_heatmap"]


def test_oi_product_per_exchange_and_aggregated_and_skipped_poll() -> None:
    state, bodies = step_liquidations({}, _minute_events(1), "BTC", 1)
    oi = bodies["oi"]
    assert oi["aggregated"]["open_interest_base"] == "110047"
    assert oi["exchanges"]["binance"]["open_interest_usd"] == str(
        80040 * 60099
    )  # last trade of the minute (bybit)
    no_oi = [e for e in _minute_events(2) if not isinstance(e, OpenInterest)]
    _, bodies = step_liquidations(state, no_oi, "BTC", 2)
    assert bodies["oi"]["aggregated"]["skipped"] is True
    assert bodies["oi"]["aggregated"]["open_interest_base"] == "110047"
    assert bodies["liq_stats"]["inference"]["oi_skipped"] is True


def test_calibrator_weights_hook_is_used_and_carried() -> None:
    state = {"calibrator_weights": {"10": 0.9, "50": 1.0}}
    new_state, bodies = step_liquidations(state, _minute_events(1), "BTC", 1)
    assert bodies["liq_stats"]["inference"]["leverage_weights"]["50"] == 1.0
    assert "10" not in bodies["liq_stats"]["inference"]["leverage_weights"]
    assert new_state["calibrator_weights"] == state["calibrator_weights"]
