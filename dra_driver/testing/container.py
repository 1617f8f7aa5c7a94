"""What a container would see of its CDI devices, laid out as a directory to run ``verify`` in.

A CDI-enabled runtime (containerd, CRI-O) turns the CDI device IDs the kubelet passes for a
container (``<vendor>/<class>=<name>``) into edits of the container's OCI spec.
:func:`build_container_view` asks the runtime's own CDI code for those edits
(:func:`dra_driver.testing.cdi_runtime.inject`: the CDI Go library as containerd calls it) and
lays their file part out under a directory ``root``: every device node becomes a device node
``root/<container path>`` with the type and numbers the library gave it (``os.mknod``, mode
0o600), and every mount a symlink ``root/<destination>`` -> its source. ``os.stat`` follows
symlinks, so a bind-mounted directory lists its files: enough for
``dcu-dra verify --vdev-dir root/etc/vdev/docker --dev-dir root/dev``. The view keeps the
runtime's whole answer (:attr:`ContainerView.container`: environment, cgroup rules, conflicts).

Only root can create device nodes, and without root a mock node's device nodes are plain files,
which the CDI library refuses as device nodes ("failed to stat CDI host device ...: not a
device node"). So without root (:func:`runtime_unavailable_reason`) the view falls back to
:func:`resolve_paths`, dcu-dra's own model of the library, not the runtime's code, and every
path, device nodes included, becomes a symlink to its host path.

Test and demo tooling. :func:`resolve_paths` is pure; :func:`build_container_view` and
:func:`build_model_view` write only under ``root`` and refuse any path that would lead outside it.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import Any

from dra_driver.errors import DriverError
from dra_driver.testing import cdi_runtime
from dra_driver.testing.cdi_runtime import CdiRuntimeError, DeviceNode, RuntimeContainer

#: A CDI spec document as the plugin writes it (parsed JSON).
SpecDocument = Mapping[str, Any]


class ContainerViewError(DriverError):
    """A CDI device ID or spec that no runtime could inject, or a view that cannot be built."""


class EditKind(StrEnum):
    """Which ``containerEdits`` list a path comes from."""

    DEVICE_NODE = "deviceNodes"
    MOUNT = "mounts"


@dataclass(frozen=True, slots=True, kw_only=True)
class InjectedPath:
    """One file or directory the runtime puts into the container."""

    container_path: str
    """Absolute path inside the container, e.g. ``/dev/kfd``."""
    host_path: str
    """What it is on the host (the node), e.g. ``<mock root>/dev/kfd``."""
    kind: EditKind
    cdi_id: str
    """The CDI device ID whose injection brought it in."""
    device: DeviceNode | None = None
    """The runtime's device node (type, numbers); None for a mount, or from our model."""


@dataclass(frozen=True, slots=True)
class ContainerView:
    """A directory laid out as the container's files from its CDI devices."""

    root: Path
    paths: tuple[InjectedPath, ...]
    container: RuntimeContainer | None = None
    """What the CDI library gave the container; None: laid out from our model (not root)."""

    def at(self, container_path: str) -> Path:
        """Where ``container_path`` (``/etc/vdev/docker``) lies in the view."""
        return self.root / container_path.lstrip("/")


def parse_cdi_id(cdi_id: str) -> tuple[str, str]:
    """Split ``<vendor>/<class>=<name>`` into the kind and the device name."""
    kind, equals, name = cdi_id.partition("=")
    vendor, slash, class_ = kind.partition("/")
    if not (equals and slash and vendor and class_ and name):
        raise ContainerViewError(
            f"CDI device ID {cdi_id!r} is not of the form <vendor>/<class>=<name>"
        )
    return kind, name


def runtime_unavailable_reason() -> str | None:
    """Why container views cannot come from the CDI library on this machine; None if they can."""
    if os.geteuid() == 0:
        return None
    return (
        "not root: container views use dcu-dra's own model of CDI, not the runtime's CDI "
        "library, which refuses the mock node's plain-file device nodes (only root makes real ones)"
    )


def resolve_paths(specs: Sequence[SpecDocument], cdi_ids: Sequence[str]) -> list[InjectedPath]:
    """Our model of the device nodes and mounts a runtime injects for ``cdi_ids``, in order.

    This is dcu-dra's own reading of the CDI Go library, not the runtime's code: it is the
    fallback of :func:`build_container_view` without root only (see the module docstring), and
    :func:`dra_driver.testing.cdi_runtime.inject` is the reference. It models the resolution
    order and replacement by container path, and nothing else: no spec validation, no
    priorities between spec directories, no device numbers, no sorting of mounts, no
    environment, cgroup rules or hooks.

    Pure. Each container path appears once, with its last definition. Raises
    ``ContainerViewError`` for a malformed ID, a kind no spec has, a device no spec of its kind
    has, a device two specs define, or an entry without its path.
    """
    devices = _index_devices(specs)
    kinds = sorted({kind for kind, _ in devices})
    seen_specs: set[int] = set()
    found: dict[str, InjectedPath] = {}
    for cdi_id in cdi_ids:
        kind, name = parse_cdi_id(cdi_id)
        if (kind, name) not in devices:
            if kind not in kinds:
                known = ", ".join(kinds) or "none: no specs were given"
                raise ContainerViewError(
                    f"CDI device {cdi_id}: no CDI spec has kind {kind} (kinds: {known})"
                )
            raise ContainerViewError(
                f"CDI device {cdi_id}: no spec of kind {kind} defines a device named {name!r}; "
                "the claim was not prepared, or its spec was removed"
            )
        spec_index, device = devices[(kind, name)]
        edits: list[Any] = [device.get("containerEdits")]
        if spec_index not in seen_specs:
            seen_specs.add(spec_index)
            edits.insert(0, specs[spec_index].get("containerEdits"))
        for edit in edits:
            for path in _paths_of(edit or {}, cdi_id):
                found.pop(path.container_path, None)  # replaced: moves to the end, as in CDI
                found[path.container_path] = path
    return list(found.values())


def build_container_view(
    root: Path,
    spec_dirs: Sequence[Path],
    cdi_ids: Sequence[str],
    *,
    binary: Path | None = None,
) -> ContainerView:
    """Lay out under ``root`` (missing or empty) what the runtime shows a container.

    ``spec_dirs`` are the runtime's CDI spec directories, lowest priority first. As root the
    CDI library resolves the IDs (``binary``: cdi-inject, by default ``build/bin/cdi-inject``);
    without root our model does (:func:`runtime_unavailable_reason`). Raises
    ``ContainerViewError`` when the library (or the model) refuses a spec or an ID, for a
    non-empty ``root``, and for a container path that would lead through an earlier symlink or
    device node (out of ``root``) or collide with a directory the view already needs.
    """
    if runtime_unavailable_reason() is not None:
        specs = [spec for spec_dir in spec_dirs for spec in read_spec_dir(spec_dir)]
        return build_model_view(root, specs, cdi_ids)
    try:
        container = cdi_runtime.inject(spec_dirs, cdi_ids, binary=binary)
    except CdiRuntimeError as exc:
        # One line: the demo shows the first line of an error.
        raise ContainerViewError("; ".join([exc.message, *exc.problems])) from exc
    paths = [
        *(
            _injected(n.path, n.host_path, EditKind.DEVICE_NODE, n.cdi_id, device=n)
            for n in container.device_nodes
        ),
        *(_injected(m.destination, m.source, EditKind.MOUNT, m.cdi_id) for m in container.mounts),
    ]
    _lay_out(root, paths)
    return ContainerView(root=root, paths=tuple(paths), container=container)


def build_model_view(
    root: Path, specs: Sequence[SpecDocument], cdi_ids: Sequence[str]
) -> ContainerView:
    """Lay out under ``root`` what our model (:func:`resolve_paths`) says ``cdi_ids`` inject.

    Every path is a symlink to its host path. Raises ``ContainerViewError`` as
    :func:`resolve_paths` and :func:`build_container_view` do.
    """
    paths = resolve_paths(specs, cdi_ids)
    _lay_out(root, paths)
    return ContainerView(root=root, paths=tuple(paths))


def _lay_out(root: Path, paths: Sequence[InjectedPath]) -> None:
    """Create ``paths`` under ``root``: device nodes of the runtime as nodes, the rest as links."""
    if root.exists() and any(root.iterdir()):
        raise ContainerViewError(f"{root} is not empty: a container view needs a fresh directory")
    root.mkdir(parents=True, exist_ok=True)
    # Shallow paths first, so a mount's parent directory exists before anything below it.
    for path in sorted(paths, key=lambda p: PurePosixPath(p.container_path).parts):
        link = root / path.container_path.lstrip("/")
        if not _only_directories_above(root, link):
            raise ContainerViewError(
                f"{path.container_path} (from {path.cdi_id}) lies inside another injected path "
                "of the container; this view lays out only separate paths"
            )
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.exists() or link.is_symlink():
            raise ContainerViewError(
                f"{path.container_path} (from {path.cdi_id}) is also a directory above other "
                "injected paths; this view cannot show both"
            )
        if path.device is None:
            link.symlink_to(path.host_path)
        else:
            _make_node(link, path.device)


def _only_directories_above(root: Path, link: Path) -> bool:
    """Whether every existing directory between ``root`` and ``link`` is a real one of the view.

    A symlink there (a mounted directory) would lead onto the host, a device node cannot hold
    anything.
    """
    current = root
    for part in link.parent.relative_to(root).parts:
        current = current / part
        if current.is_symlink() or (current.exists() and not current.is_dir()):
            return False
    return True


def _make_node(path: Path, device: DeviceNode) -> None:
    """A device node at ``path`` as the runtime gave it: its type and numbers, mode 0o600."""
    if device.type == "p":
        os.mkfifo(path, 0o600)
        return
    kind = stat.S_IFBLK if device.type == "b" else stat.S_IFCHR  # "c" and "u" (unbuffered)
    try:
        os.mknod(path, 0o600 | kind, os.makedev(device.major, device.minor))
    except OSError as exc:
        raise ContainerViewError(
            f"cannot create device node {device.path} ({device.type} "
            f"{device.major}:{device.minor}, from {device.cdi_id}) in the view: {exc}"
        ) from exc


def read_spec_dir(cdi_dir: Path) -> list[dict[str, Any]]:
    """Every CDI spec (``*.json``) in ``cdi_dir``, by file name; hidden temp files skipped."""
    specs = []
    for path in sorted(cdi_dir.glob("*.json")):
        if path.name.startswith("."):
            continue  # an atomic write in progress (fsutil.write_atomically)
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ContainerViewError(f"cannot read CDI spec {path}: {exc}") from exc
        if not isinstance(document, dict):
            raise ContainerViewError(f"CDI spec {path} is not a JSON object")
        specs.append(document)
    return specs


def _index_devices(
    specs: Sequence[SpecDocument],
) -> dict[tuple[str, str], tuple[int, Mapping[str, Any]]]:
    """``(kind, device name) -> (spec index, device)`` over every spec."""
    devices: dict[tuple[str, str], tuple[int, Mapping[str, Any]]] = {}
    for index, spec in enumerate(specs):
        kind = spec.get("kind")
        if not isinstance(kind, str):
            raise ContainerViewError(f"CDI spec #{index} has no kind")
        for device in spec.get("devices") or []:
            key = (kind, str(device.get("name")))
            if key in devices:
                raise ContainerViewError(
                    f"CDI device {kind}={key[1]} is defined by two specs; a runtime refuses "
                    "to inject it"
                )
            devices[key] = (index, device)
    return devices


def _paths_of(edits: Mapping[str, Any], cdi_id: str) -> Iterable[InjectedPath]:
    for node in edits.get(EditKind.DEVICE_NODE.value) or []:
        path = node.get("path")
        yield _injected(path, node.get("hostPath") or path, EditKind.DEVICE_NODE, cdi_id)
    for mount in edits.get(EditKind.MOUNT.value) or []:
        yield _injected(mount.get("containerPath"), mount.get("hostPath"), EditKind.MOUNT, cdi_id)


def _injected(
    container_path: object,
    host_path: object,
    kind: EditKind,
    cdi_id: str,
    *,
    device: DeviceNode | None = None,
) -> InjectedPath:
    inside = _absolute(container_path, "container path", kind, cdi_id)
    if ".." in PurePosixPath(inside).parts:
        raise ContainerViewError(f"CDI device {cdi_id}: container path {inside!r} contains '..'")
    return InjectedPath(
        container_path=inside,
        host_path=_absolute(host_path, "host path", kind, cdi_id),
        kind=kind,
        cdi_id=cdi_id,
        device=device,
    )


def _absolute(value: object, what: str, kind: EditKind, cdi_id: str) -> str:
    if not isinstance(value, str) or not os.path.isabs(value):
        raise ContainerViewError(
            f"CDI device {cdi_id}: a {kind.value} entry has {what} {value!r}; "
            "an absolute path is needed"
        )
    return value
