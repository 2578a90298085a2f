"""One contract for both stores: LocalStore in a temp directory, S3Store against moto over real HTTP.

S3 failure handling is shown through a real HTTP proxy that answers 503 (``tests/s3server.py``);
LocalStore's cross-process guarantees are shown with real processes racing on one directory.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from moonstream.store import (
    IMMUTABLE_CACHE_CONTROL,
    LocalStore,
    ObjectExists,
    ObjectMeta,
    ObjectNotFound,
    PreconditionFailed,
    RetryPolicy,
    S3Store,
    Store,
    StoreError,
    StoreUnavailable,
    open_store,
)
from moonstream.store.local import FOLDER_META
from tests.s3server import DUMMY_ENV, FlakyProxy

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
FAST = RetryPolicy(max_attempts=4, base=0.001, cap=0.01)
PREFIX = "site/prefix"
JSON_GZ = ObjectMeta("application/json", IMMUTABLE_CACHE_CONTROL, "gzip")
PLAIN = ObjectMeta("application/octet-stream")


def cause_status(exc: BaseException) -> int | None:
    """The HTTP status of the first ClientError in ``exc``'s cause chain."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ClientError):
            return int(seen.response["ResponseMetadata"]["HTTPStatusCode"])
        seen = seen.__cause__
    return None


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """Each contract test runs once per store."""
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    endpoint: str = request.getfixturevalue("s3_server")
    bucket: str = request.getfixturevalue("s3_bucket")
    # A tiny page size makes every listing below paginate.
    return S3Store(bucket, PREFIX, endpoint_url=endpoint, retry_policy=FAST, list_page_size=2)


def litter(store: Store) -> None:
    """Things next to the store's objects that must never show up as keys."""
    if isinstance(store, LocalStore):
        (store.root / "v1").mkdir(parents=True, exist_ok=True)
        (store.root / ".tmp-0123456789abcdef").write_bytes(b"partial")
        (store.root / "v1" / ".tmp-fedcba9876543210").write_bytes(b"partial")
    elif isinstance(store, S3Store):
        raw = boto3.client("s3", endpoint_url=store._client.meta.endpoint_url)
        for key in ("site/prefixed/v1/x.json", "site/other.json", f"{PREFIX}/v1/folder/"):
            raw.put_object(Bucket=store.bucket, Key=key, Body=b"not mine")


# -- the contract ----------------------------------------------------------------------------------


def test_round_trip_bytes_and_metadata(store: Store) -> None:
    data = gzip.compress(b'{"schema_version": 1, "minute": "2024-07-19T00:00Z"}', mtime=0)
    etag = store.create("v1/BTC/liq/2024-07-19/0000.json", data, JSON_GZ)
    assert etag == hashlib.md5(data).hexdigest()

    got = store.read("v1/BTC/liq/2024-07-19/0000.json")
    assert (got.data, got.etag, got.meta) == (data, etag, JSON_GZ)
    head = store.head("v1/BTC/liq/2024-07-19/0000.json")
    assert head is not None
    assert (head.data, head.etag, head.meta) == (b"", etag, JSON_GZ)
    assert store.exists("v1/BTC/liq/2024-07-19/0000.json")

    store.put("state/BTC.bin", b"\x00\x01", PLAIN)
    assert store.read("state/BTC.bin").meta == ObjectMeta("application/octet-stream", None, None)


def test_s3_headers_are_on_the_object(store: Store) -> None:
    """What a CDN would fetch: a raw HTTP GET shows the stored headers and the exact bytes."""
    data = gzip.compress(b'{"a": 1}', mtime=0)
    store.create("v1/index.json", data, JSON_GZ)
    if isinstance(store, LocalStore):
        assert (store.root / "v1" / "index.json").read_bytes() == data
        return
    assert isinstance(store, S3Store)
    url = store._client.generate_presigned_url(
        "get_object", Params={"Bucket": store.bucket, "Key": f"{PREFIX}/v1/index.json"}
    )
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.headers["Content-Type"] == "application/json"
        assert response.headers["Cache-Control"] == IMMUTABLE_CACHE_CONTROL
        assert response.headers["Content-Encoding"] == "gzip"
        assert response.headers["ETag"].strip('"') == hashlib.md5(data).hexdigest()
        assert response.read() == data


def test_create_is_create_only(store: Store) -> None:
    store.create("v1/a.json", b"first", JSON_GZ)
    with pytest.raises(ObjectExists) as info:
        store.create("v1/a.json", b"second", JSON_GZ)
    assert "v1/a.json" in str(info.value)
    if isinstance(store, S3Store):
        assert cause_status(info.value) == 412  # the server refused it, not a client-side check
    assert store.read("v1/a.json").data == b"first"


def test_create_or_same(store: Store) -> None:
    assert store.create_or_same("v1/c.json", b"same", JSON_GZ) is True
    assert store.create_or_same("v1/c.json", b"same", JSON_GZ) is False
    with pytest.raises(ObjectExists):
        store.create_or_same("v1/c.json", b"different", JSON_GZ)
    assert store.read("v1/c.json").data == b"same"


def test_replace_is_compare_and_swap(store: Store) -> None:
    meta = ObjectMeta("application/json", "public, max-age=5")
    first = store.replace("v1/latest.json", b"1", meta, expected_etag=None)
    with pytest.raises(PreconditionFailed) as present:
        store.replace("v1/latest.json", b"x", meta, expected_etag=None)
    second = store.replace("v1/latest.json", b"2", meta, expected_etag=first)
    assert second != first
    with pytest.raises(PreconditionFailed) as stale:
        store.replace("v1/latest.json", b"3", meta, expected_etag=first)
    with pytest.raises(PreconditionFailed):
        store.replace("v1/absent.json", b"3", meta, expected_etag=first)
    got = store.read("v1/latest.json")
    assert (got.data, got.etag, got.meta) == (b"2", second, meta)
    if isinstance(store, S3Store):
        assert cause_status(present.value) == 412
        assert cause_status(stale.value) == 412


def test_put_overwrites(store: Store) -> None:
    store.put("state/x.bin", b"old", PLAIN)
    store.put("state/x.bin", b"new", JSON_GZ)
    got = store.read("state/x.bin")
    assert (got.data, got.meta) == (b"new", JSON_GZ)


def test_list_by_prefix_sorted(store: Store) -> None:
    keys = ["v1/index.json", "v1/ETH/a.json", "v1/BTC/b/2.json", "v1/BTC/a.json", "v1/BTC/b/1.json", "raw/x"]
    for key in reversed(keys):
        store.put(key, key.encode(), PLAIN)
    litter(store)
    assert list(store.list()) == sorted(keys)
    assert list(store.list("v1/")) == sorted(k for k in keys if k.startswith("v1/"))
    assert list(store.list("v1/BTC/b")) == ["v1/BTC/b/1.json", "v1/BTC/b/2.json"]
    assert list(store.list("v1/BT")) == ["v1/BTC/a.json", "v1/BTC/b/1.json", "v1/BTC/b/2.json"]
    assert list(store.list("nothing/")) == []
    assert list(store.list(".meta/")) == []


def test_delete(store: Store) -> None:
    store.put("v1/gone.json", b"x", JSON_GZ)
    store.put("v1/kept.json", b"y", JSON_GZ)
    store.delete("v1/gone.json")
    store.delete("v1/gone.json")  # absent is fine
    assert store.head("v1/gone.json") is None
    assert not store.exists("v1/gone.json")
    assert list(store.list()) == ["v1/kept.json"]
    store.create("v1/gone.json", b"again", PLAIN)  # create-only works again after a delete
    assert store.read("v1/gone.json").meta == PLAIN


def test_missing_objects(store: Store) -> None:
    with pytest.raises(ObjectNotFound) as info:
        store.read("v1/missing.json")
    assert "v1/missing.json" in str(info.value)
    assert store.head("v1/missing.json") is None


BAD_KEYS = ["../x", "a/../b", "/abs", "a/", "", "a//b", "./a", ".meta/x", "v1/.tmp-123", "a\\b"]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_keys_are_validated(store: Store, key: str) -> None:
    calls: list[Callable[[], object]] = [
        lambda: store.read(key),
        lambda: store.head(key),
        lambda: store.create(key, b"x", PLAIN),
        lambda: store.replace(key, b"x", PLAIN, expected_etag=None),
        lambda: store.put(key, b"x", PLAIN),
        lambda: store.delete(key),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="invalid store key"):
            call()
    for prefix in ("../", "/x", "a/../"):
        with pytest.raises(ValueError, match="invalid store prefix"):
            list(store.list(prefix))


# -- S3 failures, through a real flaky HTTP proxy ------------------------------------------------


def proxied(bucket: str, proxy: FlakyProxy, sleeps: list[float]) -> S3Store:
    return S3Store(bucket, PREFIX, endpoint_url=proxy.url, retry_policy=FAST, sleep=sleeps.append)


def test_s3_503_then_recover(s3_bucket: str, flaky_proxy: FlakyProxy) -> None:
    sleeps: list[float] = []
    store = proxied(s3_bucket, flaky_proxy, sleeps)
    flaky_proxy.fail_next(2)
    etag = store.create("v1/a.json", b"payload", JSON_GZ)
    assert (flaky_proxy.requests, flaky_proxy.failures, len(sleeps)) == (3, 2, 2)
    assert all(0 <= s <= FAST.cap for s in sleeps)

    flaky_proxy.fail_next(FAST.max_attempts - 1)  # the last allowed attempt gets through
    got = store.read("v1/a.json")
    assert (got.data, got.etag, got.meta) == (b"payload", etag, JSON_GZ)
    flaky_proxy.fail_next(1)  # HEAD: a 503 without a body
    assert store.exists("v1/a.json")
    flaky_proxy.fail_next(1)
    assert list(store.list()) == ["v1/a.json"]


def test_s3_503_forever_raises_store_unavailable(s3_bucket: str, flaky_proxy: FlakyProxy) -> None:
    sleeps: list[float] = []
    store = proxied(s3_bucket, flaky_proxy, sleeps)
    flaky_proxy.fail_forever()
    with pytest.raises(StoreUnavailable) as info:
        store.create("v1/a.json", b"payload", JSON_GZ)
    assert flaky_proxy.requests == FAST.max_attempts
    message = str(info.value)
    assert s3_bucket in message and "v1/a.json" in message and "503" in message
    assert DUMMY_ENV["AWS_SECRET_ACCESS_KEY"] not in message.replace(s3_bucket, "")
    assert cause_status(info.value) == 503
    for call in (lambda: store.read("v1/a.json"), lambda: list(store.list("v1/")), lambda: store.head("x")):
        with pytest.raises(StoreUnavailable):
            call()


def test_s3_lost_answer_to_a_landed_write_is_not_a_conflict(s3_bucket: str, flaky_proxy: FlakyProxy) -> None:
    """The PUT landed but its answer was lost; the retry's 412 is recognised as our own write."""
    store = proxied(s3_bucket, flaky_proxy, [])
    flaky_proxy.lose_next(1)
    etag = store.create("v1/a.json", b"mine", JSON_GZ)
    assert flaky_proxy.requests == 3  # PUT (landed, answer lost), PUT (412), HEAD
    flaky_proxy.lose_next(1)
    etag2 = store.replace("v1/a.json", b"mine too", JSON_GZ, expected_etag=etag)
    assert store.read("v1/a.json").etag == etag2
    with pytest.raises(ObjectExists):  # someone else's bytes are still a conflict
        store.create("v1/a.json", b"theirs", JSON_GZ)


def test_s3_connection_refused_raises_store_unavailable(s3_bucket: str) -> None:
    from tests.s3server import _free_port

    store = S3Store(s3_bucket, endpoint_url=f"http://127.0.0.1:{_free_port()}", retry_policy=FAST)
    with pytest.raises(StoreUnavailable) as info:
        store.read("v1/a.json")
    assert isinstance(info.value.__cause__, EndpointConnectionError)


def test_s3_missing_bucket_is_not_a_missing_key(s3_server: str) -> None:
    store = S3Store("no-such-bucket-here", endpoint_url=s3_server, retry_policy=FAST)
    with pytest.raises(StoreError) as info:
        store.read("v1/a.json")
    assert not isinstance(info.value, ObjectNotFound | StoreUnavailable)
    assert "NoSuchBucket" in str(info.value)


# -- LocalStore: processes, crashes, files ---------------------------------------------------------

WORKER = r"""
import sys, time, pathlib
from moonstream.store import LocalStore, ObjectExists, ObjectMeta, PreconditionFailed
mode, root, ident, rounds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
store = LocalStore(root)
gate = pathlib.Path(root).parent
(gate / f"ready-{ident}").touch()
while not (gate / "go").exists():
    time.sleep(0.001)
done = []
for i in range(rounds):
    if mode == "create":
        try:
            store.create(f"race/{i:03d}.json", ident.encode(), ObjectMeta("application/json"))
            done.append(i)
        except ObjectExists:
            pass
    else:
        while True:
            current = store.read("counter")
            try:
                store.replace("counter", str(int(current.data) + 1).encode(), current.meta,
                              expected_etag=current.etag)
                break
            except PreconditionFailed:
                done.append(i)
print(" ".join(map(str, done)))
"""


def run_workers(mode: str, root: Path, workers: int, rounds: int) -> list[list[int]]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, mode, str(root), str(n), str(rounds)],
            stdout=subprocess.PIPE,
            env=env,
        )
        for n in range(workers)
    ]
    deadline = time.monotonic() + 30
    while len(list(root.parent.glob("ready-*"))) < workers:
        assert time.monotonic() < deadline, "workers did not start"
        assert all(p.poll() is None for p in procs), "a worker died"
        time.sleep(0.01)
    (root.parent / "go").touch()
    outputs = [p.communicate(timeout=60)[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0] * workers
    return [[int(x) for x in out.split()] for out in outputs]


def test_local_create_race_between_processes_has_one_winner(tmp_path: Path) -> None:
    root = tmp_path / "store"
    won = run_workers("create", root, workers=4, rounds=25)
    store = LocalStore(root)
    for i in range(25):
        winners = [n for n, keys in enumerate(won) if i in keys]
        assert len(winners) == 1, f"race/{i:03d}.json won by {winners}"
        assert store.read(f"race/{i:03d}.json").data == str(winners[0]).encode()
    assert len(list(store.list())) == 25


def test_local_replace_between_processes_loses_no_update(tmp_path: Path) -> None:
    root = tmp_path / "store"
    LocalStore(root).create("counter", b"0", PLAIN)
    run_workers("replace", root, workers=3, rounds=20)
    assert LocalStore(root).read("counter").data == b"60"


def test_local_crash_leftovers_are_invisible(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    store.put("v1/a.json", b"complete", JSON_GZ)
    # A writer died after writing part of its temp files (object and sidecar), before the rename.
    (store.root / "v1" / ".tmp-00000000deadbeef").write_bytes(b"compl")
    (store.root / ".meta" / "objects" / "v1" / ".tmp-00000000deadbeef").write_bytes(b"{")
    assert list(store.list()) == ["v1/a.json"]
    assert store.read("v1/a.json").data == b"complete"
    assert store.head("v1/b.json") is None


def test_local_failed_rename_keeps_the_old_object(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalStore(tmp_path / "store")
    store.put("v1/a.json", b"old", JSON_GZ)
    real_replace = os.replace

    def dying_replace(src: str | Path, dst: str | Path) -> None:
        if Path(dst) == store.root / "v1" / "a.json":
            raise RuntimeError("power cut")
        real_replace(src, dst)

    monkeypatch.setattr("moonstream.store.local.os.replace", dying_replace)
    with pytest.raises(RuntimeError):
        store.put("v1/a.json", b"new", JSON_GZ)
    monkeypatch.undo()
    assert store.read("v1/a.json").data == b"old"
    assert not [p for p in store.root.rglob(".tmp-*")]


def test_local_sidecar_is_written_before_the_object(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import moonstream.store.local as local

    written: list[Path] = []
    real = local._atomic_write

    def recording(path: str | Path, data: bytes, sync: bool = True) -> None:
        written.append(Path(path))
        real(path, data, sync)

    monkeypatch.setattr(local, "_atomic_write", recording)
    store = LocalStore(tmp_path / "store")
    sidecars = store.root / ".meta" / "objects" / "v1"
    store.create("v1/a.json", b"x", JSON_GZ)
    # the first object created in a folder gives the folder its metadata (before the object): no
    # sidecar of its own
    assert written == [store.root / "v1" / "a.json"]
    assert json.loads((sidecars / local.FOLDER_META).read_bytes())["content_encoding"] == "gzip"
    assert not (sidecars / "a.json").exists()
    # a rewrite with the same metadata (every pointer update) leaves the sidecar alone
    written.clear()
    store.replace("v1/a.json", b"y", JSON_GZ, expected_etag=store.head("v1/a.json").etag)  # type: ignore[union-attr]
    assert written == [store.root / "v1" / "a.json"]
    written.clear()
    store.put("v1/a.json", b"z", ObjectMeta("application/json"))
    assert written == [sidecars / "a.json", store.root / "v1" / "a.json"]
    assert store.read("v1/a.json").meta == ObjectMeta("application/json")


def test_local_objects_created_with_their_folders_metadata_have_no_sidecar(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store", fsync_each_write=False)
    sidecars = store.root / ".meta" / "objects" / "v1" / "BTC"
    for minute in range(3):
        store.create(f"v1/BTC/{minute:04d}.json", b"{}", JSON_GZ)
    store.create("v1/BTC/latest.json", b"{}", PLAIN)  # other metadata: a sidecar of its own
    assert sorted(p.name for p in sidecars.iterdir()) == [FOLDER_META, "latest.json"]
    assert [store.read(f"v1/BTC/{m:04d}.json").meta for m in range(3)] == [JSON_GZ] * 3
    assert store.head("v1/BTC/0001.json").meta == JSON_GZ  # type: ignore[union-attr]
    assert store.read("v1/BTC/latest.json").meta == PLAIN
    assert list(store.list("v1/BTC/")) == [*(f"v1/BTC/{m:04d}.json" for m in range(3)), "v1/BTC/latest.json"]
    # A sidecar left by a create killed before its object: the next create replaces it.
    (sidecars / "0009.json").write_bytes(json.dumps({"content_type": "text/plain"}).encode())
    store.create("v1/BTC/0009.json", b"{}", JSON_GZ)
    assert store.read("v1/BTC/0009.json").meta == JSON_GZ
    # Deleted and created again with other metadata: its own sidecar; the folder's stays.
    store.delete("v1/BTC/0001.json")
    store.create("v1/BTC/0001.json", b"{}", PLAIN)
    assert store.read("v1/BTC/0001.json").meta == PLAIN
    assert store.read("v1/BTC/0002.json").meta == JSON_GZ


def test_local_barrier_mode_syncs_at_barriers_not_per_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import moonstream.store.local as local

    calls: list[str] = []
    monkeypatch.setattr(local.os, "fsync", lambda fd: calls.append("fsync"))
    real_sync = local._sync_filesystem

    def recording_sync(root: Path) -> None:
        calls.append("sync")
        real_sync(root)  # syncfs on the store's file system, for real

    monkeypatch.setattr(local, "_sync_filesystem", recording_sync)
    durable = LocalStore(tmp_path / "durable")
    durable.create("v1/a.json", b"x", JSON_GZ)
    durable.barrier()
    assert calls and set(calls) == {"fsync"}  # each write fsyncs; the barrier has nothing to do
    calls.clear()
    batched = open_store(str(tmp_path / "batched"), fsync_each_write=False)
    batched.create("v1/a.json", b"x", JSON_GZ)
    batched.replace("v1/a.json", b"y", JSON_GZ, expected_etag=batched.head("v1/a.json").etag)  # type: ignore[union-attr]
    batched.delete("v1/a.json")
    assert calls == []
    batched.barrier()
    assert calls == ["sync"]


def test_local_missing_or_broken_sidecar_falls_back_to_a_guess(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = LocalStore(tmp_path / "store")
    (store.root / "v1").mkdir(parents=True)
    (store.root / "v1" / "dropped.json").write_bytes(b"{}")
    assert store.read("v1/dropped.json").meta == ObjectMeta("application/json")
    store.put("v1/b.bin", b"x", JSON_GZ)
    (store.root / ".meta" / "objects" / "v1" / "b.bin").write_bytes(b"not json")
    assert store.read("v1/b.bin").meta == ObjectMeta("application/octet-stream")
    assert "unreadable sidecar" in caplog.text


def test_local_files_are_readable_by_a_web_server(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        store = LocalStore(tmp_path / "store")
        store.put("v1/a.json", b"x", JSON_GZ)
    finally:
        os.umask(old)
    assert (store.root / "v1" / "a.json").stat().st_mode & 0o777 == 0o644


# -- open_store ------------------------------------------------------------------------------------


def test_open_store_local_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = open_store("var/site")
    assert isinstance(store, LocalStore) and store.root == tmp_path / "var" / "site"
    assert store.root.is_dir()
    spaced = open_store((tmp_path / "with space").as_uri())
    assert isinstance(spaced, LocalStore) and spaced.root == tmp_path / "with space"
    assert spaced.root.is_dir()


@pytest.mark.parametrize("variable", ["MOONSTREAM_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"])
def test_open_store_s3(
    s3_server: str, s3_bucket: str, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.setenv(variable, s3_server)
    store = open_store(f"s3://{s3_bucket}/data/prefix/")
    assert isinstance(store, S3Store) and store.url == f"s3://{s3_bucket}/data/prefix"
    store.put("raw/x", b"x", PLAIN)
    assert list(store.list()) == ["raw/x"]
    assert open_store(f"s3://{s3_bucket}").read("data/prefix/raw/x").data == b"x"


@pytest.mark.parametrize("url", ["gs://bucket/x", "http://example.com/x", "s3://", "s3:///prefix", ""])
def test_open_store_rejects_other_urls(url: str) -> None:
    with pytest.raises(ValueError, match="URL"):
        open_store(url)
