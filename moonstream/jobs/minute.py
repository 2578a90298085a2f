"""The minute job: raw minute files of one symbol -> engines -> published documents -> saved state.

``compute_minute`` is the pure heart (records in, state and documents out); ``run_minute`` wraps it
with the reads, the publication and the state commit, in that order (DESIGN §4): a job killed at any
point leaves either nothing or complete objects, and re-running it rewrites identical bytes.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from itertools import compress, repeat
from operator import attrgetter, eq
from typing import Any

from moonstream.collector.rawfile import RawRecord, ReadReport, raw_key, read_minute
from moonstream.jobs.calibrate import (
    WINDOW_MINUTES as CALIBRATION_WINDOW_MINUTES,
    WindowMinutes,
    run_calibration,
    weights_for_minute,
    window_minute,
)
from moonstream.jobs.collector_status import read_collector_status
from moonstream.jobs.config import JobConfig
from moonstream.jobs.engines import ENGINES, engine_versions, has_liquidation_engines, products
from moonstream.jobs.events import Event
from moonstream.jobs.normalize import NormalizeStats, normalize_records
from moonstream.jobs.state import SymbolState, load_state_before, save_state
from moonstream.publish.layout import SiteLayout
from moonstream.publish.publisher import PointerBuffer, publication
from moonstream.publish.site import add_minute_documents
from moonstream.store import Store, open_store
from moonstream.timeutil import iso_minute, iso_ns, minute_start_ns

logger = logging.getLogger(__name__)

DOCUMENT_SCHEMA_VERSION = 1
ENGINE_VERSIONS: dict[str, str] = engine_versions()
PRODUCTS: tuple[str, ...] = products()


@dataclass(frozen=True)
class JobContext:
    """The opened stores and layout a job runs against; built once per process."""

    config: JobConfig
    data: Store
    site: Store
    layout: SiteLayout
    window_minutes: WindowMinutes = field(default_factory=WindowMinutes, compare=False, repr=False)
    """The calibration inputs of recent minutes, filled by :func:`run_minute`."""

    @classmethod
    def open(cls, config: JobConfig) -> JobContext:
        layout = SiteLayout(
            prefix=config.site_prefix,
            gzip_json=config.gzip_json,
            pointer_ttl_seconds=config.pointer_ttl_seconds,
        )
        # Durability by barriers (publisher, state, calibrator), not an fsync per file: see LocalStore.
        data = open_store(config.data_url, fsync_each_write=False)
        return cls(config, data, open_store(config.site_url, fsync_each_write=False), layout)


@dataclass(frozen=True)
class MinuteOutputs:
    state: SymbolState
    documents: dict[str, dict[str, Any]]
    source_summary: dict[str, Any]
    normalize: NormalizeStats
    blobs: dict[str, bytes]
    events: Sequence[Event] = ()


@dataclass(frozen=True)
class MinuteResult:
    symbol: str
    minute: int
    records: int
    events: int
    errors: int
    objects_written: int
    objects_unchanged: int
    duration_s: float
    missing_exchanges: tuple[str, ...] = ()
    immutables_written: int = 0


_EXCHANGE = attrgetter("exchange")
_COLLECTOR = attrgetter("collector")
_RECV_NS = attrgetter("recv_ns")


def summarize_sources(
    records: Sequence[RawRecord], expected: Sequence[str]
) -> tuple[dict[str, Any], set[tuple[str, str]]]:
    """Per exchange: records, collectors and the last receive time; plus expected exchanges with no
    data. Also returns the records' ``(exchange, collector)`` pairs (the minute's raw files)."""
    counts: dict[str, int]
    seen = set(map(_EXCHANGE, records))
    if len(seen) == 1:  # one exchange (the usual minute): three passes in C, no tuple per record
        (name,) = seen
        counts = {name: len(records)}
        files = {(name, collector) for collector in set(map(_COLLECTOR, records))}
        last = {name: max(map(_RECV_NS, records))}
    else:
        names = list(map(_EXCHANGE, records))
        counts = Counter(names)
        files = set(zip(names, map(_COLLECTOR, records), strict=True))
        stamps = list(map(_RECV_NS, records))
        last = {name: max(compress(stamps, map(eq, repeat(name), names))) for name in counts}
    exchanges = {
        name: {
            "records": counts[name],
            "collectors": sum(1 for exchange, _ in files if exchange == name),
            "last_message_at": iso_ns(last[name]),
        }
        for name in sorted(counts)
    }
    return {"exchanges": exchanges, "missing_exchanges": [e for e in expected if e not in counts]}, files


def compute_minute(
    state: SymbolState,
    symbol: str,
    minute: int,
    records: Sequence[RawRecord],
    expected_exchanges: Sequence[str],
) -> MinuteOutputs:
    """Pure: step every engine over one minute's raw records and build every product's document."""
    stats = NormalizeStats()
    events = normalize_records(records, symbol, stats)
    sources, files = summarize_sources(records, expected_exchanges)
    envelope = {
        "schema_version": DOCUMENT_SCHEMA_VERSION,
        "symbol": symbol,
        "minute": iso_minute(minute),
        "generated_at": iso_minute(minute + 1),
        "next_update_at": iso_minute(minute + 2),
        "sources": sources,
        "normalize_errors": stats.error_total(),
    }
    engine_states: dict[str, Any] = {}
    documents: dict[str, dict[str, Any]] = {}
    blobs: dict[str, bytes] = {}
    for engine in ENGINES:
        result = engine.step(state.engines.get(engine.name, {}), events, symbol, minute)
        engine_states[engine.name] = result.state
        for product, body in result.documents.items():
            clashes = sorted(set(body) & (set(envelope) | {"product", "engine_version"}))
            if clashes:
                raise ValueError(
                    f"engine {engine.name}: product {product} would overwrite {', '.join(clashes)}"
                )
            documents[product] = {**envelope, "product": product, "engine_version": engine.version, **body}
        blobs.update(result.blobs)
    raw_files = tuple(sorted(raw_key(symbol, minute, exchange, collector) for exchange, collector in files))
    new_state = SymbolState(symbol, minute, dict(ENGINE_VERSIONS), engine_states, raw_files)
    return MinuteOutputs(new_state, documents, sources, stats, blobs, events)


def commit_held(ctx: JobContext, pointers: PointerBuffer | None, state: SymbolState) -> None:
    """Write the held pointer updates (if any), then save ``state`` once the site is durable."""
    if pointers is not None:
        pointers.flush()
    ctx.site.barrier()  # what the site holds (history chunks too) is durable before the state moves
    save_state(ctx.data, state, replace=ctx.config.replace_immutable)


def with_calibrator_weights(state: SymbolState, weights: dict[str, float] | None) -> SymbolState:
    """The state with the calibrator's newest weights (the version whose window ended at or before the
    minute) handed to the liquidation engines; unchanged before the first calibration."""
    if weights is None:
        return state
    liquidations = {**state.engines.get("liquidations", {}), "calibrator_weights": weights}
    return replace(state, engines={**state.engines, "liquidations": liquidations})


def calibrate_if_window_end(ctx: JobContext, symbol: str, minute: int) -> None:
    """Run the calibrate job for the window ending at ``minute`` (every quarter hour) if it has not run.

    Every path (the scheduler, the backfill, the Lambda handler) calls it before ``minute``'s job, which
    is the first to use the new weights, so live and backfilled minutes always see the same weights
    version. The window's data is complete once ``minute - 1`` is published, so the scheduler also runs
    it right then, keeping the calibration off the next minute's latency; the call before the minute
    is then a single read."""
    if minute % CALIBRATION_WINDOW_MINUTES or not has_liquidation_engines(symbol):
        return
    run_calibration(ctx, symbol, minute)


def run_minute(
    ctx: JobContext,
    symbol: str,
    minute: int,
    *,
    state: SymbolState | None = None,
    now_ns: int | None = None,
    publish: bool = True,
    late_files: int | None = None,
    pointers: PointerBuffer | None = None,
) -> tuple[SymbolState, MinuteResult]:
    """Run one symbol's minute end to end. ``state`` skips the state load (a backfill carries it);
    ``now_ns`` and ``late_files`` (live runs only) go into the health document as lag and the count
    of raw files that arrived after their minute was published; ``publish=False`` (warm-up) computes
    the new state without publishing or saving anything. With ``pointers`` (a backfill), the minute's
    immutable objects are written but its pointer updates are held in that buffer and its state is
    not saved: the caller flushes the buffer, then saves the state (:func:`commit_held`)."""
    started = time.perf_counter()
    if state is None:
        state = load_state_before(ctx.data, symbol, minute, ENGINE_VERSIONS)
    state = with_calibrator_weights(state, weights_for_minute(ctx.data, symbol, minute))
    read_report = ReadReport()
    records = read_minute(ctx.data, symbol, minute, report=read_report)
    outputs = compute_minute(state, symbol, minute, records, ctx.config.exchanges)
    if has_liquidation_engines(symbol):
        read_errors = read_report.lines_malformed + len(read_report.files_corrupt)
        inputs = window_minute(outputs.events, minute, read_errors, outputs.normalize.error_total())
        ctx.window_minutes.put(symbol, minute, inputs)
    lag_s = None if now_ns is None else round((now_ns - minute_start_ns(minute + 1)) / 1e9, 3)
    live = None
    if now_ns is not None:
        collectors = read_collector_status(ctx.data)
        live = {"lag_seconds": lag_s, "late_files": late_files or 0, "collectors": collectors}
    written = unchanged = immutables = 0
    if publish:
        with publication(
            ctx.site, ctx.layout, replace_immutable=ctx.config.replace_immutable, pointers=pointers
        ) as pub:
            add_minute_documents(
                pub,
                ctx.layout,
                symbol,
                minute,
                outputs.documents,
                outputs.source_summary,
                live,
                outputs.blobs,
            )
        if pointers is None:
            commit_held(ctx, None, outputs.state)
        written = pub.report.immutables_written + pub.report.pointers_written
        unchanged = pub.report.immutables_unchanged + pub.report.pointers_unchanged
        immutables = pub.report.immutables_written
    result = MinuteResult(
        symbol=symbol,
        minute=minute,
        records=len(records),
        events=outputs.normalize.event_total(),
        errors=outputs.normalize.error_total(),
        objects_written=written,
        objects_unchanged=unchanged,
        duration_s=time.perf_counter() - started,
        missing_exchanges=tuple(outputs.source_summary["missing_exchanges"]),
        immutables_written=immutables,
    )
    level = logging.INFO if publish else logging.DEBUG
    if logger.isEnabledFor(level):  # (a backfill's minutes have no line to format)
        logger.log(
            level,
            "minute %s %s%s: %d records, %d events, %d errors, %d objects written (%d unchanged) in %.3fs%s",
            symbol,
            iso_minute(minute),
            "" if publish else " (warm-up)",
            result.records,
            result.events,
            result.errors,
            result.objects_written,
            result.objects_unchanged,
            result.duration_s,
            "" if lag_s is None else f", lag {lag_s:.1f}s",
        )
    return outputs.state, result


__all__ = [
    "ENGINE_VERSIONS",
    "PRODUCTS",
    "JobContext",
    "MinuteResult",
    "commit_held",
    "compute_minute",
    "run_minute",
]
