"""The Lambda minute handler, run locally against the real S3 server; and two runners racing.

Two runners (threads, each with its own store clients) run the same symbols and minutes at the same
time against one bucket: every object is written exactly once, the state is never corrupted, and
the site equals a single runner's, byte for byte.
"""

from __future__ import annotations

import threading
from pathlib import Path

import boto3
import pytest

from moonstream.collector.importers import import_file
from moonstream.jobs import handlers
from moonstream.jobs.config import JobConfig
from moonstream.jobs.minute import PRODUCTS, JobContext, run_minute
from moonstream.jobs.state import read_head_minute
from moonstream.publish.history import HISTORY_FORMATS
from moonstream.store import open_store
from moonstream.timeutil import parse_minute
from tests.conftest import shared_file

pytestmark = [pytest.mark.integration, pytest.mark.shared_data]

FILES = [f"hftbacktest-binance-usdm/{s}usdt_20240718.gz" for s in ("btc", "eth")]
MINUTES = range(parse_minute("2024-07-18T23:57"), parse_minute("2024-07-18T23:59") + 1)


def _bucket_objects(endpoint: str, bucket: str, prefix: str) -> dict[str, bytes]:
    client = boto3.client("s3", endpoint_url=endpoint)
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
    return {k[len(prefix) :]: client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}


@pytest.fixture()
def imported(s3_server: str, s3_bucket: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("MOONSTREAM_S3_ENDPOINT_URL", s3_server)
    data = open_store(f"s3://{s3_bucket}/data")
    for name in FILES:
        import_file(shared_file(name), data, symbols={"BTC", "ETH"})
    return s3_bucket


def test_lambda_handler_runs_one_symbol_minute(
    imported: str, s3_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MOONSTREAM_DATA_URL", f"s3://{imported}/data")
    monkeypatch.setenv("MOONSTREAM_SITE_URL", f"s3://{imported}/site")
    monkeypatch.setenv("MOONSTREAM_SYMBOLS", "BTC,ETH")
    monkeypatch.setenv("MOONSTREAM_EXCHANGES", "binance")
    answer = handlers.minute_handler({"symbol": "BTC", "minute": "2024-07-18T23:58"}, None)
    assert answer["results"][0]["records"] > 0
    site = _bucket_objects(s3_server, imported, "site/")
    for product in PRODUCTS:
        assert f"v1/BTC/{product}/2024-07-18/2358.json" in site and f"v1/BTC/{product}/latest.json" in site
    # every immutable version and pointer of the minute, index.json and health.json, the minute's .bin
    # frames and each framed product's partial history chunk, and the history index of each.
    written = sum(k.endswith(".bin") for k in site) + len(HISTORY_FORMATS)
    assert answer["results"][0]["objects_written"] == 2 * len(PRODUCTS) + 2 + written
    # An EventBridge Scheduler event: the minute before its time, every configured symbol.
    answer = handlers.minute_handler({"time": "2024-07-18T23:59:05Z"}, None)
    assert [r["symbol"] for r in answer["results"]] == ["BTC", "ETH"]
    assert all(r["minute"] == "2024-07-18T23:58:00Z" for r in answer["results"])
    with pytest.raises(handlers.HandlerError, match="DOGE"):
        handlers.minute_handler({"symbol": "DOGE", "minute": "2024-07-18T23:58"}, None)

    # The hourly prune: three days on, only the head's checkpoint of BTC's two minutes is kept.
    handlers.minute_handler({"symbol": "BTC", "minute": "2024-07-18T23:59"}, None)
    checkpoints = "data/state/BTC/checkpoints/2024-07-18/"
    assert sorted(_bucket_objects(s3_server, imported, checkpoints)) == ["2358.json", "2359.json"]
    event = {"symbol": "BTC", "time": "2024-07-21T23:58:30Z"}
    dry = handlers.prune_handler({**event, "dry_run": True}, None)
    assert dry["results"] == [{"symbol": "BTC", "listed": 2, "deleted": 1, "kept": 1, "dry_run": True}]
    assert len(_bucket_objects(s3_server, imported, checkpoints)) == 2
    answer = handlers.prune_handler(event, None)
    assert answer["results"][0]["deleted"] == 1
    assert sorted(_bucket_objects(s3_server, imported, checkpoints)) == ["2359.json"]


def test_two_runners_at_once_equal_one(imported: str, s3_server: str, tmp_path: Path) -> None:
    def config(site: str) -> JobConfig:
        return JobConfig(data_url=f"s3://{imported}/{site}-data", site_url=f"s3://{imported}/{site}",
                         symbols=("BTC", "ETH"), exchanges=("binance",))  # fmt: skip

    # The same raw files under two data prefixes: one for the racing pair, one for the single runner.
    raw = _bucket_objects(s3_server, imported, "data/raw/")
    client = boto3.client("s3", endpoint_url=s3_server)
    for prefix in ("race-data", "single-data"):
        for key, body in raw.items():
            client.put_object(Bucket=imported, Key=f"{prefix}/raw/{key}", Body=body)

    single = JobContext.open(config("single"))
    for symbol in ("BTC", "ETH"):
        for minute in MINUTES:
            run_minute(single, symbol, minute)

    written: list[int] = []
    errors: list[BaseException] = []
    start_together = threading.Barrier(2)

    def runner() -> None:
        ctx = JobContext.open(config("race"))  # its own clients, like another machine
        start_together.wait()
        try:
            for minute in MINUTES:
                for symbol in ("BTC", "ETH"):
                    written.append(run_minute(ctx, symbol, minute)[1].immutables_written)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=runner) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    race_site, single_site = (
        _bucket_objects(s3_server, imported, "race/"),
        _bucket_objects(s3_server, imported, "single/"),
    )
    assert race_site == single_site
    versions = [k for k in race_site if "/2024-" in k and not k.endswith(".partial.bin")]
    assert len([k for k in versions if "/market/" in k]) == 6
    # Each version was created exactly once: one runner created it, the other found identical bytes.
    assert sum(written) == len(versions)
    state = open_store(f"s3://{imported}/race-data")
    for symbol in ("BTC", "ETH"):
        assert read_head_minute(state, symbol) == MINUTES[-1]
    single_state = _bucket_objects(s3_server, imported, "single-data/state/")
    assert _bucket_objects(s3_server, imported, "race-data/state/") == single_state
