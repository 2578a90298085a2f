"""Backfill: the minute job over a range of stored minute files, resumable after a kill.

A cold start (no checkpoint before the range) first warms the engines up, without publishing, from
the nearest earlier minute with an order-book snapshot. The range is done up to the newest state checkpoint
(written by the same engine versions) with every minute before it on the site: state is saved only
after publishing, so a kill at any point leaves the range resumable, and a re-run rewrites identical
bytes or nothing at all. Pointers (``latest``, indexes, partial history chunks) are written once per
commit, not once per minute, and commits are hourly for a range older than retention keeps every
checkpoint of (:func:`commits_after`).
Symbols are independent: with ``workers > 1`` each symbol runs in its own process.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import queue
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from tqdm import tqdm

from moonstream.collector.rawfile import ReadReport, list_raw_minutes, read_minute
from moonstream.jobs.config import JobConfig
from moonstream.jobs.minute import (
    ENGINE_VERSIONS,
    JobContext,
    calibrate_if_window_end,
    commit_held,
    run_minute,
)
from moonstream.jobs.retention import MINUTES_PER_DAY, MINUTES_PER_HOUR, RetentionPolicy, state_before
from moonstream.jobs.state import SymbolState, list_checkpoints, read_checkpoint
from moonstream.publish.publisher import PointerBuffer
from moonstream.publish.site import publish_static_assets
from moonstream.timeutil import iso_minute, minute_date_hhmm, minute_of

logger = logging.getLogger(__name__)

#: How far before its first minute a cold-started backfill looks for an order-book snapshot to warm
#: up from (the collector fetches one at connect and hourly).
WARMUP_LOOKBACK_MINUTES = 90


@dataclass
class BackfillReport:
    """What a backfill did; reports of several symbols add up with :meth:`merge`."""

    minutes_processed: int = 0
    minutes_already_done: int = 0
    records: int = 0
    errors: int = 0
    objects_written: int = 0
    minutes_without_data: dict[str, int] = field(default_factory=dict)
    missing_exchange_minutes: dict[str, int] = field(default_factory=dict)
    duration_s: float = 0.0

    def merge(self, other: BackfillReport) -> None:
        self.minutes_processed += other.minutes_processed
        self.minutes_already_done += other.minutes_already_done
        self.records += other.records
        self.errors += other.errors
        self.objects_written += other.objects_written
        self.minutes_without_data = dict(
            Counter(self.minutes_without_data) + Counter(other.minutes_without_data)
        )
        self.missing_exchange_minutes = dict(
            Counter(self.missing_exchange_minutes) + Counter(other.missing_exchange_minutes)
        )

    def summary(self) -> str:
        rate = self.minutes_processed / self.duration_s if self.duration_s > 0 else 0.0
        return (
            f"{self.minutes_processed} minutes processed ({rate:.1f}/s), "
            f"{self.minutes_already_done} already done, {self.records} records, "
            f"{self.errors} normalize errors, {self.objects_written} objects written, "
            f"minutes without data {self.minutes_without_data or 'none'}, "
            f"missing exchange-minutes {self.missing_exchange_minutes or 'none'}, {self.duration_s:.1f}s"
        )


@dataclass(frozen=True)
class SymbolPlan:
    """What a backfill of one symbol would do (``--dry-run``)."""

    symbol: str
    minutes: int
    minutes_with_data: int
    already_done: int

    @property
    def to_process(self) -> int:
        return self.minutes - self.already_done


def _done_minutes(ctx: JobContext, symbol: str, first: int, last: int) -> int | None:
    """The newest minute of ``first..last`` with a checkpoint such that every minute from ``first`` to
    it is on the site (a backfill saves a checkpoint only after publishing and flushing every minute
    up to it), if any. Lists checkpoints and published versions a day at a time (two listings a day,
    not two requests a minute: a re-run of a week on S3 would otherwise spend minutes asking)."""
    done: int | None = None
    for day_start in range(first - first % MINUTES_PER_DAY, last + 1, MINUTES_PER_DAY):
        day, _ = minute_date_hhmm(day_start)
        checkpoints = {minute for minute, _ in list_checkpoints(ctx.data, symbol, day)}
        # Every product of a minute is published together, so one product shows the site has them.
        versions_prefix = ctx.layout.version_key(symbol, "market", day_start).rpartition("/")[0] + "/"
        published = set(ctx.site.list(versions_prefix))
        for minute in range(max(first, day_start), min(last, day_start + MINUTES_PER_DAY - 1) + 1):
            if ctx.layout.version_key(symbol, "market", minute) not in published:
                return done
            if minute in checkpoints:
                done = minute
    return done


def commits_after(minute: int, last: int, now_minute: int, policy: RetentionPolicy) -> bool:
    """Whether a backfill commits after ``minute`` (writes its held pointers, saves its checkpoint
    and moves the head): after the range's last minute, after each ``:00`` minute (the checkpoint
    retention keeps hourly) and after every minute young enough for retention to keep them all.

    Between commits the minutes' pointer updates are held in memory (one write per pointer per
    commit) and no checkpoint is written, so a kill loses at most an hour's work of an old range."""
    return minute == last or minute % MINUTES_PER_HOUR == 0 or now_minute - minute < policy.keep_all_minutes


def _starting_state(ctx: JobContext, symbol: str, first: int, last: int) -> tuple[int, SymbolState, int]:
    """(first minute to run, the state to run it from, how many minutes were already done)."""
    done = _done_minutes(ctx, symbol, first, last)
    if done is not None:
        state = read_checkpoint(ctx.data, symbol, done, ENGINE_VERSIONS)
        if state is not None:
            return done + 1, state, done - first + 1
    state = state_before(ctx, symbol, first)  # recomputes a pruned checkpoint as the first run had it
    if state.minute is None:
        state = _warm_up(ctx, symbol, first, state)
    return first, state, 0


def snapshot_minute_before(ctx: JobContext, symbol: str, first: int) -> int | None:
    """The newest minute in the look-back before ``first`` whose raw files hold an order-book
    snapshot (``rest:depth``), or None."""
    for minute in range(first - 1, first - 1 - WARMUP_LOOKBACK_MINUTES, -1):
        if any(r.channel == "rest:depth" for r in read_minute(ctx.data, symbol, minute, report=ReadReport())):
            return minute
    return None


def _warm_up(ctx: JobContext, symbol: str, first: int, state: SymbolState) -> SymbolState:
    """A cold start: step the engines, without publishing, from the nearest earlier order-book
    snapshot, so the book is there at ``first`` (never invented: without one it starts empty)."""
    start = snapshot_minute_before(ctx, symbol, first)
    if start is None:
        return state
    logger.info(
        "%s: warming up from the snapshot in %s (%d minutes)", symbol, iso_minute(start), first - start
    )
    for minute in range(start, first):
        state, _ = run_minute(ctx, symbol, minute, state=state, publish=False)
    return state


def plan_backfill(ctx: JobContext, symbols: Sequence[str], first: int, last: int) -> list[SymbolPlan]:
    """Per symbol: minutes in range, minutes with raw files, minutes already done. Writes nothing."""
    plans = []
    for symbol in symbols:
        done = _done_minutes(ctx, symbol, first, last)
        plans.append(
            SymbolPlan(
                symbol=symbol,
                minutes=last - first + 1,
                minutes_with_data=len(list_raw_minutes(ctx.data, symbol, first, last)),
                already_done=0 if done is None else done - first + 1,
            )
        )
    return plans


def backfill_symbol(
    ctx: JobContext,
    symbol: str,
    first: int,
    last: int,
    progress: Any = None,
    *,
    now_minute: int | None = None,
) -> BackfillReport:
    """Run one symbol over ``first..last``, oldest first, resuming after finished minutes.

    ``progress`` is anything with ``put(n)`` (a queue) or ``update(n)`` (a tqdm bar), told of each minute.
    ``now_minute`` (default: the wall clock) dates the minutes for :func:`commits_after`.
    """
    started = time.perf_counter()
    report = BackfillReport()
    policy = RetentionPolicy.from_config(ctx.config)
    now = minute_of(time.time_ns()) if now_minute is None else now_minute
    start, state, already = _starting_state(ctx, symbol, first, last)
    report.minutes_already_done = already
    if already:
        logger.info("%s: resuming after %d finished minutes, at %s", symbol, already, iso_minute(start))
        _tell(progress, already)
    held = PointerBuffer(ctx.site, ctx.layout)
    for minute in range(start, last + 1):
        calibrate_if_window_end(ctx, symbol, minute)
        state, result = run_minute(ctx, symbol, minute, state=state, pointers=held)
        if commits_after(minute, last, now, policy):
            commit_held(ctx, held, state)
        report.minutes_processed += 1
        report.records += result.records
        report.errors += result.errors
        report.objects_written += result.objects_written
        if result.records == 0:
            report.minutes_without_data[symbol] = report.minutes_without_data.get(symbol, 0) + 1
        for exchange in result.missing_exchanges:
            report.missing_exchange_minutes[exchange] = report.missing_exchange_minutes.get(exchange, 0) + 1
        _tell(progress, 1)
    ctx.site.barrier()
    ctx.data.barrier()
    report.duration_s = time.perf_counter() - started
    return report


def _tell(progress: Any, n: int) -> None:
    if progress is None:
        return
    if hasattr(progress, "update"):
        progress.update(n)
    else:
        progress.put(n)


#: Cyclic-GC thresholds for a backfill process. A minute allocates hundreds of thousands of short-lived
#: objects (events, level tuples, documents) and makes almost no reference cycles; at Python's default
#: generation-0 threshold (700) the collector runs hundreds of times a minute, rescans the engines' live
#: state each time it reaches the older generations, and frees next to nothing.
BACKFILL_GC_THRESHOLDS = (50_000, 20, 20)


def tune_gc_for_backfill() -> None:
    """Set :data:`BACKFILL_GC_THRESHOLDS` and move what is alive now (modules, config) out of the
    collector's sight (``gc.freeze``). For a process's entry point: the settings are process-wide."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*BACKFILL_GC_THRESHOLDS)


def _worker(
    config: JobConfig, symbol: str, first: int, last: int, progress: Any, now_minute: int | None
) -> BackfillReport:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    tune_gc_for_backfill()
    return backfill_symbol(JobContext.open(config), symbol, first, last, progress, now_minute=now_minute)


def backfill(
    ctx: JobContext,
    symbols: Sequence[str],
    first: int,
    last: int,
    *,
    workers: int = 1,
    progress: bool | None = None,
    now_minute: int | None = None,
) -> BackfillReport:
    """Run the minute job for every symbol over ``first..last`` (inclusive), oldest first per symbol.
    ``now_minute`` (default: the wall clock) dates the minutes for :func:`commits_after`."""
    if last < first:
        raise ValueError(f"empty range: {iso_minute(first)} is after {iso_minute(last)}")
    started = time.perf_counter()
    publish_static_assets(ctx.site, ctx.layout)
    show = sys.stderr.isatty() if progress is None else progress
    total = len(symbols) * (last - first + 1)
    report = BackfillReport()
    with tqdm(total=total, desc="backfill", unit="min", disable=not show, smoothing=0.1) as bar:
        if workers <= 1 or len(symbols) <= 1:
            for symbol in symbols:
                report.merge(backfill_symbol(ctx, symbol, first, last, bar, now_minute=now_minute))
        else:
            report = _backfill_parallel(ctx.config, symbols, first, last, workers, bar, now_minute)
    report.duration_s = time.perf_counter() - started
    logger.info(
        "backfill %s %s..%s: %s", ",".join(symbols), iso_minute(first), iso_minute(last), report.summary()
    )
    return report


#: Thread-pool sizes of numeric libraries, set to 1 for the worker processes. Each worker is one
#: symbol on one core, and OpenBLAS's idle threads spin before they sleep: with numpy's default
#: (a thread per core), every worker's start cost the other workers CPU (about 6 % of a three-symbol
#: backfill's samples on two cores, in ``blas_thread_server``). The engines call no threaded BLAS.
SINGLE_THREAD_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


@contextmanager
def single_threaded_workers() -> Iterator[None]:
    """Within: processes started inherit :data:`SINGLE_THREAD_ENV` set to 1, where the environment
    does not set them already (an operator's own setting wins). Restored on exit."""
    added = [name for name in SINGLE_THREAD_ENV if name not in os.environ]
    for name in added:
        os.environ[name] = "1"
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def _backfill_parallel(
    config: JobConfig,
    symbols: Sequence[str],
    first: int,
    last: int,
    workers: int,
    bar: tqdm[Any],
    now_minute: int | None,
) -> BackfillReport:
    context = multiprocessing.get_context("spawn")
    report = BackfillReport()
    with (
        single_threaded_workers(),
        context.Manager() as manager,
        ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool,
    ):
        updates = manager.Queue()
        futures: list[Future[BackfillReport]] = [
            pool.submit(_worker, config, symbol, first, last, updates, now_minute) for symbol in symbols
        ]
        while not all(f.done() for f in futures) or not updates.empty():
            try:
                bar.update(updates.get(timeout=0.2))
            except queue.Empty:
                continue
        for future in futures:
            report.merge(future.result())  # re-raises a worker's exception here
    return report
