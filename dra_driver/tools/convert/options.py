"""How to convert: ``ConvertOptions`` (the command's flags) and the card model table.

Owns validating the flags and the CUs of one card (``--compute-units`` or ``--model`` through
:data:`COMPUTE_UNITS_BY_MODEL`). Must not read manifests or build output objects.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from dra_driver.errors import ConvertError

#: Compute units per card model (hygon-dcu.md §3.2, dcu-dcgm's table). Used only to turn HAMi's
#: percent into CUs; the driver itself never uses a table (it reads CUs from KFD topology).
COMPUTE_UNITS_BY_MODEL: Final[Mapping[str, int]] = {
    "K100": 120,
    "K100_AI": 120,
    "K100_LC_AI": 120,
    "K100_LC_E_AI": 128,
    "Z100": 60,
    "Z100L": 60,
}
#: A CU mask is two 64-bit words: the driver cannot slice a wider card.
MAX_COMPUTE_UNITS: Final = 128
#: A Kubernetes namespace name, and a pod claim name (both DNS labels).
DNS_LABEL: Final = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


@dataclass(frozen=True, slots=True)
class ConvertOptions:
    """How to convert; validated on construction.

    ``compute_units`` (``--compute-units``) or ``model`` (``--model``, canonicalised to the
    table's spelling) give the CUs of one card, needed only for shares. ``namespace``
    (``--namespace``) fills in converted workloads without one (their templates follow); a
    workload in another namespace is an error.
    """

    compute_units: int | None = None
    model: str | None = None
    namespace: str | None = None

    def __post_init__(self) -> None:
        if self.compute_units is not None and self.model is not None:
            raise ConvertError(
                "--compute-units and --model both say how many CUs a card has: give only one"
            )
        if self.compute_units is not None and not 1 <= self.compute_units <= MAX_COMPUTE_UNITS:
            raise ConvertError(
                f"--compute-units {self.compute_units} is out of range: a DCU has 1 to "
                f"{MAX_COMPUTE_UNITS} compute units (see the computeUnits column of "
                "`dcu-dra devices`)"
            )
        if self.model is not None:
            object.__setattr__(self, "model", canonical_model(self.model))
        if self.namespace is not None and not DNS_LABEL.match(self.namespace):
            raise ConvertError(f"--namespace {self.namespace!r} is not a valid namespace name")

    @property
    def card_compute_units(self) -> int | None:
        """CUs of one card, from ``compute_units`` or the model table; None when neither."""
        if self.model is not None:
            return COMPUTE_UNITS_BY_MODEL[self.model]
        return self.compute_units


def canonical_model(name: str) -> str:
    """The table's spelling of a model name (case-insensitive); ConvertError if unknown."""
    for model in COMPUTE_UNITS_BY_MODEL:
        if model.upper() == name.strip().upper():
            return model
    known = ", ".join(f"{m} ({n} CUs)" for m, n in COMPUTE_UNITS_BY_MODEL.items())
    raise ConvertError(
        f"unknown DCU model {name!r}: known models are {known}; for another card give "
        "--compute-units N (its computeUnits attribute, see `dcu-dra devices`)"
    )
