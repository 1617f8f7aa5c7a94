"""Cluster-wide correctness of a scale run, from the API server's objects (pure).

The per-node rules (live shares' CU masks disjoint on every card, pipe ids unique, files in
step with the checkpoint) are :mod:`dra_driver.testing.invariants`, read from each daemon's
files. What only the API server knows is checked here: the allocations the scheduler wrote
never hold more of a card than its ResourceSlice offers, and a card given away whole is given
to no one else.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from fractions import Fraction
from typing import Any

from dra_driver.testing.cluster import allocation_results, slice_devices
from dra_driver.util.quantity import parse_quantity_exact

#: A device: (pool, device name).
Device = tuple[str, str]


def device_capacities(
    slices: Iterable[Mapping[str, Any]], *, driver: str
) -> dict[Device, dict[str, Fraction]]:
    """Every device the driver's slices offer, with its capacities."""
    return {
        key: {
            name: parse_quantity_exact(str(entry["value"]))
            for name, entry in (device.get("capacity") or {}).items()
        }
        for key, device in slice_devices(slices, driver=driver)
    }


def capacity_problems(
    claims: Iterable[Mapping[str, Any]], slices: Iterable[Mapping[str, Any]], *, driver: str
) -> list[str]:
    """Every device whose allocations exceed what its slice offers, one line each.

    A result with ``consumedCapacity`` takes that much; one without takes the device whole,
    so it must be the device's only allocation. A result on a device no slice offers is a
    problem too. Empty: every card holds at most its total.
    """
    offered = device_capacities(slices, driver=driver)
    used: dict[Device, dict[str, Fraction]] = defaultdict(lambda: defaultdict(Fraction))
    holders: dict[Device, list[str]] = defaultdict(list)
    whole: dict[Device, list[str]] = defaultdict(list)
    for claim in claims:
        meta = claim.get("metadata") or {}
        name = f"{meta.get('namespace')}/{meta.get('name')}"
        for result in allocation_results(claim):
            if result.get("driver") != driver:
                continue
            device = (str(result["pool"]), str(result["device"]))
            holders[device].append(name)
            consumed = result.get("consumedCapacity")
            if consumed is None:
                whole[device].append(name)
                continue
            for capacity, quantity in consumed.items():
                used[device][capacity] += parse_quantity_exact(str(quantity))
    problems: list[str] = []
    for device in sorted(holders):
        label = f"device {device[1]} of pool {device[0]}"
        if device not in offered:
            problems.append(f"{label}: allocated to {len(holders[device])} claim(s), in no slice")
            continue
        if whole[device] and len(holders[device]) > 1:
            problems.append(
                f"{label}: allocated whole to {', '.join(whole[device])} and also to "
                f"{len(holders[device]) - 1} other allocation(s)"
            )
        for capacity, amount in sorted(used[device].items()):
            total = offered[device].get(capacity)
            if total is None:
                problems.append(f"{label}: {capacity} consumed, but the slice offers none")
            elif amount > total:
                problems.append(f"{label}: {capacity} {amount} allocated > {total} offered")
    return problems
