"""Per-instrument contract configuration: how many base units one exchange contract is worth.

OKX quotes every swap size (trades ``sz``, books, liquidations ``sz``, open interest ``oi``) in
*contracts*; one contract of a USDT swap is ``ctVal`` units of the base coin, a per-instrument value
OKX publishes in ``GET /api/v5/public/instruments?instType=SWAP`` (fields ``ctVal``, ``ctValCcy``).
The normalizers convert those sizes to base units with :func:`contract_value`, which only knows the
instruments configured here: an unknown instrument raises :class:`UnknownInstrument` (counted and
skipped like any bad record), never a silent 1.0 (a wrong 1.0 would overstate BTC sizes 100×).

To add an instrument, add its ``ctVal`` from OKX's instruments endpoint, with its source.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from types import MappingProxyType

from moonstream.jobs.normalize import InvalidValue

CONTRACT_VALUES: Mapping[str, Decimal] = MappingProxyType(
    {
        # OKX docs, "Open interest channel" push example: BTC-USDT-SWAP oi "2216113.01000000309"
        # contracts, oiCcy "22161.1301000000309" BTC, i.e. exactly 0.01 BTC per contract.
        "BTC-USDT-SWAP": Decimal("0.01"),
        # ctVal from OKX GET /api/v5/public/instruments?instType=SWAP (ctValCcy ETH), as recorded in
        # third-party code (github.com/valarxu/ema-atr-trade okx-instrumentInfo_const.js).
        "ETH-USDT-SWAP": Decimal("0.1"),
        # ctVal from the same endpoint (ctValCcy SOL), same third-party record.
        "SOL-USDT-SWAP": Decimal("1"),
    }
)
"""OKX instrument id -> base units per contract (``ctVal``). Read-only."""


class UnknownInstrument(InvalidValue):
    """No contract value is configured for the instrument, so its sizes cannot be converted."""


def contract_value(instrument: str, registry: Mapping[str, Decimal] = CONTRACT_VALUES) -> Decimal:
    """Base units per contract of an OKX ``instrument`` (``BTC-USDT-SWAP`` -> ``Decimal("0.01")``).

    Raises :class:`UnknownInstrument` (an :class:`~moonstream.jobs.normalize.InvalidValue`) when the
    instrument is not configured; there is no default.
    """
    value = registry.get(instrument)
    if value is None:
        shown = instrument if len(instrument) <= 24 else instrument[:21] + "..."
        raise UnknownInstrument(f"no contract value configured for instrument {shown!r}")
    return value


__all__ = ["CONTRACT_VALUES", "UnknownInstrument", "contract_value"]
