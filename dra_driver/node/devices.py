"""DCU discovery: a sysfs + devfs tree under a root directory -> an ``Inventory``.

Pure reads under an injected root (``/`` on a node, a temp dir in tests, the mock node in
kind). Never writes, never runs a process. Compute units and memory always come from the KFD
topology, so a model missing from the device-id table still gets its real capacity; the table
only supplies a label.
"""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass, replace
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
    simd_arrays: int = 1
    """KFD ``array_count``: SIMD arrays the CUs are grouped in (for spread CU layouts)."""
    pcie_root: str | None = None
    """PCIe root complex (``pci0000:3a``) from the device's sysfs path; None if not derivable."""

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
    driver_version: str | None = None
    """The hycu kernel module's version (``/sys/module/hycu/version``), as the module says it."""

    def by_name(self, name: str) -> DcuDevice | None:
        """Return the device with this ResourceSlice name, if any."""
        for device in self.devices:
            if device.name == name:
                return device
        return None

    def dev_path(self, relative: str) -> Path:
        """Return the host path of a ``/dev`` entry, e.g. ``dri/card1``, under the root."""
        return self.root / "dev" / relative


# --- discovery -------------------------------------------------------------------------------

#: KFD ``heap_type`` values of device memory banks (0 is system memory seen by a CPU node).
_DEVICE_MEMORY_HEAP_TYPES = frozenset({1, 2})  # HSA_HEAPTYPE_FRAME_BUFFER_PUBLIC / _PRIVATE


def discover(root: Path, *, max_vdevices: int = DEFAULT_MAX_VDEVICES) -> Inventory:
    """Discover the DCUs of the node whose filesystem is mounted at ``root``.

    Accelerator nodes of the KFD topology with the Hygon vendor id become ``DcuDevice``s;
    CPU nodes and other vendors' GPUs are ignored. Devices are ordered by PCI bus id.

    Raises:
        DiscoveryError: the root is missing, a file is unreadable or malformed, or a DCU lacks
            a piece a container needs (its PCI device, DRM nodes, ``/dev/kfd``).
    """
    if not root.is_dir():
        raise DiscoveryError(
            f"root {root} does not exist or is not a directory; pass --root with the node's "
            "filesystem root (or a mock node made by 'dcu-dra mock create')"
        )
    if max_vdevices < 1:
        raise DiscoveryError(f"max vDCUs per card must be at least 1, got {max_vdevices}")
    nodes_dir = root / "sys/class/kfd/kfd/topology/nodes"
    found: list[DcuDevice] = []
    if nodes_dir.is_dir():
        for node_dir in sorted(_numbered_dirs(nodes_dir), key=lambda p: int(p.name)):
            candidate = _read_kfd_node(root, node_dir, max_vdevices=max_vdevices)
            if candidate is not None:
                found.append(candidate)
    else:
        logger.info(
            "no KFD topology at %s: no DCUs on this node (is the hycu driver loaded?)", nodes_dir
        )
    # The index is the position in PCI order, known only once every node has been read.
    found.sort(key=lambda d: d.pci_bus_id)
    devices = tuple(replace(d, index=index) for index, d in enumerate(found))
    kfd = root / "dev/kfd"
    mkfd = root / "dev/mkfd"
    hyhal = root / "opt/hyhal"
    inventory = Inventory(
        root=root,
        devices=devices,
        kfd=kfd if _exists(kfd) else None,
        mkfd=mkfd if _exists(mkfd) else None,
        hyhal=hyhal if hyhal.is_dir() else None,
        driver_version=_read_text_file(root / "sys/module/hycu/version"),
    )
    _check_device_nodes(inventory)
    return inventory


def _read_kfd_node(root: Path, node_dir: Path, *, max_vdevices: int) -> DcuDevice | None:
    """Read one KFD topology node; ``None`` for CPU nodes and other vendors' devices.

    The returned device has index -1 until ``discover`` orders all devices.
    """
    props_path = node_dir / "properties"
    props = read_properties(props_path)
    simd_count = props.get("simd_count", 0)
    if simd_count == 0:
        return None  # a CPU node
    vendor_id = props.get("vendor_id")
    if vendor_id is not None and vendor_id != HYGON_VENDOR_ID:
        logger.debug("ignoring KFD node %s: vendor 0x%04x is not Hygon", node_dir.name, vendor_id)
        return None
    pci_bus_id = _pci_bus_id(props, props_path)
    pci_dir = root / "sys/bus/pci/devices" / pci_bus_id
    if not pci_dir.is_dir():
        raise DiscoveryError(
            f"{props_path}: KFD node {node_dir.name} is PCI device {pci_bus_id}, but {pci_dir} "
            "does not exist; is /sys mounted completely?"
        )
    pci_vendor = _read_hex_file(pci_dir / "vendor")
    if vendor_id is None:
        if pci_vendor != HYGON_VENDOR_ID:
            logger.debug("ignoring KFD node %s: PCI vendor is not Hygon", node_dir.name)
            return None
    elif pci_vendor is not None and pci_vendor != HYGON_VENDOR_ID:
        raise DiscoveryError(
            f"{props_path}: KFD says vendor 0x{vendor_id:04x} but {pci_dir / 'vendor'} says "
            f"0x{pci_vendor:04x}; the topology and the PCI tree disagree"
        )
    device_id = props.get("device_id") or _read_hex_file(pci_dir / "device")
    if not device_id:
        raise DiscoveryError(f"{props_path}: no device_id, and {pci_dir}/device is missing")
    simd_per_cu = props.get("simd_per_cu", 0)
    if simd_per_cu <= 0 or simd_count % simd_per_cu != 0:
        raise DiscoveryError(
            f"{props_path}: cannot derive compute units from simd_count {simd_count} and "
            f"simd_per_cu {simd_per_cu}; the topology file is corrupt"
        )
    compute_units = simd_count // simd_per_cu
    arrays, cus_per_array = props.get("array_count"), props.get("cu_per_simd_array")
    if arrays and cus_per_array and arrays * cus_per_array != compute_units:
        logger.warning(
            "%s: simd_count/simd_per_cu gives %d CUs but array_count*cu_per_simd_array gives %d;"
            " using %d",
            props_path,
            compute_units,
            arrays * cus_per_array,
            compute_units,
        )
    card, render = _drm_nodes(pci_dir, pci_bus_id)
    expected_minor = props.get("drm_render_minor")
    if expected_minor is not None and render != f"renderD{expected_minor}":
        logger.warning(
            "%s: drm_render_minor %d but %s/drm has %s; trusting the PCI tree",
            props_path,
            expected_minor,
            pci_dir,
            render,
        )
    return DcuDevice(
        index=-1,
        name=device_name_for(pci_bus_id),
        model=model_name(device_id),
        device_id=device_id,
        pci_bus_id=pci_bus_id,
        uuid=_card_uuid(root, pci_dir, pci_bus_id, kfd_unique_id=props.get("unique_id")),
        compute_units=compute_units,
        memory_bytes=_device_memory(node_dir, props_path),
        numa_node=_read_int_file(pci_dir / "numa_node", default=-1),
        card=card,
        render=render,
        max_vdevices=max_vdevices,
        kfd_node=int(node_dir.name),
        gpu_id=_read_int_file(node_dir / "gpu_id", default=0),
        simd_arrays=arrays
        if arrays and cus_per_array and arrays * cus_per_array == compute_units
        else 1,
        pcie_root=_pcie_root(root, pci_dir),
    )


def read_properties(path: Path) -> dict[str, int]:
    """Parse a KFD ``properties`` file: one ``key value`` pair per line, decimal values."""
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise DiscoveryError(f"cannot read {path}: {_reason(exc)}") from exc
    props: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not _is_decimal(parts[1]):
            raise DiscoveryError(
                f"{path}:{number}: expected '<key> <decimal value>', got {line.strip()!r}; "
                "the topology file is corrupt"
            )
        props[parts[0]] = int(parts[1])
    return props


def _pci_bus_id(props: dict[str, int], props_path: Path) -> str:
    """Build ``DDDD:BB:DD.F`` from ``domain`` and ``location_id`` (bus << 8 | devfn)."""
    location = props.get("location_id")
    if location is None:
        raise DiscoveryError(f"{props_path}: no location_id; cannot find the PCI device")
    domain = props.get("domain", 0)
    bus, devfn = (location >> 8) & 0xFF, location & 0xFF
    return f"{domain:04x}:{bus:02x}:{devfn >> 3:02x}.{devfn & 0x7:x}"


def _drm_nodes(pci_dir: Path, pci_bus_id: str) -> tuple[str, str]:
    """Return the ``cardN`` and ``renderDN`` names under the PCI device's ``drm`` dir."""
    drm = pci_dir / "drm"
    names = sorted(p.name for p in drm.iterdir()) if drm.is_dir() else []
    cards = [n for n in names if re.fullmatch(r"card\d+", n)]
    renders = [n for n in names if re.fullmatch(r"renderD\d+", n)]
    if not renders:
        raise DiscoveryError(
            f"DCU {pci_bus_id} has no DRM render node under {drm}; the hycu kernel driver did "
            "not finish probing this card (check dmesg), so it cannot be given to containers"
        )
    if not cards:
        raise DiscoveryError(f"DCU {pci_bus_id} has no DRM card node under {drm}")
    return cards[0], renders[0]


def _pcie_root(root: Path, pci_dir: Path) -> str | None:
    """Return ``pciDDDD:BB`` from ``/sys/bus/pci/devices/<bdf> -> ../../../devices/pci.../...``."""
    try:
        resolved = pci_dir.resolve(strict=True)
        relative = resolved.relative_to((root / "sys/devices").resolve())
    except (OSError, ValueError):
        return None
    first = relative.parts[0] if relative.parts else ""
    return first if re.fullmatch(r"pci[0-9a-f]{4}:[0-9a-f]{2}", first) else None


def _device_memory(node_dir: Path, props_path: Path) -> int:
    """Sum the frame-buffer memory banks of a KFD node."""
    banks = node_dir / "mem_banks"
    total = 0
    if banks.is_dir():
        for bank in _numbered_dirs(banks):
            props = read_properties(bank / "properties")
            if props.get("heap_type") in _DEVICE_MEMORY_HEAP_TYPES:
                total += props.get("size_in_bytes", 0)
    if total <= 0:
        raise DiscoveryError(f"{props_path}: the KFD node reports no device memory in {banks}")
    return total


def _card_uuid(root: Path, pci_dir: Path, pci_bus_id: str, *, kfd_unique_id: int | None) -> str:
    """Return ``DCU-<serial>``, from the first of these the node has.

    1. The PCI device's ``unique_id`` (or ``serial_number``) file, as it reads.
    2. The KFD topology node's ``unique_id`` property (decimal; 0 means unknown), as 16 hex
       digits: the form in which amdgpu's PCI ``unique_id`` file shows the same number.
    3. An id derived from ``/etc/machine-id`` and the bus id: stable for this slot on this
       machine, but the same on every machine without a machine id.
    """
    for name in ("unique_id", "serial_number"):
        value = _read_text_file(pci_dir / name)
        if value:
            return f"DCU-{value}"
    if kfd_unique_id is not None and kfd_unique_id > 0:
        return f"DCU-{kfd_unique_id:016x}"
    # No serial exposed: derive one that is stable for this card slot on this machine.
    machine = _read_text_file(root / "etc/machine-id") or "unknown-machine"
    return f"DCU-{uuid.uuid5(uuid.NAMESPACE_OID, f'{machine}/{pci_bus_id}')}"


def _check_device_nodes(inventory: Inventory) -> None:
    """Fail clearly when a DCU's device nodes are missing from devfs under the root."""
    if not inventory.devices:
        return
    if inventory.kfd is None:
        raise DiscoveryError(
            f"found {len(inventory.devices)} DCU(s) but {inventory.root / 'dev/kfd'} is missing; "
            "is /dev mounted into the plugin (and the hycu driver loaded)?"
        )
    for device in inventory.devices:
        for node in (device.card, device.render):
            path = inventory.dev_path(f"dri/{node}")
            if not _exists(path):
                raise DiscoveryError(
                    f"DCU {device.pci_bus_id} ({device.name}): {path} is missing; "
                    "is /dev/dri mounted into the plugin?"
                )


def _numbered_dirs(parent: Path) -> list[Path]:
    try:
        return [p for p in parent.iterdir() if p.name.isdigit() and p.is_dir()]
    except OSError as exc:
        raise DiscoveryError(f"cannot list {parent}: {_reason(exc)}") from exc


def _exists(path: Path) -> bool:
    """Whether a path exists (a device node, a file, anything but a dangling link)."""
    try:
        path.stat()
    except OSError:
        return False
    return True


def _read_text_file(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii").strip() or None
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise DiscoveryError(f"cannot read {path}: {_reason(exc)}") from exc


def _read_hex_file(path: Path) -> int | None:
    text = _read_text_file(path)
    if text is None:
        return None
    try:
        return int(text, 16)
    except ValueError as exc:
        raise DiscoveryError(f"{path}: expected a hex number like 0x1d94, got {text!r}") from exc


def _read_int_file(path: Path, *, default: int) -> int:
    text = _read_text_file(path)
    if text is None:
        return default
    try:
        return int(text)
    except ValueError as exc:
        raise DiscoveryError(f"{path}: expected a decimal number, got {text!r}") from exc


def _is_decimal(text: str) -> bool:
    return text.isdigit() or (text.startswith("-") and text[1:].isdigit())


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)
