"""Inventory -> the ResourceSlice content of a node's pool. Pure: no I/O, no API client.

What is published is decided here and validated here, before anything is sent, so an invalid
slice never reaches the API server (which would reject the whole slice, hiding every DCU of the
node). ``publisher`` only diffs the result against the cluster and applies it.

Capacity model (``--sharing=consumable``, the default), per DCU:

- ``cores``: compute units; a share consumes what it asks (min 1, step 1); default = all CUs.
- ``memory``: bytes, rounded down to whole MiB so every value is on the 1Mi grid; default = all.
- ``vdevices``: vDCU slots (the card's limit, 4 unless the platform reports another); every
  allocation consumes exactly one.

Defaults equal the whole card, so a claim without capacity requests gets an exclusive card
(no surprise sharing), and a share takes the CUs and memory it asks for plus one slot.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from dra_driver.node.devices import DcuDevice, DeviceName, Inventory
from dra_driver.node.health import DeviceHealth, HealthStatus

# Re-exported: the canonical formatting belongs to what slices publish.
from dra_driver.util.quantity import format_binary_quantity as format_binary_quantity
from dra_driver.util.quantity import format_decimal_quantity as format_decimal_quantity
from dra_driver.util.quantity import parse_integral_quantity

#: The API server's limit on devices in one slice (64 if any device had taints or counters).
MAX_DEVICES_PER_SLICE = 128
#: ... and if any device of the slice has taints.
MAX_DEVICES_PER_TAINTED_SLICE = 64
#: Taints of one device.
MAX_TAINTS_PER_DEVICE = 16
#: Effects the API accepts for a device taint (``None`` only records, 1.37+).
TAINT_EFFECTS = frozenset({"NoSchedule", "NoExecute", "None"})
#: The taint of an unhealthy DCU. NoSchedule, not NoExecute: new claims stay away, but pods
#: already using the DCU are not evicted by us (an admin's DeviceTaintRule can do that). The
#: key is fixed, not derived from --driver-name, because users write tolerations for it.
UNHEALTHY_TAINT_KEY = "dcu.hygon.com/unhealthy"
UNHEALTHY_TAINT_EFFECT = "NoSchedule"
#: Attributes + capacities of one device, combined.
MAX_ATTRIBUTES_AND_CAPACITIES = 32
#: Longest string or version attribute value.
MAX_ATTRIBUTE_VALUE_LENGTH = 64
#: Capacity names; claims must use exactly these keys (no domain normalisation in the allocator).
CORES = "cores"
MEMORY = "memory"
VDEVICES = "vdevices"
#: Standard attribute names (k8s.io/dynamic-resource-allocation/deviceattribute).
PCI_BUS_ID_ATTRIBUTE = "resource.kubernetes.io/pciBusID"
PCIE_ROOT_ATTRIBUTE = "resource.kubernetes.io/pcieRoot"

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_C_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,31}$")
# Label names and values (taint keys and values follow the label rules).
_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
# semver.org's regular expression: MAJOR.MINOR.PATCH[-pre][+build], no leading zeros.
_SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)


class Sharing(StrEnum):
    """How devices are offered to the scheduler."""

    CONSUMABLE = "consumable"
    """Shares with consumable capacity (needs DRAConsumableCapacity: beta, on, from 1.36)."""
    EXCLUSIVE = "exclusive"
    """Whole devices only, for clusters where consumable capacity is off."""


class SliceValidationError(ValueError):
    """The desired pool would be rejected by the API server; ``problems`` says why."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


@dataclass(frozen=True, slots=True)
class PoolSpec:
    """What the driver wants published for one pool: the devices of each slice, in order.

    ``slices[i]`` is the ``spec.devices`` list of the i-th slice. The publisher adds names,
    the pool generation, ``resourceSliceCount`` and the owner.
    """

    driver: str
    node_name: str
    pool_name: str
    slices: tuple[tuple[dict[str, Any], ...], ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceTaint:
    """One ``spec.devices[].taints[]`` entry."""

    key: str
    value: str
    effect: str
    time_added: float | None = None
    """Unix seconds; published rounded down to whole seconds (the API stores seconds)."""

    def to_json(self) -> dict[str, Any]:
        """The wire form."""
        entry: dict[str, Any] = {"key": self.key, "value": self.value, "effect": self.effect}
        if self.time_added is not None:
            entry["timeAdded"] = format_time(self.time_added)
        return entry


def format_time(unix_s: float) -> str:
    """RFC 3339 in UTC with whole seconds, as the API server writes ``metav1.Time``."""
    return dt.datetime.fromtimestamp(int(unix_s), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def health_taints(devices: Iterable[DeviceHealth]) -> dict[DeviceName, tuple[DeviceTaint, ...]]:
    """The taints of unhealthy devices: ``dcu.hygon.com/unhealthy=<reason>:NoSchedule``.

    ``timeAdded`` is when the device became unhealthy. Set by us rather than left to the API
    server (which fills it in when missing): a slice must look the same after every write, or
    the publisher would rewrite it forever. Unknown health taints nothing: not being able to
    look is our problem, not the device's.
    """
    return {
        d.device: (
            DeviceTaint(
                key=UNHEALTHY_TAINT_KEY,
                value=str(d.reason or "Unhealthy"),
                effect=UNHEALTHY_TAINT_EFFECT,
                time_added=d.since,
            ),
        )
        for d in devices
        if d.status is HealthStatus.UNHEALTHY
    }


def keep_taint_times(
    stored: Sequence[Mapping[str, Any]], desired: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """``desired`` with each taint's ``timeAdded`` taken from the same taint in ``stored``.

    The same taint (device, key, value, effect) keeps the time it was first published, as
    the Go helper does: a restarted daemon must not move it, or rewrite the slice to do so.
    """
    times = {
        (str(device.get("name")), t.get("key"), t.get("value"), t.get("effect")): t["timeAdded"]
        for device in stored
        for t in device.get("taints") or ()
        if t.get("timeAdded")
    }
    if not times:
        return list(desired)
    result: list[dict[str, Any]] = []
    for device in desired:
        name = str(device.get("name"))
        taints = []
        for taint in device.get("taints") or ():
            known = times.get((name, taint["key"], taint["value"], taint["effect"]))
            taints.append(taint if known is None else {**taint, "timeAdded": known})
        result.append({**device, "taints": taints} if taints else device)
    return result


def is_semver(value: str) -> bool:
    """Whether ``value`` is strict SemVer, the only form the API accepts for a version."""
    return len(value) <= MAX_ATTRIBUTE_VALUE_LENGTH and _SEMVER.match(value) is not None


def device_entry(
    device: DcuDevice,
    *,
    sharing: Sharing,
    driver_version: str | None,
    taints: Sequence[DeviceTaint] = (),
) -> dict[str, Any]:
    """Return the ``spec.devices[]`` entry of one DCU."""
    attributes: dict[str, dict[str, Any]] = {
        "model": {"string": device.model},
        "deviceID": {"string": f"0x{device.device_id:04x}"},
        "uuid": {"string": device.uuid},
        "index": {"int": device.index},
        "computeUnits": {"int": device.compute_units},
        "memoryMiB": {"int": device.memory_mib},
        "numaNode": {"int": device.numa_node},
        PCI_BUS_ID_ATTRIBUTE: {"string": device.pci_bus_id},
    }
    if device.pcie_root is not None:
        attributes[PCIE_ROOT_ATTRIBUTE] = {"string": device.pcie_root}
    if driver_version is not None and is_semver(driver_version):
        attributes["driverVersion"] = {"version": driver_version}
    memory = format_binary_quantity(device.memory_mib * 2**20)
    entry: dict[str, Any] = {"name": device.name, "attributes": attributes}
    # A card wider than two 64-bit CU mask words cannot be sliced: offer it whole only.
    if sharing is Sharing.CONSUMABLE and device.is_sliceable:
        cores = format_decimal_quantity(device.compute_units)
        entry["allowMultipleAllocations"] = True
        entry["capacity"] = {
            CORES: {
                "value": cores,
                "requestPolicy": {
                    "default": cores,
                    "validRange": {"min": "1", "max": cores, "step": "1"},
                },
            },
            MEMORY: {
                "value": memory,
                "requestPolicy": {
                    "default": memory,
                    "validRange": {"min": "1Mi", "max": memory, "step": "1Mi"},
                },
            },
            VDEVICES: {
                "value": format_decimal_quantity(device.max_vdevices),
                "requestPolicy": {"default": "1", "validValues": ["1"]},
            },
        }
    else:
        entry["capacity"] = {
            CORES: {"value": format_decimal_quantity(device.compute_units)},
            MEMORY: {"value": memory},
            VDEVICES: {"value": format_decimal_quantity(device.max_vdevices)},
        }
    if taints:
        entry["taints"] = [taint.to_json() for taint in taints]
    return entry


def build_pool(
    inventory: Inventory,
    *,
    driver: str,
    node_name: str,
    sharing: Sharing,
    taints: Mapping[DeviceName, Sequence[DeviceTaint]] | None = None,
) -> PoolSpec:
    """Return the validated pool of a node: one device per DCU, in PCI order.

    Deterministic: the same inventory (and taints) always gives the same pool, so an
    unchanged node never causes an update. ``taints`` by device name (see ``health_taints``).
    Raises ``SliceValidationError`` when the API server would reject it.
    """
    taints = taints or {}
    entries = [
        device_entry(
            d,
            sharing=sharing,
            driver_version=inventory.driver_version,
            taints=taints.get(d.name, ()),
        )
        for d in inventory.devices
    ]
    # The API allows fewer devices per slice once any has taints. A node has far fewer DCUs
    # than either limit, so in practice a taint never re-splits the pool.
    per_slice = (
        MAX_DEVICES_PER_TAINTED_SLICE
        if any("taints" in entry for entry in entries)
        else MAX_DEVICES_PER_SLICE
    )
    chunks = tuple(tuple(entries[i : i + per_slice]) for i in range(0, len(entries), per_slice))
    # An empty slice still shows the driver is alive on this node (Go helper behaviour).
    pool = PoolSpec(driver=driver, node_name=node_name, pool_name=node_name, slices=chunks or ((),))
    problems = validate_pool(pool)
    if problems:
        raise SliceValidationError(problems)
    return pool


def validate_pool(pool: PoolSpec) -> list[str]:
    """Check what the API server checks that we can get wrong; one line per problem."""
    problems: list[str] = []
    if len(pool.driver) > 63 or not _DNS_SUBDOMAIN.match(pool.driver):
        problems.append(f"driver name {pool.driver!r} is not a DNS subdomain of <= 63 chars")
    if len(pool.pool_name) > 253 or not all(
        _DNS_SUBDOMAIN.match(part) for part in pool.pool_name.split("/")
    ):
        problems.append(f"pool name {pool.pool_name!r} is not DNS subdomains joined by '/'")
    names: set[str] = set()
    for devices in pool.slices:
        if len(devices) > MAX_DEVICES_PER_SLICE:
            problems.append(
                f"a slice has {len(devices)} devices, more than {MAX_DEVICES_PER_SLICE}"
            )
        elif len(devices) > MAX_DEVICES_PER_TAINTED_SLICE and any(d.get("taints") for d in devices):
            problems.append(
                f"a slice with device taints has {len(devices)} devices, more than "
                f"{MAX_DEVICES_PER_TAINTED_SLICE}"
            )
        for device in devices:
            name = str(device.get("name", ""))
            if name in names:
                problems.append(f"device {name!r} appears twice in the pool")
            names.add(name)
            problems.extend(_validate_device(device))
    return problems


def _validate_device(device: dict[str, Any]) -> list[str]:
    name = str(device.get("name", ""))
    where = f"device {name!r}"
    problems: list[str] = []
    if not _DNS_LABEL.match(name):
        problems.append(f"{where}: name is not a DNS label")
    attributes: dict[str, dict[str, Any]] = device.get("attributes", {})
    capacity: dict[str, dict[str, Any]] = device.get("capacity", {})
    if len(attributes) + len(capacity) > MAX_ATTRIBUTES_AND_CAPACITIES:
        problems.append(
            f"{where}: {len(attributes) + len(capacity)} attributes and capacities, more than "
            f"{MAX_ATTRIBUTES_AND_CAPACITIES}"
        )
    for key, value in attributes.items():
        problems.extend(f"{where}: attribute {key}: {p}" for p in _attribute_problems(key, value))
    problems.extend(f"{where}: {p}" for p in _taint_problems(device.get("taints") or []))
    shared = device.get("allowMultipleAllocations") is True
    for key, cap in capacity.items():
        if not _qualified_name_ok(key):
            problems.append(f"{where}: capacity name {key!r} is not a qualified name")
        policy = cap.get("requestPolicy")
        if policy is not None and not shared:
            problems.append(
                f"{where}: capacity {key} has a requestPolicy without allowMultipleAllocations"
            )
        if policy is not None:
            problems.extend(
                f"{where}: capacity {key}: {p}" for p in _policy_problems(cap["value"], policy)
            )
    return problems


def _taint_problems(taints: Sequence[Mapping[str, Any]]) -> list[str]:
    """The API server's device taint rules (label-style key and value, a known effect)."""
    problems: list[str] = []
    if len(taints) > MAX_TAINTS_PER_DEVICE:
        problems.append(f"{len(taints)} taints, more than {MAX_TAINTS_PER_DEVICE}")
    for taint in taints:
        key, value = str(taint.get("key", "")), str(taint.get("value", ""))
        prefix, _, name = key.rpartition("/")
        if (prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix))) or not (
            _LABEL_NAME.match(name)
        ):
            problems.append(f"taint key {key!r} is not a qualified name")
        if not _LABEL_VALUE.match(value):
            problems.append(f"taint {key} value {value!r} is not a label value")
        if taint.get("effect") not in TAINT_EFFECTS:
            problems.append(
                f"taint {key} effect {taint.get('effect')!r} is not one of "
                f"{', '.join(sorted(TAINT_EFFECTS))}"
            )
    return problems


def _qualified_name_ok(key: str) -> bool:
    domain, _, ident = key.rpartition("/")
    if domain and (len(domain) > 63 or not _DNS_SUBDOMAIN.match(domain)):
        return False
    return _C_IDENTIFIER.match(ident) is not None


def _attribute_problems(key: str, value: dict[str, Any]) -> list[str]:
    problems = [] if _qualified_name_ok(key) else ["name is not a qualified name"]
    if len(value) != 1 or next(iter(value)) not in {"int", "bool", "string", "version"}:
        return [*problems, "must have exactly one of int, bool, string, version"]
    kind, raw = next(iter(value.items()))
    if kind in {"string", "version"} and len(str(raw)) > MAX_ATTRIBUTE_VALUE_LENGTH:
        problems.append(f"value longer than {MAX_ATTRIBUTE_VALUE_LENGTH} characters")
    if kind == "version" and not is_semver(str(raw)):
        problems.append(f"version {raw!r} is not strict SemVer")
    return problems


def _policy_problems(value: str, policy: dict[str, Any]) -> list[str]:
    """The API server's requestPolicy rules (validateRequestPolicy*), integer quantities."""
    total = parse_quantity(value)
    default = policy.get("default")
    if default is None:
        return ["requestPolicy needs a default"]
    default_v = parse_quantity(default)
    valid_values = policy.get("validValues")
    valid_range = policy.get("validRange")
    if valid_values is not None and valid_range is not None:
        return ["validValues and validRange are exclusive"]
    problems: list[str] = []
    if valid_values is not None:
        values = [parse_quantity(v) for v in valid_values]
        if values != sorted(values) or len(set(values)) != len(values):
            problems.append("validValues must be sorted and unique")
        if len(values) > 10:
            problems.append("validValues has more than 10 entries")
        if any(v > total for v in values):
            problems.append("a valid value exceeds the capacity")
        if default_v not in values:
            problems.append("default is not one of validValues")
    if valid_range is not None:
        low = parse_quantity(valid_range["min"])
        high = parse_quantity(valid_range["max"]) if "max" in valid_range else None
        step = parse_quantity(valid_range["step"]) if "step" in valid_range else None
        if low > total:
            problems.append("min exceeds the capacity")
        if default_v < low:
            problems.append("default is below min")
        if high is not None and not (low <= high <= total):
            problems.append("max must be between min and the capacity")
        if high is not None and default_v > high:
            problems.append("default exceeds max")
        if step is not None:
            if low + step > total:
                problems.append("min + step exceeds the capacity")
            if (default_v - low) % step:
                problems.append("default is not on the step grid from min")
            if high is not None and (high - low) % step:
                problems.append("max is not on the step grid from min")
    return problems


def parse_quantity(text: str) -> int:
    """Parse an integral Kubernetes quantity (``15``, ``2Gi``, ``1500M``) to an int.

    Raises ValueError for fractions, exponents or signs, which our capacities never use:
    what we validate here is what we publish, always in canonical form.
    """
    return parse_integral_quantity(text, plain_only=True)
