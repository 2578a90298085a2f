"""The publisher's ordering and pointer rules, against a real local-directory store."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from moonstream.publish.encode import canonical_json
from moonstream.publish.errors import ImmutableConflict
from moonstream.publish.layout import SiteLayout
from moonstream.publish.publisher import PointerBuffer, Publication, publication
from moonstream.publish.site import add_minute_documents
from moonstream.store.base import IMMUTABLE_CACHE_CONTROL
from moonstream.store.local import LocalStore
from moonstream.timeutil import iso_minute

LAYOUT = SiteLayout()
SOURCES = {"exchanges": {}, "missing_exchanges": ["binance"]}


def doc(minute: str, value: int = 1) -> dict:
    return {"minute": minute, "value": value}


def read(store: LocalStore, key: str) -> dict:
    obj = store.read(key)
    return json.loads(gzip.decompress(obj.data) if obj.meta.content_encoding == "gzip" else obj.data)


def test_canonical_json_is_sorted_compact_and_refuses_nan() -> None:
    assert canonical_json({"b": 1, "a": [1.5, "x"]}) == b'{"a":[1.5,"x"],"b":1}'
    with pytest.raises(ValueError):
        canonical_json({"a": float("nan")})


def test_exception_inside_the_block_writes_nothing(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    with pytest.raises(RuntimeError), publication(store, LAYOUT) as pub:
        add_minute_documents(pub, LAYOUT, "BTC", 100, {"market": doc("1970-01-01T01:40:00Z")}, SOURCES, None)
        raise RuntimeError("engine failed")
    assert list(store.list("")) == []


def test_versions_then_pointers_with_headers(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    with publication(store, LAYOUT) as pub:
        add_minute_documents(pub, LAYOUT, "BTC", 100, {"market": doc("1970-01-01T01:40:00Z")}, SOURCES, None)
    keys = pub.report.keys_written
    assert keys[0] == "v1/BTC/market/1970-01-01/0140.json"
    assert keys[1:] == ["v1/BTC/market/latest.json", "v1/index.json", "v1/health.json"]
    version = store.read(keys[0])
    assert version.meta.cache_control == IMMUTABLE_CACHE_CONTROL
    assert version.meta.content_encoding == "gzip" and version.meta.content_type == "application/json"
    latest = store.read("v1/BTC/market/latest.json")
    assert latest.meta.cache_control is not None and "max-age=5" in latest.meta.cache_control
    assert read(store, "v1/BTC/market/latest.json") == doc("1970-01-01T01:40:00Z")
    assert read(store, "v1/health.json")["symbols"]["BTC"]["missing_exchanges"] == ["binance"]


def test_latest_and_health_only_move_forward(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    for minute, text in ((101, "1970-01-01T01:41:00Z"), (100, "1970-01-01T01:40:00Z")):
        with publication(store, LAYOUT) as pub:
            add_minute_documents(pub, LAYOUT, "BTC", minute, {"market": doc(text)}, SOURCES, None)
    assert read(store, "v1/BTC/market/latest.json")["minute"] == "1970-01-01T01:41:00Z"
    assert read(store, "v1/health.json")["symbols"]["BTC"]["last_minute"] == "1970-01-01T01:41:00Z"
    assert store.exists("v1/BTC/market/1970-01-01/0140.json")


def test_index_accumulates_symbols(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    for symbol in ("ETH", "BTC"):
        with publication(store, LAYOUT) as pub:
            add_minute_documents(
                pub, LAYOUT, symbol, 100, {"market": doc("1970-01-01T01:40:00Z")}, SOURCES, None
            )
    index = read(store, "v1/index.json")
    assert list(index["symbols"]) == ["BTC", "ETH"]
    assert (
        index["symbols"]["ETH"]["products"]["market"]["versions"] == "/v1/ETH/market/{YYYY-MM-DD}/{HHMM}.json"
    )


def test_same_minute_republished_identically_writes_nothing(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    for _ in range(2):
        with publication(store, LAYOUT) as pub:
            add_minute_documents(
                pub, LAYOUT, "BTC", 100, {"market": doc("1970-01-01T01:40:00Z")}, SOURCES, None
            )
    assert pub.report.immutables_written == 0 and pub.report.pointers_written == 0
    assert pub.report.immutables_unchanged == 1 and pub.report.pointers_unchanged == 3


def test_changed_immutable_is_refused_unless_replacing(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    with publication(store, LAYOUT) as pub:
        add_minute_documents(
            pub, LAYOUT, "BTC", 100, {"market": doc("1970-01-01T01:40:00Z", 1)}, SOURCES, None
        )
    with pytest.raises(ImmutableConflict), publication(store, LAYOUT) as pub:
        add_minute_documents(
            pub, LAYOUT, "BTC", 100, {"market": doc("1970-01-01T01:40:00Z", 2)}, SOURCES, None
        )
    assert read(store, "v1/BTC/market/latest.json")["value"] == 1
    with publication(store, LAYOUT, replace_immutable=True) as pub:
        add_minute_documents(
            pub, LAYOUT, "BTC", 100, {"market": doc("1970-01-01T01:40:00Z", 2)}, SOURCES, None
        )
    assert read(store, "v1/BTC/market/1970-01-01/0140.json")["value"] == 2
    assert read(store, "v1/BTC/market/latest.json")["value"] == 2


def test_every_product_has_a_published_schema() -> None:
    from moonstream.jobs.minute import PRODUCTS
    from moonstream.publish.site import schema_names

    names = set(schema_names())
    assert {"index", "health"} <= names
    assert set(PRODUCTS) <= names, f"products without a JSON Schema: {sorted(set(PRODUCTS) - names)}"


def _objects(store: LocalStore) -> dict[str, tuple[bytes, object]]:
    return {key: (store.read(key).data, store.read(key).meta) for key in store.list("")}


def test_held_pointers_write_the_same_objects_as_publishing_minute_by_minute(tmp_path: Path) -> None:
    direct, held = LocalStore(tmp_path / "direct"), LocalStore(tmp_path / "held")
    buffer = PointerBuffer(held, LAYOUT)
    minutes = range(100, 105)
    for minute in minutes:
        documents = {"market": doc(iso_minute(minute), minute)}
        with publication(direct, LAYOUT) as direct_pub:
            add_minute_documents(direct_pub, LAYOUT, "BTC", minute, documents, SOURCES, None)
        with publication(held, LAYOUT, pointers=buffer) as pub:
            add_minute_documents(pub, LAYOUT, "BTC", minute, documents, SOURCES, None)
        assert pub.report == direct_pub.report  # held changes count as the writes they stand for
    # Until the flush a reader sees the immutables only, never a pointer.
    assert sorted(held.list("")) == [
        f"v1/BTC/market/1970-01-01/{m // 60:02d}{m % 60:02d}.json" for m in minutes
    ]
    assert buffer.pending() == 3
    report = buffer.flush()
    assert sorted(report.keys_written) == ["v1/BTC/market/latest.json", "v1/health.json", "v1/index.json"]
    assert _objects(held) == _objects(direct)
    assert buffer.pending() == 0 and buffer.flush().keys_written == []


def _held_minutes(store: LocalStore, minutes: tuple[int, ...]) -> PointerBuffer:
    """BTC market documents of ``minutes`` published to ``store`` with their pointer updates held."""
    buffer = PointerBuffer(store, LAYOUT)
    for minute in minutes:
        with publication(store, LAYOUT, pointers=buffer) as pub:
            add_minute_documents(
                pub, LAYOUT, "BTC", minute, {"market": doc(iso_minute(minute))}, SOURCES, None
            )
    return buffer


def test_a_held_latest_pointer_is_flushed_with_its_versions_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import moonstream.publish.publisher as publisher

    store = LocalStore(tmp_path)
    buffer = _held_minutes(store, (100, 101))
    encoded: list[object] = []
    real = publisher.encode_document

    def counting(layout: SiteLayout, document: object) -> bytes:
        encoded.append(document)
        return real(layout, document)

    monkeypatch.setattr(publisher, "encode_document", counting)
    buffer.flush()
    # latest.json is the bytes of its version, not encoded again; index and health are encoded
    assert store.read_bytes("v1/BTC/market/latest.json") == store.read_bytes(
        "v1/BTC/market/1970-01-01/0141.json"
    )
    assert len(encoded) == 2 and doc(iso_minute(101)) not in encoded


def test_a_flush_after_another_writer_applies_the_held_updates_again(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    buffer = _held_minutes(store, (100, 101))
    assert buffer.document("v1/health.json")["symbols"]["BTC"]["last_minute"] == iso_minute(101)
    # Meanwhile another runner publishes ETH and a newer BTC minute straight to the store.
    with publication(store, LAYOUT) as pub:
        add_minute_documents(pub, LAYOUT, "ETH", 100, {"market": doc(iso_minute(100))}, SOURCES, None)
        add_minute_documents(pub, LAYOUT, "BTC", 102, {"market": doc(iso_minute(102))}, SOURCES, None)
    buffer.flush()
    assert sorted(read(store, "v1/index.json")["symbols"]) == ["BTC", "ETH"]
    health = read(store, "v1/health.json")["symbols"]
    assert (health["BTC"]["last_minute"], health["ETH"]["last_minute"]) == (iso_minute(102), iso_minute(100))
    assert read(store, "v1/BTC/market/latest.json")["minute"] == iso_minute(102)  # forward only


def test_a_buffer_serves_only_its_own_store(tmp_path: Path) -> None:
    buffer = PointerBuffer(LocalStore(tmp_path / "a"), LAYOUT)
    with pytest.raises(ValueError, match="store it was made for"):
        Publication(LocalStore(tmp_path / "b"), LAYOUT, pointers=buffer)
