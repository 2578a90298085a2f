"""All liquidation engines of one symbol, stepped together once per minute.

``step_liquidations(state, events, symbol, minute)`` runs, in order: price context → taker aggression
→ tape → entry inference → raw V2 heatmap → V3 zones → zone tracker, and renders the products
``liq_heatmap`` (V1 shape), ``liq_heatmap_v2``, ``liq_stats``, ``liq_zones``, ``liq_zones_summary``,
``liq_zones_heatmap`` and ``oi``. Pure and deterministic; the state is plain JSON.

Price context of the minute: the trades picked as in the market engine (per exchange, individual
trades else aggregated), all exchanges together in receive order: ``src`` = OHLC4, ``high``, ``low``,
reference price = close. Without trades: the last mark price (no high/low, so nothing is swept);
without either: the previous minute's price carried in the state.

Calibrator hook: ``state["calibrator_weights"]`` (``{"<tier>": weight}``), written by the calibrate
job, replaces the ladder weights (disabled tiers zeroed, renormalized over enabled tiers); it is
carried through unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from moonstream.jobs.engines import aggression, heatmap_v2, inference, tape, zone_tracker, zones
from moonstream.jobs.engines.heatmap_v1 import v1_document
from moonstream.jobs.engines.leverage import LeverageConfig, leverage_config
from moonstream.jobs.engines.market import decimal_text
from moonstream.jobs.events import Event, Liquidation, MarkPrice, OpenInterest, Trade, types_other_than

ENGINE_VERSION = "liquidations-1"
PRODUCTS: tuple[str, ...] = (
    "liq_heatmap",
    "liq_heatmap_v2",
    "liq_stats",
    "liq_zones",
    "liq_zones_summary",
    "liq_zones_heatmap",
    "oi",
)
_CENT = Decimal("0.01")
_IGNORED = types_other_than(Trade, Liquidation, MarkPrice, OpenInterest)


def _config(symbol: str, state: Mapping[str, Any]) -> LeverageConfig:
    config = leverage_config(symbol)
    weights = state.get("calibrator_weights")
    return config.with_weights({int(t): float(w) for t, w in weights.items()}) if weights else config


def _price_context(
    trades: Sequence[Trade], marks: Sequence[MarkPrice], state: Mapping[str, Any]
) -> tuple[float | None, float | None, float | None, Decimal | None]:
    """``(src, high, low, reference price)`` of the minute (see module docstring)."""
    if trades:
        prices = [t.price for t in trades]
        o, h, lo, c = prices[0], max(prices), min(prices), prices[-1]
        return float((o + h + lo + c) / 4), float(h), float(lo), c
    if marks:
        mark = marks[-1].mark_price
        return float(mark), None, None, mark
    last = state.get("last_price")
    return (
        (float(state["last_src"]), None, None, Decimal(last))
        if last is not None
        else (None, None, None, None)
    )


def _split_events(
    events: Sequence[Event],
) -> tuple[list[Trade], list[Liquidation], list[MarkPrice], dict[str, Decimal]]:
    """One pass over the minute: its trades, liquidations, mark prices (receive order each) and the
    last valid open interest report per exchange (exchanges in name order)."""
    trades: list[Trade] = []
    liqs: list[Liquidation] = []
    marks: list[MarkPrice] = []
    oi_reports: dict[str, Decimal] = {}
    for e in events:
        if type(e) in _IGNORED:
            continue
        if isinstance(e, Trade):
            trades.append(e)
        elif isinstance(e, Liquidation):
            liqs.append(e)
        elif isinstance(e, MarkPrice):
            marks.append(e)
        elif isinstance(e, OpenInterest) and e.open_interest_base >= 0:
            oi_reports[e.exchange] = e.open_interest_base
    return trades, liqs, marks, dict(sorted(oi_reports.items()))


def _usd(base: Decimal, price: Decimal | None) -> str | None:
    return None if price is None else decimal_text((base * price).quantize(_CENT))


def _oi_document(
    oi_state: Mapping[str, str], reports: Mapping[str, Decimal], price: Decimal | None, skipped: bool
) -> dict[str, Any]:
    exchanges = {}
    total = Decimal(0)
    for exchange in sorted(oi_state):
        base = Decimal(oi_state[exchange])
        total += base
        exchanges[exchange] = {
            "open_interest_base": decimal_text(base),
            "open_interest_usd": _usd(base, price),
            "reported_this_minute": exchange in reports,
        }
    return {
        "price": None if price is None else decimal_text(price),
        "exchanges": exchanges,
        "aggregated": {
            "open_interest_base": decimal_text(total),
            "open_interest_usd": _usd(total, price),
            "exchanges_reporting": len(reports),
            "skipped": skipped,
        },
    }


def _zone_item(z: Mapping[str, Any], minute: int, step: Decimal) -> dict[str, Any]:
    tiers = sorted(int(t) for t in z["tiers"])
    return {
        "price": tape.bucket_price(z["index"], step),
        "side": z["side"],
        "weight": round(z["weight"], 4),
        "state": z["state"],
        "source": z["source"],
        "leverage_min": tiers[0] if tiers else None,
        "leverage_max": tiers[-1] if tiers else None,
        "tier_contributions": {t: round(v, 6) for t, v in z["tiers"].items()},
        "reinforcement_count": z["reinforcement_count"],
        "created_minute": z["created_minute"],
        "last_reinforced_minute": z["last_reinforced_minute"],
        "age_min": minute - z["created_minute"],
    }


def _zone_products(
    zstate: Mapping[str, Any], events: list[dict[str, Any]], minute: int, step: Decimal
) -> dict[str, dict[str, Any]]:
    items = [_zone_item(z, minute, step) for z in zstate["zones"]]
    summary: dict[str, Any] = {"counters": dict(zstate["counters"])}
    for side in tape.SIDES:
        mine = [i for i in items if i["side"] == side]
        strongest = max(mine, key=lambda i: (i["weight"], -i["price"]), default=None)
        summary[side] = {
            "active_zones": len(mine),
            "total_weight": round(sum(z["weight"] for z in zstate["zones"] if z["side"] == side), 4),
            "strongest": strongest,
        }
    heat = [
        {
            "price": item["price"],
            "side": z["side"],
            "weight": item["weight"],
            "leverage_min": item["leverage_min"],
            "leverage_max": item["leverage_max"],
            "notional_usd": z.get("notional_usd"),
            "tape_usd": z.get("tape_usd"),
            "projection_usd": z.get("projection_usd"),
            "notional_minute": z.get("notional_minute"),
        }
        for z, item in zip(zstate["zones"], items, strict=True)
    ]
    return {
        "liq_zones": {"zones": items, "events": events},
        "liq_zones_summary": summary,
        "liq_zones_heatmap": {
            "notional_note": "notional_usd is the measured tape + projection USD of the pool that last "
            "created or reinforced the zone (at notional_minute); it is never derived from weight",
            "zones": heat,
        },
    }


def step_liquidations(
    state: dict[str, Any], events: Sequence[Event], symbol: str, minute: int
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Advance every liquidation engine of ``symbol`` by one minute; returns (new state, bodies)."""
    step = tape.bucket_step(symbol)
    config = _config(symbol, state)
    last_minute = state.get("minute")
    gap = max(1, minute - int(last_minute)) if last_minute is not None else 1
    all_trades, liqs, marks, oi_reports = _split_events(events)
    trades = aggression.pick_trades(all_trades)
    src, high, low, ref_price = _price_context(trades, marks, state)

    agg_now = aggression.minute_aggression(trades)
    agg_state = state.get("aggression", {})
    share, fallback = aggression.buy_share(agg_state, agg_now)
    new_agg = aggression.step_aggression(agg_state, minute, agg_now)
    tape_state, new_events, per_exchange = tape.step_tape(state.get("tape", {}), liqs, step, gap)
    inf_state, report = inference.step_inference(
        state.get("inference", {}),
        oi_reports=oi_reports,
        src=src,
        high=high,
        low=low,
        buy_share=share,
        config=config,
        step=step,
        gap=gap,
    )
    projection_usd = {side: inference.side_totals(inf_state[side]) for side in tape.SIDES}
    tape_usd = {side: tape_state[side] for side in tape.SIDES}
    raw = heatmap_v2.raw_heatmap(tape_usd, projection_usd, src or 0.0, step)
    zone_state, zone_events = zones.step_zones(
        state.get("zones", {}),
        pools=raw.pools,
        projection={s: inf_state[s] for s in tape.SIDES},
        minute=minute,
        gap=gap,
        src=src,
        high=high,
        low=low,
        step=step,
    )
    levels = {side: heatmap_v2.display_levels(raw.pools[side]) for side in tape.SIDES}
    candidates = {
        side: [(tape.bucket_index(lv["price"], step), lv["display_intensity"]) for lv in levels[side]]
        for side in tape.SIDES
    }
    tracker_state = zone_tracker.step_tracker(state.get("tracker", {}), candidates, minute)

    window = heatmap_v2.grid_window(src, step) if src else (0, -1)
    arrays = heatmap_v2.grid_arrays(raw, *window)
    v1 = v1_document(
        raw,
        tracker_state,
        symbol=symbol,
        src=src or 0.0,
        window=window,
        step=step,
        minute=minute,
        arrays=arrays,
    )
    if not src:
        v1.update(src=None, price_min=None, price_max=None)
    v2 = {
        "src": v1["src"],
        "step": v1["step"],
        "price_min": v1["price_min"],
        "price_max": v1["price_max"],
        "range_pct": heatmap_v2.RANGE_PCT,
        "prices": v1["prices"],
        **arrays,
        "long_levels": levels["long"],
        "short_levels": levels["short"],
        "meta": {
            "tape_weight": heatmap_v2.TAPE_WEIGHT,
            "projection_weight": heatmap_v2.PROJECTION_WEIGHT,
            "cluster_radius_pct": heatmap_v2.CLUSTER_RADIUS_PCT,
            "min_notional_usd": heatmap_v2.MIN_NOTIONAL_USD,
            "max_pools_per_side": heatmap_v2.MAX_POOLS_PER_SIDE,
            "combined_cluster_boost": heatmap_v2.COMBINED_CLUSTER_BOOST,
            "p99": {side: {k: round(v, 2) for k, v in raw.p99[side].items()} for side in tape.SIDES},
            "raw_long_buckets": len(raw.buckets["long"]),
            "raw_short_buckets": len(raw.buckets["short"]),
        },
    }
    stats = {
        "new_events": {side: new_events[side].document() for side in tape.SIDES},
        "new_events_by_exchange": {
            ex: {side: sides[side].document() for side in tape.SIDES} for ex, sides in per_exchange.items()
        },
        "tape": {
            "total_events": tape_state["total_events"],
            "total_notional_usd": dict(tape_state["total_notional"]),
            "long_buckets": len(tape_state["long"]),
            "short_buckets": len(tape_state["short"]),
        },
        "inference": {
            **report.document(),
            "aggression_fallback": fallback,
            "projected_long_buckets": len(inf_state["long"]),
            "projected_short_buckets": len(inf_state["short"]),
            "total_inferred_usd": {s: round(v, 2) for s, v in inf_state["total_inferred"].items()},
            "leverage_weights": {str(t): round(w, 6) for t, w in config.normalized_weights().items()},
            "disabled_tiers": sorted(config.disabled),
        },
        "gap_minutes": gap,
    }
    bodies = {
        "liq_heatmap": v1,
        "liq_heatmap_v2": v2,
        "liq_stats": stats,
        **_zone_products(zone_state, zone_events, minute, step),
        "oi": _oi_document(inf_state["oi_base"], oi_reports, ref_price, report.oi_skipped),
    }
    new_state: dict[str, Any] = {
        "minute": minute,
        "last_src": src,
        "last_price": None if ref_price is None else decimal_text(ref_price),
        "aggression": new_agg,
        "tape": tape_state,
        "inference": inf_state,
        "zones": zone_state,
        "tracker": tracker_state,
    }
    if "calibrator_weights" in state:
        new_state["calibrator_weights"] = state["calibrator_weights"]
    return new_state, bodies
