"""Pod → ResourceClaim bookkeeping, following the kubelet's DRA manager.

Pure functions over API objects (plain dicts): which claims a pod uses, whether a claim may be
prepared for the pod, which drivers it involves, and which CDI device IDs each container gets.
Section marks name the part of the kubelet's DRA plugin protocol followed (key in ``kubelet``):
§5 is the kubelet's DRA manager, kubernetes/kubernetes ``pkg/kubelet/cm/dra/manager.go`` and
``claiminfo.go``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dra_driver.testing.fakekubelet.model import (
    FakeKubeletError,
    PodNotReadyError,
    PreparedDevice,
)

#: Key of the claim the scheduler creates for DRA-backed extended resources; it has no entry
#: in ``spec.resourceClaims`` (resource-api.md §6.3).
EXTENDED_RESOURCE_CLAIM = ""


@dataclass(frozen=True, slots=True)
class PodClaim:
    """One claim a pod uses."""

    pod_claim_name: str
    """``spec.resourceClaims[].name`` (``""`` for the extended-resource claim)."""
    claim_name: str
    """Name of the ResourceClaim object in the pod's namespace."""
    is_generated: bool
    """Created for this pod (from a template or by the scheduler): the pod must own it."""


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta: Mapping[str, Any] = obj.get("metadata") or {}
    return meta


def pod_key(pod: Mapping[str, Any]) -> str:
    """``namespace/name`` of a pod, for messages."""
    return f"{_meta(pod).get('namespace')}/{_meta(pod).get('name')}"


def resolve_pod_claims(pod: Mapping[str, Any]) -> tuple[PodClaim, ...]:
    """The ResourceClaims a pod uses (``resourceclaim.Name`` in the kubelet).

    ``resourceClaimName`` is used as is; a template's claim name comes from
    ``status.resourceClaimStatuses`` (set by the resourceclaim controller). A status entry
    without a name means the claim is not needed and is skipped.
    """
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    statuses = {
        entry.get("name"): entry.get("resourceClaimName")
        for entry in status.get("resourceClaimStatuses") or []
    }
    claims: list[PodClaim] = []
    for pod_claim in spec.get("resourceClaims") or []:
        name = pod_claim.get("name", "")
        if pod_claim.get("resourceClaimName"):
            claims.append(PodClaim(name, str(pod_claim["resourceClaimName"]), is_generated=False))
        elif pod_claim.get("resourceClaimTemplateName"):
            if name not in statuses:
                raise PodNotReadyError(
                    f"pod {pod_key(pod)}: no status.resourceClaimStatuses entry for claim {name!r} "
                    "yet (the resourceclaim controller has not created it)"
                )
            if statuses[name]:
                claims.append(PodClaim(name, str(statuses[name]), is_generated=True))
        else:
            raise FakeKubeletError(
                f"pod {pod_key(pod)}: claim {name!r} has neither resourceClaimName nor "
                "resourceClaimTemplateName"
            )
    extended = (status.get("extendedResourceClaimStatus") or {}).get("resourceClaimName")
    if extended:
        claims.append(PodClaim(EXTENDED_RESOURCE_CLAIM, str(extended), is_generated=True))
    return tuple(claims)


def check_claim_for_pod(
    claim: Mapping[str, Any], pod: Mapping[str, Any], pod_claim: PodClaim
) -> None:
    """Raise unless the kubelet may prepare ``claim`` for ``pod`` (§5 Prepare).

    A generated claim must be owned by the pod (it could be a leftover of an earlier pod with
    the same name); the claim must be allocated and list the pod in ``status.reservedFor``.
    """
    pod_uid = _meta(pod).get("uid")
    name = f"{_meta(claim).get('namespace')}/{_meta(claim).get('name')}"
    if pod_claim.is_generated:
        owners = _meta(claim).get("ownerReferences") or []
        if not any(owner.get("uid") == pod_uid and owner.get("controller") for owner in owners):
            raise FakeKubeletError(
                f"ResourceClaim {name} was not created for pod {pod_key(pod)} "
                "(pod is not the controller owner)"
            )
    status = claim.get("status") or {}
    if not status.get("allocation"):
        raise PodNotReadyError(f"ResourceClaim {name} is not allocated yet")
    reserved = status.get("reservedFor") or []
    if not any(entry.get("uid") == pod_uid for entry in reserved):
        raise PodNotReadyError(
            f"pod {pod_key(pod)} is not allowed to use ResourceClaim {name}: "
            "it is not in status.reservedFor yet"
        )


def claim_drivers(claim: Mapping[str, Any]) -> tuple[str, ...]:
    """The drivers of a claim's allocation results, sorted (one prepare batch per driver)."""
    allocation = (claim.get("status") or {}).get("allocation") or {}
    results = (allocation.get("devices") or {}).get("results") or []
    return tuple(sorted({str(result["driver"]) for result in results if result.get("driver")}))


def base_request_name(request: str) -> str:
    """``<request>/<subrequest>`` (firstAvailable) → ``<request>`` (§5 ``request_names``)."""
    return request.split("/", 1)[0]


def cdi_ids_for_request(devices: Sequence[PreparedDevice], request: str | None) -> list[str]:
    """``ClaimInfo.cdiDevicesAsList``: all devices, or those serving ``request`` (§5)."""
    ids: list[str] = []
    for device in devices:
        if request is None or not device.request_names or request in device.request_names:
            ids.extend(device.cdi_device_ids)
    return ids


def container_cdi_ids(
    pod: Mapping[str, Any],
    pod_claims: Sequence[PodClaim],
    devices_by_claim_name: Mapping[str, Sequence[PreparedDevice]],
) -> dict[str, list[str]]:
    """The CDI device IDs the kubelet passes to each (init) container of ``pod`` (§5).

    For every ``resources.claims[]`` entry of a container: the CDI IDs of all devices of the
    claim, or, when the entry names a ``request``, of the devices whose ``request_names`` is
    empty or contains it. Extended-resource claims map containers to requests through
    ``status.extendedResourceClaimStatus.requestMappings``.
    """
    by_pod_claim = {claim.pod_claim_name: claim.claim_name for claim in pod_claims}
    spec = pod.get("spec") or {}
    extended = (pod.get("status") or {}).get("extendedResourceClaimStatus") or {}
    result: dict[str, list[str]] = {}
    for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        ids: list[str] = []
        for ref in (container.get("resources") or {}).get("claims") or []:
            claim_name = by_pod_claim.get(ref.get("name", ""))
            if claim_name is None:
                continue  # a template claim that is not needed
            ids.extend(
                cdi_ids_for_request(devices_by_claim_name.get(claim_name, ()), ref.get("request"))
            )
        extended_name = by_pod_claim.get(EXTENDED_RESOURCE_CLAIM)
        if extended_name is not None:
            for mapping in extended.get("requestMappings") or []:
                if mapping.get("containerName") == container.get("name"):
                    ids.extend(
                        cdi_ids_for_request(
                            devices_by_claim_name.get(extended_name, ()), mapping.get("requestName")
                        )
                    )
        result[str(container.get("name"))] = ids
    return result
