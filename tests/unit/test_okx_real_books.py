"""The OKX order-book engine's CRC32 checksum on real OKX ``books`` messages.

The recording is cryptofeed's OKX sample (``cryptofeed-sample/OKX.ws.1.0``, read from the shared
data, never copied here): lines ``<recv_ts_seconds>: <raw JSON>`` after a ``<url> <-> <ts>`` header,
with outgoing subscribes as ``<url> <- <ts>: <json>`` lines. It was captured in May 2022 and holds
``books`` (400 levels) for ``BTC-USD-220527``, ``UNI-USD-SWAP`` and ``BTC-USDT``: none is the USDT swap
our normalizer accepts, and the messages predate OKX's ``seqId``/``prevSeqId`` fields, which it
requires. So each instrument's ``books`` messages are taken in file order and rewritten minimally:

- ``arg.instId`` (and a data row's ``instId``, if any) becomes ``BTC-USDT-SWAP``, our ``BTC``;
- each data row gets ``prevSeqId``/``seqId``: the snapshot ``-1``/``1``, each following update
  ``prevSeqId`` = the previous ``seqId`` and ``seqId`` = that + 1.

Prices, sizes, ``ts`` and ``checksum`` are left untouched. The normalizer multiplies sizes by the
configured contract value of ``BTC-USDT-SWAP`` (0.01), which is not these instruments' (``BTC-USDT`` is
spot, sized in BTC): the base-unit quantities are therefore not meaningful, but OKX's checksum is
computed on the exchange's **original** price and size strings, which the events keep and the engine
checks, so the checksum verification is valid whatever the contract value.

Each instrument then goes separately through the real path: RawRecords (``ws:books``) ->
``normalize_records`` -> ``step_orderbook`` one minute (by the messages' ``ts``) at a time, with the
state carried through JSON; the ``books.okx`` running totals must show every message verified, no
mismatch and no gap.
"""

from __future__ import annotations

import json
import re
from itertools import groupby
from typing import Any

import pytest

from moonstream.collector.rawfile import RawRecord
from moonstream.jobs.engines.orderbook import step_orderbook
from moonstream.jobs.events import BookDelta, BookSnapshot, Event
from moonstream.jobs.normalize import NormalizeStats, normalize_records
from moonstream.symbols import Exchange, exchange_instrument
from tests.conftest import shared_file

SYMBOL = "BTC"
INSTRUMENT = "BTC-USDT-SWAP"
LINE = re.compile(r"(\d+(?:\.\d+)?): (\{.*\})")
MINUTE_NS = 60 * 1_000_000_000

EXPECTED = {  # instrument -> (snapshots, updates) in the recording
    "BTC-USD-220527": (1, 98),
    "UNI-USD-SWAP": (1, 92),
    "BTC-USDT": (1, 97),
}


def read_books() -> dict[str, list[tuple[float, dict[str, Any]]]]:
    """Each instrument's ``books`` messages ``(recv_ts, message)`` in file order."""
    path = shared_file("cryptofeed-sample/OKX.ws.1.0")
    books: dict[str, list[tuple[float, dict[str, Any]]]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        match = LINE.fullmatch(line)
        if match is None:  # the header, outgoing subscribes
            continue
        msg = json.loads(match.group(2))
        arg = msg.get("arg", {})
        if arg.get("channel") == "books" and "action" in msg:
            books.setdefault(arg["instId"], []).append((float(match.group(1)), msg))
    return books


def rewritten(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages as our BTC swap with chained ``prevSeqId``/``seqId``; nothing else changes."""
    out: list[dict[str, Any]] = []
    seq = 0
    for msg in messages:
        msg = json.loads(json.dumps(msg))
        msg["arg"]["instId"] = INSTRUMENT
        for row in msg["data"]:
            if "instId" in row:
                row["instId"] = INSTRUMENT
            if msg["action"] == "snapshot":
                row["prevSeqId"], row["seqId"] = -1, 1
            else:
                row["prevSeqId"], row["seqId"] = seq, seq + 1
            seq = row["seqId"]
        out.append(msg)
    return out


def minute_of(event: Event) -> int:
    """The minute (since the epoch) of a book event's exchange ``ts``."""
    assert isinstance(event, BookSnapshot | BookDelta)
    return event.ts_ns // MINUTE_NS


def test_the_rewrite_targets_our_btc_swap() -> None:
    assert exchange_instrument(Exchange.OKX, SYMBOL) == INSTRUMENT


@pytest.mark.shared_data
def test_real_okx_books_pass_their_checksums() -> None:
    books = read_books()
    counts = {
        inst: (
            sum(m["action"] == "snapshot" for _, m in msgs),
            sum(m["action"] == "update" for _, m in msgs),
        )
        for inst, msgs in books.items()
    }
    assert counts == EXPECTED
    for inst, lines in books.items():
        assert lines[0][1]["action"] == "snapshot", inst  # each stream starts with its snapshot
        messages = rewritten([m for _, m in lines])
        rows = [row for m in messages for row in m["data"]]
        assert len(rows) == len(messages)  # one book a message
        with_checksum = sum(1 for row in rows if row.get("checksum"))
        assert with_checksum == len(messages), inst  # every 2022 message carries a checksum

        records = [
            RawRecord(round(t * 1e9), "ws:books", json.dumps(m).encode(), "okx", "c1")
            for (t, _), m in zip(lines, messages, strict=True)
        ]
        stats = NormalizeStats()
        events = normalize_records(records, SYMBOL, stats)
        assert not stats.errors, (inst, dict(stats.errors))
        assert len(events) == len(messages)

        minutes = [(minute, list(group)) for minute, group in groupby(events, key=minute_of)]
        assert len(minutes) == 1  # about 11 s of May 2022, one minute
        state: dict[str, Any] = {}
        for minute, group in minutes:
            state, out = step_orderbook(state, group, SYMBOL, minute)
            state = json.loads(json.dumps(state))
        okx = out.stats["books"]["okx"]
        totals = okx["totals"]
        snapshots, updates = EXPECTED[inst]
        assert totals["checksums_verified"] == with_checksum, (inst, totals)
        assert totals["checksum_mismatches"] == 0, (inst, totals)
        assert totals["gaps"] == 0, (inst, totals)
        assert totals["snapshots_used"] == snapshots, (inst, totals)
        assert totals["deltas_applied"] == updates, (inst, totals)
        assert totals["checksums_skipped"] == 0, (inst, totals)
        assert okx["status"] == "synced" and okx["last_update_id"] == 1 + updates, inst
