"""The fake kubelet behaves like the kubelet towards DRA plugins (kubelet-plugin-protocol.md)."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from dra_driver.cluster.kube import KubeClient, NotFound, paths
from dra_driver.testing.cluster import (
    REPO_ROOT,
    ControlPlane,
    pod_claims,
    resource_slice,
    unique_name,
    wait_for_pod_gone,
    wait_for_pod_running,
)
from dra_driver.testing.fakekubelet import PREPARE, UNPREPARE
from dra_driver.testing.waiting import wait_for
from tests.e2e.conftest import FakeKubeletFactory, StubPluginFactory
from tests.e2e.scenario import (
    QUARTER,
    apply_device_class,
    create_claim,
    create_claim_template,
    create_pod,
    offer_shared_device,
    publish_devices,
    shared_device,
)
from tests.e2e.stubplugin import cdi_id

pytestmark = pytest.mark.e2e


def node_slices(kube: KubeClient, node: str) -> list[dict[str, Any]]:
    return list(kube.list(paths.resource_slices(), field_selector=f"spec.nodeName={node}")["items"])


def test_kubelet_deletes_the_slices_of_its_node_at_start(
    kube: KubeClient, fake_kubelet: FakeKubeletFactory
) -> None:
    """§5: at start the kubelet deletes every ResourceSlice with spec.nodeName=<node>."""
    node, other = unique_name("node"), unique_name("node")
    for node_name, driver in (
        (node, "a.example.com"),
        (node, "b.example.com"),
        (other, "a.example.com"),
    ):
        kube.create(
            paths.resource_slices(),
            resource_slice(node_name=node_name, node_uid=None, driver=driver, devices=[]),
        )
    try:
        fake_kubelet(node_name=node)

        assert node_slices(kube, node) == []
        assert len(node_slices(kube, other)) == 1
    finally:
        kube.delete_collection(paths.resource_slices(), field_selector=f"spec.nodeName={other}")


def test_slices_of_a_driver_gone_for_the_wiping_delay_are_deleted(
    kube: KubeClient,
    fake_kubelet: FakeKubeletFactory,
    stub_plugin: StubPluginFactory,
    driver_name: str,
) -> None:
    """§5: a driver without a plugin for the wiping delay loses its slices on the node."""
    kubelet = fake_kubelet(wiping_delay_s=1.0)
    plugin = stub_plugin(kubelet, driver=driver_name)
    kubelet.wait_for_plugin(driver_name)
    publish_devices(kube, kubelet, driver_name, [shared_device("dev-0")])

    plugin.stop()

    wait_for(
        lambda: node_slices(kube, kubelet.node_name) == [],
        timeout_s=10,
        description="the driver's slices to be wiped",
    )


def test_a_killed_plugin_that_leaves_its_sockets_loses_its_slices(
    kube: KubeClient,
    fake_kubelet: FakeKubeletFactory,
    stub_plugin: StubPluginFactory,
    driver_name: str,
) -> None:
    """The kubelet v1.36 starts the wipe when no plugin of the driver is connected, not when
    the registration socket goes: a SIGKILLed plugin's files stay, its slices go."""
    kubelet = fake_kubelet(wiping_delay_s=1.0)
    plugin = stub_plugin(kubelet, driver=driver_name)
    wait_for(
        lambda: [p for p in kubelet.connected_plugins() if p.driver == driver_name],
        timeout_s=10,
        description="the plugin's connection",
    )
    publish_devices(kube, kubelet, driver_name, [shared_device("dev-0")])

    plugin.kill()
    killed_at = time.monotonic()

    wait_for(
        lambda: node_slices(kube, kubelet.node_name) == [],
        timeout_s=10,
        description="the killed driver's slices to be wiped",
    )
    assert time.monotonic() - killed_at >= 1.0
    assert plugin.registration_socket.exists()
    assert [p.driver for p in kubelet.registered_plugins()] == [driver_name]
    assert kubelet.connected_plugins() == []


@pytest.mark.parametrize(
    ("options", "error"),
    [
        (
            {"plugin_type": "CSIPlugin"},
            "RegisterPlugin error -- no handler registered for plugin type: CSIPlugin at "
            "socket {socket}",
        ),
        (
            {"supported_versions": ()},
            "RegisterPlugin error -- plugin validation failed with err: invalid supported gRPC "
            "versions of DRA driver plugin {driver} at endpoint {endpoint}: empty list of "
            "supported gRPC services (aka supported versions)",
        ),
    ],
    ids=["wrong-type", "no-supported-versions"],
)
def test_plugin_with_bad_info_is_rejected_and_told_why(
    fake_kubelet: FakeKubeletFactory,
    stub_plugin: StubPluginFactory,
    driver_name: str,
    options: dict[str, Any],
    error: str,
) -> None:
    """§2.3-2.4: validation fails → NotifyRegistrationStatus(false, the kubelet's text)."""
    kubelet = fake_kubelet()
    plugin = stub_plugin(kubelet, driver=driver_name, **options)

    wait_for(
        lambda: plugin.registration_statuses,
        timeout_s=10,
        description="a registration status",
    )

    assert plugin.registration_statuses[0] == (
        False,
        error.format(
            socket=plugin.registration_socket, driver=driver_name, endpoint=plugin.endpoint
        ),
    )
    assert kubelet.registered_plugins() == []
    # The kubelet records the attempt after it answers the plugin: wait for the record too.
    wait_for(kubelet.registration_attempts, timeout_s=10, description="the attempt's record")
    attempt = kubelet.registration_attempts()[0]
    assert (attempt.accepted, attempt.info is not None) == (False, True)


def test_v1beta1_only_plugin_gets_v1beta1_calls_without_share_id(
    kube: KubeClient,
    namespace: str,
    fake_kubelet: FakeKubeletFactory,
    stub_plugin: StubPluginFactory,
    driver_name: str,
) -> None:
    """§1.3/§2.3: the v1beta1 service is used, and it cannot carry share_id."""
    kubelet = fake_kubelet()
    plugin = stub_plugin(kubelet, driver=driver_name, services=("v1beta1.DRAPlugin",))
    assert kubelet.wait_for_plugin(driver_name).service == "v1beta1.DRAPlugin"
    offer_shared_device(kube, kubelet, driver=driver_name)
    create_claim_template(kube, namespace, "quarter", driver=driver_name, capacity=QUARTER)

    pod = create_pod(kube, namespace, "beta", template="quarter")
    pod = wait_for_pod_running(kube, namespace, "beta")

    claim = pod_claims(kube, pod)["dcu"]
    uid = claim["metadata"]["uid"]
    share_id = claim["status"]["allocation"]["devices"]["results"][0]["shareID"]
    (call,) = kubelet.calls(method=PREPARE)
    assert call.grpc_method == (
        "/k8s.io.kubelet.pkg.apis.dra.v1beta1.DRAPlugin/NodePrepareResources"
    )
    assert [c.service for c in plugin.recorded("NodePrepareResources")] == ["v1beta1.DRAPlugin"]
    (device,) = kubelet.prepared_claims()[uid].devices
    assert device.share_id is None
    # The CDI ID still carries the share (the stub read it from the allocation).
    assert kubelet.container_cdi_ids((namespace, "beta")) == {
        "app": [cdi_id(uid, "dev-0", share_id)]
    }


def test_shared_claim_is_prepared_once_and_unprepared_after_the_last_pod(
    kube: KubeClient,
    namespace: str,
    fake_kubelet: FakeKubeletFactory,
    stub_plugin: StubPluginFactory,
    driver_name: str,
) -> None:
    """§5: a claim already prepared on the node is not prepared again; unprepare is last.

    The second pod comes after the first runs: pods start in parallel, and two pods starting
    at once may both send the claim, as in the kubelet (it checks "prepared" before calling).
    """
    kubelet = fake_kubelet()
    plugin = stub_plugin(kubelet, driver=driver_name)
    offer_shared_device(kube, kubelet, driver=driver_name)
    claim = create_claim(kube, namespace, "shared", driver=driver_name, capacity=QUARTER)
    uid = claim["metadata"]["uid"]

    create_pod(kube, namespace, "first", claim="shared")
    wait_for_pod_running(kube, namespace, "first")
    create_pod(kube, namespace, "second", claim="shared")
    wait_for_pod_running(kube, namespace, "second")

    assert [call.claim_uids for call in kubelet.calls(method=PREPARE)] == [(uid,)]
    assert len(plugin.recorded("NodePrepareResources")) == 1
    assert kubelet.prepared_claims()[uid].pod_uids == {
        kube.get(paths.pods(namespace, name))["metadata"]["uid"] for name in ("first", "second")
    }
    assert kubelet.container_cdi_ids((namespace, "first")) == kubelet.container_cdi_ids(
        (namespace, "second")
    )

    kube.delete(paths.pods(namespace, "first"))
    wait_for_pod_gone(kube, namespace, "first")
    assert kubelet.calls(method=UNPREPARE) == []
    assert uid in kubelet.prepared_claims()

    kube.delete(paths.pods(namespace, "second"))
    wait_for_pod_gone(kube, namespace, "second")
    assert [call.claim_uids for call in kubelet.calls(method=UNPREPARE)] == [(uid,)]
    assert [c.claim_uids for c in plugin.recorded("NodeUnprepareResources")] == [(uid,)]
    assert kubelet.prepared_claims() == {}


def test_failed_prepare_keeps_the_pod_pending_and_is_retried(
    kube: KubeClient,
    namespace: str,
    fake_kubelet: FakeKubeletFactory,
    stub_plugin: StubPluginFactory,
    driver_name: str,
) -> None:
    """§5: any prepare failure fails the pod start, which is retried later."""
    kubelet = fake_kubelet(retry_interval_s=2.0)
    stub_plugin(kubelet, driver=driver_name, prepare_failures=1)
    offer_shared_device(kube, kubelet, driver=driver_name)
    create_claim_template(kube, namespace, "quarter", driver=driver_name, capacity=QUARTER)

    create_pod(kube, namespace, "flaky", template="quarter")
    error = wait_for(
        lambda: (e := kubelet.pod_errors().get(f"{namespace}/flaky")) and "injected" in e and e,
        timeout_s=20,
        description="the first prepare to fail",
    )
    phase_after_failure = kube.get(paths.pods(namespace, "flaky"))["status"]["phase"]
    wait_for_pod_running(kube, namespace, "flaky")

    assert phase_after_failure == "Pending"
    first, second = kubelet.calls(method=PREPARE)
    assert first.error is not None
    assert first.error == (
        "NodePrepareResources: rpc error: code = Unavailable desc = stub: injected failure"
    )
    assert error == f"driver {driver_name}: {first.error}"
    assert (second.error, second.claim_uids) == (None, first.claim_uids)
    assert f"{namespace}/flaky" not in kubelet.pod_errors()


def test_a_pod_whose_prepare_failed_gets_its_claim_unprepared_when_deleted(
    kube: KubeClient,
    namespace: str,
    fake_kubelet: FakeKubeletFactory,
    stub_plugin: StubPluginFactory,
    driver_name: str,
) -> None:
    """As the real kubelet (v1.36.3) does: its claim cache is filled from the allocation before
    it calls, so a claim whose prepare failed is still unprepared once its pod goes."""
    kubelet = fake_kubelet(retry_interval_s=30.0)
    plugin = stub_plugin(kubelet, driver=driver_name, prepare_failures=1)
    offer_shared_device(kube, kubelet, driver=driver_name)
    create_claim_template(kube, namespace, "quarter", driver=driver_name, capacity=QUARTER)

    create_pod(kube, namespace, "doomed", template="quarter")
    wait_for(
        lambda: "injected" in (kubelet.pod_errors().get(f"{namespace}/doomed") or ""),
        timeout_s=20,
        description="the prepare to fail",
    )
    (failed,) = kubelet.calls(method=PREPARE)
    assert failed.error is not None
    kube.delete(paths.pods(namespace, "doomed"))
    wait_for_pod_gone(kube, namespace, "doomed")

    assert [c.claim_uids for c in kubelet.calls(method=UNPREPARE)] == [failed.claim_uids]
    assert [c.claim_uids for c in plugin.recorded("NodeUnprepareResources")] == [failed.claim_uids]
    assert kubelet.prepared_claims() == {}


def test_pods_are_prepared_in_parallel(
    kube: KubeClient,
    namespace: str,
    fake_kubelet: FakeKubeletFactory,
    stub_plugin: StubPluginFactory,
    driver_name: str,
) -> None:
    """One worker per pod, as the kubelet's pod workers: prepares of two pods overlap.

    Each prepare waits at a barrier for the other; a single worker would break it.
    """
    kubelet = fake_kubelet()
    barrier = threading.Barrier(2, timeout=15)
    plugin = stub_plugin(kubelet, driver=driver_name, prepare_barrier=barrier)
    offer_shared_device(kube, kubelet, driver=driver_name)
    create_claim_template(kube, namespace, "quarter", driver=driver_name, capacity=QUARTER)

    create_pod(kube, namespace, "left", template="quarter")
    create_pod(kube, namespace, "right", template="quarter")
    wait_for_pod_running(kube, namespace, "left")
    wait_for_pod_running(kube, namespace, "right")

    calls = kubelet.calls(method=PREPARE)
    assert [call.error for call in calls] == [None, None]
    assert len({call.claim_uids for call in calls}) == 2
    assert len(plugin.recorded("NodePrepareResources")) == 2


def test_a_pod_deleted_during_its_prepare_is_unprepared_after_it(
    kube: KubeClient,
    namespace: str,
    fake_kubelet: FakeKubeletFactory,
    stub_plugin: StubPluginFactory,
    driver_name: str,
) -> None:
    """A pod's own syncs keep their order: its teardown waits for its start to finish."""
    kubelet = fake_kubelet()
    gate = threading.Event()
    plugin = stub_plugin(kubelet, driver=driver_name, prepare_gate=gate)
    offer_shared_device(kube, kubelet, driver=driver_name)
    create_claim_template(kube, namespace, "quarter", driver=driver_name, capacity=QUARTER)
    create_pod(kube, namespace, "slow", template="quarter")
    try:
        wait_for(
            lambda: plugin.recorded("NodePrepareResources"),
            timeout_s=20,
            description="the prepare to be in flight",
        )
        kube.delete(paths.pods(namespace, "slow"))
        wait_for(
            lambda: kubelet.pod_state((namespace, "slow")) == "terminating",
            timeout_s=10,
            description="the kubelet to see the deletion",
        )
    finally:
        gate.set()
    wait_for_pod_gone(kube, namespace, "slow")

    assert [c.method for c in plugin.calls] == [
        "NodePrepareResources",
        "NodePrepareResources/done",
        "NodeUnprepareResources",
    ]
    assert [c.method for c in kubelet.calls()] == [PREPARE, UNPREPARE]
    assert kubelet.prepared_claims() == {}


def test_a_pod_whose_driver_is_not_registered_leaves_no_claim_to_unprepare(
    kube: KubeClient,
    namespace: str,
    fake_kubelet: FakeKubeletFactory,
    driver_name: str,
) -> None:
    """The kubelet checks the drivers before its claim cache takes the claim: deleting such
    a pod calls nothing and does not get stuck."""
    kubelet = fake_kubelet()
    publish_devices(kube, kubelet, driver_name, [shared_device("dev-0")])
    apply_device_class(kube, driver=driver_name)
    create_claim_template(kube, namespace, "quarter", driver=driver_name, capacity=QUARTER)
    create_pod(kube, namespace, "orphan", template="quarter")
    wait_for(
        lambda: "is not registered" in (kubelet.pod_errors().get(f"{namespace}/orphan") or ""),
        timeout_s=20,
        description="the pod start to fail",
    )

    kube.delete(paths.pods(namespace, "orphan"))
    wait_for_pod_gone(kube, namespace, "orphan")

    assert kubelet.pod_errors() == {}
    assert kubelet.calls() == []
    assert kubelet.prepared_claims() == {}


def test_node_is_ready_and_its_lease_is_renewed(
    kube: KubeClient, fake_kubelet: FakeKubeletFactory
) -> None:
    kubelet = fake_kubelet(heartbeat_interval_s=0.5)

    node = kube.get(paths.nodes(kubelet.node_name))
    first = kube.get(paths.leases("kube-node-lease", kubelet.node_name))["spec"]["renewTime"]

    ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"
    assert node["metadata"]["labels"]["kubernetes.io/hostname"] == kubelet.node_name
    assert node["status"]["allocatable"]["pods"] == "110"
    # TaintNodesByCondition admission taints every new Node not-ready; the node lifecycle
    # controller removes the taint once it sees the Ready condition.
    wait_for(
        lambda: not kube.get(paths.nodes(kubelet.node_name))["spec"].get("taints"),
        timeout_s=20,
        description="the node lifecycle controller to remove the not-ready taint",
    )
    wait_for(
        lambda: (
            kube.get(paths.leases("kube-node-lease", kubelet.node_name))["spec"]["renewTime"]
            != first
        ),
        timeout_s=5,
        description="the node lease to be renewed",
    )


def test_deleted_pod_without_claims_is_removed(
    kube: KubeClient, namespace: str, fake_kubelet: FakeKubeletFactory
) -> None:
    kubelet = fake_kubelet()
    kube.create(
        paths.pods(namespace),
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "plain"},
            "spec": {
                "nodeName": kubelet.node_name,
                "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}],
            },
        },
    )
    wait_for_pod_running(kube, namespace, "plain")

    kube.delete(paths.pods(namespace, "plain"))

    wait_for_pod_gone(kube, namespace, "plain")
    with pytest.raises(NotFound):
        kube.get(paths.pods(namespace, "plain"))


def test_restarted_kubelet_prepares_the_claims_of_running_pods_again(
    kube: KubeClient,
    namespace: str,
    fake_kubelet: FakeKubeletFactory,
    stub_plugin: StubPluginFactory,
    driver_name: str,
    tmp_path: Path,
) -> None:
    """§5: after a kubelet restart Prepare is called again for claims of running pods."""
    state = tmp_path / "dra_manager_state"
    first = fake_kubelet(state_file=state)
    plugin = stub_plugin(first, driver=driver_name)
    offer_shared_device(kube, first, driver=driver_name)
    create_claim_template(kube, namespace, "quarter", driver=driver_name, capacity=QUARTER)
    pod = create_pod(kube, namespace, "survivor", template="quarter")
    pod = wait_for_pod_running(kube, namespace, "survivor")
    uid = pod_claims(kube, pod)["dcu"]["metadata"]["uid"]
    cdi_before = first.container_cdi_ids((namespace, "survivor"))
    first.stop()

    second = fake_kubelet(node_name=first.node_name, dirs_of=first, state_file=state)
    second.wait_for_plugin(driver_name)

    wait_for(
        lambda: uid in second.prepared_claims(),
        timeout_s=20,
        description="the restarted kubelet to prepare the claim again",
    )
    assert [call.claim_uids for call in plugin.recorded("NodePrepareResources")] == [
        (uid,),
        (uid,),
    ]
    assert second.container_cdi_ids((namespace, "survivor")) == cdi_before
    assert second.calls(method=UNPREPARE) == []


def test_command_line_runs_a_node_until_sigterm(
    control_plane: ControlPlane, kube: KubeClient, short_sock_dir: Path
) -> None:
    node = unique_name("node")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dra_driver.testing.fakekubelet",
            "--kubeconfig",
            str(control_plane.kubeconfig),
            "--node-name",
            node,
            "--registry-dir",
            str(short_sock_dir / "registry"),
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(
            lambda: node_is_ready(kube, node),
            timeout_s=20,
            description=f"node {node} from the command line to be Ready",
        )
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
        try:
            kube.delete(paths.nodes(node))
        except NotFound:
            pass

    assert process.returncode == 0, stderr.decode()
    assert f"fake kubelet for node {node} stopped" in stderr.decode()


def node_is_ready(kube: KubeClient, node: str) -> bool:
    try:
        conditions = kube.get(paths.nodes(node))["status"].get("conditions") or []
    except NotFound:
        return False
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
