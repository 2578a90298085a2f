from collections.abc import Callable
from decimal import Decimal
from typing import Any

class ExactSum:
    """A frame bucket's exact value, standing for the Decimal the Python loops would hold."""

    def to_decimal(self) -> Decimal: ...
    def __float__(self) -> float: ...
    def __bool__(self) -> bool: ...
    def __add__(self, other: object) -> Decimal: ...
    def __radd__(self, other: object) -> Decimal: ...

def cached_levels(
    raw: list[Any],
    positive: dict[Any, Any],
    non_negative: dict[Any, Any],
    remember_price: Callable[[object], Any],
    remember_qty: Callable[[object], Any],
) -> Any: ...
def set_levels(
    book: dict[Any, Any],
    tops: list[Any],
    levels: Any,
    side: int,
    t: int,
    arrays: tuple[Any, ...] | None,
    index_miss: Callable[..., int],
    side_tops: Callable[[int], list[Any]],
    tops_kept: int,
    zero: Any,
) -> Any: ...
def open_side(
    levels: dict[Any, Any],
    index: dict[Any, int],
    step: Any,
    i_min: int,
    n: int,
    index_miss: Callable[..., int],
    zero: Any,
) -> Any: ...
def sort_prices(items: list[Any], reverse: bool) -> bool: ...

DECIMAL_LAYOUT: bool

def decimal_parts(value: Any, by_layout: bool) -> tuple[int, int] | None: ...
def side_state(
    book: dict[Any, Any],
    descending: bool,
    memo: dict[Any, str],
    text: Callable[[Any], str],
) -> Any: ...
def binance_run(
    events: Any,
    k: int,
    symbol: str,
    book: Any,
    clock: int,
    end: int,
    switch_at: int,
    context: tuple[Any, ...],
) -> Any: ...
def depth_event(
    payload: bytes, symbol: str, instrument: str, recv_ns: int, context: tuple[Any, ...]
) -> Any: ...
def normalize_run(
    records: list[Any],
    start: int,
    seen: set[Any],
    out: list[Any],
    symbol: str,
    instrument: str,
    kinds: dict[str, int],
    loads: Callable[[bytes], Any],
    context: tuple[Any, ...],
) -> tuple[int, int]: ...
def binance_event(
    kind: int, msg: Any, symbol: str, instrument: str, recv_ns: int, context: tuple[Any, ...]
) -> Any: ...
def parse_lines(
    lines: list[bytes],
    start: int,
    tags: dict[bytes, str],
    exchange: str,
    collector: str,
    record_type: type,
    records: list[Any],
) -> int: ...
def slot_builder(cls: type, descriptors: tuple[Any, ...]) -> Any: ...
