"""Leverage configuration registry: per-symbol tier ladders, ladder weights, disabled tiers.

Constants from spec/000 "Leverage Configuration":

- BTC ladder ``5 … 250x`` with weights ``[1.0, 1.0, 0.9, 0.7, 0.35, 0.14, 0.08, 0.05, 0.03, 0.015, 0.008]``;
- ETH to 125x, SOL to 75x, a default ladder ``[5, 10, 20, 50, 75, 100]``; the spec gives weights only for
  BTC, so the other ladders take the BTC weight of the same tier;
- ``DISABLED_TIERS = {10}``: a disabled tier is never projected, never produces zones and gets weight 0;
  normalization is over enabled tiers only (spec/002 M5);
- V3 tier weights (zone intensity multipliers), 0.0 for the disabled 10x.

The calibrator (a separate job) may supply its own weights: :meth:`LeverageConfig.with_weights` takes
them, zeroes disabled tiers and renormalizes over the enabled tiers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

DISABLED_TIERS: frozenset[int] = frozenset({10})

BTC_TIERS: tuple[int, ...] = (5, 10, 20, 25, 50, 75, 100, 125, 150, 200, 250)
BTC_WEIGHTS: tuple[float, ...] = (1.0, 1.0, 0.9, 0.7, 0.35, 0.14, 0.08, 0.05, 0.03, 0.015, 0.008)
ETH_TIERS: tuple[int, ...] = (5, 10, 20, 25, 50, 75, 100, 125)
SOL_TIERS: tuple[int, ...] = (5, 10, 20, 25, 50, 75)
DEFAULT_TIERS: tuple[int, ...] = (5, 10, 20, 50, 75, 100)

V3_TIER_WEIGHTS: Mapping[int, float] = {
    5: 0.2,
    10: 0.0,
    20: 0.4,
    25: 0.5,
    50: 0.8,
    75: 0.9,
    100: 1.0,
    125: 1.0,
    150: 0.9,
    200: 0.8,
    250: 0.7,
}

_BTC_WEIGHT_BY_TIER = dict(zip(BTC_TIERS, BTC_WEIGHTS, strict=True))


def is_tier_disabled(tier: int) -> bool:
    """True for a tier in :data:`DISABLED_TIERS` (10x)."""
    return tier in DISABLED_TIERS


def v3_tier_weight(tier: int) -> float:
    """The V3 zone-intensity weight of a tier; 0.0 for disabled or unknown tiers."""
    if is_tier_disabled(tier):
        return 0.0
    return V3_TIER_WEIGHTS.get(tier, 0.0)


@dataclass(frozen=True)
class LeverageConfig:
    """One symbol's ladder. ``weights`` are the raw ladder weights, one per tier (not normalized)."""

    symbol: str
    tiers: tuple[int, ...]
    weights: tuple[float, ...]
    disabled: frozenset[int] = DISABLED_TIERS

    def __post_init__(self) -> None:
        if len(self.tiers) != len(self.weights):
            raise ValueError("tiers and weights differ in length")
        if list(self.tiers) != sorted(set(self.tiers)):
            raise ValueError("tiers must be strictly increasing")
        if any(w < 0 for w in self.weights):
            raise ValueError("weights must be >= 0")

    @property
    def enabled_tiers(self) -> tuple[int, ...]:
        """The tiers that take part in projection, zones and hit rates (all but disabled ones)."""
        return tuple(t for t in self.tiers if t not in self.disabled)

    def normalized_weights(self) -> dict[int, float]:
        """Weights over *enabled* tiers only, summing to 1 (disabled tiers absent; spec/002 M5)."""
        raw = [(t, w) for t, w in zip(self.tiers, self.weights, strict=True) if t not in self.disabled]
        total = sum(w for _, w in raw)
        if total <= 0:
            return {t: 1.0 / len(raw) for t, _ in raw} if raw else {}
        return {t: w / total for t, w in raw}

    def with_weights(self, weights: Mapping[int, float]) -> LeverageConfig:
        """A copy with calibrator-supplied weights (tiers missing from ``weights`` get 0; disabled
        tiers are zeroed; negative or non-finite values are treated as 0)."""
        new = []
        for tier in self.tiers:
            value = float(weights.get(tier, 0.0))
            if tier in self.disabled or not value > 0 or value == float("inf"):
                value = 0.0
            new.append(value)
        return LeverageConfig(self.symbol, self.tiers, tuple(new), self.disabled)


def _ladder(symbol: str, tiers: tuple[int, ...]) -> LeverageConfig:
    return LeverageConfig(symbol, tiers, tuple(_BTC_WEIGHT_BY_TIER[t] for t in tiers))


_REGISTRY: dict[str, LeverageConfig] = {
    "BTC": _ladder("BTC", BTC_TIERS),
    "ETH": _ladder("ETH", ETH_TIERS),
    "SOL": _ladder("SOL", SOL_TIERS),
}


def leverage_config(symbol: str) -> LeverageConfig:
    """The ladder of ``symbol``; symbols without their own ladder get the default ladder."""
    config = _REGISTRY.get(symbol)
    return config if config is not None else _ladder(symbol, DEFAULT_TIERS)
