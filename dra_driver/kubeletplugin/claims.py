"""ResourceClaim JSON (as the API server returns it) -> ``model.Claim`` for our driver and node.

This is the boundary where wire shapes end: everything the core receives has been checked
here, and every problem becomes one ``ClaimError`` (or ``ClaimConfigError`` for opaque config)
whose message names the claim, the cause and, where it helps, what to do. Results of other
drivers are ignored. Pure: no I/O, never raises anything but a ``DriverError``, whatever the
input (a claim is user-controlled data).

The kubelet's reference to a claim is checked first, before anything uses it
(``check_claim_ref``): the namespace and name go into the API path and into log lines and the
core names files and CDI devices after the UID, so a namespace that is not a DNS label, a name
that is not a DNS subdomain (``../x``, ``a/b``, a NUL, 300 characters) or a UID that is not a
canonical UUID never gets further. Messages quote such values shortened and escaped
(``errors.quoted``), so every error stays one readable line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, TypeGuard

from dra_driver.cluster.slices import CORES, MEMORY, VDEVICES
from dra_driver.errors import ClaimConfigError, ClaimError, quoted
from dra_driver.node.devices import DeviceName
from dra_driver.prepare.model import AllocatedShare, Claim, ClaimRef, ClaimUID, is_uuid
from dra_driver.util.quantity import parse_integral_quantity
from dra_driver.vdcu.opaque import OpaqueConfig, decode_configs, effective_config

#: Device names and namespaces are DNS labels (the API validates them); device names end up in
#: CDI names.
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
#: ResourceClaim names are DNS subdomains (the API server's rule for them).
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_DNS_SUBDOMAIN_MAX_CHARS = 253
#: The capacities our slices publish; a shared allocation consumes all of them.
CAPACITIES = (CORES, MEMORY, VDEVICES)


def is_namespace_name(text: object) -> TypeGuard[str]:
    """Whether ``text`` can name a namespace (a DNS label: 1-63 of ``a-z``, ``0-9``, ``-``)."""
    return isinstance(text, str) and _DNS_LABEL.fullmatch(text) is not None


def is_claim_name(text: object) -> TypeGuard[str]:
    """Whether ``text`` can name a ResourceClaim (a DNS subdomain of at most 253 characters)."""
    return (
        isinstance(text, str)
        and len(text) <= _DNS_SUBDOMAIN_MAX_CHARS
        and _DNS_SUBDOMAIN.fullmatch(text) is not None
    )


def describe_claim(*, namespace: object, name: object, uid: object) -> str:
    """How messages name a claim the kubelet sent: ``ns/name (uid ...)``, odd parts quoted.

    A valid part is shown as it is; anything else goes through ``errors.quoted``, so a name
    with a newline or a megabyte UID cannot break or bury a message or a log line.
    """
    shown_namespace = namespace if is_namespace_name(namespace) else quoted(namespace)
    shown_name = name if is_claim_name(name) else quoted(name)
    shown_uid = uid if is_uuid(uid) else quoted(uid)
    return f"{shown_namespace}/{shown_name} (uid {shown_uid})"


def check_claim_uid(uid: object, *, namespace: str, name: str) -> ClaimUID:
    """Return ``uid`` as a ``ClaimUID`` if it is a canonical UUID; ``ClaimError`` otherwise.

    ``namespace`` and ``name`` go into the message as they are: check them first
    (``check_claim_ref``).
    """
    if not is_uuid(uid):
        raise ClaimError(
            f"claim {namespace}/{name}: uid {quoted(uid)} is not a UUID; refusing to prepare it "
            "(claim UIDs name files on this node)"
        )
    return ClaimUID(uid)


def check_claim_ref(*, namespace: object, name: object, uid: object) -> ClaimRef:
    """The kubelet's reference to a claim, checked before any part of it is used.

    Raises ``ClaimError`` (one line, naming the part that is wrong) for a namespace that is
    not a DNS label, a name that is not a DNS subdomain or a UID that is not a UUID: the
    kubelet only ever sends what the API server accepted, so such a reference was never a
    claim, and reading it would send an odd path to the API server.
    """
    if is_namespace_name(namespace) and is_claim_name(name):
        return ClaimRef(
            uid=check_claim_uid(uid, namespace=namespace, name=name),
            namespace=namespace,
            name=name,
        )
    where = f"claim {describe_claim(namespace=namespace, name=name, uid=uid)}"
    if not is_namespace_name(namespace):
        raise ClaimError(
            f"{where}: namespace {quoted(namespace)} is not a namespace name (a DNS label: at "
            "most 63 lowercase letters, digits and '-')"
        )
    raise ClaimError(
        f"{where}: name {quoted(name)} is not a ResourceClaim name (a DNS subdomain: at most "
        "253 lowercase letters, digits, '-' and '.')"
    )


def claim_from_json(obj: object, *, requested: ClaimRef, driver: str, node_name: str) -> Claim:
    """Convert the ResourceClaim read for ``requested`` into the claim the core prepares.

    ``node_name`` is this node, whose pool (the pool name equals the node name) every
    allocation result of ``driver`` must name. Raises ``ClaimError`` or ``ClaimConfigError``.
    """
    ref = check_claim_ref(namespace=requested.namespace, name=requested.name, uid=requested.uid)
    uid = ref.uid
    where = f"claim {ref}"
    claim = _object(obj, "the claim", where)
    metadata = _object(claim.get("metadata"), "metadata", where)
    actual_uid = metadata.get("uid")
    if not isinstance(actual_uid, str):
        raise ClaimError(f"{where}: malformed claim: metadata.uid is missing")
    if actual_uid != uid:
        raise ClaimError(
            f"{where}: got replaced: the API server now has uid {actual_uid} under this name"
        )
    status = _object(claim.get("status") or {}, "status", where)
    allocation = status.get("allocation")
    if not allocation:
        raise ClaimError(f"{where}: not allocated (status.allocation is empty)")
    allocation = _object(allocation, "status.allocation", where)
    devices = _object(allocation.get("devices") or {}, "status.allocation.devices", where)
    results = _list(devices.get("results"), "status.allocation.devices.results", where)
    ours: list[tuple[int, Mapping[str, Any]]] = []
    for index, result in enumerate(results):
        result = _object(result, f"allocation result #{index}", where)
        if result.get("driver") == driver:
            ours.append((index, result))
    if not ours:
        raise ClaimError(f"{where}: has no allocation results for driver {driver}")
    for index, result in ours:
        pool = result.get("pool")
        if pool != node_name:
            raise ClaimError(
                f"{where}: allocated on another node: result #{index} of driver {driver} is in "
                f"pool {quoted(pool)}, but this is node {node_name!r} (pool {node_name!r})"
            )
    try:
        configs = decode_configs(devices.get("config"), driver=driver)
    except ClaimConfigError as exc:
        raise ClaimConfigError(f"{where}: {exc}") from None
    shares = tuple(
        _share(result, f"{where}: allocation result #{index}", pool=node_name, configs=configs)
        for index, result in ours
    )
    return Claim(ref=ref, shares=shares)


def _share(
    result: Mapping[str, Any], where: str, *, pool: str, configs: Sequence[OpaqueConfig]
) -> AllocatedShare:
    """One allocation result of ours, with the effective config of its request."""
    request = result.get("request")
    if not isinstance(request, str) or not request.split("/", 1)[0]:
        raise ClaimError(f"{where}: malformed: request name {quoted(request)} is not a name")
    where = f"{where} (request {quoted(request)})"
    device = result.get("device")
    if not isinstance(device, str) or _DNS_LABEL.fullmatch(device) is None:
        raise ClaimError(f"{where}: malformed: device {quoted(device)} is not a device name")
    share_id = result.get("shareID")
    if share_id is not None and (not is_uuid(share_id)):
        raise ClaimError(f"{where}: malformed: shareID {quoted(share_id)} is not a UUID")
    admin_access = result.get("adminAccess")
    if admin_access is not None and not isinstance(admin_access, bool):
        raise ClaimError(f"{where}: malformed: adminAccess {quoted(admin_access)} is not a boolean")
    consumed = result.get("consumedCapacity")
    if consumed is not None and not isinstance(consumed, Mapping):
        raise ClaimError(f"{where}: malformed: consumedCapacity is not an object")
    present = [name for name in CAPACITIES if consumed and name in consumed]
    if present and len(present) < len(CAPACITIES):
        missing = [name for name in CAPACITIES if name not in present]
        raise ClaimError(
            f"{where}: inconsistent consumedCapacity: has {', '.join(present)} but not "
            f"{', '.join(missing)}; a share of {device} consumes all of "
            f"{', '.join(CAPACITIES)} (was the ResourceSlice published by another driver "
            "version?)"
        )
    if share_id is not None and not present:
        raise ClaimError(
            f"{where}: inconsistent allocation: shareID {share_id} without consumedCapacity "
            f"({', '.join(CAPACITIES)})"
        )
    if present and share_id is None:
        raise ClaimError(f"{where}: inconsistent allocation: consumedCapacity without a shareID")
    cores = memory_bytes = vdevices = None
    if present:
        assert consumed is not None
        cores = _positive_quantity(consumed[CORES], CORES, where)
        memory_bytes = _positive_quantity(consumed[MEMORY], MEMORY, where)
        vdevices = _positive_quantity(consumed[VDEVICES], VDEVICES, where)
    return AllocatedShare(
        request=request.split("/", 1)[0],
        pool=pool,
        device=DeviceName(device),
        share_id=share_id,
        cores=cores,
        memory_bytes=memory_bytes,
        vdevices=vdevices,
        admin_access=bool(admin_access),
        # The full name: a config may name the main request or one subrequest.
        config=effective_config(configs, request),
    )


def _positive_quantity(value: object, name: str, where: str) -> int:
    """A consumed capacity as a positive whole number (CUs, bytes or slots)."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ClaimError(
            f"{where}: malformed consumedCapacity {name}: {quoted(value)} is not a quantity"
        )
    try:
        number = value if isinstance(value, int) else parse_integral_quantity(value)
    except ValueError as exc:
        raise ClaimError(f"{where}: malformed consumedCapacity {name}: {exc}") from None
    if number <= 0:
        raise ClaimError(
            f"{where}: malformed consumedCapacity {name}: {quoted(value)} is not a positive number"
        )
    return number


def _object(value: object, what: str, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ClaimError(f"{where}: malformed claim: {what} is not an object")
    return value


def _list(value: object, what: str, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ClaimError(f"{where}: malformed claim: {what} is not a list")
    return value
