"""AWS Lambda entry points (``handler(event, context)``) for the minute job.

Configuration comes from the environment, read once per cold start:
``MOONSTREAM_DATA_URL``, ``MOONSTREAM_SITE_URL`` (``s3://bucket/prefix``), ``MOONSTREAM_SYMBOLS``
(comma-separated), ``MOONSTREAM_EXCHANGES``, ``MOONSTREAM_SITE_PREFIX``; the S3 endpoint as for
every store (``MOONSTREAM_S3_ENDPOINT_URL`` or the AWS defaults).

Events:

* ``{"symbol": "BTC", "minute": "2024-07-19T00:00"}`` - one symbol-minute (the fan-out form: one
  invocation per symbol, so symbols never wait for each other);
* ``{"symbols": ["BTC", "ETH"], "minute": ...}`` - several, each tried even if another fails;
* an EventBridge Scheduler event with ``"time"`` and no minute - the minute before that time.

A failed symbol raises at the end (after the others ran), so the platform's retry re-runs the
invocation; minute jobs are idempotent, so symbols that already succeeded write nothing again.
The minute handler runs the calibration of the window that ends at its minute first (every quarter
hour), as the scheduler and the backfill do, so every path sees the same weights; ``calibrate_handler``
re-runs a window on its own. ``prune_handler`` (an hourly schedule) applies the checkpoint retention
policy, as the long-running scheduler does on its own.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

from moonstream.config import build_config
from moonstream.jobs.calibrate import WINDOW_MINUTES, run_calibration
from moonstream.jobs.config import JobConfig
from moonstream.jobs.minute import JobContext, calibrate_if_window_end, run_minute
from moonstream.jobs.retention import RetentionPolicy, prune_checkpoints
from moonstream.timeutil import iso_minute, parse_minute

logger = logging.getLogger(__name__)

_ENV_KEYS = {
    "MOONSTREAM_DATA_URL": "data_url",
    "MOONSTREAM_SITE_URL": "site_url",
    "MOONSTREAM_SYMBOLS": "symbols",
    "MOONSTREAM_EXCHANGES": "exchanges",
    "MOONSTREAM_SITE_PREFIX": "site_prefix",
}
_CONTEXTS: dict[JobConfig, JobContext] = {}


class HandlerError(Exception):
    """One or more symbols failed; the message lists them (never a traceback or a path)."""


def config_from_env(environ: Mapping[str, str]) -> JobConfig:
    """The job configuration the environment describes."""
    values: dict[str, Any] = {}
    for name, key in _ENV_KEYS.items():
        if name not in environ:
            continue
        raw = environ[name]
        if key == "symbols":
            values[key] = [s.strip().upper() for s in raw.split(",") if s.strip()]
        elif key == "exchanges":
            values[key] = [s.strip() for s in raw.split(",") if s.strip()]
        else:
            values[key] = raw
    return build_config(JobConfig, values, section="environment")


def _context(config: JobConfig) -> JobContext:
    if config not in _CONTEXTS:  # kept across warm invocations: one set of clients per container
        _CONTEXTS[config] = JobContext.open(config)
    return _CONTEXTS[config]


def _event_minute(event: Mapping[str, Any]) -> int:
    if "minute" in event:
        return parse_minute(str(event["minute"]))
    if "time" in event:
        return parse_minute(str(event["time"])) - 1
    raise ValueError("event names no 'minute' and no 'time'")


def _event_symbols(event: Mapping[str, Any], config: JobConfig) -> list[str]:
    if "symbol" in event:
        return [str(event["symbol"]).upper()]
    if "symbols" in event:
        return [str(s).upper() for s in event["symbols"]]
    return list(config.symbols)


def _each_symbol(
    event: Mapping[str, Any], config: JobConfig, what: str, job: Callable[[str], dict[str, Any]]
) -> list[dict[str, Any]]:
    """Run ``job`` for every symbol the event names, each tried even if another fails; a failure is
    logged with its traceback and, once all ran, raised as one :class:`HandlerError`."""
    results: list[dict[str, Any]] = []
    failed: list[str] = []
    for symbol in _event_symbols(event, config):
        if symbol not in config.symbols:
            logger.error("event names symbol %r, which is not configured", symbol)
            failed.append(symbol)
            continue
        try:
            results.append(job(symbol))
        except Exception:
            logger.exception("%s failed for %s", what, symbol)
            failed.append(symbol)
    if failed:
        raise HandlerError(f"{what} failed for {', '.join(failed)}")
    return results


def minute_handler(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
    """Run the minute job for the event's symbols and minute; returns a summary per symbol."""
    config = config_from_env(os.environ)
    ctx = _context(config)
    minute = _event_minute(event)

    def job(symbol: str) -> dict[str, Any]:
        calibrate_if_window_end(ctx, symbol, minute)
        _, result = run_minute(ctx, symbol, minute)
        return {"symbol": symbol, "minute": iso_minute(minute), "records": result.records,
                "errors": result.errors, "objects_written": result.objects_written}  # fmt: skip

    results = _each_symbol(event, config, f"minute {iso_minute(minute)}", job)
    return {"minute": iso_minute(minute), "results": results}


# --- calibrate job (issue 5) ----------------------------------------------------------------------


def _event_window_end(event: Mapping[str, Any]) -> int:
    """``window_end`` if given, else the last quarter hour at or before an EventBridge ``time``."""
    if "window_end" in event:
        end = parse_minute(str(event["window_end"]))
        if end % WINDOW_MINUTES:
            raise ValueError(f"window_end {event['window_end']!r} is not on a quarter hour")
        return end
    if "time" in event:
        return parse_minute(str(event["time"])) // WINDOW_MINUTES * WINDOW_MINUTES
    raise ValueError("event names no 'window_end' and no 'time'")


def calibrate_handler(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
    """Run the calibrate job for the event's symbols over the 15-minute window ending at
    ``window_end`` (``{"symbol": "BTC", "window_end": "2024-07-19T00:15"}``, or ``symbols``, or an
    EventBridge event with ``time``: the window that ended at the last quarter hour at or before it).
    Failures are collected and raised at the end, as in :func:`minute_handler`."""
    config = config_from_env(os.environ)
    ctx = _context(config)
    end = _event_window_end(event)

    def job(symbol: str) -> dict[str, Any]:
        result = run_calibration(ctx, symbol, end)
        return {"symbol": symbol, "window_end": iso_minute(end), "version": result.key,
                "written": result.written, "pointer_moved": result.pointer_moved,
                "events": result.stats.get("events"),
                "attributable": result.stats.get("attributable")}  # fmt: skip

    results = _each_symbol(event, config, f"calibration window ending {iso_minute(end)}", job)
    return {"window_end": iso_minute(end), "results": results}


# --- checkpoint retention -----------------------------------------------------------------------


def prune_handler(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
    """Prune the event's symbols' state checkpoints as of ``now`` (a minute) or an EventBridge
    ``time`` (``{"time": "2024-07-19T01:00:00Z"}``), by the configured retention policy; a
    ``"dry_run": true`` event deletes nothing. Failures are collected as in :func:`minute_handler`."""
    config = config_from_env(os.environ)
    ctx = _context(config)
    if "now" in event:
        now = parse_minute(str(event["now"]))
    elif "time" in event:
        now = parse_minute(str(event["time"]))
    else:
        raise ValueError("event names no 'now' and no 'time'")
    policy = RetentionPolicy.from_config(config)
    dry_run = bool(event.get("dry_run", False))

    def job(symbol: str) -> dict[str, Any]:
        report = prune_checkpoints(ctx.data, symbol, now, policy, dry_run=dry_run)
        return {"symbol": symbol, "listed": report.listed, "deleted": report.deleted,
                "kept": report.kept, "dry_run": report.dry_run}  # fmt: skip

    results = _each_symbol(event, config, f"checkpoint pruning at {iso_minute(now)}", job)
    return {"now": iso_minute(now), "results": results}
