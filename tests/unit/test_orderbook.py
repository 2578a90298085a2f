"""Order-book engine (Binance reconstruction, integrity check, frames) and the 4,096-byte frame record."""

from __future__ import annotations

import hashlib
import json
import struct
from decimal import Decimal
from typing import Any

import numpy as np
import pytest

from moonstream.jobs.engines import orderbook
from moonstream.jobs.engines.orderbook import MAX_BUFFERED_DIFFS, step_orderbook
from moonstream.jobs.engines.orderbook_frames import (
    MAX_BUCKETS,
    WindowAccumulator,
    default_step,
    intensities,
    make_grid,
)
from moonstream.jobs.events import BookTicker, DepthSnapshot, DepthUpdate, Event
from moonstream.publish.frames import (
    HEADER_SIZE,
    RECORD_SIZE,
    FrameFormatError,
    decode_frame,
    decode_frames,
    encode_frame,
)

D = Decimal
MINUTE = 28_689_120  # 2024-07-19 00:00 UTC
T0 = MINUTE * 60 * 1_000_000_000
S = 1_000_000_000


def diff(
    U: int, u: int, pu: int, t_s: float, bids: Any = (), asks: Any = (), sym: str = "BTC"
) -> DepthUpdate:
    ts = T0 + int(t_s * S)
    return DepthUpdate(
        exchange="binance",
        symbol=sym,
        recv_ns=ts + 5_000_000,
        ts_ns=ts,
        tx_ns=ts,
        first_update_id=U,
        last_update_id=u,
        prev_last_update_id=pu,
        bids=tuple((D(p), D(q)) for p, q in bids),
        asks=tuple((D(p), D(q)) for p, q in asks),
    )


def snap(last: int, t_s: float, bids: Any, asks: Any, sym: str = "BTC") -> DepthSnapshot:
    ts = T0 + int(t_s * S)
    return DepthSnapshot(
        exchange="binance",
        symbol=sym,
        recv_ns=ts,
        ts_ns=ts,
        last_update_id=last,
        bids=tuple((D(p), D(q)) for p, q in bids),
        asks=tuple((D(p), D(q)) for p, q in asks),
    )


def ticker(u: int, bid: str, ask: str, t_s: float = 0.0, sym: str = "BTC") -> BookTicker:
    ts = T0 + int(t_s * S)
    return BookTicker("binance", sym, ts, ts, u, D(bid), D("1"), D(ask), D("1"))


SNAP_BIDS = [("100.0", "2"), ("99.0", "3"), ("95.0", "10")]
SNAP_ASKS = [("101.0", "1"), ("102.0", "4")]


def synced_events() -> list[Event]:
    """Two diffs buffered before the snapshot (one stale, one bridging), then a chained diff."""
    return [
        diff(90, 95, 89, 0.1, bids=[("98.0", "1")]),  # u < lastUpdateId: dropped
        diff(96, 105, 95, 0.2, bids=[("100.0", "5")]),  # bridges 100
        snap(100, 0.3, SNAP_BIDS, SNAP_ASKS),
        ticker(105, "100.0", "101.0"),  # after its diff
        ticker(110, "100.5", "101.0"),  # before its diff
        diff(106, 110, 105, 1.0, bids=[("100.5", "1")]),
    ]


def step(events: list[Event], state: dict[str, Any] | None = None, minute: int = MINUTE) -> Any:
    new_state, out = step_orderbook(state or {}, events, "BTC", minute)
    return json.loads(json.dumps(new_state)), out


# --- reconstruction ------------------------------------------------------------------------------


def test_buffers_until_snapshot_then_bridges_and_chains() -> None:
    state, out = step(synced_events())
    m = out.stats["this_minute"]
    assert (m["diffs_seen"], m["diffs_buffered"], m["diffs_dropped_stale"], m["diffs_applied"]) == (
        3,
        2,
        1,
        2,
    )
    assert (m["snapshots_used"], m["syncs"], m["gaps"], m["resyncs"]) == (1, 1, 0, 0)
    assert (m["integrity_compared"], m["integrity_mismatches"]) == (2, 0)
    book = state["binance"]
    assert book["status"] == "synced" and book["last_u"] == 110
    assert book["bids"] == [["100.5", "1"], ["100", "5"], ["99", "3"], ["95", "10"]]  # 98 never applied
    assert out.stats["depth"]["best_bid"] == "100.5" and out.stats["depth"]["complete_from"] == "95"


def test_integrity_mismatch_is_counted() -> None:
    events = synced_events()
    events[3] = ticker(105, "100.0", "101.5")
    _, out = step(events)
    this_minute = out.stats["this_minute"]
    assert (this_minute["integrity_compared"], this_minute["integrity_mismatches"]) == (2, 1)


def test_state_round_trips_across_minutes_and_totals_run() -> None:
    state, _ = step(synced_events())
    nxt: list[Event] = [diff(111, 120, 110, 61.0, asks=[("101.0", "0")]), ticker(120, "100.5", "102.0", 61.0)]
    state2, out2 = step(nxt, state, MINUTE + 1)
    assert out2.stats["this_minute"]["diffs_applied"] == 1
    assert out2.stats["this_minute"]["integrity_compared"] == 1
    assert out2.stats["totals"]["integrity_compared"] == 3 and out2.stats["totals"]["diffs_applied"] == 3
    assert state2["binance"]["asks"] == [["102", "4"]]


def test_pu_break_is_a_gap_and_the_next_snapshot_resyncs() -> None:
    state, _ = step(synced_events())
    events: list[Event] = [
        diff(121, 130, 120, 61.0, bids=[("97", "1")]),  # pu 120 != 110: gap (diff 111..120 missing)
        diff(131, 140, 130, 62.0, bids=[("96", "1")]),
        ticker(140, "100.5", "101.0", 62.0),  # not compared: no book
        snap(135, 63.0, [("100.5", "1"), ("96", "7")], [("101", "2")]),
        diff(141, 150, 140, 64.0, asks=[("101", "3")]),
        ticker(150, "100.5", "101", 64.0),
    ]
    state2, out = step(events, state, MINUTE + 1)
    m = out.stats["this_minute"]
    assert (m["gaps"], m["resyncs"], m["syncs"], m["diffs_dropped_stale"]) == (1, 1, 1, 1)
    assert (m["integrity_compared"], m["integrity_mismatches"]) == (2, 0)  # 140 (bridge) and 150
    assert state2["binance"]["bids"] == [["100.5", "1"], ["96", "1"]]  # snapshot + bridging diff
    assert out.stats["synced"] is True


def test_gap_without_snapshot_leaves_no_book_and_no_frames() -> None:
    state, _ = step(synced_events())
    state2, out = step([diff(121, 130, 120, 61.0)], state, MINUTE + 1)
    assert out.stats["this_minute"]["gaps"] == 1 and out.stats["status"] == "empty"
    assert out.frames[1] is None and out.stats["depth"]["best_bid"] is None
    assert state2["binance"]["buffer"][0][:3] == [121, 130, 120]


def test_cold_start_without_snapshot_invents_nothing() -> None:
    events: list[Event] = [diff(1 + 10 * i, 10 * (i + 1), 10 * i, i * 0.5) for i in range(10)]
    state, out = step(events)
    assert out.frames == (None, None) and out.stats["frames"] == {"emitted": 0, "missing": 2}
    assert out.stats["status"] == "empty" and out.stats["this_minute"]["diffs_buffered"] == 10
    assert len(state["binance"]["buffer"]) == 10


def test_snapshot_older_than_every_diff_cannot_bridge() -> None:
    events: list[Event] = [diff(200, 210, 199, 0.1), snap(150, 0.2, SNAP_BIDS, SNAP_ASKS)]
    _, out = step(events)
    assert out.stats["this_minute"]["bridge_failures"] == 1 and out.stats["status"] == "empty"


def test_buffer_is_bounded() -> None:
    events: list[Event] = [
        diff(10 * i + 1, 10 * i + 10, 10 * i, 0.01 * i) for i in range(MAX_BUFFERED_DIFFS + 7)
    ]
    state, out = step(events)
    assert len(state["binance"]["buffer"]) == MAX_BUFFERED_DIFFS
    assert out.stats["this_minute"]["diffs_dropped_overflow"] == 7
    assert state["binance"]["buffer"][0][0] == 71  # the oldest were dropped


def test_other_symbols_and_exchanges_are_ignored() -> None:
    events = [*synced_events(), diff(111, 120, 999, 2.0, sym="ETH")]
    _, out = step(events)
    assert out.stats["this_minute"]["gaps"] == 0 and out.stats["this_minute"]["diffs_seen"] == 3


def test_stats_hold_no_paths_or_exception_text() -> None:
    _, out = step(synced_events())
    text = json.dumps(out.stats)
    assert "/" not in text and "Error" not in text and "Traceback" not in text


# --- frames --------------------------------------------------------------------------------------


def test_frame_is_time_weighted_over_the_synced_window() -> None:
    x = "XYZ"  # not a configured symbol: default step 0.05 at mid 100.5
    events: list[Event] = [
        snap(100, 0.0, [("100.0", "2")], [("101.0", "1")], sym=x),
        diff(96, 105, 95, 0.0, sym=x),
        diff(106, 110, 105, 10.0, bids=[("99.0", "4")], sym=x),  # 99 rests 20 s of 30
        diff(111, 112, 110, 20.0, asks=[("101.0", "0"), ("103.0", "1")], sym=x),  # 101: 20 s, 103: 10 s
        diff(113, 114, 112, 29.0, sym=x),  # keeps the book live to the window end
    ]
    _, out = step_orderbook({}, events, x, MINUTE)
    frame = out.frames[0]
    assert frame is not None and frame.coverage_ns == 30 * S
    grid = frame.grid
    assert grid.step == D("0.05") and grid.n == 403
    bid, ask = frame.bid_usd, frame.ask_usd
    assert bid[grid.bucket(D(100))] == pytest.approx(200.0)
    assert bid[grid.bucket(D(99))] == pytest.approx(99 * 4 * 20 / 30)
    assert ask[grid.bucket(D(101))] == pytest.approx(101 * 20 / 30)
    assert ask[grid.bucket(D(103))] == pytest.approx(103 * 10 / 30)
    assert frame.total_bid_usd == pytest.approx(200 + 264)
    assert int(np.count_nonzero(bid)) == 2 and int(np.count_nonzero(ask)) == 2


def test_stale_book_stops_coverage() -> None:
    events: list[Event] = [snap(100, 0.0, [("100.0", "2")], [("101.0", "1")]), diff(96, 105, 95, 2.0)]
    _, out = step(events)
    assert out.frames[0] is not None and out.frames[0].coverage_ns == 10 * S  # 2 s .. 12 s
    assert out.frames[1] is None


@pytest.mark.parametrize(
    ("symbol", "mid", "step", "n"),
    [
        ("BTC", D("64000"), D("20"), 641),
        ("ETH", D("3400.5"), D("1.0"), 681),
        ("SOL", D("161.37"), D("0.10"), 324),
    ],
)
def test_symbols_use_their_own_steps(symbol: str, mid: Decimal, step: Decimal, n: int) -> None:
    acc = WindowAccumulator(symbol, T0, T0 + 30 * S)
    acc.open_book(T0, {mid - 1: D(1)}, {mid + 1: D(1)}, mid)
    assert acc.grid is not None and acc.grid.step == step and acc.grid.n == n
    assert acc.grid.price_min <= mid * D("0.9") < acc.grid.price_min + step
    assert acc.grid.price_max <= mid * D("1.1") < acc.grid.price_max + step


def test_grid_is_built_by_index_without_drift() -> None:
    grid = make_grid(D("55.55"), D("0.10"))  # SOL-like: 0.1 is not a binary fraction
    assert (grid.n, grid.i_min) == (113, 499)
    prices = grid.prices()
    for j in range(grid.n):
        assert prices[j] == float((grid.i_min + j) * D("0.1"))
    long_grid = make_grid(D("499.9"), D("0.10"))  # exactly 1,000 buckets 449.9 .. 549.8
    assert (long_grid.n, long_grid.price_min, long_grid.price_max) == (1000, D("449.9"), D("549.8"))
    long_prices = long_grid.prices()
    assert long_prices[-1] == 549.8 and long_prices[1] == 450.0
    assert all(long_prices[j] == float(D(4499 + j) / 10) for j in range(1000))
    added = 449.9
    for _ in range(999):
        added += 0.1
    assert added != 549.8  # what repeated addition would have produced (drift)
    assert long_grid.bucket(D("549.85")) == 999 and long_grid.bucket(D("549.9")) is None
    assert make_grid(D("500"), D("0.10")).step == D("0.20")  # 1,001 buckets would not fit


def test_grid_widens_the_step_to_stay_within_1000_buckets() -> None:
    grid = make_grid(D("120000"), D("20"))  # 24,000 / 20 would need 1,201 buckets
    assert grid.step == D("40") and grid.n <= MAX_BUCKETS


def test_default_step_rule() -> None:
    assert default_step(D("0.0173")) == D("0.00001")
    assert default_step(D("6.87")) == D("0.005")
    assert default_step(D("64000")) == D("50")
    assert make_grid(D("6.87"), default_step(D("6.87"))).n == 276


def test_intensities_scale_by_p95_and_keep_zero_for_empty() -> None:
    bid = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    ask = np.array([5.0, 0.0, 1e-9, 100.0, 0.0])
    b8, a8, p50, p95 = intensities(bid, ask)
    nonzero = [1.0, 2.0, 3.0, 4.0, 5.0, 1e-9, 100.0]
    assert p50 == float(np.percentile(nonzero, 50)) == 3.0
    assert p95 == pytest.approx(float(np.percentile(nonzero, 95)))
    assert b8.tolist() == [0] + [round(255 * v / p95) for v in (1.0, 2.0, 3.0, 4.0)]
    assert a8.tolist() == [round(255 * 5 / p95), 0, 1, 255, 0]  # tiny but present -> 1; above p95 -> 255
    assert intensities(np.zeros(3), np.zeros(3))[2:] == (0.0, 0.0)


def test_intensities_percentiles_are_numpys_bit_for_bit() -> None:
    """p50/p95 are what ``np.percentile(nonzero, [50.0, 95.0])`` gives, to the last bit, on frames of
    every size and spread (the plain-Python percentile replaced that call)."""
    rng = np.random.default_rng(11)
    for n in [1, 2, 3, 19, 20, 21, 400, 1000] + [int(k) for k in rng.integers(1, 1000, 200)]:
        bid = rng.lognormal(10.0, 3.0, n) * (rng.random(n) < 0.7)
        ask = rng.exponential(1e5, n) * (rng.random(n) < 0.5)
        both = np.concatenate([bid, ask])
        nonzero = both[both > 0]
        if nonzero.size == 0:
            continue
        expected = np.percentile(nonzero, [50.0, 95.0])
        _, _, p50, p95 = intensities(bid, ask)
        assert (p50.hex(), p95.hex()) == (float(expected[0]).hex(), float(expected[1]).hex()), n


def test_determinism_same_inputs_same_state_and_bytes() -> None:
    events = [*synced_events(), diff(111, 120, 110, 40.0, asks=[("101.5", "2")])]
    runs = []
    for _ in range(2):
        state, out = step_orderbook({}, events, "BTC", MINUTE)
        records = b"".join(
            encode_frame(src=1.0, bid=f.bid_u8.tobytes(), ask=f.ask_u8.tobytes(), **f.header())
            for f in out.frames
            if f is not None
        )
        runs.append((json.dumps(state, sort_keys=True), records, json.dumps(out.stats, sort_keys=True)))
    assert runs[0] == runs[1] and len(runs[0][1]) == 2 * RECORD_SIZE


# --- binary record -------------------------------------------------------------------------------

GOLDEN_PREFIX = bytes.fromhex(
    "000000f36aa6d941000000000000f03f000000008018ec40000000000020ec40"
    "00000000000034400400000000000000"
    "00408f400000000000409f40000000000088b340000000008070b740"
    "000180ff"
    "ff800100"
)
GOLDEN_SHA256 = "6a4be95e7743095d505d8d6b4047ab0fc3b40a17154fd9a2d1ad3a1b413f09e8"


def golden_record() -> bytes:
    return encode_frame(
        ts=1721347020.0,
        src=1.0,
        price_min=57540.0,
        price_max=57600.0,
        step=20.0,
        norm_p50=1000.0,
        norm_p95=2000.0,
        total_bid=5000.0,
        total_ask=6000.5,
        bid=[0, 1, 128, 255],
        ask=[255, 128, 1, 0],
    )


def test_golden_vector_matches_docs() -> None:
    record = golden_record()
    assert len(record) == RECORD_SIZE and HEADER_SIZE == 76
    assert record == GOLDEN_PREFIX + bytes(RECORD_SIZE - len(GOLDEN_PREFIX))
    assert hashlib.sha256(record).hexdigest() == GOLDEN_SHA256
    assert struct.unpack_from("<I", record, 40) == (4,)


def test_decode_round_trip_and_errors() -> None:
    rec = decode_frame(golden_record())
    assert (rec.ts, rec.price_min, rec.step, rec.n_buckets, rec.total_ask) == (
        1721347020.0,
        57540.0,
        20.0,
        4,
        6000.5,
    )
    assert list(rec.bid) == [0, 1, 128, 255] and list(rec.ask) == [255, 128, 1, 0]
    assert rec.prices() == [57540.0, 57560.0, 57580.0, 57600.0]
    assert len(decode_frames(golden_record() * 3)) == 3
    with pytest.raises(FrameFormatError):
        decode_frame(golden_record()[:-1])
    with pytest.raises(FrameFormatError):
        decode_frame(golden_record()[:-1] + b"\x01")  # non-zero padding
    with pytest.raises(FrameFormatError):
        encode_frame(**{**_GOLDEN_KW, "bid": bytes(1001), "ask": bytes(1001)})
    with pytest.raises(FrameFormatError):
        encode_frame(**{**_GOLDEN_KW, "norm_p95": float("nan")})
    full = encode_frame(**{**_GOLDEN_KW, "bid": bytes([7]) * 1000, "ask": bytes([9]) * 1000})
    assert decode_frame(full).ask == bytes([9]) * 1000 and full[HEADER_SIZE + 2000 :] == bytes(2020)


_GOLDEN_KW: dict[str, Any] = dict(
    ts=1.0, src=1.0, price_min=1.0, price_max=2.0, step=1.0, norm_p50=1.0, norm_p95=1.0,
    total_bid=1.0, total_ask=1.0, bid=b"\x01\x02", ask=b"\x03\x04",
)  # fmt: skip


def test_module_constants_documented() -> None:
    assert orderbook.MAX_BUFFERED_DIFFS == 500 and orderbook.STALE_NS == 10 * S


def test_docs_golden_vector_is_the_encoder_output() -> None:
    import re

    from tests.conftest import REPO_ROOT

    text = (REPO_ROOT / "docs" / "formats.md").read_text(encoding="utf-8")
    section = text[text.index("## Order-book frame (4,096 bytes)") :]
    block = section.split("```")[1]
    rows = re.findall(r"^(\d+)\s+([0-9a-f]+)\s+[a-z]", block, flags=re.MULTILINE)
    prefix = b"".join(bytes.fromhex(h) for _, h in rows)
    assert [int(o) for o, _ in rows][-1] == 80 and prefix == GOLDEN_PREFIX
    assert GOLDEN_SHA256 in section
    assert golden_record()[: len(prefix)] == prefix


def test_heatmap_body_has_both_windows() -> None:
    from moonstream.publish.frames import SOURCE_CODES

    _, out = step(synced_events())
    body = out.heatmap_body()
    assert body["src"] == SOURCE_CODES["binance"] == orderbook.SOURCE_CODE
    assert body["window_starts"] == ["2024-07-19T00:00:00.000Z", "2024-07-19T00:00:30.000Z"]
    first, second = body["frames"]
    assert second is None  # last diff at 1.0 s: live until 11 s only
    assert first["window_start"] == "2024-07-19T00:00:00.000Z"
    assert (first["step"], first["n_buckets"], first["price_min"]) == (20.0, 2, 80.0)
    assert abs(first["coverage_s"] - 10.8) < 1e-9  # bridged at 0.2 s, live until 1.0 + 10 s
    assert len(first["bid"]) == len(first["ask"]) == 2 and json.dumps(body)


# --- fast paths: same results as the straightforward definitions -------------------------------


def test_best_prices_track_max_and_min_through_churn_and_state() -> None:
    """The kept best prices (a sorted head of each side, rebuilt when it runs out or the book is
    replaced) always equal max(bids) / min(asks), across deletions of the top and state trips."""
    import random

    from moonstream.jobs.engines.orderbook_binance import BinanceBook

    rng = random.Random(7)
    for trial in range(40):
        n0, span = rng.choice([0, 1, 3, 200]), rng.choice([5, 40, 400])
        bids = [(str(D(1000 - rng.randint(1, span)) / 10), str(rng.randint(1, 5))) for _ in range(n0)]
        asks = [(str(D(1000 + rng.randint(1, span)) / 10), str(rng.randint(1, 5))) for _ in range(n0)]
        book = BinanceBook("BTC")
        book.on_snapshot(snap(10, 0.0, bids, asks), T0)
        for k in range(300):

            def side(lo: int, hi: int) -> list[tuple[str, str]]:
                return [
                    (str(D(rng.randint(lo, hi)) / 10), rng.choice(["0", "0", "1", "2"]))
                    for _ in range(rng.randint(0, 8))
                ]

            book.on_diff(
                diff(10 + k, 11 + k, 10 + k, 0.0, side(1000 - span, 999), side(1001, 1000 + span)), T0
            )
            assert book.status == "synced", trial
            assert book.best_bid() == (max(book.bids) if book.bids else None), (trial, k)
            assert book.best_ask() == (min(book.asks) if book.asks else None), (trial, k)
            if k % 97 == 0:
                book = BinanceBook.from_state(book.to_state(), "BTC")


def _reference_integrals(
    grid: Any, opened: tuple[dict[Decimal, Decimal], ...], t0: int, steps: list[Any], end: int
) -> list[dict[int, float]]:
    """The straightforward accumulation (the engine before its fast paths): every change adds
    ``float(value) × (t - last)`` to its bucket, also at ``t == last``."""
    result: list[dict[int, float]] = []
    for side in (0, 1):
        cur: dict[int, Decimal] = {}
        for price, qty in opened[side].items():
            j = grid.bucket(price)
            if j is not None:
                cur[j] = cur.get(j, Decimal(0)) + price * qty
        last = dict.fromkeys(cur, t0)
        acc: dict[int, float] = {}
        for t, changes in steps:
            for price, old, new in changes[side]:
                j = grid.bucket(price)
                if j is None:
                    continue
                value = cur.get(j)
                if value is not None:
                    acc[j] = acc.get(j, 0.0) + float(value) * (t - last[j])
                    cur[j] = value + price * (new - old)
                else:
                    cur[j] = price * (new - old)
                last[j] = t
        for j, value in cur.items():
            if value:
                acc[j] = acc.get(j, 0.0) + float(value) * (end - last[j])
        result.append(acc)
    return result


def test_window_integrals_equal_the_straightforward_accumulation() -> None:
    """``WindowAccumulator.changes`` (lists, one call per side and message, nothing added for a
    second change of a bucket at the same instant) gives bit-identical frames to the plain rule."""
    import random

    rng = random.Random(3)
    mid = D(100)
    book = {mid + D(k) / 10: D(rng.randint(1, 9)) / 7 for k in range(-50, 51) if k}
    opened = ({p: q for p, q in book.items() if p < mid}, {p: q for p, q in book.items() if p > mid})
    acc = WindowAccumulator("XYZ", T0, T0 + 30 * S)
    acc.open_book(T0, *opened, mid)
    levels = dict(book)
    steps: list[Any] = []
    for n in range(300):
        t = T0 + (n // 2) * 97_000_001  # two messages per instant
        changes: tuple[list[Any], list[Any]] = ([], [])
        for _ in range(rng.randint(1, 6)):
            price = mid + D(rng.randint(-60, 60)) / 10
            new = D(rng.choice([0, 1, 2, 3])) / 3
            old = levels.get(price, D(0))
            if price != mid and new != old:
                changes[0 if price < mid else 1].append((price, old, new))
                levels[price] = new
        for side in (0, 1):
            acc.changes(t, side, changes[side])
        steps.append((t, changes))
    frame = acc.finish()
    assert frame is not None
    expected = _reference_integrals(frame.grid, opened, T0, steps, T0 + 30 * S)
    for side, values in ((0, frame.bid_usd), (1, frame.ask_usd)):
        want = np.zeros(frame.grid.n)
        for j, integral in expected[side].items():
            want[j] = integral / frame.coverage_ns
        assert values.tobytes() == want.tobytes()


# --- parsed books kept between minutes --------------------------------------------------------


def _stream(seed: int, exchanges: tuple[str, ...], minutes: int = 5) -> list[list[Event]]:
    """Random book traffic over ``minutes`` minutes: Binance diffs chained across minutes (with a gap
    and a resync), bookTickers, Bybit and OKX snapshots and deltas; quantities with trailing zeros
    and long decimals (sums that round, so the order of summing matters), deletions, new levels."""
    import random

    from moonstream.jobs.events import BookDelta, BookSnapshot

    rng = random.Random(seed)

    def qty() -> str:
        kind = rng.random()
        if kind < 0.15:
            return "0"
        if kind < 0.3:
            return f"{rng.randint(1, 9)}.{rng.randint(0, 9)}00"
        if kind < 0.4:
            return f"0.{rng.randint(10**23, 10**24 - 1)}"
        return str(rng.randint(1, 50) / 10)

    def levels(lo: int, hi: int, n: int) -> list[tuple[str, str]]:
        return [(f"{rng.randint(lo, hi) / 10:.1f}", qty()) for _ in range(n)]

    def book_event(cls: Any, name: str, ts: int, depth: int, uid: int, prev: int | None, n: int) -> Any:
        ct = D("0.01") if name == "okx" else D(1)
        bids = tuple((D(p), D(q) * ct) for p, q in levels(9000, 9999, n))
        asks = tuple((D(p), D(q) * ct) for p, q in levels(10001, 11000, n))
        if cls is BookSnapshot:
            bids = tuple((p, q) for p, q in bids if q)
            asks = tuple((p, q) for p, q in asks if q)
            return BookSnapshot(name, "BTC", ts, ts, depth, uid, None, None, ct, bids, asks)
        return BookDelta(name, "BTC", ts, ts, depth, uid, prev, None, None, ct, bids, asks)

    out: list[list[Event]] = []
    u, seq = 1000, {"bybit": 1, "okx": 1}
    for m in range(minutes):
        events: list[Event] = []
        base = m * 60.0
        if m == 0 and "binance" in exchanges:
            events.append(snap(u, base, levels(9000, 9999, 300), levels(10001, 11000, 300)))
        for name in ("bybit", "okx"):
            if name in exchanges and m in (0, 3):
                seq[name] += 5
                events.append(book_event(BookSnapshot, name, T0 + int(base * S), 50, seq[name], None, 80))
        for k in range(rng.randint(80, 160)):
            ts = T0 + int((base + k * 59.0 / 160) * S)
            t_s = (ts - T0) / S
            if "binance" in exchanges:
                if m == 2 and k == 40:
                    u += 7  # a gap: the book is dropped until the next snapshot
                if m == 2 and k == 70:
                    events.append(snap(u, t_s, levels(9000, 9999, 250), levels(10001, 11000, 250)))
                events.append(diff(u + 1, u + 3, u, t_s, levels(9900, 9999, 4), levels(10001, 10100, 4)))
                u += 3
                if k % 9 == 0:
                    events.append(ticker(u, "999.9", "1000.1", t_s))
            for name in ("bybit", "okx"):
                if name in exchanges and k % 3 == 0:
                    prev = seq[name]
                    seq[name] += 1
                    events.append(book_event(BookDelta, name, ts, 50, seq[name], prev, 3))
        out.append(events)
    return out


def _dump(state: dict[str, Any], out: Any) -> tuple[Any, ...]:
    """Everything a step produced, as bytes/text (dict key order included)."""
    frames = [
        None
        if f is None
        else (f.bid_usd.tobytes(), f.ask_usd.tobytes(), f.bid_u8.tobytes(), f.ask_u8.tobytes(), f.header())
        for f in out.frames
    ]
    return json.dumps(state), json.dumps(out.stats), json.dumps(out.heatmap_body()), frames, out.src


@pytest.mark.parametrize(
    "exchanges", [("binance",), ("binance", "bybit", "okx"), ("bybit", "okx"), ("bybit",)]
)
def test_kept_books_give_the_same_outputs_and_states_as_parsing(
    exchanges: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stepping each minute from the very state dict the previous step returned (its books kept,
    not parsed) gives byte-identical states and outputs to parsing the state every minute, to a
    JSON round trip of the state, and to the cache switched off; a second use of the same state
    dict (a re-run) parses again and gives the same results."""
    stream = _stream(11, exchanges)
    hits: list[bool] = []
    take = orderbook._take_kept

    def counting_take(state: dict[str, Any], symbol: str) -> Any:
        kept = take(state, symbol)
        hits.append(bool(kept))
        return kept

    monkeypatch.setattr(orderbook, "_take_kept", counting_take)

    classes: dict[str, Any] = {"binance": orderbook.BinanceBook, **orderbook.LEVEL_BOOKS}

    def run(mode: str) -> list[tuple[Any, ...]]:
        orderbook.clear_kept_books()
        monkeypatch.setattr(orderbook, "KEEP_BOOKS", mode != "off")
        state: dict[str, Any] = {}
        results = []
        for m, events in enumerate(stream):
            if mode == "copy":
                state = json.loads(json.dumps(state))
            if mode == "kept" and m:  # the kept dicts are what parsing gives, in the same order
                for name, (*_, sides) in orderbook._kept["BTC"].levels.items():
                    parsed = classes[name].from_state(state[name], "BTC")
                    assert [list(side.items()) for side in sides] == [
                        list(parsed.bids.items()),
                        list(parsed.asks.items()),
                    ]
            state, out = step_orderbook(state, events, "BTC", MINUTE + m)
            results.append(_dump(state, out))
        return results

    hits.clear()
    kept = run("kept")
    assert hits == [False] + [True] * (len(stream) - 1)
    assert kept == run("off") == run("copy")

    orderbook.clear_kept_books()
    monkeypatch.setattr(orderbook, "KEEP_BOOKS", True)
    state, _ = step_orderbook({}, stream[0], "BTC", MINUTE)
    hits.clear()
    first = _dump(*step_orderbook(state, stream[1], "BTC", MINUTE + 1))
    again = _dump(*step_orderbook(state, stream[1], "BTC", MINUTE + 1))
    assert hits == [True, False] and first == again == kept[1]


def test_kept_books_are_per_symbol_and_checked_by_identity() -> None:
    """Another symbol's step does not take a symbol's books; a state whose book part was replaced
    in place is parsed."""
    import dataclasses

    orderbook.clear_kept_books()
    events = [*synced_events(), diff(111, 120, 110, 40.0, asks=[("101.5", "2")])]
    eth = [dataclasses.replace(e, symbol="ETH") for e in events]
    btc_state, _ = step_orderbook({}, events, "BTC", MINUTE)
    eth_state, _ = step_orderbook({}, eth, "ETH", MINUTE)
    assert orderbook._take_kept(btc_state, "ETH") == {}  # not ETH's state: ETH's entry is dropped
    assert set(orderbook._take_kept(btc_state, "BTC")) == {"binance"}
    assert orderbook._take_kept(btc_state, "BTC") == {}  # used once
    btc_state, _ = step_orderbook({}, events, "BTC", MINUTE)
    btc_state["binance"] = json.loads(json.dumps(btc_state["binance"]))
    assert orderbook._take_kept(btc_state, "BTC") == {}
    assert eth_state["binance"]["bids"]


def test_decimal_text_cached_is_decimal_text() -> None:
    """``market.decimal_text`` (from ``str`` where that is plain) and its memoized form give the
    stripped ``format(value, "f")``, for zeros, exponents, long and tiny values, signs, NaN and
    infinities."""
    import random

    from moonstream.jobs.engines import orderbook_frames
    from moonstream.jobs.engines.market import decimal_text

    rng = random.Random(3)
    texts = ["0", "-0", "0.00", "-0.00", "0E+3", "0E-9", "1E+1", "7E+1", "1.0E+1", "100E-2", "-0.000001"]
    texts += ["0.0000001", "1E-7", "123.4500", "5000.00", "Infinity", "-Infinity", "NaN", "-NaN"]
    values = [D(t) for t in texts]
    for _ in range(20_000):
        digits = tuple(int(c) for c in str(rng.randint(0, 10 ** rng.randint(0, 30))))
        values.append(D((rng.randint(0, 1), digits, rng.randint(-30, 10))))

    def plain(value: Decimal) -> str:
        if value == 0:
            return "0"
        text = format(value, "f")
        return text.rstrip("0").rstrip(".") if "." in text else text

    for value in values:
        orderbook_frames._TEXT_MEMO.clear()
        assert decimal_text(value) == plain(value), value
        assert orderbook_frames.decimal_text_cached(value) == plain(value), value
        assert orderbook_frames.decimal_text_cached(value) == plain(value), value  # from the memo
