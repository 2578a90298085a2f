"""Backfill: the minute job over a range of stored minute files, resumable after a kill.

A minute counts as done when its state checkpoint exists (written by the same engine versions) and
every product's immutable version is on the site: state is saved only after publishing, so a kill
at any point leaves the range resumable, and a re-run rewrites identical bytes or nothing at all.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from tqdm import tqdm

from moonstream.jobs.minute import ENGINE_VERSIONS, PRODUCTS, JobContext, run_minute
from moonstream.jobs.state import SymbolState, checkpoint_key, load_state_before, read_checkpoint
from moonstream.publish.site import publish_static_assets
from moonstream.timeutil import iso_minute

logger = logging.getLogger(__name__)


@dataclass
class BackfillReport:
    minutes_processed: int = 0
    minutes_already_done: int = 0
    records: int = 0
    errors: int = 0
    objects_written: int = 0
    minutes_without_data: dict[str, int] = field(default_factory=dict)
    duration_s: float = 0.0


def _done_minutes(ctx: JobContext, symbol: str, first: int, last: int) -> int | None:
    """The last minute of the unbroken run of finished minutes starting at ``first``, if any."""
    done: int | None = None
    for minute in range(first, last + 1):
        if not ctx.data.exists(checkpoint_key(symbol, minute)):
            break
        if not all(ctx.site.exists(ctx.layout.version_key(symbol, p, minute)) for p in PRODUCTS):
            break
        done = minute
    return done


def _starting_state(ctx: JobContext, symbol: str, first: int, last: int) -> tuple[int, SymbolState, int]:
    """(first minute to run, the state to run it from, how many minutes were already done)."""
    done = _done_minutes(ctx, symbol, first, last)
    if done is not None:
        state = read_checkpoint(ctx.data, symbol, done, ENGINE_VERSIONS)
        if state is not None:
            return done + 1, state, done - first + 1
    return first, load_state_before(ctx.data, symbol, first, ENGINE_VERSIONS), 0


def backfill(
    ctx: JobContext, symbols: Sequence[str], first: int, last: int, *, progress: bool | None = None
) -> BackfillReport:
    """Run the minute job for every symbol over ``first..last`` (inclusive), oldest first."""
    if last < first:
        raise ValueError(f"empty range: {iso_minute(first)} is after {iso_minute(last)}")
    started = time.perf_counter()
    report = BackfillReport()
    publish_static_assets(ctx.site, ctx.layout)
    show = sys.stderr.isatty() if progress is None else progress
    for symbol in symbols:
        start, state, already = _starting_state(ctx, symbol, first, last)
        report.minutes_already_done += already
        if already:
            logger.info("%s: resuming after %d finished minutes, at %s", symbol, already, iso_minute(start))
        bar = tqdm(total=last - first + 1, initial=already, desc=symbol, unit="min", disable=not show)
        for minute in range(start, last + 1):
            state, result = run_minute(ctx, symbol, minute, state=state)
            report.minutes_processed += 1
            report.records += result.records
            report.errors += result.errors
            report.objects_written += result.objects_written
            if result.records == 0:
                report.minutes_without_data[symbol] = report.minutes_without_data.get(symbol, 0) + 1
            bar.update(1)
        bar.close()
    report.duration_s = time.perf_counter() - started
    logger.info(
        "backfill %s %s..%s: %d minutes processed, %d already done, %d records, %d errors, "
        "%d objects written, minutes without data %s, %.1fs",
        ",".join(symbols),
        iso_minute(first),
        iso_minute(last),
        report.minutes_processed,
        report.minutes_already_done,
        report.records,
        report.errors,
        report.objects_written,
        report.minutes_without_data or "none",
        report.duration_s,
    )
    return report
