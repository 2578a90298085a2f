"""The collector's frozen configuration (``[collector]`` table of the TOML config, CLI overrides).

Build it with ``moonstream.config.build_config(CollectorConfig, mapping)``, which rejects unknown keys.
"""

from __future__ import annotations

from dataclasses import dataclass

from moonstream.collector.rawfile import is_valid_collector_id
from moonstream.jobs.config import DEFAULT_DATA_URL
from moonstream.symbols import DEFAULT_SYMBOLS, is_valid_symbol

DEFAULT_SPOOL_DIR = "var/spool"


@dataclass(frozen=True)
class CollectorConfig:
    """What the collector captures, where it writes, and its resilience knobs (seconds unless noted)."""

    symbols: tuple[str, ...] = DEFAULT_SYMBOLS
    exchanges: tuple[str, ...] = ("binance",)
    data_url: str = DEFAULT_DATA_URL
    spool_dir: str = DEFAULT_SPOOL_DIR
    collector_id: str = "c1"
    stall_timeout_s: float = 30.0
    """No message for this long on a connection: close it and reconnect."""
    open_timeout_s: float = 10.0
    close_timeout_s: float = 2.0
    max_connection_age_s: float | None = None
    """Reconnect proactively after this long; None uses the exchange's rule (Binance 23.5 h)."""
    backoff_base_s: float = 1.0
    backoff_cap_s: float = 30.0
    healthy_after_s: float = 60.0
    """A connection that lived this long resets the reconnect backoff."""
    max_message_bytes: int = 8 * 1024 * 1024
    queue_size: int = 200_000
    """Messages buffered between receive and the disk writer; beyond it they are dropped and counted."""
    finalize_grace_s: float = 0.5
    finalize_interval_s: float = 0.25
    status_interval_s: float = 5.0
    rest_enabled: bool = True
    rest_timeout_s: float = 10.0
    snapshot_min_interval_s: float = 5.0
    """At most one depth snapshot per symbol this often, however many gaps are seen."""

    def __post_init__(self) -> None:
        from moonstream.collector.exchanges import EXCHANGES

        if not self.symbols:
            raise ValueError("symbols: at least one symbol is needed")
        bad = [s for s in self.symbols if not isinstance(s, str) or not is_valid_symbol(s)]
        if bad:
            raise ValueError(f"symbols: invalid symbol(s) {bad!r}")
        if len(set(self.symbols)) != len(self.symbols):
            raise ValueError("symbols: duplicates")
        if not self.exchanges:
            raise ValueError("exchanges: at least one exchange is needed")
        unknown = [e for e in self.exchanges if e not in EXCHANGES]
        if unknown:
            raise ValueError(f"exchanges: unknown {unknown!r}; known: {sorted(EXCHANGES)}")
        if not is_valid_collector_id(self.collector_id):
            raise ValueError(f"collector_id: {self.collector_id!r} must match [a-z0-9][a-z0-9-]{{0,40}}")
        positive = {
            "stall_timeout_s": self.stall_timeout_s,
            "open_timeout_s": self.open_timeout_s,
            "close_timeout_s": self.close_timeout_s,
            "backoff_base_s": self.backoff_base_s,
            "healthy_after_s": self.healthy_after_s,
            "finalize_interval_s": self.finalize_interval_s,
            "status_interval_s": self.status_interval_s,
            "rest_timeout_s": self.rest_timeout_s,
            "max_message_bytes": self.max_message_bytes,
            "queue_size": self.queue_size,
        }
        for name, value in positive.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ValueError(f"{name}: must be a positive number, got {value!r}")
        if self.backoff_cap_s < self.backoff_base_s:
            raise ValueError("backoff_cap_s must be at least backoff_base_s")
        if self.finalize_grace_s < 0 or self.snapshot_min_interval_s < 0:
            raise ValueError("finalize_grace_s and snapshot_min_interval_s must not be negative")
        if self.max_connection_age_s is not None and not self.max_connection_age_s > 0:
            raise ValueError("max_connection_age_s must be positive (or omitted)")
