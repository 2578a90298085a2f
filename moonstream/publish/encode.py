"""Canonical encodings: the same document always gives the same bytes.

JSON is compact, key-sorted, ASCII-only and refuses NaN/inf; gzip carries no file name and a zero
mtime, so a re-run of a backfill reproduces every object byte for byte.

The canonical form is the standard library's ``json.dumps`` (sorted keys, compact separators,
``ensure_ascii``, ``allow_nan=False``). orjson writes the same bytes several times faster for what
the engines publish, so it writes first, and its output is kept only where it cannot differ from
json's (:func:`canonical_json`).
"""

from __future__ import annotations

import gzip
import json
from typing import Any

import orjson

GZIP_LEVEL = 6

_ORJSON_OPTIONS = (
    orjson.OPT_SORT_KEYS
    | orjson.OPT_PASSTHROUGH_SUBCLASS  # str/int/dict/list subclasses: left to json's rules
    | orjson.OPT_PASSTHROUGH_DATACLASS  # refused by json, so refused here
    | orjson.OPT_PASSTHROUGH_DATETIME
)
_MAY_DIFFER = (b"e-", b"0.0000", b"null", b"\x7f")
"""Output of orjson that json.dumps may write differently, or refuse: a negative exponent (json
writes ``1e-05`` where orjson writes ``1e-5``; both write ``1e+16``), ``0.0000`` (orjson writes
1e-5 <= |x| < 1e-4 as ``0.00001``...), ``null`` (orjson writes NaN and infinity as null where json
raises) and DEL (json escapes it as ``\\u007f``); non-ASCII is checked by ``bytes.isascii``.
Every other character, escapes included, is written alike. These may also occur inside a string;
that only costs speed."""


def canonical_json(document: Any) -> bytes:
    """Compact, sorted, deterministic JSON bytes; raises ValueError on NaN or infinity.

    Always the bytes of ``json.dumps(document, sort_keys=True, separators=(",", ":"),
    allow_nan=False)``: orjson's output where :data:`_MAY_DIFFER` finds nothing it could write
    differently, json's otherwise (and where orjson refuses the document: non-string keys, integers
    beyond 64 bits, subclasses). One leniency: orjson encodes enums and UUIDs, which json refuses."""
    try:
        data = orjson.dumps(document, option=_ORJSON_OPTIONS)
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return _stdlib_json(document)
    if not data.isascii() or any(text in data for text in _MAY_DIFFER):
        return _stdlib_json(document)
    return data


def _stdlib_json(document: Any) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("ascii")


def gzip_bytes(data: bytes) -> bytes:
    """Deterministic gzip (mtime 0, no name)."""
    return gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0)


def decode_json_object(data: bytes, content_encoding: str | None) -> Any:
    """Inverse of what the publisher stores: gunzip if needed, then parse JSON."""
    raw = gzip.decompress(data) if content_encoding == "gzip" else data
    return json.loads(raw)
