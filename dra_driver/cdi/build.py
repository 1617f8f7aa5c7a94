"""The specs the driver writes, built from an Inventory: the node spec and per-claim specs.

Owns ``build_node_spec`` (the whole-device spec of a node, ``dcu-dra cdi generate``),
``ClaimDevice`` and ``build_claim_spec`` (one transient spec per prepared claim), and the
choices they make: device names, device-node permissions, the read-only hyhal and vdev
mounts.

Reads only: ``os.stat`` of each device node, so the runtime gets ``type``/``major``/``minor``.
Must not write files (``files`` does) nor validate (``validate`` does); imports the model and
``container_env``, never ``files`` or ``validate``. Never imports gRPC or the Kubernetes client.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from dra_driver.cdi import container_env
from dra_driver.cdi.model import (
    ContainerEdits,
    Device,
    DeviceNode,
    Mount,
    Spec,
    device_name_problem,
    split_kind,
)
from dra_driver.errors import CdiError
from dra_driver.node.devices import DcuDevice, Inventory

logger = logging.getLogger(__name__)

#: kind of the whole-device node spec; vendor ``hygon.com``, class ``dcu``.
NODE_KIND: Final = "hygon.com/dcu"
#: Name of the node-spec device that stands for every DCU on the node.
ALL_DEVICES_NAME: Final = "all"
#: cgroup access for our device nodes: read and write. No ``m`` (mknod): the runtime creates
#: the nodes itself and the container never needs to create another node with these numbers.
#: Leaving ``permissions`` out would mean ``rwm``.
DEVICE_PERMISSIONS: Final = "rw"
#: Mount options of the read-only hyhal bind mount (the DCU user-space runtime).
HYHAL_MOUNT_OPTIONS: Final = ("ro", "nosuid", "nodev", "bind")
#: Where the DCU runtime reads a container's vdev configs; each share's file is mounted on its
#: own (``vdev<N>.conf``, N node-wide), never the directory, so shares of several claims in one
#: container each keep their file.
VDEV_CONTAINER_DIR: Final = "/etc/vdev/docker"
#: Read-only: the files are the driver's record of the share; a tenant must not rewrite them.
VDEV_MOUNT_OPTIONS: Final = ("ro", "nosuid", "nodev", "noexec", "bind")


# --- the node spec -----------------------------------------------------------------------------


def build_node_spec(
    inventory: Inventory, *, host_root: Path | None = None, kind: str = NODE_KIND
) -> Spec:
    """Return the whole-device CDI spec for a node: one device per DCU index and uuid, + all.

    Device names: ``"0"``, ``"1"``, ... (the DCU index), the DCU's uuid (``DCU-<serial>``) and
    ``"all"``. Spec-level edits (applied with any device) carry ``/dev/kfd``, ``/dev/mkfd`` and
    a read-only ``/opt/hyhal`` bind mount when the inventory has them; each device adds its DRM
    card and render nodes and ``DCU_<card>_UUID=<uuid>`` (``container_env``).

    ``host_root`` is where the container runtime sees ``inventory.root`` (default: the same
    path; differs when the plugin sees a mock node at another path than containerd does).
    ``hostPath`` is written only when it differs from the container path, so a real node
    (root ``/``) needs no 0.5.0 feature for it.

    Pure apart from ``os.stat`` of each node under ``inventory.root``: a character or block
    device gets ``type``/``major``/``minor`` so the runtime needs no stat of its own; a plain
    file (a mock node made without root) gets none. Raises ``CdiError`` when the inventory
    has no DCU or a node is missing.
    """
    if not inventory.devices:
        raise CdiError(f"no DCUs under {inventory.root}: a node spec needs at least one device")
    split_kind(kind)
    runtime_root = inventory.root if host_root is None else host_root

    shared_nodes, shared_mounts = _shared_edits(inventory, runtime_root)

    nodes_by_index: dict[int, tuple[DeviceNode, ...]] = {}
    for dcu in inventory.devices:
        if not dcu.card or not dcu.render:
            raise CdiError(f"DCU {dcu.name} ({dcu.pci_bus_id}) has no DRM card or render node")
        nodes_by_index[dcu.index] = _dri_nodes(inventory, dcu, runtime_root)

    # Index names first, then uuid names, then "all": one block per naming scheme.
    devices: list[Device] = []
    used_names: set[str] = {ALL_DEVICES_NAME}
    for name_of in (_index_name, _uuid_name):
        for dcu in inventory.devices:
            name = name_of(dcu)
            if name in used_names or device_name_problem(name) is not None:
                logger.warning(
                    "DCU %s: CDI device name %r is invalid or taken; not in the node spec",
                    dcu.name,
                    name,
                )
                continue
            used_names.add(name)
            edits = ContainerEdits(
                env=(_uuid_env(dcu),),
                device_nodes=nodes_by_index[dcu.index],
            )
            devices.append(Device(name=name, container_edits=edits))
    devices.append(
        Device(
            name=ALL_DEVICES_NAME,
            container_edits=ContainerEdits(
                env=tuple(_uuid_env(d) for d in inventory.devices),
                device_nodes=tuple(n for d in inventory.devices for n in nodes_by_index[d.index]),
            ),
        )
    )
    return Spec(
        kind=kind,
        devices=tuple(devices),
        container_edits=ContainerEdits(
            device_nodes=tuple(shared_nodes), mounts=tuple(shared_mounts)
        ),
    )


def _shared_edits(inventory: Inventory, runtime_root: Path) -> tuple[list[DeviceNode], list[Mount]]:
    """Edits every DCU container needs: /dev/kfd, /dev/mkfd and /opt/hyhal (read-only)."""
    nodes: list[DeviceNode] = []
    for seen_at, path in ((inventory.kfd, "/dev/kfd"), (inventory.mkfd, "/dev/mkfd")):
        if seen_at is not None:
            nodes.append(
                _device_node(
                    seen_at=seen_at, container_path=path, host_path=_under(runtime_root, path)
                )
            )
    mounts: list[Mount] = []
    if inventory.hyhal is not None:
        mounts.append(
            Mount(
                host_path=_under(runtime_root, "/opt/hyhal"),
                container_path="/opt/hyhal",
                options=HYHAL_MOUNT_OPTIONS,
            )
        )
    return nodes, mounts


def _dri_nodes(inventory: Inventory, dcu: DcuDevice, runtime_root: Path) -> tuple[DeviceNode, ...]:
    return tuple(
        _device_node(
            seen_at=inventory.dev_path(f"dri/{drm}"),
            container_path=f"/dev/dri/{drm}",
            host_path=_under(runtime_root, f"/dev/dri/{drm}"),
        )
        for drm in (dcu.card, dcu.render)
    )


# --- per-claim specs ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimDevice:
    """One device of a per-claim spec: a whole DCU or a vDCU share of one."""

    name: str
    """CDI device name, ``<claimUID>-<device>[-<shareID>]``: never reused for other content."""
    dcu: DcuDevice
    env: tuple[str, ...] = ()
    vdev_file: Path | None = None
    """The share's ``vdev<N>.conf`` on the host; mounted read-only at the same name in
    ``/etc/vdev/docker``. None for a whole DCU."""


def build_claim_spec(
    inventory: Inventory,
    *,
    kind: str,
    devices: Sequence[ClaimDevice],
    host_root: Path | None = None,
) -> Spec:
    """Return the transient CDI spec of one prepared claim.

    Everything that belongs to one device is in that device's own edits: its card's DRM
    nodes, its ``env`` and, for a vDCU share, its vdev file mounted read-only at
    ``/etc/vdev/docker/vdev<N>.conf``. A container given some of the claim's devices (a
    container naming one request) gets exactly those. Spec-level edits hold only what every
    device needs: /dev/kfd, /dev/mkfd and /opt/hyhal read-only. Pure apart from ``os.stat``
    of the device nodes (see ``build_node_spec``).
    """
    if not devices:
        raise CdiError("a claim spec needs at least one device")
    runtime_root = inventory.root if host_root is None else host_root
    nodes, mounts = _shared_edits(inventory, runtime_root)
    return Spec(
        kind=kind,
        devices=tuple(
            Device(
                name=device.name,
                container_edits=ContainerEdits(
                    env=device.env,
                    device_nodes=_dri_nodes(inventory, device.dcu, runtime_root),
                    mounts=_vdev_mounts(device.vdev_file),
                ),
            )
            for device in devices
        ),
        container_edits=ContainerEdits(device_nodes=tuple(nodes), mounts=tuple(mounts)),
    )


def _vdev_mounts(vdev_file: Path | None) -> tuple[Mount, ...]:
    if vdev_file is None:
        return ()
    return (
        Mount(
            host_path=str(vdev_file),
            container_path=f"{VDEV_CONTAINER_DIR}/{vdev_file.name}",
            options=VDEV_MOUNT_OPTIONS,
        ),
    )


# --- shared by both ----------------------------------------------------------------------------


def _uuid_env(dcu: DcuDevice) -> str:
    (variable,) = container_env.card_variables(dcu.pci_bus_id, dcu.uuid)
    return variable


def _index_name(dcu: DcuDevice) -> str:
    return str(dcu.index)


def _uuid_name(dcu: DcuDevice) -> str:
    return dcu.uuid


def _under(root: Path, absolute: str) -> str:
    """Return ``absolute`` (``/dev/kfd``) placed under ``root``."""
    return str(root / absolute.lstrip("/"))


def _device_node(*, seen_at: Path, container_path: str, host_path: str) -> DeviceNode:
    try:
        info = os.stat(seen_at)
    except FileNotFoundError as exc:
        raise CdiError(
            f"device node {seen_at} is missing; the runtime would fail to create containers "
            "with it. Rediscover the node or create the mock device nodes"
        ) from exc
    except OSError as exc:
        raise CdiError(f"cannot stat device node {seen_at}: {exc.strerror}") from exc
    node_type: str | None = None
    if stat.S_ISCHR(info.st_mode):
        node_type = "c"
    elif stat.S_ISBLK(info.st_mode):
        node_type = "b"
    return DeviceNode(
        path=container_path,
        host_path=None if host_path == container_path else host_path,
        type=node_type,
        major=None if node_type is None else os.major(info.st_rdev),
        minor=None if node_type is None else os.minor(info.st_rdev),
        permissions=DEVICE_PERMISSIONS,
    )
