"""When minute jobs run: per-symbol runners driven by APScheduler (DESIGN §4).

Each symbol has its own :class:`SymbolRunner` and its own scheduled job, run on a thread pool with
one thread per symbol, so a dead feed or a failing job for one symbol never delays another
(spec/002 C1). A runner works through the minutes its committed state has not covered yet, oldest
first, up to ``max_catchup_minutes``; further behind, it jumps: it recomputes ``warmup_minutes``
without publishing and carries on from the newest due minute (the skipped range is logged for a
backfill). The newest minute waits up to ``late_wait_seconds`` after its end for every expected
exchange's file; then it runs, and what is missing is reported as a gap.

Once caught up, after a minute is published (and the calibration that minute completed), a runner
prunes its symbol's old state checkpoints (:mod:`moonstream.jobs.retention`) at most once an hour,
``PRUNE_BATCH`` deletions at a time (a backlog drains a batch a minute), off the next minute's path.

The decision of what to run is the pure function :func:`plan_minutes`; the clock is injected, so
tests run minutes accelerated.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from moonstream.collector.rawfile import list_raw_files
from moonstream.jobs.collector_status import read_collector_status
from moonstream.jobs.minute import (
    ENGINE_VERSIONS,
    JobContext,
    MinuteResult,
    calibrate_if_window_end,
    run_minute,
)
from moonstream.jobs.retention import RetentionPolicy, prune_checkpoints
from moonstream.jobs.state import SymbolState, fresh_state, read_checkpoint, read_head_minute
from moonstream.publish.site import publish_collector_health
from moonstream.timeutil import NS_PER_SECOND, iso_minute, minute_of, minute_start_ns

logger = logging.getLogger(__name__)

Clock = Callable[[], int]

#: How many earlier minutes each live minute re-lists to notice raw files that arrived late.
LATE_FILE_LOOKBACK_MINUTES = 5
#: Minutes between two prunes of a symbol's checkpoints, and the most deleted by one prune.
PRUNE_INTERVAL_MINUTES = 60
PRUNE_BATCH = 500


@dataclass(frozen=True)
class ScheduleConfig:
    """Timing of the live minute jobs."""

    tick_seconds: float = 0.25
    minute_delay_seconds: float = 0.5
    late_wait_seconds: float = 20.0
    max_catchup_minutes: int = 120
    warmup_minutes: int = 15
    health_interval_seconds: float = 5.0

    def __post_init__(self) -> None:
        if (
            self.tick_seconds <= 0
            or self.minute_delay_seconds < 0
            or self.late_wait_seconds < 0
            or (self.health_interval_seconds <= 0)
        ):
            raise ValueError("schedule times must be positive")
        if self.max_catchup_minutes < 1 or self.warmup_minutes < 0:
            raise ValueError("max_catchup_minutes must be >= 1 and warmup_minutes >= 0")


@dataclass(frozen=True)
class MinutePlan:
    warmup: tuple[int, ...]
    publish: tuple[int, ...]
    skipped: tuple[int, int] | None = None  # inclusive range left for a backfill


def due_minute(now_ns: int, config: ScheduleConfig) -> int:
    """The newest minute whose end is at least ``minute_delay_seconds`` in the past."""
    return minute_of(now_ns - int(config.minute_delay_seconds * NS_PER_SECOND)) - 1


def plan_minutes(head: int | None, due: int, config: ScheduleConfig) -> MinutePlan:
    """Which minutes to recompute without publishing (warm-up) and which to publish, oldest first."""
    if head is not None and head >= due:
        return MinutePlan((), ())
    if head is not None and due - head <= config.max_catchup_minutes:
        return MinutePlan((), tuple(range(head + 1, due + 1)))
    warmup = tuple(range(due - config.warmup_minutes, due))
    skipped = None if head is None else (head + 1, due - 1)
    return MinutePlan(warmup, (due,), skipped)


class SymbolRunner:
    """Runs one symbol's due minutes in order; never two ticks at once for the same symbol."""

    def __init__(
        self, ctx: JobContext, symbol: str, config: ScheduleConfig, clock: Clock = time.time_ns
    ) -> None:
        self.ctx, self.symbol, self.config, self.clock = ctx, symbol, config, clock
        self.stop = threading.Event()
        self.history: list[MinuteResult] = []
        self._lock = threading.Lock()
        self._failed_minute: int | None = None
        self.late_files: set[str] = set()
        self._head: int | None = None  # the newest minute this runner knows is committed
        self._raw_files: dict[int, tuple[str, ...]] = {}  # raw files of recently committed minutes
        self.retention = RetentionPolicy.from_config(ctx.config) if ctx.config.checkpoint_pruning else None
        self._next_prune: int | None = None  # the first minute after which to prune again

    def tick(self) -> None:
        """Run whatever is due now; returns early (to try again next tick) on a wait or a failure."""
        if not self._lock.acquire(blocking=False):
            return
        try:
            self._tick()
        finally:
            self._lock.release()

    def _tick(self) -> None:
        now = self.clock()
        due = due_minute(now, self.config)
        if self._head is not None and self._head >= due:
            return  # nothing due: no store read on most ticks
        self._head = read_head_minute(self.ctx.data, self.symbol)
        plan = plan_minutes(self._head, due, self.config)
        if not plan.publish or not self._files_ready(plan.publish[0], now):
            return  # warm up only once the first minute to publish is ready, not on every waiting tick
        if plan.skipped:
            first, last = plan.skipped
            logger.warning(
                "%s is %d minutes behind: skipping %s..%s (backfill them), warming up from %s",
                self.symbol, last - first + 1, iso_minute(first), iso_minute(last),
                iso_minute(plan.warmup[0]) if plan.warmup else iso_minute(plan.publish[0]),
            )  # fmt: skip
        state: SymbolState | None = fresh_state(self.symbol, ENGINE_VERSIONS) if plan.warmup else None
        for minute in plan.warmup:
            state, _ = run_minute(self.ctx, self.symbol, minute, state=state, publish=False)
        for minute in plan.publish:
            if self.stop.is_set() or not self._files_ready(minute, now):
                return
            self._find_late_files(minute)
            try:
                calibrate_if_window_end(self.ctx, self.symbol, minute)  # a read when already done
                saved, result = run_minute(
                    self.ctx,
                    self.symbol,
                    minute,
                    state=state,
                    now_ns=self.clock(),
                    late_files=len(self.late_files),
                )
            except Exception:
                if self._failed_minute != minute:
                    logger.exception("minute job %s %s failed; will retry", self.symbol, iso_minute(minute))
                    self._failed_minute = minute
                return
            state = None  # later minutes load the checkpoint just saved, as another runner would
            self._head = minute
            self._raw_files[minute] = saved.raw_files
            self.history.append(result)
            self._calibrate_ahead(minute + 1)
            if minute == plan.publish[-1]:
                self._prune_after(minute)

    def _calibrate_ahead(self, window_end: int) -> None:
        """Calibrate the window that just completed now, not in the next minute's critical path."""
        try:
            calibrate_if_window_end(self.ctx, self.symbol, window_end)
        except Exception:
            logger.exception("calibration %s %s failed; retried before that minute", self.symbol,
                             iso_minute(window_end))  # fmt: skip

    def _prune_after(self, minute: int) -> None:
        """Prune old checkpoints at most once an hour (a batch a minute while a backlog lasts)."""
        if self.retention is None or (self._next_prune is not None and minute < self._next_prune):
            return
        try:
            report = prune_checkpoints(
                self.ctx.data, self.symbol, minute, self.retention, max_deletes=PRUNE_BATCH
            )
        except Exception:
            logger.exception("pruning %s checkpoints failed; will retry in an hour", self.symbol)
            self._next_prune = minute + PRUNE_INTERVAL_MINUTES
            return
        self._next_prune = minute + (1 if report.remaining else PRUNE_INTERVAL_MINUTES)

    def _committed_raw_files(self, minute: int) -> tuple[str, ...] | None:
        """The raw files ``minute`` was computed from: remembered when this runner ran it, else read
        from its checkpoint (None without one)."""
        if minute not in self._raw_files:
            state = read_checkpoint(self.ctx.data, self.symbol, minute, ENGINE_VERSIONS)
            if state is None:
                return None
            self._raw_files[minute] = state.raw_files
        return self._raw_files[minute]

    def _find_late_files(self, minute: int) -> None:
        """Raw files of recent minutes that were not there when those minutes were published."""
        first = minute - LATE_FILE_LOOKBACK_MINUTES
        for old in [m for m in self._raw_files if m < first]:
            del self._raw_files[old]
        for earlier in range(first, minute):
            raw_files = self._committed_raw_files(earlier)
            if raw_files is None:
                continue
            for key in list_raw_files(self.ctx.data, self.symbol, earlier):
                if key.key not in raw_files and key.key not in self.late_files:
                    self.late_files.add(key.key)
                    logger.warning(
                        "late raw file %s arrived after %s %s was published; re-run that minute with "
                        "backfill --replace-immutable", key.key, self.symbol, iso_minute(earlier),
                    )  # fmt: skip

    def _files_ready(self, minute: int, now_ns: int) -> bool:
        """Every expected exchange has a file, or the bounded wait for late files is over."""
        waited_ns = now_ns - minute_start_ns(minute + 1)
        if waited_ns >= int(self.config.late_wait_seconds * NS_PER_SECOND):
            return True
        present = {key.exchange for key in list_raw_files(self.ctx.data, self.symbol, minute)}
        return all(exchange in present for exchange in self.ctx.config.exchanges)


class MinuteScheduler:
    """APScheduler driving one :class:`SymbolRunner` per symbol on its own thread."""

    def __init__(self, ctx: JobContext, config: ScheduleConfig, clock: Clock = time.time_ns) -> None:
        self.runners = {s: SymbolRunner(ctx, s, config, clock) for s in ctx.config.symbols}
        self._scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(max_workers=len(self.runners) + 1)},  # + health
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 60},
            timezone="UTC",
        )
        for symbol, runner in self.runners.items():
            self._scheduler.add_job(
                runner.tick,
                "interval",
                seconds=config.tick_seconds,
                id=f"minute:{symbol}",
                name=f"minute {symbol}",
                next_run_time=datetime.now(tz=UTC),  # first tick at start, not one interval later
            )

        self._ctx = ctx
        self._scheduler.add_job(
            self.publish_health,
            "interval",
            seconds=config.health_interval_seconds,
            id="health",
            name="collector health",
            next_run_time=datetime.now(tz=UTC),
        )

    def publish_health(self) -> None:
        """Copy the collectors' connection state into health.json (between minute jobs too)."""
        try:
            publish_collector_health(self._ctx.site, self._ctx.layout, read_collector_status(self._ctx.data))
        except Exception:
            logger.exception("publishing collector health failed; will retry")

    def start(self) -> None:
        self._scheduler.start()

    def shutdown(self) -> None:
        """Stop scheduling; let each running minute finish (idempotent)."""
        for runner in self.runners.values():
            runner.stop.set()
        if self._scheduler.running:
            self._scheduler.shutdown(wait=True)
