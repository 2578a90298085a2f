"""History chunks and their index, published through the real publisher into a local-directory store."""

from __future__ import annotations

import gzip
import hashlib
import itertools
import json
import random
from pathlib import Path
from typing import Any

import pytest

from moonstream.publish.errors import ImmutableConflict
from moonstream.publish.frames import decode_frames, decode_liq_frames, encode_frame, encode_liq_frame
from moonstream.publish.history import (
    Fetch,
    chunk_key,
    hour_of,
    index_key,
    merge_partial,
    minute_frames,
    plan_fetches,
)
from moonstream.publish.layout import SiteLayout
from moonstream.publish.publisher import publication
from moonstream.publish.site import add_minute_documents
from moonstream.store.base import ObjectMeta
from moonstream.store.local import LocalStore
from moonstream.timeutil import iso_minute, parse_minute

LAYOUT = SiteLayout()
SOURCES: dict[str, Any] = {"exchanges": {}, "missing_exchanges": []}
HOUR = parse_minute("2024-07-18T23:00")  # 2024-07-18T23:00:00Z


def ob_frame(ts: float, level: int) -> bytes:
    return encode_frame(
        ts=ts, src=1, price_min=100, price_max=120, step=20, norm_p50=1, norm_p95=2, total_bid=3,
        total_ask=4, bid=bytes([level % 256, 1]), ask=bytes([2, level % 256]),
    )  # fmt: skip


def liq_frame(minute: int, level: int = 1) -> bytes:
    return encode_liq_frame(
        ts=minute * 60.0, src=110.0, price_min=100, price_max=120, step=20, long=bytes([level % 256, 0]),
        short=bytes([0, level % 256]),
    )  # fmt: skip


def minute_blobs(minute: int, ob_frames: int = 2, liq: bool = True) -> dict[str, bytes]:
    blobs = {}
    if ob_frames:
        blobs["orderbook_heatmap"] = b"".join(
            ob_frame(minute * 60.0 + 30 * k, minute + k) for k in range(ob_frames)
        )
    if liq:
        blobs["liq_heatmap"] = liq_frame(minute, minute)
    return blobs


def publish(store: LocalStore, minute: int, blobs: dict[str, bytes], *, replace: bool = False) -> None:
    documents = {
        p: {"minute": iso_minute(minute), "product": p}
        for p in ("orderbook_heatmap", "liq_heatmap", "market")
    }
    with publication(store, LAYOUT, replace_immutable=replace) as pub:
        add_minute_documents(pub, LAYOUT, "BTC", minute, documents, SOURCES, None, blobs)


def read_json(store: LocalStore, key: str) -> dict:
    obj = store.read(key)
    return json.loads(gzip.decompress(obj.data) if obj.meta.content_encoding == "gzip" else obj.data)


def site_bytes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    }


def test_keys_and_hours() -> None:
    assert (
        chunk_key(LAYOUT, "BTC", "liq_heatmap", HOUR + 17) == "v1/BTC/liq_heatmap/history/2024-07-18/23.bin"
    )
    assert (
        chunk_key(SiteLayout(prefix="p/"), "BTC", "liq_heatmap", HOUR, partial=True)
        == "p/v1/BTC/liq_heatmap/history/2024-07-18/23.partial.bin"
    )
    assert index_key(LAYOUT, "ETH", "orderbook_heatmap") == "v1/ETH/orderbook_heatmap/history/index.json"
    assert hour_of(HOUR + 59) == HOUR and hour_of(HOUR + 60) == HOUR + 60


def test_minute_frames_rejects_frames_of_another_minute_and_torn_blobs() -> None:
    assert minute_frames(liq_frame(HOUR), HOUR) == [liq_frame(HOUR)]
    with pytest.raises(ValueError):
        minute_frames(liq_frame(HOUR + 1), HOUR)
    with pytest.raises(ValueError):
        minute_frames(liq_frame(HOUR)[:-1], HOUR)


def test_partial_merge_is_a_union_whatever_the_order() -> None:
    publishes = [
        (HOUR + m, [ob_frame((HOUR + m) * 60.0 + 30 * k, m) for k in range(m % 3)]) for m in range(8)
    ]
    expected = b"".join(f for _, frames in publishes for f in frames)
    for order in itertools.islice(itertools.permutations(publishes), 0, 40320, 997):
        chunk: bytes | None = None
        for minute, frames in order:
            chunk = merge_partial(chunk, minute, frames)
        assert chunk == expected
    # re-publishing a minute replaces its frames, it never duplicates them
    again = merge_partial(expected, HOUR + 2, [ob_frame((HOUR + 2) * 60.0, 99)])
    assert [f.bid[0] for f in decode_frames(again)] == [1, 99, 4, 5, 5, 7]
    # frames of another hour and a torn tail in a corrupted current object are dropped
    assert merge_partial(liq_frame(HOUR - 1) + b"xx", HOUR, [liq_frame(HOUR)]) == liq_frame(HOUR)


def test_a_full_hour_in_order_writes_the_complete_chunk_at_59(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    for m in range(HOUR, HOUR + 60):
        # minute :10 has no book and :11 no price: they publish no frames but count as published
        publish(store, m, minute_blobs(m, ob_frames=0 if m == HOUR + 10 else 2, liq=m != HOUR + 11))
        if m < HOUR + 59:
            assert not store.exists(chunk_key(LAYOUT, "BTC", "orderbook_heatmap", HOUR))
    ob = store.read(chunk_key(LAYOUT, "BTC", "orderbook_heatmap", HOUR))
    assert ob.meta.cache_control == "public, max-age=31536000, immutable"
    assert ob.meta.content_type == "application/octet-stream"
    frames = decode_frames(ob.data)
    assert len(frames) == 118 and len(ob.data) == 118 * 4096
    assert [f.ts for f in frames] == sorted(f.ts for f in frames)
    assert ob.data == b"".join(
        minute_blobs(m).get("orderbook_heatmap", b"") for m in range(HOUR, HOUR + 60) if m != HOUR + 10
    )
    liq = decode_liq_frames(store.read_bytes(chunk_key(LAYOUT, "BTC", "liq_heatmap", HOUR)))
    assert [f.ts for f in liq] == [m * 60.0 for m in range(HOUR, HOUR + 60) if m != HOUR + 11]
    partial = store.read(chunk_key(LAYOUT, "BTC", "orderbook_heatmap", HOUR, partial=True))
    assert partial.data == ob.data
    assert partial.meta.cache_control == "public, max-age=5, stale-while-revalidate=5"
    index = read_json(store, index_key(LAYOUT, "BTC", "orderbook_heatmap"))
    assert index["format"] == "orderbook_frame" and index["frame_size"] == 4096
    assert index["urls"]["complete"] == "/v1/BTC/orderbook_heatmap/history/{YYYY-MM-DD}/{HH}.bin"
    assert index["minute"] == "2024-07-18T23:59:00Z" and index["next_update_at"] == "2024-07-19T00:01:00Z"
    entry = index["hours"]["2024-07-18T23:00:00Z"]
    assert entry == {"complete": True, "frames": 118, "minutes": "2" * 10 + "0" + "2" * 49}
    liq_index = read_json(store, index_key(LAYOUT, "BTC", "liq_heatmap"))
    assert liq_index["format"] == "liquidation_frame" and liq_index["max_frames_per_minute"] == 1
    assert liq_index["hours"]["2024-07-18T23:00:00Z"]["minutes"] == "1" * 11 + "0" + "1" * 48
    assert not store.exists("v1/BTC/market/history/index.json")


def test_an_hour_with_a_gap_stays_partial_until_the_gap_is_backfilled(tmp_path: Path) -> None:
    reference = LocalStore(tmp_path / "reference")
    for m in range(HOUR, HOUR + 61):
        publish(reference, m, minute_blobs(m))
    store = LocalStore(tmp_path / "site")
    for m in range(HOUR + 30, HOUR + 61):  # a backfill that started mid-hour, into the next hour
        publish(store, m, minute_blobs(m))
    assert not store.exists(chunk_key(LAYOUT, "BTC", "liq_heatmap", HOUR))
    entry = read_json(store, index_key(LAYOUT, "BTC", "liq_heatmap"))["hours"]["2024-07-18T23:00:00Z"]
    assert entry == {"complete": False, "frames": 30, "minutes": "-" * 30 + "1" * 30}
    partial = decode_liq_frames(store.read_bytes(chunk_key(LAYOUT, "BTC", "liq_heatmap", HOUR, partial=True)))
    assert [f.ts for f in partial] == [m * 60.0 for m in range(HOUR + 30, HOUR + 60)]
    for m in range(HOUR, HOUR + 30):  # the gap, backfilled later: the last one completes the hour
        publish(store, m, minute_blobs(m))
    assert store.exists(chunk_key(LAYOUT, "BTC", "liq_heatmap", HOUR))
    assert site_bytes(tmp_path / "site") == site_bytes(tmp_path / "reference")


def test_random_publish_orders_and_reruns_give_the_same_site(tmp_path: Path) -> None:
    reference = LocalStore(tmp_path / "reference")
    minutes = list(range(HOUR - 3, HOUR + 62))
    for m in minutes:
        publish(reference, m, minute_blobs(m, ob_frames=m % 3))
    expected = site_bytes(tmp_path / "reference")
    for seed in range(2):
        order = minutes[:]
        random.Random(seed).shuffle(order)
        store = LocalStore(tmp_path / f"shuffled{seed}")
        for m in order + order[:7]:  # and a few re-runs
            publish(store, m, minute_blobs(m, ob_frames=m % 3))
        assert site_bytes(tmp_path / f"shuffled{seed}") == expected


def test_a_changed_minute_conflicts_with_a_complete_chunk_unless_replacing(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    for m in range(HOUR, HOUR + 60):
        publish(store, m, minute_blobs(m))
    changed = {
        "liq_heatmap": liq_frame(HOUR + 59, 200),
        "orderbook_heatmap": minute_blobs(HOUR + 59)["orderbook_heatmap"],
    }
    with pytest.raises(ImmutableConflict):
        publish(store, HOUR + 59, changed)
    publish(store, HOUR + 59, changed, replace=True)
    last = decode_liq_frames(store.read_bytes(chunk_key(LAYOUT, "BTC", "liq_heatmap", HOUR)))[-1]
    assert last.long[0] == 200


def index_with(hours: dict[int, bool]) -> dict:
    return {
        "urls": {
            "complete": "/v1/BTC/liq_heatmap/history/{YYYY-MM-DD}/{HH}.bin",
            "partial": "/v1/BTC/liq_heatmap/history/{YYYY-MM-DD}/{HH}.partial.bin",
        },
        "hours": {
            iso_minute(h): {"complete": c, "frames": 60 if c else 5, "minutes": ""} for h, c in hours.items()
        },
    }


def test_plan_fetches_needs_at_most_13_objects_for_720_minutes() -> None:
    now = HOUR + 24 * 60 + 5  # 23:05 the next day; the current hour is partial
    index = index_with({h: h < hour_of(now) for h in range(HOUR - 48 * 60, hour_of(now) + 1, 60)})
    worst = 0
    for last in range(now - 120, now + 1):
        plan = plan_fetches(index, last - 719, last)
        worst = max(worst, len(plan))
        assert [f.hour for f in plan] == sorted(f.hour for f in plan)
        assert all(f.complete for f in plan[:-1])
    assert worst == 13
    aligned = plan_fetches(index, HOUR - 11 * 60, HOUR + 59)
    assert len(aligned) == 12
    assert plan_fetches(index, now - 5, now) == [
        Fetch("2024-07-19T23:00:00Z", "/v1/BTC/liq_heatmap/history/2024-07-19/23.partial.bin", False, 5)
    ]
    assert plan_fetches(index, HOUR, HOUR)[0].url == "/v1/BTC/liq_heatmap/history/2024-07-18/23.bin"
    # hours the index does not list are skipped
    assert len(plan_fetches(index_with({HOUR: True}), HOUR - 600, HOUR + 119)) == 1
    with pytest.raises(ValueError):
        plan_fetches(index, HOUR, HOUR - 1)


def test_partial_chunk_update_retries_after_losing_a_compare_and_swap(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    key = chunk_key(LAYOUT, "BTC", "liq_heatmap", HOUR, partial=True)
    meta = ObjectMeta("application/octet-stream", "public, max-age=5")
    store.put(key, liq_frame(HOUR), meta)
    calls: list[bytes | None] = []

    def merge(current: bytes | None) -> bytes | None:
        calls.append(current)
        if len(calls) == 1:  # another runner publishes minute :01 between our read and our write
            store.put(key, merge_partial(current, HOUR + 1, [liq_frame(HOUR + 1)]), meta)
        return merge_partial(current, HOUR + 2, [liq_frame(HOUR + 2)])

    with publication(store, LAYOUT) as pub:
        pub.update_pointer_bytes(key, merge, meta)
    assert len(calls) == 2
    assert store.read_bytes(key) == liq_frame(HOUR) + liq_frame(HOUR + 1) + liq_frame(HOUR + 2)
    assert store.read(key).meta == meta
