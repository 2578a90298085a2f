"""The simulator's ground truth: what really happened, for tests and the evaluate job (never engines).

Stored in the data store beside the raw files, one zstd JSONL object per symbol and UTC hour::

    sim/{run_id}/groundtruth/{SYMBOL}/{YYYY-MM-DD}/{HH}.jsonl.zst
    sim/{run_id}/run.json                                   (parameters and totals of the run)

Each line is one JSON object with a ``type`` (docs/simulator.md lists every field):

* ``open``  - a position opened: ``id, t, side, lev, entry, qty, liq, venue`` (``liq`` the exact
  liquidation price as a float, ``entry``/``qty`` exchange decimal text, ``venue`` its exchange);
* ``close`` - closed voluntarily: ``id, t, price``;
* ``liq``   - liquidated: ``id, t, side, lev, entry, qty, liq, price`` (fill), ``bk`` (bankruptcy
  price, what Bybit and OKX publish), ``low``/``high`` (the step's mid range, which crossed ``liq``),
  ``venue``, ``sent`` (true if the venue's stream carried it: Binance's 1-per-second snapshot, every
  Bybit one, OKX's first of each second);
* ``minute`` - at each minute's end: ``minute, close, oi`` (all venues), ``oi_by_venue`` and
  ``mix`` = per side, per leverage,
  ``[count, qty, usd_at_entry]`` of the open simulated positions, and ``opened`` = the same for
  positions opened in that minute.

Lines are in time order within an object. Objects use the raw files' zstd settings.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

from moonstream.collector.rawfile import compress_minute, decompress_minute
from moonstream.store.base import ObjectMeta, Store
from moonstream.timeutil import minute_date_hhmm

log = logging.getLogger(__name__)

SIM_PREFIX = "sim/"
_META = ObjectMeta(content_type="application/zstd")
_JSON_META = ObjectMeta(content_type="application/json")


def groundtruth_prefix(run_id: str, symbol: str) -> str:
    return f"{SIM_PREFIX}{run_id}/groundtruth/{symbol}/"


def groundtruth_key(run_id: str, symbol: str, hour_minute: int) -> str:
    """``sim/{run_id}/groundtruth/BTC/2024-01-01/00.jsonl.zst`` for any minute of that hour."""
    day, hhmm = minute_date_hhmm(hour_minute)
    return f"{groundtruth_prefix(run_id, symbol)}{day}/{hhmm[:2]}.jsonl.zst"


def run_manifest_key(run_id: str) -> str:
    return f"{SIM_PREFIX}{run_id}/run.json"


class GroundTruthWriter:
    """Collects one symbol's ground-truth lines and writes one object per UTC hour."""

    def __init__(self, store: Store, run_id: str, symbol: str) -> None:
        self.store = store
        self.run_id = run_id
        self.symbol = symbol
        self._lines: list[str] = []
        self._hour: int | None = None
        self.keys: list[str] = []
        self.lines_written = 0

    def add(self, line: str) -> None:
        """One JSON object (already encoded, no newline)."""
        self._lines.append(line)

    def add_obj(self, obj: dict[str, Any]) -> None:
        self._lines.append(json.dumps(obj, separators=(",", ":"), sort_keys=True))

    def end_minute(self, minute: int) -> None:
        """Call after each minute's lines: writes the hour's object when ``minute`` ends an hour."""
        if self._hour is None:
            self._hour = minute - minute % 60
        if minute % 60 == 59:
            self.flush()

    def flush(self) -> None:
        """Write the current hour's lines (if any)."""
        if self._hour is None or not self._lines:
            self._hour = None
            return
        key = groundtruth_key(self.run_id, self.symbol, self._hour)
        blob = compress_minute(("\n".join(self._lines) + "\n").encode())
        if not self.store.create_or_same(key, blob, _META):
            log.info("ground truth %s already stored with the same bytes", key)
        self.keys.append(key)
        self.lines_written += len(self._lines)
        self._lines = []
        self._hour = None


def write_manifest(store: Store, run_id: str, manifest: dict[str, Any]) -> None:
    """``sim/{run_id}/run.json``: the run's parameters and totals (deterministic, no wall time)."""
    data = json.dumps(manifest, indent=1, sort_keys=True).encode() + b"\n"
    store.put(run_manifest_key(run_id), data, _JSON_META)


def read_groundtruth(store: Store, run_id: str, symbol: str) -> Iterator[dict[str, Any]]:
    """Every ground-truth record of a symbol in a run, in time order."""
    for key in sorted(store.list(groundtruth_prefix(run_id, symbol))):
        if not key.endswith(".jsonl.zst"):
            continue
        for line in decompress_minute(store.read(key).data).splitlines():
            if line:
                yield json.loads(line)
