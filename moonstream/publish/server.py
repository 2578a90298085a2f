"""``moonstream serve``: the site store over HTTP with the headers a CDN would send (DESIGN §6).

A stand-in for S3 + CloudFront on one machine: objects are served with their stored Content-Type,
Cache-Control and Content-Encoding, an ETag with ``If-None-Match`` revalidation, and CORS for GET.
Pre-compressed JSON is sent as stored to clients that accept gzip and decompressed for the rest.
Errors never reveal paths or exception text.
"""

from __future__ import annotations

import gzip
import logging
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

from moonstream.store.base import ObjectNotFound, Store, StoredObject, StoreError, validate_key

logger = logging.getLogger(__name__)

CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, HEAD, OPTIONS",
    "Access-Control-Allow-Headers": "If-None-Match, Range",
    "Access-Control-Expose-Headers": "ETag, Content-Length",
    "Access-Control-Max-Age": "86400",
}


def key_for_path(path: str) -> str | None:
    """The store key an URL path names, or None for paths that may not be served."""
    raw = unquote(urlsplit(path).path).lstrip("/")
    if raw == "" or raw.endswith("/"):
        raw += "index.html"
    if any(part.startswith(".") for part in raw.split("/")):
        return None
    try:
        return validate_key(raw)
    except ValueError:
        return None


def accepts_gzip(header: str | None) -> bool:
    """Whether an Accept-Encoding header admits gzip (``gzip;q=0`` refuses it)."""
    for item in (header or "").split(","):
        name, _, params = item.partition(";")
        if name.strip().lower() not in ("gzip", "*"):
            continue
        quality = 1.0
        for param in params.split(";"):
            label, _, value = param.strip().partition("=")
            if label.lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        return quality > 0
    return False


class SiteRequestHandler(BaseHTTPRequestHandler):
    server_version = "moonstream"
    store: Store  # set on the subclass made by make_server

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: object) -> None:
        logger.debug("%s %s", self.address_string(), format % args)

    def do_OPTIONS(self) -> None:
        self.send_response(HTTPStatus.NO_CONTENT)
        for name, value in CORS_HEADERS.items():
            self.send_header(name, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_HEAD(self) -> None:
        self._serve(send_body=False)

    def do_GET(self) -> None:
        self._serve(send_body=True)

    def _error(self, status: HTTPStatus, send_body: bool) -> None:
        body = f'{{"error":"{status.phrase.lower()}"}}'.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Access-Control-Allow-Origin", "*")
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def _serve(self, send_body: bool) -> None:
        key = key_for_path(self.path)
        if key is None:
            self._error(HTTPStatus.NOT_FOUND, send_body)
            return
        try:
            obj = self.store.read(key)
        except ObjectNotFound:
            self._error(HTTPStatus.NOT_FOUND, send_body)
            return
        except StoreError:
            logger.exception("reading %s from the site store failed", key)
            self._error(HTTPStatus.SERVICE_UNAVAILABLE, send_body)
            return
        self._send_object(obj, send_body)

    def _send_object(self, obj: StoredObject, send_body: bool) -> None:
        etag = f'"{obj.etag.strip(chr(34))}"'
        body, encoding = obj.data, obj.meta.content_encoding
        if encoding == "gzip" and not accepts_gzip(self.headers.get("Accept-Encoding")):
            body, encoding = gzip.decompress(body), None
        not_modified = etag in [t.strip() for t in (self.headers.get("If-None-Match") or "").split(",")]
        self.send_response(HTTPStatus.NOT_MODIFIED if not_modified else HTTPStatus.OK)
        self.send_header("Content-Type", obj.meta.content_type)
        if obj.meta.cache_control:
            self.send_header("Cache-Control", obj.meta.cache_control)
        self.send_header("ETag", etag)
        self.send_header("Vary", "Accept-Encoding")
        for name in ("Access-Control-Allow-Origin", "Access-Control-Expose-Headers"):
            self.send_header(name, CORS_HEADERS[name])
        if not_modified:
            self.end_headers()
            return
        if encoding:
            self.send_header("Content-Encoding", encoding)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body:
            self.wfile.write(body)


def make_server(store: Store, host: str, port: int) -> ThreadingHTTPServer:
    """An HTTP server for ``store`` bound to host:port (port 0 picks a free one)."""
    handler = type("BoundSiteRequestHandler", (SiteRequestHandler,), {"store": store})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def serve_in_thread(
    store: Store, host: str = "127.0.0.1", port: int = 0
) -> tuple[ThreadingHTTPServer, threading.Thread]:
    """Start a server on a daemon thread; the caller calls ``server.shutdown()``."""
    server = make_server(store, host, port)
    thread = threading.Thread(target=server.serve_forever, name="site-server", daemon=True)
    thread.start()
    return server, thread
