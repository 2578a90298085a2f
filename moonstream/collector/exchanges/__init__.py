"""Exchange modules and their registry: what the live collector needs to know about each exchange.

Each exchange module (``binance``, ``bybit``, ``okx``) keeps its pure helpers (stream names,
channel tags; shared with the importers) and provides one :class:`ExchangeSpec` named ``SPEC``:

* base URLs, overridable with ``MOONSTREAM_{EXCHANGE}_{WS,REST}_URL`` (proxies, tests);
* :attr:`ExchangeSpec.connections`: the websocket URL(s) and subscription messages for our symbols;
* :attr:`ExchangeSpec.route`: ``payload bytes -> (symbol, channel)``, cheaply (no full JSON parse
  where the exchange puts the stream name first). Besides one of our symbols, the symbol may be
  :data:`CONNECTION` (a message about the connection itself: subscription acknowledgements,
  application-level pongs, errors; written to the connection's first symbol) or :data:`VENUE_WIDE`
  (a channel that carries every instrument: :attr:`ExchangeSpec.wide_symbols` says which of ours
  it concerns; it is written to each of them, and dropped and counted when it concerns none);
* :attr:`ExchangeSpec.rest_polls`: REST endpoints per symbol, with their intervals; a poll marked
  ``snapshot`` is also fetched at every connect and after every detected sequence gap;
* :attr:`ExchangeSpec.new_sequencer`: gap detection on the order-book channel, and
  :attr:`ExchangeSpec.resync`: what to send on the websocket after a gap (OKX resubscribes the book);
* keepalive rules: protocol ping interval and timeout, an optional application-level ping message
  (with an optional answer timeout), and the connection age after which the collector reconnects
  on its own (before the exchange's own limit, e.g. Binance's 24 h).

Adding an exchange is one module with a ``SPEC`` and one line in :data:`EXCHANGES`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlencode


@dataclass(frozen=True, slots=True)
class WsPlan:
    """One websocket connection: where to connect, which of our symbols it carries, what to send."""

    url: str
    symbols: tuple[str, ...]
    subscribe: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RestPoll:
    """One REST endpoint polled for one symbol; the response body is recorded under ``channel``.

    ``params`` is a tuple of ``(name, value)`` pairs (the query string, in order). ``snapshot`` polls
    (order-book snapshots) also run at every connect and after every sequence gap.
    """

    channel: str
    path: str
    params: tuple[tuple[str, str], ...]
    interval_s: float
    snapshot: bool = False

    def url(self, base: str) -> str:
        """``base`` + path + query string."""
        query = urlencode(self.params)
        return f"{base.rstrip('/')}{self.path}" + (f"?{query}" if query else "")


class Sequencer(Protocol):
    """Order-book sequence checker for one connection (state resets with each new connection).

    A sequencer may declare ``channels: frozenset[str]``, the channel tags it looks at; the
    connection then skips the call for every other message (without it, it sees every message).
    """

    def check(self, symbol: str, channel: str, payload: bytes) -> dict[str, Any] | None:
        """Details of a gap this message reveals (JSON-able), or None when the chain holds."""
        ...


Router = Callable[[bytes], "tuple[str, str] | None"]

CONNECTION = ""
"""Router symbol of a connection-level message (acks, pongs, errors): kept in the first symbol's file."""
VENUE_WIDE = "*"
"""Router symbol of a venue-wide message: :attr:`ExchangeSpec.wide_symbols` names the symbols."""


@dataclass(frozen=True)
class ExchangeSpec:
    """Everything the collector needs about one exchange (see the module docstring)."""

    name: str
    default_ws_url: str
    default_rest_url: str
    connections: Callable[[str, tuple[str, ...]], list[WsPlan]]
    route: Router
    rest_polls: Callable[[str], tuple[RestPoll, ...]]
    new_sequencer: Callable[[], Sequencer] | None = None
    ping_interval_s: float | None = 20.0
    ping_timeout_s: float | None = 20.0
    app_ping: str | None = None
    app_ping_interval_s: float = 20.0
    app_ping_timeout_s: float | None = None
    """Close the connection (``reason: pong_timeout``) when nothing arrives this long after an app ping."""
    wide_symbols: Callable[[bytes], tuple[str, ...]] | None = None
    """The symbols (ours or not) a :data:`VENUE_WIDE` message concerns."""
    resync: Callable[[str, str], tuple[str, ...]] | None = None
    """Messages to send on the connection after a sequence gap on ``(symbol, channel)``."""
    max_connection_age_s: float = 23.5 * 3600
    rate_limit_statuses: frozenset[int] = field(default_factory=lambda: frozenset({429, 418}))
    rate_limited_body: Callable[[bytes], bool] | None = None
    """Whether an HTTP 200 body is the exchange's own rate-limit error (Bybit ``retCode`` 10006,
    OKX ``code`` 50011): recorded as received, and counted and paused on like a 429."""
    rate_limit_min_pause_s: dict[int, float] = field(default_factory=dict)
    """Per rate-limit status, the least pause when the answer has no ``Retry-After`` (a ban the
    exchange documents, e.g. Bybit's 403: "wait for at least 10 minutes")."""

    def _env(self, kind: str) -> str | None:
        value = os.environ.get(f"MOONSTREAM_{self.name.upper()}_{kind}_URL", "").strip()
        return value or None

    def ws_base_url(self) -> str:
        """The websocket base URL: ``MOONSTREAM_{NAME}_WS_URL`` or the exchange's own."""
        return (self._env("WS") or self.default_ws_url).rstrip("/")

    def rest_base_url(self) -> str:
        """The REST base URL: ``MOONSTREAM_{NAME}_REST_URL`` or the exchange's own."""
        return (self._env("REST") or self.default_rest_url).rstrip("/")


# the modules import the types above
from moonstream.collector.exchanges import binance, bybit, okx  # noqa: E402

EXCHANGES: dict[str, ExchangeSpec] = {
    "binance": binance.SPEC,
    "bybit": bybit.SPEC,
    "okx": okx.SPEC,
}
"""Registered exchanges by name; the collector's ``exchanges`` config picks from these."""


def get_exchange(name: str) -> ExchangeSpec:
    """The registered spec for ``name``; ValueError naming the known ones otherwise."""
    try:
        return EXCHANGES[name]
    except KeyError:
        raise ValueError(f"unknown exchange {name!r}; known: {', '.join(sorted(EXCHANGES))}") from None
