"""Collector throughput: the real collector vs a bare websockets receive loop on the same local stream.

    .venv/bin/python bench/collector.py [--messages 300000] [--runs 3]

A server process replays real recorded Binance combined-stream messages (cycled) as fast as the
socket takes them: frames are pre-encoded and written straight to the transport after the
websockets handshake, so the server is not the bottleneck. Each client runs in its own process:

* ``bare``: ``await ws.recv(decode=False)`` in a loop, counting messages;
* ``collector``: :class:`moonstream.collector.capture.Collector` (REST off), every message routed,
  queued and appended to minute files in a temporary spool; done when every line is on disk.

Prints JSON: per client wall time, msg/s, CPU seconds (user+sys of the whole process, all threads,
from the first message to the last line on disk), CPU microseconds per message, peak RSS; and the
collector/bare CPU ratio. ``--runs N`` runs N pairs (bare, then collector) and adds the ratio of each
pair, their median, and the ratio of the lowest CPU per message of each client: on a shared machine
the lowest is the least disturbed. Asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import resource
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RECORDING = "hftbacktest-binance-usdm/btcusdt_20240719.gz"


def _shared() -> Path:
    return Path(os.environ.get("MOONSTREAM_SHARED_DATA", REPO.parent / "shared" / "data"))


def _messages() -> list[bytes]:
    out = []
    with gzip.open(_shared() / RECORDING, "rb") as handle:
        for line in handle:
            payload = line.rstrip(b"\n").split(b" ", 1)[1]
            if payload.startswith(b'{"stream"'):
                out.append(payload)
    return out


def _frame(payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x81, n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x81, 126, n)
    else:
        head = struct.pack("!BBQ", 0x81, 127, n)
    return head + payload


async def _serve(count: int) -> None:
    import websockets

    messages = _messages()
    blob = b"".join(_frame(messages[i % len(messages)]) for i in range(count))

    async def handler(ws: Any) -> None:
        transport = ws.transport
        chunk = 1 << 20
        for start in range(0, len(blob), chunk):
            transport.write(blob[start : start + chunk])
            while transport.get_write_buffer_size() > 4 * chunk:
                await asyncio.sleep(0.001)
        await ws.wait_closed()

    async with websockets.serve(handler, "127.0.0.1", 0, compression=None) as server:
        print(server.sockets[0].getsockname()[1], flush=True)
        await asyncio.Future()


def _usage() -> tuple[float, int]:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime, ru.ru_maxrss


async def _bare(port: int, count: int) -> dict[str, Any]:
    import websockets

    async with websockets.connect(
        f"ws://127.0.0.1:{port}/stream", proxy=None, max_size=8 << 20, compression=None
    ) as ws:
        cpu0, _ = _usage()
        t0 = time.perf_counter()
        n = 0
        while n < count:
            await ws.recv(decode=False)
            n += 1
        wall = time.perf_counter() - t0
        cpu1, rss = _usage()
    return {"messages": n, "wall_s": wall, "cpu_s": cpu1 - cpu0, "peak_rss_kb": rss}


async def _collector(port: int, count: int) -> dict[str, Any]:
    from moonstream.collector.capture import Collector
    from moonstream.collector.config import CollectorConfig
    from moonstream.store import LocalStore

    os.environ["MOONSTREAM_BINANCE_WS_URL"] = f"ws://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        config = CollectorConfig(
            symbols=("BTC",),
            data_url=f"{tmp}/data",
            spool_dir=f"{tmp}/spool",
            collector_id="bench",
            rest_enabled=False,
        )
        collector = Collector(config, store=LocalStore(Path(tmp) / "data"))
        task = asyncio.create_task(collector.run())
        stats = collector.stats["binance"]
        while not stats.channels:
            await asyncio.sleep(0.0005)
        cpu0, _ = _usage()
        t0 = time.perf_counter()
        target = count + 1  # + conn:open
        while collector.writer.counters.lines < target:
            await asyncio.sleep(0.005)
        wall = time.perf_counter() - t0
        cpu1, rss = _usage()
        received = sum(m for m, _ in stats.channels.values())
        collector.stop()
        await task
    return {
        "messages": received,
        "lines_written": collector.writer.counters.lines,
        "queue_dropped": collector.queue_dropped,
        "queue_high_water": collector.queue_high_water,
        "wall_s": wall,
        "cpu_s": cpu1 - cpu0,
        "peak_rss_kb": rss,
    }


def _run_client(kind: str, count: int) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    server = subprocess.Popen(
        [sys.executable, __file__, "_serve", str(count)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert server.stdout is not None
        port = server.stdout.readline().strip()
        out = subprocess.run(
            [sys.executable, __file__, "_client", kind, port, str(count)],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        server.kill()
        server.wait()
    result["msg_per_s"] = round(result["messages"] / result["wall_s"])
    result["cpu_us_per_msg"] = round(result["cpu_s"] / result["messages"] * 1e6, 2)
    return result


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_serve":
        asyncio.run(_serve(int(sys.argv[2])))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "_client":
        kind, port, count = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
        runner = _bare if kind == "bare" else _collector
        print(json.dumps(asyncio.run(runner(port, count))))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=300_000)
    parser.add_argument("--runs", type=int, default=1, help="pairs of runs (bare, then collector)")
    args = parser.parse_args()
    if not (_shared() / RECORDING).is_file():
        print(json.dumps({"skipped": f"{RECORDING} not found under {_shared()}"}))
        return
    pairs = [
        (_run_client("bare", args.messages), _run_client("collector", args.messages))
        for _ in range(args.runs)
    ]
    ratios = [round(c["cpu_us_per_msg"] / b["cpu_us_per_msg"], 2) for b, c in pairs]
    report: dict[str, Any] = {"messages": args.messages}
    if args.runs == 1:
        report.update(bare=pairs[0][0], collector=pairs[0][1], cpu_per_msg_ratio=ratios[0])
    else:
        best_bare = min(b["cpu_us_per_msg"] for b, _ in pairs)
        best_collector = min(c["cpu_us_per_msg"] for _, c in pairs)
        report.update(
            runs=[
                {"bare": b, "collector": c, "cpu_per_msg_ratio": r}
                for (b, c), r in zip(pairs, ratios, strict=True)
            ],
            summary={
                "bare_cpu_us_per_msg": [b["cpu_us_per_msg"] for b, _ in pairs],
                "collector_cpu_us_per_msg": [c["cpu_us_per_msg"] for _, c in pairs],
                "collector_msg_per_s": [c["msg_per_s"] for _, c in pairs],
                "cpu_per_msg_ratios": ratios,
                "median_ratio": statistics.median(ratios),
                "ratio_of_lowest": round(best_collector / best_bare, 2),
            },
        )
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
