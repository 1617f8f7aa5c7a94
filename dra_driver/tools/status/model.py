"""What the cluster's DCUs hold, computed from ResourceSlices, ResourceClaims and Pods. Pure.

Takes the API objects as plain dicts (their JSON wire form) and returns typed rows; it never
talks to the API server, so every rule is unit-tested without a cluster. The rules are the
scheduler's (resource-api.md §3.3, ``structured/internal/allocatedstate.go``):

- only the newest generation of a pool counts: the scheduler ignores slices of an older one;
- an allocated claim holds what its results say until it is deallocated, whether or not a pod
  is reserved for it yet;
- a result with ``consumedCapacity`` (a device with ``allowMultipleAllocations``) consumes
  exactly those amounts; a capacity it does not list consumes nothing;
- a result without it took the whole device: every capacity, all vDCU slots included;
- a result with ``adminAccess`` consumes nothing (the scheduler ignores such allocations when
  it checks what is in use), but is listed as a holder.

A device is unhealthy when it carries a taint: the driver taints a DCU that fails its health
checks with ``dcu.hygon.com/unhealthy``; other taints (a DeviceTaintRule's are not in the
slice and not shown) are shown as they are.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from dra_driver.util.quantity import parse_quantity_exact

#: Capacity names the driver publishes (cluster/slices.py; kept literal: this layer sits above
#: it but the names are part of the API our users write, so they never change).
CORES = "cores"
MEMORY = "memory"
VDEVICES = "vdevices"
#: The taint the daemon puts on a DCU that fails its health checks.
UNHEALTHY_TAINT_KEY = "dcu.hygon.com/unhealthy"
HEALTHY = "Healthy"

Obj = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Holder:
    """One allocation result of a claim on a device: who holds what."""

    namespace: str
    claim: str
    request: str
    """The claim's request name (``<request>/<subrequest>`` for firstAvailable)."""
    share_id: str | None
    """The share's ID; ``None`` for a whole-device allocation."""
    cores: int
    memory_bytes: int
    vdevices: int
    pods: tuple[str, ...]
    """Names of the pods (in ``namespace``) the claim is reserved for."""
    is_admin_access: bool = False
    """Admin access: listed, but consumes nothing."""

    @property
    def claim_ref(self) -> str:
        """``namespace/claim``."""
        return f"{self.namespace}/{self.claim}"

    @property
    def is_whole_device(self) -> bool:
        """The allocation took the whole device (no share ID)."""
        return self.share_id is None


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    """One DCU: what it has, what it is tainted with, and who holds how much of it."""

    node: str
    pool: str
    device: str
    model: str
    pci_bus_id: str
    cores_total: int
    memory_total_bytes: int
    vdevices_total: int
    taints: tuple[str, ...]
    """Each as ``key=value:effect``."""
    holders: tuple[Holder, ...]
    is_shareable: bool
    """Published with ``allowMultipleAllocations`` (vDCU shares possible)."""

    @property
    def health(self) -> str:
        """``Healthy``, or the taints (the unhealthy taint as ``Unhealthy (<reason>)``)."""
        if not self.taints:
            return HEALTHY
        return ", ".join(_taint_label(t) for t in self.taints)

    @property
    def is_healthy(self) -> bool:
        """No taint: new claims can land here."""
        return not self.taints

    @property
    def cores_allocated(self) -> int:
        """Compute units held by allocated claims."""
        return sum(h.cores for h in self.holders)

    @property
    def memory_allocated_bytes(self) -> int:
        """Memory held by allocated claims, in bytes."""
        return sum(h.memory_bytes for h in self.holders)

    @property
    def vdevices_used(self) -> int:
        """Number of vDCU slots held by allocated claims."""
        return sum(h.vdevices for h in self.holders)

    @property
    def claims(self) -> tuple[str, ...]:
        """``namespace/name`` of each claim holding the device, once each, in order."""
        return tuple(dict.fromkeys(h.claim_ref for h in self.holders))

    @property
    def pods(self) -> tuple[str, ...]:
        """``namespace/name`` of each pod using the device, once each, in order."""
        return tuple(dict.fromkeys(f"{h.namespace}/{p}" for h in self.holders for p in h.pods))


@dataclass(frozen=True, slots=True)
class PendingClaim:
    """A claim on one of the driver's DeviceClasses that is not allocated yet."""

    namespace: str
    name: str
    pods: tuple[str, ...]
    """Names of the pods (in ``namespace``) that use the claim."""
    reason: str | None
    """What the scheduler said about a pod using it (``PodScheduled`` false), if anything."""

    @property
    def claim_ref(self) -> str:
        """``namespace/name``."""
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class ClusterStatus:
    """Every DCU (of one node, or of the cluster) and the pending claims of the driver."""

    devices: tuple[DeviceStatus, ...]
    pending: tuple[PendingClaim, ...]
    node: str | None = None
    """The node the devices were restricted to; ``None`` for the whole cluster."""

    @property
    def unhealthy(self) -> int:
        """DCUs carrying a taint."""
        return sum(not d.is_healthy for d in self.devices)

    @property
    def free_cores(self) -> int:
        """Compute units not held by any claim, on untainted DCUs (where claims can land)."""
        return sum(max(d.cores_total - d.cores_allocated, 0) for d in self.devices if d.is_healthy)

    @property
    def free_memory_bytes(self) -> int:
        """Memory not held by any claim, on untainted DCUs."""
        return sum(
            max(d.memory_total_bytes - d.memory_allocated_bytes, 0)
            for d in self.devices
            if d.is_healthy
        )


def build_status(
    *,
    slices: Iterable[Obj],
    claims: Iterable[Obj],
    pods: Iterable[Obj],
    driver: str,
    classes: Iterable[str],
    node: str | None = None,
) -> ClusterStatus:
    """Return the status of the driver's devices and pending claims.

    Deterministic: devices sorted by node and name, holders and pending claims by namespace
    and name. ``classes`` are the DeviceClasses whose pending claims count (see
    :func:`driver_classes`); ``node`` restricts the devices (pending claims have no node yet
    and are always listed).
    """
    claims = list(claims)
    pod_index = _PodIndex(pods)
    published = _published_devices(slices, driver=driver, node=node)
    held: dict[tuple[str, str], list[Holder]] = {}
    for claim in sorted(claims, key=_name_key):
        allocation = (claim.get("status") or {}).get("allocation")
        if not allocation:
            continue
        reserved = tuple(
            str(r.get("name", ""))
            for r in (claim.get("status") or {}).get("reservedFor") or []
            if r.get("resource", "pods") == "pods"
        )
        for result in (allocation.get("devices") or {}).get("results") or []:
            if result.get("driver") != driver:
                continue
            key = (str(result.get("pool", "")), str(result.get("device", "")))
            device = published.get(key)
            if device is None:
                continue  # another node's (with --node), or a device no longer published
            held.setdefault(key, []).append(_holder(claim, result, device, reserved))
    devices = tuple(
        _device_status(entry, tuple(held.get(key, ())))
        for key, entry in sorted(published.items(), key=lambda kv: (kv[1].node, kv[0][1]))
    )
    class_names = frozenset(classes)
    pending = tuple(
        _pending(claim, pod_index)
        for claim in sorted(claims, key=_name_key)
        if not (claim.get("status") or {}).get("allocation")
        and not (claim.get("metadata") or {}).get("deletionTimestamp")
        and class_names & _requested_classes(claim)
    )
    return ClusterStatus(devices=devices, pending=pending, node=node)


def driver_classes(device_classes: Iterable[Obj], driver: str) -> frozenset[str]:
    """Names of the DeviceClasses that select the driver's devices.

    A class counts when one of its CEL selectors compares ``device.driver`` with the driver's
    name in quotes, as deploy/deviceclass.yaml's classes do. A heuristic, not a CEL evaluation:
    a class written another way is not recognised, and its pending claims are not listed.
    """
    needle = f'"{driver}"'
    found = set()
    for device_class in device_classes:
        for selector in (device_class.get("spec") or {}).get("selectors") or []:
            expression = str((selector.get("cel") or {}).get("expression", ""))
            if "device.driver" in expression and needle in expression:
                found.add(str(device_class["metadata"]["name"]))
    return frozenset(found)


def parse_amount(text: object) -> int:
    """A capacity quantity as a whole number, rounded up (``"1500m"`` -> 2); 0 if malformed.

    Rounded up because the scheduler never hands out a fraction of a CU or a byte; malformed
    values cannot come from the API server, which validates quantities.
    """
    try:
        return math.ceil(parse_quantity_exact(str(text)))
    except ValueError:
        return 0


# --- internals ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Published:
    node: str
    pool: str
    device: Obj


def _published_devices(
    slices: Iterable[Obj], *, driver: str, node: str | None
) -> dict[tuple[str, str], _Published]:
    """The devices of the newest generation of each of the driver's pools, by (pool, device)."""
    ours = [s for s in slices if (s.get("spec") or {}).get("driver") == driver]
    newest: dict[str, int] = {}
    for item in ours:
        pool = item["spec"].get("pool") or {}
        name = str(pool.get("name", ""))
        newest[name] = max(newest.get(name, 0), int(pool.get("generation", 0)))
    devices: dict[tuple[str, str], _Published] = {}
    for item in ours:
        spec = item["spec"]
        pool = spec.get("pool") or {}
        pool_name = str(pool.get("name", ""))
        if int(pool.get("generation", 0)) != newest[pool_name]:
            continue
        slice_node = str(spec.get("nodeName") or pool_name)
        if node is not None and slice_node != node:
            continue
        for device in spec.get("devices") or []:
            devices[(pool_name, str(device.get("name", "")))] = _Published(
                slice_node, pool_name, device
            )
    return devices


def _capacity(device: Obj, name: str) -> int:
    return parse_amount(((device.get("capacity") or {}).get(name) or {}).get("value", "0"))


def _holder(claim: Obj, result: Obj, published: _Published, reserved: tuple[str, ...]) -> Holder:
    meta = claim.get("metadata") or {}
    consumed = result.get("consumedCapacity")
    is_admin = bool(result.get("adminAccess"))
    if is_admin:
        amounts = (0, 0, 0)
    elif consumed is not None:
        amounts = (
            parse_amount(consumed.get(CORES, "0")),
            parse_amount(consumed.get(MEMORY, "0")),
            parse_amount(consumed.get(VDEVICES, "0")),
        )
    else:
        device = published.device
        amounts = (
            _capacity(device, CORES),
            _capacity(device, MEMORY),
            _capacity(device, VDEVICES),
        )
    return Holder(
        namespace=str(meta.get("namespace", "")),
        claim=str(meta.get("name", "")),
        request=str(result.get("request", "")),
        share_id=result.get("shareID"),
        cores=amounts[0],
        memory_bytes=amounts[1],
        vdevices=amounts[2],
        pods=reserved,
        is_admin_access=is_admin,
    )


def _device_status(published: _Published, holders: tuple[Holder, ...]) -> DeviceStatus:
    device = published.device
    attributes = device.get("attributes") or {}

    def attribute(name: str) -> str:
        value = attributes.get(name) or {}
        return str(next(iter(value.values()), "")) if value else ""

    return DeviceStatus(
        node=published.node,
        pool=published.pool,
        device=str(device.get("name", "")),
        model=attribute("model"),
        pci_bus_id=attribute("resource.kubernetes.io/pciBusID"),
        cores_total=_capacity(device, CORES),
        memory_total_bytes=_capacity(device, MEMORY),
        vdevices_total=_capacity(device, VDEVICES),
        taints=tuple(
            f"{t.get('key', '')}={t.get('value', '')}:{t.get('effect', '')}"
            for t in device.get("taints") or []
        ),
        holders=holders,
        is_shareable=bool(device.get("allowMultipleAllocations")),
    )


def _taint_label(taint: str) -> str:
    key, _, rest = taint.partition("=")
    value = rest.rpartition(":")[0]
    if key == UNHEALTHY_TAINT_KEY:
        return f"Unhealthy ({value})" if value else "Unhealthy"
    return taint


def _requested_classes(claim: Obj) -> set[str]:
    found: set[str] = set()
    for request in ((claim.get("spec") or {}).get("devices") or {}).get("requests") or []:
        exactly = request.get("exactly") or {}
        if exactly.get("deviceClassName"):
            found.add(str(exactly["deviceClassName"]))
        for sub in request.get("firstAvailable") or []:
            if sub.get("deviceClassName"):
                found.add(str(sub["deviceClassName"]))
        if request.get("deviceClassName"):  # v1beta1's flat form, in case a client sends it
            found.add(str(request["deviceClassName"]))
    return found


class _PodIndex:
    """Which pods use which claim, and what the scheduler said about them."""

    def __init__(self, pods: Iterable[Obj]) -> None:
        self.users: dict[tuple[str, str], list[Obj]] = {}
        self.by_uid: dict[str, Obj] = {}
        for pod in pods:
            meta = pod.get("metadata") or {}
            namespace = str(meta.get("namespace", ""))
            self.by_uid[str(meta.get("uid", ""))] = pod
            names = {
                str(c["resourceClaimName"])
                for c in (pod.get("spec") or {}).get("resourceClaims") or []
                if c.get("resourceClaimName")
            }
            status = pod.get("status") or {}
            names |= {
                str(c["resourceClaimName"])
                for c in status.get("resourceClaimStatuses") or []
                if c.get("resourceClaimName")
            }
            # The claim the scheduler made for `resources.limits: {hygon.com/dcu: 1}`.
            extended = (status.get("extendedResourceClaimStatus") or {}).get("resourceClaimName")
            if extended:
                names.add(str(extended))
            for name in names:
                self.users.setdefault((namespace, name), []).append(pod)

    def pods_of(self, claim: Obj) -> list[Obj]:
        """The pods using ``claim``: by name, or as the owner of a template-generated claim."""
        meta = claim.get("metadata") or {}
        found = {
            id(p): p
            for p in self.users.get((str(meta.get("namespace", "")), str(meta.get("name"))), [])
        }
        for owner in meta.get("ownerReferences") or []:
            pod = self.by_uid.get(str(owner.get("uid", "")))
            if owner.get("kind") == "Pod" and pod is not None:
                found[id(pod)] = pod
        return sorted(found.values(), key=_name_key)


def _pending(claim: Obj, pods: _PodIndex) -> PendingClaim:
    meta = claim.get("metadata") or {}
    users = pods.pods_of(claim)
    reason = None
    for pod in users:
        reason = _unschedulable_message(pod)
        if reason:
            break
    return PendingClaim(
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        pods=tuple(str((p.get("metadata") or {}).get("name", "")) for p in users),
        reason=reason,
    )


def _unschedulable_message(pod: Obj) -> str | None:
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            message = str(condition.get("message") or condition.get("reason") or "")
            return " ".join(message.split()) or None
    return None


def _name_key(obj: Obj) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return (str(meta.get("namespace", "")), str(meta.get("name", "")))
