"""``ClusterStatus`` as text: the table (plain or wide), the summary, JSON and YAML. Pure.

The table is for people: memory in GiB with one decimal, one row per DCU, an empty cell as
``-``. The JSON/YAML document is for scripts: exact numbers (bytes, CUs), stable key names.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

import yaml

from dra_driver.tools.status.model import ClusterStatus, DeviceStatus, Holder, PendingClaim

GIB = 2**30


class Output(StrEnum):
    """The formats of ``--output``."""

    TABLE = "table"
    WIDE = "wide"
    JSON = "json"
    YAML = "yaml"


def render(status: ClusterStatus, output: Output) -> str:
    """The whole output for one snapshot, ending in a newline."""
    if output is Output.JSON:
        return json.dumps(status_document(status), indent=2) + "\n"
    if output is Output.YAML:
        return yaml.safe_dump(status_document(status), sort_keys=False)
    return format_table(status, wide=output is Output.WIDE) + format_summary(status)


def format_table(status: ClusterStatus, *, wide: bool = False) -> str:
    """One row per DCU, with a continuation line per further claim holding it.

    Each claim is on its own line with the pods it is reserved for, so which pod holds which
    share stays readable on a busy card. ``wide`` adds the PCI bus ID, and per claim its
    share ID (``whole`` for a whole-device allocation) and the CUs and memory it holds.
    """
    if not status.devices:
        where = f"node {status.node}" if status.node else "the cluster"
        return f"No DCUs published in {where}.\n"
    header = ["NODE", "DEVICE", "MODEL"]
    if wide:
        header.append("PCI BUS ID")
    header += ["HEALTH", "CUS", "MEMORY", "VDCUS", "CLAIMS", "PODS"]
    if wide:
        header += ["SHARE", "HELD"]
    rows: list[list[str]] = []
    for device in status.devices:
        cells = [device.node, device.device, device.model or "-"]
        if wide:
            cells.append(device.pci_bus_id or "-")
        cells += [
            device.health,
            f"{device.cores_allocated}/{device.cores_total}",
            f"{_gib(device.memory_allocated_bytes)}/{_gib(device.memory_total_bytes)} GiB",
            f"{device.vdevices_used}/{device.vdevices_total}",
        ]
        holders = device.holders or (None,)
        for index, holder in enumerate(holders):
            row = cells if index == 0 else [""] * len(cells)
            rows.append(row + _holder_cells(holder, wide=wide))
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join(_aligned(row, widths) for row in [header, *rows]) + "\n"


def _holder_cells(holder: Holder | None, *, wide: bool) -> list[str]:
    if holder is None:
        return ["-", "-", "-", "-"] if wide else ["-", "-"]
    pods = ",".join(f"{holder.namespace}/{p}" for p in holder.pods) or "-"
    cells = [holder.claim_ref, pods]
    if wide:
        share = "whole" if holder.is_whole_device else str(holder.share_id)
        if holder.is_admin_access:
            share += " (admin access)"
        cells += [share, f"{holder.cores} CUs, {_gib(holder.memory_bytes)} GiB"]
    return cells


def format_summary(status: ClusterStatus) -> str:
    """The summary line, then one line per pending claim with what the scheduler said."""
    nodes = len({d.node for d in status.devices})
    count = len(status.devices)
    parts = [f"{_plural(count, 'DCU')} on {_plural(nodes, 'node')}"]
    if status.unhealthy:
        parts[0] += f" ({status.unhealthy} unhealthy)"
    parts.append(
        f"free on healthy DCUs: {status.free_cores} CUs, {_gib(status.free_memory_bytes)} GiB"
    )
    parts.append(_plural(len(status.pending), "pending claim"))
    lines = ["; ".join(parts)]
    lines.extend(_pending_line(p) for p in status.pending)
    return "\n".join(lines) + "\n"


def status_document(status: ClusterStatus) -> dict[str, Any]:
    """The JSON/YAML form: exact numbers, camelCase keys as in the Kubernetes API."""
    return {
        "node": status.node,
        "devices": [_device_document(d) for d in status.devices],
        "pendingClaims": [
            {
                "namespace": p.namespace,
                "name": p.name,
                "pods": list(p.pods),
                "reason": p.reason,
            }
            for p in status.pending
        ],
        "summary": {
            "devices": len(status.devices),
            "unhealthy": status.unhealthy,
            "freeCores": status.free_cores,
            "freeMemoryBytes": status.free_memory_bytes,
            "pendingClaims": len(status.pending),
        },
    }


def _device_document(device: DeviceStatus) -> dict[str, Any]:
    return {
        "node": device.node,
        "pool": device.pool,
        "device": device.device,
        "model": device.model,
        "pciBusID": device.pci_bus_id,
        "health": device.health,
        "taints": list(device.taints),
        "shareable": device.is_shareable,
        "cores": {"allocated": device.cores_allocated, "total": device.cores_total},
        "memory": {
            "allocatedBytes": device.memory_allocated_bytes,
            "totalBytes": device.memory_total_bytes,
        },
        "vdevices": {"used": device.vdevices_used, "total": device.vdevices_total},
        "claims": [
            {
                "namespace": h.namespace,
                "name": h.claim,
                "request": h.request,
                "shareID": h.share_id,
                "cores": h.cores,
                "memoryBytes": h.memory_bytes,
                "vdevices": h.vdevices,
                "adminAccess": h.is_admin_access,
                "pods": list(h.pods),
            }
            for h in device.holders
        ],
        "pods": list(device.pods),
    }


def _pending_line(pending: PendingClaim) -> str:
    if not pending.pods:
        return f"pending {pending.claim_ref}: no pod uses it yet"
    pods = ",".join(f"{pending.namespace}/{p}" for p in pending.pods)
    reason = pending.reason or "waiting for the scheduler"
    return f"pending {pending.claim_ref} (pod {pods}): {reason}"


def _aligned(cells: Sequence[str], widths: Sequence[int]) -> str:
    return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()


def _gib(value: int) -> str:
    return f"{value / GIB:.1f}"


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"
