"""The viewer page (index.html + frames.js) in headless Chromium over real HTTP.

Sites are built by the real pipeline (import or simulate, backfill), served with ``serve_in_thread``,
and loaded with ``chromium --dump-dom``; the page writes what it decoded and drew into ids and
``data-*`` attributes, which are compared with the same objects read in Python. Needs
``/usr/bin/chromium`` (``make test-deps`` installs it); skips with a message where it is absent.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import re
import shutil
import struct
import subprocess
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, ClassVar

import pytest

from moonstream.collector.importers import import_file
from moonstream.jobs.backfill import backfill
from moonstream.jobs.config import JobConfig
from moonstream.jobs.minute import JobContext
from moonstream.publish.frames import RECORD_SIZE, FrameFormatError, FrameRecord, decode_frame, decode_frames
from moonstream.publish.layout import SiteLayout
from moonstream.publish.server import serve_in_thread
from moonstream.publish.site import publish_static_assets, render_viewer
from moonstream.sim import run_simulation
from moonstream.store.base import ObjectMeta, Store
from moonstream.store.local import LocalStore
from moonstream.timeutil import minute_date_hhmm, parse_minute
from tests.conftest import REPO_ROOT, shared_file

pytestmark = pytest.mark.integration

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=10000",
    "--enable-logging=stderr",
    "--v=0",
)
WINDOW = (1300, 1900)
OB_MINUTES = 15  # the page's order-book window (OB_MINUTES in index.html)
ZONE_ROWS = 15  # zones listed in the page's table (ZONE_ROWS in index.html)
HEADER_FIELDS = ("ts", "src", "price_min", "price_max", "step", "n_buckets", "norm_p50", "norm_p95",
                 "total_bid", "total_ask")  # fmt: skip


# ---- Chromium and the DOM it dumps ---------------------------------------------------------------


@pytest.fixture(scope="session")
def chromium() -> str:
    path = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None)
    if path is None:
        pytest.skip("chromium not found: `make test-deps` installs it (apt-get install chromium, as root)")
    return path


def run_chromium(chromium: str, url: str, profile: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    profile.mkdir(parents=True, exist_ok=True)
    command = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
               f"--window-size={WINDOW[0]},{WINDOW[1]}", *extra, url]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    uncaught = [line for line in result.stderr.splitlines() if "CONSOLE" in line and "Uncaught" in line]
    assert not uncaught, uncaught
    return result


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    children: list[Element] = field(default_factory=list)
    text_parts: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(self.text_parts) + "".join(c.text for c in self.children)

    def find_all(self, tag: str) -> list[Element]:
        found = []
        for child in self.children:
            if child.tag == tag:
                found.append(child)
            found.extend(child.find_all(tag))
        return found

    def data(self, name: str) -> str:
        return self.attrs[f"data-{name}"]


class _DomBuilder(HTMLParser):
    VOID: ClassVar[frozenset[str]] = frozenset(
        ["area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"]
    )

    def __init__(self) -> None:
        super().__init__()
        self.root = Element("#document", {})
        self.stack = [self.root]
        self.by_id: dict[str, Element] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(element)
        if "id" in element.attrs:
            self.by_id[element.attrs["id"]] = element
        if tag not in self.VOID:
            self.stack.append(element)

    def handle_endtag(self, tag: str) -> None:
        for depth in range(len(self.stack) - 1, 0, -1):
            if self.stack[depth].tag == tag:
                del self.stack[depth:]
                return

    def handle_data(self, data: str) -> None:
        self.stack[-1].text_parts.append(data)


@dataclass
class Dom:
    body: Element
    by_id: dict[str, Element]

    def __getitem__(self, element_id: str) -> Element:
        return self.by_id[element_id]

    def rows(self, table_id: str) -> list[Element]:
        return self[table_id].find_all("tbody")[0].find_all("tr")


def dump_dom(chromium: str, url: str, profile: Path) -> Dom:
    builder = _DomBuilder()
    builder.feed(run_chromium(chromium, url, profile, "--dump-dom").stdout)
    body = builder.root.find_all("body")
    assert body, "chromium dumped no document"
    return Dom(body[0], builder.by_id)


# ---- sites ---------------------------------------------------------------------------------------


@dataclass
class Site:
    store: Store
    base_url: str
    prefix: str = ""

    def json(self, key: str) -> Any:
        data = self.store.read_bytes(self.prefix + key)
        return json.loads(gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data)

    def frames(self, url: str) -> list[FrameRecord]:
        key = url.lstrip("/")
        return decode_frames(self.store.read_bytes(key)) if self.store.exists(key) else []


@contextmanager
def serving(store: Store, prefix: str = "") -> Iterator[Site]:
    server, _thread = serve_in_thread(store)
    host, port = server.server_address[:2]
    try:
        yield Site(store, f"http://{host}:{port}/{prefix}", prefix)
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="session")
def real_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """BTC 2024-07-18 23:57 .. 2024-07-19 00:05 from the real hftbacktest recordings."""
    files = [shared_file(f"hftbacktest-binance-usdm/btcusdt_{day}.gz") for day in ("20240718", "20240719")]
    root = tmp_path_factory.mktemp("viewer-real")
    data = LocalStore(root / "data")
    for path in files:
        import_file(path, data, symbols={"BTC"})
    config = JobConfig(data_url=str(root / "data"), site_url=str(root / "site"), symbols=("BTC",),
                       exchanges=("binance",))  # fmt: skip
    ctx = JobContext.open(config)
    first, last = parse_minute("2024-07-18T23:57"), parse_minute("2024-07-19T00:05")
    backfill(ctx, ("BTC",), first, last, progress=False)
    with serving(ctx.site) as site:
        yield site


@pytest.fixture(scope="session")
def sim_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """12 simulated minutes (the simulator makes liquidation levels and zones, the real capture has
    none), under a site prefix, with an expected exchange (okx) that sends nothing."""
    root = tmp_path_factory.mktemp("viewer-sim")
    first = parse_minute("2024-01-01T00:00")
    run_simulation(("BTC",), first, 12, 7, str(root / "data"), workers=1)
    config = JobConfig(data_url=str(root / "data"), site_url=str(root / "site"), symbols=("BTC",),
                       exchanges=("binance", "okx"), site_prefix="demo/")  # fmt: skip
    ctx = JobContext.open(config)
    backfill(ctx, ("BTC",), first, first + 11, progress=False)
    with serving(ctx.site, "demo/") as site:
        yield site


@pytest.fixture(scope="session")
def real_dom(chromium: str, real_site: Site, tmp_path_factory: pytest.TempPathFactory) -> Dom:
    return dump_dom(chromium, real_site.base_url, tmp_path_factory.mktemp("chromium-real"))


@pytest.fixture(scope="session")
def sim_dom(chromium: str, sim_site: Site, tmp_path_factory: pytest.TempPathFactory) -> Dom:
    return dump_dom(chromium, sim_site.base_url, tmp_path_factory.mktemp("chromium-sim"))


def assert_frame_row(row: Element, frame: FrameRecord) -> None:
    for name in HEADER_FIELDS:
        attr = name.replace("_", "-")
        assert float(row.data(attr)) == getattr(frame, name), name  # exact: JS prints the shortest round trip
    assert int(row.data("bid-sum")) == sum(frame.bid)
    assert int(row.data("ask-sum")) == sum(frame.ask)


# ---- the page on real data -----------------------------------------------------------------------


def test_viewer_assets_served_with_their_types(real_site: Site) -> None:
    for path, content_type in (
        ("", "text/html; charset=utf-8"),
        ("frames.js", "text/javascript; charset=utf-8"),
    ):
        with urllib.request.urlopen(real_site.base_url + path, timeout=10) as response:
            assert response.headers["Content-Type"] == content_type
            assert response.headers["Cache-Control"] == "public, max-age=60"
            body = response.read()
        assert b"{{" not in body and b"{%" not in body  # rendered, not the raw template
    page = dict((name, data) for name, data, _ in render_viewer(SiteLayout(prefix="p/")))["index.html"]
    assert b'"prefix": "p/"' in page and b'"indexUrl": "v1/index.json"' in page
    # Works offline: no external scripts, styles or fonts.
    assert re.search(rb"""(src|href)\s*=\s*["']?(https?:)?//""", page) is None
    assert b"@import" not in page and b"@font-face" not in page and b"url(" not in page


def test_real_page_shows_latest_minute_and_health(real_site: Site, real_dom: Dom) -> None:
    health = real_site.json("v1/health.json")["symbols"]["BTC"]
    market = real_site.json("v1/BTC/market/latest.json")
    assert real_dom.body.data("ready") == "1" and real_dom.body.data("symbol") == "BTC"
    assert real_dom["status"].data("state") == "ok"
    assert [o.attrs["value"] for o in real_dom["symbol"].find_all("option")] == ["BTC"]
    assert health["last_minute"] == "2024-07-19T00:05:00Z"
    assert real_dom["health"].data("last-minute") == health["last_minute"]
    assert real_dom["health"].data("missing") == "" and real_dom["missing"].text == "none"
    records = health["exchanges"]["binance"]["records"]
    assert f"binance: {records} records" in real_dom["health-text"].text
    assert real_dom["market"].data("minute") == market["minute"] == health["last_minute"]
    binance, total = real_dom.rows("market")
    assert binance.data("close") == market["exchanges"]["binance"]["ohlc"]["close"]
    assert int(binance.data("trades")) == market["exchanges"]["binance"]["trade_count"]
    assert total.data("long-liq-usd") == market["liquidations"]["long"]["notional_usd"]
    assert "synced" in real_dom["book"].text


def test_real_page_decodes_the_latest_minute_frames(real_site: Site, real_dom: Dom) -> None:
    doc = real_site.json("v1/BTC/orderbook_heatmap/latest.json")
    frames = real_site.frames(doc["bin"])
    windows = [w for w in doc["frames"] if w is not None]  # a window without a book is null
    assert frames and [f.ts for f in frames] == [w["ts"] for w in windows]
    assert real_dom["frames"].data("count") == str(len(frames))
    rows = real_dom.rows("frames")
    assert len(rows) == len(frames)
    for row, frame in zip(rows, frames, strict=True):
        assert_frame_row(row, frame)
    assert real_dom["frames-url"].text == doc["bin"].lstrip("/")


def test_real_page_draws_the_order_book_over_recent_minutes(real_site: Site, real_dom: Dom) -> None:
    template = real_site.json("v1/index.json")["symbols"]["BTC"]["products"]["orderbook_heatmap"]["versions"]
    end = parse_minute("2024-07-19T00:05")
    per_minute = []
    for minute in range(end - OB_MINUTES + 1, end + 1):
        day, hhmm = minute_date_hhmm(minute)
        url = template.replace("{YYYY-MM-DD}", day).replace("{HHMM}", hhmm).removesuffix(".json") + ".bin"
        per_minute.append(len(real_site.frames(url)))
    canvas = real_dom["ob-canvas"]
    assert int(canvas.data("frames")) == sum(per_minute) >= 15  # 23:57..00:05, two 30 s windows a minute
    assert int(canvas.data("minutes")) == sum(1 for n in per_minute if n) == 9
    assert int(canvas.data("painted")) > 0.3 * 720 * 540  # a heatmap, not an empty plot


def test_real_page_liquidation_panels_match_the_documents(real_site: Site, real_dom: Dom) -> None:
    v2 = real_site.json("v1/BTC/liq_heatmap_v2/latest.json")
    zones = real_site.json("v1/BTC/liq_zones/latest.json")
    market = real_site.json("v1/BTC/market/latest.json")
    canvas = real_dom["liq-canvas"]
    assert int(canvas.data("long-levels")) == len(v2["long_levels"])
    assert int(canvas.data("short-levels")) == len(v2["short_levels"])
    assert float(canvas.data("price")) == float(market["last_price"]["binance"])
    assert int(canvas.data("painted")) > 1000  # the axis, grid and price line at least
    assert real_dom["zones"].data("count") == str(len(zones["zones"]))


def test_screenshot_draws_the_page(chromium: str, real_site: Site, tmp_path: Path) -> None:
    png = tmp_path / "viewer.png"
    run_chromium(chromium, real_site.base_url, tmp_path / "profile", f"--screenshot={png}")
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    assert struct.unpack(">II", data[16:24]) == WINDOW
    # A blank dark page of this size compresses to a few kB; the heatmaps make it far larger.
    assert len(data) > 50_000


# ---- the page on simulated data (levels, zones, a missing exchange, a site prefix) ---------------


def test_sim_page_lists_zones_and_levels(sim_site: Site, sim_dom: Dom) -> None:
    zones = sim_site.json("v1/BTC/liq_zones/latest.json")["zones"]
    v2 = sim_site.json("v1/BTC/liq_heatmap_v2/latest.json")
    assert zones and v2["long_levels"] and v2["short_levels"]
    assert sim_dom["status"].data("state") == "ok"
    assert sim_dom["zones"].data("count") == str(len(zones))
    heaviest = sorted(zones, key=lambda z: (-z["weight"], z["price"]))[:ZONE_ROWS]
    rows = [r for r in sim_dom.rows("zones") if "data-price" in r.attrs]
    assert [(float(r.data("price")), r.data("side"), r.data("state")) for r in rows] == [
        (z["price"], z["side"], z["state"]) for z in heaviest
    ]
    canvas = sim_dom["liq-canvas"]
    assert int(canvas.data("long-levels")) == len(v2["long_levels"])
    assert int(canvas.data("short-levels")) == len(v2["short_levels"])
    assert int(canvas.data("painted")) > 5000


def test_sim_page_reports_the_missing_exchange(sim_site: Site, sim_dom: Dom) -> None:
    health = sim_site.json("v1/health.json")["symbols"]["BTC"]
    assert health["missing_exchanges"] == ["okx"]
    assert sim_dom["health"].data("missing") == "okx" and sim_dom["missing"].text == "okx"
    doc = sim_site.json("v1/BTC/orderbook_heatmap/latest.json")
    for row, frame in zip(sim_dom.rows("frames"), sim_site.frames(doc["bin"]), strict=True):
        assert_frame_row(row, frame)


# ---- frames.js alone: the golden vector of docs/formats.md and malformed records -----------------


def golden_record() -> bytes:
    """The 4,096-byte golden record, parsed from the byte table in docs/formats.md."""
    text = (REPO_ROOT / "docs" / "formats.md").read_text(encoding="utf-8")
    section = text[text.index("## Order-book frame") :]
    table = section[section.index("offset  bytes") :]
    table = table[: table.index("```")]
    record = bytearray()
    for line in table.splitlines()[1:]:
        parts = line.split()
        if not parts or parts[1] == "00":  # "84  00 × 4012  padding"
            continue
        assert int(parts[0]) == len(record), line
        record += bytes.fromhex(parts[1])
    record += bytes(RECORD_SIZE - len(record))
    digest = re.search(r"sha256 of the 4,096-byte\s+record `([0-9a-f]{64})`", section)
    assert digest and hashlib.sha256(record).hexdigest() == digest.group(1)
    return bytes(record)


def decoder_cases() -> dict[str, bytes]:
    golden = golden_record()

    def patched(offset: int, data: bytes) -> bytes:
        return golden[:offset] + data + golden[offset + len(data) :]

    return {
        "golden": golden,
        "short": golden[:-1],
        "long": golden + b"\x00",
        "n_zero": patched(40, struct.pack("<I", 0)),
        "n_too_big": patched(40, struct.pack("<I", 1001)),
        "n_max": patched(40, struct.pack("<I", 1000)),  # valid: 2,000 intensity bytes, rest padding
        "nan_p95": patched(52, struct.pack("<d", math.nan)),
        "inf_ts": patched(0, struct.pack("<d", math.inf)),
        "padding": patched(RECORD_SIZE - 1, b"\x01"),
        "two_records": golden + golden,
        "ragged": golden + b"\x00" * 10,
    }


def python_result(data: bytes) -> dict[str, Any]:
    try:
        frames = decode_frames(data) if len(data) != RECORD_SIZE else [decode_frame(data)]
    except FrameFormatError:
        return {"error": "FrameFormatError"}
    return {"frames": [{**{n: getattr(f, n) for n in HEADER_FIELDS}, "bid": list(f.bid), "ask": list(f.ask),
                        "prices": f.prices()[:4]} for f in frames]}  # fmt: skip


DECODER_PAGE = """<!doctype html><meta charset="utf-8"><title>frames.js test</title>
<script src="../frames.js"></script>
<pre id="out"></pre>
<script>
"use strict";
const cases = %s;
const hex = (h) => new Uint8Array(h.match(/../g).map((b) => parseInt(b, 16)));
const fields = %s;
const results = {};
for (const [name, h] of Object.entries(cases)) {
  const bytes = hex(h);
  try {
    const F = MoonstreamFrames;
    // a sub-view at a non-zero offset: the decoder must respect byteOffset
    const shifted = new Uint8Array(bytes.length + 3);
    shifted.set(bytes, 3);
    const view = shifted.subarray(3);
    const frames = bytes.length === F.RECORD_SIZE
      ? [F.decodeFrame(view)]
      : F.decodeFrames(view.buffer.slice(3));  // an ArrayBuffer
    results[name] = {frames: frames.map((f) => Object.assign(
      Object.fromEntries(fields.map((k) => [k, f[k]])),
      {bid: Array.from(f.bid), ask: Array.from(f.ask),
       prices: [0, 1, 2, 3].map((i) => F.bucketPrice(f, i))}))};
  } catch (err) {
    results[name] = {error: err.name};
  }
}
document.getElementById("out").textContent = JSON.stringify(results);
</script>
"""


def test_frames_js_decodes_the_golden_vector_like_python(chromium: str, tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "site")
    publish_static_assets(store, SiteLayout())
    cases = decoder_cases()
    page = DECODER_PAGE % (json.dumps({k: v.hex() for k, v in cases.items()}), json.dumps(HEADER_FIELDS))
    store.put("test/frames.html", page.encode(), ObjectMeta("text/html; charset=utf-8"))
    with serving(store) as site:
        dom = dump_dom(chromium, site.base_url + "test/frames.html", tmp_path / "profile")
    results = json.loads(dom["out"].text)
    expected = {name: python_result(data) for name, data in cases.items()}
    assert results == expected
    golden = results["golden"]["frames"][0]
    assert golden["ts"] == 1721347020.0 and golden["total_ask"] == 6000.5 and golden["n_buckets"] == 4
    assert golden["bid"] == [0, 1, 128, 255] and golden["ask"] == [255, 128, 1, 0]
    assert golden["prices"] == [57540.0, 57560.0, 57580.0, 57600.0]
    assert results["n_max"]["frames"][0]["n_buckets"] == 1000
    assert [r.get("error") for r in (results["short"], results["padding"], results["ragged"])] == [
        "FrameFormatError"
    ] * 3
