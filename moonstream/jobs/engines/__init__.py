"""The engines a minute job steps, in order.

Each engine is pure: ``step(state, events, symbol, minute) -> EngineResult`` with its new state and
the minute's document bodies (and binary frames) per product. Its state is plain JSON saved under its
name; its version goes into every checkpoint, so a changed engine never resumes from a checkpoint
another version wrote. Adding an engine means adding one :class:`EngineSpec` here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from moonstream.jobs.engines import liquidations, market, orderbook, tape
from moonstream.jobs.events import Event
from moonstream.publish.frames import encode_frame, encode_liq_frame, intensity_u8

JSONDict = dict[str, Any]


@dataclass(frozen=True)
class EngineResult:
    state: JSONDict
    documents: dict[str, JSONDict]
    blobs: dict[str, bytes] = field(default_factory=dict)


EngineStep = Callable[[JSONDict, Sequence[Event], str, int], EngineResult]


@dataclass(frozen=True)
class EngineSpec:
    name: str
    version: str
    products: tuple[str, ...]
    step: EngineStep


def _market_step(state: JSONDict, events: Sequence[Event], symbol: str, minute: int) -> EngineResult:
    new_state, body = market.step_market(state, events)
    return EngineResult(new_state, {"market": body})


def _orderbook_step(state: JSONDict, events: Sequence[Event], symbol: str, minute: int) -> EngineResult:
    new_state, outputs = orderbook.step_orderbook(state, events, symbol, minute)
    frames = b"".join(
        encode_frame(src=float(outputs.src), bid=f.bid_u8.tobytes(), ask=f.ask_u8.tobytes(), **f.header())
        for f in outputs.frames
        if f is not None
    )
    documents = {"orderbook_heatmap": outputs.heatmap_body(), "orderbook_stats": outputs.stats}
    return EngineResult(new_state, documents, {"orderbook_heatmap": frames} if frames else {})


def has_liquidation_engines(symbol: str) -> bool:
    """Whether ``symbol`` has a liquidation bucket step, hence liquidation products and calibration."""
    try:
        tape.bucket_step(symbol)
    except ValueError:
        return False
    return True


def _liquidations_step(state: JSONDict, events: Sequence[Event], symbol: str, minute: int) -> EngineResult:
    if not has_liquidation_engines(symbol):
        return EngineResult({}, {})
    new_state, bodies = liquidations.step_liquidations(state, events, symbol, minute)
    frame = liq_frame_from_v1(bodies["liq_heatmap"], minute)
    return EngineResult(new_state, bodies, {"liq_heatmap": frame} if frame else {})


def liq_frame_from_v1(body: JSONDict, minute: int) -> bytes | None:
    """The minute's liquidation frame (docs/formats.md), built from the V1 ``liq_heatmap`` body alone.

    ``ts`` is the start of the minute (the body's ``ts`` is its end), ``src`` the body's reference
    price, the grid its ``price_min``/``price_max``/``step``, and the rows its ``long_intensity`` /
    ``short_intensity`` scaled by :func:`intensity_u8`. None when the minute has no grid (no price yet).
    """
    if body.get("src") is None or not body.get("prices"):
        return None
    return encode_liq_frame(
        ts=float(minute * 60),
        src=float(body["src"]),
        price_min=float(body["price_min"]),
        price_max=float(body["price_max"]),
        step=float(body["step"]),
        long=intensity_u8(body["long_intensity"]),
        short=intensity_u8(body["short_intensity"]),
    )


ENGINES: tuple[EngineSpec, ...] = (
    EngineSpec("market", market.ENGINE_VERSION, ("market",), _market_step),
    EngineSpec(
        "orderbook", orderbook.ENGINE_VERSION, ("orderbook_heatmap", "orderbook_stats"), _orderbook_step
    ),
    EngineSpec("liquidations", liquidations.ENGINE_VERSION, liquidations.PRODUCTS, _liquidations_step),
)


def engine_versions(engines: Sequence[EngineSpec] = ENGINES) -> dict[str, str]:
    return {spec.name: spec.version for spec in engines}


def products(engines: Sequence[EngineSpec] = ENGINES) -> tuple[str, ...]:
    return tuple(p for spec in engines for p in spec.products)
