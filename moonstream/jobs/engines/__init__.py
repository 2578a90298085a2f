"""The engines a minute job steps, in order.

Each engine is pure: ``step(state, events, symbol, minute) -> (state, {product: document body})``.
Its state is plain JSON and is saved under its name; its version goes into every checkpoint, so a
changed engine never resumes from a checkpoint another version wrote. Adding an engine means adding
one :class:`EngineSpec` here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from moonstream.jobs.engines import market
from moonstream.jobs.events import Event

JSONDict = dict[str, Any]
EngineStep = Callable[[JSONDict, Sequence[Event], str, int], tuple[JSONDict, dict[str, JSONDict]]]


@dataclass(frozen=True)
class EngineSpec:
    name: str
    version: str
    products: tuple[str, ...]
    step: EngineStep


def _market_step(
    state: JSONDict, events: Sequence[Event], symbol: str, minute: int
) -> tuple[JSONDict, dict[str, JSONDict]]:
    new_state, body = market.step_market(state, events)
    return new_state, {"market": body}


ENGINES: tuple[EngineSpec, ...] = (EngineSpec("market", market.ENGINE_VERSION, ("market",), _market_step),)


def engine_versions(engines: Sequence[EngineSpec] = ENGINES) -> dict[str, str]:
    return {spec.name: spec.version for spec in engines}


def products(engines: Sequence[EngineSpec] = ENGINES) -> tuple[str, ...]:
    return tuple(p for spec in engines for p in spec.products)
