from collections.abc import Callable
from typing import Any

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
