"""The demo's result table: one row per prepared device or share, from the real sources.

(And :func:`format_json`, which prints a CDI spec short enough to read next to the table.)

Pure: the caller reads the API server (claims, pods, ResourceSlices), the plugins' vdev files
and the fake kubelets' prepared claims; this module only joins them and renders text.

- device, share id and consumed capacity come from each claim's allocation (the scheduler's
  decision);
- CU mask, pipe id and file name come from the vdev files the plugin wrote (the plugin's
  decision); a device with no vdev file is a whole card;
- CDI IDs come from what the plugin answered the fake kubelet (what a runtime would get).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dra_driver import DRIVER_NAME
from dra_driver.testing.cluster import slice_devices
from dra_driver.testing.fakekubelet import PreparedClaim
from dra_driver.util.quantity import parse_integral_quantity
from dra_driver.vdcu.allocator import CuMask
from dra_driver.vdcu.vdev import VdevConfig, vdev_file_name

#: The slice attribute that carries a device's PCI bus id, which vdev files name.
PCI_BUS_ID_ATTRIBUTE = "resource.kubernetes.io/pciBusID"
MIB = 1024 * 1024
#: What the table shows in place of a value a whole card does not have.
NONE = "-"
HEADER = ("POD", "NODE", "DEVICE", "CUS", "MEMORY", "CU MASK", "PIPE", "VDEV", "CDI IDS")


@dataclass(frozen=True, slots=True, kw_only=True)
class ShareRow:
    """One device (whole card) or vDCU share of one claim, as prepared on its node."""

    claim: str
    """``namespace/name`` of the ResourceClaim."""
    claim_uid: str
    pods: tuple[str, ...]
    """``namespace/name`` of every pod the claim is reserved for, sorted."""
    node: str
    device: str
    cu_count: int
    memory_bytes: int
    vdev: VdevConfig | None
    """The share's vdev file; None for a whole card."""
    cdi_ids: tuple[str, ...]
    """CDI device IDs the plugin returned for this device (empty if not prepared)."""

    @property
    def is_whole_card(self) -> bool:
        """Whether the claim holds the whole card (no vdev file confines it)."""
        return self.vdev is None


@dataclass(frozen=True, slots=True)
class _SliceDevice:
    pci_bus_id: str
    cu_count: int
    memory_bytes: int


def build_rows(
    *,
    claims: Iterable[Mapping[str, Any]],
    pods: Iterable[Mapping[str, Any]],
    slices: Iterable[Mapping[str, Any]],
    vdevs: Mapping[str, Sequence[VdevConfig]],
    prepared: Mapping[str, PreparedClaim],
    driver: str = DRIVER_NAME,
) -> list[ShareRow]:
    """Join allocations, vdev files and prepared CDI IDs into rows, sorted by node and device.

    ``vdevs`` and ``prepared`` are keyed by claim UID. A claim's vdev files are matched to its
    allocation results by the card's PCI bus id (from the slices), in allocation order; a
    result left without a vdev file is a whole card, whose size (when the allocation has no
    consumedCapacity, i.e. exclusive sharing) comes from the slice. Claims that are not
    allocated, and results of other drivers, are skipped.
    """
    devices = _slice_devices(slices, driver)
    nodes = {
        str(p["metadata"]["uid"]): str((p.get("spec") or {}).get("nodeName") or "") for p in pods
    }
    rows: list[ShareRow] = []
    for claim in claims:
        meta = claim["metadata"]
        uid = str(meta["uid"])
        status = claim.get("status") or {}
        results = ((status.get("allocation") or {}).get("devices") or {}).get("results") or []
        reserved = [r for r in status.get("reservedFor") or [] if r.get("resource") == "pods"]
        pod_names = tuple(sorted(f"{meta['namespace']}/{r['name']}" for r in reserved))
        pod_nodes = {nodes.get(str(r.get("uid")), "") for r in reserved} - {""}
        unused: dict[str, list[VdevConfig]] = {}
        for config in sorted(vdevs.get(uid, ()), key=lambda c: c.vdev_id):
            unused.setdefault(config.pci_bus_id, []).append(config)
        for result in results:
            if result.get("driver") != driver:
                continue
            pool, name = str(result["pool"]), str(result["device"])
            device = devices.get((pool, name))
            on_card = unused.get(device.pci_bus_id, []) if device else []
            vdev = on_card.pop(0) if on_card else None
            consumed = result.get("consumedCapacity") or {}
            rows.append(
                ShareRow(
                    claim=f"{meta['namespace']}/{meta['name']}",
                    claim_uid=uid,
                    pods=pod_names,
                    # Our pools are named after their node: the answer when no pod tells.
                    node=next(iter(pod_nodes)) if len(pod_nodes) == 1 else pool,
                    device=name,
                    cu_count=_capacity(consumed, "cores", device.cu_count if device else 0),
                    memory_bytes=_capacity(
                        consumed, "memory", device.memory_bytes if device else 0
                    ),
                    vdev=vdev,
                    cdi_ids=_cdi_ids(prepared.get(uid), pool, name, result.get("shareID")),
                )
            )
    return sorted(rows, key=lambda r: (r.node, r.device, _first_cu(r), r.pods))


def _slice_devices(
    slices: Iterable[Mapping[str, Any]], driver: str
) -> dict[tuple[str, str], _SliceDevice]:
    """``(pool, device) -> PCI bus id and full capacity`` of every published device."""
    found: dict[tuple[str, str], _SliceDevice] = {}
    for key, device in slice_devices(slices, driver=driver):
        capacity = device.get("capacity") or {}
        found[key] = _SliceDevice(
            pci_bus_id=str(
                ((device.get("attributes") or {}).get(PCI_BUS_ID_ATTRIBUTE) or {}).get("string", "")
            ),
            cu_count=_capacity_value(capacity, "cores"),
            memory_bytes=_capacity_value(capacity, "memory"),
        )
    return found


def _capacity_value(capacity: Mapping[str, Any], name: str) -> int:
    value = (capacity.get(name) or {}).get("value")
    return parse_integral_quantity(str(value)) if value is not None else 0


def _capacity(consumed: Mapping[str, Any], name: str, whole: int) -> int:
    """A consumed capacity, or ``whole`` when the device was allocated exclusively."""
    value = consumed.get(name)
    return parse_integral_quantity(str(value)) if value is not None else whole


def _cdi_ids(
    claim: PreparedClaim | None, pool: str, device: str, share_id: object
) -> tuple[str, ...]:
    if claim is None:
        return ()
    # Once each: the real kubelet records a shared claim's devices again for every pod.
    return tuple(
        dict.fromkeys(
            cdi_id
            for prepared in claim.devices
            if (prepared.pool, prepared.device) == (pool, device)
            and (prepared.share_id or None) == (share_id or None)
            for cdi_id in prepared.cdi_device_ids
        )
    )


def _first_cu(row: ShareRow) -> int:
    return row.vdev.mask.cus()[0] if row.vdev is not None else -1


# --- rendering ----------------------------------------------------------------------------


def format_cus(mask: CuMask) -> str:
    """CU indexes as ranges: ``0-14``, ``0-7,16-23``."""
    ranges: list[str] = []
    cus = mask.cus()
    start = previous = cus[0] if cus else 0
    for cu in cus[1:]:
        if cu != previous + 1:
            ranges.append(_range(start, previous))
            start = cu
        previous = cu
    if cus:
        ranges.append(_range(start, previous))
    return ",".join(ranges)


def _range(first: int, last: int) -> str:
    return str(first) if first == last else f"{first}-{last}"


def format_memory(memory_bytes: int) -> str:
    """Bytes in MiB, the unit vdev files use: ``8188Mi`` (plain bytes if not whole MiB)."""
    return f"{memory_bytes // MIB}Mi" if memory_bytes % MIB == 0 else str(memory_bytes)


def format_pods(pods: Sequence[str]) -> str:
    """``ns/a`` or, for pods sharing a claim, ``ns/a,b`` (a claim's pods share its namespace)."""
    if not pods:
        return NONE
    namespace = pods[0].partition("/")[0]
    return f"{namespace}/" + ",".join(pod.partition("/")[2] for pod in pods)


def row_cells(row: ShareRow) -> tuple[str, ...]:
    """The table cells of one row, in :data:`HEADER` order."""
    vdev = row.vdev
    return (
        format_pods(row.pods),
        row.node,
        row.device,
        str(row.cu_count),
        format_memory(row.memory_bytes),
        format_cus(vdev.mask) if vdev else "whole card",
        str(vdev.pipe_id) if vdev else NONE,
        vdev_file_name(vdev.vdev_id) if vdev else NONE,
        ",".join(row.cdi_ids) or NONE,
    )


def format_table(rows: Sequence[ShareRow]) -> str:
    """Render rows as an aligned text table with :data:`HEADER`; columns are 2 spaces apart."""
    lines = [HEADER, *(row_cells(row) for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(HEADER))]
    return (
        "\n".join(
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
            for line in lines
        )
        + "\n"
    )


def format_json(value: object, *, indent: str = "") -> str:
    """JSON with each flat object or array (no nested object inside) kept on one line.

    ``json.dumps(indent=2)`` gives every field of a CDI spec its own line; one line per device
    node, mount or env list lets a spec be read in a screenful.
    """
    if not _is_nested(value):
        return json.dumps(value)
    inner = indent + "  "
    if isinstance(value, dict):
        items = [
            f"{inner}{json.dumps(key)}: {format_json(item, indent=inner)}"
            for key, item in value.items()
        ]
        return "{\n" + ",\n".join(items) + f"\n{indent}}}"
    assert isinstance(value, list)
    items = [inner + format_json(item, indent=inner) for item in value]
    return "[\n" + ",\n".join(items) + f"\n{indent}]"


def _is_nested(value: object) -> bool:
    """Whether an object or array holds another object (or an array of them)."""
    if isinstance(value, dict):
        return any(isinstance(item, dict) or _is_nested(item) for item in value.values())
    if isinstance(value, list):
        return any(isinstance(item, dict) or _is_nested(item) for item in value)
    return False
