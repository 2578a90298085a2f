"""A collector killed with SIGKILL mid-minute loses no complete line and leaves no corrupt file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from moonstream.collector.rawfile import (
    PARTIAL_SUFFIX,
    MinuteFileWriter,
    ReadReport,
    iter_minutes,
    list_raw_minutes,
)
from moonstream.store import LocalStore
from moonstream.timeutil import minute_from_date_hhmm, minute_of, minute_start_ns
from tests.conftest import REPO_ROOT

T0 = minute_start_ns(minute_from_date_hhmm("2024-07-18", "2357")) + 17_000_000_000
STEP_NS = 5_000_000  # simulated receive clock: 5 ms per line, 12,000 lines per minute
PRINT_EVERY = 50

CHILD = """
import sys
from pathlib import Path
from moonstream.collector.rawfile import MinuteFileWriter
from moonstream.store import LocalStore

spool, root, t0, step, every = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
writer = MinuteFileWriter(Path(spool), LocalStore(root), "crash-test")
seq = 0
while True:
    now = t0 + seq * step
    pad = "x" * (seq % 997)
    writer.append("BTC", "binance", now, "ws:trade", '{"seq":%d,"pad":"%s"}' % (seq, pad))
    if seq % every == 0:
        writer.finalize_due(now)
        print(seq, flush=True)
    seq += 1
"""


def _run_child_until(spool: Path, root: Path, min_seq: int) -> tuple[int, list[str]]:
    """Start the writer child, SIGKILL it once it reported ``min_seq``; its last reported seq."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    args = [str(spool), str(root), str(T0), str(STEP_NS), str(PRINT_EVERY)]
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, *args], stdout=subprocess.PIPE, env=env, cwd=REPO_ROOT, text=True
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 120
    last = -1
    while last < min_seq:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"writer child exited early with {proc.wait()}")
        last = int(line)
        assert time.monotonic() < deadline, "writer child too slow"
    time.sleep(0.05)  # let it get somewhere in the middle of a line or two
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    rest = proc.stdout.read().split()  # seqs it reported after our last read, before the kill
    proc.stdout.close()
    if rest:
        last = int(rest[-1])
    partials = sorted(str(p.relative_to(spool)) for p in spool.rglob(f"*{PARTIAL_SUFFIX}"))
    return last, partials


def test_sigkill_mid_minute_then_recover(tmp_path: Path) -> None:
    spool, root = tmp_path / "spool", tmp_path / "data"
    last_reported, partials = _run_child_until(spool, root, min_seq=30_000)  # 2.5 simulated minutes
    store = LocalStore(root)
    finalized_before = list_raw_minutes(store, "BTC")
    assert len(finalized_before) >= 2
    assert partials, "the current minute must be a partial file at the kill"

    writer = MinuteFileWriter(spool, store, "crash-test")
    recovered = writer.recover(include_current=True)
    assert len(recovered) == len(partials)
    assert list(spool.rglob(f"*{PARTIAL_SUFFIX}")) == []
    assert writer.counters.torn_lines_dropped <= 1
    assert writer.counters.malformed_lines_dropped == 0

    minutes = list_raw_minutes(store, "BTC")
    assert minutes[0] == minute_of(T0)
    report = ReadReport()
    seqs: list[int] = []
    for minute, records in iter_minutes(store, "BTC", minutes[0], minutes[-1], report=report):
        assert records, f"minute {minute} has no lines"
        for record in records:
            assert minute_of(record.recv_ns) == minute
            doc = json.loads(record.payload)
            assert record.recv_ns == T0 + doc["seq"] * STEP_NS
            seqs.append(doc["seq"])
    assert report.files_corrupt == []
    assert report.lines_malformed == 0
    # every complete line is present, in order, without duplicates ...
    assert seqs == list(range(len(seqs)))
    # ... including every line the child had reported as appended before it was killed
    assert seqs[-1] >= last_reported
    assert len(seqs) - 1 - last_reported <= PRINT_EVERY  # and nothing it had not written yet

    # a restarted writer carries on; re-recovering finds nothing left to do
    again = MinuteFileWriter(spool, store, "crash-test")
    assert again.recover(include_current=True) == []
