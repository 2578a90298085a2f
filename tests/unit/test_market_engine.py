"""The market engine's rules, on hand-built events."""

from __future__ import annotations

from decimal import Decimal

from moonstream.jobs.engines.market import decimal_text, step_market
from moonstream.jobs.events import LiquidatedSide, Liquidation, TakerSide, Trade


def trade(
    price: str, qty: str, side: TakerSide, *, tid: int, aggregated: bool = False, exchange: str = "binance"
) -> Trade:
    return Trade(
        exchange,
        "BTC",
        1_000 + tid,
        1_000 + tid,
        tid,
        Decimal(price),
        Decimal(qty),
        side,
        aggregated,
        None,
        None,
        False,
    )


def liq(side: LiquidatedSide, price: str, filled: str, avg: str | None = None) -> Liquidation:
    return Liquidation(
        "binance",
        "BTC",
        5,
        5,
        side,
        Decimal(price),
        Decimal(avg) if avg else None,
        Decimal(filled),
        Decimal(filled),
        Decimal(filled),
        "FILLED",
    )


def test_ohlc_and_taker_flow_in_receive_order() -> None:
    events = [
        trade("100.5", "2", TakerSide.BUY, tid=1),
        trade("99", "1", TakerSide.SELL, tid=2),
        trade("101", "0.5", TakerSide.BUY, tid=3),
        trade("100", "1", TakerSide.SELL, tid=4),
    ]
    state, body = step_market({}, events)
    binance = body["exchanges"]["binance"]
    assert binance["ohlc"] == {"open": "100.5", "high": "101", "low": "99", "close": "100"}
    assert binance["trade_count"] == 4 and binance["trade_source"] == "trade"
    assert binance["taker_buy_base"] == "2.5" and binance["taker_sell_base"] == "2"
    assert binance["taker_buy_quote"] == "251.5" and binance["taker_sell_quote"] == "199"
    assert state == {"last_price": {"binance": "100"}}


def test_aggregated_trades_only_when_no_individual_trades() -> None:
    events = [
        trade("100", "1", TakerSide.BUY, tid=1),
        trade("200", "9", TakerSide.BUY, tid=2, aggregated=True),
    ]
    body = step_market({}, events)[1]["exchanges"]["binance"]
    assert body["trade_count"] == 1 and body["ohlc"]["high"] == "100"
    body = step_market({}, [trade("200", "9", TakerSide.BUY, tid=2, aggregated=True)])[1]["exchanges"][
        "binance"
    ]
    assert body["trade_source"] == "aggTrade" and body["ohlc"]["close"] == "200"


def test_liquidations_per_side_use_filled_value() -> None:
    events = [
        liq(LiquidatedSide.LONG, "100", "2", avg="101"),
        liq(LiquidatedSide.SHORT, "50", "1"),
        liq(LiquidatedSide.LONG, "99", "1"),
    ]
    body = step_market({"last_price": {"binance": "98"}}, events)[1]
    assert body["liquidations"]["long"] == {"count": 2, "qty": "3", "notional_usd": "301"}
    assert body["liquidations"]["short"] == {"count": 1, "qty": "1", "notional_usd": "50"}
    assert body["exchanges"]["binance"]["ohlc"] is None
    assert body["last_price"] == {"binance": "98"}, "no trade this minute: the last price carries over"


def test_empty_minute_keeps_state() -> None:
    state, body = step_market({"last_price": {"okx": "1"}}, [])
    assert state == {"last_price": {"okx": "1"}} and body["exchanges"] == {}


def test_decimal_text_is_plain_and_exact() -> None:
    assert decimal_text(Decimal("63943.90")) == "63943.9"
    assert decimal_text(Decimal("1E+3")) == "1000"
    assert decimal_text(Decimal("0.000")) == "0"
    assert decimal_text(Decimal("1E-9")) == "0.000000001"
