"""The compiled positional builder (``slot_builder`` in moonstream/native_src/builder.c) against the Python
builder it replaces (``fields._python_builder``): the same objects, the same slots, the same
reference counts, and NotImplemented for every class it does not handle."""

from __future__ import annotations

import dataclasses
import gc
import sys
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest

from moonstream.jobs import events
from moonstream.jobs.normalize import binance, fields
from moonstream.native import native

needs_native = pytest.mark.skipif(native is None, reason="moonstream._native is not built (no C compiler?)")

EVENT_CLASSES = [
    cls
    for cls in vars(events).values()
    if isinstance(cls, type) and dataclasses.is_dataclass(cls) and "__slots__" in cls.__dict__
]


def _names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]


def _descriptors(cls: type) -> tuple[Any, ...]:
    return tuple(cls.__dict__[name] for name in _names(cls))


def _values(cls: type) -> list[Any]:
    """Distinct fresh objects per field, so a slot that got the wrong value or reference shows."""
    return [Decimal(f"{i}.5") if i % 2 else f"v{i}-{cls.__name__}" for i in range(len(_names(cls)))]


@needs_native
def test_the_hot_parsers_use_the_compiled_builder() -> None:
    for build in (binance._new_depth_update, binance._new_trade, binance._new_book_ticker):
        assert type(build).__name__ == "SlotBuilder"


@needs_native
@pytest.mark.parametrize("cls", EVENT_CLASSES, ids=lambda cls: cls.__name__)
def test_every_event_class_builds_the_same_object_both_ways(cls: type) -> None:
    compiled = native.slot_builder(cls, _descriptors(cls))
    assert compiled is not NotImplemented
    python = fields._python_builder(cls, _names(cls))
    values = _values(cls)
    counts = [sys.getrefcount(v) for v in values]
    a, b = compiled(*values), python(*values)
    assert type(a) is cls
    assert a == b
    assert repr(a) == repr(b)
    assert hash(a) == hash(b)
    assert all(getattr(a, name) is value for name, value in zip(_names(cls), values, strict=True))
    assert gc.is_tracked(a) == gc.is_tracked(b)
    assert [sys.getrefcount(v) for v in values] == [n + 2 for n in counts]  # one per object
    del a, b
    assert [sys.getrefcount(v) for v in values] == counts


@needs_native
def test_wrong_calls_raise_type_error_and_build_nothing() -> None:
    cls = events.DepthUpdate
    build = native.slot_builder(cls, _descriptors(cls))
    values = _values(cls)
    with pytest.raises(TypeError):
        build(*values[:-1])
    with pytest.raises(TypeError):
        build(*values, values[0])
    with pytest.raises(TypeError):
        build(*values[:-1], asks=())
    with pytest.raises(TypeError):
        native.slot_builder(cls)


@dataclass(frozen=True, slots=True)
class Plain:
    a: Any
    b: Any


class WithNew:
    __slots__ = ("a",)

    def __new__(cls) -> WithNew:
        return super().__new__(cls)


class WithDict:
    a: Any


class Child(Plain):
    __slots__ = ("c",)


@needs_native
def test_classes_it_does_not_handle_are_handed_back() -> None:
    assert native.slot_builder(Plain, _descriptors(Plain)) is not NotImplemented
    assert native.slot_builder(WithNew, (WithNew.__dict__["a"],)) is NotImplemented  # own __new__
    assert native.slot_builder(WithDict, ()) is NotImplemented  # instances have a __dict__
    # a descriptor of another class, a property, a read-only member
    assert native.slot_builder(Child, (Plain.__dict__["a"],)) is NotImplemented
    assert native.slot_builder(Plain, (property(lambda self: 1),)) is NotImplemented
    assert native.slot_builder(Plain, (Plain.__dict__["a"],) * 17) is NotImplemented  # > 16 fields


def test_without_the_extension_the_python_builder_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fields, "_slot_builder", lambda *args: NotImplemented)
    build = fields.positional_builder(events.DepthUpdate, _names(events.DepthUpdate))
    assert build.__name__ == "build_DepthUpdate"
    values = _values(events.DepthUpdate)
    assert build(*values) == events.DepthUpdate(*values)
