"""Real local S3 for tests: moto's server in a subprocess, plus a flaky HTTP proxy in front of it.

Fixtures (registered from ``tests/conftest.py`` with ``pytest_plugins``):

* ``s3_server`` (session): starts ``python -m moto.server`` on a free 127.0.0.1 port, waits until it
  answers, sets dummy credentials in the environment and yields the endpoint URL.
* ``s3_bucket`` (function): a fresh, uniquely named bucket on that server.
* ``flaky_proxy`` (function): a :class:`FlakyProxy` forwarding to the server, which can answer
  503 SlowDown for the next N requests, or forward a request and then lose its response.
"""

from __future__ import annotations

import http.client
import http.server
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import boto3
import pytest

DUMMY_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}
# Settings that could point boto3 at a real account or another endpoint.
CLEARED_ENV = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "MOONSTREAM_S3_ENDPOINT_URL",
)

SLOWDOWN_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message>"
    b"<RequestId>flaky-proxy</RequestId></Error>"
)
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade", "te"}
FOREVER = 1 << 30


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_until_answering(url: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"moto server exited with code {proc.returncode} before answering")
        try:
            with urllib.request.urlopen(url, timeout=1.0):
                return
        except urllib.error.HTTPError:
            return  # any HTTP answer means it is up
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"moto server at {url} did not answer within {timeout:.0f}s") from None
            time.sleep(0.05)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Endpoint URL of a real moto S3 server on 127.0.0.1, with dummy credentials in the env."""
    log_path: Path = tmp_path_factory.mktemp("moto") / "moto_server.log"
    with pytest.MonkeyPatch.context() as mp:
        for name in CLEARED_ENV:
            mp.delenv(name, raising=False)
        for name, value in DUMMY_ENV.items():
            mp.setenv(name, value)
        mp.setenv("AWS_CONFIG_FILE", str(log_path.parent / "no-aws-config"))
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", str(log_path.parent / "no-aws-credentials"))
        for _ in range(3):  # the free port may be taken between probing and binding
            port = _free_port()
            url = f"http://127.0.0.1:{port}"
            with log_path.open("ab") as log:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            try:
                _wait_until_answering(url, proc)
                break
            except RuntimeError:
                proc.kill()
                proc.wait()
        else:
            raise RuntimeError(f"could not start moto server; see {log_path}")
        try:
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def s3_bucket(s3_server: str) -> str:
    """A fresh empty bucket on the moto server."""
    name = f"test-{uuid.uuid4().hex[:20]}"
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=name)
    return name


class FlakyProxy:
    """A threaded HTTP proxy on 127.0.0.1 that forwards each request to ``upstream`` unchanged.

    ``fail_next(n)`` makes the next ``n`` requests get a 503 SlowDown without reaching upstream;
    ``lose_next(n)`` forwards the next ``n`` requests but answers 503 instead of the real response
    (a write that landed while its answer was lost).
    """

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 80
        self.requests = 0  # every request received
        self.failures = 0  # 503s answered
        self._fail = 0
        self._lose = 0
        self._lock = threading.Lock()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="flaky-proxy", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def fail_next(self, n: int) -> None:
        with self._lock:
            self._fail = n

    def fail_forever(self) -> None:
        self.fail_next(FOREVER)

    def lose_next(self, n: int) -> None:
        with self._lock:
            self._lose = n

    def _decide(self) -> str:
        with self._lock:
            self.requests += 1
            if self._fail > 0:
                self._fail -= 1
                self.failures += 1
                return "fail"
            if self._lose > 0:
                self._lose -= 1
                self.failures += 1
                return "lose"
            return "forward"

    def _handler_class(self) -> type[http.server.BaseHTTPRequestHandler]:
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _read_body(self) -> bytes:
                length = self.headers.get("Content-Length")
                if length is not None:
                    return self.rfile.read(int(length))
                if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                    raw = bytearray()  # keep the chunked framing: forwarded byte for byte
                    while True:
                        size_line = self.rfile.readline()
                        raw += size_line
                        size = int(size_line.split(b";")[0].strip(), 16)
                        if size == 0:
                            while True:  # trailers, then the empty line
                                line = self.rfile.readline()
                                raw += line
                                if line in (b"\r\n", b"\n", b""):
                                    return bytes(raw)
                        raw += self.rfile.read(size + 2)
                return b""

            def _send_503(self) -> None:
                body = b"" if self.command == "HEAD" else SLOWDOWN_BODY
                self.send_response(503, "Slow Down")
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _forward(self, body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
                conn = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=30)
                try:
                    conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                    for name, value in self.headers.items():
                        conn.putheader(name, value)
                    conn.endheaders(body or None)
                    resp = conn.getresponse()
                    data = resp.read()
                    return resp.status, resp.reason, resp.getheaders(), data
                finally:
                    conn.close()

            def _handle(self) -> None:
                body = self._read_body()
                decision = proxy._decide()
                if decision == "fail":
                    self._send_503()
                    return
                status, reason, headers, data = self._forward(body)
                if decision == "lose":
                    self._send_503()
                    return
                self.send_response(status, reason)
                has_body = self.command != "HEAD" and status not in (204, 304)
                for name, value in headers:
                    lowered = name.lower()
                    if lowered in _HOP_BY_HOP or (lowered == "content-length" and self.command != "HEAD"):
                        continue
                    if lowered in ("server", "date"):
                        continue  # send_response wrote ours
                    self.send_header(name, value)
                if has_body:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if has_body:
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        return Handler


@pytest.fixture
def flaky_proxy(s3_server: str) -> Iterator[FlakyProxy]:
    """A :class:`FlakyProxy` in front of the moto server, forwarding normally until told otherwise."""
    proxy = FlakyProxy(s3_server)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()
