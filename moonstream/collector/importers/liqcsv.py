"""Import Binance liquidation CSVs recorded from ``!forceOrder@arr`` (the moondev template script).

No header; columns are the forceOrder ``o`` fields ``s,S,o,f,q,p,ap,X,l,z,T`` then ``usd_size``.
The recorder removed the text ``USDT`` from the whole line, so ``BTC`` means ``BTCUSDT`` while
``BTCUSDC`` (a USDC-margined contract) and ``BTC_250627`` (a delivery contract) are not USDT
perpetuals; some rows kept ``BTCUSDT``. Receive time = ``T`` (trade time, ms). Channel
``csv:forceOrder``; the payload is the CSV line exactly as in the file.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from moonstream.collector.importers.common import ImportBatch, import_rows

FORMAT = "liq-csv"
CHANNEL = "csv:forceOrder"
COLUMNS = ("s", "S", "o", "f", "q", "p", "ap", "X", "l", "z", "T", "usd_size")

_NAME_RE = re.compile(r"^[A-Z0-9]{1,20}$")
_DELIVERY_RE = re.compile(r"^(?P<base>[A-Z0-9]{1,20})_(?P<date>\d{6})$")
_OTHER_QUOTES = ("USDC", "BUSD")


def liq_csv_instrument(field: str) -> str | None:
    """The Binance instrument a stripped symbol field stands for; None if it is not one.

    ``BTC`` -> ``BTCUSDT``; ``BTCUSDT`` -> ``BTCUSDT``; ``BTCUSDC`` -> ``BTCUSDC``;
    ``BTC_250627`` -> ``BTCUSDT_250627``; ``Hello Arbitrage Trading BotADA`` -> None.
    """
    delivery = _DELIVERY_RE.match(field)
    if delivery:
        return f"{delivery['base']}USDT_{delivery['date']}"
    if not _NAME_RE.match(field):
        return None
    if field.endswith("USDT") or (len(field) > 4 and field.endswith(_OTHER_QUOTES)):
        return field
    return f"{field}USDT"


def parse_liq_row(line: bytes) -> tuple[str, int]:
    """``(instrument, recv_ns)`` of one liquidation row; ValueError naming what is wrong.

    ``b'BTC,BUY,LIMIT,IOC,0.025,59935.28,59697.40,FILLED,0.025,0.025,1723971641090,1498.382'``
    -> ``("BTCUSDT", 1723971641090000000)``.
    """
    fields = line.decode("ascii").split(",")
    if len(fields) != len(COLUMNS):
        raise ValueError(f"{len(fields)} columns, expected {len(COLUMNS)}")
    instrument = liq_csv_instrument(fields[0])
    if instrument is None:
        raise ValueError(f"symbol field {fields[0][:40]!r} is not an instrument")
    if fields[1] not in ("BUY", "SELL"):
        raise ValueError(f"side {fields[1][:20]!r} is not BUY or SELL")
    stamp = fields[10]
    if not (stamp.isdigit() and len(stamp) == 13):
        raise ValueError(f"trade time {stamp[:20]!r} is not epoch milliseconds")
    return instrument, int(stamp) * 1_000_000


def import_liq_csv(lines: Iterable[tuple[int, bytes]], batch: ImportBatch) -> None:
    """Parse every row into ``batch`` as ``csv:forceOrder`` records."""
    import_rows(lines, batch, parse_liq_row, CHANNEL)
