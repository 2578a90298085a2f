"""The liquidation frame: docs/formats.md's golden vector, the intensity rule and the V1 builder."""

from __future__ import annotations

import hashlib
import re
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from moonstream.jobs.engines import liq_frame_from_v1
from moonstream.publish.frames import (
    LIQ_HEADER_SIZE,
    RECORD_SIZE,
    FrameFormatError,
    decode_liq_frame,
    decode_liq_frames,
    encode_liq_frame,
    intensity_u8,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "formats.md"
GOLDEN = dict(ts=1721347020.0, src=64012.345, price_min=57540.0, price_max=57600.0, step=20.0)
LONG, SHORT = [0.0, 0.0001, 0.5, 1.0], [1.0, 0.2549, 0.0, 0.0039]


def doc_section() -> str:
    text = DOC.read_text(encoding="utf-8")
    start = text.index("## Liquidation frame (4,096 bytes)")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else len(text)]


def doc_vector() -> tuple[bytes, str]:
    """The golden record as the doc writes it: the hex dump rows, the zero tail and the sha256."""
    section = doc_section()
    block = section[section.index("```\noffset") : section.rindex("```")]
    head = b""
    tail = 0
    for line in block.splitlines()[2:]:
        offset, value = line.split()[:2]
        if value == "00" and line.split()[2] == "×":
            tail = int(line.split()[3])
            assert int(offset) == len(head)
            continue
        assert int(offset) == len(head), line
        head += bytes.fromhex(value)
    sha = re.search(r"`([0-9a-f]{64})`", section)
    assert sha is not None
    return head + bytes(tail), sha.group(1)


def golden_record() -> bytes:
    return encode_liq_frame(**GOLDEN, long=intensity_u8(LONG), short=intensity_u8(SHORT))


def test_encoder_matches_the_documented_golden_vector() -> None:
    documented, sha = doc_vector()
    record = golden_record()
    assert len(documented) == RECORD_SIZE
    assert record == documented
    assert hashlib.sha256(record).hexdigest() == sha


def test_decoder_reads_the_documented_golden_vector() -> None:
    frame = decode_liq_frame(doc_vector()[0])
    assert (frame.ts, frame.src, frame.price_min, frame.price_max, frame.step) == tuple(GOLDEN.values())
    assert frame.n_buckets == 4
    assert list(frame.long) == [0, 1, 128, 255]
    assert list(frame.short) == [255, 65, 0, 1]
    assert frame.prices() == [57540.0, 57560.0, 57580.0, 57600.0]
    assert decode_liq_frames(doc_vector()[0] * 3) == [frame] * 3


def test_header_is_48_bytes_with_zero_pad_and_packed_rows() -> None:
    record = encode_liq_frame(**GOLDEN, long=bytes([1] * 1000), short=bytes([2] * 1000))
    assert LIQ_HEADER_SIZE == 48
    assert struct.unpack_from("<dddddI", record) == (*GOLDEN.values(), 1000)
    assert record[44:48] == bytes(4)
    assert record[48:1048] == bytes([1] * 1000) and record[1048:2048] == bytes([2] * 1000)
    assert record[2048:] == bytes(RECORD_SIZE - 2048)
    small = encode_liq_frame(**GOLDEN, long=b"\x07\x08", short=b"\x09\x0a")
    assert small[48:52] == b"\x07\x08\x09\x0a" and not any(small[52:])


def test_intensity_rule() -> None:
    assert list(intensity_u8([0.0, 1e-9, 0.5, 0.5 / 255 * 3, 1.0, 7.0])) == [0, 1, 128, 2, 255, 255]
    # half to even on the float64 product: 255 × 0.5 = 127.5 → 128; 255 × (2.5 / 255) ≈ 2.5 → 2
    assert intensity_u8([2.5 / 255])[0] == round(255.0 * (2.5 / 255))
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(FrameFormatError):
            intensity_u8([bad])


@pytest.mark.parametrize(
    "mutate",
    [
        lambda r: r[:-1],
        lambda r: r[:40] + struct.pack("<I", 0) + r[44:],
        lambda r: r[:40] + struct.pack("<I", 1001) + r[44:],
        lambda r: r[:44] + b"\x01" + r[45:],
        lambda r: r[:-1] + b"\x01",
        lambda r: struct.pack("<d", float("nan")) + r[8:],
    ],
)
def test_decoder_rejects_malformed_records(mutate: Callable[[bytes], bytes]) -> None:
    with pytest.raises(FrameFormatError):
        decode_liq_frame(mutate(golden_record()))


def test_encoder_rejects_bad_rows_and_headers() -> None:
    with pytest.raises(FrameFormatError):
        encode_liq_frame(**GOLDEN, long=b"\x01", short=b"\x01\x02")
    with pytest.raises(FrameFormatError):
        encode_liq_frame(**GOLDEN, long=b"", short=b"")
    with pytest.raises(FrameFormatError):
        encode_liq_frame(**GOLDEN, long=bytes(1001), short=bytes(1001))
    with pytest.raises(FrameFormatError):
        encode_liq_frame(**{**GOLDEN, "src": float("inf")}, long=b"\x01", short=b"\x01")


def test_frame_from_a_v1_body_uses_minute_start_and_the_json_intensities() -> None:
    minute = 1721347020 // 60
    body: dict[str, Any] = {
        "ts": (minute + 1) * 60,
        "src": 64012.345,
        "step": 20.0,
        "price_min": 57540.0,
        "price_max": 57600.0,
        "prices": [57540.0, 57560.0, 57580.0, 57600.0],
        "long_intensity": LONG,
        "short_intensity": SHORT,
    }
    assert liq_frame_from_v1(body, minute) == golden_record()
    frame = decode_liq_frame(liq_frame_from_v1(body, minute) or b"")
    assert frame.ts == body["ts"] - 60
    assert liq_frame_from_v1({**body, "src": None, "prices": []}, minute) is None
