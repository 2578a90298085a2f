"""Time helpers: integer nanoseconds since the Unix epoch (UTC) everywhere, minutes as integers.

A *minute* is identified by its start as an integer count of minutes since the epoch
(``minute_of(ns)``); converting to text happens only at the edges (file names, documents).
"""

from __future__ import annotations

import datetime as dt
import functools

NS_PER_SECOND = 1_000_000_000
NS_PER_MINUTE = 60 * NS_PER_SECOND
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

# The conversions between minutes and their texts are remembered: a job names its minute, the next
# two and its hour in keys and documents many times over, and each naming formats (or strptime-parses)
# a datetime. They are pure, and what they return is immutable.
_remembered = functools.lru_cache(maxsize=4096)


def minute_of(ns: int) -> int:
    """The minute (minutes since the epoch) that contains the instant ``ns``."""
    return ns // NS_PER_MINUTE


def minute_start_ns(minute: int) -> int:
    """The first nanosecond of ``minute``."""
    return minute * NS_PER_MINUTE


def minute_to_datetime(minute: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(minutes=minute)


@_remembered
def minute_date_hhmm(minute: int) -> tuple[str, str]:
    """``(YYYY-MM-DD, HHMM)`` of a minute, as used in object keys."""
    moment = minute_to_datetime(minute)
    return moment.strftime("%Y-%m-%d"), moment.strftime("%H%M")


@_remembered
def minute_from_date_hhmm(day: str, hhmm: str) -> int:
    """Inverse of :func:`minute_date_hhmm`; raises ValueError on malformed text."""
    moment = dt.datetime.strptime(f"{day} {hhmm}", "%Y-%m-%d %H%M").replace(tzinfo=dt.UTC)
    return minute_of_datetime(moment)


def minute_of_datetime(moment: dt.datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError(f"naive datetime {moment!r}: give a UTC time")
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) // 60


@_remembered
def parse_minute(text: str) -> int:
    """Parse ``2024-07-18T23:57`` (UTC; seconds, ``Z`` or an offset allowed) to a minute."""
    cleaned = text.strip().replace("Z", "+00:00")
    moment = dt.datetime.fromisoformat(cleaned)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return minute_of_datetime(moment.astimezone(dt.UTC))


@_remembered
def iso_minute(minute: int) -> str:
    """``2024-07-18T23:57:00Z``."""
    return minute_to_datetime(minute).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_ns(ns: int) -> str:
    """ISO 8601 UTC text of a nanosecond instant, to the millisecond."""
    moment = _EPOCH + dt.timedelta(microseconds=ns // 1000)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def ms_to_ns(ms: int) -> int:
    return ms * 1_000_000
