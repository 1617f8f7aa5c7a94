"""A container's ``DcuRequest`` -> the ResourceClaim spec of its template.

Owns the mapping of whole cards and shares to requests on the two DeviceClasses: count, the
percent-to-CU rounding (:func:`share_compute_units`), capacity requests and the distinct-cards
constraint. Pure: it must not read manifests, look at annotations (it gets their selectors)
or touch the workload.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, Final

from dra_driver.cluster.slices import CORES, MEMORY, PCI_BUS_ID_ATTRIBUTE
from dra_driver.errors import ConvertError
from dra_driver.tools.convert.options import COMPUTE_UNITS_BY_MODEL, ConvertOptions
from dra_driver.tools.convert.request import DcuRequest
from dra_driver.tools.convert.selectors import card_size_selector, cel

#: DeviceClass of whole DCUs and of shares (deploy/deviceclass.yaml).
WHOLE_CARD_CLASS: Final = "dcu.hygon.com"
SHARE_CLASS: Final = "vdcu.dcu.hygon.com"
#: The attribute that tells two DCUs of a node apart, for the distinct-cards constraint.
DISTINCT_CARD_ATTRIBUTE: Final = PCI_BUS_ID_ATTRIBUTE


def share_compute_units(percent: int, card_compute_units: int) -> int:
    """CUs for ``percent`` of a card: rounded down (as HAMi's device plugin does), at least 1."""
    return max(1, percent * card_compute_units // 100)


def build_claim_spec(
    request: DcuRequest, *, selectors: Sequence[str], options: ConvertOptions, where: str
) -> dict[str, Any]:
    """The ResourceClaim spec for one container's request, with the pod's CEL ``selectors``."""
    if request.is_whole_card:
        exactly: dict[str, Any] = {"deviceClassName": WHOLE_CARD_CLASS, "count": request.count}
        if selectors:
            exactly["selectors"] = [cel(expression) for expression in selectors]
        return {"devices": {"requests": [{"name": "dcu", "exactly": exactly}]}}
    names = request.names
    percent = 100 if request.cores_percent is None else request.cores_percent
    if request.memory_mib is None:
        raise ConvertError(
            f"{where}: {names.cores} {percent} without {names.memory}: HAMi then gives the "
            "container all of the card's memory, and a DCU share must state its memory; add "
            f"{names.memory} (MiB per DCU), or remove {names.cores} for whole DCUs"
        )
    card_cus = options.card_compute_units
    if card_cus is None:
        asked = (
            f"{names.cores}: {percent}"
            if request.cores_percent is not None
            else f"{names.memory} without {names.cores} = 100 % of the cores"
        )
        known = ", ".join(COMPUTE_UNITS_BY_MODEL)
        raise ConvertError(
            f"{where}: {asked}; turning a percentage of a DCU into compute units needs the "
            "card's CU count: add --compute-units N (the computeUnits of your DCUs, see "
            f"`dcu-dra devices`) or --model NAME ({known})"
        )
    share_selectors = [*selectors, card_size_selector(options)]
    exactly = {
        "deviceClassName": SHARE_CLASS,
        "selectors": [cel(expression) for expression in share_selectors],
        "capacity": {
            "requests": {
                CORES: str(share_compute_units(percent, card_cus)),
                MEMORY: f"{request.memory_mib}Mi",
            }
        },
    }
    if request.count == 1:
        return {"devices": {"requests": [{"name": "dcu", "exactly": exactly}]}}
    request_names = [f"dcu-{i}" for i in range(request.count)]
    return {
        "devices": {
            "requests": [
                {"name": request_name, "exactly": copy.deepcopy(exactly)}
                for request_name in request_names
            ],
            # N cards, not N shares that might sit on one card (see the package docstring).
            "constraints": [
                {"requests": request_names, "distinctAttribute": DISTINCT_CARD_ATTRIBUTE}
            ],
        }
    }
