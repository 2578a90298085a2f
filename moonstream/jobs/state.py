"""Per-symbol engine state in the data store: immutable per-minute checkpoints plus a head pointer.

    state/{SYM}/checkpoints/{YYYY-MM-DD}/{HHMM}.json   state after that minute (create-only)
    state/{SYM}/head.json                              {"minute": ..., "checkpoint": key} (compare-and-swap)

State is plain JSON (never pickle), gzip-compressed in checkpoints. A checkpoint written by other
engine versions is not resumed from.
Because engines are deterministic, a checkpoint re-computed for the same minute has the same bytes,
so two runners on one minute both succeed in writing it and agree.
"""

from __future__ import annotations

import gzip
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from moonstream.publish.encode import canonical_json, gzip_bytes
from moonstream.store.base import ObjectMeta, ObjectNotFound, PreconditionFailed, Store, StoredObject
from moonstream.timeutil import iso_minute, minute_date_hhmm

logger = logging.getLogger(__name__)

STATE_SCHEMA_VERSION = 1
_META = ObjectMeta("application/json")
# Checkpoints are gzip-compressed (an order book makes them ~200 KB of JSON); the head stays plain.
_CHECKPOINT_META = ObjectMeta("application/json", content_encoding="gzip")
_GZIP_MAGIC = b"\x1f\x8b"
_HEAD_CAS_ATTEMPTS = 8


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


def read_head_minute(store: Store, symbol: str) -> int | None:
    """The last minute whose state was committed, or None."""
    try:
        document = json.loads(store.read_bytes(head_key(symbol)))
    except ObjectNotFound:
        return None
    minute = document.get("minute")
    return minute if isinstance(minute, int) else None


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
    data = gzip_bytes(canonical_json(state.to_document()))
    if replace:
        store.put(key, data, _CHECKPOINT_META)
    else:
        store.create_or_same(key, data, _CHECKPOINT_META)
    _advance_head(store, state.symbol, state.minute, key)


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
