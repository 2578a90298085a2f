"""Checkpoint retention end to end, on a local store and on the real (moto) S3 server.

A simulated BTC market (an order-book snapshot every 10 minutes, so a cold start could warm up from a
different one than the first run did) is backfilled across midnight; pruning "three days later" leaves
exactly the 00:00 checkpoint and the head's. Afterwards the next minute still runs from the head, and a
re-run of the pruned range publishes the very same bytes: from the 00:00 checkpoint directly when the
range starts at 00:01, and by recomputing from it (:func:`state_before`) when it starts mid-hour.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import boto3
import pytest

from moonstream.cli import main as cli_main
from moonstream.jobs.backfill import backfill, backfill_symbol, plan_backfill
from moonstream.jobs.config import JobConfig
from moonstream.jobs.minute import JobContext, run_minute
from moonstream.jobs.retention import RetentionPolicy, prune_checkpoints, state_before
from moonstream.jobs.state import checkpoint_key, list_checkpoints, read_head
from moonstream.publish.encode import canonical_json
from moonstream.sim import SimRates, run_simulation
from moonstream.store import LocalStore, Store, open_store
from moonstream.timeutil import parse_minute

pytestmark = [pytest.mark.integration]

START = parse_minute("2024-01-01T23:45")  # the simulation's first minute (with a book snapshot)
SIM_MINUTES = 28  # 23:45 .. 00:12
RATES = SimRates(trades_per_sec=2.0, opens_per_sec=1.0, book_levels=200, snapshot_every_minutes=10)
MIDNIGHT = parse_minute("2024-01-02T00:00")
THREE_DAYS_LATER = MIDNIGHT + 3 * 1440


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sim")
    run_simulation(["BTC"], START, SIM_MINUTES, 11, str(root), RATES, workers=1, exchanges=("binance",))
    return root


def _config(data: str, site: str) -> JobConfig:
    return JobConfig(data_url=data, site_url=site, symbols=("BTC",), exchanges=("binance",))


def _site_digest(site: Store) -> dict[str, str]:
    """Every visible site object's sha256 (health.json is rewritten by every run: left out)."""
    return {
        key: hashlib.sha256(site.read_bytes(key)).hexdigest()
        for key in site.list("")
        if not key.startswith(".") and key != "v1/health.json"
    }


def _documents(data: Store, minutes: range) -> dict[int, bytes]:
    """Each minute's checkpoint, as canonical JSON (independent of its compression)."""
    found = {}
    for minute in minutes:
        raw = data.read_bytes(checkpoint_key("BTC", minute))
        found[minute] = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    return found


def test_prune_then_rerun_and_next_minute_on_a_local_store(simulated: Path, tmp_path: Path) -> None:
    shutil.copytree(simulated, tmp_path / "data")
    ctx = JobContext.open(_config(str(tmp_path / "data"), str(tmp_path / "site")))
    first, last = START + 1, MIDNIGHT + 10  # 23:46 .. 00:10
    backfill(ctx, ["BTC"], first, last, progress=False, now_minute=last + 1)  # recent: every checkpoint
    site_before = _site_digest(ctx.site)
    original = _documents(ctx.data, range(first, last + 1))

    report = prune_checkpoints(ctx.data, "BTC", THREE_DAYS_LATER, RetentionPolicy())
    assert (report.listed, report.deleted, report.kept) == (last - first + 1, last - first - 1, 2)
    assert [key for _, key in list_checkpoints(ctx.data, "BTC")] == [
        "state/BTC/checkpoints/2024-01-02/0000.json",
        "state/BTC/checkpoints/2024-01-02/0010.json",
    ]
    assert read_head(ctx.data, "BTC") == (last, checkpoint_key("BTC", last))
    # Still done across midnight: the 00:10 checkpoint follows an unbroken run of published minutes.
    assert plan_backfill(ctx, ["BTC"], first, last)[0].already_done == last - first + 1
    assert plan_backfill(ctx, ["BTC"], first, MIDNIGHT - 1)[0].already_done == 0  # no checkpoint left

    # A re-run starting at 00:01 resumes from the 00:00 checkpoint: nothing on the site changes.
    rerun = backfill(ctx, ["BTC"], MIDNIGHT + 1, MIDNIGHT + 3, progress=False)
    assert (rerun.minutes_processed, rerun.objects_written) == (3, 0)
    assert _site_digest(ctx.site) == site_before

    # Mid-hour: the state is recomputed from 00:00 and equals the one the first run saved ...
    recomputed = state_before(ctx, "BTC", MIDNIGHT + 8)
    assert canonical_json(recomputed.to_document()) == original[MIDNIGHT + 7]
    # ... so a backfill from it publishes the same bytes (a cold start would warm up from the 00:05
    # snapshot instead and conflict with the published versions).
    rerun = backfill(ctx, ["BTC"], MIDNIGHT + 8, MIDNIGHT + 9, progress=False)
    assert (rerun.minutes_processed, rerun.objects_written) == (2, 0)
    assert _site_digest(ctx.site) == site_before
    # An old range commits at its end (and at :00 minutes) only: 00:09's checkpoint, not 00:08's.
    assert _documents(ctx.data, range(MIDNIGHT + 9, MIDNIGHT + 10)) == {MIDNIGHT + 9: original[MIDNIGHT + 9]}
    assert not ctx.data.exists(checkpoint_key("BTC", MIDNIGHT + 8))

    # The next live minute runs from the head's checkpoint, as before the prune.
    _, result = run_minute(ctx, "BTC", last + 1)
    assert result.records > 0 and result.objects_written > 0
    assert read_head(ctx.data, "BTC")[0] == last + 1
    assert ctx.site.exists(ctx.layout.version_key("BTC", "market", last + 1))


def test_prune_command_on_s3_then_rerun_and_next_minute(
    simulated: Path,
    s3_server: str,
    s3_bucket: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("MOONSTREAM_S3_ENDPOINT_URL", s3_server)
    data_url, site_url = f"s3://{s3_bucket}/data", f"s3://{s3_bucket}/site"
    local = LocalStore(simulated)
    data = open_store(data_url)
    for key in local.list("raw/BTC/"):
        stored = local.read(key)
        data.create(key, stored.data, stored.meta)
    ctx = JobContext.open(_config(data_url, site_url))
    first, last = MIDNIGHT - 6, MIDNIGHT + 4  # 23:54 .. 00:04, warmed up from the 23:45 snapshot
    backfill_symbol(ctx, "BTC", first, last, now_minute=last + 1)  # recent: every checkpoint
    site_before = _site_digest(ctx.site)
    original = _documents(ctx.data, range(first, last + 1))

    def checkpoint_keys() -> list[str]:
        client = boto3.client("s3", endpoint_url=s3_server)
        listing = client.list_objects_v2(Bucket=s3_bucket, Prefix="data/state/BTC/checkpoints/")
        return sorted(o["Key"] for o in listing.get("Contents", []))

    prune = ["prune", "--data", data_url, "--symbols", "BTC", "--now", "2024-01-05T00:00"]
    assert cli_main([*prune, "--dry-run"]) == 0
    assert "would delete 9, kept 2" in capsys.readouterr().out
    assert len(checkpoint_keys()) == 11
    assert cli_main(prune) == 0
    assert "deleted 9, kept 2" in capsys.readouterr().out
    assert checkpoint_keys() == [
        "data/state/BTC/checkpoints/2024-01-02/0000.json",
        "data/state/BTC/checkpoints/2024-01-02/0004.json",
    ]

    # (a cold start at 00:03 would warm up from the 23:55 snapshot and conflict)
    recomputed = state_before(ctx, "BTC", MIDNIGHT + 3)
    assert canonical_json(recomputed.to_document()) == original[MIDNIGHT + 2]
    # 00:03..00:04 counts as done (the head's 00:04 checkpoint follows both published minutes); 00:03
    # alone is not, and its re-run rewrites its checkpoint and the site with the same bytes.
    assert backfill_symbol(ctx, "BTC", MIDNIGHT + 3, last).minutes_already_done == 2
    rerun = backfill_symbol(ctx, "BTC", MIDNIGHT + 3, MIDNIGHT + 3)
    assert (rerun.minutes_processed, rerun.objects_written) == (1, 0)
    assert _site_digest(ctx.site) == site_before
    assert _documents(ctx.data, range(MIDNIGHT + 3, MIDNIGHT + 4)) == {MIDNIGHT + 3: original[MIDNIGHT + 3]}

    _, result = run_minute(ctx, "BTC", last + 1)
    assert result.records > 0
    assert read_head(ctx.data, "BTC")[0] == last + 1
    market: dict[str, Any] = json.loads(
        gzip.decompress(ctx.site.read_bytes(ctx.layout.version_key("BTC", "market", last + 1)))
    )
    assert market["minute"] == "2024-01-02T00:05:00Z"
