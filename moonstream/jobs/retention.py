"""Checkpoint retention: which per-minute state checkpoints to keep, and pruning the rest.

Every minute job writes a checkpoint (``state/{SYM}/checkpoints/{YYYY-MM-DD}/{HHMM}.json``, ~200 KB of
JSON, ~45 KB gzip'd for BTC). The policy (:func:`checkpoints_to_delete`, pure) keeps

* every minute's checkpoint for the last ``keep_all_minutes`` (default 48 h): re-runs and resumes
  from any recent minute read the checkpoint of the minute before;
* one an hour, the ``:00`` minute's, for ``keep_hourly_minutes`` (default 30 days): a re-run of an
  older range starts from the last ``:00`` checkpoint before it and recomputes the minutes in between
  without publishing (:func:`state_before`), so it publishes the same bytes as the first run;
* always the checkpoint the head names, and every checkpoint of a minute at or after the head.

Ages count from ``now_minute``, which callers pass in (the scheduler: the minute it just published;
the ``prune`` command: the wall clock, or ``--now``).

:func:`prune_checkpoints` applies the policy to a store. It is safe next to a running minute job:
the head only moves forward, so what is at or after the head it read stays, as does anything
written after it listed; deleting an object that is already gone is not an error. A backfill of an
old range running at the same time may see the checkpoints it just wrote pruned: it carries its
state in memory, and a resume after a kill recomputes (the same bytes) from the last ``:00``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

from moonstream.jobs.config import JobConfig
from moonstream.jobs.minute import ENGINE_VERSIONS, JobContext, calibrate_if_window_end, run_minute
from moonstream.jobs.state import (
    SymbolState,
    list_checkpoints,
    load_state_before,
    newest_checkpoint_before,
    read_checkpoint,
    read_head,
)
from moonstream.store.base import Store
from moonstream.timeutil import iso_minute

logger = logging.getLogger(__name__)

MINUTES_PER_HOUR = 60
MINUTES_PER_DAY = 24 * MINUTES_PER_HOUR
#: How far back :func:`state_before` looks for a checkpoint to recompute from: the hourly grid, plus
#: an hour for a ``:00`` minute that never ran.
REPLAY_LOOKBACK_MINUTES = 2 * MINUTES_PER_HOUR


@dataclass(frozen=True)
class RetentionPolicy:
    """How long checkpoints are kept (in minutes; see the module docstring)."""

    keep_all_minutes: int = 48 * MINUTES_PER_HOUR
    keep_hourly_minutes: int = 30 * MINUTES_PER_DAY

    def __post_init__(self) -> None:
        if self.keep_all_minutes < MINUTES_PER_HOUR:
            raise ValueError("checkpoints of every minute must be kept for at least an hour")
        if self.keep_hourly_minutes < 0:
            raise ValueError("keep_hourly_minutes must be >= 0")

    @classmethod
    def from_config(cls, config: JobConfig) -> RetentionPolicy:
        return cls(
            keep_all_minutes=config.checkpoint_keep_all_hours * MINUTES_PER_HOUR,
            keep_hourly_minutes=config.checkpoint_keep_hourly_days * MINUTES_PER_DAY,
        )


def keeps(minute: int, now_minute: int, head_minute: int | None, policy: RetentionPolicy) -> bool:
    """Whether the policy keeps the checkpoint of ``minute`` at ``now_minute``."""
    if head_minute is not None and minute >= head_minute:
        return True
    age = now_minute - minute
    if age < policy.keep_all_minutes:
        return True
    return minute % MINUTES_PER_HOUR == 0 and age < policy.keep_hourly_minutes


def checkpoints_to_delete(
    minutes: Iterable[int], now_minute: int, head_minute: int | None, policy: RetentionPolicy
) -> list[int]:
    """Pure: the checkpoint minutes the policy drops, oldest first."""
    return sorted(m for m in set(minutes) if not keeps(m, now_minute, head_minute, policy))


@dataclass(frozen=True)
class PruneReport:
    symbol: str
    listed: int
    deleted: int  # or, on a dry run, would be deleted
    remaining: int  # left for the next call by ``max_deletes``
    head_minute: int | None
    dry_run: bool = False
    duration_s: float = 0.0

    @property
    def kept(self) -> int:
        return self.listed - self.deleted - self.remaining

    def summary(self) -> str:
        head = iso_minute(self.head_minute) if self.head_minute is not None else "none"
        verb = "would delete" if self.dry_run else "deleted"
        more = f", {self.remaining} left for the next run" if self.remaining else ""
        return (
            f"{self.symbol}: {self.listed} checkpoints, {verb} {self.deleted}, kept {self.kept}"
            f"{more} (head {head}) in {self.duration_s:.2f}s"
        )


def prune_checkpoints(
    store: Store,
    symbol: str,
    now_minute: int,
    policy: RetentionPolicy,
    *,
    dry_run: bool = False,
    max_deletes: int | None = None,
) -> PruneReport:
    """Delete the symbol's checkpoints the policy drops (oldest first, at most ``max_deletes``).

    Reads the head before listing, so a runner committing meanwhile only adds checkpoints at or after
    it, which stay; the checkpoint the head names is kept whatever its minute."""
    started = time.perf_counter()
    head_minute, head_checkpoint = read_head(store, symbol)
    listed = list_checkpoints(store, symbol)
    drop = set(checkpoints_to_delete((m for m, _ in listed), now_minute, head_minute, policy))
    victims = [key for minute, key in listed if minute in drop and key != head_checkpoint]
    batch = victims if max_deletes is None else victims[:max_deletes]
    if not dry_run:
        for key in batch:
            store.delete(key)
    report = PruneReport(
        symbol=symbol,
        listed=len(listed),
        deleted=len(batch),
        remaining=len(victims) - len(batch),
        head_minute=head_minute,
        dry_run=dry_run,
        duration_s=time.perf_counter() - started,
    )
    logger.info("prune checkpoints %s", report.summary())
    return report


def state_before(
    ctx: JobContext, symbol: str, minute: int, *, lookback_minutes: int = REPLAY_LOOKBACK_MINUTES
) -> SymbolState:
    """The state to run ``minute`` from, as an unbroken run would have it, even after pruning.

    The checkpoint of ``minute - 1`` if it is there. If it was committed once (the head is at or
    after it) but is gone, the newest checkpoint within ``lookback_minutes`` is stepped forward to
    ``minute - 1`` without publishing, exactly as the first run stepped it. Otherwise, as
    :func:`~moonstream.jobs.state.load_state_before` (the head across a gap, or a fresh state).
    """
    state = read_checkpoint(ctx.data, symbol, minute - 1, ENGINE_VERSIONS)
    if state is not None:
        return state
    head_minute, _ = read_head(ctx.data, symbol)
    if head_minute is not None and head_minute >= minute - 1:
        base = newest_checkpoint_before(ctx.data, symbol, minute - 1, ENGINE_VERSIONS, lookback_minutes)
        if base is not None and base.minute is not None:
            logger.info(
                "%s: no checkpoint of %s (pruned); recomputing %d minutes from the one of %s",
                symbol, iso_minute(minute - 1), minute - 1 - base.minute, iso_minute(base.minute),
            )  # fmt: skip
            state = base
            for replayed in range(base.minute + 1, minute):
                calibrate_if_window_end(ctx, symbol, replayed)
                state, _ = run_minute(ctx, symbol, replayed, state=state, publish=False)
            return state
    return load_state_before(ctx.data, symbol, minute, ENGINE_VERSIONS)
