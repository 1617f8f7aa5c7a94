"""Kubernetes resource quantities (``resource.Quantity``) as exact integers. Pure.

The full grammar of ``k8s.io/apimachinery/pkg/api/resource``::

    <quantity>  ::= <sign>? <number> <suffix>
    <number>    ::= <digits> | <digits>.<digits>? | .<digits>
    <suffix>    ::= "" | n | u | m | k | M | G | T | P | E        (decimal SI)
                  | Ki | Mi | Gi | Ti | Pi | Ei                   (binary SI)
                  | (e | E) <sign>? <digits>                      (decimal exponent)

Values are computed exactly (``fractions.Fraction``), never through floats, so ``1431Mi`` or
``2e9`` bytes come out to the byte. The driver only ever needs whole numbers (CUs, bytes,
vDCU slots), so the public entry point returns an ``int`` and refuses anything fractional.
"""

from __future__ import annotations

import re
from fractions import Fraction

#: Multipliers of the SI suffixes.
MULTIPLIERS: dict[str, int | Fraction] = {
    "": 1,
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 10**3),
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}
#: Longest quantity text we parse. Real quantities are a few characters; the bound keeps a
#: hostile value (a claim is user input) from costing time or memory.
MAX_QUANTITY_CHARS = 64
#: Largest decimal exponent accepted (``1e100``). int64, the API's own limit, ends near 9e18.
MAX_EXPONENT = 100

_FULL = re.compile(
    r"^(?P<sign>[+-]?)(?P<int>[0-9]*)(?:\.(?P<frac>[0-9]*))?"
    r"(?:[eE](?P<exp>[+-]?[0-9]+)|(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E))?$"
)
#: Digits and an optional suffix only: the canonical form of a non-negative whole number.
_PLAIN = re.compile(r"^([0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")


def parse_quantity_exact(text: str) -> Fraction:
    """Parse any Kubernetes quantity to its exact value; ValueError if it is not one."""
    if len(text) > MAX_QUANTITY_CHARS:
        raise ValueError(f"quantity longer than {MAX_QUANTITY_CHARS} characters: {text[:20]!r}...")
    match = _FULL.fullmatch(text)
    if match is None or not (match["int"] or match["frac"]):
        raise ValueError(f"not a quantity: {text!r}")
    digits = (match["int"] or "") + (match["frac"] or "")
    value = Fraction(int(digits), 10 ** len(match["frac"] or ""))
    if match["exp"] is not None:
        exponent = int(match["exp"])
        if abs(exponent) > MAX_EXPONENT:
            raise ValueError(f"quantity exponent out of range: {text!r}")
        value *= Fraction(10) ** exponent
    else:
        value *= MULTIPLIERS[match["suffix"] or ""]
    return -value if match["sign"] == "-" else value


def parse_integral_quantity(text: str, *, plain_only: bool = False) -> int:
    """Parse a quantity whose value is a whole number (``8Gi``, ``1500M``, ``2e9``, ``1.5k``).

    ``plain_only`` accepts just digits with an optional suffix (no sign, decimal point or
    exponent): the canonical forms the driver itself publishes. Raises ValueError starting with
    ``not an integral quantity`` otherwise.
    """
    if plain_only:
        match = _PLAIN.match(text.strip())
        if match is None:
            raise ValueError(f"not an integral quantity: {text!r}")
        return int(match.group(1)) * int(MULTIPLIERS[match.group(2) or ""])
    try:
        value = parse_quantity_exact(text)
    except ValueError as exc:
        raise ValueError(f"not an integral quantity: {exc}") from None
    if value.denominator != 1:
        raise ValueError(f"not an integral quantity: {text!r} is fractional")
    return int(value)


def format_binary_quantity(value: int) -> str:
    """Format bytes as the API server's canonical BinarySI form (``65536Mi`` -> ``64Gi``)."""
    if value < 0:
        raise ValueError(f"negative quantity {value}")
    for suffix in ("Ei", "Pi", "Ti", "Gi", "Mi", "Ki"):
        unit = int(MULTIPLIERS[suffix])
        if value and value % unit == 0:
            return f"{value // unit}{suffix}"
    return str(value)


def format_decimal_quantity(value: int) -> str:
    """Format a count as the canonical DecimalSI form (``120``; ``2000`` -> ``2k``)."""
    if value < 0:
        raise ValueError(f"negative quantity {value}")
    for suffix in ("E", "P", "T", "G", "M", "k"):
        unit = int(MULTIPLIERS[suffix])
        if value and value % unit == 0:
            return f"{value // unit}{suffix}"
    return str(value)
