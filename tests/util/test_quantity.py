"""Kubernetes quantities parsed exactly, in every form the API server may return."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dra_driver.util.quantity import (
    format_binary_quantity,
    format_decimal_quantity,
    parse_integral_quantity,
    parse_quantity_exact,
)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("8Gi", 8 * 2**30),
        ("1431Mi", 1431 * 2**20),
        ("1500M", 1_500_000_000),
        ("2e9", 2_000_000_000),
        ("2E9", 2_000_000_000),
        ("1.5Gi", 1536 * 2**20),
        ("1.5k", 1500),
        ("0.5e1", 5),
        ("+30", 30),
        ("30.", 30),
        ("-4", -4),
        ("120", 120),
        ("1E", 10**18),
        ("1Ei", 2**60),
        ("1000m", 1),
        ("5000000n", Fraction(1, 200)),
    ],
    ids=lambda value: str(value),
)
def test_exact_values(text: str, value: int | Fraction) -> None:
    assert parse_quantity_exact(text) == value


@pytest.mark.parametrize(
    ("text", "value"),
    [("8Gi", 8 * 2**30), ("2e9", 2 * 10**9), ("1.5Gi", 1536 * 2**20), ("1000m", 1)],
)
def test_integral_values(text: str, value: int) -> None:
    assert parse_integral_quantity(text) == value


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1.5", r"^not an integral quantity: '1\.5' is fractional$"),
        ("1500m", r"^not an integral quantity: '1500m' is fractional$"),
        ("", r"^not an integral quantity: not a quantity: ''$"),
        (".", r"^not an integral quantity: not a quantity"),
        ("Gi", r"^not an integral quantity: not a quantity"),
        ("1 Gi", r"^not an integral quantity: not a quantity"),
        ("1Gi\n", r"^not an integral quantity: not a quantity"),
        ("1GiB", r"^not an integral quantity: not a quantity"),
        ("1e", r"^not an integral quantity: not a quantity"),
        ("0x10", r"^not an integral quantity: not a quantity"),
        ("1e1000", r"^not an integral quantity: quantity exponent out of range"),
        ("9" * 100, r"^not an integral quantity: quantity longer than 64 characters"),
    ],
    ids=[
        "fraction",
        "milli",
        "empty",
        "dot",
        "suffix-only",
        "space",
        "newline",
        "unknown-suffix",
        "bare-exponent",
        "hex",
        "huge-exponent",
        "too-long",
    ],
)
def test_non_integral_or_invalid_text_is_refused(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_integral_quantity(text)


@pytest.mark.parametrize("text", ["1.5Gi", "-1", "1e3", "", "Gi", "+1"])
def test_plain_only_refuses_signs_fractions_and_exponents(text: str) -> None:
    with pytest.raises(ValueError, match=r"^not an integral quantity"):
        parse_integral_quantity(text, plain_only=True)


@given(st.integers(min_value=0, max_value=2**62))
def test_canonical_forms_round_trip(value: int) -> None:
    for text in (format_binary_quantity(value), format_decimal_quantity(value)):
        assert parse_integral_quantity(text) == value
        assert parse_integral_quantity(text, plain_only=True) == value


@given(st.text(max_size=80))
def test_any_text_parses_or_raises_value_error(text: str) -> None:
    try:
        parse_integral_quantity(text)
    except ValueError:
        pass
