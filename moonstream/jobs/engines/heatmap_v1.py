"""The V1 ``liq_heatmap`` document shape, for existing clients, derived from the V2 raw heatmap.

Fields (the original's V1 snapshot, minus what the envelope already carries): ``ts`` (end of the
minute, epoch seconds), ``src``, ``step``, ``price_min``, ``price_max``, ``prices`` (``price_min +
i × step``), ``long_intensity`` / ``short_intensity`` (0-1), ``long_notional_usd`` /
``short_notional_usd`` (measured tape + projection USD per bucket), ``long_size_{sym}`` /
``short_size_{sym}`` (that USD in base units at the bucket price; named after the symbol, so
``long_size_eth`` for ETH: spec/002 M20), ``top_long_zones`` / ``top_short_zones`` (the zone
tracker's ``{price, strength, age_min}``) and ``norm``.

Intensity: ``v`` = a bucket's raw V2 score; ``p50``, ``p95`` are taken over both sides' non-zero
scores in the window; ``intensity = min(1, v / p95)`` (``norm = {"method": "p50_p95", "p50", "p95"}``).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from moonstream.jobs.engines.heatmap_v2 import RawHeatmap, grid_arrays, window_buckets
from moonstream.jobs.engines.quantile import percentile
from moonstream.jobs.engines.tape import SIDES, bucket_price, grid
from moonstream.jobs.engines.zone_tracker import top_zones


def v1_document(
    raw: RawHeatmap,
    tracker: Mapping[str, Any],
    *,
    symbol: str,
    src: float,
    window: tuple[int, int],
    step: Decimal,
    minute: int,
    arrays: Mapping[str, list[float]] | None = None,
) -> dict[str, Any]:
    """The V1 body for one minute (``arrays``: the window's :func:`grid_arrays`, if already built)."""
    lo, hi = window
    if arrays is None:
        arrays = grid_arrays(raw, lo, hi)
    # Cells outside the raw buckets are 0.0 in every array, and every formula below maps 0.0 to 0.0,
    # so only the buckets' cells are computed.
    cells = {side: [b.index - lo for b in window_buckets(raw, side, lo, hi)] for side in SIDES}
    scores = [v for side in SIDES for i in cells[side] if (v := arrays[f"{side}_intensity"][i]) > 0]
    scores.sort()
    p50 = percentile(scores, 50) if scores else 0.0
    p95 = percentile(scores, 95) if scores else 0.0
    prices = grid(lo, hi, step)
    body: dict[str, Any] = {
        "ts": (minute + 1) * 60,
        "src": round(src, 8),
        "step": float(step),
        "price_min": bucket_price(lo, step),
        "price_max": bucket_price(hi, step),
        "prices": prices,
    }
    suffix = symbol.lower()
    for side in SIDES:
        values, intensity = arrays[f"{side}_intensity"], [0.0] * len(prices)
        if p95 > 0:
            for i in cells[side]:
                intensity[i] = round(min(1.0, values[i] / p95), 4)
        body[f"{side}_intensity"] = intensity
    for side in SIDES:
        body[f"{side}_notional_usd"] = arrays[f"{side}_notional_usd"]
    for side in SIDES:
        usd, size = arrays[f"{side}_notional_usd"], [0.0] * len(prices)
        for i in cells[side]:
            size[i] = round(usd[i] / prices[i], 6) if prices[i] > 0 else 0.0
        body[f"{side}_size_{suffix}"] = size
    body["top_long_zones"] = top_zones(tracker, "long", minute, step)
    body["top_short_zones"] = top_zones(tracker, "short", minute, step)
    body["norm"] = {"method": "p50_p95", "p50": round(p50, 6), "p95": round(p95, 6)}
    return body
