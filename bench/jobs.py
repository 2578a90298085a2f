"""Jobs benchmarks (issue 7): minute-close-to-published latency and backfill throughput.

    .venv/bin/python bench/jobs.py [--minutes 30]

On a simulated market (BTC, ETH, SOL; default rates, depth@100ms) in a temporary local store:

* ``latency``: for each minute, the three symbols' minute jobs run at once on three threads, as the
  scheduler runs them. Minute close to published is bounded by: the collector finalizing the file
  (``finalize_grace_s`` + one ``finalize_interval_s``), the runner noticing it (one ``tick_seconds``),
  and the job itself (measured here: p50/p99/max). The bound uses the defaults of both configs.
* ``backfill``: a backfill of the same minutes with one worker process per symbol (three processes on
  this machine's two cores), as symbol-minutes per second, extrapolated to 24 h x 3 symbols, and as a
  ratio to the time needed just to decompress and JSON-parse the same raw files in one process, with
  the JSON parser the normalizers use (orjson; the standard library's ``json`` is shown beside it),
  and to the least any reader must do (decompress, split lines, parse each payload: ``minimal``).
  The same comparison in CPU time (the workers' user + system seconds per symbol-minute against the
  parse's) is steadier on a shared host: wall-clock ratio ~ CPU ratio / 2 on two busy cores.
  Starting the workers is measured on a one-minute backfill and counted once: the ``steady``
  figures and the extrapolation to a day use the rest.
* Where the files live (``--dir``, default the system's temp folder) matters on this machine. Its
  disk is ext4 without a journal, which does not reuse an inode freed less than 60 s ago (300 s
  while the inode's table block is not yet written back), and every file created in that block
  group first steps past each such inode (``find_inode_bit`` -> ``recently_deleted``). Writing a
  new file (create, write, rename) cost 30-60 us of CPU in a quiet group and 130-300 us in one
  with recent deletions (the simulation's, a previous run's clean-up, a build). At ~15 objects per
  symbol-minute that was 3-18 % of the backfill's CPU. So both backfills start after everything
  is written back (``os.sync``) and ``--quiet-seconds`` (default 61) have passed;
  ``--dir /dev/shm`` (tmpfs) measures the same code without the disk.

Wall clock on this machine; nothing here asserts a threshold.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from moonstream.collector.config import CollectorConfig
from moonstream.collector.rawfile import ReadReport, decompress_minute, read_minute
from moonstream.jobs.backfill import backfill
from moonstream.jobs.config import JobConfig
from moonstream.jobs.minute import JobContext, calibrate_if_window_end, run_minute
from moonstream.jobs.scheduler import ScheduleConfig
from moonstream.sim import run_simulation
from moonstream.store import open_store
from moonstream.timeutil import parse_minute

SYMBOLS = ("BTC", "ETH", "SOL")
START = parse_minute("2024-01-01T00:00")


def _config(root: Path, site: str) -> JobConfig:
    return JobConfig(
        data_url=str(root / "data"), site_url=str(root / site), symbols=SYMBOLS, exchanges=("binance",)
    )


def read_and_parse_seconds(
    root: Path, minutes: int, loads: Callable[[bytes], Any]
) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, records) to read, decompress and JSON-parse every minute file."""
    store = open_store(str(root / "data"))
    started, cpu_started = time.perf_counter(), time.process_time()
    records = 0
    for symbol in SYMBOLS:
        for minute in range(START, START + minutes):
            for record in read_minute(store, symbol, minute, report=ReadReport()):
                loads(record.payload)
                records += 1
    return time.perf_counter() - started, time.process_time() - cpu_started, records


def minimal_parse_seconds(root: Path, minutes: int) -> float:
    """Wall seconds for the least any reader must do: read each minute file, decompress it, split
    its lines and JSON-parse each payload (no records, no ordering, no checks)."""
    store = open_store(str(root / "data"))
    keys = [key for key in store.list("raw/") if key.endswith(".zst")]
    started = time.perf_counter()
    for key in keys:
        for line in decompress_minute(store.read(key).data).split(b"\n")[:-1]:
            orjson.loads(line.split(b" ", 2)[2])
    return time.perf_counter() - started


def children_cpu_seconds() -> float:
    """User + system CPU of this process's finished children (the backfill's worker processes)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def latency(root: Path, minutes: int) -> dict[str, Any]:
    settle()
    ctx = JobContext.open(_config(root, "site-live"))
    collector, schedule = CollectorConfig(), ScheduleConfig()
    wait_s = collector.finalize_grace_s + collector.finalize_interval_s + schedule.tick_seconds
    durations: list[float] = []
    lock = threading.Lock()
    for minute in range(START, START + minutes):

        def job(symbol: str, minute: int = minute) -> None:
            started = time.perf_counter()
            calibrate_if_window_end(ctx, symbol, minute)  # a read: the runner calibrated ahead
            run_minute(ctx, symbol, minute)
            with lock:
                durations.append(time.perf_counter() - started)
            calibrate_if_window_end(ctx, symbol, minute + 1)  # as the runner does, after publishing

        threads = [threading.Thread(target=job, args=(s,)) for s in SYMBOLS]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    durations.sort()
    p99 = durations[min(len(durations) - 1, int(0.99 * len(durations)))]
    return {
        "symbol_minutes": len(durations),
        "job_seconds": {
            "p50": round(statistics.median(durations), 3),
            "p99": round(p99, 3),
            "max": round(durations[-1], 3),
        },
        "file_ready_and_noticed_seconds_max": wait_s,
        "close_to_published_p99_seconds_bound": round(wait_s + p99, 3),
    }


def settle() -> None:
    """Write back what earlier phases left dirty, so the kernel's writeback of the simulated files
    (or of the previous phase's site) does not compete with the next measurement for the two cores."""
    os.sync()


def throughput(root: Path, minutes: int, quiet_seconds: float) -> dict[str, Any]:
    settle()
    parse_s, parse_cpu_s, records = read_and_parse_seconds(root, minutes, orjson.loads)
    stdlib_parse_s, _, _ = read_and_parse_seconds(root, minutes, json.loads)
    minimal_parse_s = minimal_parse_seconds(root, minutes)
    settle()  # written back: freed inodes wait RECENTCY_MIN (60 s), not RECENTCY_DIRTY (300 s)
    time.sleep(quiet_seconds)  # see the module's docstring
    workers = len(SYMBOLS)
    # Starting the worker processes costs the same whatever the range: measured on one minute, so
    # the extrapolation to a day counts it once.
    settle()
    started, cpu_started = time.perf_counter(), children_cpu_seconds()
    backfill(
        JobContext.open(_config(root, "site-startup")), SYMBOLS, START, START, workers=workers, progress=False
    )
    one_minute, one_minute_cpu = time.perf_counter() - started, children_cpu_seconds() - cpu_started
    ctx = JobContext.open(_config(root, "site-backfill"))
    settle()
    started, cpu_started = time.perf_counter(), children_cpu_seconds()
    report = backfill(ctx, SYMBOLS, START, START + minutes - 1, workers=workers, progress=False)
    wall, cpu = time.perf_counter() - started, children_cpu_seconds() - cpu_started
    per_minute = (wall - one_minute) / (minutes - 1)
    parse_per_minute = parse_s / minutes
    # CPU seconds per symbol-minute, start-up excluded: steadier than wall clock on a shared host
    cpu_per_symbol_minute = (cpu - one_minute_cpu) / ((minutes - 1) * len(SYMBOLS))
    parse_cpu_per_symbol_minute = parse_cpu_s / (minutes * len(SYMBOLS))
    return {
        "steady_cpu_ms_per_symbol_minute": round(cpu_per_symbol_minute * 1000, 1),
        "decompress_and_parse_cpu_ms_per_symbol_minute": round(parse_cpu_per_symbol_minute * 1000, 2),
        "cpu_ratio_to_decompress_and_parse": round(cpu_per_symbol_minute / parse_cpu_per_symbol_minute, 2),
        "symbol_minutes": report.minutes_processed,
        "records": records,
        "workers": workers,
        "wall_s": round(wall, 2),
        "one_minute_wall_s": round(one_minute, 2),
        "steady_wall_s_per_minute_of_3_symbols": round(per_minute, 4),
        "extrapolated_24h_3_symbols_s": round(one_minute + per_minute * 1439, 1),
        "decompress_and_parse_s": round(parse_s, 2),
        "decompress_and_parse_stdlib_json_s": round(stdlib_parse_s, 2),
        "ratio_to_decompress_and_parse": round(wall / parse_s, 2),
        "steady_ratio_to_decompress_and_parse": round(per_minute / parse_per_minute, 2),
        "steady_ratio_to_decompress_and_stdlib_json_parse": round(per_minute / (stdlib_parse_s / minutes), 2),
        "minimal_decompress_split_and_parse_s": round(minimal_parse_s, 2),
        "steady_ratio_to_minimal_parse": round(per_minute / (minimal_parse_s / minutes), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=int, default=30)
    parser.add_argument("--backfill-only", action="store_true", help="skip the latency figures")
    parser.add_argument("--dir", help="folder for the simulated files and sites (default: the temp folder)")
    parser.add_argument(
        "--quiet-seconds",
        type=float,
        default=61.0,
        help="wait before the backfills, for inodes freed earlier to stop slowing file creation",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="moonstream-bench-jobs-", dir=args.dir) as tmp:
        root = Path(tmp)
        run_simulation(list(SYMBOLS), START, args.minutes, 1, str(root / "data"))
        figures = {
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            "minutes": args.minutes,
            "latency": None if args.backfill_only else latency(root, args.minutes),
            "dir": str(Path(tmp).parent),
            "quiet_seconds_before_backfill": args.quiet_seconds,
            "backfill": throughput(root, args.minutes, args.quiet_seconds),
        }
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
