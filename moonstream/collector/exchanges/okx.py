"""OKX v5 USDT swaps: the exchange module (message shapes, channel tags, REST endpoints).

Pure dict and string work shared by the importers and (later) the live collector. Public messages
carry their subscription in ``arg``: ``{"arg":{"channel":"books","instId":"BTC-USDT-SWAP"},
"action":"update","data":[...]}``; the raw-file channel tag is ``ws:`` plus OKX's channel name
(``ws:books``, ``ws:trades``, ``ws:liquidation-orders``), and subscription acknowledgements and
errors (messages with an ``event`` field) are ``ws:event``.
"""

from __future__ import annotations

import re
from typing import Any

from moonstream.symbols import Exchange, symbol_from_instrument

EXCHANGE = Exchange.OKX

_CHANNEL_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
_REST_CHANNELS = {
    "/api/v5/market/books": "rest:depth",
    "/api/v5/market/books-full": "rest:depth",
    "/api/v5/public/open-interest": "rest:oi",
    "/api/v5/rubik/stat/contracts/long-short-account-ratio-contract": "rest:ratio:longShortAccountRatio",
}


def ws_channel(message: Any) -> str | None:
    """Channel tag of a public WS message: ``ws:books``, ``ws:trades``, or ``ws:event``; None if unknown."""
    if not isinstance(message, dict):
        return None
    if "event" in message:
        return "ws:event"
    arg = message.get("arg")
    name = arg.get("channel") if isinstance(arg, dict) else None
    if not isinstance(name, str) or not _CHANNEL_NAME_RE.match(name):
        return None
    return f"ws:{name}"


def ws_instrument(message: Any) -> str | None:
    """The instrument a message is about: ``arg.instId``, else the one ``instId`` all data rows share.

    ``{"arg":{"channel":"trades","instId":"BTC-USDT-SWAP"},"data":[...]}`` -> ``"BTC-USDT-SWAP"``.
    """
    if not isinstance(message, dict):
        return None
    arg = message.get("arg")
    if isinstance(arg, dict) and isinstance(arg.get("instId"), str):
        return str(arg["instId"])
    data = message.get("data")
    if not isinstance(data, list) or not data:
        return None
    names = {row.get("instId") for row in data if isinstance(row, dict)}
    if len(names) == 1:
        (name,) = names
        return name if isinstance(name, str) else None
    return None


def rest_channel(path: str) -> str | None:
    """Channel tag of a REST path (``/api/v5/market/books`` -> ``rest:depth``), None if unrecorded."""
    return _REST_CHANNELS.get(path.rstrip("/"))


def symbol_of(instrument: str) -> str | None:
    """Our symbol for an OKX instId (``BTC-USDT-SWAP`` -> ``BTC``), None unless it is a USDT swap."""
    return symbol_from_instrument(EXCHANGE, instrument)


def is_okx_host(host: str) -> bool:
    """True for OKX hosts (``ws.okx.com``, ``wsaws.okx.com``, ``www.okx.com``)."""
    host = host.lower()
    return host == "okx.com" or host.endswith(".okx.com")
