"""Field validation shared by every exchange's normalizer: JSON decoding, exact numbers from the
exchanges' strings, integer timestamps, price levels, and the collector's own ``conn:*`` lines.

Each helper raises a :class:`~moonstream.jobs.normalize.NormalizeError` subclass naming the field:
:class:`MalformedMessage` for a wrong shape or type, :class:`InvalidValue` for a value out of range
(NaN, infinity, a negative or zero price).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any, ParamSpec, TypeVar

import orjson

from moonstream.collector.rawfile import RawRecord
from moonstream.jobs.events import ConnectionEvent, Level
from moonstream.jobs.normalize import InvalidValue, MalformedMessage

NS_PER_MS = 1_000_000
_ZERO = Decimal(0)
_INF = Decimal("Infinity")

_P = ParamSpec("_P")
_R = TypeVar("_R")


# The exchanges quote every price and size; a number that ever arrives unquoted is a float here and
# goes through repr() in num(), exact to 17 significant digits.
_loads: Callable[[bytes], Any] = orjson.loads


def short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 24 else text[:21] + "..."


def parser(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Turn a missing dict key inside a parser into :class:`MalformedMessage`."""

    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return fn(*args, **kwargs)
        except KeyError as exc:
            raise MalformedMessage(f"missing field {short(exc.args[0] if exc.args else None)}") from None

    return wrapper


def obj(value: object, name: str) -> dict[str, Any]:
    if type(value) is not dict:
        raise MalformedMessage(f"{name} is not a JSON object")
    return value


def num(value: object, name: str) -> Decimal:
    kind = type(value)
    if kind is str:
        try:
            return Decimal(value)  # type: ignore[arg-type]
        except InvalidOperation:
            raise InvalidValue(f"{name}={short(value)} is not a number") from None
    if kind is Decimal:
        return value  # type: ignore[return-value]
    if kind is int:
        return Decimal(value)  # type: ignore[arg-type]
    if kind is float:
        return Decimal(repr(value))
    raise MalformedMessage(f"{name} has JSON type {kind.__name__}")


def price(value: object, name: str) -> Decimal:
    """A finite number > 0."""
    number = num(value, name)
    if not number.is_finite() or number <= _ZERO:
        raise InvalidValue(f"{name}={short(value)} is not a positive finite price")
    return number


def qty(value: object, name: str, *, allow_zero: bool = True) -> Decimal:
    """A finite number >= 0 (> 0 unless ``allow_zero``)."""
    number = num(value, name)
    if not number.is_finite() or number < _ZERO or (not allow_zero and number == _ZERO):
        bound = ">= 0" if allow_zero else "> 0"
        raise InvalidValue(f"{name}={short(value)} is not a finite number {bound}")
    return number


def finite(value: object, name: str) -> Decimal:
    number = num(value, name)
    if not number.is_finite():
        raise InvalidValue(f"{name}={short(value)} is not finite")
    return number


def integer(value: object, name: str) -> int:
    """A non-negative integer (a JSON integer, or a string of digits as some REST rows send)."""
    if type(value) is int:
        if value < 0:
            raise InvalidValue(f"{name}={short(value)} is negative")
        return value
    if isinstance(value, str):
        if value.isdigit() and value.isascii():
            return int(value)
        raise InvalidValue(f"{name}={short(value)} is not an integer")
    raise MalformedMessage(f"{name} has JSON type {type(value).__name__}")


def ms(value: object, name: str) -> int:
    return integer(value, name) * NS_PER_MS


def levels(raw: object, name: str) -> tuple[Level, ...]:
    """``[["price", "qty"], ...]`` -> ((Decimal, Decimal), ...); price > 0, qty >= 0 (0 deletes)."""
    if type(raw) is not list:
        raise MalformedMessage(f"{name} is not a list")
    out: list[Level] = []
    append = out.append
    dec = Decimal
    zero = _ZERO
    inf = _INF
    try:
        for price_text, qty_text in raw:
            if type(price_text) is str and type(qty_text) is str:
                p = dec(price_text)
                q = dec(qty_text)
            else:
                p = num(price_text, name)
                q = num(qty_text, name)
            if not (zero < p < inf and zero <= q < inf):  # NaN raises InvalidOperation here
                raise InvalidValue(f"{name} level [{short(price_text)}, {short(qty_text)}] out of range")
            append((p, q))
    except (ValueError, TypeError):
        raise MalformedMessage(f"{name}: a level is not a [price, qty] pair") from None
    except InvalidOperation:
        raise InvalidValue(f"{name}: a level holds a non-number") from None
    return tuple(out)


def decode_json(payload: bytes) -> Any:
    try:
        return _loads(payload)
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise MalformedMessage(f"not JSON ({type(exc).__name__})") from None


def connection_event(record: RawRecord, symbol: str, exchange: str) -> ConnectionEvent:
    """``conn:open`` / ``conn:close`` / ``conn:gap`` / ``conn:*``: the collector's own line.

    ``detail`` is the payload's JSON object, ``{"text": ...}`` (first 200 characters) for anything
    else, ``{}`` for an empty payload.
    """
    text = record.payload.decode("utf-8", errors="replace").strip()
    detail: dict[str, Any] = {}
    if text:
        try:
            parsed = _loads(record.payload)
        except ValueError:
            parsed = None
        detail = parsed if type(parsed) is dict else {"text": text[:200]}
    return ConnectionEvent(
        exchange=exchange,
        symbol=symbol,
        recv_ns=record.recv_ns,
        kind=record.channel.partition(":")[2],
        detail=detail,
        collector=record.collector,
    )
