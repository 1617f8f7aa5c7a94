"""The vendor tool ``hy-smi``: parse its ``virtual`` reports and cross-check discovery.

Parsing is pure. ``run_hy_smi`` is the only function that starts a process, bounded by a
timeout because the tool can hang on a wedged card and discovery must not.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from dra_driver.errors import HySmiParseError
from dra_driver.node.devices import Inventory

#: Where hyhal installs the tool; under the discovery root so mock nodes carry their own.
HY_SMI_RELATIVE_PATH = "opt/hyhal/bin/hy-smi"
#: Bound on one hy-smi call: it is a cross-check, never worth stalling start-up for.
HY_SMI_TIMEOUT_S = 10.0

_BLOCK_HEADER = re.compile(r"^\s*(Virtual Device|Device)\s+(\d+)\s*:\s*$")
_FIELD = re.compile(r"^\s*([A-Za-z][A-Za-z ]*?)\s*:\s*(.*?)\s*$")
_MEMORY = re.compile(r"^(\d+)\s*bytes?$")


@dataclass(frozen=True, slots=True)
class HySmiDevice:
    """One ``Device N:`` or ``Virtual Device N:`` block."""

    number: int
    """N of the block header."""
    actual_device: int
    """The physical card the block describes (``Actual Device``)."""
    compute_units: int
    memory_bytes: int
    is_virtual: bool


def parse_device_info(text: str) -> list[HySmiDevice]:
    """Parse ``hy-smi virtual -show-device-info`` or ``-show-vdevice-info`` output.

    Blocks look like::

        Device 0:
            Actual Device: 0
            Compute units: 60
            Global memory: 34342961152 bytes

    Unknown fields and lines outside blocks (banners) are ignored; a block missing one of the
    three fields, or with a malformed value, is an error.
    """
    blocks: list[HySmiDevice] = []
    header: tuple[int, bool, int] | None = None  # (number, is_virtual, line number)
    fields: dict[str, str] = {}

    def close_block() -> None:
        if header is None:
            return
        number, is_virtual, line_number = header
        blocks.append(_block(number, is_virtual, line_number, fields))

    for line_number, line in enumerate(text.splitlines(), start=1):
        match = _BLOCK_HEADER.match(line)
        if match:
            close_block()
            header = (int(match.group(2)), match.group(1) == "Virtual Device", line_number)
            fields = {}
            continue
        field = _FIELD.match(line)
        if header is not None and field:
            fields[field.group(1).lower()] = field.group(2)
    close_block()
    return blocks


def _block(number: int, is_virtual: bool, line_number: int, fields: dict[str, str]) -> HySmiDevice:
    kind = "Virtual Device" if is_virtual else "Device"
    where = f"hy-smi output line {line_number} ({kind} {number})"
    for needed in ("actual device", "compute units", "global memory"):
        if needed not in fields:
            raise HySmiParseError(f"{where}: no '{needed.capitalize()}:' line in the block")
    memory = _MEMORY.match(fields["global memory"])
    if not memory:
        raise HySmiParseError(
            f"{where}: Global memory {fields['global memory']!r} is not '<N> bytes'"
        )
    try:
        actual = int(fields["actual device"])
        cus = int(fields["compute units"])
    except ValueError as exc:
        raise HySmiParseError(f"{where}: {exc}") from exc
    return HySmiDevice(
        number=number,
        actual_device=actual,
        compute_units=cus,
        memory_bytes=int(memory.group(1)),
        is_virtual=is_virtual,
    )


def crosscheck(inventory: Inventory, reported: list[HySmiDevice]) -> list[str]:
    """Compare discovery with what hy-smi reports; return one line per disagreement."""
    problems: list[str] = []
    physical = {d.actual_device: d for d in reported if not d.is_virtual}
    if len(physical) != len(inventory.devices):
        problems.append(
            f"hy-smi reports {len(physical)} DCU(s), sysfs discovery found {len(inventory.devices)}"
        )
    for device in inventory.devices:
        seen = physical.get(device.index)
        if seen is None:
            continue
        if seen.compute_units != device.compute_units:
            problems.append(
                f"DCU {device.index} ({device.pci_bus_id}): hy-smi says {seen.compute_units} "
                f"compute units, KFD topology says {device.compute_units}"
            )
        if seen.memory_bytes != device.memory_bytes:
            problems.append(
                f"DCU {device.index} ({device.pci_bus_id}): hy-smi says {seen.memory_bytes} "
                f"bytes of memory, KFD topology says {device.memory_bytes}"
            )
    return problems


def find_hy_smi(root: Path) -> Path | None:
    """Return the hy-smi executable under ``root``, if installed."""
    path = root / HY_SMI_RELATIVE_PATH
    return path if path.is_file() else None


def run_hy_smi(executable: Path, *args: str, timeout_s: float = HY_SMI_TIMEOUT_S) -> str:
    """Run hy-smi and return its standard output.

    Raises:
        HySmiParseError: the tool failed, timed out or could not be started.
    """
    try:
        done = subprocess.run(
            [str(executable), *args],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise HySmiParseError(f"running {executable} {' '.join(args)} failed: {exc}") from exc
    if done.returncode != 0:
        raise HySmiParseError(
            f"{executable} {' '.join(args)} exited {done.returncode}: {done.stderr.strip()}"
        )
    return done.stdout
