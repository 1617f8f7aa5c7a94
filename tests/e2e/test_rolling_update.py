"""A seamless rolling update: two plugin instances of one node serve side by side, no claim lost.

Both instances run the real daemon with ``--rolling-update`` and their own pod UIDs, share the
node's plugin data dir (checkpoint, flock, vdev files) and CDI dir, and register with one fake
kubelet, which sends every call to the most recently registered connected instance
(kubelet-plugin-protocol.md §4.3). The test plays a DaemonSet rollout with ``maxSurge: 1``:
old pod serving, new pod added, old pod stopped, and a further rollout back; claims prepared
by one instance are unprepared by another, and a burst of calls goes to both at once.
Afterwards the files on disk and the checkpoint must match exactly the claims still prepared,
with no CU or pipe id given twice.
"""

from __future__ import annotations

import signal
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from dra_driver import DRIVER_NAME
from dra_driver.cluster.kube import KubeClient
from dra_driver.kubeletplugin.plugin_server import dra_socket_name, registration_socket_name
from dra_driver.node.mock import create_mock_node
from dra_driver.testing.cluster import ControlPlane
from dra_driver.testing.fakekubelet import ClaimRef, FakeKubelet, PluginCallError
from dra_driver.testing.plugin_process import PluginProcess
from dra_driver.testing.waiting import wait_for
from dra_driver.vdcu.vdev import VdevConfig, check_pipe_ids_unique, read_vdev_dir
from tests.e2e.conftest import (
    K100,
    Z100_A,
    Z100_B,
    FakeKubeletFactory,
    allocated_claim,
    prepare,
    share,
    unprepare,
)

pytestmark = pytest.mark.e2e

CARDS = (Z100_A, Z100_B, K100)


class Instance:
    """One plugin pod of the DaemonSet: the daemon with --rolling-update and its pod UID."""

    def __init__(self, plane: ControlPlane, kubelet: FakeKubelet, base: Path, root: Path) -> None:
        assert kubelet.plugins_dir is not None
        self.pod_uid = str(uuid.uuid4())
        data_dir = kubelet.plugins_dir / DRIVER_NAME
        self.dra_socket = data_dir / dra_socket_name(pod_uid=self.pod_uid, data_dir=data_dir)
        self.registration_socket = kubelet.registry_dir / registration_socket_name(
            DRIVER_NAME, pod_uid=self.pod_uid, registrar_dir=kubelet.registry_dir
        )
        self.kubelet = kubelet
        self.plugin = PluginProcess(
            node_name=kubelet.node_name,
            root=root,
            kubeconfig=plane.kubeconfig,
            registrar_dir=kubelet.registry_dir,
            data_dir=data_dir,
            cdi_dir=base / "cdi",
            log_file=base / f"plugin-{self.pod_uid[:8]}.log",
            extra_args=["--rolling-update", "--pod-uid", self.pod_uid, "--orphan-interval", "0"],
        )

    def start(self) -> Instance:
        """Start; wait until the kubelet registered this instance and its connection is up.

        The kubelet calls the newest *connected* plugin, and a registered plugin's connection
        comes up a moment later (the channel's state callback): waiting for the registration
        alone let a call still go to the older instance.
        """
        self.plugin.start()
        wait_for(
            lambda: (
                self.plugin.returncode is None
                and any(
                    p.endpoint == str(self.dra_socket) for p in self.kubelet.connected_plugins()
                )
            ),
            timeout_s=30,
            description=f"the kubelet to register and connect the instance of pod {self.pod_uid}",
            details=lambda: self.plugin.log_tail(),
        )
        return self

    def stop(self) -> None:
        assert self.plugin.stop() == 0, self.plugin.log_tail()
        wait_for(
            lambda: all(
                p.endpoint != str(self.dra_socket) for p in self.kubelet.registered_plugins()
            ),
            timeout_s=10,
            description=f"the kubelet to deregister the instance of pod {self.pod_uid}",
        )


class Rollout:
    """The node: a fake kubelet, its plugin instances, and the claims."""

    def __init__(self, plane: ControlPlane, kubelet: FakeKubelet, base: Path, namespace: str):
        self.plane = plane
        self.kube: KubeClient = plane.client
        self.kubelet = kubelet
        self.base = base
        self.namespace = namespace
        self.root = base / "root"
        create_mock_node(self.root)
        self.instances: list[Instance] = []
        self.claims: dict[int, dict[str, Any]] = {}
        self.prepared: set[str] = set()
        self.unprepared: set[str] = set()

    def new_instance(self) -> Instance:
        instance = Instance(self.plane, self.kubelet, self.base, self.root)
        self.instances.append(instance)
        return instance.start()

    def claim(self, n: int, card: str) -> dict[str, Any]:
        self.claims[n] = allocated_claim(
            self.kube, self.namespace, self.kubelet.node_name, [share("dcu", card, 10, "1Gi")]
        )
        return self.claims[n]

    def ref(self, n: int) -> ClaimRef:
        meta = self.claims[n]["metadata"]
        return ClaimRef(namespace=meta["namespace"], name=meta["name"], uid=meta["uid"])

    def uid(self, n: int) -> str:
        return str(self.claims[n]["metadata"]["uid"])

    def kubelet_prepare(self, *numbers: int) -> str:
        """Prepare through the kubelet; returns the endpoint that served the call."""
        self.kubelet.plugins.prepare(DRIVER_NAME, [self.ref(n) for n in numbers])
        self.prepared |= {self.uid(n) for n in numbers}
        self.unprepared -= {self.uid(n) for n in numbers}
        return self.kubelet.plugins.calls()[-1].endpoint

    def kubelet_unprepare(self, *numbers: int) -> str:
        self.kubelet.plugins.unprepare(DRIVER_NAME, [self.ref(n) for n in numbers])
        self.prepared -= {self.uid(n) for n in numbers}
        self.unprepared |= {self.uid(n) for n in numbers}
        return self.kubelet.plugins.calls()[-1].endpoint

    def check(self) -> None:
        """Files and checkpoint hold exactly the prepared claims; no CU or pipe id is shared."""
        plugin = self.instances[0].plugin
        assert set(plugin.checkpoint_claims()) == self.prepared
        by_card: dict[str, list[VdevConfig]] = {}
        for uid in self.prepared:
            assert plugin.spec_file(uid).is_file(), uid
            (config,) = read_vdev_dir(plugin.vdev_dir(uid))
            assert config.cu_count == 10
            by_card.setdefault(config.pci_bus_id, []).append(config)
        for uid in self.unprepared:
            assert not plugin.spec_file(uid).exists(), uid
            assert not plugin.vdev_dir(uid).exists(), uid
        for configs in by_card.values():
            check_pipe_ids_unique(configs)
            for i, a in enumerate(configs):
                for b in configs[i + 1 :]:
                    assert not a.mask.overlaps(b.mask), (a, b)
        assert len(plugin.spec_files()) == len(self.prepared)


@pytest.fixture
def rollout(
    control_plane: ControlPlane,
    fake_kubelet: FakeKubeletFactory,
    short_sock_dir: Path,
    namespace: str,
) -> Iterator[Rollout]:
    node = Rollout(control_plane, fake_kubelet(), short_sock_dir, namespace)
    try:
        yield node
    finally:
        for instance in node.instances:
            if instance.plugin.process is not None:
                instance.plugin.stop(signal.SIGKILL)


def test_two_instances_share_the_work_of_a_rolling_update_without_loss(rollout: Rollout) -> None:
    old = rollout.new_instance()
    for n in range(12):
        rollout.claim(n, CARDS[n % 3])
    assert rollout.kubelet_prepare(0, 1, 2, 3) == str(old.dra_socket)
    rollout.check()

    # The DaemonSet surges a new pod: both serve, the kubelet prefers the newer one.
    new = rollout.new_instance()
    assert old.plugin.returncode is None
    assert sorted(p.name for p in rollout.kubelet.registry_dir.iterdir()) == sorted(
        [old.registration_socket.name, new.registration_socket.name]
    )
    assert rollout.kubelet_prepare(4, 5, 6, 7) == str(new.dra_socket)
    # Claims prepared by the old instance are unprepared by the new one.
    assert rollout.kubelet_unprepare(0, 1) == str(new.dra_socket)
    rollout.check()

    # The old pod goes away; the new one keeps serving.
    old.stop()
    assert new.dra_socket.exists() and new.registration_socket.exists()
    assert rollout.kubelet_prepare(8, 9) == str(new.dra_socket)
    rollout.check()

    # A further rollout: a third pod takes over claims the second one prepared.
    third = rollout.new_instance()
    assert rollout.kubelet_unprepare(4, 5) == str(third.dra_socket)
    assert rollout.kubelet_prepare(10, 11) == str(third.dra_socket)
    assert rollout.kubelet_unprepare(3, 6, 9) == str(third.dra_socket)
    rollout.check()

    # A burst at both live instances at once: only the shared flock keeps them apart.
    for n, card in zip(range(12, 18), (Z100_A,) * 4 + (Z100_B,) * 2, strict=True):
        rollout.claim(n, card)
    sockets = [new.dra_socket, third.dra_socket]
    with ThreadPoolExecutor(max_workers=8) as pool:
        prepares = [pool.submit(prepare, sockets[n % 2], rollout.claims[n]) for n in range(12, 18)]
        unprepares = [pool.submit(unprepare, sockets[1], rollout.claims[n]) for n in (2, 7)]
        for n, future in zip(range(12, 18), prepares, strict=True):
            assert future.result()[rollout.uid(n)].error == ""
        for n, future in zip((2, 7), unprepares, strict=True):
            assert future.result() == {rollout.uid(n): ""}
    rollout.prepared |= {rollout.uid(n) for n in range(12, 18)}
    rollout.prepared -= {rollout.uid(2), rollout.uid(7)}
    rollout.unprepared |= {rollout.uid(2), rollout.uid(7)}
    rollout.check()

    # The second pod goes too; the third unprepares everything that is left.
    new.stop()
    remaining = [n for n in rollout.claims if rollout.uid(n) in rollout.prepared]
    assert len(remaining) == 9
    assert rollout.kubelet_unprepare(*remaining) == str(third.dra_socket)
    rollout.check()
    assert rollout.prepared == set() and third.plugin.checkpoint_claims() == {}
    served = {call.endpoint for call in rollout.kubelet.plugins.calls()}
    assert served == {str(old.dra_socket), str(new.dra_socket), str(third.dra_socket)}
    for instance in rollout.instances:
        assert "Traceback" not in instance.plugin.output()
        assert "removing stale socket" not in instance.plugin.output()


def test_a_call_to_a_stopped_instance_fails_over_to_the_other(rollout: Rollout) -> None:
    """The kubelet may still pick an instance that just died (SIGKILL: no deregistration);
    its retry reaches the live one, which sees the dead one's work in the shared state."""
    first = rollout.new_instance()
    second = rollout.new_instance()
    for n in range(2):
        rollout.claim(n, Z100_A)
    assert rollout.kubelet_prepare(0) == str(second.dra_socket)
    second.plugin.stop(signal.SIGKILL)

    def prepared_by_first() -> bool:
        try:
            return rollout.kubelet_prepare(1) == str(first.dra_socket)
        except PluginCallError:
            return False  # the kubelet retries; the failed call marks the channel down

    wait_for(prepared_by_first, timeout_s=15, description="a retry to reach the live instance")
    assert rollout.kubelet_unprepare(0) == str(first.dra_socket)
    rollout.check()
