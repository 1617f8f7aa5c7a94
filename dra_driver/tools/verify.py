"""In-container verification: what DCU share did this container get, and will the runtime use it?

``dcu-dra verify`` runs inside a container. The DCU runtime reads ``/etc/vdev/docker/vdev*.conf``
(written by the driver, mounted read-only) and confines the process to the CU mask and memory
cap in them; a file that breaks one of the runtime's rules costs the container its accelerator
without a diagnostic. This module reads the vdev directory, the container's ``/dev`` and, when
it is there, ``/sys``, and returns a ``Report``: what the container got and one ``Check`` per
rule, each ``ok``, ``fail`` (with what to do) or ``skip`` (with why it could not be checked).

The rules are the ones ``hygon-dcu.md`` states: the strict file format (``vdev.parse_vdev``),
runtime rule 1 (``cu_count`` = popcount of the mask), rule 2 (``vdev_id`` = N of
``vdev<N>.conf``), rule 3 (``pipe_id`` unique on a card), one file per card, disjoint masks on
one card, ``device_id`` as the card's ordinal among the container's DCUs (PCI bus order), the
device nodes a DCU container needs (``/dev/kfd``, ``/dev/mkfd``, a ``/dev/dri/renderD*`` per
card) and, when given the environment, the ``DCU_*`` variables (``container_env``) against the
cards and files the container has. No vdev file at all means a whole-card container: the
device nodes and variables are checked. A failure about a share names its claim (from the
share's ``DCU_VDEV<N>_CLAIM``).

Reads files only; never writes, never imports gRPC or the Kubernetes client, so it runs in any
container with Python and this package.
"""

from __future__ import annotations

import fnmatch
import os
import re
import stat
from collections.abc import Iterable, Mapping, Sequence, Sized
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from dra_driver.cdi import container_env
from dra_driver.errors import DiscoveryError
from dra_driver.node.devices import HYGON_VENDOR_ID, read_properties
from dra_driver.vdcu.vdev import VdevConfig, VdevError, parse_vdev

#: Where the DCU runtime reads a container's vdev configs (hygon-dcu.md §2.2).
DEFAULT_VDEV_DIR = Path("/etc/vdev/docker")
DEFAULT_DEV_DIR = Path("/dev")
DEFAULT_SYS_DIR = Path("/sys")

#: Names treated as vdev files. Wider than ``vdev<N>.conf`` on purpose: a misnamed file such as
#: ``vdev01.conf`` is reported by the strict parser instead of being silently ignored.
_VDEV_GLOB = "vdev*.conf"
_STRICT_NAME = re.compile(r"vdev(0|[1-9][0-9]*)\.conf")
_RENDER = re.compile(r"renderD([0-9]+)")
_CARD = re.compile(r"card([0-9]+)")
_PCI_BUS_ID = re.compile(r"[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]")
#: ``vdev.parse_vdev`` tags rule breaches with ``(rule N: ...)``; used to file a parse problem
#: under its rule's check. An untagged problem is a format problem.
_RULE_TAG = re.compile(r"\(rule ([12]):")

#: The last part of every message about a vdev file the driver wrote: the fix.
_REWRITE_HINT = (
    "the DRA driver on the node writes these files: recreate the pod so the claim is "
    "prepared again, and check the driver's log if it recurs"
)
_INJECT_HINT = (
    "the claim's CDI spec injects it: check that the container lists the claim under "
    "resources.claims and that the container runtime has CDI enabled"
)
_PLAIN_FILE_HINT = (
    "a mock node made without root has plain files here; pass --allow-plain-files to accept them"
)


class Status(StrEnum):
    """Outcome of one check."""

    OK = "ok"
    FAIL = "fail"
    SKIP = "skip"
    """Could not be checked here (e.g. no sysfs); never fails the run."""


class CheckKind(StrEnum):
    """What a check is about; the ``check`` field of the JSON report."""

    VDEV_DIR = "vdev-dir"
    """The vdev directory can be listed."""
    FORMAT = "format"
    """A file passes the strict parser (layout, value ranges, ``enable: 1``)."""
    CU_COUNT = "cu-count"
    """Runtime rule 1: ``cu_count`` equals the popcount of the two ``cu_mask`` words."""
    VDEV_ID = "vdev-id"
    """Runtime rule 2: ``vdev_id`` equals N of ``vdev<N>.conf``."""
    ONE_PER_CARD = "one-per-card"
    """One vdev file per card: the runtime confines a card in a container by one config."""
    PIPE_ID = "pipe-id"
    """Runtime rule 3: no two shares on one card use the same ``pipe_id``."""
    OVERLAP = "overlap"
    """Masks of shares on one card are disjoint."""
    MASK_RANGE = "mask-range"
    """A mask holds no CU beyond the card's CUs (when sysfs says how many)."""
    DEVICE_ID = "device-id"
    """``device_id`` is the card's ordinal among the container's DCUs, in PCI bus order."""
    VARIABLES = "variables"
    """The ``DCU_*`` variables describe exactly the cards and shares the container has."""
    DEVICE_NODE = "device-node"
    """A device node the container needs exists and is a character device."""
    DCU_PRESENT = "dcu-present"
    """A whole-card container has a DCU at all."""


class NodeType(StrEnum):
    """What a device node path turned out to be."""

    CHAR = "char"
    BLOCK = "block"
    FILE = "file"
    DIRECTORY = "directory"
    OTHER = "other"
    MISSING = "missing"


@dataclass(frozen=True, slots=True)
class Check:
    """One verdict: a rule that holds, one problem, or a check that could not run."""

    kind: CheckKind
    status: Status
    message: str
    """For a failure: the problem and what to do about it."""


@dataclass(frozen=True, slots=True)
class VdevFile:
    """One vdev file in the container's vdev directory."""

    name: str
    config: VdevConfig | None
    """The parsed record; None when the strict parser rejected the file."""
    pci_bus_id: str | None
    """From ``config``, or read leniently from a rejected file (to check its card's nodes)."""


@dataclass(frozen=True, slots=True)
class Card:
    """A DCU the container got, with what sysfs says about it (None = unknown)."""

    pci_bus_id: str
    compute_units: int | None
    """``simd_count / simd_per_cu`` from the KFD topology."""
    drm_nodes: tuple[str, ...] | None
    """``/sys/bus/pci/devices/<bus>/drm/*`` names (``card1``, ``renderD129``)."""
    vendor_id: int | None
    """PCI vendor from sysfs; ``0x1d94`` is Hygon."""


@dataclass(frozen=True, slots=True)
class DeviceNode:
    """A DCU device node as the container sees it."""

    path: Path
    type: NodeType
    pci_bus_id: str | None = None
    """The card a ``/dev/dri`` node belongs to, when sysfs maps it."""


@dataclass(frozen=True, slots=True)
class Report:
    """Everything ``verify`` found: what the container got and every check's verdict."""

    vdev_dir: Path
    dev_dir: Path
    sys_dir: Path | None
    vdev_files: tuple[VdevFile, ...]
    ignored: tuple[str, ...]
    """Entries of the vdev directory that are not vdev files (left alone)."""
    cards: tuple[Card, ...]
    device_nodes: tuple[DeviceNode, ...]
    checks: tuple[Check, ...]

    @property
    def whole_card(self) -> bool:
        """No vdev file: the container gets whole DCUs, unconfined by the runtime."""
        return not self.vdev_files

    @property
    def problems(self) -> tuple[Check, ...]:
        """The failed checks."""
        return tuple(c for c in self.checks if c.status is Status.FAIL)

    @property
    def ok(self) -> bool:
        """Whether no check failed."""
        return not self.problems


# --- sysfs -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Sysfs:
    """What the (host's, read-only) sysfs visible in the container says about PCI devices."""

    available: bool
    compute_units: dict[str, int]
    drm_nodes: dict[str, tuple[str, ...]]
    vendor: dict[str, int]
    note: str | None
    """Why part of it could not be read, for SKIP messages."""

    def owner_of(self, drm_name: str) -> str | None:
        """Return the PCI bus id whose ``drm/`` dir lists ``drm_name``."""
        for bus, names in self.drm_nodes.items():
            if drm_name in names:
                return bus
        return None


def _read_sysfs(sys_dir: Path | None) -> _Sysfs:
    if sys_dir is None or not sys_dir.is_dir():
        where = "no --sys-dir" if sys_dir is None else f"{sys_dir} does not exist"
        return _Sysfs(False, {}, {}, {}, where)
    drm_nodes: dict[str, tuple[str, ...]] = {}
    vendor: dict[str, int] = {}
    pci_dir = sys_dir / "bus/pci/devices"
    for entry in _list(pci_dir):
        device = pci_dir / entry
        drm = device / "drm"
        if drm.is_dir():
            drm_nodes[entry] = tuple(sorted(_list(drm), key=_natural))
        vendor_id = _read_hex(device / "vendor")
        if vendor_id is not None:
            vendor[entry] = vendor_id
    compute_units, note = _kfd_compute_units(sys_dir / "class/kfd/kfd/topology/nodes")
    return _Sysfs(True, compute_units, drm_nodes, vendor, note)


def _kfd_compute_units(nodes_dir: Path) -> tuple[dict[str, int], str | None]:
    """Map PCI bus id -> CUs from the KFD topology, as discovery computes them."""
    if not nodes_dir.is_dir():
        return {}, f"{nodes_dir} does not exist"
    found: dict[str, int] = {}
    for name in _list(nodes_dir):
        if not name.isdigit():
            continue
        try:
            props = read_properties(nodes_dir / name / "properties")
        except DiscoveryError as exc:
            return found, str(exc)
        simd_count, simd_per_cu = props.get("simd_count", 0), props.get("simd_per_cu", 0)
        location = props.get("location_id")
        if simd_count <= 0 or simd_per_cu <= 0 or location is None:
            continue  # a CPU node, or a node we cannot place on the PCI bus
        bus, devfn = (location >> 8) & 0xFF, location & 0xFF
        bus_id = f"{props.get('domain', 0):04x}:{bus:02x}:{devfn >> 3:02x}.{devfn & 0x7:x}"
        found[bus_id] = simd_count // simd_per_cu
    return found, None


# --- the checks --------------------------------------------------------------------------------


def verify(
    vdev_dir: Path = DEFAULT_VDEV_DIR,
    dev_dir: Path = DEFAULT_DEV_DIR,
    sys_dir: Path | None = DEFAULT_SYS_DIR,
    *,
    environ: Mapping[str, str] | None = None,
    allow_plain_files: bool = False,
) -> Report:
    """Check the DCU share of the container whose vdev dir, ``/dev`` and ``/sys`` are given.

    ``sys_dir`` None (or missing) skips what only sysfs can tell: the card's CU count and which
    ``/dev/dri`` nodes belong to which card (render nodes are then counted instead).
    ``allow_plain_files`` accepts regular files as device nodes, as a mock node made without
    root has them. ``environ`` (the container's environment; None skips the check) is
    compared with what the container has. Reads files only; never raises for what it finds,
    it reports it.
    """
    sysfs = _read_sysfs(sys_dir)
    variables = container_env.parse(environ) if environ is not None else None
    checks: list[Check] = []
    names, ignored = _vdev_entries(vdev_dir, checks)
    files = tuple(_read_vdev_file(vdev_dir, name, checks) for name in names)
    configs = [(f.name, f.config) for f in files if f.config is not None]
    if files:
        _check_rules(files, checks)
        _check_one_file_per_card(configs, variables, checks)
        _check_pipe_ids(configs, checks)
        _check_overlaps(configs, checks)
        _check_mask_range(configs, sysfs, checks)
        buses = sorted({f.pci_bus_id for f in files if f.pci_bus_id is not None})
        nodes = _check_vdcu_nodes(buses, dev_dir, sysfs, checks, allow_plain_files)
        _check_device_ids(configs, nodes, sysfs, variables, checks)
    else:
        nodes, buses = _check_whole_card_nodes(vdev_dir, dev_dir, sysfs, checks, allow_plain_files)
    if variables is not None:
        _check_variables(configs, nodes, sysfs, variables, checks)
    cards = tuple(
        Card(
            pci_bus_id=bus,
            compute_units=sysfs.compute_units.get(bus),
            drm_nodes=sysfs.drm_nodes.get(bus),
            vendor_id=sysfs.vendor.get(bus),
        )
        for bus in buses
    )
    return Report(
        vdev_dir=vdev_dir,
        dev_dir=dev_dir,
        sys_dir=sys_dir,
        vdev_files=files,
        ignored=tuple(ignored),
        cards=cards,
        device_nodes=tuple(nodes),
        checks=tuple(checks),
    )


def _vdev_entries(vdev_dir: Path, checks: list[Check]) -> tuple[list[str], list[str]]:
    """Return the vdev file names (by number, then by name) and the other entries."""
    if not vdev_dir.exists():
        return [], []  # nothing mounted there: a whole-card container
    if not vdev_dir.is_dir():
        checks.append(
            Check(
                CheckKind.VDEV_DIR,
                Status.FAIL,
                f"{vdev_dir} is not a directory: the DCU runtime reads vdev<N>.conf files from "
                f"this directory; {_REWRITE_HINT}",
            )
        )
        return [], []
    try:
        entries = sorted(os.listdir(vdev_dir))
    except OSError as exc:
        checks.append(
            Check(
                CheckKind.VDEV_DIR,
                Status.FAIL,
                f"cannot list {vdev_dir}: {exc.strerror or exc}; the DCU runtime cannot read it "
                "either: check the mount's permissions",
            )
        )
        return [], []
    # Names starting with a dot are temp files of an interrupted atomic write (fsutil).
    visible = [name for name in entries if not name.startswith(".")]
    names = [name for name in visible if fnmatch.fnmatchcase(name, _VDEV_GLOB)]
    ignored = [name for name in visible if name not in names]
    names.sort(key=lambda n: (0, int(m[1]), n) if (m := _STRICT_NAME.fullmatch(n)) else (1, 0, n))
    return names, ignored


def _read_vdev_file(vdev_dir: Path, name: str, checks: list[Check]) -> VdevFile:
    """Parse one file strictly; file each problem under its check and keep the card if known."""
    try:
        text = (vdev_dir / name).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        checks.append(
            Check(CheckKind.FORMAT, Status.FAIL, f"{name}: cannot read: {reason}; {_REWRITE_HINT}")
        )
        return VdevFile(name=name, config=None, pci_bus_id=None)
    try:
        config = parse_vdev(text, file_name=name)
    except VdevError as exc:
        for problem in exc.problems:
            checks.append(
                Check(_kind_of(problem), Status.FAIL, f"{name}: {problem}; {_REWRITE_HINT}")
            )
        return VdevFile(name=name, config=None, pci_bus_id=_lenient_bus_id(text))
    checks.append(
        Check(
            CheckKind.FORMAT,
            Status.OK,
            f"{name} passes the strict vdev parser ({config.pci_bus_id}, {config.cu_count} CUs, "
            f"{config.memory_mib} MiB)",
        )
    )
    return VdevFile(name=name, config=config, pci_bus_id=config.pci_bus_id)


def _kind_of(problem: str) -> CheckKind:
    match = _RULE_TAG.search(problem)
    if match is None:
        return CheckKind.FORMAT
    return CheckKind.CU_COUNT if match[1] == "1" else CheckKind.VDEV_ID


def _lenient_bus_id(text: str) -> str | None:
    """The ``PciBusId`` of a rejected file, so its card's device nodes are still checked."""
    match = re.search(r"^PciBusId:\s*(\S+)\s*$", text, re.MULTILINE)
    if match is None:
        return None
    bus = match[1].lower()
    return bus if _PCI_BUS_ID.fullmatch(bus) else None


def _check_rules(files: Sequence[VdevFile], checks: list[Check]) -> None:
    """OK lines for rules 1 and 2: the strict parser enforces both on every file it accepts."""
    parsed = [f.name for f in files if f.config is not None]
    failed = {c.kind for c in checks if c.status is Status.FAIL}
    for kind, rule in (
        (CheckKind.CU_COUNT, "rule 1: cu_count equals the popcount of the cu_mask words"),
        (CheckKind.VDEV_ID, "rule 2: vdev_id equals N of vdev<N>.conf"),
    ):
        if kind not in failed and parsed:
            checks.append(Check(kind, Status.OK, f"{rule} in {', '.join(parsed)}"))


def _check_one_file_per_card(
    configs: Sequence[tuple[str, VdevConfig]],
    variables: container_env.ContainerVariables | None,
    checks: list[Check],
) -> None:
    """One vdev file per card: the runtime confines a card in a container by one config.

    The driver refuses two shares of one card in one request; shares of one card from two
    requests or claims can still meet in a container, which this reports (what the runtime
    does with two configs for one card is unconfirmed: a file per card is what every known
    writer produces).
    """
    files_of_card: dict[str, list[str]] = {}
    for name, config in configs:
        files_of_card.setdefault(config.pci_bus_id, []).append(name)
    crowded = {bus: names for bus, names in sorted(files_of_card.items()) if len(names) > 1}
    for bus, names in crowded.items():
        claims = _claims_of(configs, variables, bus)
        checks.append(
            Check(
                CheckKind.ONE_PER_CARD,
                Status.FAIL,
                f"{' and '.join(names)} {_both(names)} configure {bus}{claims}: a container takes "
                "one vDCU per card; give the container one share of this card (one claim, or "
                "one request of it)",
            )
        )
    if configs and not crowded:
        checks.append(Check(CheckKind.ONE_PER_CARD, Status.OK, "one vdev file per card"))


def _claims_of(
    configs: Sequence[tuple[str, VdevConfig]],
    variables: container_env.ContainerVariables | None,
    bus: str,
) -> str:
    """`` (claims a, b)``: the claims of the shares on ``bus``, from their variables."""
    if variables is None:
        return ""
    claims: set[str] = set()
    for _, config in configs:
        vdcu = variables.vdcus.get(config.vdev_id)
        if config.pci_bus_id == bus and vdcu is not None and vdcu.values.get("CLAIM"):
            claims.add(vdcu.values["CLAIM"])
    if bus in variables.whole_claims:
        claims.add(variables.whole_claims[bus])
    if not claims:
        return ""
    return f" (claim{'s' if len(claims) > 1 else ''} {', '.join(sorted(claims))})"


def _check_pipe_ids(configs: Sequence[tuple[str, VdevConfig]], checks: list[Check]) -> None:
    """Runtime rule 3, within this container.

    The rule spans every live share on the card, node-wide; other containers' files are not
    visible here, so only this container's shares can be compared.
    """
    users: dict[tuple[str, int], list[str]] = {}
    for name, config in configs:
        users.setdefault((config.pci_bus_id, config.pipe_id), []).append(name)
    clashes = {slot: names for slot, names in sorted(users.items()) if len(names) > 1}
    for (bus, pipe_id), names in clashes.items():
        checks.append(
            Check(
                CheckKind.PIPE_ID,
                Status.FAIL,
                f"{' and '.join(names)} {_both(names)} use pipe_id {pipe_id} on {bus} (rule 3: "
                f"all but one lose the device, silently); {_REWRITE_HINT}",
            )
        )
    if configs and not clashes:
        checks.append(
            Check(
                CheckKind.PIPE_ID,
                Status.OK,
                "rule 3: pipe ids are unique per card among this container's shares (other "
                "containers' shares are not visible here)",
            )
        )


def _check_overlaps(configs: Sequence[tuple[str, VdevConfig]], checks: list[Check]) -> None:
    """Shares on one card hold disjoint CUs (hygon-dcu.md §2.4: disjoint from all live masks)."""
    found = False
    for index, (name, config) in enumerate(configs):
        for other_name, other in configs[:index]:
            if other.pci_bus_id != config.pci_bus_id or not other.mask.overlaps(config.mask):
                continue
            found = True
            common = sorted(set(other.mask.cus()) & set(config.mask.cus()))
            checks.append(
                Check(
                    CheckKind.OVERLAP,
                    Status.FAIL,
                    f"{other_name} and {name} overlap on CUs {_ranges(common)} of "
                    f"{config.pci_bus_id}: shares of one card must use disjoint CUs; "
                    f"{_REWRITE_HINT}",
                )
            )
    if configs and not found:
        checks.append(
            Check(CheckKind.OVERLAP, Status.OK, "CU masks of shares on the same card are disjoint")
        )


def _check_mask_range(
    configs: Sequence[tuple[str, VdevConfig]], sysfs: _Sysfs, checks: list[Check]
) -> None:
    """No mask bit beyond the card's CUs, when the KFD topology says how many it has.

    hygon-dcu.md does not say what the runtime does with such bits (unconfirmed); our allocator
    never sets them, so one means the file was written for another card or altered.
    """
    unknown = sorted({c.pci_bus_id for _, c in configs if c.pci_bus_id not in sysfs.compute_units})
    checked = False
    for name, config in configs:
        total = sysfs.compute_units.get(config.pci_bus_id)
        if total is None:
            continue
        checked = True
        if not config.mask.is_within(total):
            beyond = [cu for cu in config.mask.cus() if cu >= total]
            checks.append(
                Check(
                    CheckKind.MASK_RANGE,
                    Status.FAIL,
                    f"{name}: cu_mask holds CUs {_ranges(beyond)}, beyond the {total} CUs of "
                    f"{config.pci_bus_id} (KFD topology); {_REWRITE_HINT}",
                )
            )
    failed = any(c.kind is CheckKind.MASK_RANGE and c.status is Status.FAIL for c in checks)
    if checked and not failed:
        sizes = ", ".join(
            f"{bus}: {sysfs.compute_units[bus]}"
            for bus in sorted({c.pci_bus_id for _, c in configs})
            if bus in sysfs.compute_units
        )
        checks.append(
            Check(CheckKind.MASK_RANGE, Status.OK, f"CU masks lie within the cards' CUs ({sizes})")
        )
    if unknown:
        why = sysfs.note or "the KFD topology lists no such device"
        checks.append(
            Check(
                CheckKind.MASK_RANGE,
                Status.SKIP,
                f"card size unknown for {', '.join(unknown)} ({why}): masks not checked against it",
            )
        )


def _check_device_ids(
    configs: Sequence[tuple[str, VdevConfig]],
    nodes: Sequence[DeviceNode],
    sysfs: _Sysfs,
    variables: container_env.ContainerVariables | None,
    checks: list[Check],
) -> None:
    """``device_id`` is the card's ordinal among the DCUs of the container, in PCI bus order.

    HAMi found on hardware that a one-DCU container whose file says ``device_id`` 1 gets the
    whole card instead of the share, so the value is the runtime's index of the card in the
    container (hygon-dcu.md §2.1). The cards are those the vdev files name plus the DCUs whose
    render nodes the container has (whole cards take an ordinal too), when sysfs maps render
    nodes to cards; without sysfs only a container whose render nodes are all accounted for by
    the vdev files can be checked.
    """
    if not configs:
        return
    named = {config.pci_bus_id for _, config in configs}
    mapped = _dcus_present(nodes, sysfs)
    unmapped = [n for n in _renders_present(nodes) if n.pci_bus_id is None]
    if len(unmapped) > len(named - mapped):
        checks.append(
            Check(
                CheckKind.DEVICE_ID,
                Status.SKIP,
                f"{len(unmapped)} render node(s) of unknown cards ({sysfs.note or 'no sysfs'}) "
                "beside the vdev files' cards: the container's card order is unknown",
            )
        )
        return
    order = sorted(named | mapped)
    problems = []
    for name, config in configs:
        expected = order.index(config.pci_bus_id)
        if config.device_id != expected:
            problems.append(
                f"{name}: device_id {config.device_id}, but {config.pci_bus_id} is DCU "
                f"{expected} of the container's {len(order)} ({', '.join(order)})"
                f"{_claims_of(configs, variables, config.pci_bus_id)}: the runtime would not "
                "confine the card to this share; give the container the DCUs of one request "
                "(README: vdev files)"
            )
    for problem in problems:
        checks.append(Check(CheckKind.DEVICE_ID, Status.FAIL, problem))
    if not problems:
        pairs = ", ".join(f"{bus} = {order.index(bus)}" for bus in sorted(named))
        checks.append(
            Check(
                CheckKind.DEVICE_ID,
                Status.OK,
                f"device_id is each card's ordinal in the container ({pairs})",
            )
        )


def _renders_present(nodes: Sequence[DeviceNode]) -> list[DeviceNode]:
    return [n for n in nodes if _RENDER.fullmatch(n.path.name) and n.type is not NodeType.MISSING]


def _dcus_present(nodes: Sequence[DeviceNode], sysfs: _Sysfs) -> set[str]:
    """PCI bus ids of the DCUs whose render nodes the container has, as sysfs maps them."""
    return {
        n.pci_bus_id
        for n in _renders_present(nodes)
        if n.pci_bus_id is not None
        and sysfs.vendor.get(n.pci_bus_id, HYGON_VENDOR_ID) == HYGON_VENDOR_ID
    }


def _check_variables(
    configs: Sequence[tuple[str, VdevConfig]],
    nodes: Sequence[DeviceNode],
    sysfs: _Sysfs,
    variables: container_env.ContainerVariables,
    checks: list[Check],
) -> None:
    """The ``DCU_*`` variables match the vdev files and the cards whose nodes are here."""
    problems: list[str] = []
    files = {config.vdev_id: (name, config) for name, config in configs}
    for vdev_id, (name, config) in sorted(files.items()):
        vdcu = variables.vdcus.get(vdev_id)
        if vdcu is None:
            problems.append(f"{name} has no DCU_VDEV{vdev_id}_* variables")
            continue
        expected = {
            "PCI_BUS_ID": config.pci_bus_id,
            "COMPUTE_UNITS": str(config.cu_count),
            "MEMORY_MIB": str(config.memory_mib),
        }
        problems.extend(
            f"DCU_VDEV{vdev_id}_{key} is {vdcu.values.get(key)!r}, but {name} says {value!r}"
            for key, value in expected.items()
            if vdcu.values.get(key) != value
        )
    problems.extend(
        f"DCU_VDEV{vdev_id}_* describe a share whose vdev{vdev_id}.conf the container lacks"
        for vdev_id in sorted(set(variables.vdcus) - set(files))
    )
    cards = {config.pci_bus_id for _, config in configs}
    if sysfs.available:
        cards |= _dcus_present(nodes, sysfs)
        problems.extend(
            f"DCU_{container_env.card_token(bus)}_UUID names {bus}, whose render node this "
            "container lacks"
            for bus in sorted(set(variables.uuids) - cards)
        )
    problems.extend(
        f"{bus} has no DCU_{container_env.card_token(bus)}_UUID variable"
        for bus in sorted(cards - set(variables.uuids))
    )
    for problem in problems:
        checks.append(
            Check(
                CheckKind.VARIABLES,
                Status.FAIL,
                f"{problem}; the claim's CDI spec sets these per device: {_REWRITE_HINT}",
            )
        )
    if not problems:
        described = ", ".join(sorted(variables.uuids)) or "none"
        checks.append(
            Check(
                CheckKind.VARIABLES,
                Status.OK,
                f"DCU_* variables match the container's cards ({described}) and "
                f"{len(files)} vdev file(s)",
            )
        )


# --- device nodes ------------------------------------------------------------------------------


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


def _dri_nodes(dev_dir: Path, sysfs: _Sysfs) -> list[DeviceNode]:
    """The container's ``/dev/dri/card*`` and ``renderD*``, with their card when sysfs knows."""
    dri = dev_dir / "dri"
    names = [n for n in _list(dri) if _CARD.fullmatch(n) or _RENDER.fullmatch(n)]
    return [
        DeviceNode(dri / name, _node_type(dri / name), sysfs.owner_of(name))
        for name in sorted(names, key=_natural)
    ]


def _check_vdcu_nodes(
    buses: Sequence[str],
    dev_dir: Path,
    sysfs: _Sysfs,
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


def _check_whole_card_nodes(
    vdev_dir: Path,
    dev_dir: Path,
    sysfs: _Sysfs,
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


# --- small helpers -----------------------------------------------------------------------------


def _list(directory: Path) -> list[str]:
    """Names in ``directory``; empty when it is missing or unreadable (reported by callers)."""
    try:
        return sorted(os.listdir(directory))
    except OSError:
        return []


def _natural(name: str) -> tuple[str, int]:
    """``renderD129`` sorts before ``renderD1000``."""
    match = re.fullmatch(r"(\D*)(\d+)", name)
    return (name, -1) if match is None else (match[1], int(match[2]))


def _read_hex(path: Path) -> int | None:
    try:
        return int(path.read_text(encoding="ascii").strip(), 16)
    except (OSError, UnicodeDecodeError, ValueError):
        return None


def _both(items: Sized) -> str:
    return "both" if len(items) == 2 else "all"


def _ranges(cus: Iterable[int]) -> str:
    """``0, 1, 2, 5`` -> ``0-2,5``."""
    spans: list[list[int]] = []
    for cu in sorted(cus):
        if spans and cu == spans[-1][1] + 1:
            spans[-1][1] = cu
        else:
            spans.append([cu, cu])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


# --- output ------------------------------------------------------------------------------------


def report_document(report: Report) -> dict[str, object]:
    """The JSON form printed by ``dcu-dra verify --json``."""
    return {
        "ok": report.ok,
        "mode": "whole-card" if report.whole_card else "vdcu",
        "vdevDir": str(report.vdev_dir),
        "devDir": str(report.dev_dir),
        "sysDir": None if report.sys_dir is None else str(report.sys_dir),
        "vdevFiles": [_vdev_document(f) for f in report.vdev_files],
        "ignored": list(report.ignored),
        "cards": [
            {
                "pciBusID": card.pci_bus_id,
                "computeUnits": card.compute_units,
                "drmNodes": None if card.drm_nodes is None else list(card.drm_nodes),
                "vendorID": None if card.vendor_id is None else f"0x{card.vendor_id:04x}",
            }
            for card in report.cards
        ],
        "deviceNodes": [
            {"path": str(n.path), "type": n.type.value, "pciBusID": n.pci_bus_id}
            for n in report.device_nodes
        ],
        "checks": [
            {"check": c.kind.value, "status": c.status.value, "message": c.message}
            for c in report.checks
        ],
    }


def _vdev_document(vdev: VdevFile) -> dict[str, object]:
    config = vdev.config
    if config is None:
        return {"file": vdev.name, "parsed": False, "pciBusID": vdev.pci_bus_id}
    return {
        "file": vdev.name,
        "parsed": True,
        "pciBusID": config.pci_bus_id,
        "computeUnits": config.cu_count,
        "cus": _ranges(config.mask.cus()),
        "cuMask": list(config.mask.hex_words()),
        "memoryMiB": config.memory_mib,
        "deviceID": config.device_id,
        "vdevID": config.vdev_id,
        "pipeID": config.pipe_id,
    }


def format_report(report: Report) -> str:
    """The human form: what the container got, then one ``OK``/``SKIP``/``FAIL`` line per check."""
    lines: list[str] = []
    card_cus = {card.pci_bus_id: card.compute_units for card in report.cards}
    if report.whole_card:
        lines.append(f"whole-card container: no vdev files in {report.vdev_dir}")
    else:
        lines.append(f"vDCU container: {len(report.vdev_files)} vdev file(s) in {report.vdev_dir}")
        header = (
            "FILE",
            "PCI BUS ID",
            "CUS",
            "CU MASK (WORD 0,1)",
            "MEMORY",
            "DEVICE ID",
            "VDEV ID",
            "PIPE ID",
        )
        rows = [_vdev_row(f, card_cus) for f in report.vdev_files]
        lines.extend(_table(header, rows))
    if report.ignored:
        lines.append(f"ignored (not vdev files): {', '.join(report.ignored)}")
    if report.whole_card and report.cards:
        card_rows = [
            (
                card.pci_bus_id,
                "?" if card.compute_units is None else str(card.compute_units),
                ", ".join(card.drm_nodes or ()) or "?",
            )
            for card in report.cards
        ]
        lines.extend(_table(("PCI BUS ID", "CUS", "DRM NODES"), card_rows))
    lines.append("")
    node_rows = [(str(n.path), n.type.value, n.pci_bus_id or "-") for n in report.device_nodes]
    lines.extend(_table(("DEVICE NODE", "TYPE", "PCI BUS ID"), node_rows))
    lines.append("")
    lines.extend(f"{c.status.value.upper()}: {c.message}" for c in report.checks)
    if report.problems:
        lines.append(f"verify: {len(report.problems)} problem(s)")
    else:
        passed = sum(c.status is Status.OK for c in report.checks)
        lines.append(f"verify: all {passed} checks passed")
    return "\n".join(lines) + "\n"


def _vdev_row(vdev: VdevFile, card_cus: dict[str, int | None]) -> tuple[str, ...]:
    config = vdev.config
    if config is None:
        bus = vdev.pci_bus_id or "?"
        return (vdev.name, bus, "?", "(rejected by the parser)", "?", "?", "?", "?")
    total = card_cus.get(config.pci_bus_id)
    cus = str(config.cu_count) if total is None else f"{config.cu_count}/{total}"
    return (
        vdev.name,
        config.pci_bus_id,
        cus,
        ",".join(config.mask.hex_words()),
        f"{config.memory_mib} MiB",
        str(config.device_id),
        str(config.vdev_id),
        str(config.pipe_id),
    )


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
