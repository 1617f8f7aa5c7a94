"""The checks of the device nodes a DCU container needs, for vDCU and whole-card containers.

Every DCU container needs ``/dev/kfd`` and ``/dev/mkfd``. A vDCU container needs a render node
of each card its vdev files name (mapped through sysfs, counted without it); a whole-card
container (no vdev file) needs at least one DCU render node, and another vendor's card does
not count. A node must be a character device (or, with ``allow_plain_files``, a regular file
as on a mock node made without root).
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Sequence
from pathlib import Path

from dra_driver.node.devices import HYGON_VENDOR_ID
from dra_driver.tools.verify.report import Check, CheckKind, DeviceNode, NodeType, Status
from dra_driver.tools.verify.sysfs import Sysfs, list_names, natural_key

_RENDER = re.compile(r"renderD([0-9]+)")
_CARD = re.compile(r"card([0-9]+)")

_INJECT_HINT = (
    "the claim's CDI spec injects it: check that the container lists the claim under "
    "resources.claims and that the container runtime has CDI enabled"
)
_PLAIN_FILE_HINT = (
    "a mock node made without root has plain files here; pass --allow-plain-files to accept them"
)


def _node_type(path: Path) -> NodeType:
    try:
        mode = os.stat(path).st_mode  # follows links: /dev/dri/by-path/* are links
    except OSError:
        return NodeType.MISSING
    if stat.S_ISCHR(mode):
        return NodeType.CHAR
    if stat.S_ISBLK(mode):
        return NodeType.BLOCK
    if stat.S_ISREG(mode):
        return NodeType.FILE
    if stat.S_ISDIR(mode):
        return NodeType.DIRECTORY
    return NodeType.OTHER


def _usable(node_type: NodeType, allow_plain_files: bool) -> bool:
    return node_type is NodeType.CHAR or (allow_plain_files and node_type is NodeType.FILE)


_TYPE_TEXT = {
    NodeType.BLOCK: "a block device",
    NodeType.FILE: "a regular file",
    NodeType.DIRECTORY: "a directory",
    NodeType.OTHER: "neither a device nor a file",
}


def _type_problem(node: DeviceNode, allow_plain_files: bool) -> str | None:
    """Why an existing ``node`` cannot serve as a device node, or None when it can."""
    if _usable(node.type, allow_plain_files) or node.type is NodeType.MISSING:
        return None
    hint = _PLAIN_FILE_HINT if node.type is NodeType.FILE else _INJECT_HINT
    return f"{node.path} is {_TYPE_TEXT[node.type]}, not a character device; {hint}"


def _shared_nodes(
    dev_dir: Path, checks: list[Check], allow_plain_files: bool, *, purpose: str
) -> list[DeviceNode]:
    """Check ``/dev/kfd`` and ``/dev/mkfd``, which every DCU container needs (§5)."""
    nodes = []
    for name, role in (("kfd", "the compute interface"), ("mkfd", "Hygon-specific")):
        node = DeviceNode(dev_dir / name, _node_type(dev_dir / name))
        nodes.append(node)
        if node.type is NodeType.MISSING:
            checks.append(
                Check(
                    CheckKind.DEVICE_NODE,
                    Status.FAIL,
                    f"{node.path} ({role}) is missing: {purpose}; {_INJECT_HINT}",
                )
            )
        elif (problem := _type_problem(node, allow_plain_files)) is not None:
            checks.append(Check(CheckKind.DEVICE_NODE, Status.FAIL, problem))
        else:
            checks.append(Check(CheckKind.DEVICE_NODE, Status.OK, _present(node)))
    return nodes


def _present(node: DeviceNode) -> str:
    kind = "character device" if node.type is NodeType.CHAR else "plain file, allowed"
    owner = f" of {node.pci_bus_id}" if node.pci_bus_id else ""
    return f"{node.path}{owner} present ({kind})"


def _dri_nodes(dev_dir: Path, sysfs: Sysfs) -> list[DeviceNode]:
    """The container's ``/dev/dri/card*`` and ``renderD*``, with their card when sysfs knows."""
    dri = dev_dir / "dri"
    names = [n for n in list_names(dri) if _CARD.fullmatch(n) or _RENDER.fullmatch(n)]
    return [
        DeviceNode(dri / name, _node_type(dri / name), sysfs.owner_of(name))
        for name in sorted(names, key=natural_key)
    ]


def check_vdcu_nodes(
    buses: Sequence[str],
    dev_dir: Path,
    sysfs: Sysfs,
    checks: list[Check],
    allow_plain_files: bool,
) -> list[DeviceNode]:
    """``/dev/kfd``, ``/dev/mkfd`` and a render node for every card a vdev file names.

    A card's render nodes come from ``/sys/bus/pci/devices/<bus>/drm/`` (never from sorting
    ``/dev/dri``, which picks the wrong card when other GPUs are present); without that, the
    usable render nodes in ``/dev/dri`` are counted against the number of cards.
    """
    nodes = _shared_nodes(
        dev_dir, checks, allow_plain_files, purpose="the DCU runtime cannot reach the card"
    )
    dri = _dri_nodes(dev_dir, sysfs)
    nodes.extend(dri)
    unmapped: list[str] = []
    for bus in buses:
        renders = [n for n in sysfs.drm_nodes.get(bus, ()) if _RENDER.fullmatch(n)]
        if not renders:
            unmapped.append(bus)
            continue
        found = [n for n in dri if n.path.name in renders]
        usable = [n for n in found if _usable(n.type, allow_plain_files)]
        if usable:
            checks.append(Check(CheckKind.DEVICE_NODE, Status.OK, _present(usable[0])))
        elif found and (problem := _type_problem(found[0], allow_plain_files)) is not None:
            checks.append(Check(CheckKind.DEVICE_NODE, Status.FAIL, problem))
        else:
            checks.append(
                Check(
                    CheckKind.DEVICE_NODE,
                    Status.FAIL,
                    f"no render node of {bus} in {dev_dir / 'dri'} (sysfs names "
                    f"{', '.join(renders)}): the container cannot use this card; {_INJECT_HINT}",
                )
            )
    if unmapped:
        mapped = {n for bus in buses for n in sysfs.drm_nodes.get(bus, ())}
        spare = [
            n
            for n in dri
            if _RENDER.fullmatch(n.path.name)
            and n.path.name not in mapped
            and _usable(n.type, allow_plain_files)
        ]
        why = (
            sysfs.note or "no sysfs"
            if not sysfs.available
            else "sysfs has no drm/ render node for " + ("it" if len(unmapped) == 1 else "them")
        )
        cards = f"{len(unmapped)} card(s) ({', '.join(unmapped)})"
        if len(spare) >= len(unmapped):
            checks.append(
                Check(
                    CheckKind.DEVICE_NODE,
                    Status.OK,
                    f"{cards} and {len(spare)} render node(s) in {dev_dir / 'dri'} (counted, "
                    f"not mapped: {why})",
                )
            )
        else:
            checks.append(
                Check(
                    CheckKind.DEVICE_NODE,
                    Status.FAIL,
                    f"vdev files name {cards} but {dev_dir / 'dri'} has {len(spare)} usable "
                    f"render node(s) (counted, not mapped: {why}); {_INJECT_HINT}",
                )
            )
    return nodes


def check_whole_card_nodes(
    vdev_dir: Path,
    dev_dir: Path,
    sysfs: Sysfs,
    checks: list[Check],
    allow_plain_files: bool,
) -> tuple[list[DeviceNode], list[str]]:
    """No vdev file: the container holds whole DCUs; check their nodes, fail if there are none.

    Returns the device nodes and the PCI bus ids of the DCUs found (when sysfs maps them).
    """
    dri = _dri_nodes(dev_dir, sysfs)
    renders = [n for n in dri if _RENDER.fullmatch(n.path.name)]
    shared = [dev_dir / "kfd", dev_dir / "mkfd"]
    if not renders and all(_node_type(path) is NodeType.MISSING for path in shared):
        checks.append(
            Check(
                CheckKind.DCU_PRESENT,
                Status.FAIL,
                f"no DCU in this container: no vdev files in {vdev_dir} and none of "
                f"{shared[0]}, {shared[1]}, {dev_dir / 'dri'}/renderD* exist; ask for a DCU "
                "with a ResourceClaim (device class dcu.hygon.com for a whole DCU, "
                "vdcu.dcu.hygon.com for a share) and list it under the container's "
                "resources.claims",
            )
        )
        return [DeviceNode(path, NodeType.MISSING) for path in shared], []
    nodes = _shared_nodes(dev_dir, checks, allow_plain_files, purpose="a DCU container needs it")
    nodes.extend(dri)
    # A render node sysfs maps to another vendor's device is not a DCU; an unmapped one may be.
    dcus = [
        n
        for n in renders
        if n.pci_bus_id is None
        or sysfs.vendor.get(n.pci_bus_id, HYGON_VENDOR_ID) == HYGON_VENDOR_ID
    ]
    for node in dcus:
        problem = _type_problem(node, allow_plain_files)
        if problem is not None:
            checks.append(Check(CheckKind.DEVICE_NODE, Status.FAIL, problem))
    usable = [n for n in dcus if _usable(n.type, allow_plain_files)]
    if not dcus:
        foreign = ", ".join(
            f"{n.path.name} ({n.pci_bus_id}, vendor 0x{sysfs.vendor[n.pci_bus_id or '']:04x})"
            for n in renders
        )
        detail = (
            f"its render nodes belong to other vendors' devices: {foreign}"
            if renders
            else (f"{dev_dir / 'dri'} has no render node")
        )
        checks.append(
            Check(
                CheckKind.DCU_PRESENT,
                Status.FAIL,
                f"no DCU in this container: no vdev files in {vdev_dir}, and {detail}; "
                "the claim's CDI spec injects the card's /dev/dri nodes: check that the "
                "container lists the claim under resources.claims",
            )
        )
    elif usable:
        described = ", ".join(
            f"{n.path.name} ({n.pci_bus_id})" if n.pci_bus_id else f"{n.path.name} (card unknown)"
            for n in usable
        )
        checks.append(
            Check(
                CheckKind.DCU_PRESENT,
                Status.OK,
                f"whole-card container (no vdev files in {vdev_dir}): {len(usable)} DCU render "
                f"node(s): {described}",
            )
        )
    buses = sorted({n.pci_bus_id for n in dcus if n.pci_bus_id is not None})
    return nodes, buses


def renders_present(nodes: Sequence[DeviceNode]) -> list[DeviceNode]:
    """The render nodes among ``nodes`` that exist."""
    return [n for n in nodes if _RENDER.fullmatch(n.path.name) and n.type is not NodeType.MISSING]


def dcus_present(nodes: Sequence[DeviceNode], sysfs: Sysfs) -> set[str]:
    """PCI bus ids of the DCUs whose render nodes the container has, as sysfs maps them."""
    return {
        n.pci_bus_id
        for n in renders_present(nodes)
        if n.pci_bus_id is not None
        and sysfs.vendor.get(n.pci_bus_id, HYGON_VENDOR_ID) == HYGON_VENDOR_ID
    }
