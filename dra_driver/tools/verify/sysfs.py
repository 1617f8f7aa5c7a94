"""What the (host's, read-only) sysfs in the container says about the PCI devices.

``read_sysfs`` maps each PCI bus id to its DRM nodes, its vendor and, from the KFD topology,
its compute units; a missing sysfs gives an unavailable ``Sysfs`` whose ``note`` says why, so
the checks report SKIP instead of failing. Also the directory helpers the device-node checks
share (``list_names``, ``natural_key``). Reads files only.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from dra_driver.errors import DiscoveryError
from dra_driver.node.devices import read_properties


@dataclass(frozen=True, slots=True)
class Sysfs:
    """What the (host's, read-only) sysfs visible in the container says about PCI devices."""

    available: bool
    compute_units: dict[str, int]
    drm_nodes: dict[str, tuple[str, ...]]
    vendor: dict[str, int]
    note: str | None
    """Why part of it could not be read, for SKIP messages."""

    def owner_of(self, drm_name: str) -> str | None:
        """Return the PCI bus id whose ``drm/`` dir lists ``drm_name``."""
        for bus, names in self.drm_nodes.items():
            if drm_name in names:
                return bus
        return None


def read_sysfs(sys_dir: Path | None) -> Sysfs:
    """Read ``sys_dir``; an unavailable ``Sysfs`` when it is None or missing."""
    if sys_dir is None or not sys_dir.is_dir():
        where = "no --sys-dir" if sys_dir is None else f"{sys_dir} does not exist"
        return Sysfs(False, {}, {}, {}, where)
    drm_nodes: dict[str, tuple[str, ...]] = {}
    vendor: dict[str, int] = {}
    pci_dir = sys_dir / "bus/pci/devices"
    for entry in list_names(pci_dir):
        device = pci_dir / entry
        drm = device / "drm"
        if drm.is_dir():
            drm_nodes[entry] = tuple(sorted(list_names(drm), key=natural_key))
        vendor_id = _read_hex(device / "vendor")
        if vendor_id is not None:
            vendor[entry] = vendor_id
    compute_units, note = kfd_compute_units(sys_dir / "class/kfd/kfd/topology/nodes")
    return Sysfs(True, compute_units, drm_nodes, vendor, note)


def kfd_compute_units(nodes_dir: Path) -> tuple[dict[str, int], str | None]:
    """Map PCI bus id -> CUs from the KFD topology, as discovery computes them."""
    if not nodes_dir.is_dir():
        return {}, f"{nodes_dir} does not exist"
    found: dict[str, int] = {}
    for name in list_names(nodes_dir):
        if not name.isdigit():
            continue
        try:
            props = read_properties(nodes_dir / name / "properties")
        except DiscoveryError as exc:
            return found, str(exc)
        simd_count, simd_per_cu = props.get("simd_count", 0), props.get("simd_per_cu", 0)
        location = props.get("location_id")
        if simd_count <= 0 or simd_per_cu <= 0 or location is None:
            continue  # a CPU node, or a node we cannot place on the PCI bus
        bus, devfn = (location >> 8) & 0xFF, location & 0xFF
        bus_id = f"{props.get('domain', 0):04x}:{bus:02x}:{devfn >> 3:02x}.{devfn & 0x7:x}"
        found[bus_id] = simd_count // simd_per_cu
    return found, None


def list_names(directory: Path) -> list[str]:
    """Names in ``directory``; empty when it is missing or unreadable (reported by callers)."""
    try:
        return sorted(os.listdir(directory))
    except OSError:
        return []


def natural_key(name: str) -> tuple[str, int]:
    """``renderD129`` sorts before ``renderD1000``."""
    match = re.fullmatch(r"(\D*)(\d+)", name)
    return (name, -1) if match is None else (match[1], int(match[2]))


def _read_hex(path: Path) -> int | None:
    try:
        return int(path.read_text(encoding="ascii").strip(), 16)
    except (OSError, UnicodeDecodeError, ValueError):
        return None
