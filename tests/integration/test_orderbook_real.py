"""Order-book reconstruction on real Binance recordings (skipped where ../shared/data is absent).

Each session is imported into a LocalStore, read back minute by minute with ``read_minute``,
normalized, and stepped through the engine with the state round-tripped through JSON between minutes.
bookTicker is the exchange's own top of book: equal update id => equal best bid and ask.
"""

from __future__ import annotations

import json
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from moonstream.collector.importers import import_file
from moonstream.collector.rawfile import list_raw_minutes, read_minute
from moonstream.jobs.engines.orderbook import BinanceBook, OrderbookOutputs, step_orderbook
from moonstream.jobs.events import BookTicker, DepthSnapshot, DepthUpdate, Event
from moonstream.jobs.normalize import NormalizeStats, normalize_records
from moonstream.publish.frames import RECORD_SIZE, decode_frame, encode_frame
from moonstream.store import LocalStore
from tests.conftest import shared_file

pytestmark = pytest.mark.shared_data

HFT = "hftbacktest-binance-usdm"
CF = "cryptofeed-sample"


def _import(tmp_path: Path, *files: str) -> LocalStore:
    store = LocalStore(tmp_path / "data")
    paths = [shared_file(f) for f in files]
    for path in paths:
        import_file(path, store, symbols=None)
    return store


def _minutes(store: LocalStore, symbol: str) -> list[tuple[int, list[Event]]]:
    out = []
    for minute in list_raw_minutes(store, symbol):
        stats = NormalizeStats()
        events = normalize_records(read_minute(store, symbol, minute), symbol, stats)
        assert stats.error_total() == 0
        out.append((minute, events))
    return out


def _run(
    symbol: str, minutes: list[tuple[int, list[Event]]]
) -> tuple[dict[str, Any], list[OrderbookOutputs], float]:
    state: dict[str, Any] = {}
    outputs = []
    elapsed = 0.0
    for minute, events in minutes:
        started = time.perf_counter()
        state, out = step_orderbook(state, events, symbol, minute)
        elapsed += time.perf_counter() - started
        state = json.loads(json.dumps(state))  # proves the state is plain JSON
        outputs.append(out)
    return state, outputs, elapsed


SESSIONS = {
    # symbol, files, (integrity compared, diffs buffered before the snapshot, stale dropped, step)
    "btc-2024": ("BTC", ("btcusdt_20240718.gz", "btcusdt_20240719.gz"), (625, 6, 5, 20.0)),
    "eth-2024": ("ETH", ("ethusdt_20240718.gz", "ethusdt_20240719.gz"), (834, 7, 5, 1.0)),
    "btc-2023": ("BTC", ("btcusdt_20230404.dat.gz", "btcusdt_20230405.dat.gz"), (1565, 0, 0, 20.0)),
}


@pytest.mark.parametrize("name", sorted(SESSIONS))
def test_session_reconstructs_with_zero_integrity_mismatches(tmp_path: Path, name: str) -> None:
    symbol, files, (compared, buffered, stale, step) = SESSIONS[name]
    store = _import(tmp_path, *(f"{HFT}/{f}" for f in files))
    minutes = _minutes(store, symbol)
    state, outputs, elapsed = _run(symbol, minutes)
    totals = outputs[-1].stats["totals"]
    diffs = sum(1 for _, evs in minutes for e in evs if isinstance(e, DepthUpdate))
    print(f"\n{name}: {totals} engine {elapsed:.2f}s = {diffs / elapsed:.0f} diffs/s")
    assert totals["integrity_mismatches"] == 0
    assert totals["integrity_compared"] == compared >= 100
    assert (totals["gaps"], totals["syncs"], totals["snapshots_used"], totals["bridge_failures"]) == (
        0,
        1,
        1,
        0,
    )
    assert totals["diffs_buffered"] == buffered and totals["diffs_dropped_stale"] == stale
    assert totals["diffs_seen"] == diffs == totals["diffs_applied"] + stale
    assert all(out.stats["this_minute"]["integrity_mismatches"] == 0 for out in outputs)
    assert state["binance"]["status"] == "synced"
    # Every minute after the sync minute has both frames (but the last, where the recording ends).
    frames = [f for out in outputs[1:-1] for f in out.frames]
    assert frames and all(f is not None and f.coverage_ns == 30_000_000_000 for f in frames)
    for frame in frames:
        assert frame is not None and float(frame.grid.step) == step and frame.grid.n <= 1000
        assert frame.total_bid_usd > 1e6 and frame.total_ask_usd > 1e6
        record = encode_frame(
            src=1.0, bid=frame.bid_u8.tobytes(), ask=frame.ask_u8.tobytes(), **frame.header()
        )
        decoded = decode_frame(record)
        assert len(record) == RECORD_SIZE and decoded.n_buckets == frame.grid.n
        assert decoded.bid == frame.bid_u8.tobytes() and decoded.norm_p95 == frame.norm_p95 > 0


@pytest.mark.parametrize("name", ["btc-2024", "eth-2024"])
def test_diffs_before_the_snapshot_are_buffered_not_lost(tmp_path: Path, name: str) -> None:
    symbol, files, (_, buffered, stale, _) = SESSIONS[name]
    store = _import(tmp_path, *(f"{HFT}/{f}" for f in files))
    minute, events = next(
        (m, evs) for m, evs in _minutes(store, symbol) if any(isinstance(e, DepthSnapshot) for e in evs)
    )
    snap_at = next(i for i, e in enumerate(events) if isinstance(e, DepthSnapshot))
    early = [e for e in events[:snap_at] if isinstance(e, DepthUpdate)]
    assert len(early) == buffered
    snapshot = events[snap_at]
    assert isinstance(snapshot, DepthSnapshot)
    bridge = [d for d in early if d.first_update_id <= snapshot.last_update_id <= d.last_update_id]
    assert len(bridge) == 1  # the bridging diff arrived *before* the snapshot

    book = BinanceBook(symbol)
    applied_since_sync = 0
    first_check: tuple[int, int] | None = None
    for event in events:
        if isinstance(event, DepthUpdate):
            book.on_diff(event, event.ts_ns)
            if book.status == "synced":
                applied_since_sync += 1
        elif isinstance(event, BookTicker):
            book.on_ticker(event)
        elif isinstance(event, DepthSnapshot):
            book.on_snapshot(event, event.ts_ns)
            # synced at once, from the buffered bridging diff plus the buffered diffs after it
            assert book.status == "synced" and book.counts["diffs_applied"] == buffered - stale
            assert book.last_u == early[-1].last_update_id
        if first_check is None and book.counts["integrity_compared"]:
            first_check = (applied_since_sync, book.counts["integrity_mismatches"])
    print(f"\n{name}: first integrity comparison after {first_check[0] if first_check else None} diffs")
    assert first_check is not None and first_check[1] == 0 and first_check[0] <= 30
    assert book.counts["integrity_mismatches"] == 0 and book.counts["integrity_compared"] >= 20

    # Without the buffered diffs the snapshot can never be bridged: the buffer is what makes it work.
    late_only = [e for i, e in enumerate(events) if not (i < snap_at and isinstance(e, DepthUpdate))]
    _, out = step_orderbook({}, late_only, symbol, minute)
    assert out.stats["this_minute"]["bridge_failures"] == 1 and out.stats["this_minute"]["syncs"] == 0


def test_cryptofeed_four_binance_books(tmp_path: Path) -> None:
    store = _import(tmp_path, f"{CF}/BINANCE_FUTURES.ws.1.0", f"{CF}/BINANCE_FUTURES.http.0.0")
    expected = {"AKRO": 7, "CTK": 18, "KEEP": 13, "SUSHI": 12}  # bookTickers whose u ends an applied diff
    seen = {}
    for symbol in sorted(expected):
        _, outputs, _ = _run(symbol, _minutes(store, symbol))
        totals = outputs[-1].stats["totals"]
        seen[symbol] = totals["integrity_compared"]
        assert (totals["syncs"], totals["gaps"], totals["integrity_mismatches"]) == (1, 0, 0), symbol
        assert sum(f is not None for out in outputs for f in out.frames) == 2
    print(f"\ncryptofeed integrity comparisons: {seen}")
    assert seen == expected


def _book_after(events: list[Event], symbol: str, u: int) -> BinanceBook:
    book = BinanceBook(symbol)
    for event in events:
        if isinstance(event, DepthUpdate):
            book.on_diff(event, event.ts_ns)
            if book.last_u == u:
                return book
        elif isinstance(event, DepthSnapshot):
            book.on_snapshot(event, event.ts_ns)
    raise AssertionError("u not reached")


def test_missing_diff_is_a_gap_and_the_next_snapshot_recovers(tmp_path: Path) -> None:
    symbol = "BTC"
    store = _import(tmp_path, f"{HFT}/btcusdt_20240718.gz", f"{HFT}/btcusdt_20240719.gz")
    minutes = _minutes(store, symbol)
    ref_state, ref_out, _ = _run(symbol, minutes)
    flat = [e for _, evs in minutes for e in evs]
    diffs = [e for e in flat if isinstance(e, DepthUpdate)]
    lost, resync = diffs[4000], diffs[4040]  # minute 00:01 of the session
    ref_book = _book_after(flat, symbol, resync.last_update_id)
    # A REST snapshot of the book as of `resync` (1,000 levels a side), arriving 3 diffs later.
    snapshot = DepthSnapshot(
        exchange="binance",
        symbol=symbol,
        recv_ns=diffs[4043].recv_ns,
        ts_ns=diffs[4043].ts_ns,
        last_update_id=resync.last_update_id,
        bids=tuple(sorted(ref_book.bids.items(), reverse=True)[:1000]),
        asks=tuple(sorted(ref_book.asks.items())[:1000]),
    )
    broken = []
    for minute, events in minutes:
        kept: list[Event] = []
        for event in events:
            if event is lost:
                continue
            kept.append(event)
            if event is diffs[4043]:
                kept.append(snapshot)
        broken.append((minute, kept))
    state, outputs, _ = _run(symbol, broken)
    totals = outputs[-1].stats["totals"]
    print(f"\ngap run: {totals}")
    assert (totals["gaps"], totals["resyncs"], totals["syncs"], totals["integrity_mismatches"]) == (
        1,
        1,
        2,
        0,
    )
    hit = next(i for i, out in enumerate(outputs) if out.stats["this_minute"]["gaps"])
    assert outputs[hit].stats["this_minute"]["resyncs"] == 1  # recovered within the same minute
    ref_totals = ref_out[-1].stats["totals"]
    assert (
        ref_totals["integrity_compared"] - 10
        < totals["integrity_compared"]
        < ref_totals["integrity_compared"]
    )
    coverage = [f.coverage_ns for f in outputs[hit].frames if f is not None]
    assert min(coverage) < 30_000_000_000  # the frame covers only the synced time
    # After the resync the book is the reference book again: top of book and the near levels agree.
    final, ref = state["binance"], ref_state["binance"]
    assert final["last_u"] == ref["last_u"]
    assert final["bids"][:200] == ref["bids"][:200] and final["asks"][:200] == ref["asks"][:200]
    # Without the snapshot the book stays down and no frame is invented after the gap.
    no_snap = [(m, [e for e in evs if e is not snapshot]) for m, evs in broken]
    _, dark, _ = _run(symbol, no_snap)
    assert dark[-1].stats["totals"]["resyncs"] == 0 and dark[-1].stats["status"] == "empty"
    assert all(f is None for out in dark[hit + 1 :] for f in out.frames)


def test_same_inputs_same_state_and_frame_bytes(tmp_path: Path) -> None:
    store = _import(tmp_path, f"{HFT}/ethusdt_20240718.gz", f"{HFT}/ethusdt_20240719.gz")
    minutes = _minutes(store, "ETH")[:4]
    runs = []
    for _ in range(2):
        state, outputs, _ = _run("ETH", minutes)
        blob = b"".join(
            encode_frame(src=1.0, bid=f.bid_u8.tobytes(), ask=f.ask_u8.tobytes(), **f.header())
            for out in outputs
            for f in out.frames
            if f is not None
        )
        runs.append((json.dumps(state, sort_keys=True), blob))
    assert runs[0] == runs[1] and len(runs[0][1]) == 8 * RECORD_SIZE  # synced at 23:57:01: 2 frames a minute
    assert Decimal(json.loads(runs[0][0])["binance"]["bids"][0][0]) > 3000
