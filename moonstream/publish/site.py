"""What one symbol-minute adds to the site: versions, ``latest`` pointers, the index and health.

Pointer rules (all compare-and-swap, all forward-only so a backfill of old minutes never moves a
pointer backwards):

* ``latest.json`` is replaced by a document of the same or a newer minute;
* ``index.json`` only ever gains symbols and products;
* ``health.json`` keeps, per symbol, the newest minute published and the sources seen in it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from importlib import resources
from typing import Any

from moonstream.publish.layout import API_VERSION, SiteLayout
from moonstream.publish.publisher import PointerMerge, Publication
from moonstream.store.base import IMMUTABLE_CACHE_CONTROL, ObjectExists, ObjectMeta, Store

logger = logging.getLogger(__name__)

INDEX_SCHEMA_VERSION = 1
HEALTH_SCHEMA_VERSION = 1


def schema_names() -> tuple[str, ...]:
    """Every document with a JSON Schema shipped in ``moonstream/publish/schemas`` (``{name}.v1.json``)."""
    folder = resources.files("moonstream.publish") / "schemas"
    return tuple(
        sorted(p.name.removesuffix(".v1.json") for p in folder.iterdir() if p.name.endswith(".v1.json"))
    )


def schema_key(layout: SiteLayout, name: str, version: int = 1) -> str:
    return f"{layout.prefix}{API_VERSION}/schemas/{name}.v{version}.json"


def _forward_only(document: dict[str, Any]) -> PointerMerge:
    def merge(current: Any | None) -> Any | None:
        if isinstance(current, dict) and str(current.get("minute", "")) > document["minute"]:
            return None
        return document

    return merge


def _index_merge(layout: SiteLayout, symbol: str, products: list[str]) -> PointerMerge:
    def merge(current: Any | None) -> Any | None:
        index: dict[str, Any] = current if isinstance(current, dict) else {}
        symbols: dict[str, Any] = dict(index.get("symbols", {}))
        entry = dict(symbols.get(symbol, {}))
        product_map = dict(entry.get("products", {}))
        for product in products:
            product_map[product] = {
                "latest": "/" + layout.latest_key(symbol, product),
                "versions": layout.version_url_template(symbol, product),
                "schema": "/" + schema_key(layout, product),
                "schema_version": 1,
            }
        entry["products"] = dict(sorted(product_map.items()))
        symbols[symbol] = entry
        return {
            "schema_version": INDEX_SCHEMA_VERSION,
            "api_version": API_VERSION,
            "health": "/" + layout.health_key(),
            "schemas": {name: "/" + schema_key(layout, name) for name in schema_names()},
            "symbols": dict(sorted(symbols.items())),
        }

    return merge


def _health_merge(
    symbol: str, minute_iso: str, sources: Mapping[str, Any], live: Mapping[str, Any] | None
) -> PointerMerge:
    def merge(current: Any | None) -> Any | None:
        health: dict[str, Any] = current if isinstance(current, dict) else {}
        symbols: dict[str, Any] = dict(health.get("symbols", {}))
        previous = symbols.get(symbol)
        if isinstance(previous, dict) and str(previous.get("last_minute", "")) > minute_iso:
            return None
        symbols[symbol] = {
            "last_minute": minute_iso,
            "lag_seconds": None if live is None else live["lag_seconds"],
            "late_files": None if live is None else live["late_files"],
            "exchanges": sources["exchanges"],
            "missing_exchanges": sources["missing_exchanges"],
        }
        newest = max(str(s["last_minute"]) for s in symbols.values())
        return {
            "schema_version": HEALTH_SCHEMA_VERSION,
            "generated_at": newest,
            "collectors": health.get("collectors", {}),
            "symbols": dict(sorted(symbols.items())),
        }

    return merge


def add_minute_documents(
    pub: Publication,
    layout: SiteLayout,
    symbol: str,
    minute: int,
    documents: Mapping[str, dict[str, Any]],
    sources: Mapping[str, Any],
    live: Mapping[str, Any] | None,
    blobs: Mapping[str, bytes] | None = None,
) -> None:
    """Queue one symbol-minute's products: immutable versions first, then the pointers.

    ``live`` (``lag_seconds``, ``late_files``) is given by live runs only and goes into health.json.
    ``blobs`` are a product's binary frames for the minute, published beside its JSON version, which
    names them in a ``bin`` field.
    """
    blobs = blobs or {}
    documents = {
        product: {**document, "bin": "/" + layout.version_key(symbol, product, minute, "bin")}
        if product in blobs
        else document
        for product, document in documents.items()
    }
    for product, data in sorted(blobs.items()):
        pub.add_immutable(
            layout.version_key(symbol, product, minute, "bin"), data, layout.immutable_binary_meta()
        )
    for product, document in sorted(documents.items()):
        pub.add_immutable_json(layout.version_key(symbol, product, minute), document)
    for product, document in sorted(documents.items()):
        pub.update_pointer_json(layout.latest_key(symbol, product), _forward_only(document))
    pub.update_pointer_json(layout.index_key(), _index_merge(layout, symbol, sorted(documents)))
    minute_iso = next(iter(documents.values()))["minute"]
    pub.update_pointer_json(layout.health_key(), _health_merge(symbol, minute_iso, sources, live))


def publish_static_assets(store: Store, layout: SiteLayout) -> int:
    """Publish the JSON Schemas (immutable per version) and the viewer page; returns objects written."""
    written = 0
    package = resources.files("moonstream.publish")
    for name in schema_names():
        data = (package / "schemas" / f"{name}.v1.json").read_bytes()
        meta = ObjectMeta("application/schema+json", IMMUTABLE_CACHE_CONTROL)
        try:
            written += store.create_or_same(schema_key(layout, name), data, meta)
        except ObjectExists:
            logger.error("%s differs from the published schema: give a changed schema a new version",
                         schema_key(layout, name))  # fmt: skip
    page = (package / "templates" / "index.html").read_bytes()
    page_meta = ObjectMeta("text/html; charset=utf-8", "public, max-age=60")
    current = store.head(f"{layout.prefix}index.html")
    if current is None or store.read_bytes(f"{layout.prefix}index.html") != page:
        store.put(f"{layout.prefix}index.html", page, page_meta)
        written += 1
    return written
