"""The order-book frame record: a fixed 4,096-byte little-endian binary record (docs/formats.md).

::

    offset  size  type     field
    0       8     float64  ts          window start, seconds since the Unix epoch (UTC)
    8       8     float64  src         source code (SOURCE_CODES: 1 = Binance USDT-M)
    16      8     float64  price_min   lower edge of bucket 0
    24      8     float64  price_max   lower edge of bucket n-1
    32      8     float64  step        bucket width
    40      4     uint32   n_buckets   n, 1..1000
    44      8     float64  norm_p50    p50 of the non-zero bucket values (USD)
    52      8     float64  norm_p95    p95 of the non-zero bucket values (USD)
    60      8     float64  total_bid   USD resting on the bid side inside the grid
    68      8     float64  total_ask   USD resting on the ask side inside the grid
    76      n     uint8    bid intensity per bucket
    76+n    n     uint8    ask intensity per bucket
    76+2n   ...   zero padding to 4,096 bytes

The liquidation frame (``encode_liq_frame`` / ``decode_liq_frame``, further down) is the same size
with a 48-byte header ``<dddddI`` + 4 zero bytes and long/short rows.

Publish knows nothing of engines: these functions take plain numbers and byte arrays.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass

RECORD_SIZE = 4096
HEADER = struct.Struct("<dddddIdddd")
HEADER_SIZE = HEADER.size  # 76
MAX_BUCKETS = 1000
SOURCE_CODES: dict[str, int] = {"binance": 1, "bybit": 2, "okx": 3}
"""``src`` values: the exchange whose reconstructed book the frame shows."""

assert HEADER_SIZE == 76
assert HEADER_SIZE + 2 * MAX_BUCKETS <= RECORD_SIZE


class FrameFormatError(ValueError):
    """A record that is not a valid order-book frame (size, n, non-finite values, padding)."""


@dataclass(frozen=True)
class FrameRecord:
    """A decoded record: the header numbers and the two intensity rows (``bytes`` of length n)."""

    ts: float
    src: float
    price_min: float
    price_max: float
    step: float
    n_buckets: int
    norm_p50: float
    norm_p95: float
    total_bid: float
    total_ask: float
    bid: bytes
    ask: bytes

    def prices(self) -> list[float]:
        """Bucket lower edges by index (``price_min + i × step``), never by repeated addition."""
        return [self.price_min + i * self.step for i in range(self.n_buckets)]


def encode_frame(
    *,
    ts: float,
    src: float,
    price_min: float,
    price_max: float,
    step: float,
    norm_p50: float,
    norm_p95: float,
    total_bid: float,
    total_ask: float,
    bid: bytes | bytearray | Sequence[int],
    ask: bytes | bytearray | Sequence[int],
) -> bytes:
    """One 4,096-byte record. ``bid``/``ask`` are u8 intensities of the same length n (1..1000)."""
    bid_bytes, ask_bytes = bytes(bid), bytes(ask)
    n = len(bid_bytes)
    if n != len(ask_bytes) or not 1 <= n <= MAX_BUCKETS:
        raise FrameFormatError(f"bid/ask rows must have the same length in 1..{MAX_BUCKETS}")
    numbers = (ts, src, price_min, price_max, step, norm_p50, norm_p95, total_bid, total_ask)
    if not all(math.isfinite(x) for x in numbers):
        raise FrameFormatError("header values must be finite")
    header = HEADER.pack(ts, src, price_min, price_max, step, n, norm_p50, norm_p95, total_bid, total_ask)
    record = header + bid_bytes + ask_bytes
    return record + bytes(RECORD_SIZE - len(record))


def decode_frame(record: bytes) -> FrameRecord:
    """Inverse of :func:`encode_frame`; raises :class:`FrameFormatError` on a malformed record."""
    if len(record) != RECORD_SIZE:
        raise FrameFormatError(f"a frame record is {RECORD_SIZE} bytes, got {len(record)}")
    ts, src, pmin, pmax, step, n, p50, p95, tbid, task = HEADER.unpack_from(record, 0)
    if not 1 <= n <= MAX_BUCKETS:
        raise FrameFormatError(f"n_buckets {n} outside 1..{MAX_BUCKETS}")
    if not all(math.isfinite(x) for x in (ts, src, pmin, pmax, step, p50, p95, tbid, task)):
        raise FrameFormatError("non-finite header value")
    end = HEADER_SIZE + 2 * n
    if any(record[end:]):
        raise FrameFormatError("non-zero padding")
    bid = bytes(record[HEADER_SIZE : HEADER_SIZE + n])
    ask = bytes(record[HEADER_SIZE + n : end])
    return FrameRecord(ts, src, pmin, pmax, step, n, p50, p95, tbid, task, bid, ask)


def decode_frames(blob: bytes) -> list[FrameRecord]:
    """Every record of a concatenation of records (a minute's ``.bin`` or an hourly chunk)."""
    if len(blob) % RECORD_SIZE:
        raise FrameFormatError(f"length {len(blob)} is not a multiple of {RECORD_SIZE}")
    return [decode_frame(blob[i : i + RECORD_SIZE]) for i in range(0, len(blob), RECORD_SIZE)]


LIQ_HEADER = struct.Struct("<dddddI4x")
LIQ_HEADER_SIZE = LIQ_HEADER.size  # 48
assert LIQ_HEADER_SIZE == 48
assert LIQ_HEADER_SIZE + 2 * MAX_BUCKETS <= RECORD_SIZE


@dataclass(frozen=True)
class LiqFrameRecord:
    """A decoded liquidation frame: header numbers and the long/short rows (``bytes`` of length n)."""

    ts: float
    src: float
    price_min: float
    price_max: float
    step: float
    n_buckets: int
    long: bytes
    short: bytes

    def prices(self) -> list[float]:
        """Bucket prices by index (``price_min + i × step``), never by repeated addition."""
        return [self.price_min + i * self.step for i in range(self.n_buckets)]


def intensity_u8(values: Sequence[float]) -> bytes:
    """Scale 0-1 intensities to u8: 0 stays 0, else ``clip(rint(255 × x), 1, 255)`` (half to even).

    ``rint`` is Python's ``round`` on the float64 product ``255.0 * x``; values above 1 saturate at 255,
    and a non-zero value never becomes 0. Raises :class:`FrameFormatError` on a negative or
    non-finite value.
    """
    out = bytearray(len(values))
    for i, x in enumerate(values):
        if not math.isfinite(x) or x < 0:
            raise FrameFormatError(f"intensity {x!r} is not a finite value >= 0")
        if x > 0:
            out[i] = min(255, max(1, round(255.0 * float(x))))
    return bytes(out)


def encode_liq_frame(
    *,
    ts: float,
    src: float,
    price_min: float,
    price_max: float,
    step: float,
    long: bytes | bytearray | Sequence[int],
    short: bytes | bytearray | Sequence[int],
) -> bytes:
    """One 4,096-byte liquidation record. ``long``/``short`` are u8 rows of the same length n (1..1000)."""
    long_bytes, short_bytes = bytes(long), bytes(short)
    n = len(long_bytes)
    if n != len(short_bytes) or not 1 <= n <= MAX_BUCKETS:
        raise FrameFormatError(f"long/short rows must have the same length in 1..{MAX_BUCKETS}")
    if not all(math.isfinite(x) for x in (ts, src, price_min, price_max, step)):
        raise FrameFormatError("header values must be finite")
    record = LIQ_HEADER.pack(ts, src, price_min, price_max, step, n) + long_bytes + short_bytes
    return record + bytes(RECORD_SIZE - len(record))


def decode_liq_frame(record: bytes) -> LiqFrameRecord:
    """Inverse of :func:`encode_liq_frame`; raises :class:`FrameFormatError` on a malformed record."""
    if len(record) != RECORD_SIZE:
        raise FrameFormatError(f"a frame record is {RECORD_SIZE} bytes, got {len(record)}")
    ts, src, pmin, pmax, step, n = LIQ_HEADER.unpack_from(record, 0)
    if not 1 <= n <= MAX_BUCKETS:
        raise FrameFormatError(f"n_buckets {n} outside 1..{MAX_BUCKETS}")
    if not all(math.isfinite(x) for x in (ts, src, pmin, pmax, step)):
        raise FrameFormatError("non-finite header value")
    end = LIQ_HEADER_SIZE + 2 * n
    if any(record[44:LIQ_HEADER_SIZE]) or any(record[end:]):
        raise FrameFormatError("non-zero padding")
    long = bytes(record[LIQ_HEADER_SIZE : LIQ_HEADER_SIZE + n])
    short = bytes(record[LIQ_HEADER_SIZE + n : end])
    return LiqFrameRecord(ts, src, pmin, pmax, step, n, long, short)


def decode_liq_frames(blob: bytes) -> list[LiqFrameRecord]:
    """Every record of a concatenation of liquidation records (a minute's ``.bin`` or an hourly chunk)."""
    if len(blob) % RECORD_SIZE:
        raise FrameFormatError(f"length {len(blob)} is not a multiple of {RECORD_SIZE}")
    return [decode_liq_frame(blob[i : i + RECORD_SIZE]) for i in range(0, len(blob), RECORD_SIZE)]


__all__ = [
    "HEADER_SIZE",
    "LIQ_HEADER_SIZE",
    "MAX_BUCKETS",
    "RECORD_SIZE",
    "SOURCE_CODES",
    "FrameFormatError",
    "FrameRecord",
    "LiqFrameRecord",
    "decode_frame",
    "decode_frames",
    "decode_liq_frame",
    "decode_liq_frames",
    "encode_frame",
    "encode_liq_frame",
    "intensity_u8",
]
