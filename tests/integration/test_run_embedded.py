"""``moonstream run`` (what ``make run`` starts) with no exchange reachable: it serves the site,
reports the exchanges disconnected in ``v1/health.json``, keeps reconnecting with backoff, and stops
cleanly on Ctrl-C (SIGINT). Every exchange URL points at a closed port on loopback."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _health(port: int) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/health.json", timeout=2) as response:
            return json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None


def test_run_without_exchanges_reports_disconnected_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    closed = f"127.0.0.1:{_free_port()}"  # nothing listens here
    env = dict(os.environ)
    for exchange in ("BINANCE", "BYBIT", "OKX"):
        env[f"MOONSTREAM_{exchange}_WS_URL"] = f"ws://{closed}"
        env[f"MOONSTREAM_{exchange}_REST_URL"] = f"http://{closed}"
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moonstream.cli", "run", "--port", str(port)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        health: dict[str, Any] | None = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            health = _health(port)
            collectors = (health or {}).get("collectors", {})
            exchanges = collectors.get("c1", {}).get("exchanges", {})
            if len(exchanges) == 3 and all(e["reconnects"] >= 2 for e in exchanges.values()):
                break
            time.sleep(0.5)
        assert health is not None, "the site was not served"
        exchanges = health["collectors"]["c1"]["exchanges"]
        assert set(exchanges) == {"binance", "bybit", "okx"}
        assert all(not e["connected"] and e["reconnects"] >= 2 for e in exchanges.values()), exchanges
        assert closed not in json.dumps(health) and str(tmp_path) not in json.dumps(health)
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, output
    assert "stopped cleanly" in output
    assert "reconnecting in" in output, "the collector retries with backoff"
    assert "Traceback" not in output
