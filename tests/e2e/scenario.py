"""Building blocks of the e2e scenarios: a shareable device, classes, claims and pods."""

from __future__ import annotations

from typing import Any

from dra_driver.cluster.kube import KubeClient, paths
from dra_driver.testing.cluster import (
    apply_yaml,
    create_object,
    pod_condition,
    resource_slice,
)
from dra_driver.testing.fakekubelet import FakeKubelet

#: A container image that is never pulled (there is no runtime); any valid name works.
IMAGE = "registry.k8s.io/pause:3.10"
#: A quarter of :func:`shared_device` (one of its four vdevices).
QUARTER = {"cores": "15", "memory": "2Gi"}


def shared_device(name: str) -> dict[str, Any]:
    """A device for up to 4 shares: 60 cores, 32Gi, 4 vdevices (resource-api.md §3.2 rules).

    cores and memory default to the whole capacity; each share takes one vdevice.
    """
    return {
        "name": name,
        "allowMultipleAllocations": True,
        "capacity": {
            "cores": {
                "value": "60",
                "requestPolicy": {
                    "default": "60",
                    "validRange": {"min": "1", "max": "60", "step": "1"},
                },
            },
            "memory": {
                "value": "32Gi",
                "requestPolicy": {
                    # min + step <= value, and (max - min) is a multiple of step (§3.2).
                    "default": "32Gi",
                    "validRange": {"min": "1Mi", "max": "32Gi", "step": "1Mi"},
                },
            },
            "vdevices": {
                "value": "4",
                "requestPolicy": {"default": "1", "validValues": ["1"]},
            },
        },
    }


def publish_devices(
    client: KubeClient, kubelet: FakeKubelet, driver: str, devices: list[dict[str, Any]]
) -> dict[str, Any]:
    """Publish one ResourceSlice for the kubelet's node by hand, owned by its Node."""
    return client.create(
        paths.resource_slices(),
        resource_slice(
            node_name=kubelet.node_name,
            node_uid=kubelet.node_uid,
            driver=driver,
            devices=devices,
        ),
    )


def offer_shared_device(client: KubeClient, kubelet: FakeKubelet, *, driver: str) -> None:
    """Once the driver's plugin is registered with ``kubelet``, offer one shareable device.

    Publishes :func:`shared_device` ``dev-0`` on the kubelet's node and a DeviceClass named
    like the driver that selects it.
    """
    kubelet.wait_for_plugin(driver)
    publish_devices(client, kubelet, driver, [shared_device("dev-0")])
    apply_device_class(client, driver=driver)


def apply_device_class(client: KubeClient, *, driver: str) -> None:
    """A DeviceClass named like the driver, selecting its shareable devices."""
    apply_yaml(
        client,
        f"""
apiVersion: resource.k8s.io/v1
kind: DeviceClass
metadata:
  name: {driver}
spec:
  selectors:
  - cel:
      expression: device.driver == "{driver}" && device.allowMultipleAllocations == true
""",
    )


def device_request(driver: str, capacity: dict[str, str] | None) -> dict[str, Any]:
    """The ``devices`` part of a claim spec: one request ``dcu`` of the driver's class."""
    exactly: dict[str, Any] = {"deviceClassName": driver}
    if capacity is not None:
        exactly["capacity"] = {"requests": capacity}
    return {"requests": [{"name": "dcu", "exactly": exactly}]}


def create_claim_template(
    client: KubeClient,
    namespace: str,
    name: str,
    *,
    driver: str,
    capacity: dict[str, str] | None,
) -> dict[str, Any]:
    """A ResourceClaimTemplate with one request of the driver's class."""
    return create_object(
        client,
        {
            "apiVersion": paths.RESOURCE_V1,
            "kind": "ResourceClaimTemplate",
            "metadata": {"name": name},
            "spec": {"spec": {"devices": device_request(driver, capacity)}},
        },
        namespace=namespace,
    )


def create_claim(
    client: KubeClient,
    namespace: str,
    name: str,
    *,
    driver: str,
    capacity: dict[str, str] | None,
) -> dict[str, Any]:
    """A ResourceClaim with one request of the driver's class."""
    return create_object(
        client,
        {
            "apiVersion": paths.RESOURCE_V1,
            "kind": "ResourceClaim",
            "metadata": {"name": name},
            "spec": {"devices": device_request(driver, capacity)},
        },
        namespace=namespace,
    )


def create_pod(
    client: KubeClient,
    namespace: str,
    name: str,
    *,
    template: str | None = None,
    claim: str | None = None,
) -> dict[str, Any]:
    """A one-container pod using one claim, from a template or by name."""
    source = {"resourceClaimTemplateName": template} if template else {"resourceClaimName": claim}
    return create_object(
        client,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name},
            "spec": {
                "automountServiceAccountToken": False,
                "containers": [
                    {"name": "app", "image": IMAGE, "resources": {"claims": [{"name": "dcu"}]}}
                ],
                "resourceClaims": [{"name": "dcu", **source}],
            },
        },
        namespace=namespace,
    )


def unschedulable_message(pod: dict[str, Any]) -> str | None:
    """The PodScheduled=False/Unschedulable message, if the scheduler gave up on the pod."""
    condition = pod_condition(pod, "PodScheduled")
    if condition and condition.get("status") == "False":
        if condition.get("reason") == "Unschedulable":
            return str(condition.get("message"))
    return None
