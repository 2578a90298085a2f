"""Backfill with one process per symbol gives the same site as one process; --dry-run writes nothing."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import shared_file

pytestmark = [pytest.mark.integration, pytest.mark.shared_data]

FILES = [f"hftbacktest-binance-usdm/{s}usdt_2024071{d}.gz" for s in ("btc", "eth") for d in (8, 9)]
RANGE = ["--from", "2024-07-18T23:57", "--to", "2024-07-19T00:05"]


def moonstream(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "moonstream.cli", *args], check=True, capture_output=True, text=True
    )
    return done.stdout + done.stderr


def tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_workers_match_single_process_and_dry_run(tmp_path: Path) -> None:
    data = tmp_path / "data"
    moonstream("import", *(str(shared_file(f)) for f in FILES), "--data", str(data), "--symbols", "BTC,ETH")
    common = ["--symbols", "BTC,ETH", *RANGE, "--no-progress"]
    single, parallel = tmp_path / "single", tmp_path / "parallel"

    plan = moonstream("backfill", *common, "--data", str(data), "--site", str(single), "--dry-run")
    assert "BTC: 9 minutes, 9 with raw files, 0 already done, 9 to process" in plan
    assert "ETH: 9 minutes, 9 with raw files, 0 already done, 9 to process" in plan
    assert not single.exists() or not any(single.rglob("*.json"))

    moonstream("backfill", *common, "--data", str(data), "--site", str(single))
    # A separate data store for the parallel run, so it cannot resume from the first run's checkpoints.
    data2 = tmp_path / "data2"
    moonstream("import", *(str(shared_file(f)) for f in FILES), "--data", str(data2), "--symbols", "BTC,ETH")
    summary = moonstream("backfill", *common, "--data", str(data2), "--site", str(parallel), "--workers", "2")
    assert "18 minutes processed" in summary
    assert tree(single) == tree(parallel)

    plan = moonstream("backfill", *common, "--data", str(data), "--site", str(single), "--dry-run")
    assert "BTC: 9 minutes, 9 with raw files, 9 already done, 0 to process" in plan
