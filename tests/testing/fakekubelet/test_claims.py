"""The fake kubelet resolves claims and CDI IDs per container like the kubelet (§5)."""

from __future__ import annotations

from typing import Any

import pytest

from dra_driver.testing.fakekubelet.claims import (
    PodClaim,
    base_request_name,
    check_claim_for_pod,
    claim_drivers,
    container_cdi_ids,
    resolve_pod_claims,
)
from dra_driver.testing.fakekubelet.model import (
    FakeKubeletError,
    PodNotReadyError,
    PreparedDevice,
)

POD_UID = "pod-uid"


def make_pod(**status: Any) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "ns", "name": "p", "uid": POD_UID},
        "spec": {
            "resourceClaims": [
                {"name": "shared", "resourceClaimName": "claim-a"},
                {"name": "mine", "resourceClaimTemplateName": "tmpl"},
            ],
            "initContainers": [{"name": "init", "resources": {"claims": [{"name": "shared"}]}}],
            "containers": [
                {"name": "all", "resources": {"claims": [{"name": "shared"}, {"name": "mine"}]}},
                {"name": "gpu-only", "resources": {"claims": [{"name": "mine", "request": "gpu"}]}},
                {"name": "none"},
            ],
        },
        "status": status,
    }


def make_claim(*, owner: str | None = None, reserved: bool = True, allocated: bool = True):
    claim: dict[str, Any] = {
        "metadata": {"namespace": "ns", "name": "c", "uid": "claim-uid"},
        "status": {},
    }
    if owner:
        claim["metadata"]["ownerReferences"] = [{"uid": owner, "controller": True}]
    if allocated:
        claim["status"]["allocation"] = {
            "devices": {
                "results": [
                    {"request": "gpu", "driver": "b.example.com", "pool": "p", "device": "d0"},
                    {"request": "x/y", "driver": "a.example.com", "pool": "p", "device": "d1"},
                    {"request": "z", "driver": "a.example.com", "pool": "p", "device": "d2"},
                ]
            }
        }
    if reserved:
        claim["status"]["reservedFor"] = [{"resource": "pods", "name": "p", "uid": POD_UID}]
    return claim


def device(name: str, *requests: str) -> PreparedDevice:
    return PreparedDevice(
        driver="d.example.com",
        pool="pool",
        device=name,
        request_names=requests,
        cdi_device_ids=(f"v/c={name}",),
        share_id=None,
    )


def test_template_claim_name_comes_from_pod_status() -> None:
    pod = make_pod(resourceClaimStatuses=[{"name": "mine", "resourceClaimName": "p-mine-xyz"}])

    assert resolve_pod_claims(pod) == (
        PodClaim("shared", "claim-a", is_generated=False),
        PodClaim("mine", "p-mine-xyz", is_generated=True),
    )


def test_template_claim_without_status_is_not_ready() -> None:
    with pytest.raises(PodNotReadyError, match=r"^pod ns/p: no status.resourceClaimStatuses "):
        resolve_pod_claims(make_pod())


def test_template_claim_status_without_name_is_skipped() -> None:
    pod = make_pod(resourceClaimStatuses=[{"name": "mine"}])

    assert [claim.pod_claim_name for claim in resolve_pod_claims(pod)] == ["shared"]


def test_extended_resource_claim_is_included() -> None:
    pod = make_pod(
        resourceClaimStatuses=[{"name": "mine", "resourceClaimName": "m"}],
        extendedResourceClaimStatus={"resourceClaimName": "p-extended-resources-abc"},
    )

    assert resolve_pod_claims(pod)[-1] == PodClaim("", "p-extended-resources-abc", True)


def test_claim_reserved_for_the_pod_may_be_prepared() -> None:
    check_claim_for_pod(make_claim(), make_pod(), PodClaim("shared", "c", is_generated=False))


@pytest.mark.parametrize(
    ("claim", "error", "message"),
    [
        (make_claim(allocated=False), PodNotReadyError, r"^ResourceClaim ns/c is not allocated"),
        (
            make_claim(reserved=False),
            PodNotReadyError,
            r"^pod ns/p is not allowed to use ResourceClaim ns/c: it is not in status.reservedFor",
        ),
    ],
    ids=["not-allocated", "not-reserved"],
)
def test_claim_not_ready_for_the_pod_is_refused(
    claim: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        check_claim_for_pod(claim, make_pod(), PodClaim("shared", "c", is_generated=False))


def test_generated_claim_of_another_pod_is_refused() -> None:
    with pytest.raises(FakeKubeletError, match=r"^ResourceClaim ns/c was not created for pod ns/p"):
        check_claim_for_pod(
            make_claim(owner="other-pod"), make_pod(), PodClaim("mine", "c", is_generated=True)
        )


def test_generated_claim_owned_by_the_pod_is_accepted() -> None:
    check_claim_for_pod(make_claim(owner=POD_UID), make_pod(), PodClaim("m", "c", True))


def test_drivers_are_unique_and_sorted() -> None:
    assert claim_drivers(make_claim()) == ("a.example.com", "b.example.com")


def test_sub_request_suffix_is_stripped() -> None:
    assert (base_request_name("gpu/large"), base_request_name("gpu")) == ("gpu", "gpu")


def test_cdi_ids_per_container_follow_claim_and_request_references() -> None:
    pod = make_pod(resourceClaimStatuses=[{"name": "mine", "resourceClaimName": "p-mine"}])
    claims = resolve_pod_claims(pod)
    devices = {
        "claim-a": [device("a0")],
        # gpu device, a device of another request, and a claim-wide device (no request names).
        "p-mine": [device("g0", "gpu"), device("n0", "nic"), device("common")],
    }

    ids = container_cdi_ids(pod, claims, devices)

    assert ids == {
        "init": ["v/c=a0"],
        "all": ["v/c=a0", "v/c=g0", "v/c=n0", "v/c=common"],
        "gpu-only": ["v/c=g0", "v/c=common"],
        "none": [],
    }


def test_extended_resource_claim_maps_containers_to_requests() -> None:
    pod = {
        "metadata": {"uid": POD_UID},
        "spec": {"containers": [{"name": "c1"}, {"name": "c2"}]},
        "status": {
            "extendedResourceClaimStatus": {
                "resourceClaimName": "ext",
                "requestMappings": [
                    {"containerName": "c1", "resourceName": "r", "requestName": "container-0"},
                    {"containerName": "c2", "resourceName": "r", "requestName": "container-1"},
                ],
            }
        },
    }
    devices = {"ext": [device("d0", "container-0"), device("d1", "container-1")]}

    ids = container_cdi_ids(pod, resolve_pod_claims(pod), devices)

    assert ids == {"c1": ["v/c=d0"], "c2": ["v/c=d1"]}
