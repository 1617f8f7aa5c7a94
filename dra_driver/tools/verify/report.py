"""What ``verify`` reports: the verdict types, and the text its messages share.

``Report`` holds what the container got (vdev files, cards, device nodes) and one ``Check``
per rule. The fix that ends every message about a file the driver wrote (``REWRITE_HINT``)
and the CU-range notation (``cu_ranges``) are here because the checks and the rendering both
use them. Pure data: imports nothing but ``vdcu.vdev``'s record type.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from dra_driver.vdcu.vdev import VdevConfig

#: The last part of every message about a vdev file the driver wrote: the fix.
REWRITE_HINT = (
    "the DRA driver on the node writes these files: recreate the pod so the claim is "
    "prepared again, and check the driver's log if it recurs"
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


def cu_ranges(cus: Iterable[int]) -> str:
    """``0, 1, 2, 5`` -> ``0-2,5``."""
    spans: list[list[int]] = []
    for cu in sorted(cus):
        if spans and cu == spans[-1][1] + 1:
            spans[-1][1] = cu
        else:
            spans.append([cu, cu])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)
