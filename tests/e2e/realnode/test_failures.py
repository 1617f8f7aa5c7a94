"""End to end on a real node: what goes wrong on a node, and what the real kubelet then does.

- a DCU in use fails: the plugin taints it in its ResourceSlice and the kubelet, fed by the
  plugin's health stream, shows it Unhealthy in the pod's ``allocatedResourcesStatus``; both
  are undone on recovery;
- the kubelet restarts while pods run: their containers keep running, the kubelet
  re-registers the plugin within seconds, the slices it wiped are published again, and new
  pods are prepared;
- the plugin is SIGKILLed (its sockets stay): the kubelet wipes the node's slices ~30 s after
  the connection dropped; the restarted plugin republishes them and unprepares the claims the
  killed one prepared;
- a rolling update of the plugin (the chart's ``maxSurge`` rollout: new instance, then the old
  one stopped) while pods keep starting: every pod runs and verifies, nothing is left.
"""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

from dra_driver import DRIVER_NAME
from dra_driver.cluster.kube import KubeClient, paths
from dra_driver.testing.cluster import wait_for_pod_running
from dra_driver.testing.realnode import RealNode
from dra_driver.testing.realnode.node import PluginInstance
from dra_driver.testing.waiting import wait_for
from tests.e2e.conftest import mock_fault
from tests.e2e.realnode.helpers import (
    MARKS,
    claim_spec,
    claim_template,
    exec_verify,
    resource_claim,
    share_request,
    verify_container,
    verify_pod,
    whole_request,
)

pytestmark = MARKS

#: Device 1 of the default mock node (a Z100).
SECOND_CARD = "dcu-0000-5e-00-0"
REGISTERED = "registered with the kubelet as DRA driver"
#: The kubelet wipes a driver's slices this long after its last plugin disconnected.
WIPE_DELAY_S = 30.0


def share_pod(kube: KubeClient, namespace: str, node: RealNode, name: str) -> dict[str, Any]:
    """A pod with a vDCU share of its own (from a template), Running."""
    template = f"{name}-share"
    kube.create(
        paths.resource_claim_templates(namespace),
        claim_template(template, claim_spec([share_request("dcu")])),
    )
    kube.create(
        paths.pods(namespace),
        verify_pod(
            name,
            node.name,
            [verify_container("ctr", [{"name": "dcu"}])],
            [{"name": "dcu", "resourceClaimTemplateName": template}],
        ),
    )
    return wait_for_pod_running(kube, namespace, name, timeout_s=120)


def slices(kube: KubeClient, node: RealNode) -> list[dict[str, Any]]:
    items = kube.list(
        paths.resource_slices(),
        field_selector=f"spec.driver={DRIVER_NAME},spec.nodeName={node.name}",
    ).get("items")
    return list(items or [])


def slice_taints(kube: KubeClient, node: RealNode) -> dict[str, list[dict[str, Any]]]:
    return {
        device["name"]: device["taints"]
        for s in slices(kube, node)
        for device in s["spec"].get("devices") or []
        if device.get("taints")
    }


def resource_health(pod: dict[str, Any], claim: str = "dcu") -> tuple[str, str] | None:
    """(health, message) the kubelet shows for the one device of the pod's ``claim``, which
    must be :data:`SECOND_CARD`.

    The kubelet names a device by its first CDI device ID
    (``k8s.dcu.hygon.com/dcu=<claim uid>-<device>-...``).
    """
    for status in pod["status"].get("containerStatuses") or []:
        for entry in status.get("allocatedResourcesStatus") or []:
            if entry["name"] == f"claim:{claim}":
                (resource,) = entry["resources"]
                assert resource["resourceID"].startswith(f"k8s.{DRIVER_NAME}/dcu="), resource
                assert f"-{SECOND_CARD}-" in resource["resourceID"], resource
                return resource.get("health", ""), resource.get("message", "")
    return None


def unhealthy(health: tuple[str, str] | None) -> tuple[str, str] | None:
    return health if health is not None and health[0] == "Unhealthy" else None


def registrations(node: RealNode) -> int:
    return node.plugin.output().count(REGISTERED)


def test_a_failing_dcu_is_tainted_and_shown_unhealthy_in_the_pod_status(
    real_node: RealNode, kube: KubeClient, namespace: str
) -> None:
    kube.create(
        paths.resource_claims(namespace),
        resource_claim("second-card", claim_spec([whole_request("dcu", index=1)])),
    )
    kube.create(
        paths.pods(namespace),
        verify_pod(
            "on-second",
            real_node.name,
            [verify_container("ctr", [{"name": "dcu"}])],
            [{"name": "dcu", "resourceClaimName": "second-card"}],
        ),
    )
    pod_path = paths.pods(namespace, "on-second")
    wait_for_pod_running(kube, namespace, "on-second", timeout_s=120)
    wait_for(
        lambda: resource_health(kube.get(pod_path)) == ("Healthy", ""),
        timeout_s=30,
        description="the kubelet to show the allocated DCU Healthy",
        details=lambda: kube.get(pod_path)["status"].get("containerStatuses"),
    )
    assert slice_taints(kube, real_node) == {}

    started = time.monotonic()
    assert "is now lost" in mock_fault(real_node.mock_root, 1, "lost")
    wait_for(
        lambda: SECOND_CARD in slice_taints(kube, real_node),
        timeout_s=30,
        description="the lost DCU's taint in the slice",
    )
    taint_s = time.monotonic() - started
    health = wait_for(
        lambda: unhealthy(resource_health(kube.get(pod_path))),
        timeout_s=30,
        description="the kubelet to show the DCU Unhealthy in the pod status",
        details=lambda: kube.get(pod_path)["status"].get("containerStatuses"),
    )
    status_s = time.monotonic() - started
    print(f"\nlost -> slice taint {taint_s:.1f} s, -> pod status {status_s:.1f} s: {health}")
    assert "does not respond" in health[1]
    ((taint,),) = slice_taints(kube, real_node).values()
    assert (taint["key"], taint["effect"]) == ("dcu.hygon.com/unhealthy", "NoSchedule")
    # NoSchedule: the running pod stays.
    assert kube.get(pod_path)["status"]["phase"] == "Running"

    assert "recovered" in mock_fault(real_node.mock_root, 1, "recover")
    wait_for(
        lambda: slice_taints(kube, real_node) == {},
        timeout_s=30,
        description="the taint removed after recovery",
    )
    wait_for(
        lambda: resource_health(kube.get(pod_path)) == ("Healthy", ""),
        timeout_s=30,
        description="the kubelet to show the DCU Healthy again",
        details=lambda: kube.get(pod_path)["status"].get("containerStatuses"),
    )


def test_a_kubelet_restart_keeps_pods_running_and_re_registers_the_plugin(
    real_node: RealNode, kube: KubeClient, namespace: str
) -> None:
    before = share_pod(kube, namespace, real_node, "before")
    (status,) = before["status"]["containerStatuses"]
    registered = registrations(real_node)
    old_slices = {s["metadata"]["uid"] for s in slices(kube, real_node)}
    assert old_slices

    real_node.kubelet.stop()
    started = time.monotonic()
    real_node.kubelet.start()
    wait_for(
        lambda: registrations(real_node) > registered,
        timeout_s=60,
        description="the restarted kubelet to register the plugin",
        details=lambda: real_node.kubelet.log_tail(),
    )
    registered_s = time.monotonic() - started
    # The kubelet wipes the node's slices when it starts; the plugin publishes them again.
    wait_for(
        lambda: (
            (now := slices(kube, real_node))
            and not {s["metadata"]["uid"] for s in now} & old_slices
        ),
        timeout_s=60,
        description="the node's slices replaced",
    )
    republished_s = time.monotonic() - started
    real_node.wait_node_ready(timeout_s=60)
    print(
        f"\nkubelet restart -> plugin registered {registered_s:.1f} s, slices {republished_s:.1f} s"
    )

    # The container was not restarted, and still sees its share.
    pod = kube.get(paths.pods(namespace, "before"))
    (after,) = pod["status"]["containerStatuses"]
    assert after["containerID"] == status["containerID"]
    assert after["restartCount"] == 0 and "running" in after["state"], after
    exec_verify(real_node, pod)
    # The kubelet prepares new pods through the re-registered plugin.
    share_pod(kube, namespace, real_node, "after")
    kube.delete(paths.pods(namespace, "before"), grace_period_s=0)
    kube.delete(paths.pods(namespace, "after"), grace_period_s=0)
    wait_for(
        lambda: not real_node.plugin.spec_files(),
        timeout_s=60,
        description="both claims unprepared",
    )


def test_a_killed_plugin_loses_its_slices_after_30s_and_a_restart_publishes_them(
    real_node: RealNode, kube: KubeClient, namespace: str
) -> None:
    pod = share_pod(kube, namespace, real_node, "survivor")
    instance = real_node.instances[-1]
    registered = registrations(real_node)
    assert slices(kube, real_node)

    assert instance.process.stop(signal.SIGKILL) == -signal.SIGKILL
    killed = time.monotonic()
    assert instance.process.registration_socket.exists()  # SIGKILL leaves the sockets
    wait_for(
        lambda: not slices(kube, real_node),
        timeout_s=WIPE_DELAY_S + 30,
        interval_s=0.5,
        description="the kubelet to wipe the node's slices",
    )
    wiped_s = time.monotonic() - killed
    print(f"\nSIGKILL -> slices wiped after {wiped_s:.1f} s")
    assert WIPE_DELAY_S - 3 <= wiped_s, wiped_s
    assert kube.get(paths.pods(namespace, "survivor"))["status"]["phase"] == "Running"

    # The DaemonSet restarts the container: same pod, same identity, same sockets.
    instance.process.restart()
    wait_for(
        lambda: registrations(real_node) > registered and slices(kube, real_node),
        timeout_s=60,
        description="the restarted plugin registered and its slices published",
        details=lambda: real_node.plugin.log_tail(),
    )
    exec_verify(real_node, pod)
    claim_uid = next(iter(real_node.plugin.checkpoint_claims()))
    kube.delete(paths.pods(namespace, "survivor"), grace_period_s=0)
    wait_for(
        lambda: not real_node.plugin.spec_files(),
        timeout_s=60,
        description="the restarted plugin to unprepare the claim the killed one prepared",
    )
    assert claim_uid not in real_node.plugin.checkpoint_claims()


def test_a_rolling_update_of_the_plugin_while_pods_start(
    real_node: RealNode, kube: KubeClient, namespace: str
) -> None:
    old = real_node.instances[-1]
    started: list[str] = []
    failures: list[BaseException] = []

    def start_pods() -> None:
        try:
            for n in range(4):
                name = f"during-{n}"
                share_pod(kube, namespace, real_node, name)
                started.append(name)
        except BaseException as exc:  # reported by the test body
            failures.append(exc)

    starter = threading.Thread(target=start_pods)
    starter.start()
    # The rollout: a new instance (surge), registered, then the old one stopped.
    new: PluginInstance = real_node.start_plugin_instance()
    wait_for(
        lambda: REGISTERED in new.process.output(),
        timeout_s=60,
        description="the kubelet to register the new instance",
        details=lambda: new.process.log_tail(),
    )
    assert real_node.stop_plugin_instance(old) == 0, old.process.log_tail()
    starter.join(timeout=300)
    assert not failures, failures
    assert len(started) == 4, started

    for name in started:
        exec_verify(real_node, kube.get(paths.pods(namespace, name)))
    prepared_by = {
        "old": old.process.output().count("] prepared claim"),
        "new": new.process.output().count("] prepared claim"),
    }
    print(f"\nprepared during the rollout: {prepared_by}")
    assert sum(prepared_by.values()) == 4, prepared_by
    assert "prepare failed" not in old.process.output() + new.process.output()

    for name in started:
        kube.delete(paths.pods(namespace, name), grace_period_s=0)
    wait_for(
        lambda: not real_node.plugin.spec_files() and not real_node.plugin.vdev_files(),
        timeout_s=60,
        description="the new instance to unprepare every claim",
    )
    assert new.process.output().count("] unprepared claim") == 4
