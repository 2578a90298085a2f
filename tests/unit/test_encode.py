"""canonical_json: orjson's fast path must give json.dumps' canonical bytes, or defer to it."""

from __future__ import annotations

import json
import math
import random
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from moonstream.publish import encode
from moonstream.publish.encode import canonical_json


def reference(document: Any) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("ascii")


def random_floats(rng: random.Random, n: int) -> list[float]:
    """Every magnitude (random bit patterns), plus prices, sizes and rounded values."""
    values = []
    for _ in range(n):
        x = struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0]
        if math.isfinite(x):
            values.append(x)
        y = rng.uniform(-1e6, 1e6)
        values += [y, round(y, rng.randint(0, 9)), y * 10.0 ** rng.randint(-12, 20)]
    for k in range(-323, 308):
        values += [10.0**k, -(10.0**k), 1.5 * 10.0**k, 9.999999999999999 * 10.0**k]
    return [v for v in values if math.isfinite(v)]


def test_floats_of_every_magnitude_encode_as_json_writes_them() -> None:
    """Including 1e-5 <= |x| < 1e-4, which orjson writes as 0.0000x and json as 1e-05, and the
    exponent forms from 1e16 up and below 1e-4: those take json's path."""
    rng = random.Random(7)
    values = random_floats(rng, 20_000)
    for value in values:
        assert canonical_json(value) == reference(value), value
    assert canonical_json(values) == reference(values)
    assert canonical_json(1.5e-05) == b"1.5e-05"
    assert canonical_json(1e16) == b"1e+16"
    assert canonical_json(-0.0) == b"-0.0"


def test_documents_like_the_engines_publish_take_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(3)
    document = {
        "symbol": "BTC",
        "minute": "2024-01-01T00:00Z",
        "levels": [[round(42000 + rng.random() * 100, 1), round(rng.random() * 5, 3)] for _ in range(500)],
        "zones": {"long": [{"price": 41000.5, "score": 0.25, "n": 3}], "short": []},
        "ok": True,
        "every ASCII character but DEL, escapes included": "".join(map(chr, range(127))),
        "counts": {"b": 2**63, "a": -(2**63), "c": 0},
    }
    fallbacks = []
    monkeypatch.setattr(encode, "_stdlib_json", lambda doc: fallbacks.append(doc) or reference(doc))
    assert canonical_json(document) == reference(document)
    assert fallbacks == []


@pytest.mark.parametrize(
    "document",
    [
        {"b": None, "a": 1},  # null: orjson would also write NaN as null
        {"name": "caf\u00e9"},  # non-ASCII: json escapes it
        {"name": "a\x7fb"},  # DEL: json escapes it
        {"text": "a\x7f and \u00e9"},
        {"key with \u2603": 1},
        {1: "int key", 2: "json turns keys into strings"},
        {"big": 2**64, "small": -(2**63) - 1},  # beyond orjson's 64 bits
        {"np": np.float64(0.1), "nested": [np.float64(2.5)]},  # a float subclass
        {"t": (1, 2.5, "x")},
        [[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]] * 3,
        {"deep": json.loads("[" * 300 + "]" * 300)},  # beyond orjson's depth limit
    ],
)
def test_what_orjson_would_write_differently_is_written_by_json(document: Any) -> None:
    assert canonical_json(document) == reference(document)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_nan_and_infinity_are_refused(value: float) -> None:
    with pytest.raises(ValueError):
        canonical_json({"x": [1.0, value]})


@dataclass
class Point:
    x: int


@pytest.mark.parametrize("value", [Point(1), np.int64(3), object(), {"a": {1, 2}}])
def test_what_json_refuses_is_refused(value: Any) -> None:
    with pytest.raises(TypeError):
        canonical_json(value)
