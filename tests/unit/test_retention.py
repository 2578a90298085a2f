"""Checkpoint retention: the pure policy, pruning a local store, and checkpoint encoding compatibility."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from moonstream.config import ConfigError, build_config
from moonstream.jobs.backfill import commits_after
from moonstream.jobs.config import JobConfig
from moonstream.jobs.retention import RetentionPolicy, checkpoints_to_delete, keeps, prune_checkpoints
from moonstream.jobs.state import (
    SymbolState,
    checkpoint_key,
    checkpoint_minute,
    head_key,
    list_checkpoints,
    newest_checkpoint_before,
    read_checkpoint,
    read_head,
    save_state,
)
from moonstream.publish.encode import canonical_json
from moonstream.store import LocalStore
from moonstream.store.base import ObjectExists, ObjectMeta, Store
from moonstream.timeutil import parse_minute

HOUR, DAY = 60, 1440
POLICY = RetentionPolicy()  # 48 h of every minute, 30 days of :00
NOW = parse_minute("2024-03-01T12:34")
VERSIONS = {"market": "1"}


def test_default_policy_matches_the_config_defaults() -> None:
    assert RetentionPolicy.from_config(JobConfig()) == POLICY
    assert POLICY.keep_all_minutes == 48 * HOUR and POLICY.keep_hourly_minutes == 30 * DAY
    custom = JobConfig(checkpoint_keep_all_hours=2, checkpoint_keep_hourly_days=0)
    assert RetentionPolicy.from_config(custom) == RetentionPolicy(2 * HOUR, 0)


def test_every_minute_is_kept_for_48_hours() -> None:
    recent = range(NOW - 48 * HOUR + 1, NOW + 1)
    assert checkpoints_to_delete(recent, NOW, NOW, POLICY) == []


def test_beyond_48_hours_only_the_hour_is_kept_until_30_days() -> None:
    hour = NOW - NOW % HOUR - 3 * DAY  # a :00 minute three days back
    minutes = range(hour - 5, hour + 6)
    assert checkpoints_to_delete(minutes, NOW, NOW, POLICY) == [m for m in minutes if m != hour]
    # the boundary: age 48 h - 1 minute is kept, age 48 h is not (unless it is a :00)
    edge = NOW - 48 * HOUR
    assert keeps(edge + 1, NOW, NOW, POLICY) and not keeps(edge, NOW, NOW, POLICY)
    assert edge % HOUR != 0


def test_beyond_30_days_nothing_is_kept_but_the_head() -> None:
    old_hour = NOW - NOW % HOUR - 30 * DAY
    assert not keeps(old_hour, NOW, NOW, POLICY)
    assert keeps(old_hour + HOUR, NOW, NOW, POLICY)
    # the head (and anything after it) stays whatever its age: a symbol that stopped long ago
    head = NOW - 40 * DAY + 7
    minutes = [head - 2, head - 1, head, head + 1]
    assert checkpoints_to_delete(minutes, NOW, head, POLICY) == [head - 2, head - 1]
    assert checkpoints_to_delete(minutes, NOW, None, POLICY) == minutes


def test_hourly_retention_can_be_switched_off() -> None:
    policy = RetentionPolicy(keep_all_minutes=HOUR, keep_hourly_minutes=0)
    hour = NOW - NOW % HOUR - HOUR
    assert checkpoints_to_delete([hour, NOW - 5], NOW, NOW, policy) == [hour]


@pytest.mark.parametrize(
    "values",
    [
        {"checkpoint_keep_all_hours": 0},
        {"checkpoint_keep_hourly_days": -1},
        {"checkpoint_retention": True},  # unknown key
    ],
)
def test_config_rejects_bad_retention_values(values: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        build_config(JobConfig, values, section="jobs")


def test_policy_rejects_a_window_shorter_than_an_hour() -> None:
    with pytest.raises(ValueError):
        RetentionPolicy(keep_all_minutes=59)


def test_checkpoint_keys_parse_back_and_nothing_else_does() -> None:
    minute = parse_minute("2024-07-18T23:57")
    assert checkpoint_minute("BTC", checkpoint_key("BTC", minute)) == minute
    for key in (
        "state/BTC/checkpoints/2024-07-18/2357.json.bak",
        "state/BTC/checkpoints/2024-07-18/2460.json",
        "state/BTC/checkpoints/2024-07-18/235.json",
        "state/BTC/checkpoints/2024-7-18/2357.json",
        "state/BTC/checkpoints/2357.json",
        "state/BTC/checkpoints/2024-07-18/x/2357.json",
        "state/ETH/checkpoints/2024-07-18/2357.json",
        "state/BTC/head.json",
    ):
        assert checkpoint_minute("BTC", key) is None, key


# -- pruning a store ---------------------------------------------------------------------------------


def _state(minute: int, symbol: str = "BTC") -> SymbolState:
    return SymbolState(symbol, minute, dict(VERSIONS), {"market": {"minute": minute}})


def _save(store: Store, minutes: range | list[int]) -> None:
    for minute in minutes:
        save_state(store, _state(minute))


def test_prune_deletes_exactly_what_the_policy_drops(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    hour = NOW - NOW % HOUR - 3 * DAY
    old = list(range(hour - 2, hour + 3))  # three days old: only the :00 stays
    recent = list(range(NOW - 3, NOW + 1))
    _save(store, old + recent)
    store.put("state/BTC/checkpoints/notes.txt", b"left alone", ObjectMeta())
    report = prune_checkpoints(store, "BTC", NOW, POLICY)
    assert (report.listed, report.deleted, report.kept, report.remaining) == (9, 4, 5, 0)
    assert [m for m, _ in list_checkpoints(store, "BTC")] == [hour, *recent]
    assert store.exists("state/BTC/checkpoints/notes.txt")
    assert read_head(store, "BTC") == (NOW, checkpoint_key("BTC", NOW))
    again = prune_checkpoints(store, "BTC", NOW, POLICY)
    assert (again.deleted, again.kept) == (0, 5)


def test_dry_run_and_batches(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    first = NOW - 5 * DAY + 1  # not a :00 minute
    _save(store, [*range(first, first + 5), NOW])
    dry = prune_checkpoints(store, "BTC", NOW, POLICY, dry_run=True)
    assert (dry.deleted, dry.dry_run) == (5, True) and "would delete 5" in dry.summary()
    assert len(list_checkpoints(store, "BTC")) == 6
    batch = prune_checkpoints(store, "BTC", NOW, POLICY, max_deletes=2)
    assert (batch.deleted, batch.remaining) == (2, 3)
    assert [m for m, _ in list_checkpoints(store, "BTC")] == [*range(first + 2, first + 5), NOW]
    rest = prune_checkpoints(store, "BTC", NOW, POLICY, max_deletes=2)
    assert (rest.deleted, rest.remaining) == (2, 1)
    prune_checkpoints(store, "BTC", NOW, POLICY)
    assert [m for m, _ in list_checkpoints(store, "BTC")] == [NOW]


def test_the_checkpoint_the_head_names_is_never_deleted(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    stale = NOW - 60 * DAY + 1
    _save(store, [stale - 1, stale])
    assert read_head(store, "BTC")[0] == stale
    report = prune_checkpoints(store, "BTC", NOW, POLICY)
    assert report.deleted == 1
    assert [m for m, _ in list_checkpoints(store, "BTC")] == [stale]
    assert read_checkpoint(store, "BTC", stale, VERSIONS) is not None


class RacingStore(LocalStore):
    """A store where, while the pruner lists, a runner commits the next minute and another pruner
    deletes one of the doomed checkpoints first."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.on_list: list[object] = []

    def list(self, prefix: str = "") -> Iterator[str]:
        keys = list(super().list(prefix))
        for action in self.on_list:
            action()  # type: ignore[operator]
        self.on_list = []
        return iter(keys)


def test_prune_next_to_a_runner_and_another_pruner(tmp_path: Path) -> None:
    store = RacingStore(tmp_path)
    old = NOW - 3 * DAY + 1
    _save(store, [old, old + 1, NOW - 1])
    store.on_list = [
        lambda: save_state(store, _state(NOW)),  # the runner moves the head on meanwhile
        lambda: store.delete(checkpoint_key("BTC", old)),  # another pruner was faster
    ]
    report = prune_checkpoints(store, "BTC", NOW, POLICY)
    assert report.deleted == 2  # deleting the already-deleted one is fine
    assert [m for m, _ in list_checkpoints(store, "BTC")] == [NOW - 1, NOW]
    assert read_head(store, "BTC")[0] == NOW


def test_newest_checkpoint_before_looks_across_midnight(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    midnight = parse_minute("2024-03-02T00:00")
    _save(store, [midnight - 30, midnight - 1, midnight + 5])
    found = newest_checkpoint_before(store, "BTC", midnight + 5, VERSIONS, 120)
    assert found is not None and found.minute == midnight - 1
    assert newest_checkpoint_before(store, "BTC", midnight + 5, VERSIONS, 5) is None
    assert newest_checkpoint_before(store, "BTC", midnight + 5, {"market": "2"}, 120) is None


# -- checkpoint encoding -----------------------------------------------------------------------------


def test_checkpoints_are_deterministic_and_old_encodings_still_count_as_the_same(tmp_path: Path) -> None:
    first, second = LocalStore(tmp_path / "a"), LocalStore(tmp_path / "b")
    minute = NOW
    save_state(first, _state(minute))
    save_state(second, _state(minute))
    key = checkpoint_key("BTC", minute)
    assert first.read_bytes(key) == second.read_bytes(key)
    document = canonical_json(_state(minute).to_document())
    assert gzip.decompress(first.read_bytes(key)) == document

    # A checkpoint written at another gzip level (older code), or uncompressed, loads and is the same.
    for index, data in enumerate((gzip.compress(document, compresslevel=9, mtime=0), document)):
        store = LocalStore(tmp_path / f"old{index}")
        store.create(
            key, data, ObjectMeta("application/json", content_encoding="gzip" if index == 0 else None)
        )
        assert read_checkpoint(store, "BTC", minute, VERSIONS) == _state(minute)
        save_state(store, _state(minute))  # no ObjectExists: same JSON
        assert store.read_bytes(key) == data
        assert read_head(store, "BTC") == (minute, key)

    different = SymbolState("BTC", minute, dict(VERSIONS), {"market": {"minute": -1}})
    with pytest.raises(ObjectExists):
        save_state(first, different)
    save_state(first, different, replace=True)
    assert read_checkpoint(first, "BTC", minute, VERSIONS) == different
    assert first.exists(head_key("BTC"))


# -- the scheduler's hourly prune ----------------------------------------------------------------------


def test_a_runner_prunes_at_most_hourly_and_drains_a_backlog_in_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from types import SimpleNamespace

    from moonstream.jobs import scheduler
    from moonstream.jobs.scheduler import ScheduleConfig, SymbolRunner

    store = LocalStore(tmp_path)
    first = NOW - 5 * DAY + 1
    _save(store, [*range(first, first + 5), NOW])
    monkeypatch.setattr(scheduler, "PRUNE_BATCH", 2)
    ctx: Any = SimpleNamespace(data=store, config=JobConfig(symbols=("BTC",)))
    runner = SymbolRunner(ctx, "BTC", ScheduleConfig())
    runner._prune_after(NOW)
    assert len(list_checkpoints(store, "BTC")) == 4  # a batch of 2; the backlog is left ...
    runner._prune_after(NOW + 1)
    assert len(list_checkpoints(store, "BTC")) == 2  # ... to the next minutes
    runner._prune_after(NOW + 2)
    assert len(list_checkpoints(store, "BTC")) == 1
    _save(store, [first + 10])  # say, a backfill of an old minute
    for minute in range(NOW + 3, NOW + 62):
        runner._prune_after(minute)  # done for this hour
    assert len(list_checkpoints(store, "BTC")) == 2
    runner._prune_after(NOW + 62)
    assert len(list_checkpoints(store, "BTC")) == 1

    off: Any = SimpleNamespace(data=store, config=JobConfig(symbols=("BTC",), checkpoint_pruning=False))
    _save(store, [first + 11])
    SymbolRunner(off, "BTC", ScheduleConfig())._prune_after(NOW + 100)
    assert len(list_checkpoints(store, "BTC")) == 2


def test_a_backfill_commits_hourly_in_an_old_range_and_every_minute_in_a_recent_one() -> None:
    policy = RetentionPolicy()  # every checkpoint for 48 h
    first, now = parse_minute("2024-01-01T00:30"), parse_minute("2024-01-05T00:00")
    last = first + 150
    old = [m for m in range(first, last + 1) if commits_after(m, last, now, policy)]
    assert old == [parse_minute("2024-01-01T01:00"), parse_minute("2024-01-01T02:00"), last]
    recent = [m for m in range(now - 48 * 60 - 2, now) if commits_after(m, now - 1, now, policy)]
    assert recent == list(range(now - 48 * 60, now))  # 48 h ago is a :00 minute, then every minute
