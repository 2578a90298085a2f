"""Liquidation tape: real liquidations from every exchange, by price bucket and liquidated side.

Also home of the price-bucket helpers every liquidation engine shares. Buckets are integer indexes:
bucket ``i`` is the price ``i × step`` (computed as ``Decimal(i) * step``, never by repeated addition),
and a price belongs to the bucket ``round(price / step)`` (half-even). Steps per symbol: BTC 20,
ETH 1.0, SOL 0.10 (DESIGN §5).

State (JSON): ``{"long": {"<index>": usd}, "short": {...}, "total_events": int,
"total_notional": {"long": "<decimal>", "short": "<decimal>"}}``. Bucket values are floats (model
quantities, decayed); the event counts and notionals are exact decimals.

Per minute: every bucket is multiplied by ``TAPE_DECAY ** gap`` (``gap`` = minutes since the last
step, so missing minutes are caught up), buckets under ``TAPE_MIN_BUCKET_USD`` are dropped, then each
liquidation adds its filled notional (``filled_qty × avg_price``, or ``× price``) to the bucket of its
fill price. The minute's new events are counted per side with exact decimal sums.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from moonstream.jobs.engines.market import decimal_text
from moonstream.jobs.events import LiquidatedSide, Liquidation

BUCKET_STEPS: Mapping[str, Decimal] = {"BTC": Decimal("20"), "ETH": Decimal("1.0"), "SOL": Decimal("0.10")}
TAPE_DECAY = 0.995
TAPE_MIN_BUCKET_USD = 1.0
SIDES: tuple[str, str] = ("long", "short")
_LONG = LiquidatedSide.LONG  # enum class attribute lookups are slow (EnumType.__getattr__)


def bucket_step(symbol: str) -> Decimal:
    """The liquidation bucket step of a symbol; raises ValueError for a symbol without one."""
    try:
        return BUCKET_STEPS[symbol]
    except KeyError:
        raise ValueError(f"no liquidation bucket step configured for symbol {symbol!r}") from None


def bucket_index(price: Decimal | float, step: Decimal) -> int:
    """The bucket containing ``price``: ``round(price / step)``, half-even, exact in Decimal."""
    value = price if isinstance(price, Decimal) else Decimal(repr(float(price)))
    return int((value / step).to_integral_value(rounding=ROUND_HALF_EVEN))


_STEP_RATIOS: dict[Decimal, tuple[int, int]] = {}


def step_ratio(step: Decimal) -> tuple[int, int]:
    """``step`` as an exact integer ratio ``(numerator, denominator)`` (cached: there are few steps)."""
    ratio = _STEP_RATIOS.get(step)
    if ratio is None:
        ratio = _STEP_RATIOS[step] = step.as_integer_ratio()
    return ratio


def bucket_price(index: int, step: Decimal) -> float:
    """The price of bucket ``index``: ``index × step`` (exact decimal, then float)."""
    # ``float(Decimal(index) * step)`` is the correctly rounded value of the exact product, and so
    # is the integer true division below (CPython rounds int / int correctly): the same float.
    num, den = step_ratio(step)
    return index * num / den


def grid(index_min: int, index_max: int, step: Decimal) -> list[float]:
    """Prices ``price_min + i × step`` for every bucket from ``index_min`` to ``index_max`` inclusive."""
    num, den = step_ratio(step)
    return [i * num / den for i in range(index_min, index_max + 1)]


def decay_buckets(buckets: Mapping[str, float], factor: float, floor: float) -> dict[str, float]:
    """Multiply every bucket by ``factor`` and drop those under ``floor``; keys in index order."""
    out: dict[str, float] = {}
    for key in sorted(buckets, key=int):
        value = buckets[key] * factor
        if value >= floor:
            out[key] = value
    return out


@dataclass
class NewEvents:
    """The minute's new tape events of one side: count and exact USD notional."""

    count: int = 0
    notional_usd: Decimal = Decimal(0)

    def document(self) -> dict[str, Any]:
        return {"count": self.count, "notional_usd": decimal_text(self.notional_usd)}


def liquidation_price(liq: Liquidation) -> Decimal:
    """The fill price used for bucketing: the average fill price when usable, else the order price."""
    return liq.avg_price if liq.avg_price is not None and liq.avg_price > 0 else liq.price


def step_tape(
    state: Mapping[str, Any], liquidations: Iterable[Liquidation], step: Decimal, gap: int
) -> tuple[dict[str, Any], dict[str, NewEvents], dict[str, dict[str, NewEvents]]]:
    """Advance the tape one minute (``gap`` ≥ 1 minutes since the previous step).

    Returns the new state, the minute's new events per side, and the same per exchange.
    """
    factor = TAPE_DECAY**gap
    buckets = {side: decay_buckets(state.get(side, {}), factor, TAPE_MIN_BUCKET_USD) for side in SIDES}
    new = {side: NewEvents() for side in SIDES}
    per_exchange: dict[str, dict[str, NewEvents]] = {}
    for liq in liquidations:
        side = "long" if liq.side is _LONG else "short"
        notional = liq.notional_usd
        new[side].count += 1
        new[side].notional_usd += notional
        ex = per_exchange.setdefault(liq.exchange, {s: NewEvents() for s in SIDES})
        ex[side].count += 1
        ex[side].notional_usd += notional
        key = str(bucket_index(liquidation_price(liq), step))
        buckets[side][key] = buckets[side].get(key, 0.0) + float(notional)
    totals = state.get("total_notional", {})
    new_state = {
        "long": dict(sorted(buckets["long"].items(), key=lambda kv: int(kv[0]))),
        "short": dict(sorted(buckets["short"].items(), key=lambda kv: int(kv[0]))),
        "total_events": int(state.get("total_events", 0)) + new["long"].count + new["short"].count,
        "total_notional": {
            side: decimal_text(Decimal(totals.get(side, "0")) + new[side].notional_usd) for side in SIDES
        },
    }
    return new_state, new, dict(sorted(per_exchange.items()))
