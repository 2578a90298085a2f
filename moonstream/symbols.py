"""Our symbols and the exchanges' names for them.

Our symbol is the base asset of a USDT-margined perpetual (``BTC``); each exchange spells the
instrument its own way. Mapping is pure string work here; which symbols are *configured* is the
caller's business.
"""

from __future__ import annotations

import enum
import re

DEFAULT_SYMBOLS: tuple[str, ...] = ("BTC", "ETH", "SOL")

_SYMBOL_RE = re.compile(r"^[A-Z0-9]{1,20}$")


class Exchange(enum.StrEnum):
    BINANCE = "binance"
    BYBIT = "bybit"
    OKX = "okx"


def is_valid_symbol(symbol: str) -> bool:
    """Our symbols are 1-20 upper-case letters or digits (``BTC``, ``1000PEPE``)."""
    return bool(_SYMBOL_RE.match(symbol))


def exchange_instrument(exchange: Exchange, symbol: str) -> str:
    """The exchange's instrument name for our symbol: ``BTCUSDT`` or ``BTC-USDT-SWAP``."""
    if exchange is Exchange.OKX:
        return f"{symbol}-USDT-SWAP"
    return f"{symbol}USDT"


def symbol_from_instrument(exchange: Exchange, instrument: str) -> str | None:
    """Our symbol for an exchange instrument name, or None if it is not a USDT perpetual."""
    name = instrument.upper()
    if exchange is Exchange.OKX:
        base, _, rest = name.partition("-")
        return base if rest == "USDT-SWAP" and is_valid_symbol(base) else None
    if name.endswith("USDT") and len(name) > 4:
        base = name[:-4]
        return base if is_valid_symbol(base) else None
    return None
