"""Import Binance large-aggTrade CSVs (``binance_trades.csv`` of the moondev template script).

No header; columns ``event_time_ms, SYMBOL, agg_trade_id, price, qty, trade_time_ms,
is_buyer_maker`` with spaces after the commas (newer rows have two more columns). Only prints over
$14,999 were recorded. Receive time = event time (ms). Channel ``csv:aggTrade``; the payload is
the CSV line exactly as in the file.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from moonstream.collector.importers.common import ImportBatch, import_rows

FORMAT = "trades-csv"
CHANNEL = "csv:aggTrade"
COLUMN_COUNTS = (7, 9)

_INSTRUMENT_RE = re.compile(r"^[A-Z0-9_]{1,40}$")


def parse_trade_row(line: bytes) -> tuple[str, int]:
    """``(instrument, recv_ns)`` of one trade row; ValueError naming what is wrong.

    ``b'1737897220002, BTCUSDT, 2541757614, 104943.5, 0.15, 1737897219873, False'``
    -> ``("BTCUSDT", 1737897220002000000)``.
    """
    fields = [field.strip() for field in line.decode("ascii").split(",")]
    if len(fields) not in COLUMN_COUNTS:
        raise ValueError(f"{len(fields)} columns, expected 7 or 9")
    stamp, instrument = fields[0], fields[1]
    if not (stamp.isdigit() and len(stamp) == 13):
        raise ValueError(f"event time {stamp[:20]!r} is not epoch milliseconds")
    if not _INSTRUMENT_RE.match(instrument):
        raise ValueError(f"symbol field {instrument[:40]!r} is not an instrument")
    return instrument, int(stamp) * 1_000_000


def import_trades_csv(lines: Iterable[tuple[int, bytes]], batch: ImportBatch) -> None:
    """Parse every row into ``batch`` as ``csv:aggTrade`` records."""
    import_rows(lines, batch, parse_trade_row, CHANNEL)
