"""The checks of the vdev files: the DCU runtime's rules, one file per card, the masks, device ids.

``vdev_entries`` lists the vdev directory, ``read_vdev_file`` parses each file strictly
(``vdev.parse_vdev``) and files each problem under its check: the strict format, runtime rule
1 (``cu_count`` = popcount of the mask), rule 2 (``vdev_id`` = N of ``vdev<N>.conf``). Then
across the files: one file per card, rule 3 (``pipe_id`` unique on a card), disjoint masks on
one card, masks within the card's CUs (from sysfs) and ``device_id`` as the card's ordinal
among the container's DCUs (PCI bus order). Each check appends to the caller's list.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Sequence, Sized
from pathlib import Path

from dra_driver.cdi import container_env
from dra_driver.tools.verify.node_checks import dcus_present, renders_present
from dra_driver.tools.verify.report import (
    REWRITE_HINT,
    Check,
    CheckKind,
    DeviceNode,
    Status,
    VdevFile,
    cu_ranges,
)
from dra_driver.tools.verify.sysfs import Sysfs
from dra_driver.vdcu.vdev import VdevConfig, VdevError, parse_vdev

#: Names treated as vdev files. Wider than ``vdev<N>.conf`` on purpose: a misnamed file such as
#: ``vdev01.conf`` is reported by the strict parser instead of being silently ignored.
_VDEV_GLOB = "vdev*.conf"
_STRICT_NAME = re.compile(r"vdev(0|[1-9][0-9]*)\.conf")
_PCI_BUS_ID = re.compile(r"[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]")
#: ``vdev.parse_vdev`` tags rule breaches with ``(rule N: ...)``; used to file a parse problem
#: under its rule's check. An untagged problem is a format problem.
_RULE_TAG = re.compile(r"\(rule ([12]):")


def vdev_entries(vdev_dir: Path, checks: list[Check]) -> tuple[list[str], list[str]]:
    """Return the vdev file names (by number, then by name) and the other entries."""
    if not vdev_dir.exists():
        return [], []  # nothing mounted there: a whole-card container
    if not vdev_dir.is_dir():
        checks.append(
            Check(
                CheckKind.VDEV_DIR,
                Status.FAIL,
                f"{vdev_dir} is not a directory: the DCU runtime reads vdev<N>.conf files from "
                f"this directory; {REWRITE_HINT}",
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


def read_vdev_file(vdev_dir: Path, name: str, checks: list[Check]) -> VdevFile:
    """Parse one file strictly; file each problem under its check and keep the card if known."""
    try:
        text = (vdev_dir / name).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        checks.append(
            Check(CheckKind.FORMAT, Status.FAIL, f"{name}: cannot read: {reason}; {REWRITE_HINT}")
        )
        return VdevFile(name=name, config=None, pci_bus_id=None)
    try:
        config = parse_vdev(text, file_name=name)
    except VdevError as exc:
        for problem in exc.problems:
            checks.append(
                Check(_kind_of(problem), Status.FAIL, f"{name}: {problem}; {REWRITE_HINT}")
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


def check_rules(files: Sequence[VdevFile], checks: list[Check]) -> None:
    """OK lines for rules 1 and 2: the strict parser enforces both on every file it accepts."""
    parsed = [f.name for f in files if f.config is not None]
    failed = {c.kind for c in checks if c.status is Status.FAIL}
    for kind, rule in (
        (CheckKind.CU_COUNT, "rule 1: cu_count equals the popcount of the cu_mask words"),
        (CheckKind.VDEV_ID, "rule 2: vdev_id equals N of vdev<N>.conf"),
    ):
        if kind not in failed and parsed:
            checks.append(Check(kind, Status.OK, f"{rule} in {', '.join(parsed)}"))


def check_one_file_per_card(
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


def check_pipe_ids(configs: Sequence[tuple[str, VdevConfig]], checks: list[Check]) -> None:
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
                f"all but one lose the device, silently); {REWRITE_HINT}",
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


def check_overlaps(configs: Sequence[tuple[str, VdevConfig]], checks: list[Check]) -> None:
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
                    f"{other_name} and {name} overlap on CUs {cu_ranges(common)} of "
                    f"{config.pci_bus_id}: shares of one card must use disjoint CUs; "
                    f"{REWRITE_HINT}",
                )
            )
    if configs and not found:
        checks.append(
            Check(CheckKind.OVERLAP, Status.OK, "CU masks of shares on the same card are disjoint")
        )


def check_mask_range(
    configs: Sequence[tuple[str, VdevConfig]], sysfs: Sysfs, checks: list[Check]
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
                    f"{name}: cu_mask holds CUs {cu_ranges(beyond)}, beyond the {total} CUs of "
                    f"{config.pci_bus_id} (KFD topology); {REWRITE_HINT}",
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


def check_device_ids(
    configs: Sequence[tuple[str, VdevConfig]],
    nodes: Sequence[DeviceNode],
    sysfs: Sysfs,
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
    mapped = dcus_present(nodes, sysfs)
    unmapped = [n for n in renders_present(nodes) if n.pci_bus_id is None]
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


def _both(items: Sized) -> str:
    return "both" if len(items) == 2 else "all"
