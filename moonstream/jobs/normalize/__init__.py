"""Normalizers: raw minute-file records -> typed events (docs/normalizers.md).

One module per exchange (``binance`` now; Bybit and OKX modules register here the same way), each
exposing ``normalize(record, symbol) -> list[Event]``. :func:`normalize_records` runs the right one
for every record of a minute, counts events, errors and duplicates in a :class:`NormalizeStats`,
logs each kind of error once per call, and never lets one bad message stop the job.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Self

from moonstream.collector.rawfile import RawRecord
from moonstream.jobs.events import Event, dedup_key

logger = logging.getLogger(__name__)

INTERNAL = "internal"
"""The error name counted for an unexpected exception raised by a normalizer (a bug, not bad input)."""


class NormalizeError(Exception):
    """A record that cannot be turned into events. ``reason`` is short and never holds the payload."""

    def __init__(self, reason: str, *, exchange: str = "", channel: str = "", recv_ns: int | None = None):
        super().__init__(reason)
        self.reason = reason
        self.exchange = exchange
        self.channel = channel
        self.recv_ns = recv_ns

    def with_context(self, *, exchange: str, channel: str, recv_ns: int) -> Self:
        """Attach where the record came from; returns ``self`` for ``raise err.with_context(...)``."""
        self.exchange = exchange
        self.channel = channel
        self.recv_ns = recv_ns
        return self

    def __str__(self) -> str:
        if not (self.exchange or self.channel or self.recv_ns is not None):
            return self.reason
        return f"{self.reason} (exchange={self.exchange} channel={self.channel} recv_ns={self.recv_ns})"


class MalformedMessage(NormalizeError):
    """Not decodable (bad JSON / CSV), not the expected structure, or a required field is missing."""


class InvalidValue(NormalizeError):
    """A field is present but its value is unacceptable: not a number, NaN/inf, negative, zero price."""


class SymbolMismatch(NormalizeError):
    """The message is for another instrument than the symbol being normalized."""


class UnknownChannel(NormalizeError):
    """No parser for the record's channel tag (or no normalizer for its exchange)."""


Normalizer = Callable[[RawRecord, str], list[Event]]


@dataclass
class NormalizeStats:
    """Counters over one or more :func:`normalize_records` calls.

    ``events`` counts kept events by type name (``Trade``, ``DepthUpdate``, ...), ``errors`` counts
    rejected records by error class name (``MalformedMessage``, ..., ``internal``), ``duplicates``
    counts events dropped by :func:`~moonstream.jobs.events.dedup_key`, ``records`` every record seen.
    """

    records: int = 0
    events: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0

    def event_total(self) -> int:
        """Events kept, all types."""
        return sum(self.events.values())

    def error_total(self) -> int:
        """Records rejected, all error classes (``internal`` included)."""
        return sum(self.errors.values())

    def merge(self, other: NormalizeStats) -> None:
        """Add another stats object's counts into this one."""
        self.records += other.records
        self.events.update(other.events)
        self.errors.update(other.errors)
        self.duplicates += other.duplicates

    def as_dict(self) -> dict[str, Any]:
        """Plain, JSON-ready counts (sorted keys)."""
        return {
            "records": self.records,
            "events": dict(sorted(self.events.items())),
            "errors": dict(sorted(self.errors.items())),
            "duplicates": self.duplicates,
        }


def _no_normalizer(record: RawRecord, symbol: str) -> list[Event]:
    raise UnknownChannel(f"no normalizer for exchange {record.exchange[:40]!r}")


def normalize_records(records: Iterable[RawRecord], symbol: str, stats: NormalizeStats) -> list[Event]:
    """Normalize ``records`` (one symbol, typically one minute) in the given order.

    Each record goes to ``NORMALIZERS[record.exchange]``. A record that raises a
    :class:`NormalizeError` is counted under its class name and skipped; any other exception is a bug,
    counted as ``internal``, logged with its traceback, and skipped too. Each (exchange, channel,
    error class) is logged once per call, with a count of the rest at the end. Events whose
    :func:`~moonstream.jobs.events.dedup_key` was already seen in this call are dropped and counted as
    duplicates (memory is one key per event of the call). Returns the kept events in input order.
    """
    out: list[Event] = []
    append = out.append
    seen: set[tuple[Any, ...]] = set()
    add = seen.add
    reported: Counter[tuple[str, str, str]] = Counter()
    normalizers = NORMALIZERS
    key_of = dedup_key
    count = 0
    duplicates = 0
    batch = records if type(records) is list else list(records)
    run = binance.compiled_run(symbol)
    i = 0
    try:
        while i < len(batch):
            if run is not None:  # the compiled loop takes what it can, up to a record it leaves here
                start = i
                i, skipped = run(batch, i, seen, out)
                count += i - start
                duplicates += skipped
                if i == len(batch):
                    break
            record = batch[i]
            i += 1
            count += 1
            try:
                events = normalizers.get(record.exchange, _no_normalizer)(record, symbol)
            except NormalizeError as exc:
                name = type(exc).__name__
                stats.errors[name] += 1
                key = (record.exchange, record.channel, name)
                reported[key] += 1
                if reported[key] == 1:
                    exc.with_context(exchange=record.exchange, channel=record.channel, recv_ns=record.recv_ns)
                    logger.warning("%s skipped for %s: %s", name, symbol, exc)
                continue
            except Exception:
                stats.errors[INTERNAL] += 1
                key = (record.exchange, record.channel, INTERNAL)
                reported[key] += 1
                if reported[key] == 1:
                    logger.exception(
                        "normalizer bug on %s (exchange=%s channel=%s recv_ns=%d); record skipped",
                        symbol,
                        record.exchange,
                        record.channel,
                        record.recv_ns,
                    )
                continue
            for event in events:
                ident = key_of(event)
                if ident in seen:
                    duplicates += 1
                    continue
                add(ident)
                append(event)
    finally:
        stats.records += count
        stats.duplicates += duplicates
    kept: Counter[type] = Counter(map(type, out))  # by class, named once at the end
    for kind, n in kept.items():
        stats.events[kind.__name__] += n
    for (exchange, channel, name), times in reported.items():
        if times > 1:
            logger.warning(
                "%d more %s on %s (exchange=%s channel=%s) not logged",
                times - 1,
                name,
                symbol,
                exchange,
                channel,
            )
    return out


# The exchange modules import the error classes above, so they are imported after them.
from moonstream.jobs.normalize import binance, bybit, okx  # noqa: E402

NORMALIZERS: dict[str, Normalizer] = {
    binance.EXCHANGE: binance.normalize,
    bybit.EXCHANGE: bybit.normalize,
    okx.EXCHANGE: okx.normalize,
}
"""Exchange name (``RawRecord.exchange``) -> that exchange's ``normalize(record, symbol)``."""

__all__ = [
    "INTERNAL",
    "NORMALIZERS",
    "InvalidValue",
    "MalformedMessage",
    "NormalizeError",
    "NormalizeStats",
    "Normalizer",
    "SymbolMismatch",
    "UnknownChannel",
    "normalize_records",
]
