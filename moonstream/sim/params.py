"""Simulator parameters: per-symbol instrument and market figures, and the message rates.

Defaults are round figures in the range of Binance USDT-M at the start of 2024; docs/simulator.md
lists them. Leverage defaults to the spec's BTC ladder weights (spec/000 "Leverage Configuration"),
restricted to each symbol's ladder, with the 10x tier non-zero so the disabled tier gets data.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

BTC_LADDER_TIERS: tuple[int, ...] = (5, 10, 20, 25, 50, 75, 100, 125, 150, 200, 250)
BTC_LADDER_WEIGHTS: tuple[float, ...] = (1.0, 1.0, 0.9, 0.7, 0.35, 0.14, 0.08, 0.05, 0.03, 0.015, 0.008)
ETH_LADDER_TIERS: tuple[int, ...] = (5, 10, 20, 25, 50, 75, 100, 125)
SOL_LADDER_TIERS: tuple[int, ...] = (5, 10, 20, 25, 50, 75)
DEFAULT_LADDER_TIERS: tuple[int, ...] = (5, 10, 20, 50, 75, 100)
_BTC_WEIGHT = dict(zip(BTC_LADDER_TIERS, BTC_LADDER_WEIGHTS, strict=True))
VENUES: tuple[str, ...] = ("binance", "bybit", "okx")
"""The simulated exchanges, in the order their shares are drawn (``SimRates.share_*``)."""


@dataclass(frozen=True)
class SymbolSpec:
    """One instrument: exchange formatting (tick and lot as integers over a power of ten) and market.

    ``tick = tick_units / 10**price_decimals``, ``lot = lot_units / 10**qty_decimals``.
    """

    symbol: str
    price_decimals: int
    tick_units: int
    qty_decimals: int
    lot_units: int
    start_price: float
    daily_vol: float
    tiers: tuple[int, ...]
    depth_usd_1pct: float
    background_oi_usd: float
    median_position_usd: float
    median_trade_usd: float
    level_median_usd: float
    book_scale_pct: float = 0.15
    book_depth_pct: float = 3.0

    @property
    def tick(self) -> float:
        return self.tick_units / 10**self.price_decimals

    @property
    def lot(self) -> float:
        return self.lot_units / 10**self.qty_decimals


SPECS: dict[str, SymbolSpec] = {
    "BTC": SymbolSpec(
        "BTC", 2, 10, 3, 1, 42_000.0, 0.03, BTC_LADDER_TIERS, 40e6, 4e9, 6_000.0, 3_000.0, 60_000.0
    ),
    "ETH": SymbolSpec(
        "ETH", 2, 1, 3, 1, 2_300.0, 0.035, ETH_LADDER_TIERS, 15e6, 2e9, 4_000.0, 2_000.0, 30_000.0
    ),
    "SOL": SymbolSpec(
        "SOL", 4, 100, 0, 1, 100.0, 0.05, SOL_LADDER_TIERS, 3e6, 6e8, 2_500.0, 1_500.0, 10_000.0
    ),
}


def symbol_spec(symbol: str) -> SymbolSpec:
    """The spec of a known symbol, or a generic 100-USDT instrument with the default ladder."""
    spec = SPECS.get(symbol)
    if spec is not None:
        return spec
    return SymbolSpec(
        symbol, 4, 10, 1, 1, 100.0, 0.05, DEFAULT_LADDER_TIERS, 2e6, 2e8, 2_000.0, 1_000.0, 5_000.0
    )


@dataclass(frozen=True)
class SimRates:
    """Message rates and trader activity (per symbol). All times in simulated milliseconds.

    ``step_ms`` is the depth-diff interval (``depth@100ms``); every other interval must be a
    multiple of it. ``leverage_weights`` maps leverage -> weight (missing tiers weigh 0); None
    means the spec's BTC ladder weights. ``share_*`` are the venues' shares of positions and noise
    trades (normalized over the run's venues); ``bybit_tickers_ms`` / ``okx_oi_ms`` the cadence of
    Bybit's tickers deltas and OKX's open-interest pushes.
    """

    step_ms: int = 100
    trades_per_sec: float = 6.0
    opens_per_sec: float = 1.5
    mean_hold_minutes: float = 180.0
    cascades_per_day: float = 6.0
    cascade_trade_boost: float = 40.0
    impact: float = 1.0
    depth_churn: float = 6.0
    book_levels: int = 1000
    mark_price_ms: int = 1000
    oi_poll_ms: int = 10_000
    snapshot_every_minutes: int = 60
    ws_latency_ms: float = 20.0
    rest_latency_ms: float = 180.0
    long_share: float = 0.5
    leverage_weights: dict[int, float] | None = field(default=None)
    share_binance: float = 0.5
    share_bybit: float = 0.3
    share_okx: float = 0.2
    bybit_tickers_ms: int = 1000
    okx_oi_ms: int = 3000

    def __post_init__(self) -> None:
        for spec in fields(self):  # 20 and 20.0 must give the same run manifest
            if spec.type == "float":
                object.__setattr__(self, spec.name, float(getattr(self, spec.name)))
        if self.step_ms <= 0 or 1000 % self.step_ms:
            raise ValueError(f"step_ms must divide 1000, got {self.step_ms}")
        for name in ("mark_price_ms", "oi_poll_ms"):
            value = getattr(self, name)
            if value <= 0 or value % 1000:
                raise ValueError(f"{name} must be a positive multiple of 1000, got {value}")
        for name in ("bybit_tickers_ms", "okx_oi_ms"):
            value = getattr(self, name)
            if value <= 0 or value % self.step_ms:
                raise ValueError(f"{name} must be a positive multiple of step_ms, got {value}")
        if self.snapshot_every_minutes <= 0:
            raise ValueError("snapshot_every_minutes must be positive")
        if not 0.0 <= self.long_share <= 1.0:
            raise ValueError("long_share must be within [0, 1]")
        for name in (
            "trades_per_sec",
            "opens_per_sec",
            "cascades_per_day",
            "depth_churn",
            "impact",
            *(f"share_{venue}" for venue in VENUES),
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.mean_hold_minutes <= 0 or self.book_levels < 10:
            raise ValueError("mean_hold_minutes must be > 0 and book_levels >= 10")

    def leverage_weights_for(self, spec: SymbolSpec) -> tuple[float, ...]:
        """Weights aligned with ``spec.tiers`` (BTC ladder weights by default); ValueError if all 0."""
        table = _BTC_WEIGHT if self.leverage_weights is None else self.leverage_weights
        weights = tuple(float(table.get(tier, 0.0)) for tier in spec.tiers)
        if any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(f"leverage weights for {spec.symbol} must be >= 0 and not all 0")
        return weights

    def venue_shares(self, venues: tuple[str, ...]) -> dict[str, float]:
        """``share_*`` of the given venues, normalized to sum 1; ValueError if they are all 0."""
        raw = {venue: float(getattr(self, f"share_{venue}")) for venue in venues}
        total = sum(raw.values())
        if total <= 0:
            raise ValueError(f"the shares of {', '.join(venues)} are all 0")
        return {venue: value / total for venue, value in raw.items()}
