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
from moonstream.publish.frames import encode_frame

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
        encode_frame(
            src=float(orderbook.SOURCE_CODE), bid=f.bid_u8.tobytes(), ask=f.ask_u8.tobytes(), **f.header()
        )
        for f in outputs.frames
        if f is not None
    )
    documents = {"orderbook_heatmap": outputs.heatmap_body(), "orderbook_stats": outputs.stats}
    return EngineResult(new_state, documents, {"orderbook_heatmap": frames} if frames else {})


def _liquidations_step(state: JSONDict, events: Sequence[Event], symbol: str, minute: int) -> EngineResult:
    try:
        tape.bucket_step(symbol)
    except ValueError:  # no bucket step configured: this symbol has no liquidation products
        return EngineResult({}, {})
    new_state, bodies = liquidations.step_liquidations(state, events, symbol, minute)
    return EngineResult(new_state, bodies)


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
