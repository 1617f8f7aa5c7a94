"""DCU discovery: a sysfs + devfs tree under a root directory -> an ``Inventory``.

Pure reads under an injected root (``/`` on a node, a temp dir in tests, the mock node in
kind). Never writes, never runs a process. Compute units and memory always come from the KFD
topology, so a model missing from the device-id table still gets its real capacity; the table
only supplies a label.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import NewType

from dra_driver.errors import DiscoveryError

logger = logging.getLogger(__name__)

DeviceName = NewType("DeviceName", str)
"""A device's name in the ResourceSlice: a DNS label derived from its PCI bus id."""

#: PCI vendor id of Hygon (Chengdu Haiguang IC Design).
HYGON_VENDOR_ID = 0x1D94
#: vDCUs per card when the platform reports no other limit (HAMi and Hygon's driver use 4).
DEFAULT_MAX_VDEVICES = 4
#: The CU mask of a vdev file has two 64-bit words: cards with more CUs cannot be sliced.
MAX_MASKABLE_CUS = 128

#: PCI device id -> model label (Project-HAMi/dcu-dcgm ``type2name``, January 2025). The table
#: churns between releases, so it names models and nothing else: capacity is never read from it.
MODEL_BY_DEVICE_ID: dict[int, str] = {
    0x54B7: "Z100",
    0x55B7: "Z100L",
    0x62B7: "K100",
    0x6210: "K100_AI",
    0x6211: "K100_LC_E_AI",
    0x6212: "K100_LC_AI",
    0x6213: "K100_AI_i",
    0x62C7: "K100-LC",
    0x61B7: "K500SM",
    0x61D7: "K500SM",
    0x61E7: "K500SM",
    0x61A7: "K500SM_B",
    0x61C7: "K500SM_B",
    0x62A0: "K500SM_AI",
    0x62B0: "K500SM_AI",
    0x6214: "HG Design DCU K500",
    0x61F7: "HG Design DCU K500",
    0x51B7: "Z200SM_80",
    0x56B7: "Z200SM_81",
    0x55C7: "Z200SM_71",
    0x55D7: "Z200SM_71_S",
    0x52B7: "ZIFANG 8182",
    0x57B7: "ZIFANG 8185",
    0x6370: "BW100",
}

_PCI_BUS_ID = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")


def model_name(device_id: int) -> str:
    """Return the model label for a PCI device id; unknown ids get ``DCU-0x<id>``."""
    return MODEL_BY_DEVICE_ID.get(device_id, f"DCU-0x{device_id:04x}")


def device_name_for(pci_bus_id: str) -> DeviceName:
    """Return the stable ResourceSlice device name for a PCI bus id.

    ``0000:3b:00.0`` -> ``dcu-0000-3b-00-0``: a DNS label that survives restarts and reboots,
    unlike a runtime ordinal that shifts when a card disappears.
    """
    if not _PCI_BUS_ID.match(pci_bus_id):
        raise ValueError(f"not a PCI bus id: {pci_bus_id!r}")
    return DeviceName("dcu-" + pci_bus_id.replace(":", "-").replace(".", "-"))


@dataclass(frozen=True, slots=True)
class DcuDevice:
    """One physical DCU as discovered on the node."""

    index: int
    """Ordinal among the node's DCUs, ordered by PCI bus id (``hy-smi``'s device number)."""
    name: DeviceName
    """ResourceSlice device name, derived from ``pci_bus_id``."""
    model: str
    device_id: int
    """PCI device id, e.g. ``0x6210``."""
    pci_bus_id: str
    """``DDDD:BB:DD.F``, lowercase."""
    uuid: str
    """``DCU-<serial>``; identifies the card across nodes and reboots."""
    compute_units: int
    """From KFD topology: ``simd_count / simd_per_cu``."""
    memory_bytes: int
    """Sum of the KFD node's device-memory banks."""
    numa_node: int
    """NUMA node of the PCI device; -1 when the platform reports none."""
    card: str
    """DRM card node name, e.g. ``card1`` (``/dev/dri/card1``)."""
    render: str
    """DRM render node name, e.g. ``renderD129``."""
    max_vdevices: int
    """How many vDCUs the card can hold at once."""
    kfd_node: int
    """Number of the KFD topology node."""
    gpu_id: int
    """KFD gpu id (``topology/nodes/<n>/gpu_id``)."""

    @property
    def memory_mib(self) -> int:
        """Memory in whole MiB, rounded down."""
        return self.memory_bytes // (1024 * 1024)

    @property
    def is_sliceable(self) -> bool:
        """Whether vDCU CU masks can describe this card (at most 128 CUs)."""
        return 0 < self.compute_units <= MAX_MASKABLE_CUS


@dataclass(frozen=True, slots=True)
class Inventory:
    """Everything discovery found on one node, with host paths resolved under ``root``."""

    root: Path
    devices: tuple[DcuDevice, ...]
    kfd: Path | None
    """``<root>/dev/kfd`` if present (shared by every DCU)."""
    mkfd: Path | None
    """``<root>/dev/mkfd`` if present (Hygon-specific)."""
    hyhal: Path | None
    """``<root>/opt/hyhal`` if present (mounted read-only into containers)."""

    def by_name(self, name: str) -> DcuDevice | None:
        """Return the device with this ResourceSlice name, if any."""
        for device in self.devices:
            if device.name == name:
                return device
        return None

    def dev_path(self, relative: str) -> Path:
        """Return the host path of a ``/dev`` entry, e.g. ``dri/card1``, under the root."""
        return self.root / "dev" / relative
