"""``moonstream serve`` over real HTTP: CDN headers, gzip negotiation, revalidation, CORS, safety."""

from __future__ import annotations

import gzip
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from moonstream.publish.layout import SiteLayout
from moonstream.publish.publisher import publication
from moonstream.publish.server import accepts_gzip, key_for_path, serve_in_thread
from moonstream.publish.site import add_minute_documents, publish_static_assets
from moonstream.store.local import LocalStore

pytestmark = pytest.mark.integration
LAYOUT = SiteLayout()


@pytest.fixture()
def base_url(tmp_path: Path) -> Iterator[str]:
    store = LocalStore(tmp_path / "site")
    publish_static_assets(store, LAYOUT)
    with publication(store, LAYOUT) as pub:
        add_minute_documents(
            pub,
            LAYOUT,
            "BTC",
            100,
            {"market": {"minute": "1970-01-01T01:40:00Z", "x": 1}},
            {"exchanges": {}, "missing_exchanges": []},
            None,
        )
    (tmp_path / "site" / "secret.txt").write_text("not an object")  # no sidecar: still served as a file
    server, _ = serve_in_thread(store)
    host, port = server.server_address[:2]
    yield f"http://{host}:{port}"
    server.shutdown()
    server.server_close()


def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_immutable_version_headers_and_gzip(base_url: str) -> None:
    status, headers, body = fetch(
        f"{base_url}/v1/BTC/market/1970-01-01/0140.json", {"Accept-Encoding": "gzip"}
    )
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert headers["Content-Encoding"] == "gzip"
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert json.loads(gzip.decompress(body)) == {"minute": "1970-01-01T01:40:00Z", "x": 1}


def test_plain_json_for_clients_without_gzip(base_url: str) -> None:
    status, headers, body = fetch(f"{base_url}/v1/BTC/market/latest.json", {"Accept-Encoding": "identity"})
    assert status == 200 and "Content-Encoding" not in headers
    assert headers["Cache-Control"].startswith("public, max-age=5")
    assert json.loads(body)["x"] == 1


def test_etag_revalidation(base_url: str) -> None:
    _, headers, _ = fetch(f"{base_url}/v1/index.json")
    status, _, body = fetch(f"{base_url}/v1/index.json", {"If-None-Match": headers["ETag"]})
    assert status == 304 and body == b""


def test_index_page_and_schemas(base_url: str) -> None:
    status, headers, body = fetch(f"{base_url}/")
    assert status == 200 and headers["Content-Type"].startswith("text/html") and b"v1/index.json" in body
    index = json.loads(fetch(f"{base_url}/v1/index.json")[2])
    for url in index["schemas"].values():
        status, headers, body = fetch(base_url + url)
        assert status == 200 and json.loads(body)["$schema"].startswith("https://json-schema.org/")


@pytest.mark.parametrize(
    "path", ["/nope.json", "/.meta/v1/index.json.json", "/../../etc/passwd", "/v1/%2e%2e/x"]
)
def test_missing_and_hidden_paths_are_404_without_details(base_url: str, path: str) -> None:
    status, _headers, body = fetch(base_url + path)
    assert status == 404
    assert json.loads(body) == {"error": "not found"}


def test_cors_preflight(base_url: str) -> None:
    request = urllib.request.Request(f"{base_url}/v1/index.json", method="OPTIONS")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 204
        assert "GET" in response.headers["Access-Control-Allow-Methods"]


def test_helpers() -> None:
    assert accepts_gzip("gzip, deflate, br") and accepts_gzip("*") and not accepts_gzip("gzip;q=0")
    assert not accepts_gzip(None) and not accepts_gzip("br")
    assert key_for_path("/") == "index.html" and key_for_path("/v1/x.json?y=1") == "v1/x.json"
    assert key_for_path("/.git/config") is None and key_for_path("/a/../b") is None
