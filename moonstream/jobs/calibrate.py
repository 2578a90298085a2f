"""The calibrate job (DESIGN §4): one symbol's 15-minute window -> a new calibrator weights version.

Objects in the data store (plain JSON, canonical bytes)::

    state/{SYM}/calibrator/versions/{YYYY-MM-DD}/{HHMM}.json   weights after the window ending at HHMM
                                                               (create-only, immutable)
    state/{SYM}/calibrator/weights.json                        pointer to the newest version
                                                               (compare-and-swap, forward only)

A window ``[E − 15, E)`` is named by its end ``E`` (a minute; the window's last minute is ``E − 1``);
its version applies to minutes ``>= E``. The version a window starts from is the newest one with an
earlier end (not the pointer), so re-running any window, even after later ones, gives the same
bytes; an existing version is returned as is and nothing is written (idempotent). The price path of
the last ``MINUTE_CACHE_SIZE`` minutes travels inside the versions, so a window reads only its own
15 minutes of raw files.
"""

from __future__ import annotations

import bisect
import json
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from moonstream.collector.rawfile import ReadReport, read_minute
from moonstream.jobs.engines import aggression, calibrator, tape
from moonstream.jobs.engines.inference import BUFFER
from moonstream.jobs.engines.leverage import leverage_config
from moonstream.jobs.events import Event, Liquidation, Trade, types_other_than
from moonstream.jobs.normalize import NormalizeStats, normalize_records
from moonstream.publish.encode import canonical_json
from moonstream.store.base import ObjectMeta, ObjectNotFound, PreconditionFailed, Store
from moonstream.timeutil import iso_minute, minute_date_hhmm, minute_from_date_hhmm

if TYPE_CHECKING:  # the minute job imports this module for the weights
    from moonstream.jobs.minute import JobContext

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
WINDOW_MINUTES = calibrator.WINDOW_MINUTES
_META = ObjectMeta("application/json")
_CAS_ATTEMPTS = 8
_IGNORED = types_other_than(Trade, Liquidation)


def pointer_key(symbol: str) -> str:
    return f"state/{symbol}/calibrator/weights.json"


def versions_prefix(symbol: str) -> str:
    return f"state/{symbol}/calibrator/versions/"


def version_key(symbol: str, window_end: int) -> str:
    day, hhmm = minute_date_hhmm(window_end)
    return f"{versions_prefix(symbol)}{day}/{hhmm}.json"


def _window_end_of_key(symbol: str, key: str) -> int | None:
    rest = key[len(versions_prefix(symbol)) :]
    try:
        day, name = rest.split("/")
        return minute_from_date_hhmm(day, name.removesuffix(".json"))
    except ValueError:
        return None


@dataclass(frozen=True)
class CalibrationResult:
    symbol: str
    window_end: int
    key: str
    written: bool  # False when the version already existed (idempotent re-run)
    pointer_moved: bool
    weights: dict[int, float]
    stats: dict[str, Any]


def _read_json(store: Store, key: str) -> dict[str, Any] | None:
    try:
        return dict(json.loads(store.read(key).data))
    except ObjectNotFound:
        return None


def _latest_before(store: Store, symbol: str, minute: int) -> str | None:
    """Key of the newest version whose window end is ``<= minute``: the version of the last quarter
    hour at or before ``minute`` when it exists (one read, the live case), else from a listing.
    Never the pointer, which may lag a version after a crash between the two writes."""
    key = version_key(symbol, minute // WINDOW_MINUTES * WINDOW_MINUTES)
    if store.head(key) is not None:
        return key
    ends: list[tuple[int, str]] = []
    for key in store.list(versions_prefix(symbol)):
        end = _window_end_of_key(symbol, key)
        if end is not None:
            ends.append((end, key))
    ends.sort()
    i = bisect.bisect_right([e for e, _ in ends], minute)
    return ends[i - 1][1] if i else None


def _latest_version(store: Store, symbol: str, minute: int) -> tuple[str | None, dict[str, Any] | None]:
    """``(key, document)`` of the newest version whose window end is ``<= minute`` (see
    :func:`_latest_before`), or ``(None, None)``. The live case, the version of the last quarter hour,
    takes a single read (no head first)."""
    key = version_key(symbol, minute // WINDOW_MINUTES * WINDOW_MINUTES)
    doc = _read_json(store, key)
    if doc is not None:
        return key, doc
    latest = _latest_before(store, symbol, minute)
    return latest, None if latest is None else _read_json(store, latest)


def read_version_before(store: Store, symbol: str, minute: int) -> dict[str, Any] | None:
    """The newest version document with window end ``<= minute``, or None."""
    return _latest_version(store, symbol, minute)[1]


def weights_for_minute(store: Store, symbol: str, minute: int) -> dict[str, float] | None:
    """``{"<tier>": weight}`` for the minute job of ``minute`` (newest version with end <= minute),
    ready for ``state.engines["liquidations"]["calibrator_weights"]``; None before any version."""
    doc = read_version_before(store, symbol, minute)
    return None if doc is None else {str(t): float(w) for t, w in doc["weights"].items()}


def bars_from_events(events: Sequence[Event], minute: int) -> calibrator.MinuteBar | None:
    """The minute's bar from its trades (picked as the liquidation engine does), or None."""
    return _bar(aggression.pick_trades(e for e in events if isinstance(e, Trade)), minute)


def _bar(trades: Sequence[Trade], minute: int) -> calibrator.MinuteBar | None:
    if not trades:
        return None
    prices = [t.price for t in trades]
    # float() is monotonic, so the float of the extreme decimal is the extreme of the floats
    return calibrator.MinuteBar(
        minute, float(prices[0]), float(max(prices)), float(min(prices)), float(prices[-1])
    )


def _observations(events: Sequence[Event], minute: int) -> list[calibrator.LiquidationObs]:
    return [
        calibrator.LiquidationObs(minute, e.side.value, float(e.price))
        for e in events
        if isinstance(e, Liquidation)
    ]


@dataclass(frozen=True)
class WindowMinute:
    """What a calibration takes from one minute: its bar, its liquidations and its error counts."""

    bar: calibrator.MinuteBar | None
    liquidations: tuple[calibrator.LiquidationObs, ...]
    read_errors: int
    normalize_errors: int


def window_minute(
    events: Sequence[Event], minute: int, read_errors: int, normalize_errors: int
) -> WindowMinute:
    """The calibration inputs of one minute from its normalized events (pure)."""
    trades: list[Trade] = []
    liqs: list[Liquidation] = []
    for e in events:
        if type(e) in _IGNORED:  # most events (book updates): one set lookup
            continue
        if isinstance(e, Trade):
            trades.append(e)
        elif isinstance(e, Liquidation):
            liqs.append(e)
    bar = _bar(aggression.pick_trades(trades), minute)
    return WindowMinute(bar, tuple(_observations(liqs, minute)), read_errors, normalize_errors)


def _read_window_minute(store: Store, symbol: str, minute: int) -> WindowMinute:
    report = ReadReport()
    stats = NormalizeStats()
    events = normalize_records(read_minute(store, symbol, minute, report=report), symbol, stats)
    return window_minute(
        events, minute, report.lines_malformed + len(report.files_corrupt), stats.error_total()
    )


class WindowMinutes:
    """The calibration inputs of each symbol's most recent minutes, as the minute jobs computed them.

    The minute job already reads and normalizes every minute of a window; keeping what the calibrator
    needs from it (a bar, a few liquidations, two counts) spares the calibration a second read of
    15 minutes of raw files. Entries are what a fresh read of the same files gives, so a calibration
    from the cache and one from the store write the same version. Thread-safe; bounded to the last
    window per symbol.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_symbol: dict[str, dict[int, WindowMinute]] = {}

    def put(self, symbol: str, minute: int, inputs: WindowMinute) -> None:
        with self._lock:
            minutes = self._by_symbol.setdefault(symbol, {})
            minutes[minute] = inputs
            for old in [m for m in minutes if m <= minute - WINDOW_MINUTES]:
                del minutes[old]

    def get(self, symbol: str, minute: int) -> WindowMinute | None:
        with self._lock:
            return self._by_symbol.get(symbol, {}).get(minute)


def version_document(
    symbol: str,
    window_end: int,
    previous: str | None,
    update: calibrator.CalibrationUpdate,
    bars: Sequence[calibrator.MinuteBar],
    read_errors: int,
    normalize_errors: int,
) -> dict[str, Any]:
    """The immutable version object (plain JSON; tiers as strings)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "engine_version": calibrator.ENGINE_VERSION,
        "symbol": symbol,
        "window_start": iso_minute(window_end - WINDOW_MINUTES),
        "window_end": iso_minute(window_end),
        "window_end_minute": window_end,
        "previous": previous,
        "weights": {str(t): round(w, 12) for t, w in update.weights.items()},
        "memory": {
            **update.memory.document(),
            "bars": [[b.minute, b.open, b.high, b.low, b.close] for b in bars],
        },
        "stats": {**update.stats, "read_errors": read_errors, "normalize_errors": normalize_errors},
    }


def compute_window(
    store: Store,
    symbol: str,
    window_end: int,
    *,
    buffer: float = BUFFER,
    cached: Callable[[int], WindowMinute | None] | None = None,
) -> tuple[dict[str, Any], str | None]:
    """Read the window and its starting version, run the calibrator; returns (document, previous key).

    ``cached(minute)`` may supply a minute's inputs as its minute job computed them (see
    :class:`WindowMinutes`); minutes it does not know are read from the store."""
    config = leverage_config(symbol)
    prev_key, prev = _latest_version(store, symbol, window_end - 1)
    if prev is not None and prev.get("engine_version") == calibrator.ENGINE_VERSION:
        old_weights = {int(t): float(w) for t, w in prev["weights"].items()}
        memory = calibrator.CalibratorMemory.from_document(prev.get("memory"))
        old_bars = [
            calibrator.MinuteBar(int(m), o, h, lo, c) for m, o, h, lo, c in prev["memory"].get("bars", [])
        ]
    else:
        old_weights = config.normalized_weights()
        memory = calibrator.CalibratorMemory()
        old_bars = []
    first = window_end - WINDOW_MINUTES
    read_errors = normalize_errors = 0
    bars = [b for b in old_bars if b.minute < first]
    liqs: list[calibrator.LiquidationObs] = []
    for minute in range(first, window_end):
        inputs = cached(minute) if cached is not None else None
        if inputs is None:
            inputs = _read_window_minute(store, symbol, minute)
        if inputs.bar is not None:
            bars.append(inputs.bar)
        liqs.extend(inputs.liquidations)
        read_errors += inputs.read_errors
        normalize_errors += inputs.normalize_errors
    bars = [b for b in bars if b.minute > window_end - 1 - calibrator.MINUTE_CACHE_SIZE]
    update = calibrator.calibrate_window(
        old_weights,
        config.tiers,
        config.disabled,
        liqs,
        bars,
        (first, window_end - 1),
        float(tape.bucket_step(symbol)),
        memory,
        buffer,
    )
    doc = version_document(symbol, window_end, prev_key, update, bars, read_errors, normalize_errors)
    return doc, prev_key


def _advance_pointer(store: Store, symbol: str, window_end: int, key: str) -> bool:
    """Move the pointer to ``key`` unless it already names this window or a later one."""
    data = canonical_json(
        {"window_end": iso_minute(window_end), "window_end_minute": window_end, "version": key}
    )
    for _ in range(_CAS_ATTEMPTS):
        try:
            current = store.read(pointer_key(symbol))
        except ObjectNotFound:
            current = None
        if current is not None and int(json.loads(current.data)["window_end_minute"]) >= window_end:
            return False
        try:
            store.replace(
                pointer_key(symbol), data, _META, expected_etag=None if current is None else current.etag
            )
            return True
        except PreconditionFailed:
            continue
    raise PreconditionFailed(f"calibrator pointer of {symbol}: too many concurrent writers")


def run_calibration(
    ctx: JobContext, symbol: str, window_end_minute: int, *, buffer: float = BUFFER
) -> CalibrationResult:
    """Calibrate ``symbol`` over ``[window_end − 15, window_end)``: write the version (create-only),
    then move the pointer forward. Re-running a window writes nothing new.

    ``buffer`` is the level model's buffer (default: the inference engine's ``BUFFER``, so the
    weights are calibrated for the projection that uses them)."""
    if window_end_minute % WINDOW_MINUTES:
        raise ValueError(f"window end {iso_minute(window_end_minute)} is not on a quarter hour")
    store = ctx.data
    key = version_key(symbol, window_end_minute)
    existing = _read_json(store, key)
    written = False
    if existing is None:
        doc, _ = compute_window(
            store,
            symbol,
            window_end_minute,
            buffer=buffer,
            cached=lambda minute: ctx.window_minutes.get(symbol, minute),
        )
        written = store.create_or_same(key, canonical_json(doc), _META)
        store.barrier()  # the version is durable before the pointer names it
        existing = doc if written else _read_json(store, key) or doc
    moved = _advance_pointer(store, symbol, window_end_minute, key)
    weights = {int(t): float(w) for t, w in existing["weights"].items()}
    stats = existing.get("stats", {})
    logger.info(
        "calibrate %s window ending %s: %s, %s attributable of %s liquidations, pointer %s",
        symbol,
        iso_minute(window_end_minute),
        "written" if written else "unchanged",
        stats.get("attributable"),
        stats.get("events"),
        "moved" if moved else "kept",
    )
    return CalibrationResult(symbol, window_end_minute, key, written, moved, weights, stats)
