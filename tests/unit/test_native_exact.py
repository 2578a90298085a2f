"""ExactSum and sort_prices (moonstream/native_src/exact.c): the frame window's bucket sums as exact
integers while Decimal would be exact too, and a book side's prices sorted by integer keys.

Both stand in for Decimal arithmetic and comparisons, so each test holds them to what Decimal does
in the default context: the same values (a 28th digit included), floats, truth and order."""

from __future__ import annotations

import random
from decimal import Decimal
from typing import Any

import pytest

from moonstream.jobs.engines.orderbook_frames import index_miss
from moonstream.native import native

pytestmark = pytest.mark.skipif(native is None, reason="moonstream._native is not built (no C compiler?)")

D = Decimal


def _one_bucket(levels: list[tuple[Decimal, Decimal]]) -> Any:
    """open_side's value for one bucket holding every level: an ExactSum or a Decimal."""
    index = {price: 0 for price, _ in levels}
    # a step that is not a plain decimal: the index memo, not the exact quotient, gives the buckets
    step = D("1E+30")
    (value,) = native.open_side(dict(levels), index, step, 0, 1, index_miss, D(0))  # type: ignore[union-attr]
    return value


def _python_sum(levels: list[tuple[Decimal, Decimal]]) -> Decimal:
    total = D(0)
    for price, qty in levels:
        total = total + price * qty
    return total


def exact_number(value: Any) -> Decimal:
    """A bucket value as a Decimal of the same value (an ExactSum's to_decimal, a Decimal itself)."""
    return value.to_decimal() if type(value).__name__ == "ExactSum" else value


def _digits(rng: random.Random, most: int) -> str:
    """A plain decimal text of 1..most digits, a random point, sometimes negative-free zeros."""
    n = rng.randint(1, most)
    digits = "".join(rng.choice("0123456789") for _ in range(n)).lstrip("0") or "0"
    point = rng.randint(0, len(digits))
    text = digits[:point] + ("." + digits[point:] if point < len(digits) else "")
    return "0" + text if text.startswith(".") else text


def test_bucket_sums_are_the_decimal_sums_to_the_last_digit() -> None:
    """Random prices and sizes of up to 18 digits (products up to 36 digits, where Decimal rounds to
    28): the value, float and truth are Decimal's; exact sums are kept as ExactSums."""
    rng = random.Random(3)
    kinds = set()
    for _ in range(3000):
        levels = [(D(_digits(rng, 18)) or D(1), D(_digits(rng, rng.choice((4, 10, 18))))) for _ in range(3)]
        levels = [(p if p else D(1), q) for p, q in dict(levels).items()]
        value, expected = _one_bucket(levels), _python_sum(levels)
        kinds.add(type(value).__name__)
        assert exact_number(value) == expected, levels
        assert float(value).hex() == float(expected).hex() and bool(value) == bool(expected), levels
    assert kinds == {"ExactSum", "Decimal"}


def test_exact_floats_take_the_slow_path_beyond_2_to_53_and_10_to_22() -> None:
    """float() of sums too large for one exact double division, or with more than 22 decimals."""
    cases = [
        [(D("99999999999999999"), D("9999999"))],  # ~1e24: more than 2**53
        [(D("1.000000000001"), D("0.000001000001"))],  # 24 decimals
        [(D("123456789.123456789"), D("0.000003")), (D("3.3"), D("7"))],
        [(D("9007199254740993"), D("1"))],  # 2**53 + 1: rounds to even
    ]
    for levels in cases:
        value = _one_bucket(levels)
        assert type(value).__name__ == "ExactSum"
        assert float(value).hex() == float(_python_sum(levels)).hex()


def test_exact_sums_add_compare_and_print_as_their_decimal() -> None:
    value = _one_bucket([(D("100.5"), D("2")), (D("0.25"), D("1"))])  # 201.25
    assert type(value).__name__ == "ExactSum"
    assert value.to_decimal() == D("201.25") and value == D("201.25") and D("201.25") == value
    assert value + D("0.75") == D(202) and D("0.75") + value == D(202)
    assert type(value + D(1)) is Decimal and value != D(201) and value > D(201)
    assert repr(value) == "ExactSum(201.25)" and bool(value) and float(value) == 201.25
    zero = _one_bucket([(D(5), D(0))])
    assert not zero and float(zero) == 0.0 and zero == 0
    with pytest.raises(TypeError):
        hash(value)


def test_sort_prices_gives_the_decimal_order() -> None:
    rng = random.Random(8)
    for n in (0, 1, 2, 50, 1200):
        for reverse in (False, True):
            values = {D(_digits(rng, rng.choice((6, 18)))) for _ in range(n)}
            ordered = sorted(values)  # a book side: sorted, then new prices appended
            items = ordered[: n // 2] + rng.sample(ordered[n // 2 :], len(ordered) - n // 2)
            if rng.random() < 0.5:
                items.reverse()
            expected = sorted(items, reverse=reverse)
            assert native.sort_prices(items, reverse) is True  # type: ignore[union-attr]
            assert items == expected and all(a is b for a, b in zip(items, expected, strict=True))


def test_sort_prices_leaves_other_lists_to_list_sort() -> None:
    """Not plain (an exponent, 19 digits), equal values of two exponents, or not a Decimal: False,
    and the list is untouched."""
    for items in (
        [D(3), D("1E+2"), D(1)],
        [D(3), D("1234567890.123456789"), D(1)],
        [D("1.0"), D(3), D("1.00")],
        [D(3), 1, D(2)],
    ):
        before = list(items)
        assert native.sort_prices(items, False) is False  # type: ignore[union-attr]
        assert all(a is b for a, b in zip(items, before, strict=True))


def test_other_decimal_contexts_keep_the_decimal_route() -> None:
    """ExactSums stand for Decimal sums only in a context that rounds nothing below 28 digits and
    traps no quiet signal: with fewer digits the compiled loop holds the Python loop's rounded Decimal."""
    import decimal

    levels = [(D("123456.789"), D("98765.4321")), (D("1.5"), D("2"))]
    assert type(_one_bucket(levels)).__name__ == "ExactSum"
    for change in ({"prec": 10}, {"traps": [decimal.Rounded]}, {"Emin": -10}):
        with decimal.localcontext(**change):
            value, expected = _one_bucket(levels), _python_sum(levels)
        assert type(value) is Decimal and value == expected, change
    assert type(_one_bucket(levels)).__name__ == "ExactSum"


@pytest.mark.parametrize("step", ["20", "1.0", "0.10", "0.001", "0.3", "7", "0.0000001"])
def test_buckets_from_exact_values_are_the_index_memos(step: str) -> None:
    """open_side places plain prices by `int(price // step)` from their exact values, without the
    index memo: the buckets index_miss gives (Decimal's integer division), levels off the grid."""
    rng = random.Random(step)
    exponent = D("1E-12")  # plain texts (a step that is not plain, 1E-7, takes the memo route)
    levels = {
        (D(step) * rng.randint(-1000, 401000) / 1000).quantize(exponent) or D(1): D(1) for _ in range(300)
    }
    i_min, n = 0, 400
    cur = native.open_side(levels, {}, D(step), i_min, n, index_miss, D(0))  # type: ignore[union-attr]
    expected: list[Any] = [None] * n
    for price, qty in levels.items():
        j = int(price // D(step)) - i_min
        if 0 <= j < n:
            expected[j] = (D(0) if expected[j] is None else expected[j]) + price * qty
    assert [None if v is None else exact_number(v) for v in cur] == expected
    assert sum(v is not None for v in expected) > 10


def _parts_from_text(value: Decimal) -> tuple[int, int] | None:
    """What native_decimal_exact must give, from str(value) alone: the plain text without the
    fraction's trailing zeros as (coefficient, decimals), None beyond 18 digits or 18 decimals."""
    text = str(value)
    if not text.lstrip("-").replace(".", "", 1).isdigit():
        return None  # an exponent, NaN or Infinity
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    digits, _, fraction = text.lstrip("-").partition(".")
    coefficient = int(digits + fraction)
    if len(str(coefficient)) > 18 or len(fraction) > 18:
        return None
    return (-coefficient if text.startswith("-") else coefficient), (len(fraction) if coefficient else 0)


def _odd_decimals(rng: random.Random, count: int) -> list[Decimal]:
    """Decimals of every shape the wire or arithmetic gives: 1-22 digits, exponents from -25 to 3
    (both sides of str()'s switch to exponents), trailing zeros, signs, zeros, specials."""
    values = [D(text) for text in ("0", "-0", "0E-7", "0E+2", "0.000000", "NaN", "-Infinity", "sNaN")]
    for _ in range(count):
        coefficient = rng.randrange(10 ** rng.randint(1, 22)) * 10 ** rng.choice((0, 0, 1, 3, 6))
        sign = rng.randint(0, 1)
        values.append(D((sign, tuple(int(d) for d in str(coefficient)), rng.randint(-25, 3))))
    return values


def test_the_decimal_layout_is_read_on_this_python() -> None:
    """CPython 3.11's _decimal passes the import check, so the compiled loops read values from the
    objects (a failed check would silently keep the slower text route)."""
    assert native.DECIMAL_LAYOUT is True  # type: ignore[union-attr]


def _value(parts: tuple[int, int] | None) -> Decimal | None:
    return None if parts is None else D(parts[0]).scaleb(-parts[1])


def test_values_read_from_the_layout_are_those_of_the_text() -> None:
    """For every shape of decimal, both routes give what str() says: the text route exactly (the
    fraction's trailing zeros dropped), the layout the same value at a scale of at most 18 (it keeps
    trailing zeros where the limits allow). The layout leaves only coefficients of more than one
    word (19+ digits) to the text route."""
    rng = random.Random(11)
    read = kept_zeros = 0
    for value in _odd_decimals(rng, 40_000):
        expected = _parts_from_text(value)
        assert native.decimal_parts(value, False) == expected, value  # type: ignore[union-attr]
        by_layout = native.decimal_parts(value, True)  # type: ignore[union-attr]
        if by_layout is None and expected is not None:
            assert len(value.as_tuple().digits) > 19, value
            continue
        assert _value(by_layout) == _value(expected), value
        if by_layout is not None:
            assert abs(by_layout[0]) < 10**18 and 0 <= by_layout[1] <= 18, value
            read += 1
            kept_zeros += by_layout != expected
    assert read > 10_000 and kept_zeros > 1_000


def test_decimal_parts_refuses_other_objects() -> None:
    class Sub(Decimal):
        pass

    for value in (Sub("1.5"), 1.5, 2, "1.5"):
        assert native.decimal_parts(value, True) is None  # type: ignore[union-attr]
        assert native.decimal_parts(value, False) is None  # type: ignore[union-attr]
