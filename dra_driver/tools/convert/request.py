"""One container's HAMi limits -> ``DcuRequest``: what it asks for, as written.

Owns reading ``hygon.com/dcunum``/``dcumem``/``dcucores`` (or the ``hcu`` spelling) from limits
and requests and checking their values. Must not apply HAMi's defaults, look at annotations or
build claims; the container is never modified.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from dra_driver.errors import ConvertError
from dra_driver.tools.convert.names import DCU_NAMES, HCU_NAMES, NAME_SETS, ResourceNames

#: A claim holds at most 32 requests and 32 allocated devices (resource.k8s.io/v1 limits).
MAX_DEVICES_PER_CLAIM: Final = 32
#: HAMi keeps dcumem in an int32 of MiB and rejects more.
MAX_MEMORY_MIB: Final = 2**31 - 1

_INTEGER = re.compile(r"^[+-]?[0-9]+$")


@dataclass(frozen=True, slots=True)
class DcuRequest:
    """What one container asks HAMi for, as written (HAMi's defaults not yet applied)."""

    container: str
    names: ResourceNames
    count: int
    memory_mib: int | None
    """``dcumem``; None when absent (HAMi: all of the card's memory)."""
    cores_percent: int | None
    """``dcucores``; None when absent (HAMi: 100)."""

    @property
    def is_whole_card(self) -> bool:
        """Whether HAMi gives each DCU whole: no memory limit and all of the cores."""
        return self.memory_mib is None and self.cores_percent in (None, 100)


def read_request(container: Mapping[str, Any], *, where: str) -> DcuRequest | None:
    """The HAMi DCU request of one container, or None when it asks for none.

    Reads limits, then requests (as HAMi does); the two must agree. Values are whole numbers:
    ``dcunum`` 1-32, ``dcumem`` MiB >= 1, ``dcucores`` percent 1-100.
    """
    resources = container.get("resources") or {}
    limits = resources.get("limits") or {}
    requests = resources.get("requests") or {}
    spellings = [
        names for names in NAME_SETS if any(n in limits or n in requests for n in names.resources)
    ]
    if not spellings:
        return None
    if len(spellings) > 1:
        raise ConvertError(
            f"{where}: mixes {DCU_NAMES.count}-style and {HCU_NAMES.count}-style resources; "
            "HAMi reads one spelling: use one"
        )
    names = spellings[0]
    count = _whole_number_of(names.count, limits, requests, where)
    memory = _whole_number_of(names.memory, limits, requests, where)
    cores = _whole_number_of(names.cores, limits, requests, where)
    if count is None:
        given = names.memory if memory is not None else names.cores
        raise ConvertError(
            f"{where}: {given} without {names.count}: HAMi gives a container no DCU unless it "
            f"sets {names.count} (it does not default to 1); add {names.count}: 1"
        )
    if not 1 <= count <= MAX_DEVICES_PER_CLAIM:
        raise ConvertError(
            f"{where}: {names.count} is {count}; ask for 1 to {MAX_DEVICES_PER_CLAIM} DCUs "
            "(a claim holds at most 32 devices)"
        )
    if memory is not None and memory == 0:
        raise ConvertError(
            f"{where}: {names.memory} is 0, which HAMi reads as all of the card's memory; "
            f"remove {names.memory} for that, or give the MiB each DCU share needs"
        )
    if memory is not None and not 1 <= memory <= MAX_MEMORY_MIB:
        raise ConvertError(
            f"{where}: {names.memory} is {memory}; give the MiB of device memory per DCU "
            f"(1 to {MAX_MEMORY_MIB})"
        )
    if cores is not None and cores == 0:
        raise ConvertError(
            f"{where}: {names.cores} is 0: in HAMi that shares the compute without reserving "
            "any, but a vDCU always owns at least one CU; ask for 1 to 100 percent"
        )
    if cores is not None and not 1 <= cores <= 100:
        raise ConvertError(
            f"{where}: {names.cores} is {cores}; it is a percentage of one DCU (1 to 100)"
        )
    return DcuRequest(
        container=str(container.get("name")),
        names=names,
        count=count,
        memory_mib=memory,
        cores_percent=cores,
    )


def _whole_number_of(
    name: str, limits: Mapping[str, Any], requests: Mapping[str, Any], where: str
) -> int | None:
    """``name`` from limits and requests (which must agree), or None when in neither."""
    values = {
        section: _whole_number(mapping[name], name=name, where=where)
        for section, mapping in (("limits", limits), ("requests", requests))
        if name in mapping
    }
    if len(set(values.values())) > 1:
        raise ConvertError(
            f"{where}: {name} is {values['limits']} in limits but {values['requests']} in "
            "requests; make them equal (Kubernetes requires it for extended resources, and "
            "HAMi reads limits first)"
        )
    return next(iter(values.values()), None)


def _whole_number(value: Any, *, name: str, where: str) -> int:
    # bool is an int in Python; `true` in a resource list is a typo, never a count.
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and _INTEGER.match(value.strip()):
        return int(value.strip())
    hint = ""
    if name.endswith("mem"):
        hint = " (HAMi reads it as a plain number of MiB: 8192 for 8 GiB)"
    raise ConvertError(f"{where}: {name} {value!r} is not a whole number{hint}")
