"""What a job process imports: a backfill worker on a local store must not pay for boto3."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_jobs_on_a_local_store_do_not_import_boto3(tmp_path: Path) -> None:
    code = (
        "import sys, moonstream.jobs.backfill, moonstream.jobs.scheduler\n"
        "from moonstream.store import open_store\n"
        "open_store(sys.argv[1])\n"
        "print(sorted(m for m in ('boto3', 'botocore', 's3fs', 'moonstream.store.s3') if m in sys.modules))\n"
        "from moonstream.store import S3Store\n"
        "print(S3Store.__module__)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "store")], capture_output=True, text=True, check=True
    ).stdout.split("\n")
    assert out[0] == "[]"
    assert out[1] == "moonstream.store.s3"  # still importable from moonstream.store, on first use
