#!/usr/bin/env python3
"""Mock ``hy-smi`` for a mock DCU node (installed by ``dcu-dra mock create``).

Prints the vendor tool's formats for the node's devices. Inside a container that holds
``/etc/vdev/docker/vdev*.conf`` it prints the vDCU's limits from those files instead, as the
real tool does in a vDCU container, and rejects records the DCU runtime would reject. The
device list below is filled in when the mock node is created. Standard library only.
"""

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

#: Replaced by ``dcu-dra mock create`` with the node's devices (see ``_write_hyhal``).
MOCK_DEVICES: list[dict[str, Any]] = json.loads("[]")
#: Where a container sees its vdev configs; overridable so tests can point elsewhere.
VDEV_DIR = Path(os.environ.get("HY_SMI_VDEV_DIR", "/etc/vdev/docker"))
MIB = 1024 * 1024
USAGE = """usage: hy-smi [--showbus]
       hy-smi virtual -show-device-info
       hy-smi virtual -show-vdevice-info"""


def read_vdev(path: Path) -> dict[str, Any]:
    """Parse a vdev config; raise ValueError where the runtime would reject it."""
    fields: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if ":" in line:
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), []).append(value.strip())
    masks = [int(word, 16) for word in fields.get("cu_mask", [])]
    if len(masks) != 2:
        raise ValueError("needs two cu_mask lines")
    cu_count = int(fields["cu_count"][0])
    if cu_count != sum(bin(word).count("1") for word in masks):
        raise ValueError(f"cu_count {cu_count} is not the popcount of cu_mask")
    number = int(re.fullmatch(r"vdev(\d+)\.conf", path.name).group(1))  # type: ignore[union-attr]
    if int(fields["vdev_id"][0]) != number:
        raise ValueError(f"vdev_id {fields['vdev_id'][0]} does not match the file name")
    mem = re.fullmatch(r"(\d+) MiB", fields["mem"][0])
    if mem is None:
        raise ValueError(f"mem {fields['mem'][0]!r} is not '<N> MiB'")
    return {
        "pciBusId": fields["PciBusId"][0].lower(),
        "deviceId": int(fields["device_id"][0]),
        "vdevId": number,
        "computeUnits": cu_count,
        "memoryBytes": int(mem.group(1)) * MIB,
    }


def container_vdevs() -> list[dict[str, Any]]:
    """The vDCUs of this container, skipping (and reporting) records the runtime rejects."""
    found = []
    paths = sorted(VDEV_DIR.glob("vdev*.conf")) if VDEV_DIR.is_dir() else []
    for path in paths:
        try:
            found.append(read_vdev(path))
        except (ValueError, KeyError, IndexError) as exc:
            print(f"hy-smi: {path}: record rejected: {exc}", file=sys.stderr)
    return found


def actual_index(bus_id: Any) -> int:
    """Map a PCI bus id to the host's device index."""
    for device in MOCK_DEVICES:
        if device["pciBusId"] == bus_id:
            return int(device["index"])
    return -1


def show(header: str, rows: list[tuple[int, int, int, int]]) -> None:
    """Print blocks in hy-smi's virtual report format."""
    for number, actual, cus, memory in rows:
        print(f"{header} {number}:")
        print(f"\tActual Device: {actual}")
        print(f"\tCompute units: {cus}")
        print(f"\tGlobal memory: {memory} bytes")


def main(argv: list[str]) -> int:
    """Entry point."""
    vdevs = container_vdevs()
    in_vdcu_container = VDEV_DIR.is_dir() and any(VDEV_DIR.glob("vdev*.conf"))
    if argv == ["virtual", "-show-device-info"]:
        if in_vdcu_container:
            show(
                "Device",
                [
                    (
                        int(v["deviceId"]),
                        actual_index(v["pciBusId"]),
                        int(v["computeUnits"]),
                        int(v["memoryBytes"]),
                    )
                    for v in vdevs
                ],
            )
        else:
            show(
                "Device",
                [
                    (d["index"], d["index"], d["computeUnits"], d["memoryBytes"])
                    for d in MOCK_DEVICES
                ],
            )
        return 0
    if argv == ["virtual", "-show-vdevice-info"]:
        show(
            "Virtual Device",
            [
                (
                    int(v["vdevId"]),
                    actual_index(v["pciBusId"]),
                    int(v["computeUnits"]),
                    int(v["memoryBytes"]),
                )
                for v in vdevs
            ],
        )
        return 0
    if argv in ([], ["--showbus"]):
        for device in MOCK_DEVICES:
            print(f"DCU[{device['index']}] \t\t: PCI Bus: {device['pciBusId']}")
        return 0
    print(USAGE, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
