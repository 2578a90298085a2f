"""The compiled inner loops (moonstream/native_src/) against the Python code they replace.

Each compiled function must give exactly the Python function's result (the same values, decimal
exponents included, and the same side effects on the caches, books and window arrays), or hand the
input back (NotImplemented) before changing anything. The Python paths run with the module switched
off (``native`` monkeypatched to None). The whole pipeline is compared both ways in
tests/integration/test_native_pipeline.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random
import shutil
import sysconfig
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from moonstream import native as native_switch
from moonstream.collector.rawfile import RawRecord
from moonstream.jobs.engines import orderbook, orderbook_binance, orderbook_frames
from moonstream.jobs.engines.market import decimal_text
from moonstream.jobs.engines.orderbook import step_orderbook
from moonstream.jobs.engines.orderbook_binance import BinanceBook
from moonstream.jobs.normalize import (
    InvalidValue,
    MalformedMessage,
    NormalizeStats,
    binance,
    fields,
    normalize_records,
)
from moonstream.native import native, not_built
from tests.conftest import shared_file
from tests.unit.test_native_exact import exact_number
from tests.unit.test_orderbook import MINUTE, T0, _dump, _stream, diff, snap, ticker

needs_native = pytest.mark.skipif(native is None, reason="moonstream._native is not built (no C compiler?)")
DATA = Path(__file__).resolve().parents[1] / "data" / "binance"


def _switch(monkeypatch: pytest.MonkeyPatch, use_native: bool) -> None:
    """Every compiled loop on (as built) or off (the Python code), as MOONSTREAM_NATIVE=0 would."""
    from moonstream.collector import rawfile

    hooks = {
        (binance, "_binance_event"): "binance_event",
        (binance, "_normalize_run"): "normalize_run",
        (fields, "_native_levels"): "cached_levels",
        (orderbook_binance, "_compiled_set_levels"): "set_levels",
        (orderbook_binance, "_compiled_side_state"): "side_state",
        (orderbook_binance, "_compiled_sort_prices"): "sort_prices",
        (orderbook_frames, "_compiled_open_side"): "open_side",
        (orderbook, "_compiled_binance_run"): "binance_run",
        (rawfile, "_compiled_parse_lines"): "parse_lines",
    }
    for (module, attribute), name in hooks.items():
        monkeypatch.setattr(module, attribute, getattr(native, name) if use_native else not_built)


def test_the_extension_is_built_where_a_compiler_is() -> None:
    """``make install`` compiles the extension on a machine with a C compiler (as CI's); the test
    suite must not silently measure the Python fallback there."""
    if os.environ.get(native_switch.ENV_SWITCH) == "0":
        pytest.skip("MOONSTREAM_NATIVE=0: the compiled loops are switched off")
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        pytest.skip(f"no C compiler ({compiler}): the Python fallback runs")
    assert native is not None


# --- cached_levels --------------------------------------------------------------------------------


def _levels_both_ways(raw: Any) -> tuple[Any, Any]:
    """(compiled, Python) results of ``fields.levels`` on ``raw``, each from the same empty caches,
    with the caches' contents after each. An exception counts as its type and text."""
    results = []
    for use_native in (True, False):
        fields._POSITIVE.clear()
        fields._NON_NEGATIVE.clear()
        compiled = fields._native_levels if use_native else not_built
        try:
            found = compiled(raw, fields._POSITIVE, fields._NON_NEGATIVE, *_REMEMBER)
            if found is NotImplemented:
                found = fields._cached_levels(raw)
        except Exception as exc:
            found = ("raised", type(exc).__name__, str(exc))
        results.append(
            (
                _exact(found),
                _exact(sorted(fields._POSITIVE.items())),
                _exact(sorted(fields._NON_NEGATIVE.items())),
            )
        )
    fields._POSITIVE.clear()
    fields._NON_NEGATIVE.clear()
    return results[0], results[1]


_REMEMBER = (fields._remember_price, fields._remember_qty)


def _exact(value: Any) -> Any:
    """Decimals as their repr (so ``1.50`` and ``1.5`` differ), recursively."""
    if isinstance(value, Decimal):
        return repr(value)
    if isinstance(value, tuple | list):
        return type(value)(_exact(v) for v in value)
    return value


def _real_depth_levels() -> list[Any]:
    message = json.loads((DATA / "depth_update.json").read_text())
    data = message.get("data", message)
    return [data["b"], data["a"]]


@needs_native
def test_cached_levels_matches_python_on_real_and_odd_levels() -> None:
    rng = random.Random(5)
    cases: list[Any] = [*_real_depth_levels(), []]
    cases += [
        [["100.5", "1.000"], ["100.50", "0"], ["0.0001", "3"]],  # equal values, other exponents
        [["100", "1"], ["100", "1"]],  # the same texts twice (cache hits)
        [["0", "1"]],  # zero price: not cached, None
        [["-1", "1"]],
        [["1", "-0.5"]],
        [["NaN", "1"]],
        [["1", "Infinity"]],
        [["1e3", "2E-2"]],
        [["abc", "1"]],
        [[1, "1"]],  # a JSON number: left to the full validation (None here)
        [["1", 1.5]],
        [["1", "2", "3"]],  # not a pair
        [["1"]],
        [[["1"], "2"]],  # unhashable
        [["1", {"q": 1}]],
        [("1", "2")],  # tuples unpack too
        ["12"],  # a 2-character string unpacks in Python: left to Python
        [None],
        [["1", "2"], "xy"],
        [["1", None]],
    ]
    for _ in range(200):
        cases.append(
            [
                [
                    rng.choice([f"{rng.randint(1, 99999) / 100:.2f}", f"{rng.randint(1, 9)}", "0.00", "-3"]),
                    rng.choice([f"{rng.randint(0, 999) / 1000:.3f}", "0", "0.000", "x", 7]),
                ]
                for _ in range(rng.randint(0, 12))
            ]
        )
    for raw in cases:
        compiled, python = _levels_both_ways(raw)
        assert compiled == python, raw  # the result, and the entries the caches gained


@needs_native
def test_cached_levels_hands_back_only_shapes_it_does_not_handle() -> None:
    call = native.cached_levels  # type: ignore[union-attr]
    args = ({}, {}, *_REMEMBER)
    assert call(("not", "a list"), *args) is NotImplemented
    assert call(["12"], *args) is NotImplemented
    assert call([["1", "2"], None], *args) is NotImplemented
    assert call([["1", "2"]], *args) == ((Decimal("1"), Decimal("2")),)
    assert call([["1", "2", "3"]], *args) is None


@needs_native
def test_levels_parse_the_same_through_the_normalizer() -> None:
    """``fields.levels`` (compiled cache path, then the full validation) names the same errors."""
    for raw in ([["1", "x"]], [["0", "1"]], [["1"]], [[1, 2]], [["1.5", "2"]]):
        outcomes = []
        for use_native in (True, False):
            fields._POSITIVE.clear()
            fields._NON_NEGATIVE.clear()
            saved = fields._native_levels
            fields._native_levels = saved if use_native else not_built
            try:
                outcomes.append(_exact(fields.levels(raw, "b")))
            except Exception as exc:
                outcomes.append((type(exc).__name__, str(exc)))
            finally:
                fields._native_levels = saved
        assert outcomes[0] == outcomes[1], raw


# --- set_levels -----------------------------------------------------------------------------------


_SIZES = ["0", "0", "1", "1.0", "2.50", "0.001"]
_ODD_SIZES = [
    *_SIZES,
    "1E+3",  # not plain: the compiled window sums take the Decimal route
    "12345678.9012345678",  # 18 digits: at these prices the notional reaches 10**28 (Decimal rounds)
    "1234567890123456789012.5",  # more than 18 digits
    "99999999999999999",  # a bucket of a few of these leaves the exact range
    "0.000000000000000001",
]


def _churn(
    seed: int, use_native: bool, monkeypatch: pytest.MonkeyPatch, sizes: list[str] = _SIZES
) -> list[Any]:
    """A synced book under random diffs: new bests, deletions of the best prices until the kept
    best prices run out, levels outside the window's grid, equal quantities with other exponents."""
    _switch(monkeypatch, use_native)
    rng = random.Random(seed)
    D = Decimal
    bids = [(f"{1000 - k / 10:.1f}", "1") for k in range(1, 400)]
    asks = [(f"{1000 + k / 10:.1f}", "1") for k in range(1, 400)]
    state: dict[str, Any] = {}
    events: list[Any] = [snap(10, 0.0, bids, asks), diff(9, 11, 8, 0.1)]
    dumps = []
    u = 11
    model = {D(p): D(q) for p, q in bids}  # the bids the book holds
    for minute in range(3):
        for k in range(250):
            t_s = minute * 60 + k * 0.2

            def side(center: int, sign: int) -> list[tuple[str, str]]:
                out = []
                for _ in range(rng.randint(0, 10)):
                    offset = rng.choice([rng.randint(1, 30), rng.randint(1, 3000)])
                    price = D(center + sign * offset) / 10
                    out.append((str(price), rng.choice(sizes)))
                return out

            if k % 50 == 25:
                # the best 2 x TOPS_KEPT bids deleted, then a deep one added: the kept best prices
                # run out within the message and are rebuilt before the next level
                best = sorted(model, reverse=True)[: 2 * orderbook_binance.TOPS_KEPT]
                b = [(str(p), "0") for p in best] + [("500.0", "1"), *side(10000, -1)]
            else:
                b = side(10000, -1)
            for p, q in b:
                if D(q):
                    model[D(p)] = D(q)
                else:
                    model.pop(D(p), None)
            events.append(diff(u + 1, u + 2, u, t_s, b, side(10000, 1)))
            u += 2
        state, out = step_orderbook(state, events, "BTC", MINUTE + minute)
        events = []
        dumps.append(_dump(state, out))
        kept = orderbook._kept.get("BTC")
        if kept is not None:
            dumps.append(
                _exact([[list(side.items()) for side in sides] for *_, sides in kept.levels.values()])
            )
    return dumps


@needs_native
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_set_levels_gives_the_python_books_frames_and_states(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    orderbook.clear_kept_books()
    compiled = _churn(seed, True, monkeypatch)
    orderbook.clear_kept_books()
    python = _churn(seed, False, monkeypatch)
    orderbook.clear_kept_books()
    assert compiled == python


@needs_native
@pytest.mark.parametrize("seed", [4, 5])
def test_window_sums_past_the_exact_range_give_the_python_frames(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sizes the compiled window loop cannot keep as exact sums (an exponent, more than 18 digits,
    notionals and bucket sums reaching 10**28, where Decimal rounds): it goes on in Decimal from the
    exact value, and the frames, books and states are the Python loop's."""
    orderbook.clear_kept_books()
    compiled = _churn(seed, True, monkeypatch, _ODD_SIZES)
    orderbook.clear_kept_books()
    python = _churn(seed, False, monkeypatch, _ODD_SIZES)
    orderbook.clear_kept_books()
    assert compiled == python


@needs_native
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_set_levels_window_values_are_the_python_decimals(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The window's bucket values after random changes, compiled and in Python, as exact numbers.
    Prices of 18 digits times sizes of up to 18 reach 29-36 digits (Decimal rounds the notional to
    28), and sums of 28-digit notionals cross 10**28 (Decimal rounds the sum): the compiled loop must
    then go on from the rounded Decimal, as the Python loop does; a float would hide a 28th digit."""
    D = Decimal
    sizes = ["1", "2.50", "0.001", "1234.5678901", "9999.9999999", "12345678.9012345678", "1E+3", "0"]
    results = []
    for use_native in (True, False):
        _switch(monkeypatch, use_native)
        rng = random.Random(seed)
        bids = {D(1000) - D(k) / 10: D(1) for k in range(1, 200)}
        asks = {D(1000) + D(k) / 10: D(1) for k in range(1, 200)}
        window = orderbook_frames.WindowAccumulator("SOL", 0, 10**12)  # buckets of 0.10
        window.open_book(0, bids, asks, D(1000))
        book = BinanceBook("SOL", status="synced", bids=dict(bids), asks=dict(asks))
        book.window = window

        def price(sign: int, rng: random.Random = rng) -> Decimal:
            tail = D("0.00000000000001") * rng.choice((0, 0, 1, 7))  # 18 digits when not 0
            return D(1000) + sign * (D(rng.randint(1, 300)) / 10 + tail)

        for k in range(1, 400):
            for side, sign in ((0, -1), (1, 1)):
                levels = tuple((price(sign), D(rng.choice(sizes))) for _ in range(rng.randint(1, 6)))
                book._set_levels(k * 10**6 * rng.choice((1, 1, 7)), side, levels)
        results.append(_bucket_values(window._cur))
        kinds = {type(v).__name__ for side in window._cur for v in side}
        assert "Decimal" in kinds and ("ExactSum" in kinds) == use_native
    assert results[0] == results[1]


def _steps_both_ways(stream: list[list[Any]], monkeypatch: pytest.MonkeyPatch) -> list[list[Any]]:
    """The dumped states and outputs of ``step_orderbook`` over ``stream``'s minutes, from an empty
    state: [compiled, Python]."""
    results = []
    for use_native in (True, False):
        _switch(monkeypatch, use_native)
        orderbook.clear_kept_books()
        state: dict[str, Any] = {}
        dumps = []
        for m, events in enumerate(stream):
            state, out = step_orderbook(state, events, "BTC", MINUTE + m)
            dumps.append(_dump(state, out))
        results.append(dumps)
    orderbook.clear_kept_books()
    return results


@needs_native
@pytest.mark.parametrize("exchanges", [("binance",), ("binance", "bybit", "okx")])
def test_orderbook_steps_are_identical_without_the_extension(
    exchanges: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The order-book tests' random traffic (gaps, resyncs, long decimals that round)."""
    stream = _stream(11, exchanges)
    results = _steps_both_ways(stream, monkeypatch)
    assert results[0] == results[1]


@needs_native
def test_set_levels_hands_back_shapes_it_does_not_handle() -> None:
    """A list of levels, or a level that is a list, goes to the Python loop untouched."""
    book = BinanceBook("BTC")
    zero = Decimal(0)
    args = (0, 1, None, orderbook_binance.index_miss, book._side_tops, 128, zero)
    call = native.set_levels  # type: ignore[union-attr]
    assert call(book.bids, [], [(Decimal(1), Decimal(1))], *args) is NotImplemented
    assert call(book.bids, [], ((Decimal(1), Decimal(1)), [Decimal(2), Decimal(1)]), *args) is NotImplemented
    assert book.bids == {}
    tops: list[Decimal] = []
    assert call(book.bids, tops, ((Decimal(1), Decimal(1)), (Decimal(2), Decimal(0))), *args) is None
    assert book.bids == {Decimal(1): Decimal(1)} and tops == [Decimal(1)]


# --- binance_run, open_side, side_state -----------------------------------------------------------


def _run_stream(seed: int) -> list[list[Any]]:
    """Three minutes of Binance traffic for the event loop: chained diffs (some with an empty side,
    some with list levels the compiled loop hands back), bookTickers after their diff (equal and
    different), before it (pending) and long past it, other symbols and exchanges, a trade, diffs
    out of time order and past the minute's end, a gap and its resync, and a pause longer than
    STALE_NS inside a window."""
    from moonstream.jobs.events import BookDelta, BookSnapshot, Trade

    rng = random.Random(seed)
    D = Decimal

    def levels(lo: int, hi: int) -> list[tuple[str, str]]:
        return [
            (f"{rng.randint(lo, hi) / 10:.1f}", rng.choice(["0", "0", "1", "1.0", "2.50", "0.3333"]))
            for _ in range(rng.randint(0, 6))
        ]

    minutes: list[list[Any]] = []
    u = 100
    for m in range(3):
        events: list[Any] = []
        if m == 0:
            bids = [(f"{1000 - k / 10:.1f}", "1") for k in range(1, 300)]
            asks = [(f"{1000 + k / 10:.1f}", "1") for k in range(1, 300)]
            events += [diff(99, 101, 98, 0.05), snap(100, 0.1, bids, asks)]
            u = 101
        t_s = m * 60.0 + 0.2
        while t_s < (m + 1) * 60.0 + 2:
            if m == 1 and 20 < t_s < 20.5 + 60:
                t_s += 12.0  # no diff for longer than STALE_NS: the book goes stale in the window
            b, a = levels(9000, 9999), levels(10001, 11000)
            gap = rng.random() < 0.03  # now and then a diff whose pu is not the last u
            step = 4 if gap else 1
            event = diff(u + step - 1, u + step, u + 2 if gap else u, t_s - rng.choice([0.0, 0.0, 0.3]), b, a)
            if rng.random() < 0.05:
                event = dataclasses.replace(event, bids=[list(level) for level in event.bids])
            if rng.random() < 0.1:  # the bookTicker before its diff
                events.append(ticker(u + step, rng.choice(["999.9", "1000"]), "1000.1", t_s))
            events.append(event)
            u += step
            roll = rng.random()
            if roll < 0.4:
                bid = sorted(event.bids)[-1][0] if event.bids else D("999.9")
                events.append(ticker(u, str(bid), "1000.1", t_s))
            elif roll < 0.45:
                events.append(ticker(u - 200, "1", "2", t_s))  # long past: not in `recent`
            elif roll < 0.5:
                events.append(dataclasses.replace(event, symbol="ETH"))
            elif roll < 0.55:
                events.append(
                    Trade("binance", "BTC", 1, T0, 1, D(1000), D(1), "buy", False, None, None, False)
                )
            elif roll < 0.58:
                events.append(BookDelta("bybit", "BTC", 1, T0, 50, 7, 6, None, None, D(1), (), ()))
            elif roll < 0.6:
                events.append(BookSnapshot("okx", "ETH", 1, T0, 50, 7, None, None, D(1), (), ()))
            if gap and rng.random() < 0.7:
                events.append(snap(u - 1, t_s, bids, asks))  # a resync
            t_s += rng.choice([0.05, 0.1, 0.1, 0.25, 1.5])
        minutes.append(events)
    return minutes


@needs_native
@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_binance_run_gives_the_python_loops_states_and_frames(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    import logging

    monkeypatch.setattr(logging.getLogger("moonstream.jobs.engines.orderbook_binance"), "disabled", True)
    stream = _run_stream(seed)
    results = _steps_both_ways(stream, monkeypatch)
    assert results[0] == results[1]
    stats = [json.loads(d[1]) for d in results[0]]
    seen = {k: sum(s["this_minute"][k] for s in stats) for k in orderbook.COUNTERS}
    assert seen["gaps"] and seen["integrity_mismatches"] and seen["integrity_compared"] > 100
    assert any(s["frames"]["emitted"] for s in stats)


@needs_native
def test_binance_run_hands_back_what_it_does_not_take() -> None:
    """Events that are not a list or tuple, another book class, or times beyond 64 bits: NotImplemented;
    a snapshot or an unsynced book's diff ends the run at that event, with the clock unchanged."""
    run = native.binance_run  # type: ignore[union-attr]
    context = orderbook._RUN_CONTEXT
    book = BinanceBook("BTC")
    events = [diff(1, 2, 0, 0.1), snap(5, 0.2, [("1", "1")], [("2", "1")])]
    assert run(iter(events), 0, "BTC", book, T0, T0 + 60 * 10**9, T0, context) is NotImplemented
    assert run(events, 0, "BTC", object(), T0, T0 + 60 * 10**9, T0, context) is NotImplemented
    assert run(events, 0, "BTC", book, 2**70, 2**71, 2**71, context) is NotImplemented
    assert run(events, 0, "BTC", book, T0, T0 + 60 * 10**9, T0 + 30 * 10**9, context) == (0, T0)
    assert run(events, 1, "BTC", book, T0, T0 + 60 * 10**9, T0 + 30 * 10**9, context) == (1, T0)
    assert run(events, 0, "ETH", book, T0, T0 + 60 * 10**9, T0 + 30 * 10**9, context) == (2, T0)
    odd_time = [dataclasses.replace(events[0], ts_ns=float(T0))]
    assert run(odd_time, 0, "BTC", book, T0, T0 + 60 * 10**9, T0 + 30 * 10**9, context) == (0, T0)
    assert book == BinanceBook("BTC")


def _bucket_values(sides: Any) -> list[list[Any]]:
    """A window's bucket values as what the engine reads of them: the number (an ExactSum as its
    Decimal, compared by value), its float and its truth; None stays None."""

    def value(v: Any) -> Any:
        return None if v is None else (exact_number(v), float(v).hex(), bool(v))

    return [[value(v) for v in side] for side in sides]


@needs_native
@pytest.mark.parametrize("seed", [1, 2])
def test_open_side_gives_the_python_loops_buckets(seed: int) -> None:
    """Bucket sums (as numbers, floats and truth: the compiled loop keeps exact sums as ExactSums, the
    Python loop as Decimals, and computes plain prices' buckets without the index memo), levels off
    the grid."""
    rng = random.Random(seed)
    levels = {
        Decimal(rng.randint(1, 3000)) / 10: Decimal(rng.choice(["1", "1.0", "2.50", "0.3333", "7E+1"]))
        for _ in range(400)
    }
    results = []
    for use_native in (True, False):
        window = orderbook_frames.WindowAccumulator("XYZ", 0, 10**9)
        orderbook_frames._INDEX_MEMO.clear()
        compiled = native.open_side if use_native else not_built  # type: ignore[union-attr]
        original = orderbook_frames._compiled_open_side
        orderbook_frames._compiled_open_side = compiled
        try:
            window.open_book(5, levels, dict(list(levels.items())[:50]), Decimal(150))
        finally:
            orderbook_frames._compiled_open_side = original
        assert window.grid is not None
        memo = orderbook_frames.price_index(window.grid.step)
        assert all(i == int(p // window.grid.step) for p, i in memo.items())  # a cache, filled or not
        results.append((_bucket_values(window._cur), window._last))
        kinds = {type(v).__name__ for side in window._cur for v in side}
        assert kinds == ({"ExactSum", "Decimal", "NoneType"} if use_native else {"Decimal", "NoneType"})
    assert results[0] == results[1]
    call = native.open_side  # type: ignore[union-attr]
    assert (
        call(list(levels.items()), {}, Decimal(1), 0, 5, orderbook_frames.index_miss, Decimal(0))
        is NotImplemented
    )


class _Dec(Decimal):
    """A Decimal subclass: side_state's address table takes exact decimals only."""


def _side_state_both_ways(books: list[dict[Any, Any]]) -> list[Any]:
    """(compiled, Python) results of ``_side_state`` on each book, both sides: the dicts (order, keys
    and values, exponents included) and the rows."""
    results = []
    for use_native in (True, False):
        orderbook_frames._TEXT_MEMO.clear()
        for price in list(books[0])[:100]:
            orderbook_frames.decimal_text_cached(price)  # some hits, some misses
        compiled = native.side_state if use_native else not_built  # type: ignore[union-attr]
        out = []
        for book in books:
            for descending in (True, False):
                done = compiled(
                    book, descending, orderbook_frames._TEXT_MEMO, orderbook_frames.decimal_text_cached
                )
                if done is NotImplemented:
                    side = orderbook_binance._side_sorted(book, descending)
                    done = side, orderbook_binance._rows(side.items())
                out.append((_exact(repr(list(done[0].items()))), done[1]))
        # The compiled loop fills its own table, not the memo, for plain texts: the memo stays exact.
        assert all(decimal_text(k) == v for k, v in orderbook_frames._TEXT_MEMO.items())
        results.append(out)
    return results


@needs_native
def test_side_state_gives_the_python_rows_and_dicts() -> None:
    """Both sides' dicts (order, keys, values) and rows: texts with trailing zeros, exponents, zeros
    and NaN, the same decimal twice (the address table's hit) and equal values as other objects, a
    Decimal subclass (the memo route), and then the same book again."""
    rng = random.Random(5)
    texts = ["1", "1.0", "2.50", "0E-8", "7E+1", "0.1000", "1.500", "100", "1E+2", "0.000", "-0", "5E-7"]
    texts += ["1.0E+3", "-0.0", "Infinity", "NaN", "-1.2300", "10.0"]
    shared = Decimal("3.1400")
    book: dict[Any, Any] = {
        Decimal(rng.randint(1, 10**6)) / 100: Decimal(rng.choice(texts)) for _ in range(500)
    }
    book.update({Decimal(f"{k}.00"): shared for k in range(20)})  # one object, many levels
    book.update({Decimal(t) + 10**7: Decimal(t) for t in texts if t[-1].isdigit()})  # as keys too
    book[Decimal("12345.60")] = _Dec("1.50")
    book[_Dec("777.70")] = Decimal("2.0")
    results = _side_state_both_ways([book, book, dict(book)])
    assert results[0] == results[1]
    rows = dict(results[0][1][1])
    assert rows["12345.6"] == "1.5" and rows["1"] == "3.14" and rows["10001000"] == "1000"
    assert rows["10000001.5"] == "1.5" and rows["10000000.0000005"] == "0.0000005"
    assert native.side_state(list(book), True, {}, str) is NotImplemented  # type: ignore[union-attr]
    assert native.side_state(book, True, list({}), str) is NotImplemented  # type: ignore[union-attr]


@needs_native
def test_side_state_texts_past_the_address_tables_limit() -> None:
    """More distinct decimals than the address table holds (it empties when full), each book side
    twice: fresh objects (misses, clears) then the same objects again, and equal values as new
    objects."""
    rng = random.Random(6)
    book = {
        Decimal(f"{k}.{rng.randint(0, 99):02d}0"): Decimal(f"{rng.randint(0, 10**6)}.{rng.randint(0, 999)}00")
        for k in range(1, 45_000)
    }
    copy = {Decimal(str(p)): Decimal(str(q)) for p, q in book.items()}
    results = _side_state_both_ways([book, book, copy, book])
    assert results[0] == results[1]


# --- binance_event --------------------------------------------------------------------------------

_ODD_VALUES: list[Any] = [None, True, False, -1, 0, 2**70, 1.5, "1", "0", "-1", "NaN", "abc", "", [], {}]
_FIXTURES = [  # (channel, one real message)
    ("ws:depth", "depth_update.json"),
    ("ws:bookTicker", "book_ticker.json"),
    ("ws:aggTrade", "agg_trade.json"),
    ("ws:trade", "trade.json"),
    ("ws:trade", "trade_insurance_fund.json"),
    ("ws:markPrice", "mark_price.json"),
]


def _event_or_error(record: RawRecord, symbol: str, use_native: bool, monkeypatch: pytest.MonkeyPatch) -> Any:
    _switch(monkeypatch, use_native)
    try:
        return [
            _exact([(f.name, getattr(e, f.name)) for f in dataclasses.fields(e)])
            for e in binance.normalize(record, symbol)
        ]
    except Exception as exc:
        return (type(exc).__name__, str(exc))


def _variants(message: dict[str, Any]) -> list[Any]:
    """The message, and copies with each field of its event object missing or replaced by an odd
    value, the envelope removed or broken."""
    data = message["data"]
    out: list[Any] = [message, data, {"stream": message["stream"]}, {"data": data}, [message], "text", None]
    out.append({"stream": message["stream"], "data": [data]})
    for key in data:
        out.append({**message, "data": {k: v for k, v in data.items() if k != key}})
        for value in _ODD_VALUES:
            out.append({**message, "data": {**data, key: value}})
    out.append({**message, "data": {**data, "s": "ETHUSDT"}})
    return out


@needs_native
@pytest.mark.parametrize(("channel", "name"), _FIXTURES)
def test_binance_event_matches_the_python_parsers(
    channel: str, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fixture message and every broken variant give the Python parser's event or its error."""
    message = json.loads((DATA / name).read_text())
    symbol = message["data"]["s"].removesuffix("USDT")
    variants = _variants(message)
    parsed = 0
    for variant in variants:
        record = RawRecord(1, channel, json.dumps(variant).encode(), "binance", "test")
        compiled = _event_or_error(record, symbol, True, monkeypatch)
        python = _event_or_error(record, symbol, False, monkeypatch)
        assert compiled == python, variant
        parsed += isinstance(python, list)
    assert 3 < parsed < len(variants) - 20  # both outcomes were exercised


@needs_native
def test_binance_event_parses_well_formed_messages_itself() -> None:
    """The fixtures take the compiled path (a hand-back would make the comparison above vacuous)."""
    for channel, name in _FIXTURES:
        message = json.loads((DATA / name).read_text())
        symbol = message["data"]["s"].removesuffix("USDT")
        kind = binance._FAST_KINDS[channel]
        record = RawRecord(1, channel, json.dumps(message).encode(), "binance", "test")
        event = native.binance_event(  # type: ignore[union-attr]
            kind, message, symbol, binance._instrument_of(symbol), 1, binance._FAST_CONTEXT
        )
        assert event is not NotImplemented and event == binance.normalize(record, symbol)[0]


_PLAIN_TEXTS = ["0.00120", "43251.1", "7", "500.500", "0", "0.000", "12345678901234567890.123"]
_OTHER_TEXTS = ["1e5", "1E-3", "-1", "-0", ".5", "5.", "1_0", " 1", "+1", "\u0663", "NaN", "Infinity", "0x10"]
_OTHER_TEXTS += [""]


@needs_native
def test_plain_number_texts_skip_remember_and_fill_its_cache() -> None:
    """A price or size text of plain digits that a number cache lacks becomes Decimal(text) in the
    compiled parsers without calling the remember function, and lands in that cache as remember would
    store it (an all-zero price still goes to remember, which refuses it); any other text goes to
    remember. Either way the event, or the hand-back, is the Python parser's (exponents included)."""
    asked: list[str] = []

    def spy(remember: Any) -> Any:
        def call(text: str) -> Any:
            asked.append(text)
            return remember(text)

        return call

    context = list(binance._FAST_CONTEXT)
    context[2], context[3] = spy(context[2]), spy(context[3])  # CTX_REMEMBER_PRICE, CTX_REMEMBER_QTY
    message = json.loads((DATA / "book_ticker.json").read_text())
    zeros = "0" * random.Random().randrange(8, 40)  # leading zeros: texts no earlier test cached
    for text in [zeros + t for t in _PLAIN_TEXTS] + _OTHER_TEXTS:
        for key, cache in (("b", fields._POSITIVE), ("B", fields._NON_NEGATIVE)):
            variant = {**message, "data": {**message["data"], key: text}}
            cached_before = text in cache
            asked.clear()
            event = native.binance_event(  # type: ignore[union-attr]
                binance._FAST_KINDS["ws:bookTicker"], variant, "BTC", "BTCUSDT", 1, tuple(context)
            )
            try:
                expected: Any = binance.parse_book_ticker(variant, "BTC", 1)
            except Exception:
                expected = NotImplemented
            assert repr(event) == repr(expected), (key, text)
            if not text.startswith(zeros):
                assert asked == ([] if cached_before else [text]), (key, text)
            elif key == "b" and Decimal(text) == 0:
                assert asked == [text] and text not in cache
            else:
                assert asked == [] and repr(cache[text]) == repr(Decimal(text)), (key, text)


def _mark_event(message: Any) -> Any:
    return native.binance_event(  # type: ignore[union-attr]
        binance._FAST_KINDS["ws:markPrice"], message, "BTC", "BTCUSDT", 1, binance._FAST_CONTEXT
    )


@needs_native
def test_binance_event_parses_mark_prices_like_parse_mark_price() -> None:
    """The real markPrice message (parse_mark_price's docstring sample) and copies with a negative,
    zero or exponent funding rate give parse_mark_price's MarkPrice, decimal exponents and types
    included (the funding rate a Decimal, the times ints); a missing field, a price that is not a
    positive finite number, a rate that is not finite, another event type or symbol give NotImplemented."""
    message = json.loads((DATA / "mark_price.json").read_text())
    data = message["data"]
    good = [message, data]
    for rate in ("-0.00012345", "-0.00002754", "0.00000000", "-0", "1E-5"):
        good.append({**message, "data": {**data, "r": rate}})
    for variant in good:
        expected = binance.parse_mark_price(variant, "BTC", 1)
        event = _mark_event(variant)
        assert event == expected and _exact(repr(event)) == _exact(repr(expected))
        assert [type(getattr(event, f.name)) for f in dataclasses.fields(event)] == [
            type(getattr(expected, f.name)) for f in dataclasses.fields(expected)
        ]
    negative = _mark_event(good[2])
    assert type(negative.funding_rate) is Decimal and negative.funding_rate == Decimal("-0.00012345")
    assert (negative.ts_ns, negative.next_funding_ns) == (1680652701000 * 10**6, 1680652800000 * 10**6)

    bad: list[Any] = [{**message, "data": {k: v for k, v in data.items() if k != key}} for key in "sEpirT"]
    for key in "pi":
        bad += [{**message, "data": {**data, key: value}} for value in ("NaN", "0", "-1", "Infinity")]
    bad += [{**message, "data": {**data, "r": value}} for value in ("NaN", "-Infinity", "abc", -1, 0.5, True)]
    bad += [{**message, "data": {**data, "E": value}} for value in ("1680652701000", -1, True, 1.5)]
    bad += [
        {**message, "data": {**data, "e": "bookTicker"}},
        {**message, "data": {**data, "s": "ETHUSDT"}},
        {**message, "data": [data]},
        [message],
    ]
    for variant in bad:
        assert _mark_event(variant) is NotImplemented, variant
    with pytest.raises(MalformedMessage, match="missing field 'i'"):
        binance.parse_mark_price(bad[3], "BTC", 1)
    with pytest.raises(InvalidValue, match="p='NaN'"):
        binance.parse_mark_price(bad[6], "BTC", 1)


@pytest.mark.shared_data
@needs_native
def test_real_recordings_normalize_identically_without_the_extension(monkeypatch: pytest.MonkeyPatch) -> None:
    """A real hftbacktest day of BTC (depth @0ms, trades, bookTickers) through normalize_records."""
    from tests.unit.test_normalize_binance import _hftbacktest_records

    records = _hftbacktest_records(shared_file("hftbacktest-binance-usdm/btcusdt_20240718.gz"), 1)
    dumps = []
    for use_native in (True, False):
        _switch(monkeypatch, use_native)
        stats = NormalizeStats()
        events = normalize_records(records, "BTC", stats)
        dumps.append(([repr(e) for e in events], stats.as_dict()))
    assert len(dumps[0][0]) > 10_000
    assert dumps[0] == dumps[1]


# --- parse_lines ----------------------------------------------------------------------------------


def _odd_lines(rng: random.Random) -> list[Any]:
    good = [
        b'1721347021080832061 ws:depth {"stream":"btcusdt@depth@0ms","data":{}}',
        b'1721347021080832062 ws:bookTicker {"u":1, "s": "a b"}',
        b"0001 ws:aggTrade x",
        b"12345678901234567890 ws:depth y",  # 20 digits: above 2**64, still an int
        b"5 ws:depth ",  # empty payload
    ]
    odd = [
        b"",
        b"123",
        b"123 ws:depth",
        b"123456789012345678901 ws:depth x",  # 21 digits
        b"-1 ws:depth x",
        b"+1 ws:depth x",
        b"1.5 ws:depth x",
        b"\xd9\xa3 ws:depth x",  # not ASCII digits
        b"12  ws:depth x",  # two spaces: an empty tag
        b"12 ws:depth x\ry",
        b"12 ws:depth x\ny",
        b"12 ws:Depth x",
        b"12 w\xffs x",
        b"12 conn:open {}",
        b"12 rest:oi {}",
        "12 ws:depth str",
        bytearray(b"12 ws:depth x"),
    ]
    return [rng.choice(good + odd) for _ in range(rng.randint(0, 60))]


@needs_native
def test_parse_lines_matches_python_on_real_and_odd_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    from moonstream.collector import rawfile

    rng = random.Random(9)
    real = (DATA / "hftbacktest_btcusdt_20240718_ns.txt").read_bytes().splitlines()
    cases = [[b"%d ws:depth %s" % (1_721_347_021_000_000_000 + k, line) for k, line in enumerate(real)]]
    cases += [_odd_lines(rng) for _ in range(300)]
    fast_lines = 0
    for lines in cases:
        results = []
        for use_native in (True, False):
            fn = native.parse_lines if use_native else not_built  # type: ignore[union-attr]
            monkeypatch.setattr(rawfile, "_compiled_parse_lines", fn)
            try:
                records, malformed = rawfile.parse_lines(lines, "binance", "c1")
                results.append(([(type(r.recv_ns), *dataclasses.astuple(r)) for r in records], malformed))
            except Exception as exc:
                results.append((type(exc).__name__, str(exc)))
        assert results[0] == results[1], lines
        fast_lines += len(results[0][0])
    assert fast_lines > 1000


@needs_native
def test_parse_lines_hands_back_the_first_line_it_does_not_take() -> None:
    from moonstream.collector.rawfile import RawRecord

    records: list[Any] = []
    tags = {b"ws:depth": "ws:depth"}
    lines = [b"1 ws:depth a", b"2 ws:depth b", b"3 ws:other c", b"4 ws:depth d"]
    call = native.parse_lines  # type: ignore[union-attr]
    assert call(lines, 0, tags, "binance", "c1", RawRecord, records) == 2
    assert records == [
        RawRecord(1, "ws:depth", b"a", "binance", "c1"),
        RawRecord(2, "ws:depth", b"b", "binance", "c1"),
    ]
    assert call(lines, 3, tags, "binance", "c1", RawRecord, records) == 4
    assert records[-1] == RawRecord(4, "ws:depth", b"d", "binance", "c1")


@needs_native
def test_the_compiled_loops_free_what_they_allocate(monkeypatch: pytest.MonkeyPatch) -> None:
    """Repeating parsed messages (good and broken), raw lines and book steps grows the traced heap
    no more with the compiled loops than without them: a missing reference-count release in C would
    leave each call's objects behind (tens of kB over these rounds). Both paths grow by a few hundred
    bytes here once their caches are full."""
    import gc
    import logging
    import tracemalloc

    from moonstream.collector import rawfile

    monkeypatch.setattr(logging.getLogger("moonstream.jobs.engines.orderbook_binance"), "disabled", True)
    monkeypatch.setattr(logging.getLogger("moonstream.jobs.normalize"), "disabled", True)
    records = []
    for channel, name in _FIXTURES:
        message = json.loads((DATA / name).read_text())
        symbol = message["data"]["s"].removesuffix("USDT")
        for variant in _variants(message)[::7]:
            records.append((RawRecord(1, channel, json.dumps(variant).encode(), "binance", "t"), symbol))
    lines = [b"1 ws:depth abc", b"2 ws:depth def", b"x bad", b"3 ws:depth g\rh"] * 20
    stream = _stream(11, ("binance",), minutes=2)

    rng = random.Random(4)
    depth = [RawRecord(k, "ws:depth", p, "binance", "c1") for k, p in enumerate(_compact_depth_payloads())]
    depth += [RawRecord(9, "ws:depth", _mutated(depth[0].payload, rng), "binance", "c1") for _ in range(30)]

    plain = {Decimal("1.5"): Decimal("2"), Decimal("0.25"): Decimal("1")}  # an ExactSum
    odd = {**plain, Decimal("1E+2"): Decimal("3")}  # turned into a Decimal by the exponent form
    big = {Decimal("123456789.123456789"): Decimal("98765432.1234567891")}  # past 10**28: Decimal
    descending = [Decimal(k) / 10 for k in range(50, 0, -1)]

    def exact_sums() -> None:
        """ExactSums made, read, added, compared and printed; prices sorted and refused."""
        for levels in (plain, odd, big):
            (value,) = native.open_side(
                levels, {}, Decimal("1E+30"), 0, 1, orderbook_frames.index_miss, Decimal(0)
            )  # type: ignore[union-attr]
            _ = (float(value), bool(value), value + Decimal(1), Decimal(1) + value, value == 3, repr(value))
        prices = list(descending)  # the same decimals each round (the address table keeps new ones)
        native.sort_prices(prices, False)  # type: ignore[union-attr]
        native.sort_prices([*prices, Decimal("1E+2")], True)  # type: ignore[union-attr]

    def work() -> None:
        for record, symbol in records:
            with contextlib.suppress(Exception):
                binance.normalize(record, symbol)
        normalize_records(depth, "BTC", NormalizeStats())
        rawfile.parse_lines(lines, "binance", "c1")
        orderbook.clear_kept_books()
        state: dict[str, Any] = {}
        for m, events in enumerate(stream):
            state, _ = step_orderbook(state, events, "BTC", MINUTE + m)

    def grown(use_native: bool) -> int:
        _switch(monkeypatch, use_native)
        tracemalloc.start()
        try:
            for _ in range(30):
                work()  # fills the caches and memos, and replaces untraced objects by traced ones
            gc.collect()  # what earlier tests left in cycles is freed now, not inside the window
            before = tracemalloc.get_traced_memory()[0]
            for _ in range(20):
                work()
            gc.collect()
            return int(tracemalloc.get_traced_memory()[0] - before)
        finally:
            tracemalloc.stop()

    python = grown(False)
    assert grown(True) < python + 5_000, python
    tracemalloc.start()  # exact.c alone: a missing release would leave an object behind each round
    try:
        exact_sums()
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(2_000):
            exact_sums()
        gc.collect()
        assert tracemalloc.get_traced_memory()[0] - before < 20_000  # one object a round: 64 kB+
    finally:
        tracemalloc.stop()


# --- normalize_run --------------------------------------------------------------------------------


def _mixed_records(rng: random.Random) -> list[RawRecord]:
    """Real messages of every fast channel (and broken variants), mark prices, connection lines,
    another exchange's records, exact duplicates and re-sent copies, shuffled."""
    pool: list[RawRecord] = []
    for channel, name in _FIXTURES:
        message = json.loads((DATA / name).read_text())
        message["data"]["s"] = "BTCUSDT"
        for k, variant in enumerate(_variants(message)[:40]):
            pool.append(RawRecord(1000 + k, channel, json.dumps(variant).encode(), "binance", "c1"))
    mark = (DATA / "mark_price.json").read_bytes()
    pool += [
        RawRecord(5, "ws:markPrice", mark, "binance", "c1"),
        RawRecord(6, "conn:open", b"{}", "binance", "c2"),
        RawRecord(7, "ws:depth", b"not json", "binance", "c1"),
        RawRecord(8, "ws:unknown", b"{}", "binance", "c1"),
        RawRecord(9, "ws:trades", b"{}", "okx", "c1"),
    ]
    records = [rng.choice(pool) for _ in range(400)]
    records += [dataclasses.replace(r, collector="c2") for r in records[:50]]  # a second collector's copies
    rng.shuffle(records)
    return records


@needs_native
@pytest.mark.parametrize("seed", [1, 2])
def test_normalize_run_gives_the_python_loops_events_and_counts(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    import logging

    monkeypatch.setattr(logging.getLogger("moonstream.jobs.normalize"), "disabled", True)
    records = _mixed_records(random.Random(seed))
    results = []
    for use_native in (True, False):
        _switch(monkeypatch, use_native)
        stats = NormalizeStats()
        events = normalize_records(records, "BTC", stats)
        results.append(([_exact(repr(e)) for e in events], stats.as_dict()))
    assert results[0] == results[1]
    assert results[0][1]["duplicates"] > 20 and results[0][1]["errors"]

    _switch(monkeypatch, True)
    run = binance.compiled_run("BTC")
    assert run is not None
    wellformed = []
    for channel, name in _FIXTURES:
        message = json.loads((DATA / name).read_text())
        message["data"]["s"] = "BTCUSDT"
        wellformed.append(RawRecord(1, channel, json.dumps(message).encode(), "binance", "c1"))
    out: list[Any] = []
    assert run(wellformed * 2, 0, set(), out) == (2 * len(wellformed), len(wellformed))  # all taken here
    assert len(out) == len(wellformed)


# --- depth_event (a depth message straight from its bytes) ----------------------------------------

_BYTE_EDITS = b'",[]{}: 07-.e\\\x80\n'  # structure, digits, signs, an escape, a non-ASCII byte


def _mutated(payload: bytes, rng: random.Random) -> bytes:
    """``payload`` with one to three random byte edits (deleted, doubled, replaced or inserted)."""
    data = bytearray(payload)
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(data))
        edit = rng.randrange(4)
        if edit == 0:
            del data[i]
        elif edit == 1:
            data[i:i] = data[i : i + 1]
        elif edit == 2:
            data[i] = rng.choice(_BYTE_EDITS)
        else:
            data.insert(i, rng.choice(_BYTE_EDITS))
    return bytes(data)


def _compact_depth_payloads() -> list[bytes]:
    """The real fixture diff (as recorded: compact), its bare event object, and an empty side."""
    raw = (DATA / "depth_update.json").read_bytes().strip()
    message = json.loads(raw)
    compact = json.dumps(message, separators=(",", ":")).encode()
    assert compact == raw  # the recording is Binance's compact text
    bare = json.dumps(message["data"], separators=(",", ":")).encode()
    empty = json.dumps({**message, "data": {**message["data"], "a": []}}, separators=(",", ":")).encode()
    return [raw, bare, empty]


@needs_native
def test_depth_event_reads_binances_compact_text_like_orjson() -> None:
    message = json.loads((DATA / "depth_update.json").read_text())
    record = RawRecord(1, "ws:depth", json.dumps(message).encode(), "binance", "c1")
    expected = binance.normalize(record, "BTC")[0]
    instrument = binance._instrument_of("BTC")
    for payload in _compact_depth_payloads()[:2]:
        event = native.depth_event(payload, "BTC", instrument, 1, binance._FAST_CONTEXT)  # type: ignore[union-attr]
        assert event == expected and _exact(repr(event)) == _exact(repr(expected))
    spaced = json.dumps(message).encode()  # valid JSON, another shape: the general path decides
    assert native.depth_event(spaced, "BTC", instrument, 1, binance._FAST_CONTEXT) is NotImplemented  # type: ignore[union-attr]


@needs_native
def test_depth_event_on_mutated_bytes_matches_the_python_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """3,000 byte-level edits of real depth text (truncations, stray quotes, leading zeros, signs,
    escapes, spaces, invalid UTF-8) through normalize_records both ways: the same events, errors and
    counts (records the compact reader refuses go through orjson, as without the extension)."""
    import logging

    monkeypatch.setattr(logging.getLogger("moonstream.jobs.normalize"), "disabled", True)
    rng = random.Random(21)
    payloads = _compact_depth_payloads()
    records = [RawRecord(k, "ws:depth", p, "binance", "c1") for k, p in enumerate(payloads)]
    raw = payloads[0]
    targeted = [  # edits a random byte rarely makes: numbers JSON forbids or orjson reads otherwise
        raw.replace(b'"E":', b'"E":0'),
        raw.replace(b'"U":', b'"U":-'),
        raw.replace(b'"pu":4984031930451', b'"pu":4984031930451.0'),
        raw.replace(b'"pu":4984031930451', b'"pu":4984031930451e0'),
        raw.replace(b'"pu":4984031930451', b'"pu":4984031930451000000'),
        raw.replace(b'"u":4984031931631', b'"u":4984031930569'),  # U > u
        raw.replace(b'"5000.00"', b'"5000.0\\u0030"'),
        raw.replace(b'"5000.00"', b'"5000.00 "'),
        raw.replace(b'"5000.00"', b'"\xc3\xa9"'),
        raw.replace(b'"BTCUSDT"', b'"BTCUSD\\u0054"'),
        raw.replace(b'"depthUpdate"', b'"depthUpdat\\u0065"'),
        raw + b" ",
        raw + b"}",
        raw[:-1],
        raw.replace(b',"data":', b',"data" :'),
        raw.replace(b'{"stream":"btcusdt@depth@0ms",', b'{"data":{},"stream":"btcusdt@depth@0ms",'),
    ]
    records += [RawRecord(5 + k, "ws:depth", payload, "binance", "c1") for k, payload in enumerate(targeted)]
    for k in range(3000):  # each its own update ids, so that de-duplication keeps them apart
        base = rng.choice(payloads).replace(b'"u":4984031931631', b'"u":%d' % (4984031931631 + k))
        records.append(RawRecord(10 + k, "ws:depth", _mutated(base, rng), "binance", "c1"))
    results = []
    for use_native in (True, False):
        _switch(monkeypatch, use_native)
        stats = NormalizeStats()
        events = normalize_records(records, "BTC", stats)
        results.append(([_exact(repr(e)) for e in events], stats.as_dict()))
    assert results[0] == results[1]
    assert results[0][1]["errors"] and len(results[0][0]) > 100  # both outcomes occur
