"""``moonstream import``: third-party recordings into raw minute files (DESIGN §3, docs/formats.md).

One module per source format; :func:`import_file` detects the format, parses every line into
records grouped by (symbol, minute, exchange) and writes each group with
:func:`moonstream.collector.rawfile.write_minute_file` under the collector id ``imp-<sha256[:10]>``
of the file's content, so importing the same file again adds nothing and two different files that
touch the same minute both survive.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from moonstream.collector.importers.common import (
    ImportBatch,
    ImportFormatError,
    ImportReport,
    collector_id_for,
    iter_lines,
    parse_timestamp_ns,
    read_source,
)
from moonstream.collector.importers.cryptofeed import import_cryptofeed
from moonstream.collector.importers.hftbacktest import import_hftbacktest
from moonstream.collector.importers.liqcsv import import_liq_csv
from moonstream.collector.importers.tradecsv import import_trades_csv
from moonstream.store.base import Store
from moonstream.symbols import is_valid_symbol

__all__ = [
    "FORMATS",
    "ImportFormatError",
    "ImportReport",
    "detect_format",
    "import_file",
    "parse_timestamp_ns",
    "run_import",
]

log = logging.getLogger(__name__)

FORMATS = ("hftbacktest", "cryptofeed", "liq-csv", "trades-csv")
DETECT_LINES = 50

_HFT_RE = re.compile(rb"^\d{9,20}(?:\.\d+)? [\[{]")
_CRYPTOFEED_RE = re.compile(rb"^(?:\S+ (?:<->|<-|->) \d+(?:\.\d+)?(?:$|: )|\d+\.\d+: [\[{]|configuration: )")


def _vote(line: bytes) -> str | None:
    if _HFT_RE.match(line):
        return "hftbacktest"
    if _CRYPTOFEED_RE.match(line):
        return "cryptofeed"
    fields = line.split(b",")
    if len(fields) == 12 and fields[1] in (b"BUY", b"SELL"):
        return "liq-csv"
    if len(fields) in (7, 9) and fields[0].strip().isdigit():
        return "trades-csv"
    return None


def detect_format(name: str, content: bytes) -> str:
    """The format of a source file from its first lines (majority of recognized lines).

    The file name breaks ties (``*trades*.csv`` -> trades-csv). ImportFormatError if nothing matches.
    """
    votes: dict[str, int] = {}
    for _, line in iter_lines(content[: 1 << 20]):
        if line.strip() and (fmt := _vote(line)) is not None:
            votes[fmt] = votes.get(fmt, 0) + 1
            if sum(votes.values()) >= DETECT_LINES:
                break
    if not votes:
        raise ImportFormatError(f"{name}: unknown format (expected one of {', '.join(FORMATS)})")
    hinted = "trades-csv" if "trade" in name.lower() else "liq-csv" if name.endswith(".csv") else None
    return max(votes, key=lambda fmt: (votes[fmt], fmt == hinted))


def import_file(
    path: Path,
    store: Store,
    *,
    symbols: set[str] | None,
    fmt: str = "auto",
    symbol_hint: str | None = None,
) -> ImportReport:
    """Import one source file into ``store``; ``symbols`` limits it (None = every USDT perpetual).

    ``fmt`` is ``auto`` or one of :data:`FORMATS`. ``symbol_hint`` names the symbol of REST depth
    snapshot lines in an hftbacktest file whose streams do not name exactly one symbol. Bad lines
    are counted and skipped; ImportFormatError for an unknown or unattributable file (nothing is
    written then); store failures propagate.
    """
    path = Path(path)
    if symbols is not None:
        symbols = {symbol.upper() for symbol in symbols}
        bad = sorted(symbol for symbol in symbols if not is_valid_symbol(symbol))
        if bad:
            raise ValueError(f"invalid symbols {bad}")
    if symbol_hint is not None and not is_valid_symbol(symbol_hint):
        raise ValueError(f"invalid symbol hint {symbol_hint!r}")
    content = read_source(path)
    if fmt == "auto":
        fmt = detect_format(path.name, content)
    elif fmt not in FORMATS:
        raise ValueError(f"unknown import format {fmt!r} (expected auto or one of {', '.join(FORMATS)})")
    batch = ImportBatch(path, fmt, collector_id_for(content), symbols)
    lines = iter_lines(content)
    if fmt == "hftbacktest":
        import_hftbacktest(lines, batch, symbol_hint=symbol_hint)
    elif fmt == "cryptofeed":
        import_cryptofeed(lines, batch)
    elif fmt == "liq-csv":
        import_liq_csv(lines, batch)
    else:
        import_trades_csv(lines, batch)
    batch.write(store)
    return batch.report()


def run_import(paths: list[Path], data_url: str, symbols: set[str] | None, fmt: str) -> list[ImportReport]:
    """``moonstream import FILE... --data URL --symbols BTC,ETH|all --format auto``: one report per file.

    Logs one summary line per file. A file that fails (unknown format, unreadable, store error) gets
    a report with ``error`` set, its traceback is logged, and the next file is still imported.
    """
    from moonstream.store import open_store  # the store package pulls in S3 clients

    store = open_store(data_url)
    reports: list[ImportReport] = []
    for path in paths:
        try:
            report = import_file(Path(path), store, symbols=symbols, fmt=fmt)
        except (ImportFormatError, ValueError, OSError) as exc:
            log.error("import of %s failed: %s", path, exc)
            report = ImportReport(path=str(path), format=fmt, collector="", error=str(exc))
        except Exception as exc:
            log.exception("import of %s failed", path)
            report = ImportReport(path=str(path), format=fmt, collector="", error=type(exc).__name__)
        else:
            log.info("%s", report.summary())
        reports.append(report)
    return reports
