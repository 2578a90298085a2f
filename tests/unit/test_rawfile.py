"""Raw minute files: keys, lines, compression, the live writer and the readers."""

from __future__ import annotations

import errno
import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard

from moonstream.collector.rawfile import (
    RAW_META,
    MinuteFileWriter,
    RawConflictError,
    RawFormatError,
    RawKey,
    RawRecord,
    ReadReport,
    compress_minute,
    decompress_minute,
    encode_line,
    iter_minutes,
    list_raw_minutes,
    parse_line,
    parse_lines,
    parse_raw_key,
    raw_key,
    read_minute,
    write_minute_file,
)
from moonstream.store import LocalStore
from moonstream.store.base import ObjectMeta, StoreUnavailable
from moonstream.symbols import Exchange
from moonstream.timeutil import NS_PER_MINUTE, NS_PER_SECOND, minute_from_date_hhmm, minute_start_ns

M0 = minute_from_date_hhmm("2024-07-18", "2357")
T0 = minute_start_ns(M0)
BOOK = b'{"stream":"btcusdt@bookTicker","data":{"e":"bookTicker","u":4984028370881,"s":"BTCUSDT"}}'


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "data")


def _decoded(store: LocalStore, key: str) -> bytes:
    return decompress_minute(store.read_bytes(key))


# -- keys ---------------------------------------------------------------------------------------


def test_raw_key_round_trip() -> None:
    key = raw_key("BTC", M0, Exchange.BINANCE, "c1")
    assert key == "raw/BTC/2024-07-18/2357/binance.c1.jsonl.zst"
    assert parse_raw_key(key) == RawKey("BTC", M0, "binance", "c1")
    assert raw_key("1000PEPE", M0 + 3, "okx", "imp-0123456789") == (
        "raw/1000PEPE/2024-07-19/0000/okx.imp-0123456789.jsonl.zst"
    )


@pytest.mark.parametrize(
    "key",
    [
        "raw/BTC/2024-07-18/2357/binance.c.1.jsonl.zst",  # dot in collector
        "raw/BTC/2024-07-18/2357/kraken.c1.jsonl.zst",  # unknown exchange
        "raw/btc/2024-07-18/2357/binance.c1.jsonl.zst",  # lower-case symbol
        "raw/BTC/2024-13-18/2357/binance.c1.jsonl.zst",  # month 13
        "raw/BTC/2024-07-18/2460/binance.c1.jsonl.zst",  # 24:60
        "raw/BTC/2024-07-18/2357/binance.c1.jsonl",  # not finalized
        "raw/BTC/2024-07-18/binance.c1.jsonl.zst",  # no HHMM
        "raw/BTC/2024-07-18/2357/binance.-c1.jsonl.zst",  # collector starts with '-'
    ],
)
def test_parse_raw_key_rejects_malformed(key: str) -> None:
    with pytest.raises(ValueError):
        parse_raw_key(key)


def test_raw_key_rejects_bad_parts() -> None:
    with pytest.raises(ValueError):
        raw_key("BTC", M0, "binance", "Upper")
    with pytest.raises(ValueError):
        raw_key("BTC", M0, "binance", "x" * 42)
    assert raw_key("BTC", M0, "binance", "x" * 41).endswith("x" * 41 + ".jsonl.zst")


def test_keys_sort_by_time() -> None:
    keys = [raw_key("BTC", M0 + i, "binance", "c1") for i in (0, 2, 1, 61, 1440 * 40)]
    minutes = [parse_raw_key(k).minute for k in sorted(keys)]
    assert minutes == sorted(minutes)


# -- lines --------------------------------------------------------------------------------------


def test_encode_and_parse_line() -> None:
    line = encode_line(1721347021080832061, "ws:bookTicker", BOOK)
    assert line == b"1721347021080832061 ws:bookTicker " + BOOK + b"\n"
    record = parse_line(line, "binance", "c1")
    assert (record.recv_ns, record.channel, record.payload) == (1721347021080832061, "ws:bookTicker", BOOK)
    assert (record.exchange, record.collector) == ("binance", "c1")
    ratio = encode_line(5, "rest:ratio:topLongShortAccountRatio", "[]")
    assert parse_line(ratio, "binance", "c1").channel == "rest:ratio:topLongShortAccountRatio"
    empty = encode_line(7, "conn:open", b"")
    assert empty == b"7 conn:open \n"
    assert parse_line(empty, "okx", "c1").payload == b""


def test_payload_spaces_survive_and_newlines_become_spaces() -> None:
    payload = b'{"a": "x y",\r\n "b": 1}\n'
    line = encode_line(1, "rest:oi", payload)
    assert line == b'1 rest:oi {"a": "x y",   "b": 1} \n'
    assert parse_line(line, "binance", "c").payload == b'{"a": "x y",   "b": 1} '


@pytest.mark.parametrize(
    ("recv_ns", "channel"), [(-1, "ws:depth"), (1, "depth"), (1, "WS:depth"), (1, "ws:de pth"), (1, "ws:")]
)
def test_encode_line_rejects(recv_ns: int, channel: str) -> None:
    with pytest.raises(RawFormatError):
        encode_line(recv_ns, channel, b"{}")


@pytest.mark.parametrize(
    "line",
    [b"123 ws:depth", b"12a ws:depth {}", b" ws:depth {}", b"1 Ws:depth {}", b"1 ws:depth {\r}", b""],
)
def test_parse_line_rejects(line: bytes) -> None:
    with pytest.raises(RawFormatError):
        parse_line(line, "binance", "c1")


def test_parse_lines_gives_exactly_what_parse_line_gives_line_by_line() -> None:
    # A validated tag does not excuse the rest of a line: each rejected line reuses a tag seen before.
    lines = [
        b"1 ws:depth {}",
        b"2 ws:depth {\r}",
        b"3a ws:depth {}",
        b"123456789012345678901 ws:depth {}",
        b"4 ws:depth",
        b"5 ws:depth {}\n",
        b"6 ws:depth {\n}",
        b"7 Ws:depth {}",
        b"8 conn:open ",
        b"",
        b"9 ws:depth " + BOOK,
    ]
    expected: list[RawRecord] = []
    rejected = 0
    for line in lines:
        try:
            expected.append(parse_line(line, "binance", "c1"))
        except RawFormatError:
            rejected += 1
    assert parse_lines(lines, "binance", "c1") == (expected, rejected)
    assert [r.recv_ns for r in expected] == [1, 5, 8, 9] and rejected == 7


# -- complete files -----------------------------------------------------------------------------


def test_write_minute_file_is_deterministic_sorted_and_create_only(store: LocalStore) -> None:
    lines = [
        (T0 + 30, "ws:trade", b'{"t":2}'),
        (T0 + 10, "ws:trade", b'{"t":1}'),
        (T0 + 30, "ws:depth", b"{}"),
    ]
    assert write_minute_file(store, "BTC", M0, Exchange.BINANCE, "c1", lines) is True
    key = raw_key("BTC", M0, "binance", "c1")
    blob = store.read_bytes(key)
    expected = f'{T0 + 10} ws:trade {{"t":1}}\n{T0 + 30} ws:trade {{"t":2}}\n{T0 + 30} ws:depth {{}}\n'
    assert decompress_minute(blob) == expected.encode()
    assert blob == compress_minute(expected.encode())
    params = zstandard.get_frame_parameters(blob)
    assert (params.content_size, params.dict_id, params.has_checksum) == (len(expected), 0, True)
    assert store.read(key).meta.content_type == "application/zstd"
    # same lines again: nothing written, same bytes
    assert write_minute_file(store, "BTC", M0, "binance", "c1", reversed(lines[::-1])) is False
    assert store.read_bytes(key) == blob
    with pytest.raises(RawConflictError):
        write_minute_file(store, "BTC", M0, "binance", "c1", lines[:2])
    assert store.read_bytes(key) == blob


def test_same_lines_other_encoding_counts_as_same(store: LocalStore) -> None:
    content = encode_line(T0, "ws:trade", b"{}")
    other = zstandard.ZstdCompressor(level=19).compress(content)
    key = raw_key("BTC", M0, "binance", "c1")
    store.create(key, other, RAW_META)
    assert write_minute_file(store, "BTC", M0, "binance", "c1", [(T0, "ws:trade", b"{}")]) is False


def test_write_minute_file_rejects_lines_outside_the_minute(store: LocalStore) -> None:
    with pytest.raises(ValueError, match="outside"):
        write_minute_file(store, "BTC", M0, "binance", "c1", [(T0 + NS_PER_MINUTE, "ws:trade", b"{}")])
    with pytest.raises(ValueError, match="at least one line"):
        write_minute_file(store, "BTC", M0, "binance", "c1", [])
    assert list(store.list("raw/")) == []


def test_decompress_minute_rejects_truncated_and_trailing_data() -> None:
    blob = compress_minute(b"1 ws:trade {}\n" * 100)
    for bad in (blob[:-4], blob + b"x", blob + blob, b"not zstd"):
        with pytest.raises(RawFormatError):
            decompress_minute(bad)


# -- readers ------------------------------------------------------------------------------------


def _write_four(store: LocalStore) -> None:
    """Two exchanges x two collectors in one minute, with ties across files."""
    write_minute_file(
        store, "BTC", M0, "binance", "c2", [(T0 + 5, "ws:trade", b"b2-5"), (T0 + 9, "ws:trade", b"b2-9")]
    )
    write_minute_file(
        store, "BTC", M0, "binance", "c1", [(T0 + 5, "ws:trade", b"b1-5"), (T0 + 5, "ws:depth", b"b1-5d")]
    )
    write_minute_file(
        store, "BTC", M0, "okx", "c1", [(T0 + 1, "ws:trades", b"o1-1"), (T0 + 9, "ws:books", b"o1-9")]
    )
    write_minute_file(store, "BTC", M0, "okx", "c2", [(T0 + 5, "ws:trades", b"o2-5")])


def test_read_minute_merges_by_receive_time_with_stable_ties(store: LocalStore) -> None:
    _write_four(store)
    write_minute_file(store, "ETH", M0, "binance", "c1", [(T0 + 2, "ws:trade", b"eth")])
    report = ReadReport()
    records = read_minute(store, "BTC", M0, report=report)
    assert [r.payload for r in records] == [b"o1-1", b"b1-5", b"b1-5d", b"b2-5", b"o2-5", b"b2-9", b"o1-9"]
    assert [(r.exchange, r.collector) for r in records[:2]] == [("okx", "c1"), ("binance", "c1")]
    assert (report.files_read, report.lines_read, report.files_corrupt) == (4, 7, [])


def test_list_and_iter_minutes(store: LocalStore) -> None:
    for offset in (0, 2, 3, 1440):  # 2357, 2359, 0000 next day, 2357 next day
        write_minute_file(
            store, "BTC", M0 + offset, "binance", "c1", [(T0 + offset * NS_PER_MINUTE, "ws:trade", b"x")]
        )
    store.put("raw/BTC/2024-07-18/2358/binance.c1.jsonl.zst.tmp", b"junk", ObjectMeta())
    store.put("raw/BTC/2024-07-18/2358/readme.txt", b"junk", ObjectMeta())
    assert list_raw_minutes(store, "BTC") == [M0, M0 + 2, M0 + 3, M0 + 1440]
    assert list_raw_minutes(store, "BTC", M0 + 1, M0 + 3) == [M0 + 2, M0 + 3]
    assert list_raw_minutes(store, "ETH") == []
    got = [(minute, len(records)) for minute, records in iter_minutes(store, "BTC", M0, M0 + 4)]
    assert got == [(M0, 1), (M0 + 1, 0), (M0 + 2, 1), (M0 + 3, 1), (M0 + 4, 0)]


def test_corrupt_file_and_malformed_lines_are_reported_not_raised(store: LocalStore) -> None:
    _write_four(store)
    bad_key = raw_key("BTC", M0, "bybit", "c1")
    store.create(bad_key, b"\x28\xb5\x2f\xfd garbage", RAW_META)
    mixed = encode_line(T0 + 3, "ws:trade", b"ok") + b"no channel\n" + encode_line(T0 + 4, "ws:trade", b"ok2")
    store.create(raw_key("BTC", M0, "bybit", "c2"), compress_minute(mixed), RAW_META)
    report = ReadReport()
    records = read_minute(store, "BTC", M0, report=report)
    assert len(records) == 9
    assert report.files_corrupt == [bad_key]
    assert (report.files_read, report.lines_malformed) == (5, 1)
    assert report.as_dict()["files_corrupt"] == [bad_key]


# -- live writer --------------------------------------------------------------------------------


def _writer(tmp_path: Path, store: LocalStore, **kwargs: int) -> MinuteFileWriter:
    return MinuteFileWriter(tmp_path / "spool", store, "c1", **kwargs)


def _partials(tmp_path: Path) -> list[str]:
    spool = tmp_path / "spool"
    return sorted(str(p.relative_to(spool)) for p in spool.rglob("*") if p.is_file())


def test_writer_finalizes_after_grace(tmp_path: Path, store: LocalStore) -> None:
    writer = _writer(tmp_path, store, grace_ns=2 * NS_PER_SECOND)
    writer.append("BTC", Exchange.BINANCE, T0 + 1, "ws:bookTicker", BOOK)
    writer.append("BTC", "binance", T0 + 2, "rest:oi", b'{"x":\n1}')
    writer.append("ETH", "binance", T0 + 3, "ws:trade", "{}")
    writer.append("BTC", "binance", T0 + NS_PER_MINUTE, "ws:trade", b"next")
    assert _partials(tmp_path) == [
        "BTC/2024-07-18/2357/binance.c1.jsonl.partial",
        "BTC/2024-07-18/2358/binance.c1.jsonl.partial",
        "ETH/2024-07-18/2357/binance.c1.jsonl.partial",
    ]
    minute_end = T0 + NS_PER_MINUTE
    assert writer.finalize_due(minute_end + 2 * NS_PER_SECOND) == []  # grace not yet over
    assert list(store.list("raw/")) == []
    done = writer.finalize_due(minute_end + 2 * NS_PER_SECOND + 1)
    assert done == [raw_key("BTC", M0, "binance", "c1"), raw_key("ETH", M0, "binance", "c1")]
    assert _partials(tmp_path) == ["BTC/2024-07-18/2358/binance.c1.jsonl.partial"]
    assert not (tmp_path / "spool" / "ETH" / "2024-07-18").exists()  # emptied directories are removed
    assert _decoded(store, done[0]) == encode_line(
        T0 + 1, "ws:bookTicker", BOOK
    ) + b'%d rest:oi {"x": 1}\n' % (T0 + 2)
    counters = writer.counters
    assert (counters.lines, counters.newline_replacements, counters.files_finalized) == (4, 1, 2)
    assert counters.bytes == sum(len(encode_line(t, c, p)) for t, c, p in [
        (T0 + 1, "ws:bookTicker", BOOK), (T0 + 2, "rest:oi", b'{"x": 1}'), (T0 + 3, "ws:trade", b"{}"),
        (T0 + NS_PER_MINUTE, "ws:trade", b"next"),
    ])  # fmt: skip
    # a late line for a finalized minute is dropped and counted, never a conflict
    writer.append("BTC", "binance", T0 + 5, "ws:trade", b"late")
    assert writer.counters.late_lines_dropped == 1
    assert writer.finalize_all() == [raw_key("BTC", M0 + 1, "binance", "c1")]
    assert _partials(tmp_path) == []
    assert writer.counters.files_conflict == 0


def test_writer_sorts_out_of_order_lines_at_finalize(tmp_path: Path, store: LocalStore) -> None:
    writer = _writer(tmp_path, store)
    for offset, payload in ((5, b"a"), (3, b"b"), (5, b"c"), (1, b"d")):
        writer.append("BTC", "binance", T0 + offset, "ws:trade", payload)
    (key,) = writer.finalize_all()
    assert [r.payload for r in read_minute(store, "BTC", M0)] == [b"d", b"b", b"a", b"c"]
    assert key.endswith("binance.c1.jsonl.zst")


def test_recover_drops_torn_last_line_and_finalizes(tmp_path: Path, store: LocalStore) -> None:
    partial = tmp_path / "spool/BTC/2024-07-18/2357/binance.c1.jsonl.partial"
    partial.parent.mkdir(parents=True)
    good = encode_line(T0 + 1, "ws:trade", b"1") + encode_line(T0 + 2, "ws:trade", b"2")
    partial.write_bytes(good + b'%d ws:trade {"torn' % (T0 + 3))
    other = tmp_path / "spool/BTC/2024-07-18/2357/binance.c9.jsonl.partial"
    other.write_bytes(good)
    writer = _writer(tmp_path, store)
    assert writer.recover(now_ns=T0 + 10 * NS_PER_MINUTE) == [raw_key("BTC", M0, "binance", "c1")]
    assert _decoded(store, raw_key("BTC", M0, "binance", "c1")) == good
    assert writer.counters.torn_lines_dropped == 1
    assert _partials(tmp_path) == ["BTC/2024-07-18/2357/binance.c9.jsonl.partial"]  # not ours: left alone


def test_recover_adopts_current_minute_and_repairs_its_tail(tmp_path: Path, store: LocalStore) -> None:
    partial = tmp_path / "spool/BTC/2024-07-18/2357/okx.c1.jsonl.partial"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(encode_line(T0 + 1, "ws:trades", b"1") + b"%d ws:tr" % (T0 + 2))
    writer = _writer(tmp_path, store)
    assert writer.recover(now_ns=T0 + 30 * NS_PER_SECOND) == []
    writer.append("BTC", "okx", T0 + 3, "ws:trades", b"3")
    assert writer.counters.torn_lines_dropped == 1
    assert writer.finalize_due(T0 + 2 * NS_PER_MINUTE) == [raw_key("BTC", M0, "okx", "c1")]
    assert [(r.recv_ns, r.payload) for r in read_minute(store, "BTC", M0)] == [(T0 + 1, b"1"), (T0 + 3, b"3")]


def test_close_then_restart_in_same_minute_gives_one_file(tmp_path: Path, store: LocalStore) -> None:
    first = _writer(tmp_path, store)
    first.append("BTC", "binance", T0 + 1, "ws:trade", b"before")
    first.append("BTC", "binance", T0 - 1, "ws:trade", b"previous minute")
    assert first.close(now_ns=T0 + 10 * NS_PER_SECOND) == [raw_key("BTC", M0 - 1, "binance", "c1")]
    second = _writer(tmp_path, store)
    assert second.recover(now_ns=T0 + 11 * NS_PER_SECOND) == []
    second.append("BTC", "binance", T0 + 2, "ws:trade", b"after")
    second.finalize_due(T0 + 5 * NS_PER_MINUTE)
    assert [r.payload for r in read_minute(store, "BTC", M0)] == [b"before", b"after"]


def test_recover_include_current_finalizes_everything(tmp_path: Path, store: LocalStore) -> None:
    first = _writer(tmp_path, store)
    first.append("BTC", "binance", T0 + 1, "ws:trade", b"x")
    first.close(now_ns=T0 + 2)
    second = _writer(tmp_path, store)
    assert second.recover(include_current=True, now_ns=T0 + 3) == [raw_key("BTC", M0, "binance", "c1")]
    second.append("BTC", "binance", T0 + 4, "ws:trade", b"y")
    assert second.counters.late_lines_dropped == 1


def test_conflict_keeps_partial_aside_and_never_overwrites(tmp_path: Path, store: LocalStore) -> None:
    write_minute_file(store, "BTC", M0, "binance", "c1", [(T0, "ws:trade", b"already there")])
    key = raw_key("BTC", M0, "binance", "c1")
    before = store.read_bytes(key)
    writer = _writer(tmp_path, store)
    writer.append("BTC", "binance", T0 + 1, "ws:trade", b"different")
    assert writer.finalize_all() == []
    assert writer.counters.files_conflict == 1
    assert store.read_bytes(key) == before
    assert _partials(tmp_path) == ["BTC/2024-07-18/2357/binance.c1.jsonl.conflict"]
    # recover ignores the set-aside file
    assert _writer(tmp_path, store).recover(include_current=True) == []


def test_identical_existing_file_counts_unchanged(tmp_path: Path, store: LocalStore) -> None:
    write_minute_file(store, "BTC", M0, "binance", "c1", [(T0 + 1, "ws:trade", b"same")])
    writer = _writer(tmp_path, store)
    writer.append("BTC", "binance", T0 + 1, "ws:trade", b"same")
    assert writer.finalize_all() == [raw_key("BTC", M0, "binance", "c1")]
    assert (writer.counters.files_unchanged, writer.counters.files_finalized) == (1, 0)


class _FlakyStore(LocalStore):
    failures = 1

    def create(self, key: str, data: bytes, meta: ObjectMeta) -> str:
        if self.failures:
            self.failures -= 1
            raise StoreUnavailable("simulated outage")
        return super().create(key, data, meta)


def test_store_outage_keeps_partial_and_retries(tmp_path: Path) -> None:
    store = _FlakyStore(tmp_path / "data")
    writer = _writer(tmp_path, store)
    writer.append("BTC", "binance", T0 + 1, "ws:trade", b"x")
    assert writer.finalize_due(T0 + 2 * NS_PER_MINUTE) == []
    assert writer.counters.finalize_errors == 1
    assert _partials(tmp_path) == ["BTC/2024-07-18/2357/binance.c1.jsonl.partial"]
    assert writer.finalize_due(T0 + 2 * NS_PER_MINUTE) == [raw_key("BTC", M0, "binance", "c1")]
    assert _partials(tmp_path) == []


def _open_spool_fds(spool: Path) -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}").startswith(str(spool))
        except OSError:
            continue
    return count


@pytest.fixture
def many_symbols() -> Iterator[list[str]]:
    yield [f"S{i}" for i in range(8)]


def test_open_handles_are_bounded(tmp_path: Path, store: LocalStore, many_symbols: list[str]) -> None:
    writer = _writer(tmp_path, store, max_open_files=3)
    for round_ in range(3):
        for symbol in many_symbols:
            writer.append(symbol, "binance", T0 + round_, "ws:trade", b"%d" % round_)
            assert _open_spool_fds(tmp_path / "spool") <= 3
    writer.finalize_all()
    assert _open_spool_fds(tmp_path / "spool") == 0
    for symbol in many_symbols:
        assert [r.payload for r in read_minute(store, symbol, M0)] == [b"0", b"1", b"2"]


class _DiskFullFile(io.FileIO):
    """Writes half of what it is given, then fails like a full disk."""

    def write(self, data: bytes | memoryview) -> int:  # type: ignore[override]
        chunk = bytes(data)
        super().write(chunk[: len(chunk) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")


def test_failed_write_leaves_no_fragment(tmp_path: Path, store: LocalStore) -> None:
    writer = _writer(tmp_path, store)
    writer.append("BTC", "binance", T0 + 1, "ws:trade", b"first")
    ident = ("BTC", M0, "binance")
    partial = writer._partials[ident]  # failure injection: swap in a handle that fails mid-line
    assert partial.handle is not None
    partial.handle.close()
    failing = _DiskFullFile(os.open(partial.path, os.O_RDWR | os.O_APPEND), "r+")
    partial.handle = writer._open[ident] = failing
    with pytest.raises(OSError, match="No space"):
        writer.append("BTC", "binance", T0 + 2, "ws:trade", b"second, torn by the full disk")
    assert partial.path.read_bytes() == encode_line(T0 + 1, "ws:trade", b"first")
    failing.close()
    partial.handle = None
    del writer._open[ident]
    writer.append("BTC", "binance", T0 + 3, "ws:trade", b"third")
    writer.finalize_all()
    assert [r.payload for r in read_minute(store, "BTC", M0)] == [b"first", b"third"]
    assert writer.counters.torn_lines_dropped == 1


def test_finalize_drops_lines_outside_the_minute(tmp_path: Path, store: LocalStore) -> None:
    partial = tmp_path / "spool/BTC/2024-07-18/2357/binance.c1.jsonl.partial"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(
        encode_line(T0 + 1, "ws:trade", b"in")
        + encode_line(T0 + NS_PER_MINUTE, "ws:trade", b"out")
        + b"\0\0\n"
    )
    writer = _writer(tmp_path, store)
    writer.recover(include_current=True)
    assert [r.payload for r in read_minute(store, "BTC", M0)] == [b"in"]
    assert writer.counters.malformed_lines_dropped == 2


def test_corrupt_file_is_logged_once_but_reported_every_time(
    store: LocalStore, caplog: pytest.LogCaptureFixture
) -> None:
    bad_key = raw_key("SOL", M0, "okx", "logged-once")
    store.create(bad_key, compress_minute(b"1 ws:trade {}\n")[:-3], RAW_META)
    reports = [ReadReport(), ReadReport()]
    with caplog.at_level("ERROR"):
        for report in reports:
            assert read_minute(store, "SOL", M0, report=report) == []
    assert [r.files_corrupt for r in reports] == [[bad_key], [bad_key]]
    assert sum(bad_key in r.getMessage() for r in caplog.records) == 1
