"""Where published objects live in the site store, and which HTTP headers they carry (DESIGN §6).

v1/index.json                                   manifest (short TTL)
v1/health.json                                  health (short TTL)
v1/{SYM}/{product}/latest.json                  pointer document (short TTL)
v1/{SYM}/{product}/{YYYY-MM-DD}/{HHMM}.json     immutable version
"""

from __future__ import annotations

from dataclasses import dataclass

from moonstream.store.base import IMMUTABLE_CACHE_CONTROL, ObjectMeta
from moonstream.timeutil import minute_date_hhmm

API_VERSION = "v1"
JSON_TYPE = "application/json"
BINARY_TYPE = "application/octet-stream"
POINTER_TTL_SECONDS = 5


def pointer_cache_control(ttl_seconds: int = POINTER_TTL_SECONDS) -> str:
    """Short-lived cache header for documents that change every update."""
    return f"public, max-age={ttl_seconds}, stale-while-revalidate={ttl_seconds}"


@dataclass(frozen=True)
class SiteLayout:
    """Object keys and headers of the static API, under an optional key prefix."""

    prefix: str = ""
    gzip_json: bool = True
    pointer_ttl_seconds: int = POINTER_TTL_SECONDS

    def _key(self, *parts: str) -> str:
        return self.prefix + "/".join((API_VERSION, *parts))

    def index_key(self) -> str:
        return self._key("index.json")

    def health_key(self) -> str:
        return self._key("health.json")

    def latest_key(self, symbol: str, product: str) -> str:
        return self._key(symbol, product, "latest.json")

    def version_key(self, symbol: str, product: str, minute: int, ext: str = "json") -> str:
        day, hhmm = minute_date_hhmm(minute)
        return self._key(symbol, product, day, f"{hhmm}.{ext}")

    def version_url_template(self, symbol: str, product: str) -> str:
        """The URL pattern clients fill in, relative to the site root."""
        return "/" + self._key(symbol, product, "{YYYY-MM-DD}", "{HHMM}.json")

    def immutable_json_meta(self) -> ObjectMeta:
        return ObjectMeta(JSON_TYPE, IMMUTABLE_CACHE_CONTROL, "gzip" if self.gzip_json else None)

    def immutable_binary_meta(self) -> ObjectMeta:
        return ObjectMeta(BINARY_TYPE, IMMUTABLE_CACHE_CONTROL)

    def pointer_json_meta(self) -> ObjectMeta:
        return ObjectMeta(
            JSON_TYPE, pointer_cache_control(self.pointer_ttl_seconds), "gzip" if self.gzip_json else None
        )
