"""The market simulator (issue 6): determinism, exchange rules, and agreement with its ground truth."""

from __future__ import annotations

import argparse
import itertools
import json
import math
from collections import Counter, defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from moonstream.collector.rawfile import RawRecord, iter_minutes
from moonstream.jobs.events import BookTicker, DepthSnapshot, DepthUpdate, Liquidation, OpenInterest
from moonstream.jobs.normalize import NormalizeStats, normalize_records
from moonstream.sim import SimRates, run_simulation, symbol_spec
from moonstream.sim.binance import fixed
from moonstream.sim.cli import add_simulate_parser, rates_from_args
from moonstream.sim.groundtruth import read_groundtruth
from moonstream.sim.market import LONG, SHORT, liquidation_price
from moonstream.sim.okx import contract_value
from moonstream.sim.params import BTC_LADDER_TIERS, BTC_LADDER_WEIGHTS, VENUES
from moonstream.sim.runner import SimReport
from moonstream.store import LocalStore, open_store
from moonstream.timeutil import parse_minute

START = parse_minute("2024-01-01T23:57")  # crosses a UTC day
MINUTES = 6
SEED = 11
SYMBOLS = ("BTC", "SOL")
# a busy market: a cascade running most of the time, many positions to liquidate
BUSY = SimRates(cascades_per_day=1440, opens_per_sec=20, mean_hold_minutes=30)


def _run(url: str, seed: int = SEED, rates: SimRates = BUSY, minutes: int = MINUTES) -> SimReport:
    return run_simulation(list(SYMBOLS), START, minutes, seed, url, rates, workers=1, exchanges=VENUES)


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SimReport]:
    root = tmp_path_factory.mktemp("sim")
    return root, _run(str(root))


def _records(root: Path, symbol: str, exchange: str | None = None) -> list[RawRecord]:
    out: list[RawRecord] = []
    for _, records in iter_minutes(LocalStore(root), symbol, START, START + MINUTES - 1):
        out.extend(r for r in records if exchange is None or r.exchange == exchange)
    return out


def _payloads(
    root: Path, symbol: str, channel: str, exchange: str = "binance"
) -> list[tuple[int, dict[str, Any]]]:
    out = []
    for record in _records(root, symbol, exchange):
        if record.channel == channel:
            message = json.loads(record.payload)
            out.append((record.recv_ns, message.get("data", message)))
    return out


def _messages(root: Path, symbol: str, channel: str, exchange: str) -> list[dict[str, Any]]:
    """Whole decoded messages of one channel of one exchange."""
    return [json.loads(r.payload) for r in _records(root, symbol, exchange) if r.channel == channel]


def _truth(
    root: Path, report: SimReport, symbol: str, kind: str, venue: str | None = "binance"
) -> list[dict[str, Any]]:
    """Ground-truth records of one type; ``open``/``liq`` of one venue (None: every venue)."""
    return [
        r
        for r in read_groundtruth(open_store(str(root)), report.run_id, symbol)
        if r["type"] == kind and (venue is None or r.get("venue", venue) == venue)
    ]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# --- formulas and formatting ---------------------------------------------------------------------


def test_liquidation_price_formula() -> None:
    # isolated margin: long entry*(1 - 1/lev + mmr), short entry*(1 + 1/lev - mmr), mmr=min(0.004, 0.5/lev)
    assert liquidation_price(LONG, 100.0, 10) == pytest.approx(90.4)
    assert liquidation_price(SHORT, 100.0, 10) == pytest.approx(109.6)
    assert liquidation_price(LONG, 100.0, 250) == pytest.approx(99.8)  # mmr 0.002
    assert liquidation_price(SHORT, 42_000.0, 125) == pytest.approx(42_000 * 1.004)
    for lev in BTC_LADDER_TIERS:  # every tier has room between entry and liquidation
        assert liquidation_price(LONG, 1.0, lev) < 1.0 < liquidation_price(SHORT, 1.0, lev)


def test_fixed_decimal_text() -> None:
    assert fixed(4_200_010, 2) == "42000.10"
    assert fixed(5, 3) == "0.005"
    assert fixed(12, 0) == "12"
    assert fixed(1_000_100, 4) == "100.0100"


def test_rates_are_validated() -> None:
    with pytest.raises(ValueError):
        SimRates(step_ms=300)
    with pytest.raises(ValueError):
        SimRates(oi_poll_ms=1500)
    with pytest.raises(ValueError):
        SimRates(leverage_weights={7: 1.0}).leverage_weights_for(symbol_spec("BTC"))
    assert SimRates().leverage_weights_for(symbol_spec("BTC")) == BTC_LADDER_WEIGHTS
    assert SimRates().leverage_weights_for(symbol_spec("SOL")) == (1.0, 1.0, 0.9, 0.7, 0.35, 0.14)


def test_cli_arguments_build_rates() -> None:
    parser = argparse.ArgumentParser()
    add_simulate_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        [
            *("simulate", "--start", "2024-01-01T00:00", "--minutes", "5", "--seed", "3"),
            *("--rate", "trades_per_sec=25", "--rate", "book_levels=500", "--leverage-mix", "5:1,20:0.5"),
        ]
    )
    rates = rates_from_args(args)
    assert (rates.trades_per_sec, rates.book_levels) == (25.0, 500)
    assert rates.leverage_weights == {5: 1.0, 20: 0.5}
    args.rate = ["no_such_rate=1"]
    with pytest.raises(ValueError):
        rates_from_args(args)


# --- determinism ---------------------------------------------------------------------------------


def test_same_seed_gives_byte_identical_files(sim: tuple[Path, SimReport], tmp_path: Path) -> None:
    root, report = sim
    again = _run(str(tmp_path))
    first, second = _files(root), _files(tmp_path)
    assert len(first) >= len(SYMBOLS) * MINUTES + 2  # raw minutes, ground truth, run.json
    assert sorted(first) == sorted(second)
    assert first == second
    assert again.run_id == report.run_id


def test_other_seed_gives_other_files(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    run_simulation(["BTC"], START, 1, 1, str(a), workers=1)
    run_simulation(["BTC"], START, 1, 2, str(b), workers=1)
    key = "raw/BTC/2024-01-01/2357/binance.sim.jsonl.zst"
    assert (a / key).read_bytes() != (b / key).read_bytes()


# --- the Binance stream --------------------------------------------------------------------------


@pytest.mark.parametrize("symbol", SYMBOLS)
def test_every_record_normalizes_without_error(sim: tuple[Path, SimReport], symbol: str) -> None:
    root, report = sim
    stats = NormalizeStats()
    normalize_records(_records(root, symbol, "binance"), symbol, stats)
    assert stats.errors == Counter()
    assert stats.duplicates == 0
    assert stats.records == report.symbols[symbol].venues["binance"]["lines"]
    for kind in ("Trade", "DepthUpdate", "DepthSnapshot", "BookTicker", "MarkPrice", "OpenInterest"):
        assert stats.events[kind] > 0, kind
    pushed = report.symbols[symbol].force_orders_sent  # the last may be received after the end
    assert pushed - 1 <= stats.events["Liquidation"] <= pushed
    assert stats.events["Liquidation"] > 10
    assert stats.events["DepthUpdate"] == MINUTES * 600 - 1  # the last diff is received after the end
    assert stats.events["OpenInterest"] == MINUTES * 6 - 1


def _apply(book: dict[Decimal, Decimal], levels: tuple[tuple[Decimal, Decimal], ...]) -> None:
    for price, qty in levels:
        if qty == 0:
            book.pop(price, None)
        else:
            book[price] = qty


@pytest.mark.parametrize("symbol", SYMBOLS)
def test_depth_diffs_chain_bridge_the_snapshot_and_match_book_ticker(
    sim: tuple[Path, SimReport], symbol: str
) -> None:
    root, _ = sim
    events = normalize_records(_records(root, symbol), symbol, NormalizeStats())
    prev_u: int | None = None
    bids: dict[Decimal, Decimal] = {}
    asks: dict[Decimal, Decimal] = {}
    buffered: list[DepthUpdate] = []
    synced = False
    last_applied = -1
    compared = 0
    for event in events:
        if isinstance(event, DepthUpdate):
            if prev_u is not None:
                assert event.prev_last_update_id == prev_u
                assert event.first_update_id > prev_u
            prev_u = event.last_update_id
            if not synced:
                buffered.append(event)
                continue
            _apply(bids, event.bids)
            _apply(asks, event.asks)
            last_applied = event.last_update_id
        elif isinstance(event, DepthSnapshot) and not synced:
            snap_id = event.last_update_id
            bridge = [d for d in buffered if d.first_update_id <= snap_id <= d.last_update_id]
            assert len(bridge) == 1  # Binance's sync rule: one diff has U <= lastUpdateId <= u
            assert len(event.bids) == len(event.asks) == 1000
            bids, asks = dict(event.bids), dict(event.asks)
            for diff in buffered:
                if diff.last_update_id >= snap_id:
                    _apply(bids, diff.bids)
                    _apply(asks, diff.asks)
                    last_applied = diff.last_update_id
            synced = True
        elif isinstance(event, DepthSnapshot):  # a later (hourly) snapshot: equals the rebuilt book
            assert last_applied == event.last_update_id or event.last_update_id > last_applied
        elif isinstance(event, BookTicker) and synced and event.update_id == last_applied:
            best_bid, best_ask = max(bids), min(asks)
            assert (best_bid, bids[best_bid]) == (event.bid_price, event.bid_qty)
            assert (best_ask, asks[best_ask]) == (event.ask_price, event.ask_qty)
            assert best_bid < best_ask
            compared += 1
    assert synced
    assert compared > MINUTES * 590


@pytest.mark.parametrize("symbol", SYMBOLS)
def test_force_orders_capped_at_one_per_second_while_truth_has_more(
    sim: tuple[Path, SimReport], symbol: str
) -> None:
    root, report = sim
    stream = _payloads(root, symbol, "ws:forceOrder")
    truth = _truth(root, report, symbol, "liq")
    assert truth and len(truth) < len(_truth(root, report, symbol, "liq", None))  # other venues too
    per_push_second = Counter(data["E"] // 1000 for _, data in stream)
    per_liq_second = Counter(data["o"]["T"] // 1000 for _, data in stream)
    assert max(per_push_second.values()) == 1
    assert max(per_liq_second.values()) == 1
    truth_per_second = Counter(r["t"] // 1000 for r in truth)
    assert max(truth_per_second.values()) > 5  # a cascade: many liquidations in one second
    assert len(truth) > 3 * len(stream)
    # the pushed one is the latest of its 1000 ms window
    latest: dict[int, int] = {}
    for r in truth:
        latest[r["t"] // 1000] = max(latest.get(r["t"] // 1000, -1), r["t"])
    for r in truth:
        if r["sent"]:
            assert r["t"] == latest[r["t"] // 1000]
    assert 0 <= sum(r["sent"] for r in truth) - len(per_liq_second) <= 1  # last push after the end


@pytest.mark.parametrize("symbol", SYMBOLS)
def test_liquidations_occur_where_the_ground_truth_says(sim: tuple[Path, SimReport], symbol: str) -> None:
    root, report = sim
    tick = Decimal(fixed(symbol_spec(symbol).tick_units, symbol_spec(symbol).price_decimals))
    truth = _truth(root, report, symbol, "liq")
    stream = [data["o"] for _, data in _payloads(root, symbol, "ws:forceOrder")]
    sent = [r for r in truth if r["sent"]]
    # every pushed liquidation is a ground-truth one, same time, side, price and size, in order
    assert [(o["T"], o["S"], o["p"], o["ap"], o["q"], o["z"]) for o in stream] == [
        (r["t"], "SELL" if r["side"] == "long" else "BUY", r["price"], r["price"], r["qty"], r["qty"])
        for r in sent
    ][: len(stream)]
    assert len(sent) - len(stream) <= 1  # the last window may close after the end
    trades = {
        (d["T"], d["p"], d["q"], d["m"]) for _, d in _payloads(root, symbol, "ws:aggTrade")
    }  # (time, price, qty, buyer is maker)
    for r in truth:
        liq, price = r["liq"], Decimal(r["price"])
        entry = float(r["entry"])
        side = LONG if r["side"] == "long" else SHORT
        assert liq == liquidation_price(side, entry, r["lev"])
        exact, eps = Decimal(repr(liq)), price * Decimal("1e-12")  # float noise around a tick
        if side == LONG:  # the path went down through the liquidation price; filled at or below it
            assert r["low"] <= liq and price - eps <= exact < price + tick
            assert liq < entry
        else:
            assert r["high"] >= liq and price - tick < exact <= price + eps
            assert liq > entry
        # the liquidation order hit the tape as a taker trade the liquidation's way
        if r["t"] < (START + MINUTES) * 60_000 - 1000:
            assert (r["t"], r["price"], r["qty"], side == LONG) in trades


@pytest.mark.parametrize("symbol", SYMBOLS)
def test_open_interest_follows_opens_closes_and_liquidations(
    sim: tuple[Path, SimReport], symbol: str
) -> None:
    root, report = sim
    polls = [(d["time"], Decimal(d["openInterest"])) for _, d in _payloads(root, symbol, "rest:oi")]
    records = list(read_groundtruth(open_store(str(root)), report.run_id, symbol))
    qty_of = {r["id"]: Decimal(r["qty"]) for r in records if r["type"] == "open" and r["venue"] == "binance"}
    change: dict[int, Decimal] = defaultdict(Decimal)  # per 10 s poll interval
    for r in records:
        if r.get("id") not in qty_of:
            continue
        if r["type"] == "open":
            change[r["t"] // 10_000] += qty_of[r["id"]]
        elif r["type"] in ("close", "liq"):
            change[r["t"] // 10_000] -= qty_of[r["id"]]
    assert len(polls) == MINUTES * 6 - 1
    for (t0, oi0), (t1, oi1) in itertools.pairwise(polls):
        assert t1 - t0 == 10_000
        assert oi1 - oi0 == change[t0 // 10_000]
    minute_oi = {r["t"]: Decimal(r["oi_by_venue"]["binance"]) for r in records if r["type"] == "minute"}
    matched = [t for t, oi in polls if t in minute_oi and minute_oi[t] == oi]
    assert len(matched) == MINUTES - 1


@pytest.mark.parametrize("symbol", SYMBOLS)
def test_trades_carry_the_taker_side_of_opens(sim: tuple[Path, SimReport], symbol: str) -> None:
    root, report = sim
    trades = {(d["T"], d["p"], d["q"], d["m"]) for _, d in _payloads(root, symbol, "ws:aggTrade")}
    opens = _truth(root, report, symbol, "open")
    last_ms = (START + MINUTES) * 60_000 - 1000
    checked = [r for r in opens if r["t"] < last_ms]
    assert len(checked) > 1000
    for r in checked:  # a long opens with a taker buy (buyer not maker), a short with a taker sell
        assert (r["t"], r["entry"], r["qty"], r["side"] == "short") in trades


def test_leverage_mix_follows_the_weights_and_the_truth_adds_up(sim: tuple[Path, SimReport]) -> None:
    root, report = sim
    records = list(read_groundtruth(open_store(str(root)), report.run_id, "BTC"))
    opens = [r for r in records if r["type"] == "open"]
    counts = Counter(r["lev"] for r in opens)
    total = sum(BTC_LADDER_WEIGHTS)
    for tier, weight in zip(BTC_LADDER_TIERS, BTC_LADDER_WEIGHTS, strict=True):
        expected = len(opens) * weight / total
        assert abs(counts[tier] - expected) < 5 * math.sqrt(expected) + 2, (tier, counts[tier], expected)
    assert counts[10] > 1000  # the disabled tier is populated
    # the per-minute mix equals the positions still open according to the event records
    alive: dict[int, dict[str, Any]] = {}
    for r in records:
        if r["type"] == "open":
            alive[r["id"]] = r
        elif r["type"] in ("close", "liq"):
            del alive[r["id"]]
        elif r["type"] == "minute" and r["t"] % 120_000 == 0:
            want: dict[str, Counter[str]] = {"long": Counter(), "short": Counter()}
            for pos in alive.values():
                want[pos["side"]][str(pos["lev"])] += 1
            got = {side: Counter({lev: v[0] for lev, v in r["mix"][side].items()}) for side in want}
            assert got == want


def test_custom_leverage_mix_is_used(tmp_path: Path) -> None:
    rates = SimRates(leverage_weights={20: 1.0}, opens_per_sec=10)
    report = run_simulation(["ETH"], START, 1, 5, str(tmp_path), rates, workers=1)
    opens = _truth(tmp_path, report, "ETH", "open")
    assert len(opens) > 300
    assert {r["lev"] for r in opens} == {20}


# --- Bybit and OKX -------------------------------------------------------------------------------


@pytest.mark.parametrize("venue", ["bybit", "okx"])
@pytest.mark.parametrize("symbol", SYMBOLS)
def test_venue_records_normalize_without_error(sim: tuple[Path, SimReport], symbol: str, venue: str) -> None:
    root, report = sim
    records = _records(root, symbol, venue)
    stats = NormalizeStats()
    normalize_records(records, symbol, stats)
    assert stats.errors == Counter()
    assert stats.records == len(records) == report.symbols[symbol].venues[venue]["lines"]
    for kind in ("Trade", "Liquidation", "OpenInterest", "MarkPriceUpdate", "ConnectionEvent"):
        assert stats.events[kind] > 0, kind
    assert {r.channel for r in records} >= {"conn:open", "ws:trades" if venue == "okx" else "ws:publicTrade"}


def test_positions_are_shared_between_venues(sim: tuple[Path, SimReport]) -> None:
    root, report = sim
    opens = _truth(root, report, "BTC", "open", None)
    counts = Counter(r["venue"] for r in opens)
    for venue, share in (("binance", 0.5), ("bybit", 0.3), ("okx", 0.2)):
        expected = len(opens) * share
        assert abs(counts[venue] - expected) < 5 * math.sqrt(expected), (venue, counts)
    liqs = _truth(root, report, "BTC", "liq", None)
    assert {r["venue"] for r in liqs} == {"binance", "bybit", "okx"}
    venue_of = {r["id"]: r["venue"] for r in opens}
    assert all(venue_of[r["id"]] == r["venue"] for r in liqs)
    for r in _truth(root, report, "BTC", "minute"):
        assert sum(Decimal(v) for v in r["oi_by_venue"].values()) == Decimal(r["oi"])


def _bankruptcy_ok(r: dict[str, Any], tick: Decimal) -> bool:
    """``bk`` is the bankruptcy price entry*(1 -/+ 1/lev) rounded to the tick away from the entry."""
    entry, lev = Decimal(r["entry"]), Decimal(r["lev"])
    exact = entry * (1 - 1 / lev) if r["side"] == "long" else entry * (1 + 1 / lev)
    bk = Decimal(r["bk"])
    eps = exact * Decimal("1e-12")
    return (bk - eps <= exact < bk + tick) if r["side"] == "long" else (bk - tick < exact <= bk + eps)


@pytest.mark.parametrize("symbol", SYMBOLS)
def test_bybit_carries_every_liquidation_in_500ms_batches(sim: tuple[Path, SimReport], symbol: str) -> None:
    root, report = sim
    spec = symbol_spec(symbol)
    tick = Decimal(fixed(spec.tick_units, spec.price_decimals))
    truth = _truth(root, report, symbol, "liq", "bybit")
    assert len(truth) > 20 and all(r["sent"] for r in truth)  # no cap: every one is pushed
    assert all(_bankruptcy_ok(r, tick) for r in truth)
    messages = _messages(root, symbol, "ws:allLiquidation", "bybit")
    rows = []
    for message in messages:
        assert message["ts"] % 500 == 0
        assert all(message["ts"] - 500 <= row["T"] < message["ts"] for row in message["data"])
        rows.extend(message["data"])
    assert max(len(m["data"]) for m in messages) > 1  # a cascade: several in one push
    want = [
        (r["t"], "Buy" if r["side"] == "long" else "Sell", r["qty"], r["bk"], f"{symbol}USDT") for r in truth
    ]
    got = [(row["T"], row["S"], row["v"], row["p"], row["s"]) for row in rows]
    assert got == want[: len(got)]
    assert all(r["t"] >= (START + MINUTES) * 60_000 - 500 for r in truth[len(got) :])  # the last push


@pytest.mark.parametrize("symbol", SYMBOLS)
def test_okx_shows_the_first_liquidation_of_each_second(sim: tuple[Path, SimReport], symbol: str) -> None:
    root, report = sim
    ct_val = contract_value(symbol)
    assert ct_val is not None
    truth = _truth(root, report, symbol, "liq", "okx")
    sent = [r for r in truth if r["sent"]]
    assert len(truth) > len(sent) > 10  # the cap drops some
    first: dict[int, int] = {}
    for r in truth:
        first[r["t"] // 1000] = min(first.get(r["t"] // 1000, r["t"]), r["t"])
    assert len(sent) == len(first)
    assert all(r["t"] == first[r["t"] // 1000] for r in sent)
    events = [
        e
        for e in normalize_records(_records(root, symbol, "okx"), symbol, NormalizeStats())
        if isinstance(e, Liquidation)
    ]
    per_second = Counter(e.ts_ns // 1_000_000_000 for e in events)
    assert max(per_second.values()) == 1
    got = [(e.ts_ns // 1_000_000, e.side.value, e.qty, e.price) for e in events]
    want = [(r["t"], r["side"], Decimal(r["qty"]), Decimal(r["bk"])) for r in sent]
    assert got == want[: len(got)] and len(want) - len(got) <= 1
    raw = _messages(root, symbol, "ws:liquidation-orders", "okx")
    assert {row["instId"] for m in raw for row in m["data"]} == {f"{symbol}-USDT-SWAP"}
    assert {d["posSide"] for m in raw for d in m["data"][0]["details"]} >= {"net"}


@pytest.mark.parametrize("venue", ["bybit", "okx"])
@pytest.mark.parametrize("symbol", SYMBOLS)
def test_venue_open_interest_follows_its_positions(
    sim: tuple[Path, SimReport], symbol: str, venue: str
) -> None:
    root, report = sim
    events = [
        e
        for e in normalize_records(_records(root, symbol, venue), symbol, NormalizeStats())
        if isinstance(e, OpenInterest)
    ]
    records = list(read_groundtruth(open_store(str(root)), report.run_id, symbol))
    qty_of = {r["id"]: Decimal(r["qty"]) for r in records if r["type"] == "open" and r["venue"] == venue}
    changes: list[tuple[int, Decimal]] = []
    for r in records:
        if r.get("id") in qty_of and r["type"] in ("open", "close", "liq"):
            changes.append((r["t"], qty_of[r["id"]] if r["type"] == "open" else -qty_of[r["id"]]))
    assert len(events) > MINUTES * 15
    for a, b in itertools.pairwise(events):
        t0, t1 = a.ts_ns // 1_000_000, b.ts_ns // 1_000_000
        moved = sum((q for t, q in changes if t0 <= t < t1), Decimal(0))
        assert b.open_interest_base - a.open_interest_base == moved != 0
    minute_oi = {r["t"]: Decimal(r["oi_by_venue"][venue]) for r in records if r["type"] == "minute"}
    at_minute = [e for e in events if e.ts_ns // 1_000_000 in minute_oi]
    assert at_minute and all(e.open_interest_base == minute_oi[e.ts_ns // 1_000_000] for e in at_minute)
    if venue == "okx":  # oi in contracts, oiCcy in coin: exactly oi x ctVal
        for message in _messages(root, symbol, "ws:open-interest", "okx"):
            row = message["data"][0]
            assert Decimal(row["oi"]) * contract_value(symbol) == Decimal(row["oiCcy"])  # type: ignore[operator]


def test_exchanges_option_and_validation(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_simulate_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["simulate", "--start", "2024-01-01T00:00", "--minutes", "1"])
    assert args.exchanges == "binance,bybit,okx"
    with pytest.raises(ValueError):
        run_simulation(["BTC"], START, 1, 1, str(tmp_path), exchanges=("binance", "kraken"))
    with pytest.raises(ValueError):
        run_simulation(["BTC"], START, 1, 1, str(tmp_path), SimRates(share_bybit=0), exchanges=("bybit",))
    with pytest.raises(ValueError):
        SimRates(okx_oi_ms=150)


def test_binance_only_and_symbols_without_okx_contract(tmp_path: Path) -> None:
    only = run_simulation(["BTC"], START, 2, 4, str(tmp_path / "a"), workers=1)  # the library default
    assert sorted(p.name for p in (tmp_path / "a").rglob("*.sim.jsonl.zst"))[-1].startswith("binance")
    assert set(only.symbols["BTC"].venues) == {"binance"}
    truth = list(read_groundtruth(open_store(str(tmp_path / "a")), only.run_id, "BTC"))
    assert {r["venue"] for r in truth if r["type"] == "open"} == {"binance"}
    # the whole market's OI is Binance's
    assert all(r["oi"] == r["oi_by_venue"]["binance"] for r in truth if r["type"] == "minute")
    doge = run_simulation(["DOGE"], START, 1, 4, str(tmp_path / "b"), workers=1, exchanges=VENUES)
    assert set(doge.symbols["DOGE"].venues) == {"binance", "bybit"}  # no OKX contract value
    assert not list((tmp_path / "b").rglob("okx.*"))
