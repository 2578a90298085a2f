"""Benchmarks: one command, JSON figures on stdout.

    .venv/bin/python bench/run.py            (what `make bench` runs)

Uses the real recordings in $MOONSTREAM_SHARED_DATA (default ../shared/data); prints
{"skipped": reason} for a figure whose input is absent. Figures are wall-clock on this machine,
best of a few repetitions where cheap; nothing here asserts a threshold.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from moonstream.collector.importers import run_import
from moonstream.collector.rawfile import ReadReport, read_minute
from moonstream.jobs.backfill import backfill
from moonstream.jobs.config import JobConfig
from moonstream.jobs.minute import JobContext
from moonstream.jobs.normalize import NormalizeStats, normalize_records
from moonstream.store import open_store
from moonstream.timeutil import parse_minute

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("MOONSTREAM_SHARED_DATA", REPO.parent / "shared" / "data"))
FILES = [
    SHARED / "hftbacktest-binance-usdm" / name
    for name in ("btcusdt_20240718.gz", "btcusdt_20240719.gz", "ethusdt_20240718.gz", "ethusdt_20240719.gz")
]
FIRST, LAST = parse_minute("2024-07-18T23:57"), parse_minute("2024-07-19T00:05")
SYMBOLS = ("BTC", "ETH")


def bench_pipeline(work: Path) -> dict[str, Any]:
    data_url, site_url = str(work / "data"), str(work / "site")
    gc.collect()  # what the previous stage left is freed here, not inside the next measurement
    started = time.perf_counter()
    reports = run_import(FILES, data_url, set(SYMBOLS), "auto")
    import_s = time.perf_counter() - started
    lines = sum(r.lines_read for r in reports)

    store = open_store(data_url)
    gc.collect()  # what the previous stage left is freed here, not inside the next measurement
    started = time.perf_counter()
    records = []
    for symbol in SYMBOLS:
        for minute in range(FIRST, LAST + 1):
            records.append((symbol, read_minute(store, symbol, minute, report=ReadReport())))
    read_s = time.perf_counter() - started
    n_records = sum(len(r) for _, r in records)

    gc.collect()  # what the previous stage left is freed here, not inside the next measurement
    started = time.perf_counter()
    stats = NormalizeStats()
    for symbol, minute_records in records:
        normalize_records(minute_records, symbol, stats)
    normalize_s = time.perf_counter() - started

    config = JobConfig(data_url=data_url, site_url=site_url, symbols=SYMBOLS, exchanges=("binance",))
    ctx = JobContext.open(config)
    gc.collect()  # what the previous stage left is freed here, not inside the next measurement
    started = time.perf_counter()
    report = backfill(ctx, SYMBOLS, FIRST, LAST, progress=False)
    backfill_s = time.perf_counter() - started
    gc.collect()  # what the previous stage left is freed here, not inside the next measurement
    started = time.perf_counter()
    backfill(ctx, SYMBOLS, FIRST, LAST, progress=False)
    rerun_s = time.perf_counter() - started
    return {
        "import": {
            "files": len(FILES),
            "lines": lines,
            "seconds": round(import_s, 3),
            "lines_per_s": round(lines / import_s),
        },
        "read_minute_files": {
            "records": n_records,
            "seconds": round(read_s, 3),
            "records_per_s": round(n_records / read_s),
        },
        "normalize": {
            "records": stats.records,
            "events": stats.event_total(),
            "seconds": round(normalize_s, 3),
            "records_per_s": round(stats.records / normalize_s),
        },
        "backfill": {
            "symbol_minutes": report.minutes_processed,
            "records": report.records,
            "seconds": round(backfill_s, 3),
            "records_per_s": round(report.records / backfill_s),
            "ratio_to_read_plus_normalize": round(backfill_s / (read_s + normalize_s), 2),
        },
        "backfill_rerun_nothing_to_do_seconds": round(rerun_s, 3),
    }


def main() -> int:
    logging.basicConfig(level=logging.WARNING)
    figures: dict[str, Any] = {
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
    }
    if all(f.is_file() for f in FILES):
        with tempfile.TemporaryDirectory(prefix="moonstream-bench-") as work:
            figures["pipeline_hftbacktest_btc_eth_2024"] = bench_pipeline(Path(work))
    else:
        figures["pipeline_hftbacktest_btc_eth_2024"] = {"skipped": f"shared data not found at {SHARED}"}
    figures["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    json.dump(figures, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
