"""Warnings: what a workload asks of HAMi that the conversion cannot carry over.

Owns the wording of every warning about annotations, scheduler policies, other ``hygon.com``
resources and a ``--model`` that contradicts the pod's type annotations. Must not raise for
them nor change the workload: warnings are returned, one line each, never silently dropped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from dra_driver import DRIVER_NAME
from dra_driver.tools.convert.claims import WHOLE_CARD_CLASS
from dra_driver.tools.convert.names import (
    HAMI_POLICY_ANNOTATIONS,
    HAMI_RESOURCES,
    NAME_SETS,
    SELECTION_ANNOTATIONS,
)
from dra_driver.tools.convert.options import ConvertOptions
from dra_driver.tools.convert.request import DcuRequest
from dra_driver.tools.convert.selectors import card_types


def model_conflicts(
    annotations: Mapping[str, Any], options: ConvertOptions, subject: str
) -> list[str]:
    """Warnings when --model can never satisfy the pod's type annotations."""
    if options.model is None:
        return []
    warnings: list[str] = []
    model = options.model.upper()
    for names in NAME_SETS:
        if names.use_type in annotations:
            types = card_types(annotations[names.use_type], names.use_type, subject)
            if not any(t in model for t in types):
                warnings.append(
                    f"{subject}: --model {options.model} is not among {names.use_type} "
                    f"{annotations[names.use_type]}: no DCU matches both, so the shares can "
                    "never be allocated"
                )
        if names.nouse_type in annotations:
            types = card_types(annotations[names.nouse_type], names.nouse_type, subject)
            if any(t in model for t in types):
                warnings.append(
                    f"{subject}: --model {options.model} is excluded by {names.nouse_type} "
                    f"{annotations[names.nouse_type]}: no DCU matches both, so the shares can "
                    "never be allocated"
                )
    return warnings


def annotation_warnings(
    workload: Mapping[str, Any],
    annotations: Mapping[str, Any],
    path: Sequence[str | int],
    subject: str,
) -> list[str]:
    """Warnings for HAMi annotations the conversion cannot carry over."""
    warnings: list[str] = []
    for key in annotations:
        if key in SELECTION_ANNOTATIONS:
            continue
        if key in HAMI_POLICY_ANNOTATIONS:
            warnings.append(
                f"{subject}: annotation {key}: {annotations[key]} (a HAMi scheduler policy) has "
                "no DRA equivalent: kube-scheduler picks among the DCUs that fit by itself; "
                "left in place, it does nothing without HAMi"
            )
        elif key.startswith(("hami.io/", "hygon.com/")):
            warnings.append(
                f"{subject}: annotation {key} has no equivalent with the {DRIVER_NAME} driver; "
                "left in place, it does nothing without HAMi"
            )
    if path:
        # HAMi reads the pod's annotations; on the workload itself they never did anything.
        own = (workload.get("metadata") or {}).get("annotations") or {}
        for key in sorted(SELECTION_ANNOTATIONS & own.keys()):
            warnings.append(
                f"{subject}: annotation {key} is on the {workload.get('kind')} itself, where "
                "HAMi does not read it (it reads the pod template's); not converted"
            )
    return warnings


#: Below this many MiB a dcumem is most likely GiB written as MiB: no DCU workload fits in it.
SMALL_MEMORY_MIB: Final = 64


def memory_unit_warning(request: DcuRequest, where: str) -> list[str]:
    """A warning when ``dcumem`` is so small that it was most likely meant as GiB.

    Volcano's vDCU guide writes ``dcumem: 2`` for 2 GiB, but HAMi (and so the conversion)
    reads MiB; the value is converted as written, and the warning says how to get GiB.
    """
    memory = request.memory_mib
    if memory is None or memory >= SMALL_MEMORY_MIB:
        return []
    return [
        f"{where}: {request.names.memory} {memory} is {memory} MiB (HAMi reads MiB), converted "
        f"as {memory}Mi; if {memory} GiB was meant, write {memory * 1024}"
    ]


#: What Volcano counts in a task's resources: a task asking for none of them is BestEffort.
_COUNTED_RESOURCES: Final = ("cpu", "memory")


def best_effort_warning(pod: Mapping[str, Any], subject: str) -> list[str]:
    """A warning when Volcano would take the converted pods for BestEffort.

    Volcano builds a task's resources from its containers' requests only (claims do not count).
    With no cpu or memory request, its allocate action skips the task and its backfill action
    binds each pod that fits on its own, so a gang (``minAvailable``) no longer holds: part of a
    job starts and holds DCU shares while the rest waits. A limit counts, since the API server
    copies it to the request.
    """
    spec = pod.get("spec")
    containers = spec.get("containers") if isinstance(spec, Mapping) else None
    for container in containers if isinstance(containers, list) else []:
        resources = container.get("resources") if isinstance(container, Mapping) else None
        if not isinstance(resources, Mapping):
            continue
        for section in ("requests", "limits"):
            amounts = resources.get(section)
            if isinstance(amounts, Mapping) and any(
                str(amounts.get(name, "0")).strip() not in {"0", "0m", ""}
                for name in _COUNTED_RESOURCES
            ):
                return []
    return [
        f"{subject}: no container requests cpu or memory, so Volcano takes the pods for "
        "BestEffort and does not hold them as a gang (its backfill binds each that fits, and "
        "part of the job holds DCU shares while the rest waits): give each container a cpu or "
        "memory request (README, With Volcano)"
    ]


def foreign_hygon_resources(container: Mapping[str, Any], where: str) -> list[str]:
    """Warnings for hygon.com resources that are not HAMi's (left as they are)."""
    resources = container.get("resources") or {}
    found: list[str] = []
    for section in ("limits", "requests"):
        for key in resources.get(section) or {}:
            if key.startswith("hygon.com/") and key not in HAMI_RESOURCES and key not in found:
                found.append(key)
    warnings = []
    for key in found:
        if key == "hygon.com/dcu":
            warnings.append(
                f"{where}: {key} left as is: the {WHOLE_CARD_CLASS} DeviceClass serves it as "
                "an extended resource (whole DCUs; needs DRAExtendedResource, on from 1.36)"
            )
        else:
            warnings.append(f"{where}: {key} is not a HAMi DCU resource; left as is")
    return warnings
