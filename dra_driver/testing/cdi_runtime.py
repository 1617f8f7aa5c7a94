"""What a container gets from its CDI device IDs, computed by the container runtime's own CDI code.

:func:`inject` runs ``build/bin/cdi-inject`` (``tests/cdiruntime/``, built by ``make cdiruntime``):
the official CDI Go library (``tags.cncf.io/container-device-interface`` v1.1.2, the code
containerd and CRI-O link) loads a cache from exactly the given spec directories (a later one
has the higher priority) and injects the IDs into an empty OCI spec with
``Cache.InjectDevices``, as containerd's ``pkg/cdi`` ``WithCDIDevices`` does. What comes back is
that OCI spec's device nodes (type and numbers filled in from the host nodes by the library),
device cgroup rules, mounts (sorted as the library sorts them), environment and hooks, plus
the host path of each device node, and every env variable, mount or device node that two IDs
set to different values (the library silently lets the later one win).

What it does not model:

- the rest of a real container: containerd's default mounts, environment, cgroup rules denying
  all devices, the image's config, user namespaces and id-mapped mounts (the OCI spec starts
  empty, with no user, so device nodes get no uid/gid unless the CDI spec names them);
- what the OCI runtime (runc) then does with the spec: it creates no device nodes, mounts
  nothing and checks no mount options; :mod:`dra_driver.testing.container` lays a view out from
  this result instead;
- hooks are reported, not run, unless ``run_hooks_root`` is given; then only the
  ``createContainer`` hooks run, on this host, with a bundle whose ``root.path`` is that
  directory (not inside a container's namespaces);
- containerd only logs a spec that fails to load and goes on; here any spec load error fails
  (:class:`CdiRuntimeError`), so a test cannot pass because a broken spec was skipped. A spec
  directory that does not exist is skipped, as the library does.

Test and demo tooling. :func:`inject` starts one short process and writes nothing (hooks
aside); :meth:`RuntimeContainer.files` only reads the mounts' sources.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import Any

from dra_driver.errors import DriverError

#: The checkout this module lives in (``dra_driver/testing/`` is two levels down).
REPO_ROOT = Path(__file__).resolve().parents[2]
#: ``DCU_DRA_CDI_INJECT`` overrides where the binary is (e.g. one built elsewhere in CI), as
#: ``DCU_DRA_CONTROLPLANE`` does for the control plane.
BINARY_ENV = "DCU_DRA_CDI_INJECT"
DEFAULT_BINARY = REPO_ROOT / "build" / "bin" / "cdi-inject"
#: A run reads a few small spec files; a loaded machine takes well under a second.
TIMEOUT_S = 60.0
#: cdi-inject's exit codes: injected; a problem (stderr says which); a usage error; injected,
#: with conflicts.
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_CONFLICTS = 0, 1, 2, 3
#: Every line cdi-inject writes on stderr starts with this.
PROBLEM_PREFIX = "cdi-inject: "


class CdiRuntimeError(DriverError):
    """The CDI library refused the specs or an ID, or ``cdi-inject`` could not be run."""

    def __init__(self, message: str, *, problems: Sequence[str] = ()) -> None:
        """``problems``: cdi-inject's stderr lines, one per problem, without its prefix."""
        self.message = message
        self.problems = tuple(problems)
        super().__init__(message)

    def __str__(self) -> str:
        """The message, then each problem on a line of its own."""
        return "\n".join([self.message, *(f"  {p}" for p in self.problems)])


class ConflictKind(StrEnum):
    """What two CDI IDs disagree on."""

    ENV = "env"
    MOUNT = "mount"
    DEVICE_NODE = "deviceNode"


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceNode:
    """A ``linux.devices`` entry of the container's OCI spec."""

    path: str
    """In the container, e.g. ``/dev/kfd``."""
    type: str
    """``c``, ``b``, ``u`` or ``p``."""
    major: int
    minor: int
    file_mode: int | None
    """What the library read from the host node (permission bits), or the spec's."""
    uid: int | None
    gid: int | None
    host_path: str
    """The node on the host the CDI edit named (its ``path`` when it named no ``hostPath``)."""
    cdi_id: str
    """The injected ID whose edit put it there (last)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceRule:
    """A ``linux.resources.devices`` cgroup rule of the container's OCI spec."""

    allow: bool
    type: str
    major: int | None
    minor: int | None
    access: str
    """``rwm`` letters; empty for CDI's ``none``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Mount:
    """A ``mounts`` entry of the container's OCI spec."""

    destination: str
    source: str
    type: str
    """Empty when the CDI spec named none."""
    options: tuple[str, ...]
    cdi_id: str
    """The injected ID whose edit put it there (last)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Hook:
    """A hook of the container's OCI spec."""

    path: str
    args: tuple[str, ...]
    env: tuple[str, ...]
    timeout_s: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ConflictValue:
    """What one injected ID sets a conflicting key to."""

    cdi_id: str
    value: str
    """An env value; ``source=… type=… options=…`` for a mount; ``hostPath=… type=… major=…
    minor=… permissions=… fileMode=… uid=… gid=…`` for a device node."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Conflict:
    """A key two injected IDs set to different values; the container gets the last one."""

    what: ConflictKind
    key: str
    """The env variable's name, the mount's or the device node's path in the container."""
    values: tuple[ConflictValue, ...]
    """Every injected ID that sets the key, in injection order (agreeing ones too)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RuntimeContainer:
    """What the CDI library put into the container's OCI spec, in the library's order."""

    device_nodes: tuple[DeviceNode, ...]
    device_rules: tuple[DeviceRule, ...]
    mounts: tuple[Mount, ...]
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    """``process.env`` in order; a variable set twice holds its last value."""
    hooks: Mapping[str, tuple[Hook, ...]] = field(default_factory=lambda: MappingProxyType({}))
    """By OCI hook name (``createContainer``, ...); names without hooks are absent."""
    conflicts: tuple[Conflict, ...] = ()

    def device_node(self, path: str) -> DeviceNode:
        """The device node at ``path`` in the container; ``KeyError`` when there is none."""
        for node in self.device_nodes:
            if node.path == path:
                return node
        raise KeyError(path)

    def mount(self, destination: str) -> Mount:
        """The mount at ``destination`` in the container; ``KeyError`` when there is none."""
        for mount in self.mounts:
            if mount.destination == destination:
                return mount
        raise KeyError(destination)

    def files(self) -> dict[str, Path]:
        """Container path -> host path of every file the mounts show, in mount order.

        A mount of a regular file shows that file; a mount of a directory shows every regular
        file below it (symlinks to files included; symlinked directories are not followed). A
        later mount at or below a path hides what an earlier one showed there, as the library's
        shallow-first order of mounts does in a real container. Mounts whose source is no file
        or directory on this host (tmpfs, proc) show nothing. Reads the host; writes nothing.
        """
        files: dict[str, Path] = {}
        for mount in self.mounts:
            destination = PurePosixPath(mount.destination)
            for inside in [p for p in files if _is_at_or_below(PurePosixPath(p), destination)]:
                del files[inside]
            source = Path(mount.source)
            if source.is_file():
                files[str(destination)] = source
            elif source.is_dir():
                for host in _files_below(source):
                    files[str(destination / host.relative_to(source).as_posix())] = host
        return files


def default_binary() -> Path:
    """``build/bin/cdi-inject`` of this checkout (or ``$DCU_DRA_CDI_INJECT``); it must exist."""
    binary = Path(os.environ.get(BINARY_ENV) or DEFAULT_BINARY)
    if not binary.is_file():
        raise CdiRuntimeError(
            f"{binary} does not exist: run `make cdiruntime` first (builds cdi-inject, the CDI Go "
            "library as containerd uses it, from tests/cdiruntime/)"
        )
    return binary


def inject(
    spec_dirs: Sequence[Path],
    cdi_ids: Sequence[str],
    *,
    binary: Path | None = None,
    run_hooks_root: Path | None = None,
) -> RuntimeContainer:
    """What a container started with ``cdi_ids`` gets, by the CDI library, from ``spec_dirs``.

    ``spec_dirs`` are in priority order, lowest first, as a runtime's ``cdi_spec_dirs``. No IDs:
    an empty container (no process is started). ``run_hooks_root``: also run the injected
    ``createContainer`` hooks (see the module docstring). Conflicting keys do not fail: they are
    in the result's ``conflicts``, for the caller to assert on. Raises ``CdiRuntimeError`` when
    a spec fails to load, an ID does not resolve, the injection fails (e.g. a device node whose
    host path is a plain file and whose spec names no type and major), a hook fails, or the
    binary is missing or misbehaves.
    """
    if not cdi_ids:
        return RuntimeContainer(device_nodes=(), device_rules=(), mounts=())
    if not spec_dirs:
        raise CdiRuntimeError(f"no CDI spec directories to resolve {', '.join(cdi_ids)} from")
    command = [str(binary or default_binary())]
    for spec_dir in spec_dirs:
        command += ["--spec-dir", str(spec_dir)]
    if run_hooks_root is not None:
        command += ["--run-hooks", str(run_hooks_root)]
    command += ["--", *cdi_ids]  # an ID is never taken for a flag
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, check=False, timeout=TIMEOUT_S
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CdiRuntimeError(f"cannot run {command[0]}: {exc}") from exc
    problems = [line.removeprefix(PROBLEM_PREFIX) for line in done.stderr.splitlines() if line]
    if done.returncode not in (EXIT_OK, EXIT_CONFLICTS):
        what = "usage error" if done.returncode == EXIT_USAGE else f"exit code {done.returncode}"
        raise CdiRuntimeError(
            f"the CDI library cannot inject {', '.join(cdi_ids)} from "
            f"{', '.join(map(str, spec_dirs))} ({what})",
            problems=problems,
        )
    try:
        return parse_report(json.loads(done.stdout))
    except (ValueError, KeyError, TypeError) as exc:
        raise CdiRuntimeError(
            f"{command[0]} printed no report this module can read: {exc}", problems=problems
        ) from exc


def parse_report(document: Any) -> RuntimeContainer:
    """A :class:`RuntimeContainer` from cdi-inject's JSON document (already parsed).

    Pure. Raises ``KeyError``, ``TypeError`` or ``ValueError`` for a malformed document.
    """
    if not isinstance(document, dict):
        raise TypeError("the report is not a JSON object")
    env: dict[str, str] = {}
    for entry in document["env"]:
        name, _, value = _str(entry).partition("=")
        env[name] = value
    return RuntimeContainer(
        device_nodes=tuple(
            DeviceNode(
                path=_str(n["path"]),
                type=_str(n["type"]),
                major=_int(n["major"]),
                minor=_int(n["minor"]),
                file_mode=_optional_int(n["fileMode"]),
                uid=_optional_int(n["uid"]),
                gid=_optional_int(n["gid"]),
                host_path=_str(n["hostPath"]),
                cdi_id=_str(n["cdiId"]),
            )
            for n in document["deviceNodes"]
        ),
        device_rules=tuple(
            DeviceRule(
                allow=bool(r["allow"]),
                type=_str(r["type"]),
                major=_optional_int(r["major"]),
                minor=_optional_int(r["minor"]),
                access=_str(r["access"]),
            )
            for r in document["deviceCgroup"]
        ),
        mounts=tuple(
            Mount(
                destination=_str(m["destination"]),
                source=_str(m["source"]),
                type=_str(m["type"]),
                options=tuple(_str(o) for o in m["options"]),
                cdi_id=_str(m["cdiId"]),
            )
            for m in document["mounts"]
        ),
        env=MappingProxyType(env),
        hooks=MappingProxyType(
            {
                _str(name): tuple(
                    Hook(
                        path=_str(h["path"]),
                        args=tuple(_str(a) for a in h["args"]),
                        env=tuple(_str(e) for e in h["env"]),
                        timeout_s=_optional_int(h["timeout"]),
                    )
                    for h in hooks
                )
                for name, hooks in document["hooks"].items()
            }
        ),
        conflicts=tuple(
            Conflict(
                what=ConflictKind(c["what"]),
                key=_str(c["key"]),
                values=tuple(
                    ConflictValue(cdi_id=_str(v["cdiId"]), value=_str(v["value"]))
                    for v in c["values"]
                ),
            )
            for c in document["conflicts"]
        ),
    )


def _str(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {value!r}")
    return value


def _int(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"expected an integer, got {value!r}")
    return value


def _optional_int(value: object) -> int | None:
    return None if value is None else _int(value)


def _is_at_or_below(path: PurePosixPath, top: PurePosixPath) -> bool:
    return path == top or top in path.parents


def _files_below(directory: Path) -> Iterator[Path]:
    """Every regular file (or symlink to one) below ``directory``, sorted; no symlinked dirs."""
    for parent, dirs, names in os.walk(directory):
        dirs.sort()
        for name in sorted(names):
            path = Path(parent) / name
            if path.is_file():
                yield path
