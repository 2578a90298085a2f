"""A backfill publishing to S3 (moto's real server over HTTP) and reading raw files from S3 too."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import urllib.request

import boto3
import pytest

from tests.conftest import shared_file

pytestmark = [pytest.mark.integration, pytest.mark.shared_data]


def test_import_and_backfill_through_s3(s3_server: str, s3_bucket: str) -> None:
    source = shared_file("hftbacktest-binance-usdm/btcusdt_20240718.gz")
    env = {**os.environ, "MOONSTREAM_S3_ENDPOINT_URL": s3_server}
    data, site = f"s3://{s3_bucket}/data", f"s3://{s3_bucket}/site"

    def moonstream(*args: str) -> None:
        subprocess.run(
            [sys.executable, "-m", "moonstream.cli", *args], check=True, env=env, capture_output=True
        )

    moonstream("import", str(source), "--data", data, "--symbols", "BTC")
    backfill = ["backfill", "--symbols", "BTC", "--from", "2024-07-18T23:58", "--to", "2024-07-18T23:59"]
    moonstream(*backfill, "--data", data, "--site", site, "--no-progress")

    client = boto3.client("s3", endpoint_url=s3_server)
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket, Prefix="site/")["Contents"])
    assert "site/v1/BTC/market/2024-07-18/2358.json" in keys and "site/v1/BTC/market/latest.json" in keys
    assert any(
        k.startswith("data/raw/BTC/2024-07-18/2358/binance.imp-")
        for k in (o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket, Prefix="data/raw/")["Contents"])
    )
    assert any(
        k.startswith("data/state/BTC/checkpoints/")
        for k in (
            o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket, Prefix="data/state/")["Contents"]
        )
    )

    # What a CDN would fetch from the bucket: the object's own headers, over plain HTTP.
    url = client.generate_presigned_url(
        "get_object", Params={"Bucket": s3_bucket, "Key": "site/v1/BTC/market/2024-07-18/2358.json"}
    )
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        assert response.headers["Content-Encoding"] == "gzip"
        assert response.headers["Content-Type"] == "application/json"
        document = json.loads(gzip.decompress(response.read()))
    assert document["minute"] == "2024-07-18T23:58:00Z"
    assert document["exchanges"]["binance"]["trade_count"] > 0
    latest = client.get_object(Bucket=s3_bucket, Key="site/v1/BTC/market/latest.json")
    assert latest["CacheControl"].startswith("public, max-age=5")
    assert json.loads(gzip.decompress(latest["Body"].read()))["minute"] == "2024-07-18T23:59:00Z"
