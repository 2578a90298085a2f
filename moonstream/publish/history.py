"""Hourly history chunks of fixed-size binary frames, and their index (DESIGN §6, docs/formats.md).

For every product with frames (``orderbook_heatmap``: 0-2 order-book frames a minute, ``liq_heatmap``: 0-1
liquidation frame a minute), under ``v1/{SYM}/{product}/history/``:

* ``{YYYY-MM-DD}/{HH}.bin``: the **complete chunk** of an hour, immutable. Written once every minute of the
  hour has been published (its JSON version exists), built from the minutes' immutable ``.bin`` objects
  read back from the site store: the frames of minutes :00 … :59 concatenated in time order. A minute
  without frames (no book, no price) adds nothing.
* ``{YYYY-MM-DD}/{HH}.partial.bin``: the **partial chunk** of an hour, a binary pointer (short TTL,
  compare-and-swap): the frames of the hour's minutes published so far, in time order. Each publish of
  minute m replaces the frames of minute m (a frame belongs to the minute containing its ``ts``) in the
  current object, so the content is the union over published minutes, whatever their order: a re-run, a
  kill and re-run, or a backfill of a gap converges to the same bytes.
* ``index.json``: a JSON pointer (compare-and-swap, forward-only ``minute``): per hour, which minutes are
  published and with how many frames (``minutes``, 60 characters), the frame count and whether the
  complete chunk exists; plus the frame size, the format name and both URL templates.

An hour with an unpublished minute (a backfill that started mid-hour, a scheduler jump) stays partial
until the gap is published; then the complete chunk is written, so an immutable chunk never lacks a
minute that is published later. :func:`plan_fetches` turns the index into the objects a client fetches
for a window: one per hour, so 720 minutes need at most 13.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import operator
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from moonstream.publish.frames import RECORD_SIZE
from moonstream.publish.layout import (
    API_VERSION,
    BINARY_TYPE,
    SiteLayout,
    pointer_cache_control,
)
from moonstream.publish.publisher import BytesMerge, PointerMerge, Publication
from moonstream.store.base import ObjectMeta, ObjectNotFound, Store
from moonstream.timeutil import iso_minute, minute_date_hhmm, parse_minute

logger = logging.getLogger(__name__)

INDEX_SCHEMA_VERSION = 1
FRAME_SIZE = RECORD_SIZE
MINUTES_PER_HOUR = 60
INDEX_MAX_HOURS = 168
"""``index.json`` lists the newest 7 days of hours; older complete chunks stay at their URLs."""
UNPUBLISHED = "-"
"""A minute in an hour's ``minutes`` map that has not been published."""


@dataclass(frozen=True)
class HistoryFormat:
    """The frame format of a product's history chunks."""

    name: str
    max_frames_per_minute: int


HISTORY_FORMATS: Mapping[str, HistoryFormat] = {
    "orderbook_heatmap": HistoryFormat("orderbook_frame", 2),
    "liq_heatmap": HistoryFormat("liquidation_frame", 1),
}


def hour_of(minute: int) -> int:
    """The first minute of the UTC hour containing ``minute``."""
    return minute - minute % MINUTES_PER_HOUR


def _history_key(layout: SiteLayout, symbol: str, product: str, *parts: str) -> str:
    return layout.prefix + "/".join((API_VERSION, symbol, product, "history", *parts))


def chunk_key(layout: SiteLayout, symbol: str, product: str, hour: int, *, partial: bool = False) -> str:
    """``v1/{SYM}/{product}/history/{YYYY-MM-DD}/{HH}.bin`` (or ``{HH}.partial.bin``)."""
    day, hhmm = minute_date_hhmm(hour_of(hour))
    return _history_key(layout, symbol, product, day, f"{hhmm[:2]}{'.partial' if partial else ''}.bin")


def index_key(layout: SiteLayout, symbol: str, product: str) -> str:
    return _history_key(layout, symbol, product, "index.json")


def url_templates(layout: SiteLayout, symbol: str, product: str) -> dict[str, str]:
    """The URL patterns clients fill in (``{YYYY-MM-DD}``, ``{HH}``), relative to the site root."""
    return {
        "complete": "/" + _history_key(layout, symbol, product, "{YYYY-MM-DD}", "{HH}.bin"),
        "partial": "/" + _history_key(layout, symbol, product, "{YYYY-MM-DD}", "{HH}.partial.bin"),
    }


_TS = struct.Struct("<d").unpack_from


def frame_minute(record: bytes) -> int:
    """The minute a frame belongs to: the one containing its ``ts`` (float64 at offset 0, both formats)."""
    (ts,) = _TS(record, 0)
    return int(ts // 60)


def _frame_minutes(blob: bytes, end: int) -> list[int]:
    """:func:`frame_minute` of each frame in ``blob[:end]`` (``end`` a multiple of the frame size)."""
    return [int(_TS(blob, offset)[0] // 60) for offset in range(0, end, FRAME_SIZE)]


def split_frames(blob: bytes) -> list[bytes]:
    """The records of a concatenation of frames; raises ValueError if the length is not a multiple."""
    if len(blob) % FRAME_SIZE:
        raise ValueError(f"length {len(blob)} is not a multiple of {FRAME_SIZE}")
    return [blob[i : i + FRAME_SIZE] for i in range(0, len(blob), FRAME_SIZE)]


def minute_frames(blob: bytes, minute: int) -> list[bytes]:
    """A minute's ``.bin`` as records, checking that every frame's ``ts`` lies in that minute."""
    records = split_frames(blob)
    for record in records:
        if frame_minute(record) != minute:
            raise ValueError(f"a frame of minute {iso_minute(minute)} has ts outside it")
    return records


def merge_partial(current: bytes | None, minute: int, frames: list[bytes]) -> bytes:
    """The hour's partial chunk with minute ``minute``'s frames replaced by ``frames``.

    Frames of ``current`` that do not belong to the hour (or a malformed tail) are dropped with a
    warning; the result is sorted by minute, frames of one minute keeping their order.
    """
    hour = hour_of(minute)
    kept: list[bytes] = []
    if current:
        usable = len(current) - len(current) % FRAME_SIZE
        if usable != len(current):
            logger.warning("partial history chunk of %s has a torn tail; dropped", iso_minute(hour))
        minutes = _frame_minutes(current, usable)
        if (
            # the usual chunk, as this function leaves it: frames of the hour, in order; and frames
            # of the minute. The sort below would put them between the minutes before and after.
            (not minutes or (hour <= minutes[0] and minutes[-1] < hour + MINUTES_PER_HOUR))
            and all(map(operator.le, minutes, itertools.islice(minutes, 1, None)))
            and all(frame_minute(frame) == minute for frame in frames)
        ):
            start = bisect.bisect_left(minutes, minute) * FRAME_SIZE
            stop = bisect.bisect_right(minutes, minute) * FRAME_SIZE
            return b"".join((current[:start], *frames, current[stop:usable]))
        for record in split_frames(current[:usable]):
            m = frame_minute(record)
            if hour_of(m) != hour:
                logger.warning("partial history chunk of %s holds a frame of another hour", iso_minute(hour))
            elif m != minute:
                kept.append(record)
    kept.extend(frames)
    kept.sort(key=frame_minute)  # stable: a minute's frames keep their order
    return b"".join(kept)


def _partial_merge(minute: int, frames: list[bytes]) -> BytesMerge:
    def merge(current: bytes | None) -> bytes | None:
        return merge_partial(current, minute, frames)

    return merge


def _empty_hour() -> dict[str, Any]:
    return {"complete": False, "frames": 0, "minutes": UNPUBLISHED * MINUTES_PER_HOUR}


def _index_merge(
    layout: SiteLayout, symbol: str, product: str, minute: int, n_frames: int, completed: bool
) -> PointerMerge:
    hour_iso = iso_minute(hour_of(minute))
    slot = minute % MINUTES_PER_HOUR

    def merge(current: Any | None) -> Any | None:
        index: dict[str, Any] = current if isinstance(current, dict) else {}
        hours: dict[str, Any] = dict(index.get("hours", {}))
        entry = dict(hours.get(hour_iso) or _empty_hour())
        minutes = str(entry["minutes"])
        minutes = minutes[:slot] + str(n_frames) + minutes[slot + 1 :]
        entry["minutes"] = minutes
        entry["frames"] = sum(map(int, minutes.replace(UNPUBLISHED, "")))
        entry["complete"] = bool(entry.get("complete")) or completed
        hours[hour_iso] = entry
        newest = sorted(hours)[-INDEX_MAX_HOURS:]
        previous = index.get("minute")
        latest = max(minute, parse_minute(previous)) if isinstance(previous, str) else minute
        fmt = HISTORY_FORMATS[product]
        return {
            "schema_version": INDEX_SCHEMA_VERSION,
            "symbol": symbol,
            "product": product,
            "format": fmt.name,
            "frame_size": FRAME_SIZE,
            "max_frames_per_minute": fmt.max_frames_per_minute,
            "urls": url_templates(layout, symbol, product),
            "minute": iso_minute(latest),
            "generated_at": iso_minute(latest + 1),
            "next_update_at": iso_minute(latest + 2),
            "hours": {h: hours[h] for h in newest},
        }

    return merge


def _read_index(pub: Publication, key: str) -> dict[str, Any] | None:
    try:
        document = pub.pointer_document(key)
    except (ValueError, OSError, EOFError):
        logger.warning("history index %s is not readable JSON; treated as empty", key)
        return None
    return document if isinstance(document, dict) else None


def _worth_completing(index: Mapping[str, Any] | None, minute: int) -> bool:
    """Whether publishing ``minute`` may complete its hour: it is :59 (the live path, checked every
    hour), or the index shows every other minute of a not yet complete hour published (a gap filled)."""
    if minute % MINUTES_PER_HOUR == MINUTES_PER_HOUR - 1:
        return True
    entry = (index or {}).get("hours", {}).get(iso_minute(hour_of(minute)))
    if not isinstance(entry, dict) or entry.get("complete"):
        return False
    slot = minute % MINUTES_PER_HOUR
    return all(c != UNPUBLISHED for i, c in enumerate(str(entry.get("minutes", ""))) if i != slot)


def complete_chunk(
    store: Store, layout: SiteLayout, symbol: str, product: str, minute: int, frames: list[bytes]
) -> bytes | None:
    """The complete chunk of ``minute``'s hour, or None while a minute of it is unpublished.

    ``frames`` are ``minute``'s own (it is being published); the other 59 minutes are read back: their
    ``.bin`` if it exists, else no frames if their JSON version exists, else the hour is not complete.
    """
    parts: list[bytes] = []
    for m in range(hour_of(minute), hour_of(minute) + MINUTES_PER_HOUR):
        if m == minute:
            parts.extend(frames)
            continue
        try:
            parts.extend(minute_frames(store.read_bytes(layout.version_key(symbol, product, m, "bin")), m))
        except ObjectNotFound:
            if not store.exists(layout.version_key(symbol, product, m)):
                return None
    return b"".join(parts)


def add_history(
    pub: Publication,
    layout: SiteLayout,
    symbol: str,
    minute: int,
    products: Iterable[str],
    blobs: Mapping[str, bytes],
) -> None:
    """Queue the history objects of one published symbol-minute into ``pub``.

    ``products`` are the products published this minute (a product without a blob is a minute with no
    frames); only those in :data:`HISTORY_FORMATS` have history. Queues the complete chunk (immutable)
    when the hour becomes complete, then the partial chunk and the index (pointers, in that order).
    """
    partial_meta = ObjectMeta(BINARY_TYPE, pointer_cache_control(layout.pointer_ttl_seconds))
    for product in sorted(p for p in products if p in HISTORY_FORMATS):
        frames = minute_frames(blobs.get(product, b""), minute)
        index = _read_index(pub, index_key(layout, symbol, product))
        completed = False
        if _worth_completing(index, minute):
            chunk = complete_chunk(pub.store, layout, symbol, product, minute, frames)
            if chunk is not None:
                pub.add_immutable(
                    chunk_key(layout, symbol, product, minute), chunk, layout.immutable_binary_meta()
                )
                completed = True
        pub.update_pointer_bytes(
            chunk_key(layout, symbol, product, minute, partial=True),
            _partial_merge(minute, frames),
            partial_meta,
        )
        pub.update_pointer_json(
            index_key(layout, symbol, product),
            _index_merge(layout, symbol, product, minute, len(frames), completed),
        )


@dataclass(frozen=True)
class Fetch:
    """One object a client fetches for a window: an hour's complete or partial chunk."""

    hour: str
    url: str
    complete: bool
    frames: int


def plan_fetches(index: Mapping[str, Any], first_minute: int, last_minute: int) -> list[Fetch]:
    """The chunks covering ``first_minute..last_minute`` (inclusive), oldest first.

    One object per hour the index lists (the complete chunk if it exists, else the partial one); hours
    the index does not list have no published minute (or are older than its 7 days: try the complete
    URL). A window of w minutes touches at most ``w // 60 + 1`` hours: 13 for 720 minutes.
    """
    if last_minute < first_minute:
        raise ValueError("last_minute is before first_minute")
    hours: Mapping[str, Any] = index.get("hours", {})
    urls: Mapping[str, str] = index["urls"]
    plan = []
    for hour in range(hour_of(first_minute), hour_of(last_minute) + 1, MINUTES_PER_HOUR):
        hour_iso = iso_minute(hour)
        entry = hours.get(hour_iso)
        if not isinstance(entry, Mapping):
            continue
        day, hhmm = minute_date_hhmm(hour)
        complete = bool(entry.get("complete"))
        template = urls["complete" if complete else "partial"]
        url = template.replace("{YYYY-MM-DD}", day).replace("{HH}", hhmm[:2])
        plan.append(Fetch(hour_iso, url, complete, int(entry.get("frames", 0))))
    return plan


__all__ = [
    "FRAME_SIZE",
    "HISTORY_FORMATS",
    "Fetch",
    "HistoryFormat",
    "add_history",
    "chunk_key",
    "complete_chunk",
    "frame_minute",
    "hour_of",
    "index_key",
    "merge_partial",
    "minute_frames",
    "plan_fetches",
    "split_frames",
    "url_templates",
]
