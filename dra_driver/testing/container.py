"""What a container would see of its CDI devices, laid out as a directory to run ``verify`` in.

A CDI-enabled runtime (containerd, CRI-O) turns the CDI device IDs the kubelet passes for a
container (``<vendor>/<class>=<name>``) into edits of the container's OCI spec. This module lays
out the file part of those edits under a directory ``root``: every ``deviceNodes`` entry
(``path`` in the container, ``hostPath`` defaulting to ``path``) and every ``mounts`` entry
(``containerPath``, ``hostPath``) becomes a symlink ``root/<container path>`` -> host path.
``os.stat`` follows symlinks, so a character device of the mock node shows as one and a
bind-mounted directory lists its files: enough for
``dcu-dra verify --vdev-dir root/etc/vdev/docker --dev-dir root/dev``.

Resolution follows the CDI Go library (``pkg/cdi``, ``Cache.InjectDevices``): for each ID in
order, the spec-level ``containerEdits`` of its spec (once per spec, before its first device),
then the device's own; a later entry for a container path replaces an earlier one, as the
library's ``RemoveDevice``/``RemoveMount`` before each add does. Environment variables, hooks
and other edits are not files and are left out.

Test and demo tooling. :func:`resolve_paths` is pure; :func:`build_container_view` writes only
under ``root`` and refuses any path that would lead outside it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import Any

from dra_driver.errors import DriverError

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


@dataclass(frozen=True, slots=True)
class ContainerView:
    """A directory laid out as the container's files from its CDI devices."""

    root: Path
    paths: tuple[InjectedPath, ...]

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


def resolve_paths(specs: Sequence[SpecDocument], cdi_ids: Sequence[str]) -> list[InjectedPath]:
    """The device nodes and mounts the runtime injects for ``cdi_ids``, in injection order.

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
    root: Path, specs: Sequence[SpecDocument], cdi_ids: Sequence[str]
) -> ContainerView:
    """Lay out under ``root`` (missing or empty) what the runtime shows a container.

    Raises ``ContainerViewError`` as :func:`resolve_paths` does, for a non-empty ``root``, and
    for a container path that would lead through an earlier symlink (out of ``root``) or
    collide with a directory the view already needs.
    """
    paths = resolve_paths(specs, cdi_ids)
    if root.exists() and any(root.iterdir()):
        raise ContainerViewError(f"{root} is not empty: a container view needs a fresh directory")
    root.mkdir(parents=True, exist_ok=True)
    real_root = root.resolve()
    # Shallow paths first, so a mount's parent directory exists before anything below it.
    for path in sorted(paths, key=lambda p: PurePosixPath(p.container_path).parts):
        link = root / path.container_path.lstrip("/")
        if link.parent.resolve() != real_root / link.parent.relative_to(root):
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
        link.symlink_to(path.host_path)
    return ContainerView(root=root, paths=tuple(paths))


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
    container_path: object, host_path: object, kind: EditKind, cdi_id: str
) -> InjectedPath:
    inside = _absolute(container_path, "container path", kind, cdi_id)
    if ".." in PurePosixPath(inside).parts:
        raise ContainerViewError(f"CDI device {cdi_id}: container path {inside!r} contains '..'")
    return InjectedPath(
        container_path=inside,
        host_path=_absolute(host_path, "host path", kind, cdi_id),
        kind=kind,
        cdi_id=cdi_id,
    )


def _absolute(value: object, what: str, kind: EditKind, cdi_id: str) -> str:
    if not isinstance(value, str) or not os.path.isabs(value):
        raise ContainerViewError(
            f"CDI device {cdi_id}: a {kind.value} entry has {what} {value!r}; "
            "an absolute path is needed"
        )
    return value
