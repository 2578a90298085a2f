"""What one symbol-minute adds to the site: versions, ``latest`` pointers, the index and health.

Pointer rules (all compare-and-swap, all forward-only so a backfill of old minutes never moves a
pointer backwards):

* ``latest.json`` is replaced by a document of the same or a newer minute;
* ``index.json`` only ever gains symbols and products;
* ``health.json`` keeps, per symbol, the newest minute published and the sources seen in it.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from importlib import resources
from typing import Any

import jinja2

from moonstream.publish.history import HISTORY_FORMATS, add_history, index_key as history_index_key
from moonstream.publish.layout import API_VERSION, SiteLayout
from moonstream.publish.publisher import PointerMerge, Publication
from moonstream.store.base import IMMUTABLE_CACHE_CONTROL, ObjectExists, ObjectMeta, Store

logger = logging.getLogger(__name__)

INDEX_SCHEMA_VERSION = 1
HEALTH_SCHEMA_VERSION = 1


@functools.cache
def schema_names() -> tuple[str, ...]:
    """Every document with a JSON Schema shipped in ``moonstream/publish/schemas`` (``{name}.v1.json``);
    listed once per process (the index merge of every minute asks)."""
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
            if product in HISTORY_FORMATS:
                product_map[product]["history"] = "/" + history_index_key(layout, symbol, product)
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
            "collectors": live["collectors"]
            if live and "collectors" in live
            else health.get("collectors", {}),
            "symbols": dict(sorted(symbols.items())),
        }

    return merge


def publish_collector_health(store: Store, layout: SiteLayout, collectors: Mapping[str, Any]) -> bool:
    """Replace ``health.json``'s ``collectors`` (the live connection state) and keep the rest; called
    every few seconds, so a terminal sees a disconnect without waiting for the next minute. Returns
    whether health.json changed."""

    def merge(current: Any | None) -> Any | None:
        health: dict[str, Any] = dict(current) if isinstance(current, dict) else {}
        if health.get("collectors") == collectors:
            return None
        stamps = [str(c.get("generated_at")) for c in collectors.values() if c.get("generated_at")]
        return {
            "schema_version": HEALTH_SCHEMA_VERSION,
            "generated_at": health.get("generated_at") or (max(stamps) if stamps else ""),
            "collectors": dict(collectors),
            "symbols": health.get("symbols", {}),
        }

    pub = Publication(store, layout)
    pub.update_pointer_json(layout.health_key(), merge)
    return pub.commit().pointers_written > 0


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
    # History chunks (immutable complete hour, then the partial-hour chunk and history index pointers).
    add_history(pub, layout, symbol, minute, documents, blobs)
    for product, document in sorted(documents.items()):
        pub.update_pointer_json(layout.latest_key(symbol, product), _forward_only(document))
    pub.update_pointer_json(layout.index_key(), _index_merge(layout, symbol, sorted(documents)))
    minute_iso = next(iter(documents.values()))["minute"]
    pub.update_pointer_json(layout.health_key(), _health_merge(symbol, minute_iso, sources, live))


def render_viewer(layout: SiteLayout) -> list[tuple[str, bytes, str]]:
    """The viewer's files as ``(name relative to the site root, bytes, Content-Type)``: ``index.html``
    rendered with Jinja2 (API root and version only, so the page is byte-stable) and ``frames.js``."""
    folder = resources.files("moonstream.publish") / "templates"
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    page = env.from_string((folder / "index.html").read_text(encoding="utf-8")).render(
        api_version=API_VERSION,
        prefix=layout.prefix,
        index_url=f"{API_VERSION}/index.json",
        frames_js="frames.js",
    )
    return [
        ("index.html", page.encode(), "text/html; charset=utf-8"),
        ("frames.js", (folder / "frames.js").read_bytes(), "text/javascript; charset=utf-8"),
    ]


def publish_static_assets(store: Store, layout: SiteLayout) -> int:
    """Publish the JSON Schemas (immutable per version) and the viewer; returns objects written."""
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
    for name, data, content_type in render_viewer(layout):
        meta = ObjectMeta(content_type, "public, max-age=60")
        key = f"{layout.prefix}{name}"
        current = store.head(key)
        if current is None or current.meta != meta or store.read_bytes(key) != data:
            store.put(key, data, meta)
            written += 1
    return written
