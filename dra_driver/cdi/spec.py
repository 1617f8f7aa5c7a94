"""CDI specs: the model, the version rules, the renderer and the atomic writer.

Owns the shape of every CDI spec the driver writes and the names in it: frozen dataclasses
mirroring ``specs-go/config.go``, the ``kind`` and device-name grammar of the Go parser, the
minimum ``cdiVersion`` a spec needs, deterministic JSON rendering and the file writer.
The model, grammar, version and rendering functions are pure. ``build_node_spec`` only stats
device nodes; ``write_spec`` and ``remove_spec`` are the only functions that change files.
Never imports gRPC or the Kubernetes client. The strict rules a spec must pass before it is
written live in ``cdi_validate``.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Final

from dra_driver.cdi import container_env
from dra_driver.errors import CdiError
from dra_driver.node.devices import DcuDevice, Inventory
from dra_driver.util.fsutil import (
    PUBLIC_DIR_MODE,
    PUBLIC_FILE_MODE,
    StagedFile,
    commit_staged,
    discard_staged,
    ensure_directory,
    fsync_directory,
    stage_file,
    sync_staged,
)

logger = logging.getLogger(__name__)

#: Every spec version the Go library knows, oldest first. 0.1.0/0.2.0 predate the first
#: tagged spec and are left out; we never write them and flag them when validating.
CDI_VERSIONS: Final = ("0.3.0", "0.4.0", "0.5.0", "0.6.0", "0.7.0", "0.8.0", "1.0.0", "1.1.0")
#: The version a spec using no versioned feature needs (the earliest the Go library accepts).
BASE_VERSION: Final = CDI_VERSIONS[0]
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

_LETTERS: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_DIGITS: Final = frozenset("0123456789")
_ALNUM: Final = _LETTERS | _DIGITS
#: Characters allowed inside (not first or last) a vendor or class name.
_KIND_PART_INNER: Final = _ALNUM | frozenset("_-.")
#: Characters allowed inside (not first or last) a device name.
_DEVICE_NAME_INNER: Final = _ALNUM | frozenset("_-.:")


def _frozen_annotations(annotations: Mapping[str, str]) -> Mapping[str, str]:
    """Return a read-only copy of ``annotations``, keys sorted so rendering is stable."""
    return MappingProxyType(dict(sorted(annotations.items())))


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceNode:
    """A device node the runtime creates in the container (``deviceNodes[]``)."""

    path: str
    """Path inside the container, e.g. ``/dev/kfd``."""
    host_path: str | None = None
    """Path on the host when it differs from ``path`` (needs cdiVersion 0.5.0)."""
    type: str | None = None
    """``c``, ``b``, ``u`` or ``p``; when missing the runtime stats the host path."""
    major: int | None = None
    minor: int | None = None
    file_mode: int | None = None
    """Mode bits of the node in the container."""
    permissions: str | None = None
    """cgroup access, a subset of ``rwm``; missing means ``rwm``."""
    uid: int | None = None
    gid: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Mount:
    """A mount added to the container (``mounts[]``)."""

    host_path: str
    container_path: str
    options: tuple[str, ...] = ()
    type: str | None = None
    """Filesystem type (needs cdiVersion 0.4.0); a bind mount needs none."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Hook:
    """An OCI hook (``hooks[]``)."""

    hook_name: str
    """One of ``prestart``, ``createRuntime``, ``createContainer``, ``startContainer``,
    ``poststart``, ``poststop``."""
    path: str
    """Absolute path of the executable."""
    args: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    timeout: int | None = None
    """Seconds; must be > 0 when set."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ContainerEdits:
    """Changes the runtime makes to the container's OCI spec (``containerEdits``)."""

    env: tuple[str, ...] = ()
    """``NAME=VALUE`` entries."""
    device_nodes: tuple[DeviceNode, ...] = ()
    mounts: tuple[Mount, ...] = ()
    hooks: tuple[Hook, ...] = ()
    additional_gids: tuple[int, ...] = ()
    """Extra groups of the container process (needs cdiVersion 0.7.0)."""

    @property
    def is_empty(self) -> bool:
        """Whether these edits change nothing (invalid for a device, fine for a spec)."""
        return not (
            self.env or self.device_nodes or self.mounts or self.hooks or self.additional_gids
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Device:
    """One named CDI device (``devices[]``); ``kind=name`` is its fully qualified id."""

    name: str
    container_edits: ContainerEdits
    # Left out of the hash (a mapping has none); still compared by ==.
    annotations: Mapping[str, str] = field(default_factory=dict, hash=False)
    """CDI-only metadata (needs cdiVersion 0.6.0); never reaches the container."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "annotations", _frozen_annotations(self.annotations))


@dataclass(frozen=True, slots=True, kw_only=True)
class Spec:
    """A whole CDI spec file; ``cdiVersion`` is derived, never stored."""

    kind: str
    """``<vendor>/<class>``."""
    devices: tuple[Device, ...]
    container_edits: ContainerEdits = ContainerEdits()
    """Applied whenever any device of this spec is injected."""
    annotations: Mapping[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "annotations", _frozen_annotations(self.annotations))


# --- names -------------------------------------------------------------------------------------


def kind_problem(kind: str) -> str | None:
    """Return why ``kind`` is not a valid ``<vendor>/<class>``, or None when it is.

    Follows ``pkg/parser`` of the Go library: vendor and class each start with a letter, end
    with a letter or digit, and contain only letters, digits, ``_``, ``-`` and ``.``.
    """
    vendor, slash, class_ = kind.partition("/")
    if not slash or not vendor or not class_:
        return f"kind {kind!r} must have the form <vendor>/<class>"
    for part, value in (("vendor", vendor), ("class", class_)):
        problem = _kind_part_problem(value)
        if problem is not None:
            return f"kind {kind!r}: {part} {value!r} {problem}"
    return None


def _kind_part_problem(value: str) -> str | None:
    # The Go parser slices name[1:len(name)-1] without a length check, so a one-character
    # vendor or class makes it panic: require two characters.
    if len(value) < 2:
        return "must be at least two characters long"
    if value[0] not in _LETTERS:
        return "must start with a letter"
    if value[-1] not in _ALNUM:
        return "must end with a letter or digit"
    for char in value[1:-1]:
        if char not in _KIND_PART_INNER:
            return f"contains {char!r}; only letters, digits, '_', '-' and '.' are allowed"
    return None


def device_name_problem(name: str) -> str | None:
    """Return why ``name`` is not a valid CDI device name, or None when it is.

    Follows ``parser.ValidateDeviceName``: starts and ends with a letter or digit; inside,
    letters, digits, ``_``, ``-``, ``.`` and ``:``. A leading digit needs cdiVersion 0.5.0.
    """
    if not name:
        return "device name is empty"
    if name[0] not in _ALNUM:
        return f"device name {name!r} must start with a letter or digit"
    if name[-1] not in _ALNUM:
        return f"device name {name!r} must end with a letter or digit"
    for char in name[1:-1]:
        if char not in _DEVICE_NAME_INNER:
            return (
                f"device name {name!r} contains {char!r}; "
                "only letters, digits, '_', '-', '.' and ':' are allowed"
            )
    return None


def split_kind(kind: str) -> tuple[str, str]:
    """Return ``(vendor, class)`` of a valid kind; raises ``CdiError`` for an invalid one."""
    problem = kind_problem(kind)
    if problem is not None:
        raise CdiError(problem)
    vendor, _, class_ = kind.partition("/")
    return vendor, class_


def qualified_id(kind: str, device_name: str) -> str:
    """Return the fully qualified CDI device id ``<vendor>/<class>=<name>``.

    This exact string goes into ``cdi_device_ids`` of a Prepare response. Raises
    ``CdiError`` if the kind or the name breaks the grammar.
    """
    split_kind(kind)
    problem = device_name_problem(device_name)
    if problem is not None:
        raise CdiError(problem)
    return f"{kind}={device_name}"


def spec_file_name(kind: str, suffix: str | None = None) -> str:
    """Return the spec file name the Go library would choose for ``kind``.

    ``<vendor>-<class>.json`` (``GenerateSpecName``) or, for a transient spec such as one per
    claim, ``<vendor>-<class>_<suffix>.json`` with ``/`` in the suffix replaced by ``_``
    (``GenerateTransientSpecName``).
    """
    vendor, class_ = split_kind(kind)
    base = f"{vendor}-{class_}"
    if suffix is None:
        return f"{base}.json"
    if not suffix:
        raise CdiError(f"empty transient spec suffix for kind {kind!r}")
    return f"{base}_{suffix.replace('/', '_')}.json"


# --- versions ----------------------------------------------------------------------------------

JsonPath = tuple[str | int, ...]
"""Location in a document: keys and list indexes from the top, e.g. ``("devices", 0)``."""


@dataclass(frozen=True, slots=True)
class VersionRequirement:
    """A field in a spec document that needs at least ``version``."""

    version: str
    path: JsonPath
    feature: str
    """What at ``path`` needs the version, e.g. ``hostPath``."""


def version_requirements(doc: Mapping[str, object]) -> list[VersionRequirement]:
    """Return every versioned feature used by a raw spec document (``specs-go/version.go``).

    Pure and total: parts of the wrong type are skipped (the validator reports them), so it
    works on any parsed JSON/YAML mapping. Presence rules follow ``ValidateVersionContents``:
    a ``netDevices`` key, or ``schemata``/``enableMonitoring`` in ``intelRdt``, needs 1.1.0
    even when empty or false.
    """
    found: list[VersionRequirement] = []
    if _is_non_empty_mapping(doc.get("annotations")):
        found.append(VersionRequirement("0.6.0", ("annotations",), "spec annotations"))
    kind = doc.get("kind")
    if isinstance(kind, str) and "/" in kind and "." in kind.partition("/")[2]:
        found.append(VersionRequirement("0.6.0", ("kind",), "a dot in the class part of kind"))
    edits: list[tuple[JsonPath, object]] = [(("containerEdits",), doc.get("containerEdits"))]
    devices = doc.get("devices")
    if isinstance(devices, list):
        for index, device in enumerate(devices):
            if not isinstance(device, Mapping):
                continue
            name = device.get("name")
            if isinstance(name, str) and name[:1] in _DIGITS:
                found.append(
                    VersionRequirement(
                        "0.5.0", ("devices", index, "name"), "a device name starting with a digit"
                    )
                )
            if _is_non_empty_mapping(device.get("annotations")):
                found.append(
                    VersionRequirement(
                        "0.6.0", ("devices", index, "annotations"), "device annotations"
                    )
                )
            edits.append((("devices", index, "containerEdits"), device.get("containerEdits")))
    for path, container_edits in edits:
        if isinstance(container_edits, Mapping):
            found.extend(_edits_requirements(path, container_edits))
    return found


def _edits_requirements(
    path: JsonPath, edits: Mapping[object, object]
) -> Iterator[VersionRequirement]:
    for index, mount in _mappings_in(edits.get("mounts")):
        mount_type = mount.get("type")
        if isinstance(mount_type, str) and mount_type:
            yield VersionRequirement("0.4.0", (*path, "mounts", index, "type"), "mount type")
    for index, node in _mappings_in(edits.get("deviceNodes")):
        host_path = node.get("hostPath")
        if isinstance(host_path, str) and host_path:
            yield VersionRequirement(
                "0.5.0", (*path, "deviceNodes", index, "hostPath"), "device node hostPath"
            )
    intel_rdt = edits.get("intelRdt")
    if intel_rdt is not None:
        yield VersionRequirement("0.7.0", (*path, "intelRdt"), "intelRdt")
        if isinstance(intel_rdt, Mapping):
            for key in ("schemata", "enableMonitoring"):
                if key in intel_rdt:
                    yield VersionRequirement("1.1.0", (*path, "intelRdt", key), f"intelRdt {key}")
    gids = edits.get("additionalGids")
    if isinstance(gids, list) and gids:
        yield VersionRequirement("0.7.0", (*path, "additionalGids"), "additionalGids")
    if "netDevices" in edits:
        yield VersionRequirement("1.1.0", (*path, "netDevices"), "netDevices")


def _mappings_in(value: object) -> Iterator[tuple[int, Mapping[object, object]]]:
    if isinstance(value, list):
        for index, item in enumerate(value):
            if isinstance(item, Mapping):
                yield index, item


def _is_non_empty_mapping(value: object) -> bool:
    return isinstance(value, Mapping) and len(value) > 0


def version_index(version: str) -> int:
    """Return the position of a known version in ``CDI_VERSIONS`` (raises ``ValueError``)."""
    return CDI_VERSIONS.index(version)


def minimum_version_of_document(doc: Mapping[str, object]) -> str:
    """Return the lowest cdiVersion supporting every field a raw spec document uses."""
    versions = [requirement.version for requirement in version_requirements(doc)]
    return max(versions, key=version_index, default=BASE_VERSION)


def minimum_version(spec: Spec) -> str:
    """Return the lowest cdiVersion supporting every field ``spec`` uses; never newer.

    Runtimes only accept versions their CDI library knows, so the oldest sufficient version
    is the most widely readable one.
    """
    return minimum_version_of_document(_body_document(spec))


# --- rendering ---------------------------------------------------------------------------------


def spec_document(spec: Spec) -> dict[str, object]:
    """Return the JSON-ready document of ``spec``, ``cdiVersion`` first, keys in Go order."""
    body = _body_document(spec)
    return {"cdiVersion": minimum_version_of_document(body), **body}


def render_spec(spec: Spec) -> bytes:
    """Render ``spec`` as JSON: deterministic, 2-space indent, UTF-8, trailing newline.

    The same spec always renders to the same bytes, so rewriting an unchanged spec is a no-op
    for anyone comparing files.
    """
    text = json.dumps(spec_document(spec), indent=2, ensure_ascii=False)
    return (text + "\n").encode("utf-8")


def _body_document(spec: Spec) -> dict[str, object]:
    doc: dict[str, object] = {"kind": spec.kind}
    if spec.annotations:
        doc["annotations"] = dict(spec.annotations)
    doc["devices"] = [_device_document(device) for device in spec.devices]
    if not spec.container_edits.is_empty:
        doc["containerEdits"] = _edits_document(spec.container_edits)
    return doc


def _device_document(device: Device) -> dict[str, object]:
    doc: dict[str, object] = {"name": device.name}
    if device.annotations:
        doc["annotations"] = dict(device.annotations)
    # Required even when empty, so an invalid (empty) device stays visible to the validator.
    doc["containerEdits"] = _edits_document(device.container_edits)
    return doc


def _edits_document(edits: ContainerEdits) -> dict[str, object]:
    doc: dict[str, object] = {}
    if edits.env:
        doc["env"] = list(edits.env)
    if edits.device_nodes:
        doc["deviceNodes"] = [_device_node_document(node) for node in edits.device_nodes]
    if edits.hooks:
        doc["hooks"] = [_hook_document(hook) for hook in edits.hooks]
    if edits.mounts:
        doc["mounts"] = [_mount_document(mount) for mount in edits.mounts]
    if edits.additional_gids:
        doc["additionalGids"] = list(edits.additional_gids)
    return doc


def _device_node_document(node: DeviceNode) -> dict[str, object]:
    return _without_empty(
        {
            "path": node.path,
            "hostPath": node.host_path,
            "type": node.type,
            "major": node.major,
            "minor": node.minor,
            "fileMode": node.file_mode,
            "permissions": node.permissions,
            "uid": node.uid,
            "gid": node.gid,
        },
        required=("path",),
    )


def _mount_document(mount: Mount) -> dict[str, object]:
    return _without_empty(
        {
            "hostPath": mount.host_path,
            "containerPath": mount.container_path,
            "options": list(mount.options),
            "type": mount.type,
        },
        required=("hostPath", "containerPath"),
    )


def _hook_document(hook: Hook) -> dict[str, object]:
    return _without_empty(
        {
            "hookName": hook.hook_name,
            "path": hook.path,
            "args": list(hook.args),
            "env": list(hook.env),
            "timeout": hook.timeout,
        },
        required=("hookName", "path"),
    )


def _without_empty(doc: dict[str, object], *, required: Sequence[str]) -> dict[str, object]:
    """Drop optional keys whose value is None, ``""`` or ``[]`` (Go's ``omitempty``)."""
    return {
        key: value
        for key, value in doc.items()
        if key in required or (value is not None and value != "" and value != [])
    }


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


# --- files -------------------------------------------------------------------------------------


def _checked_file_name(file_name: str) -> str:
    if "/" in file_name or "\0" in file_name:
        raise CdiError(f"CDI spec file name {file_name!r} must not contain '/'")
    if not file_name.endswith(".json") or file_name.startswith("."):
        raise CdiError(
            f"CDI spec file name {file_name!r} must end in .json and not start with '.' "
            "(runtimes read only visible *.json and *.yaml files)"
        )
    return file_name


def write_spec(spec: Spec, directory: Path, file_name: str, *, sync_directory: bool = True) -> Path:
    """Validate ``spec`` strictly, then write it to ``directory/file_name`` atomically, 0644.

    Nothing is created or changed when the spec or the name is invalid
    (``CdiValidationError``/``CdiError``). A missing directory is created with mode 0755; an
    existing one keeps its mode. Readers see the old file or the new one, never a torn one.
    Idempotent: writing the same spec again rewrites identical bytes. ``sync_directory``: see
    ``fsutil.write_atomically``.
    """
    staged = stage_spec(spec, directory, file_name)
    try:
        sync_staged([staged])
        commit_staged(staged)
        if sync_directory:
            fsync_directory(directory)
    except OSError as exc:
        discard_staged([staged])
        raise CdiError(f"cannot write CDI spec {staged.path}: {exc.strerror or exc}") from exc
    logger.debug(
        "wrote CDI spec %s (kind %s, %d devices)", staged.path, spec.kind, len(spec.devices)
    )
    return staged.path


def stage_spec(spec: Spec, directory: Path, file_name: str) -> StagedFile:
    """``write_spec`` up to the temp file: validated, directory made, content staged.

    The caller syncs and commits it (``fsutil``). Raises ``CdiValidationError``/``CdiError``,
    leaving nothing behind.
    """
    # Imported here: cdi_validate builds on this module's grammar and version rules.
    from dra_driver.cdi.validate import validate_spec

    name = _checked_file_name(file_name)
    validate_spec(spec)
    path = directory / name
    try:
        if not directory.is_dir():
            ensure_directory(directory, mode=PUBLIC_DIR_MODE)
        return stage_file(path, render_spec(spec), mode=PUBLIC_FILE_MODE)
    except OSError as exc:
        raise CdiError(f"cannot write CDI spec {path}: {exc.strerror or exc}") from exc


def remove_spec(directory: Path, file_name: str, *, sync_directory: bool = True) -> bool:
    """Delete ``directory/file_name``; returns whether a file was removed.

    Idempotent: a missing file (or directory) is not an error, so an unprepare may repeat.
    ``sync_directory=False`` leaves the removal to reach the disk with the next journal
    commit (for a caller that deletes left-over specs at start-up, as ``state`` does).
    """
    path = directory / _checked_file_name(file_name)
    try:
        path.unlink()
        if sync_directory:
            fsync_directory(directory)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise CdiError(f"cannot remove CDI spec {path}: {exc.strerror or exc}") from exc
    logger.debug("removed CDI spec %s", path)
    return True
