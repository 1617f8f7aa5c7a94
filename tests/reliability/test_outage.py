"""An API server outage of 20 s while the daemon runs: it rides it out and logs it once.

The control plane's kube-apiserver is killed and, 20 s later, started again on the same port,
certificates and etcd data (``ControlPlane.stop_apiserver``/``start_apiserver``); etcd, the
scheduler and the controller manager keep running, as in a real outage. That is closer to what
a node sees than restarting the whole control plane: the cluster state survives, only the API
is gone. The test runs its own control plane so that no other test's daemons see the outage.

During the outage the daemon keeps serving the kubelet: a claim prepared before it stays
prepared (orphan cleanup, which cannot read the claim, must not unprepare it on a guess), a
prepare that needs the API fails with one clear line, and a DCU that turns unhealthy is noted.
Once the API server is back, without a restart of the daemon: the kubelet's retry of the failed
prepare succeeds, the ResourceSlice is current again (it carries the new taint) and the claim
status is written. Each background loop that talks to the API server (slice publishing, orphan
cleanup) logged the outage once when it began and once when it ended, never per retry, and
nothing logged a traceback. Both claims were allocated by the real scheduler before the outage;
the test makes the kubelet's calls itself, at the moments it needs.
"""

from __future__ import annotations

import re
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from dra_driver.cluster.kube import paths
from dra_driver.cluster.publisher import BACKOFF_MAX_S
from dra_driver.kubeletplugin._pb import dra_v1_pb2_grpc
from dra_driver.node.devices import Inventory, discover
from dra_driver.node.mock import create_mock_node
from dra_driver.testing.cluster import (
    CONTROLPLANE_BINARY,
    ControlPlane,
    create_namespace,
    create_ready_node,
    ensure_object,
    load_yaml,
    unique_name,
)
from dra_driver.testing.invariants import node_state
from dra_driver.testing.plugin_process import PluginProcess
from dra_driver.testing.waiting import wait_for
from tests.e2e.conftest import DEPLOY_DIR, K100, delete_quietly, mock_fault
from tests.reliability.scheduled import (
    create_pod,
    create_vdcu_claim,
    prepare,
    wait_for_allocations,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

#: The issue's outage: long enough for every retry loop to back off several times.
OUTAGE_S = 20.0
#: Index of the K100 on the default mock node (``dcu-dra mock fault --device``).
K100_INDEX = 2
#: The daemon's loops run often here, so the outage hits each of them many times.
DAEMON_ARGS = ("--orphan-interval", "1", "--health-interval", "0.5", "--claim-status")
#: A line of the daemon's text log: time, level, logger, message.
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (\w+) ([\w.]+): (.*)$")


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """A control plane of this module's own: its API server goes away for 20 s."""
    if not CONTROLPLANE_BINARY.exists():
        pytest.fail(f"{CONTROLPLANE_BINARY} does not exist: run `make controlplane`")
    started = ControlPlane(binary=CONTROLPLANE_BINARY, data_dir=tmp_path_factory.mktemp("outage"))
    started.start()
    try:
        for obj in load_yaml((DEPLOY_DIR / "deviceclass.yaml").read_text()):
            ensure_object(started.client, obj)
        yield started
    finally:
        started.stop()


class Node:
    """A Ready Node without a kubelet and the real daemon on a default mock node.

    The test makes the kubelet's calls itself, so it decides when they happen: the real
    scheduler would take its own time to notice a new pod after the outage (its informers back
    off for up to 30 s), which is not what this test is about.
    """

    def __init__(self, plane: ControlPlane, base: Path) -> None:
        self.kube = plane.client
        self.name = unique_name("outage")
        create_ready_node(self.kube, self.name)
        self.root = base / "node"
        create_mock_node(self.root)
        self.inventory: Inventory = discover(self.root)
        self.plugin = PluginProcess.in_directory(
            base,
            node_name=self.name,
            root=self.root,
            kubeconfig=plane.kubeconfig,
            extra_args=DAEMON_ARGS,
        )
        self.plugin.start().wait_for_registration_socket()
        self.plugin.wait_for_slices(plane.client)

    def close(self) -> None:
        if self.plugin.process is not None:
            self.plugin.stop(signal.SIGKILL)
        delete_quietly(self.kube, paths.nodes(self.name))


@pytest.fixture
def node(plane: ControlPlane, short_sock_dir: Path) -> Iterator[Node]:
    started = Node(plane, short_sock_dir)
    try:
        yield started
    finally:
        started.close()


def log_records(text: str) -> list[tuple[str, str, str]]:
    """(level, logger, message) of every line of the daemon's text log."""
    return [(m[1], m[2], m[3]) for m in map(LOG_LINE.match, text.splitlines()) if m is not None]


def has_taint(slices: list[dict[str, Any]], device: str) -> bool:
    return any(
        d["name"] == device and d.get("taints") for s in slices for d in s["spec"]["devices"]
    )


def test_a_20_s_api_server_outage_is_ridden_out_and_logged_once(
    plane: ControlPlane, node: Node
) -> None:
    kube, plugin = plane.client, node.plugin
    namespace = unique_name("outage")
    create_namespace(kube, namespace)
    for name in ("before", "after"):
        create_vdcu_claim(kube, namespace, name, cores=15, memory_mib=8188)
        create_pod(kube, namespace, name, node=node.name, claims=[name])
    before, after = wait_for_allocations(kube, namespace, ["before", "after"])
    with grpc.insecure_channel(f"unix:{plugin.dra_socket}") as channel:
        stub = dra_v1_pb2_grpc.DRAPluginStub(channel)
        assert prepare(stub, before).claims[before["metadata"]["uid"]].error == ""
        # Its claim status is written by then, so no write is pending when the API goes.
        wait_for(
            lambda: kube.get(paths.resource_claims(namespace, "before"))["status"].get("devices"),
            timeout_s=30,
            description="the claim status of the first claim",
        )
        pid = plugin.process.pid if plugin.process is not None else None
        log_offset = len(plugin.output())

        plane.stop_apiserver()
        down = time.monotonic()
        # The kubelet still calls: a claim that cannot be read fails with one clear line.
        uid = after["metadata"]["uid"]
        error = prepare(stub, after).claims[uid].error
        assert re.match(
            rf"^claim {namespace}/after \(uid {uid}\): cannot read it from the API server: "
            rf"GET /apis/resource\.k8s\.io/v1/namespaces/{namespace}/resourceclaims/after: "
            r"connection failed: .+$",
            error,
        ), error
        assert "\n" not in error
        # A DCU fails while nobody can be told; its taint must be published once the API is back.
        mock_fault(node.root, K100_INDEX, "lost")
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down)))
        outage_s = time.monotonic() - down
        assert plugin.returncode is None
        assert before["metadata"]["uid"] in node_state(plugin, node.inventory).prepared

        plane.start_apiserver()
        up = time.monotonic()
        # The kubelet retries the failed prepare; the daemon's next API read must just work.
        answer = prepare(stub, after).claims[uid]
        assert answer.error == "", answer.error
        prepared_s = time.monotonic() - up
        wait_for(
            lambda: has_taint(plugin.slices(kube), K100),
            timeout_s=BACKOFF_MAX_S + 15,
            interval_s=0.1,
            description=f"the slice to carry the taint of {K100} (published after the outage)",
            details=plugin.log_tail,
        )
        republished_s = time.monotonic() - up
        wait_for(
            lambda: kube.get(paths.resource_claims(namespace, "after"))["status"].get("devices"),
            timeout_s=30,
            description="the claim status of the claim prepared after the outage",
        )
        wait_for(
            lambda: "orphan cleanup: the API server answers again" in plugin.output(),
            timeout_s=10,
            description="orphan cleanup to notice the API server is back",
        )
    print(
        f"API server down {outage_s:.1f} s, ready {up - down - outage_s:.1f} s after SIGUSR2; "
        f"then a prepare took {prepared_s:.2f} s and the slice was current after "
        f"{republished_s:.1f} s"
    )

    # The same process all along, both claims prepared, sound files.
    assert plugin.process is not None and plugin.process.pid == pid
    assert plugin.returncode is None
    state = node_state(plugin, node.inventory)
    assert list(state.problems) == []
    assert {e.name for e in state.prepared.values()} == {"before", "after"}

    output = plugin.output()
    assert output.count("discovered ") == 1, "the daemon restarted"
    assert "Traceback" not in output
    during = log_records(output[log_offset:])
    loud = Counter(logger for level, logger, _ in during if level in {"WARNING", "ERROR"})
    assert loud == {
        "dra_driver.cluster.publisher": 1,  # cannot reach the API server to publish ResourceSlices
        "dra_driver.cluster.orphans": 1,  # orphan cleanup skipped until the API server answers
        "dra_driver.kubeletplugin.servicer": 1,  # the kubelet's call for "after"
        "dra_driver.node.health": 1,  # the K100 turned unhealthy
    }, [r for r in during if r[0] in {"WARNING", "ERROR"}]
    messages = [message for _, _, message in log_records(output)]
    for start, end in [
        (
            "cannot reach the API server to publish ResourceSlices",
            "API server reachable again after ",
        ),
        (
            "orphan cleanup skipped until the API server answers",
            "orphan cleanup: the API server answers again",
        ),
    ]:
        assert sum(m.startswith(start) for m in messages) == 1, start
        assert sum(m.startswith(end) for m in messages) == 1, end
