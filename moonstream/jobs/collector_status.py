"""What the collectors say about themselves, summarized for ``v1/health.json``.

Each collector replaces ``status/collector-{id}.json`` in the data store every few seconds
(docs/collector.md). The summary keeps what a trader's terminal needs (connected or not, last
message, reconnects, gaps, messages) and drops URLs, error texts and local details.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from moonstream.store.base import ObjectNotFound, Store

logger = logging.getLogger(__name__)

STATUS_PREFIX = "status/collector-"
_EXCHANGE_FIELDS = ("connected", "last_message_at", "reconnects", "gaps", "messages")


def summarize_status(document: dict[str, Any]) -> dict[str, Any]:
    """The public part of one collector's status document."""
    exchanges = {
        str(name): {field: entry.get(field) for field in _EXCHANGE_FIELDS}
        for name, entry in sorted(document.get("exchanges", {}).items())
        if isinstance(entry, dict)
    }
    return {
        "running": bool(document.get("running")),
        "generated_at": document.get("generated_at"),
        "symbols": list(document.get("symbols", [])),
        "exchanges": exchanges,
    }


def read_collector_status(store: Store) -> dict[str, Any]:
    """Every collector's summary, by collector id; unreadable documents are skipped and logged."""
    collectors: dict[str, Any] = {}
    for key in store.list(STATUS_PREFIX):
        if not key.endswith(".json"):
            continue
        collector_id = key[len(STATUS_PREFIX) : -len(".json")]
        try:
            document = json.loads(store.read_bytes(key))
            collectors[collector_id] = summarize_status(document)
        except ObjectNotFound:
            continue
        except (ValueError, AttributeError, TypeError) as exc:
            logger.warning(
                "collector status %s is unreadable (%s); left out of health", key, type(exc).__name__
            )
    return collectors
