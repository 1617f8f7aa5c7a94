"""Write a mock DCU node under a root directory.

Owns the layout of the fake tree and nothing else. The tree is the one ``devices.discover``
reads on real hardware: KFD topology nodes (a CPU node first, then one per GPU), the PCI
devices with their ``drm/cardN`` and ``drm/renderDN``, ``/dev/kfd``, ``/dev/mkfd``,
``/dev/dri/*``, ``/opt/hyhal`` and an executable mock ``hy-smi``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import stat
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from dra_driver.errors import MockConfigError
from dra_driver.node.devices import HYGON_VENDOR_ID, MODEL_BY_DEVICE_ID

#: Marker file proving a directory holds a mock node, so re-creating it may delete the old tree.
MARKER = ".dcu-dra-mock"
#: The mock node's identity, written once: the cards' unique ids derive from it, so no two mock
#: nodes share a card id, while re-creating a node (the Helm chart's init container does on every
#: start) keeps its ids.
NODE_ID_FILE = ".dcu-dra-mock-id"
_NODE_ID = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._-]{0,127}$")

#: Majors of the mock's character devices, the one place their numbers are chosen. Linux
#: reserves char majors 120-127 for local and experimental use and never gives them to a driver
#: (Documentation/admin-guide/devices.txt). Not 240-254, also listed for local use: the kernel
#: hands out dynamic char majors from 254 down to 234, so a real host's bsg or watchdog may have
#: them. So opening a mock node reaches no host driver (ENXIO), and every node has numbers of its
#: own: a CDI edit that carries another card's numbers, or one pair for all, shows in the tests.
MOCK_KFD_MAJOR = 120
"""``/dev/kfd`` is 120:0 and ``/dev/mkfd`` 120:1."""
MOCK_DRM_MAJOR = 121
"""``/dev/dri/cardN`` and ``renderDN`` are 121:N: minors as DRM numbers them (renders from 128)."""
#: What the mock hycu module reports as its version (strict SemVer, like a release build).
MOCK_DRIVER_VERSION = "6.3.10"
#: SIMD units per CU on every current DCU (GCN-style compute units).
_SIMD_PER_CU = 4
_GIB = 1024**3

_PCI_BUS_ID = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")
_QUANTITY = re.compile(r"^(\d+)(Ki|Mi|Gi|Ti)?$")
_UNITS = {None: 1, "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "Ti": 1024**4}
_DEVICE_KEYS = frozenset(
    {"model", "deviceID", "computeUnits", "memory", "pciBusID", "numaNode", "serial", "vendorID"}
)


@dataclass(frozen=True, slots=True)
class MockDevice:
    """One accelerator of the mock node."""

    device_id: int
    compute_units: int
    memory_bytes: int
    pci_bus_id: str
    numa_node: int = 0
    serial: str | None = None
    """Written as the PCI device's ``unique_id``. When unset the PCI device has none, and the
    card's id is the KFD topology's ``unique_id``, which is unique per mock node."""
    vendor_id: int = HYGON_VENDOR_ID
    """Another vendor's id models a foreign GPU that discovery must ignore."""


@dataclass(frozen=True, slots=True)
class MockConfig:
    """The whole mock node."""

    devices: tuple[MockDevice, ...]


DEFAULT_CONFIG = MockConfig(
    devices=(
        # Two Z100-class cards as hy-smi reports them on hardware, one K100_AI on NUMA node 1.
        MockDevice(
            device_id=0x54B7,
            compute_units=60,
            memory_bytes=34342961152,
            pci_bus_id="0000:3b:00.0",
            numa_node=0,
        ),
        MockDevice(
            device_id=0x54B7,
            compute_units=60,
            memory_bytes=34342961152,
            pci_bus_id="0000:5e:00.0",
            numa_node=0,
        ),
        MockDevice(
            device_id=0x6210,
            compute_units=120,
            memory_bytes=64 * _GIB,
            pci_bus_id="0000:af:00.0",
            numa_node=1,
        ),
    )
)


def load_config(path: Path) -> MockConfig:
    """Read a mock node config (YAML); see ``parse_config`` for the format."""
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise MockConfigError(f"cannot read mock config {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise MockConfigError(f"mock config {path} is not valid YAML: {exc}") from exc
    return parse_config(document, source=str(path))


def parse_config(document: Any, *, source: str = "mock config") -> MockConfig:
    """Build a ``MockConfig`` from a parsed document.

    Format::

        devices:
        - model: K100_AI          # a model name from the device-id table, or
          deviceID: 0x6210        # a PCI device id (any id: unknown models are allowed)
          computeUnits: 120
          memory: 64Gi            # bytes, or a quantity with Ki/Mi/Gi/Ti
          pciBusID: "0000:af:00.0"
          numaNode: 1             # optional, default 0
          serial: "a1b2c3"        # optional
          vendorID: 0x10de        # optional: another vendor's GPU (ignored by discovery)

    Decoding is strict (unknown keys are errors) because people write this file.
    """
    if not isinstance(document, dict) or set(document) - {"devices"}:
        raise MockConfigError(f"{source}: expected a mapping with one key, 'devices'")
    items = document.get("devices")
    if not isinstance(items, list) or not items:
        raise MockConfigError(f"{source}: 'devices' must be a non-empty list")
    devices = tuple(_parse_device(item, f"{source}: devices[{i}]") for i, item in enumerate(items))
    bus_ids = [d.pci_bus_id for d in devices]
    duplicates = sorted({b for b in bus_ids if bus_ids.count(b) > 1})
    if duplicates:
        raise MockConfigError(f"{source}: duplicate pciBusID {', '.join(duplicates)}")
    return MockConfig(devices=devices)


def _parse_device(item: Any, where: str) -> MockDevice:
    if not isinstance(item, dict):
        raise MockConfigError(f"{where}: expected a mapping")
    unknown = sorted(set(item) - _DEVICE_KEYS)
    if unknown:
        raise MockConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)}; "
            f"allowed: {', '.join(sorted(_DEVICE_KEYS))}"
        )
    device_id = _device_id(item, where)
    compute_units = _positive_int(item.get("computeUnits"), f"{where}.computeUnits")
    memory = _quantity(item.get("memory"), f"{where}.memory")
    bus_id = item.get("pciBusID")
    if not isinstance(bus_id, str) or not _PCI_BUS_ID.match(bus_id.lower()):
        raise MockConfigError(f"{where}.pciBusID: expected 'DDDD:BB:DD.F' like 0000:3b:00.0")
    numa = item.get("numaNode", 0)
    if not isinstance(numa, int) or isinstance(numa, bool) or numa < -1:
        raise MockConfigError(f"{where}.numaNode: expected an integer >= -1")
    serial = item.get("serial")
    if serial is not None and (
        not isinstance(serial, str) or not re.fullmatch(r"[0-9A-Za-z]+", serial)
    ):
        raise MockConfigError(f"{where}.serial: expected letters and digits only")
    vendor = _hex_or_int(item.get("vendorID", HYGON_VENDOR_ID), f"{where}.vendorID")
    return MockDevice(
        device_id=device_id,
        compute_units=compute_units,
        memory_bytes=memory,
        pci_bus_id=bus_id.lower(),
        numa_node=numa,
        serial=serial,
        vendor_id=vendor,
    )


def _device_id(item: dict[str, Any], where: str) -> int:
    if "deviceID" in item:
        return _hex_or_int(item["deviceID"], f"{where}.deviceID")
    model = item.get("model")
    ids = [i for i, name in MODEL_BY_DEVICE_ID.items() if name == model]
    if not ids:
        known = ", ".join(sorted(set(MODEL_BY_DEVICE_ID.values())))
        raise MockConfigError(
            f"{where}: model {model!r} is not in the device-id table; give 'deviceID' "
            f"instead, or one of: {known}"
        )
    return ids[0]


def _hex_or_int(value: Any, where: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 0xFFFF:
        return value
    if isinstance(value, str):
        try:
            parsed = int(value, 16 if value.lower().startswith("0x") else 10)
        except ValueError:
            parsed = -1
        if 0 <= parsed <= 0xFFFF:
            return parsed
    raise MockConfigError(f"{where}: expected a 16-bit id like 0x6210, got {value!r}")


def _positive_int(value: Any, where: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    raise MockConfigError(f"{where}: expected a positive integer, got {value!r}")


def _quantity(value: Any, where: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str):
        match = _QUANTITY.match(value.strip())
        if match and int(match.group(1)) > 0:
            return int(match.group(1)) * _UNITS[match.group(2)]
    raise MockConfigError(f"{where}: expected bytes or a quantity like 64Gi, got {value!r}")


DeviceNodeKind = Literal["auto", "char", "file"]


def create_mock_node(
    root: Path,
    config: MockConfig = DEFAULT_CONFIG,
    *,
    device_nodes: DeviceNodeKind = "auto",
    node_id: str | None = None,
) -> None:
    """Write the mock node under ``root`` (created if missing).

    ``device_nodes``: ``char`` makes character devices with numbers of their own from the local
    and experimental range (``device_number``; needs root), ``file`` makes plain files, ``auto``
    picks ``char`` when running as root. An existing mock under ``root`` is replaced; any other
    non-empty directory is refused.

    ``node_id`` is the node's identity, from which the cards' KFD ``unique_id`` (and so their
    uuids) derive. None keeps the id of the mock already at ``root``, or picks a random one:
    mock nodes differ from each other unless given the same id (tests that compare ids do).
    """
    kind = device_nodes
    if kind == "auto":
        kind = "char" if os.geteuid() == 0 else "file"
    if node_id is not None and not _NODE_ID.match(node_id):
        raise MockConfigError(
            f"mock node id {node_id!r}: expected 1-128 letters, digits, '.', '_' or '-'"
        )
    _prepare_root(root)
    node_id = node_id or _existing_node_id(root) or secrets.token_hex(16)
    _write(root / NODE_ID_FILE, f"{node_id}\n")
    topology = root / "sys/class/kfd/kfd/topology"
    _write(topology / "generation_id", "1\n")
    _write_properties(topology / "nodes/0/properties", _cpu_node_properties())
    _write(topology / "nodes/0/gpu_id", "0\n")
    _write(topology / "nodes/0/name", "\n")
    for position, device in enumerate(config.devices):
        card_number = position + 1  # card0 is left to an onboard VGA, as on most servers
        render_minor = 128 + card_number
        node_dir = topology / f"nodes/{position + 1}"
        _write_properties(
            node_dir / "properties",
            _gpu_node_properties(device, render_minor, unique_id=_unique_id(node_id, device)),
        )
        _write(node_dir / "gpu_id", f"{_gpu_id(device)}\n")
        _write(node_dir / "name", "gfx928\n" if device.vendor_id == HYGON_VENDOR_ID else "gpu\n")
        _write_properties(
            node_dir / "mem_banks/0/properties",
            {
                "heap_type": 1,
                "size_in_bytes": device.memory_bytes,
                "flags": 0,
                "width": 4096,
                "mem_clk_max": 1200,
            },
        )
        pci_dir = _pci_device_dir(root, device.pci_bus_id)
        _write(pci_dir / "vendor", f"0x{device.vendor_id:04x}\n")
        _write(pci_dir / "device", f"0x{device.device_id:04x}\n")
        _write(pci_dir / "class", "0x038000\n")
        _write(pci_dir / "numa_node", f"{device.numa_node}\n")
        if device.serial:
            _write(pci_dir / "unique_id", f"{device.serial}\n")
        (pci_dir / f"drm/card{card_number}").mkdir(parents=True, exist_ok=True)
        (pci_dir / f"drm/renderD{render_minor}").mkdir(parents=True, exist_ok=True)
        _device_node(root, f"dri/card{card_number}", kind)
        _device_node(root, f"dri/renderD{render_minor}", kind)
    _device_node(root, "kfd", kind)
    _device_node(root, "mkfd", kind)
    _write(root / "sys/module/hycu/version", f"{MOCK_DRIVER_VERSION}\n")
    _write_hyhal(root, config)
    _write(root / MARKER, "mock DCU node written by 'dcu-dra mock create'\n")


def _prepare_root(root: Path) -> None:
    if root.exists() and not root.is_dir():
        raise MockConfigError(f"{root} exists and is not a directory")
    if root.is_dir() and any(root.iterdir()):
        if not (root / MARKER).is_file():
            raise MockConfigError(
                f"{root} is not empty and holds no mock node; choose an empty or new directory"
            )
        for part in ("sys", "dev", "opt/hyhal"):
            target = root / part
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
    root.mkdir(parents=True, exist_ok=True, mode=0o755)


def _existing_node_id(root: Path) -> str | None:
    """The id an earlier mock at ``root`` wrote, if it is one ``create_mock_node`` accepts."""
    try:
        text = (root / NODE_ID_FILE).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text if _NODE_ID.match(text) else None


def _pci_device_dir(root: Path, bus_id: str) -> Path:
    """Create the device under a root port as the kernel does, and its /sys/bus/pci link.

    ``sys/devices/pci0000:3a/0000:3a:00.0/0000:3b:00.0`` with
    ``sys/bus/pci/devices/0000:3b:00.0 -> ../../../devices/pci0000:3a/...``: discovery derives
    the PCIe root from where the link points.
    """
    domain, bus, _ = _split_bus_id(bus_id)
    root_bus = max(bus - 1, 0)
    root_complex = f"pci{domain:04x}:{root_bus:02x}"
    port = f"{domain:04x}:{root_bus:02x}:00.0"
    device_dir = root / "sys/devices" / root_complex / port / bus_id
    device_dir.mkdir(parents=True, exist_ok=True, mode=0o755)
    link = root / "sys/bus/pci/devices" / bus_id
    link.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(Path("../../../devices") / root_complex / port / bus_id)
    return link


def _cpu_node_properties() -> dict[str, int]:
    return {
        "cpu_cores_count": 32,
        "simd_count": 0,
        "mem_banks_count": 1,
        "vendor_id": 0,
        "device_id": 0,
        "location_id": 0,
        "domain": 0,
        "drm_render_minor": 0,
    }


def _gpu_node_properties(
    device: MockDevice, render_minor: int, *, unique_id: int
) -> dict[str, int]:
    domain, bus, dev_fn = _split_bus_id(device.pci_bus_id)
    # Spread the CUs over shader engines as the hardware does, when they divide evenly.
    arrays = 4 if device.compute_units % 4 == 0 else 1
    return {
        "cpu_cores_count": 0,
        "simd_count": device.compute_units * _SIMD_PER_CU,
        "mem_banks_count": 1,
        "gfx_target_version": 90208,
        "simd_per_cu": _SIMD_PER_CU,
        "array_count": arrays,
        "cu_per_simd_array": device.compute_units // arrays,
        "max_waves_per_simd": 10,
        "lds_size_in_kb": 64,
        "wave_front_size": 64,
        "vendor_id": device.vendor_id,
        "device_id": device.device_id,
        "location_id": (bus << 8) | dev_fn,
        "domain": domain,
        "drm_render_minor": render_minor,
        "local_mem_size": 0,
        "unique_id": unique_id,
    }


def _split_bus_id(bus_id: str) -> tuple[int, int, int]:
    domain, bus, rest = bus_id.split(":")
    dev, fn = rest.split(".")
    return int(domain, 16), int(bus, 16), (int(dev, 16) << 3) | int(fn)


def _gpu_id(device: MockDevice) -> int:
    digest = hashlib.sha256(device.pci_bus_id.encode()).digest()
    return int.from_bytes(digest[:2], "big") or 1


def _unique_id(node_id: str, device: MockDevice) -> int:
    """The card's KFD ``unique_id`` (a u64, 0 meaning unknown): unique per node and slot."""
    digest = hashlib.sha256(f"mock-dcu/{node_id}/{device.pci_bus_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") or 1


def device_number(name: str) -> int:
    """The device number the mock gives ``/dev/<name>`` (``kfd``, ``mkfd``, ``dri/card1``...)."""
    if name in ("kfd", "mkfd"):
        return os.makedev(MOCK_KFD_MAJOR, 0 if name == "kfd" else 1)
    match = re.fullmatch(r"dri/(?:card|renderD)(\d+)", name)
    if match is None:
        raise ValueError(f"the mock node has no device /dev/{name}")
    return os.makedev(MOCK_DRM_MAJOR, int(match.group(1)))


def _write_hyhal(root: Path, config: MockConfig) -> None:
    """Install the mock hy-smi with the node's devices baked in."""
    hygon = [d for d in config.devices if d.vendor_id == HYGON_VENDOR_ID]
    devices = [
        {
            "index": index,
            "pciBusId": d.pci_bus_id,
            "computeUnits": d.compute_units,
            "memoryBytes": d.memory_bytes,
        }
        for index, d in enumerate(sorted(hygon, key=lambda d: d.pci_bus_id))
    ]
    template = resources.files("dra_driver.node.mock").joinpath("hy_smi_template.py").read_text()
    placeholder = 'MOCK_DEVICES: list[dict[str, Any]] = json.loads("[]")'
    if placeholder not in template:
        raise AssertionError("hy_smi_template.py lost its MOCK_DEVICES placeholder")
    script = template.replace(
        placeholder, f"MOCK_DEVICES: list[dict[str, Any]] = json.loads({json.dumps(devices)!r})"
    )
    hy_smi = root / "opt/hyhal/bin/hy-smi"
    _write(hy_smi, script, mode=0o755)
    _write(root / "opt/hyhal/env.sh", 'export PATH="/opt/hyhal/bin:$PATH"\n')


def _write_properties(path: Path, props: dict[str, int]) -> None:
    _write(path, "".join(f"{key} {value}\n" for key, value in props.items()))


def _write(path: Path, text: str, *, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    path.write_text(text, encoding="ascii")
    path.chmod(mode)


def _device_node(root: Path, name: str, kind: str) -> None:
    path = root / "dev" / name
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    if path.exists() or path.is_symlink():
        path.unlink()
    if kind == "char":
        os.mknod(path, 0o666 | stat.S_IFCHR, device_number(name))
        path.chmod(0o666)  # as /dev/kfd on a real node; umask must not narrow it
    else:
        path.write_bytes(b"")
        path.chmod(0o666)
