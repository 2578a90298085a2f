"""The jobs' configuration: one frozen object built at the entry point."""

from __future__ import annotations

from dataclasses import dataclass

from moonstream.symbols import DEFAULT_SYMBOLS, Exchange, is_valid_symbol

DEFAULT_DATA_URL = "var/data"
DEFAULT_SITE_URL = "var/site"


@dataclass(frozen=True)
class JobConfig:
    """Where the jobs read and publish, for which symbols, and how.

    ``exchanges`` are the exchanges every minute is expected to have files from: a missing one is
    reported as a gap in that minute's documents.

    Checkpoint retention (:mod:`moonstream.jobs.retention`): the state checkpoint of every minute is
    kept for ``checkpoint_keep_all_hours``, then only the ``:00`` minute's, up to
    ``checkpoint_keep_hourly_days``; older ones are deleted, never the one the head names. The
    scheduler prunes each symbol about once an hour when ``checkpoint_pruning`` is on; ``moonstream
    prune`` does it on demand.
    """

    data_url: str = DEFAULT_DATA_URL
    site_url: str = DEFAULT_SITE_URL
    symbols: tuple[str, ...] = DEFAULT_SYMBOLS
    exchanges: tuple[str, ...] = tuple(e.value for e in Exchange)
    site_prefix: str = ""
    gzip_json: bool = True
    pointer_ttl_seconds: int = 5
    replace_immutable: bool = False
    checkpoint_pruning: bool = True
    checkpoint_keep_all_hours: int = 48
    checkpoint_keep_hourly_days: int = 30

    def __post_init__(self) -> None:
        for symbol in self.symbols:
            if not is_valid_symbol(symbol):
                raise ValueError(f"invalid symbol {symbol!r} (use the base asset, e.g. BTC)")
        known = {e.value for e in Exchange}
        for exchange in self.exchanges:
            if exchange not in known:
                raise ValueError(f"unknown exchange {exchange!r}; known: {', '.join(sorted(known))}")
        if self.site_prefix and not self.site_prefix.endswith("/"):
            raise ValueError("site_prefix must end with '/'")
        if self.pointer_ttl_seconds < 1:
            raise ValueError("pointer_ttl_seconds must be at least 1")
        if self.checkpoint_keep_all_hours < 1:
            raise ValueError("checkpoint_keep_all_hours must be at least 1")
        if self.checkpoint_keep_hourly_days < 0:
            raise ValueError("checkpoint_keep_hourly_days must be >= 0")
