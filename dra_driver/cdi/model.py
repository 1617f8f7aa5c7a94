"""The CDI spec model: what a spec is, the names in it, the version it needs and its bytes.

Owns the frozen dataclasses mirroring ``specs-go/config.go``, the ``kind`` and device-name
grammar of the Go parser (``kind_problem``, ``device_name_problem``, ``qualified_id``,
``spec_file_name``), the minimum ``cdiVersion`` a spec or raw document needs
(``version_requirements``) and deterministic JSON rendering (``render_spec``, ``render_document``).

Pure: no file, device or clock access, no logging. Must not import the other ``cdi`` modules:
``validate``, ``build`` and ``files`` build on this one, so importing any of them here would
make a cycle. Never imports gRPC or the Kubernetes client.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from dra_driver.errors import CdiError

#: Every spec version the Go library knows, oldest first. 0.1.0/0.2.0 predate the first
#: tagged spec and are left out; we never write them and flag them when validating.
CDI_VERSIONS: Final = ("0.3.0", "0.4.0", "0.5.0", "0.6.0", "0.7.0", "0.8.0", "1.0.0", "1.1.0")
#: The version a spec using no versioned feature needs (the earliest the Go library accepts).
BASE_VERSION: Final = CDI_VERSIONS[0]

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
    return render_document(spec_document(spec))


def render_document(document: Mapping[str, object]) -> bytes:
    """The bytes of a spec's document (``spec_document``), as ``render_spec`` writes them."""
    # orjson: the bytes of ``json.dumps(indent=2, ensure_ascii=False)`` plus a newline, which
    # the golden specs pin, in a hundredth of the time (the standard encoder indents only in
    # Python, and that was the largest single cost of writing a claim's files). Imported here:
    # this module is in the one-file pyz, whose commands never render a spec.
    import orjson

    return orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)


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
