"""Canonical encodings: the same document always gives the same bytes.

JSON is compact, key-sorted, ASCII-only and refuses NaN/inf; gzip carries no file name and a zero
mtime, so a re-run of a backfill reproduces every object byte for byte.
"""

from __future__ import annotations

import gzip
import json
from typing import Any

GZIP_LEVEL = 6


def canonical_json(document: Any) -> bytes:
    """Compact, sorted, deterministic JSON bytes; raises ValueError on NaN or infinity."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("ascii")


def gzip_bytes(data: bytes) -> bytes:
    """Deterministic gzip (mtime 0, no name)."""
    return gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0)


def decode_json_object(data: bytes, content_encoding: str | None) -> Any:
    """Inverse of what the publisher stores: gunzip if needed, then parse JSON."""
    raw = gzip.decompress(data) if content_encoding == "gzip" else data
    return json.loads(raw)
