"""Field validation shared by every exchange's normalizer: JSON decoding, exact numbers from the
exchanges' strings, integer timestamps, price levels, and the collector's own ``conn:*`` lines.

Each helper raises a :class:`~moonstream.jobs.normalize.NormalizeError` subclass naming the field:
:class:`MalformedMessage` for a wrong shape or type, :class:`InvalidValue` for a value out of range
(NaN, infinity, a negative or zero price).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any, ParamSpec, TypeVar

import orjson

from moonstream.collector.rawfile import RawRecord
from moonstream.jobs.events import ConnectionEvent, Level
from moonstream.jobs.normalize import InvalidValue, MalformedMessage
from moonstream.native import compiled

NS_PER_MS = 1_000_000
_ZERO = Decimal(0)
_INF = Decimal("Infinity")

_slot_builder = compiled("slot_builder")

_CACHE_LIMIT = 1 << 16
"""Entries per number cache (about 12 MB when full); a full cache is emptied."""

_P = ParamSpec("_P")
_R = TypeVar("_R")


# The exchanges quote every price and size; a number that ever arrives unquoted is a float here and
# goes through repr() in num(), exact to 17 significant digits.
_loads: Callable[[bytes], Any] = orjson.loads


def short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 24 else text[:21] + "..."


def missing_field(exc: KeyError) -> MalformedMessage:
    """The :class:`MalformedMessage` for a parser's missing dict key."""
    return MalformedMessage(f"missing field {short(exc.args[0] if exc.args else None)}")


def parser(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Turn a missing dict key inside a parser into :class:`MalformedMessage`."""

    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return fn(*args, **kwargs)
        except KeyError as exc:
            raise missing_field(exc) from None

    return wrapper


def _remember(cache: dict[str, Decimal], text: object, *, positive: bool | None) -> Decimal | None:
    """``Decimal(text)`` stored into ``cache`` when ``text`` is a string whose value is finite and
    > 0 (``positive``), finite and not < 0 (``positive=False``: sizes) or finite (``None``: funding
    rates); None for anything else (the caller then runs its full validation, which names the
    error)."""
    if type(text) is not str:
        return None
    try:
        number = Decimal(text)
        ok = number.is_finite() and (positive is None or (number > _ZERO if positive else not number < _ZERO))
    except Exception:
        return None
    if not ok:
        return None
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()
    cache[text] = number
    return number


# Prices and sizes repeat a lot (the levels near the top of the book, round sizes): parsing each
# distinct string once, and validating it then, is most of the normalizers' speed. Decimals are
# immutable, so sharing one between events is safe; the key is the exact text, so "0.100" and
# "0.1" stay distinct (same value, different exponent). Plain dicts (the interpreter's fast
# lookup): a miss raises KeyError and the caller fills the cache with _remember().
_POSITIVE: dict[str, Decimal] = {}
"""``text -> Decimal(text)`` for texts whose value is finite and > 0."""
_NON_NEGATIVE: dict[str, Decimal] = {}
"""``text -> Decimal(text)`` for texts whose value is finite and >= 0."""
_FINITE: dict[str, Decimal] = {}
"""``text -> Decimal(text)`` for texts whose value is finite (funding rates, which may be negative)."""


def positional_builder(cls: Callable[..., _R], names: tuple[str, ...]) -> Callable[..., _R]:
    """``cls(*values)`` for a frozen, slotted event dataclass whose fields are ``names`` in order,
    at about half the cost of its ``__init__`` (one ``object.__setattr__`` per field).

    The builder sets each slot through its member descriptor, which is what the dataclass's
    generated ``__init__`` does; the result is the same object (``==``, ``repr``, ``hash``). It is
    used only when that is all ``__init__`` does: generated (not hand-written), every field an init
    field, no ``__post_init__``, no ``__new__``; otherwise ``cls`` itself is returned. Raises
    :class:`ImportError` if the fields are not ``names`` (a hot parser's positional call would be
    wrong). Where the extension is built, the builder is its compiled twin (``slot_builder``: the
    same allocation and slot stores, without a Python frame and a call per field).
    """
    kind: Any = cls
    fields = dataclasses.fields(kind)
    if tuple(f.name for f in fields) != names:
        raise ImportError(f"{kind.__name__} fields changed: update the positional calls")
    init = kind.__dict__.get("__init__")
    if (
        not kind.__dataclass_params__.frozen
        or "__slots__" not in kind.__dict__
        or getattr(getattr(init, "__code__", None), "co_filename", None) != "<string>"  # generated
        or not all(f.init for f in fields)
        or hasattr(kind, "__post_init__")
        or kind.__new__ is not object.__new__
    ):
        return cls
    compiled_build = _slot_builder(kind, tuple(kind.__dict__[name] for name in names))
    if compiled_build is not NotImplemented:
        return compiled_build
    return _python_builder(kind, names)


def _python_builder(kind: Any, names: tuple[str, ...]) -> Callable[..., Any]:
    """positional_builder's builder in Python: ``object.__new__``, then one slot store per field."""
    scope: dict[str, Any] = {"_new": object.__new__, "_cls": kind}
    for i, name in enumerate(names):
        scope[f"_set{i}"] = kind.__dict__[name].__set__
    args = ", ".join(f"v{i}" for i in range(len(names)))
    sets = "".join(f"    _set{i}(o, v{i})\n" for i in range(len(names)))
    exec(f"def build({args}):\n    o = _new(_cls)\n{sets}    return o\n", scope)
    build: Callable[..., Any] = scope["build"]
    build.__qualname__ = build.__name__ = f"build_{kind.__name__}"
    return build


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
    try:
        return _POSITIVE[value]  # type: ignore[index]
    except (KeyError, TypeError):
        pass
    remembered = _remember(_POSITIVE, value, positive=True)
    if remembered is not None:
        return remembered
    number = num(value, name)
    if not number.is_finite() or number <= _ZERO:
        raise InvalidValue(f"{name}={short(value)} is not a positive finite price")
    return number


def qty(value: object, name: str, *, allow_zero: bool = True) -> Decimal:
    """A finite number >= 0 (> 0 unless ``allow_zero``)."""
    cache = _NON_NEGATIVE if allow_zero else _POSITIVE
    try:
        return cache[value]  # type: ignore[index]
    except (KeyError, TypeError):
        pass
    remembered = _remember(cache, value, positive=not allow_zero)
    if remembered is not None:
        return remembered
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
    if type(value) is int and value >= 0:
        return value * NS_PER_MS
    return integer(value, name) * NS_PER_MS


def levels(raw: object, name: str) -> tuple[Level, ...]:
    """``[["price", "qty"], ...]`` -> ((Decimal, Decimal), ...); price > 0, qty >= 0 (0 deletes)."""
    if type(raw) is not list:
        raise MalformedMessage(f"{name} is not a list")
    remembered = _native_levels(raw, _POSITIVE, _NON_NEGATIVE, _remember_price, _remember_qty)
    if remembered is NotImplemented:
        remembered = _cached_levels(raw)
    if remembered is not None:
        return remembered
    # not all [str, str] pairs of valid numbers: the full loop below names the error
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


def _cached_levels(raw: list[Any]) -> tuple[Level, ...] | None:
    """The levels through the number caches, in one pass, filling them on a miss (:func:`_remember`);
    None when a level is not a pair of valid number strings. (One pass: a market's deeper levels
    bring new texts in most messages, and restarting a message after a miss cost more than the
    plain-dict fast path saves.)"""
    positive, non_negative = _POSITIVE, _NON_NEGATIVE
    out: list[Level] = []
    append = out.append
    try:
        for p, q in raw:
            try:
                append((positive[p], non_negative[q]))
            except KeyError:
                p_dec = positive.get(p)
                if p_dec is None:
                    p_dec = _remember(positive, p, positive=True)
                q_dec = non_negative.get(q)
                if q_dec is None:
                    q_dec = _remember(non_negative, q, positive=False)
                if p_dec is None or q_dec is None:
                    return None
                append((p_dec, q_dec))
    except (ValueError, TypeError):
        return None
    return tuple(out)


_remember_price = functools.partial(_remember, _POSITIVE, positive=True)
_remember_qty = functools.partial(_remember, _NON_NEGATIVE, positive=False)


NUMBER_CACHES = (_POSITIVE, _NON_NEGATIVE, _remember_price, _remember_qty)
"""The number caches (prices and other numbers > 0; sizes >= 0) and the functions that fill them on a
miss, as the compiled parsers take them."""


_remember_finite = functools.partial(_remember, _FINITE, positive=None)
"""What :func:`finite` stores for a string whose value is finite (the compiled parsers' miss path)."""


FINITE_CACHE = (_FINITE, _remember_finite)
"""The cache of finite numbers of any sign (:func:`finite`'s strings) and the function that fills it on a
miss, as the compiled parsers take them."""

NUMBER_CACHE_LIMIT = _CACHE_LIMIT
"""The caches' size limit, for the compiled parsers that fill a number cache themselves as the remember
functions do, for a text of plain digits (``native_remember`` in moonstream/native_src/levels.c)."""

_native_levels = compiled("cached_levels")
"""``_cached_levels`` compiled (moonstream/native_src/levels.c): the same result, or NotImplemented for a
shape it leaves to the Python function."""


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
