"""Strict validation of CDI spec documents: the rules the Go library enforces, in Python.

Owns the checks a CDI spec must pass before we write it or accept it from a user: strict
keys (``yaml.UnmarshalStrict`` rejects any unknown key), field types, ``cdiVersion`` known and
new enough for the fields used, the ``kind`` and device-name grammar, non-empty device edits,
``env``/``deviceNodes``/``hooks``/``mounts`` rules, duplicate devices within a spec and across
the files of one directory. Optionally adds the official JSON schema, which is much looser
(no unknown-key check, no patterns): the package ships upstream's copy unchanged
(``BUNDLED_SCHEMA_DIR``, whose README names its version), and a caller may name another.

Every problem is one human-readable line that starts with its JSON path. Validation never
raises for bad content; only ``validate_spec`` raises, for the writer. Reads files only in
``validate_file``, ``find_conflicts`` and when loading the official schema. Builds on
``model`` (grammar, version rules, rendering) and imports no other ``cdi`` module: ``files``
imports this one to check every spec it writes, never the reverse.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from dra_driver.cdi.model import (
    CDI_VERSIONS,
    JsonPath,
    Spec,
    device_name_problem,
    kind_problem,
    spec_document,
    version_index,
    version_requirements,
)
from dra_driver.errors import CdiError, CdiValidationError

if TYPE_CHECKING:
    from jsonschema import Draft7Validator

# YAML, jsonschema and difflib are imported where they are used (reading spec files, the
# official schema, a suggestion for a misspelt key): the daemon only ever validates the specs
# it builds, and importing them would cost its start-up more time than all the rest of it.

logger = logging.getLogger(__name__)

#: The official CDI JSON schema (``schema.json`` + ``defs.json``), vendored unchanged from
#: cncf-tags/container-device-interface ``schema/`` (version and licence in its README.md), so
#: validation needs nothing outside the package.
BUNDLED_SCHEMA_DIR: Final = Path(__file__).resolve().parent / "schema"

#: Exact keys of each object in ``specs-go/config.go`` (v1.1.0). Spelling traps: the Go tags
#: are ``additionalGids`` and ``schemata`` although SPEC.md writes ``additionalGIDs``/``schema``.
SPEC_KEYS: Final = frozenset({"cdiVersion", "kind", "annotations", "devices", "containerEdits"})
DEVICE_KEYS: Final = frozenset({"name", "annotations", "containerEdits"})
CONTAINER_EDITS_KEYS: Final = frozenset(
    {"env", "deviceNodes", "netDevices", "hooks", "mounts", "intelRdt", "additionalGids"}
)
DEVICE_NODE_KEYS: Final = frozenset(
    {"path", "hostPath", "type", "major", "minor", "fileMode", "permissions", "uid", "gid"}
)
MOUNT_KEYS: Final = frozenset({"hostPath", "containerPath", "options", "type"})
HOOK_KEYS: Final = frozenset({"hookName", "path", "args", "env", "timeout"})
INTEL_RDT_KEYS: Final = frozenset(
    {"closID", "l3CacheSchema", "memBwSchema", "schemata", "enableMonitoring"}
)
#: IntelRdt keys that libraries before 1.1.0 knew and 1.1.0 rejects.
LEGACY_INTEL_RDT_KEYS: Final = frozenset({"enableCMT", "enableMBM"})
NET_DEVICE_KEYS: Final = frozenset({"hostInterfaceName", "name"})

#: The OCI hook names a CDI hook may use (``pkg/cdi/container-edits.go``).
HOOK_NAMES: Final = frozenset(
    {"prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"}
)
#: deviceNodes[].type values: unset, block, char, unbuffered char, fifo.
DEVICE_NODE_TYPES: Final = frozenset({"", "b", "c", "u", "p"})
#: File extensions runtimes read from a CDI directory (``pkg/cdi/spec-dirs.go``).
SPEC_FILE_EXTENSIONS: Final = (".json", ".yaml")

_UINT32_MAX: Final = 2**32 - 1
_INT64_MAX: Final = 2**63 - 1
#: Go's int on 64-bit platforms (hook timeout is ``*int``).
_INT_MAX: Final = _INT64_MAX

#: An annotation key is a Kubernetes qualified name (optional DNS-subdomain prefix and '/').
_QUALIFIED_NAME: Final = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
_DNS_SUBDOMAIN: Final = re.compile(
    r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
)
#: Total size limit of one annotations map, as for Kubernetes objects.
_ANNOTATIONS_MAX_BYTES: Final = 256 * 1024
_IDENTIFIER: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def format_path(path: JsonPath) -> str:
    """Return ``path`` as a JSON path: ``$.devices[0].name``; odd keys as ``["a/b"]``."""
    text = "$"
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        elif _IDENTIFIER.fullmatch(part):
            text += f".{part}"
        else:
            text += f"[{json.dumps(part)}]"
    return text


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


class _Checker:
    """Collects problem lines while walking one raw document."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def add(self, path: JsonPath, message: str) -> None:
        self.problems.append(f"{format_path(path)}: {message}")

    def mapping(
        self,
        value: object,
        path: JsonPath,
        *,
        allowed: frozenset[str],
        required: tuple[str, ...] = (),
    ) -> dict[str, object] | None:
        """Check an object's type, keys and required keys; returns it when it is an object."""
        if not isinstance(value, dict):
            self.add(path, f"must be an object, not {_type_name(value)}")
            return None
        for key in value:
            if not isinstance(key, str):
                self.add(path, f"key {key!r} must be a string, not {_type_name(key)}")
            elif key not in allowed:
                self.add(path, _unknown_key_message(key, allowed))
        for key in required:
            if key not in value:
                self.add(path, f"missing required key {key!r}")
        return value

    def string(
        self, obj: Mapping[str, object], key: str, path: JsonPath, *, non_empty: bool = False
    ) -> str | None:
        """Check an optional string field; returns it when present and a string."""
        if key not in obj:
            return None
        value = obj[key]
        if not isinstance(value, str):
            self.add((*path, key), f"must be a string, not {_type_name(value)}")
            return None
        if non_empty and not value:
            self.add((*path, key), "must not be empty")
        return value

    def integer(
        self,
        obj: Mapping[str, object],
        key: str,
        path: JsonPath,
        *,
        minimum: int,
        maximum: int,
        what: str,
    ) -> int | None:
        """Check an optional integer field within ``[minimum, maximum]``."""
        if key not in obj:
            return None
        value = obj[key]
        if isinstance(value, bool) or not isinstance(value, int):
            self.add((*path, key), f"must be an integer, not {_type_name(value)}")
            return None
        if not minimum <= value <= maximum:
            self.add((*path, key), f"{value} is out of range for {what} ({minimum}..{maximum})")
            return None
        return value

    def boolean(self, obj: Mapping[str, object], key: str, path: JsonPath) -> None:
        """Check an optional boolean field."""
        if key in obj and not isinstance(obj[key], bool):
            self.add((*path, key), f"must be a boolean, not {_type_name(obj[key])}")

    def array(self, obj: Mapping[str, object], key: str, path: JsonPath) -> list[object]:
        """Check an optional array field; returns its items (empty when absent or wrong)."""
        if key not in obj:
            return []
        value = obj[key]
        if not isinstance(value, list):
            self.add((*path, key), f"must be an array, not {_type_name(value)}")
            return []
        return value

    def strings(self, obj: Mapping[str, object], key: str, path: JsonPath) -> list[str]:
        """Check an optional array of strings; returns the items that are strings."""
        good: list[str] = []
        for index, item in enumerate(self.array(obj, key, path)):
            if isinstance(item, str):
                good.append(item)
            else:
                self.add((*path, key, index), f"must be a string, not {_type_name(item)}")
        return good


def _unknown_key_message(key: str, allowed: frozenset[str]) -> str:
    message = f"unknown key {key!r}"
    by_case = [name for name in allowed if name.lower() == key.lower()]
    import difflib

    close = by_case or difflib.get_close_matches(key, sorted(allowed), n=1, cutoff=0.75)
    if close:
        message += f" (did you mean {close[0]!r}?)"
    return (
        message + "; the CDI library rejects the whole file. Allowed: " + ", ".join(sorted(allowed))
    )


# --- the strict rules --------------------------------------------------------------------------


def _check_annotations(c: _Checker, value: object, path: JsonPath) -> None:
    if not isinstance(value, dict):
        c.add(path, f"must be an object of strings, not {_type_name(value)}")
        return
    total = 0
    for key, item in value.items():
        if not isinstance(key, str):
            c.add(path, f"key {key!r} must be a string")
            continue
        if not isinstance(item, str):
            c.add((*path, key), f"must be a string, not {_type_name(item)}")
            continue
        total += len(key) + len(item)
        prefix, slash, name = key.rpartition("/")
        if (
            not _QUALIFIED_NAME.fullmatch(name)
            or (slash and not prefix)
            or (prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix)))
        ):
            c.add(
                (*path, key),
                "annotation key must be a qualified name: an optional DNS subdomain and '/', "
                "then up to 63 letters, digits, '-', '_' or '.', starting and ending with a "
                "letter or digit",
            )
    if total > _ANNOTATIONS_MAX_BYTES:
        c.add(path, f"annotations total {total} bytes, more than {_ANNOTATIONS_MAX_BYTES}")


def _check_env(c: _Checker, obj: Mapping[str, object], path: JsonPath) -> None:
    for index, entry in enumerate(c.strings(obj, "env", path)):
        if "=" not in entry:
            c.add((*path, "env", index), f"{entry!r} must have the form NAME=VALUE")
        elif entry.startswith("="):
            c.add((*path, "env", index), f"{entry!r} must not start with '=' (empty NAME)")


def _check_device_node(c: _Checker, value: object, path: JsonPath) -> None:
    node = c.mapping(value, path, allowed=DEVICE_NODE_KEYS, required=("path",))
    if node is None:
        return
    c.string(node, "path", path, non_empty=True)
    c.string(node, "hostPath", path)
    node_type = c.string(node, "type", path)
    if node_type is not None and node_type not in DEVICE_NODE_TYPES:
        c.add((*path, "type"), f"{node_type!r} is not a device type (one of b, c, u, p or empty)")
    # Negative numbers are rejected because -1 means "any" in a cgroup device rule.
    for key in ("major", "minor"):
        c.integer(node, key, path, minimum=0, maximum=_INT64_MAX, what="a device number")
    c.integer(node, "fileMode", path, minimum=0, maximum=_UINT32_MAX, what="a file mode")
    permissions = c.string(node, "permissions", path)
    if permissions is not None and set(permissions) - set("rwm"):
        c.add((*path, "permissions"), f"{permissions!r} must be a subset of 'rwm'")
    for key in ("uid", "gid"):
        c.integer(node, key, path, minimum=0, maximum=_UINT32_MAX, what="a uint32 id")


def _check_mount(c: _Checker, value: object, path: JsonPath) -> None:
    mount = c.mapping(value, path, allowed=MOUNT_KEYS, required=("hostPath", "containerPath"))
    if mount is None:
        return
    c.string(mount, "hostPath", path, non_empty=True)
    c.string(mount, "containerPath", path, non_empty=True)
    c.strings(mount, "options", path)
    c.string(mount, "type", path)


def _check_hook(c: _Checker, value: object, path: JsonPath) -> None:
    hook = c.mapping(value, path, allowed=HOOK_KEYS, required=("hookName", "path"))
    if hook is None:
        return
    hook_name = c.string(hook, "hookName", path)
    if hook_name is not None and hook_name not in HOOK_NAMES:
        c.add(
            (*path, "hookName"),
            f"{hook_name!r} is not a hook name (one of {', '.join(sorted(HOOK_NAMES))})",
        )
    hook_path = c.string(hook, "path", path)
    if hook_path is not None and not hook_path.startswith("/"):
        c.add((*path, "path"), f"{hook_path!r} must be an absolute path")
    c.strings(hook, "args", path)
    _check_env(c, hook, path)
    c.integer(hook, "timeout", path, minimum=1, maximum=_INT_MAX, what="a timeout in seconds")


def _check_intel_rdt(c: _Checker, value: object, path: JsonPath, *, version: str | None) -> None:
    is_legacy = version in CDI_VERSIONS and version_index(version) < version_index("1.1.0")
    allowed = INTEL_RDT_KEYS | LEGACY_INTEL_RDT_KEYS if is_legacy else INTEL_RDT_KEYS
    rdt = c.mapping(value, path, allowed=allowed)
    if rdt is None:
        return
    clos_id = c.string(rdt, "closID", path)
    if (
        clos_id is not None
        and clos_id != "/"
        and (len(clos_id) >= 4096 or clos_id in (".", "..") or "/" in clos_id or "\n" in clos_id)
    ):
        c.add((*path, "closID"), f"{clos_id!r} must be a valid file name or '/'")
    c.string(rdt, "l3CacheSchema", path)
    c.string(rdt, "memBwSchema", path)
    c.strings(rdt, "schemata", path)
    for key in ("enableMonitoring", *sorted(LEGACY_INTEL_RDT_KEYS)):
        c.boolean(rdt, key, path)


def _check_net_devices(c: _Checker, obj: Mapping[str, object], path: JsonPath) -> None:
    host_names: dict[str, int] = {}
    names: dict[str, int] = {}
    for index, value in enumerate(c.array(obj, "netDevices", path)):
        item_path = (*path, "netDevices", index)
        net = c.mapping(
            value, item_path, allowed=NET_DEVICE_KEYS, required=("hostInterfaceName", "name")
        )
        if net is None:
            continue
        for key, seen in (("hostInterfaceName", host_names), ("name", names)):
            name = c.string(net, key, item_path, non_empty=True)
            if name:
                if name in seen:
                    c.add((*item_path, key), f"{name!r} repeats netDevices[{seen[name]}]")
                seen.setdefault(name, index)


def _check_edits(
    c: _Checker, value: object, path: JsonPath, *, version: str | None, is_device: bool
) -> None:
    edits = c.mapping(value, path, allowed=CONTAINER_EDITS_KEYS)
    if edits is None:
        return
    if is_device and not any(_is_non_empty(key, edits.get(key)) for key in CONTAINER_EDITS_KEYS):
        c.add(path, "a device's containerEdits must not be empty (Go: 'empty device edits')")
    _check_env(c, edits, path)
    for index, node in enumerate(c.array(edits, "deviceNodes", path)):
        _check_device_node(c, node, (*path, "deviceNodes", index))
    for index, mount in enumerate(c.array(edits, "mounts", path)):
        _check_mount(c, mount, (*path, "mounts", index))
    for index, hook in enumerate(c.array(edits, "hooks", path)):
        _check_hook(c, hook, (*path, "hooks", index))
    _check_net_devices(c, edits, path)
    if "intelRdt" in edits:
        _check_intel_rdt(c, edits["intelRdt"], (*path, "intelRdt"), version=version)
    for index, gid in enumerate(c.array(edits, "additionalGids", path)):
        if isinstance(gid, bool) or not isinstance(gid, int) or not 0 <= gid <= _UINT32_MAX:
            c.add((*path, "additionalGids", index), f"{gid!r} must be a uint32 group id")


def _is_non_empty(key: str, value: object) -> bool:
    """Mirror Go's ``isEmpty``: lists count when non-empty, ``intelRdt`` whenever set."""
    if key == "intelRdt":
        return value is not None
    return isinstance(value, list) and len(value) > 0


def _check_version(c: _Checker, doc: Mapping[str, object], version: str) -> None:
    if version not in CDI_VERSIONS:
        hint = ""
        if version.startswith("v") and version[1:] in CDI_VERSIONS:
            hint = f"; write {version[1:]!r} without the 'v'"
        c.add(
            ("cdiVersion",),
            f"unknown version {version!r}{hint} (known: {', '.join(CDI_VERSIONS)})",
        )
        return
    declared = version_index(version)
    too_new = [
        requirement
        for requirement in version_requirements(doc)
        if version_index(requirement.version) > declared
    ]
    if too_new:
        needed = max((r.version for r in too_new), key=version_index)
        reasons = ", ".join(
            f"{r.feature} at {format_path(r.path)} needs {r.version}" for r in too_new
        )
        c.add(
            ("cdiVersion",),
            f"{version!r} is too old for the fields used ({reasons}); use at least {needed!r}",
        )


def _strict_problems(doc: object) -> list[str]:
    c = _Checker()
    spec = c.mapping(doc, (), allowed=SPEC_KEYS, required=("cdiVersion", "kind", "devices"))
    if spec is None:
        return c.problems
    version = c.string(spec, "cdiVersion", ())
    kind = c.string(spec, "kind", ())
    if kind is not None:
        problem = kind_problem(kind)
        if problem is not None:
            c.add(("kind",), problem)
    if "annotations" in spec:
        _check_annotations(c, spec["annotations"], ("annotations",))
    if "devices" in spec:
        _check_devices(c, spec, version=version)
    if "containerEdits" in spec:
        _check_edits(
            c, spec["containerEdits"], ("containerEdits",), version=version, is_device=False
        )
    if version is not None:
        _check_version(c, spec, version)
    return c.problems


def _check_devices(c: _Checker, spec: Mapping[str, object], *, version: str | None) -> None:
    devices = c.array(spec, "devices", ())
    if isinstance(spec["devices"], list) and not devices:
        c.add(("devices",), "a spec needs at least one device")
    first_index: dict[str, int] = {}
    for index, value in enumerate(devices):
        path: JsonPath = ("devices", index)
        device = c.mapping(value, path, allowed=DEVICE_KEYS, required=("name", "containerEdits"))
        if device is None:
            continue
        name = c.string(device, "name", path)
        if name is not None:
            problem = device_name_problem(name)
            if problem is not None:
                c.add((*path, "name"), problem)
            elif name in first_index:
                c.add(
                    (*path, "name"),
                    f"duplicate device name {name!r} (also devices[{first_index[name]}])",
                )
            first_index.setdefault(name, index)
        if "annotations" in device:
            _check_annotations(c, device["annotations"], (*path, "annotations"))
        if "containerEdits" in device:
            _check_edits(
                c,
                device["containerEdits"],
                (*path, "containerEdits"),
                version=version,
                is_device=True,
            )


# --- the official schema -----------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _schema_validator(schema_dir: Path) -> Draft7Validator:
    """Load ``schema.json`` with ``defs.json`` registered under the URI it is referred by."""
    from jsonschema import Draft7Validator
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT7

    try:
        schema = json.loads((schema_dir / "schema.json").read_text(encoding="utf-8"))
        defs = json.loads((schema_dir / "defs.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CdiError(
            f"cannot load the official CDI schema from {schema_dir} "
            f"(schema.json and defs.json): {exc}"
        ) from exc
    # schema.json has no $id and refers to "defs.json#/definitions/...": register defs.json
    # under exactly that relative URI. defs.json has no $schema, so name its draft.
    registry: Registry[Any] = Registry().with_resource(
        "defs.json", Resource.from_contents(defs, default_specification=DRAFT7)
    )
    return Draft7Validator(schema, registry=registry)


def _schema_problems(doc: object, schema_dir: Path) -> list[str]:
    validator = _schema_validator(schema_dir.resolve())
    errors = sorted(validator.iter_errors(doc), key=lambda error: (error.json_path, error.message))
    return [f"{error.json_path}: {error.message} (official schema)" for error in errors]


# --- public entry points -----------------------------------------------------------------------


def validate_document(doc: object, *, schema_dir: Path | None = None) -> list[str]:
    """Return one line per problem of a parsed CDI spec document; empty when it is valid.

    Always applies the strict rules of the Go library. With ``schema_dir`` (holding the
    official ``schema.json`` and ``defs.json``, e.g. ``BUNDLED_SCHEMA_DIR``) also validates
    against the schema and adds its errors, marked ``(official schema)``. Pure apart from
    loading the schema once per directory; raises ``CdiError`` only when that schema cannot be
    loaded.
    """
    problems = _strict_problems(doc)
    if schema_dir is not None:
        problems.extend(_schema_problems(doc, schema_dir))
    return problems


def validate_spec(spec: Spec) -> None:
    """Raise ``CdiValidationError`` listing every strict-rule problem of ``spec`` as rendered."""
    validated_document(spec)


def validated_document(spec: Spec) -> dict[str, object]:
    """``spec``'s JSON document (``model.spec_document``) once it passed ``validate_spec``.

    For a writer that renders what it validated (``model.render_document``) without building
    the document twice.
    """
    document = spec_document(spec)
    problems = _strict_problems(document)
    if problems:
        raise CdiValidationError(f"CDI spec of kind {spec.kind!r}", problems)
    return document


class _DocumentError(Exception):
    """A spec file that cannot be read or parsed; the message is the problem line."""


def validate_file(path: Path, *, schema_dir: Path | None = None) -> list[str]:
    """Read a ``.json`` or ``.yaml`` CDI spec file and return its problems (empty = valid).

    Never raises for bad content: an unreadable file, bad encoding, a parse error or a
    duplicate key is reported as a single problem line.
    """
    try:
        doc = _load_document(path)
    except _DocumentError as exc:
        return [str(exc)]
    return validate_document(doc, schema_dir=schema_dir)


def _load_document(path: Path) -> object:
    """Parse a spec file by extension, rejecting duplicate keys like the Go library does."""
    if path.suffix not in SPEC_FILE_EXTENSIONS:
        raise _DocumentError(
            f"{path.name}: not a CDI spec file name; runtimes read only *.json and *.yaml"
        )
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise _DocumentError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _DocumentError(
            f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from exc
    doc = _parse_json(text) if path.suffix == ".json" else _parse_yaml(text)
    if doc is None:
        raise _DocumentError(f"{path} holds no document (empty file or null)")
    return doc


def _parse_json(text: str) -> object:
    def pairs(items: list[tuple[str, object]]) -> dict[str, object]:
        result: dict[str, object] = {}
        for key, value in items:
            if key in result:
                raise _DocumentError(f"invalid JSON: duplicate key {key!r}")
            result[key] = value
        return result

    def constant(name: str) -> object:
        raise _DocumentError(f"invalid JSON: {name} is not a JSON number")

    try:
        return json.loads(text, object_pairs_hook=pairs, parse_constant=constant)
    except json.JSONDecodeError as exc:
        raise _DocumentError(
            f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from exc


@functools.cache
def _strict_yaml_loader() -> type[Any]:
    """A safe YAML loader that rejects duplicate mapping keys (go-yaml's strict mode does)."""
    import yaml

    class StrictYamlLoader(yaml.SafeLoader):
        def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
            seen: set[object] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=deep)
                try:
                    is_duplicate = key in seen
                except TypeError:
                    continue  # unhashable key: the base constructor reports it
                if is_duplicate:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping",
                        node.start_mark,
                        f"found duplicate key {key!r}",
                        key_node.start_mark,
                    )
                seen.add(key)
            return super().construct_mapping(node, deep=deep)

    return StrictYamlLoader


def _parse_yaml(text: str) -> object:
    import yaml

    try:
        return yaml.load(text, Loader=_strict_yaml_loader())  # a SafeLoader subclass: safe
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        what = ", ".join(part for part in (exc.context, exc.problem) if part)
        raise _DocumentError(f"invalid YAML{where}: {what}") from exc
    except yaml.YAMLError as exc:
        raise _DocumentError("invalid YAML: " + " ".join(str(exc).split())) from exc


@dataclass(frozen=True, slots=True)
class _Definition:
    directory: Path
    device_id: str


def find_conflicts(paths: Iterable[Path]) -> list[str]:
    """Return one line per fully qualified device defined in several files of one directory.

    Runtimes drop such a device from every file of equal priority (a later directory wins
    without a conflict, so files in different directories never conflict). Files that cannot
    be parsed are skipped here: ``validate_file`` reports them.
    """
    owners: dict[_Definition, list[Path]] = {}
    seen_files: set[Path] = set()
    for path in paths:
        absolute = path.absolute()
        if absolute in seen_files:
            continue
        seen_files.add(absolute)
        try:
            doc = _load_document(path)
        except _DocumentError:
            continue
        if not isinstance(doc, dict):
            continue
        kind, devices = doc.get("kind"), doc.get("devices")
        if not isinstance(kind, str) or kind_problem(kind) or not isinstance(devices, list):
            continue
        names = {
            device["name"]
            for device in devices
            if isinstance(device, dict) and isinstance(device.get("name"), str)
        }
        for name in names:
            owners.setdefault(_Definition(absolute.parent, f"{kind}={name}"), []).append(path)
    return [
        f"{definition.device_id} is defined in {len(files)} files of {definition.directory} "
        f"({', '.join(file.name for file in files)}): runtimes ignore it in all of them"
        for definition, files in sorted(
            owners.items(), key=lambda item: (str(item[0].directory), item[0].device_id)
        )
        if len(files) > 1
    ]
