"""Fault injection on a mock DCU node: make a DCU look lost, and bring it back exactly.

Owns the fault record and the stash under ``<root>/.dcu-dra-mock-faults``; changes nothing in
the tree but what it records. A ``lost`` DCU looks the way a card that fell off the bus looks
to ``health.observe``:

- its DRM nodes (``/dev/dri/cardN``, ``renderDN``) are gone;
- its KFD topology node is gone (amdgpu removes it on unplug; unconfirmed for hycu);
- its PCI config space reads all ones (``<bdf>/config`` is written with ``0xff`` bytes), which
  is what a device that no longer answers returns.

Its PCI directory stays, so device numbers (``--device N``, PCI order of the Hygon devices,
as ``dcu-dra devices`` numbers them) do not shift while a DCU is lost. Removed entries are
moved into the stash, never re-created, so character devices come back as they were and
``recover`` needs no privileges. The record is written before anything moves: an interrupted
``lost`` is still undone by ``recover``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TextIO

from dra_driver.errors import DiscoveryError, DriverError
from dra_driver.node.devices import HYGON_VENDOR_ID, device_name_for, read_properties
from dra_driver.node.mock.layout import MARKER
from dra_driver.util.fsutil import write_atomically

#: Where lost entries wait for ``recover``: outside ``sys`` and ``dev`` so discovery never sees
#: them, hidden so a listing of the root stays clean.
STASH_DIR = ".dcu-dra-mock-faults"
RECORD_NAME = "fault.json"
#: Size of the config space header a dead device reads as all ones (the part anyone may read).
_CONFIG_HEADER_BYTES = 64

FaultKind = Literal["lost", "recover"]
FAULT_KINDS: tuple[FaultKind, ...] = ("lost", "recover")


class MockFaultError(DriverError):
    """A fault cannot be injected or undone on this tree."""


@dataclass(frozen=True, slots=True)
class FaultTarget:
    """The DCU a fault is aimed at."""

    index: int
    pci_bus_id: str

    def __str__(self) -> str:
        return f"device {self.index} ({device_name_for(self.pci_bus_id)}, {self.pci_bus_id})"


def find_target(root: Path, index: int) -> FaultTarget:
    """The ``index``-th Hygon PCI device of the mock node at ``root``, in PCI order."""
    if not (root / MARKER).is_file():
        raise MockFaultError(
            f"{root} holds no mock DCU node (no {MARKER}); faults are injected only into trees "
            "made by 'dcu-dra mock create'"
        )
    pci_root = root / "sys/bus/pci/devices"
    bus_ids = sorted(
        entry.name
        for entry in (pci_root.iterdir() if pci_root.is_dir() else ())
        if _read_vendor(entry / "vendor") == HYGON_VENDOR_ID
    )
    if not 0 <= index < len(bus_ids):
        have = f"0-{len(bus_ids) - 1}" if bus_ids else "none"
        raise MockFaultError(
            f"no device {index} on the mock node at {root}: it has {len(bus_ids)} DCU(s) "
            f"(indexes {have})"
        )
    return FaultTarget(index=index, pci_bus_id=bus_ids[index])


def inject_fault(root: Path, *, device: int, kind: FaultKind) -> str:
    """Apply ``kind`` to DCU number ``device`` of the mock node at ``root``; return a summary.

    Idempotent: losing a lost DCU or recovering a healthy one changes nothing and says so.
    """
    target = find_target(root, device)
    if kind == "lost":
        return _lose(root, target)
    if kind == "recover":
        return _recover(root, target)
    raise MockFaultError(f"unknown fault kind {kind!r}; use one of {', '.join(FAULT_KINDS)}")


def fault_command(*, root: Path, device: int, kind: FaultKind, out: TextIO) -> int:
    """``dcu-dra mock fault``: inject the fault and print what changed."""
    out.write(inject_fault(root, device=device, kind=kind) + "\n")
    return 0


# --- lost ----------------------------------------------------------------------------------------


def _lose(root: Path, target: FaultTarget) -> str:
    stash = _stash(root, target)
    record = _load_record(stash)
    if record is not None and not _is_stale(root, record):
        return f"{target} is already lost; nothing changed"
    if record is not None:
        shutil.rmtree(stash)  # left from a tree that was re-created since
    pci_dir = root / "sys/bus/pci/devices" / target.pci_bus_id
    moves: list[tuple[str, str]] = []
    drm = pci_dir / "drm"
    for name in sorted(p.name for p in drm.iterdir()) if drm.is_dir() else ():
        node = Path("dev/dri") / name
        if _exists(root / node):
            moves.append((node.as_posix(), f"dri/{name}"))
    topology_node = _topology_node(root, target.pci_bus_id)
    if topology_node is not None:
        moves.append((topology_node.as_posix(), f"topology/{topology_node.name}"))
    config = (pci_dir / "config").relative_to(root)
    if _exists(root / config):
        moves.append((config.as_posix(), "config"))
    stash.mkdir(parents=True, exist_ok=True)
    # Written first: whatever happens below, recover knows what to put back.
    record = {"pciBusID": target.pci_bus_id, "moved": moves, "created": [config.as_posix()]}
    write_atomically(stash / RECORD_NAME, json.dumps(record, indent=2).encode() + b"\n")
    for original, stashed in moves:
        (stash / stashed).parent.mkdir(parents=True, exist_ok=True)
        os.replace(root / original, stash / stashed)
    (root / config).write_bytes(b"\xff" * _CONFIG_HEADER_BYTES)
    gone = [f"/{original}" for original, _ in moves if original.startswith("dev/")]
    parts = [f"removed {', '.join(gone)}"] if gone else []
    if topology_node is not None:
        parts.append(f"removed KFD topology node {topology_node.name}")
    parts.append("its config space reads all ones")
    return f"{target} is now lost: {'; '.join(parts)}"


def _topology_node(root: Path, pci_bus_id: str) -> Path | None:
    """The KFD topology node (relative to ``root``) at ``pci_bus_id``, if one is listed."""
    nodes = root / "sys/class/kfd/kfd/topology/nodes"
    for node_dir in sorted(nodes.iterdir()) if nodes.is_dir() else ():
        try:
            props = read_properties(node_dir / "properties")
        except DiscoveryError:
            continue
        if props.get("simd_count", 0) == 0 or "location_id" not in props:
            continue
        location, domain = props["location_id"], props.get("domain", 0)
        bus, devfn = (location >> 8) & 0xFF, location & 0xFF
        if f"{domain:04x}:{bus:02x}:{devfn >> 3:02x}.{devfn & 0x7:x}" == pci_bus_id:
            return node_dir.relative_to(root)
    return None


# --- recover -------------------------------------------------------------------------------------


def _recover(root: Path, target: FaultTarget) -> str:
    stash = _stash(root, target)
    record = _load_record(stash)
    if record is None:
        return f"{target} is not lost; nothing changed"
    for created in record["created"]:
        with contextlib.suppress(FileNotFoundError):
            (root / created).unlink()
    restored: list[str] = []
    for original, stashed in record["moved"]:
        source, destination = stash / stashed, root / original
        if not _exists(source) or _exists(destination):
            continue  # never moved (interrupted lost), or the tree was re-created since
        destination.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, destination)
        restored.append(f"/{original}")
    shutil.rmtree(stash)
    if not restored:
        return f"{target} recovered (nothing was left to restore)"
    return f"{target} recovered: restored {', '.join(restored)}"


# --- the record ----------------------------------------------------------------------------------


def _stash(root: Path, target: FaultTarget) -> Path:
    return root / STASH_DIR / device_name_for(target.pci_bus_id)


def _load_record(stash: Path) -> dict[str, Any] | None:
    path = stash / RECORD_NAME
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise MockFaultError(
            f"cannot read the fault record {path}: {exc}; remove {stash} and re-create the mock"
        ) from exc
    if not isinstance(record, dict) or not {"moved", "created"} <= set(record):
        raise MockFaultError(f"{path} is not a fault record; remove {stash}")
    return record


def _is_stale(root: Path, record: dict[str, Any]) -> bool:
    """Whether the tree was re-created after the fault: everything moved away is back."""
    moved = record["moved"]
    return bool(moved) and all(_exists(root / original) for original, _ in moved)


def _read_vendor(path: Path) -> int | None:
    try:
        return int(path.read_text(encoding="ascii").strip(), 16)
    except (OSError, ValueError):
        return None


def _exists(path: Path) -> bool:
    """Whether anything is at ``path`` (a dangling link counts: it is an entry to move)."""
    return path.is_symlink() or path.exists()
