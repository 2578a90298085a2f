"""The pure decision of which minutes a runner runs."""

from __future__ import annotations

import pytest

from moonstream.jobs.scheduler import MinutePlan, ScheduleConfig, due_minute, plan_minutes
from moonstream.timeutil import NS_PER_SECOND, parse_minute

CONFIG = ScheduleConfig(minute_delay_seconds=3, max_catchup_minutes=5, warmup_minutes=2)


def test_due_minute_waits_for_the_delay() -> None:
    noon = parse_minute("2024-07-19T12:00")
    at = noon * 60 * NS_PER_SECOND
    assert due_minute(at + 2 * NS_PER_SECOND, CONFIG) == noon - 2, "12:00:02: 11:59 is not due yet"
    assert due_minute(at + 3 * NS_PER_SECOND, CONFIG) == noon - 1, "12:00:03: 11:59 is due"


def test_up_to_date_runs_nothing() -> None:
    assert plan_minutes(100, 100, CONFIG) == MinutePlan((), ())
    assert plan_minutes(101, 100, CONFIG) == MinutePlan((), ())


def test_catch_up_oldest_first_within_the_limit() -> None:
    assert plan_minutes(95, 100, CONFIG) == MinutePlan((), (96, 97, 98, 99, 100))


def test_too_far_behind_jumps_with_warm_up_and_names_the_gap() -> None:
    assert plan_minutes(90, 100, CONFIG) == MinutePlan((98, 99), (100,), (91, 99))


def test_first_start_warms_up() -> None:
    assert plan_minutes(None, 100, CONFIG) == MinutePlan((98, 99), (100,), None)


def test_invalid_config_rejected() -> None:
    with pytest.raises(ValueError):
        ScheduleConfig(max_catchup_minutes=0)
