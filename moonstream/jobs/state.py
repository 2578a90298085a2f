"""Per-symbol engine state in the data store: immutable per-minute checkpoints plus a head pointer.

    state/{SYM}/checkpoints/{YYYY-MM-DD}/{HHMM}.json   state after that minute (create-only)
    state/{SYM}/head.json                              {"minute": ..., "checkpoint": key} (compare-and-swap)

State is plain JSON (never pickle), gzip-compressed in checkpoints. A checkpoint written by other
engine versions is not resumed from.
Because engines are deterministic, a checkpoint re-computed for the same minute has the same JSON,
so two runners on one minute both succeed in writing it and agree (a checkpoint is compared by its
JSON, not its gzip bytes, so one compressed at another level still counts as the same).
Old checkpoints are pruned by :mod:`moonstream.jobs.retention`; the one the head names never is.
"""

from __future__ import annotations

import gzip
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from moonstream.publish.encode import canonical_json
from moonstream.store.base import (
    ObjectExists,
    ObjectMeta,
    ObjectNotFound,
    PreconditionFailed,
    Store,
    StoredObject,
)
from moonstream.timeutil import iso_minute, minute_date_hhmm, minute_from_date_hhmm

logger = logging.getLogger(__name__)

STATE_SCHEMA_VERSION = 1
_META = ObjectMeta("application/json")
# Checkpoints are gzip-compressed (an order book makes them ~200 KB of JSON); the head stays plain.
_CHECKPOINT_META = ObjectMeta("application/json", content_encoding="gzip")
_GZIP_MAGIC = b"\x1f\x8b"
_HEAD_CAS_ATTEMPTS = 8
#: zlib level of checkpoints: level 5 takes half the CPU time of 6 for <1 % more bytes on a BTC
#: order book (deterministic like any fixed level; checkpoints of any level load).
CHECKPOINT_GZIP_LEVEL = 5


@dataclass(frozen=True)
class SymbolState:
    """Everything the engines carry from one minute to the next for one symbol."""

    symbol: str
    minute: int | None
    engine_versions: dict[str, str]
    engines: dict[str, Any] = field(default_factory=dict)
    raw_files: tuple[str, ...] = ()  # the minute files the last minute was computed from

    def to_document(self) -> dict[str, Any]:
        return {
            "raw_files": list(self.raw_files),
            "schema_version": STATE_SCHEMA_VERSION,
            "symbol": self.symbol,
            "minute": self.minute,
            "minute_iso": iso_minute(self.minute) if self.minute is not None else None,
            "engine_versions": self.engine_versions,
            "engines": self.engines,
        }


def fresh_state(symbol: str, engine_versions: dict[str, str]) -> SymbolState:
    return SymbolState(symbol=symbol, minute=None, engine_versions=dict(engine_versions))


def checkpoint_key(symbol: str, minute: int) -> str:
    day, hhmm = minute_date_hhmm(minute)
    return f"state/{symbol}/checkpoints/{day}/{hhmm}.json"


def head_key(symbol: str) -> str:
    return f"state/{symbol}/head.json"


def checkpoints_prefix(symbol: str, day: str | None = None) -> str:
    """``state/{SYM}/checkpoints/`` or, with ``day`` (``YYYY-MM-DD``), that day's folder."""
    return f"state/{symbol}/checkpoints/{day}/" if day else f"state/{symbol}/checkpoints/"


def checkpoint_minute(symbol: str, key: str) -> int | None:
    """The minute a checkpoint key names, or None for any other key (never guessed at)."""
    prefix = checkpoints_prefix(symbol)
    if not key.startswith(prefix) or not key.endswith(".json"):
        return None
    day, sep, name = key[len(prefix) : -len(".json")].partition("/")
    if not sep or len(name) != 4 or not name.isdigit():
        return None
    try:
        minute = minute_from_date_hhmm(day, name)
    except ValueError:
        return None
    return minute if checkpoint_key(symbol, minute) == key else None


def list_checkpoints(store: Store, symbol: str, day: str | None = None) -> list[tuple[int, str]]:
    """``(minute, key)`` of every checkpoint of the symbol (or of one day), oldest first."""
    found = [(checkpoint_minute(symbol, key), key) for key in store.list(checkpoints_prefix(symbol, day))]
    return sorted((minute, key) for minute, key in found if minute is not None)


def _decode(data: bytes, key: str) -> dict[str, Any]:
    document = json.loads(gzip.decompress(data) if data[:2] == _GZIP_MAGIC else data)
    if not isinstance(document, dict) or document.get("schema_version") != STATE_SCHEMA_VERSION:
        raise ValueError(f"{key}: not a state document of schema {STATE_SCHEMA_VERSION}")
    return document


def read_checkpoint(
    store: Store, symbol: str, minute: int, engine_versions: dict[str, str]
) -> SymbolState | None:
    """The state after ``minute``, or None if absent or written by other engine versions."""
    key = checkpoint_key(symbol, minute)
    try:
        document = _decode(store.read_bytes(key), key)
    except ObjectNotFound:
        return None
    if document["engine_versions"] != engine_versions:
        logger.info(
            "%s was written by engines %s, not %s: not resuming from it",
            key,
            document["engine_versions"],
            engine_versions,
        )
        return None
    return SymbolState(
        symbol,
        document["minute"],
        document["engine_versions"],
        document["engines"],
        tuple(document.get("raw_files", ())),
    )


def read_head(store: Store, symbol: str) -> tuple[int | None, str | None]:
    """``(minute, checkpoint key)`` of the last committed state; ``(None, None)`` without one."""
    try:
        document = json.loads(store.read_bytes(head_key(symbol)))
    except ObjectNotFound:
        return None, None
    minute, checkpoint = document.get("minute"), document.get("checkpoint")
    return (
        minute if isinstance(minute, int) else None,
        checkpoint if isinstance(checkpoint, str) else None,
    )


def read_head_minute(store: Store, symbol: str) -> int | None:
    """The last minute whose state was committed, or None."""
    return read_head(store, symbol)[0]


def newest_checkpoint_before(
    store: Store, symbol: str, minute: int, engine_versions: dict[str, str], lookback_minutes: int
) -> SymbolState | None:
    """The newest usable checkpoint of a minute in ``[minute - lookback_minutes, minute - 1]``, or None.

    Lists only the (at most few) day folders the look-back spans."""
    first = minute - lookback_minutes
    days = {minute_date_hhmm(m)[0] for m in range(first, minute, 1440)} | {minute_date_hhmm(minute - 1)[0]}
    candidates = [
        m for day in sorted(days) for m, _ in list_checkpoints(store, symbol, day) if first <= m < minute
    ]
    for candidate in sorted(candidates, reverse=True):
        state = read_checkpoint(store, symbol, candidate, engine_versions)
        if state is not None:
            return state
    return None


def load_state_before(store: Store, symbol: str, minute: int, engine_versions: dict[str, str]) -> SymbolState:
    """The state to run ``minute`` from: the checkpoint of ``minute - 1``, else the newest earlier
    committed state (engines catch up across the gap), else a fresh state."""
    state = read_checkpoint(store, symbol, minute - 1, engine_versions)
    if state is not None:
        return state
    head = read_head_minute(store, symbol)
    if head is not None and head < minute - 1:
        older = read_checkpoint(store, symbol, head, engine_versions)
        if older is not None:
            return older
    return fresh_state(symbol, engine_versions)


def save_state(store: Store, state: SymbolState, *, replace: bool = False) -> None:
    """Write the minute's checkpoint, then move the head forward (never backward).

    A checkpoint is written once; a different one for the same minute (inputs or engines changed)
    raises :class:`ObjectExists` unless ``replace`` (a deliberate re-run, ``--replace-immutable``)."""
    if state.minute is None:
        raise ValueError("cannot save a state that has processed no minute")
    key = checkpoint_key(state.symbol, state.minute)
    document = canonical_json(state.to_document())
    data = gzip.compress(document, compresslevel=CHECKPOINT_GZIP_LEVEL, mtime=0)
    if replace:
        store.put(key, data, _CHECKPOINT_META)
    else:
        _create_or_same_document(store, key, data, document)
    store.barrier()  # the checkpoint is durable before the head names it
    _advance_head(store, state.symbol, state.minute, key)


def _create_or_same_document(store: Store, key: str, data: bytes, document: bytes) -> None:
    """Create-only, where an existing checkpoint with the same JSON (whatever its compression)
    counts as written; a different one raises :class:`ObjectExists`."""
    for _ in range(3):
        try:
            store.create(key, data, _CHECKPOINT_META)
            return
        except ObjectExists:
            try:
                existing = store.read_bytes(key)
            except ObjectNotFound:
                continue  # pruned in between: write it again
            if existing == data:
                return
            if (gzip.decompress(existing) if existing[:2] == _GZIP_MAGIC else existing) == document:
                return
            raise
    raise ObjectExists(f"{key} kept appearing and disappearing")


def _advance_head(store: Store, symbol: str, minute: int, checkpoint: str) -> None:
    key = head_key(symbol)
    data = canonical_json({"minute": minute, "checkpoint": checkpoint})
    for _ in range(_HEAD_CAS_ATTEMPTS):
        try:
            head: StoredObject | None = store.read(key)
        except ObjectNotFound:
            head = None
        if head is not None:
            current = json.loads(head.data).get("minute")
            if isinstance(current, int) and current >= minute:
                return
        try:
            store.replace(key, data, _META, expected_etag=head.etag if head else None)
            return
        except PreconditionFailed:
            continue
    raise PreconditionFailed(f"{key} kept changing; head not advanced to minute {minute}")
