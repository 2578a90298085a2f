"""Zone tracker: the UI-stability layer that picks the few zones a chart shows (V1 ``top_*_zones``).

Parameters (spec/000 "ZoneTracker"): ``max_zones=5``, ``enter_margin=0.07``, ``exit_margin=0.05``,
``ttl_minutes=10``, ``peak_drop_threshold=0.70``, ``min_strength_threshold=0.01``. The spec names
them without formulas; this module defines them as follows (a hysteresis, so the list does not
flicker):

- candidates are the minute's display pools per side (``strength`` = display intensity, 0-1);
  candidates under ``min_strength_threshold`` are ignored;
- a tracked zone is *matched* by the strongest candidate within one bucket of it; a match updates
  ``strength``, ``peak = max(peak, strength)`` and ``last_seen``;
- a tracked zone **exits** when unmatched for more than ``ttl_minutes``, when its strength falls under
  ``exit_margin``, or when it has dropped under ``(1 − peak_drop_threshold) × peak``;
- an unmatched candidate **enters** when its strength is at least ``enter_margin`` and a slot is free,
  or when it beats the weakest tracked zone by at least ``enter_margin`` (which it then replaces).

State (JSON): ``{"long": [tracked...], "short": [...]}``, each ``{"index", "strength", "peak",
"first_seen", "last_seen"}``, ordered by strength (desc) then index.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from moonstream.jobs.engines.tape import SIDES, bucket_price

MAX_ZONES = 5
ENTER_MARGIN = 0.07
EXIT_MARGIN = 0.05
TTL_MINUTES = 10
PEAK_DROP_THRESHOLD = 0.70
MIN_STRENGTH_THRESHOLD = 0.01

Tracked = dict[str, Any]


def _order(tracked: list[Tracked]) -> list[Tracked]:
    return sorted(tracked, key=lambda z: (-z["strength"], z["index"]))


def track_side(
    tracked: Sequence[Mapping[str, Any]], candidates: Sequence[tuple[int, float]], minute: int
) -> list[Tracked]:
    """One side's tracked zones after this minute's candidates ``[(bucket index, strength)]``."""
    pending = sorted(
        ((i, s) for i, s in candidates if s >= MIN_STRENGTH_THRESHOLD), key=lambda c: (-c[1], c[0])
    )
    kept: list[Tracked] = []
    for zone in sorted((dict(z) for z in tracked), key=lambda z: (-z["strength"], z["index"])):
        match = next((c for c in pending if abs(c[0] - zone["index"]) <= 1), None)
        if match is not None:
            pending.remove(match)
            zone["strength"] = match[1]
            zone["peak"] = max(zone["peak"], match[1])
            zone["last_seen"] = minute
        unseen_too_long = minute - zone["last_seen"] > TTL_MINUTES
        too_weak = zone["strength"] < EXIT_MARGIN
        dropped = zone["strength"] < (1 - PEAK_DROP_THRESHOLD) * zone["peak"]
        if not (unseen_too_long or too_weak or dropped):
            kept.append(zone)
    for index, strength in pending:
        if strength < ENTER_MARGIN or any(abs(z["index"] - index) <= 1 for z in kept):
            continue
        new = {
            "index": index,
            "strength": strength,
            "peak": strength,
            "first_seen": minute,
            "last_seen": minute,
        }
        if len(kept) < MAX_ZONES:
            kept.append(new)
            continue
        weakest = min(kept, key=lambda z: (z["strength"], -z["index"]))
        if strength >= weakest["strength"] + ENTER_MARGIN:
            kept.remove(weakest)
            kept.append(new)
    return _order(kept)


def step_tracker(
    state: Mapping[str, Any], candidates: Mapping[str, Sequence[tuple[int, float]]], minute: int
) -> dict[str, Any]:
    """Advance both sides."""
    return {side: track_side(state.get(side, []), candidates.get(side, ()), minute) for side in SIDES}


def top_zones(state: Mapping[str, Any], side: str, minute: int, step: Decimal) -> list[dict[str, Any]]:
    """V1 ``top_{side}_zones``: ``[{"price", "strength", "age_min"}]``, strongest first."""
    return [
        {
            "price": bucket_price(z["index"], step),
            "strength": round(z["strength"], 4),
            "age_min": minute - z["first_seen"],
        }
        for z in state.get(side, [])
    ]
