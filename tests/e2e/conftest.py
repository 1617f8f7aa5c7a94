"""Fixtures and helpers of the e2e tests: namespaces, fake kubelets, stub DRA plugins and the
real daemon.

``control_plane`` (session-scoped, tests/conftest.py) runs the real control plane once.

- ``kube``: its admin :class:`KubeClient`.
- ``namespace``: a fresh namespace (default ServiceAccount ready), deleted afterwards.
- ``fake_kubelet(node_name=None, *, dirs_of=None, **options)``: start a :class:`FakeKubelet`
  for a new node with its own short registry/plugins dirs (or those of ``dirs_of``, to model a
  kubelet restart); stopped, and its Node and slices deleted, afterwards.
- ``stub_plugin(kubelet, driver=..., **options)``: start a :class:`StubDraPlugin` registered
  with that kubelet; stopped afterwards.
- ``device_classes``: the DeviceClasses of deploy/deviceclass.yaml (created if missing, kept).
- ``dcu_node(*extra_args, **kubelet_options)``: a fake kubelet and the real daemon on a
  default mock node, registered and published (:class:`DcuNode`).
- ``daemon_node(*extra_args, devices=None, plugin_identity=False)``: a Node and the real
  daemon without a kubelet, for tests that call its DRA socket themselves
  (:class:`DaemonNode`).

The helpers below them build what the scheduler would write (:func:`share`,
:func:`allocated_claim`) and pods pinned to a node (:func:`pinned_pod`), call the daemon as
the kubelet does (:func:`prepare`, :func:`unprepare`), break a mock DCU
(:func:`mock_fault`) and act as the plugin's ServiceAccount (:func:`create_plugin_pod`,
:func:`request_plugin_token`, :func:`token_kubeconfig`).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import grpc
import pytest

from dra_driver import DRIVER_NAME
from dra_driver.cluster.kube import ApiError, KubeClient, KubeError, NotFound, paths
from dra_driver.kubeletplugin._pb import dra_v1_pb2, dra_v1_pb2_grpc
from dra_driver.node.mock import DEFAULT_CONFIG, MockConfig, create_mock_node, parse_config
from dra_driver.testing.cluster import (
    ControlPlane,
    create_allocated_claim,
    create_namespace,
    delete_namespace,
    ensure_object,
    load_yaml,
    node_allocation,
    temporary_objects,
    unique_name,
)
from dra_driver.testing.fakekubelet import FakeKubelet
from dra_driver.testing.identity import (
    PLUGIN_NAMESPACE,
    create_plugin_pod,
    request_plugin_token,
    token_kubeconfig,
)
from dra_driver.testing.plugin_process import PluginProcess, dcu_dra_command
from tests.e2e.stubplugin import StubDraPlugin

#: Tests use a short retry interval: a retried prepare should not cost 5 s.
TEST_RETRY_INTERVAL_S = 0.5
DEPLOY_DIR = Path(__file__).resolve().parents[2] / "deploy"
#: A container image that is never pulled (there is no runtime); any valid name works.
PAUSE = "registry.k8s.io/pause:3.10"

#: The DCUs of the default mock node (2x Z100, 1x K100_AI), by device name.
Z100_A, Z100_B, K100 = "dcu-0000-3b-00-0", "dcu-0000-5e-00-0", "dcu-0000-af-00-0"
#: A mock node of one Z100.
ONE_Z100: list[dict[str, object]] = [
    {"model": "Z100", "computeUnits": 60, "memory": 34342961152, "pciBusID": "0000:3b:00.0"}
]
#: A mock node of two DCUs, Z100_A (index 0) and K100 (index 1).
Z100_AND_K100: list[dict[str, object]] = [
    *ONE_Z100,
    {"model": "K100_AI", "computeUnits": 120, "memory": "64Gi", "pciBusID": "0000:af:00.0"},
]


@pytest.fixture
def kube(control_plane: ControlPlane) -> KubeClient:
    return control_plane.client


@pytest.fixture
def namespace(kube: KubeClient) -> Iterator[str]:
    name = unique_name("e2e")
    create_namespace(kube, name)
    try:
        yield name
    finally:
        delete_namespace(kube, name)


class FakeKubeletFactory:
    """Starts fake kubelets, each with its own directories under one short temp dir."""

    def __init__(self, client: KubeClient, root: Path) -> None:
        self.client = client
        self.root = root
        self.kubelets: list[FakeKubelet] = []

    def __call__(
        self,
        node_name: str | None = None,
        *,
        dirs_of: FakeKubelet | None = None,
        **options: Any,
    ) -> FakeKubelet:
        """Start a kubelet; ``dirs_of`` reuses another's directories (a kubelet restart)."""
        base = self.root / f"n{len(self.kubelets)}"
        options.setdefault("retry_interval_s", TEST_RETRY_INTERVAL_S)
        kubelet = FakeKubelet(
            client=self.client,
            node_name=node_name or unique_name("node"),
            registry_dir=dirs_of.registry_dir if dirs_of else base / "registry",
            plugins_dir=dirs_of.plugins_dir if dirs_of else base / "plugins",
            **options,
        )
        self.kubelets.append(kubelet)
        return kubelet.start()

    def close(self) -> None:
        for kubelet in reversed(self.kubelets):
            kubelet.stop()
            name = kubelet.node_name
            try:
                self.client.delete_collection(
                    paths.resource_slices(), field_selector=f"spec.nodeName={name}"
                )
                self.client.delete(paths.nodes(name))
            except NotFound:
                pass
            except KubeError as exc:  # cleanup must not hide the test's own result
                print(f"cleanup of node {name} failed: {exc}")


@pytest.fixture
def fake_kubelet(kube: KubeClient) -> Iterator[FakeKubeletFactory]:
    root = Path(tempfile.mkdtemp(prefix="fk-", dir="/tmp"))
    factory = FakeKubeletFactory(kube, root)
    try:
        yield factory
    finally:
        factory.close()
        shutil.rmtree(root, ignore_errors=True)


StubPluginFactory = Callable[..., StubDraPlugin]


@pytest.fixture
def stub_plugin(kube: KubeClient, fake_kubelet: FakeKubeletFactory) -> Iterator[StubPluginFactory]:
    """Depends on ``fake_kubelet`` so plugins stop before their kubelets."""
    plugins: list[StubDraPlugin] = []

    def start(kubelet: FakeKubelet, *, driver: str, **options: Any) -> StubDraPlugin:
        assert kubelet.plugins_dir is not None
        plugin = StubDraPlugin(
            client=kube,
            driver=driver,
            registry_dir=kubelet.registry_dir,
            plugins_dir=kubelet.plugins_dir,
            **options,
        )
        plugins.append(plugin)
        return plugin.start()

    try:
        yield start
    finally:
        for plugin in reversed(plugins):
            plugin.stop()


@pytest.fixture
def driver_name(kube: KubeClient) -> Iterator[str]:
    """A driver name unique to the test, so devices of other tests never match its classes.

    A DeviceClass named like the driver is deleted afterwards.
    """
    name = f"{unique_name('t')}.test.example.com"
    yield name
    try:
        kube.delete(paths.device_classes(name))
    except NotFound:
        pass


# --- the real daemon ------------------------------------------------------------------------


@pytest.fixture
def device_classes(kube: KubeClient) -> None:
    """The DeviceClasses of deploy/deviceclass.yaml (cluster-scoped: created if missing, kept)."""
    for obj in load_yaml((DEPLOY_DIR / "deviceclass.yaml").read_text()):
        ensure_object(kube, obj)


class DcuNode:
    """A fake kubelet and the real daemon on a mock DCU node under :attr:`root`, registered."""

    def __init__(self, kubelet: FakeKubelet, plugin: PluginProcess, root: Path) -> None:
        self.kubelet = kubelet
        self.plugin = plugin
        self.root = root

    @property
    def name(self) -> str:
        return self.kubelet.node_name


class DcuNodeFactory(Protocol):
    def __call__(
        self, *extra_args: str, mock: MockConfig = DEFAULT_CONFIG, **kubelet_options: Any
    ) -> DcuNode: ...


@pytest.fixture
def dcu_node(
    control_plane: ControlPlane, fake_kubelet: FakeKubeletFactory, short_sock_dir: Path
) -> Iterator[DcuNodeFactory]:
    """Start a fake kubelet and the daemon on a mock node, mounted as the DaemonSet does.

    Returns once the kubelet has registered the daemon and its ResourceSlice is visible.
    ``extra_args`` go to the daemon, ``mock`` lays out the node (default: the default mock
    node), ``kubelet_options`` go to :class:`FakeKubelet`. Depends on
    ``fake_kubelet`` so the daemons are killed before their kubelets stop.
    """
    nodes: list[DcuNode] = []

    def start(
        *extra_args: str, mock: MockConfig = DEFAULT_CONFIG, **kubelet_options: Any
    ) -> DcuNode:
        kubelet = fake_kubelet(**kubelet_options)
        base = short_sock_dir / f"d{len(nodes)}"
        root = base / "node"
        create_mock_node(root, mock)
        plugin = PluginProcess.for_kubelet(
            kubelet, base, root=root, kubeconfig=control_plane.kubeconfig, extra_args=extra_args
        )
        nodes.append(DcuNode(kubelet, plugin, root))
        plugin.start().wait_for_registration_socket()
        kubelet.wait_for_plugin(DRIVER_NAME, timeout_s=30)
        plugin.wait_for_slices(control_plane.client)
        return nodes[-1]

    yield start
    for node in nodes:
        if node.plugin.process is not None:
            node.plugin.stop(signal.SIGKILL)


class DaemonNode:
    """A Node in the API server and the real daemon on a mock DCU node, with no kubelet.

    Tests call the daemon's DRA socket as the kubelet would, with claims carrying the
    allocation the scheduler would write (:func:`allocated_claim`). The daemon reads its boot
    id from :attr:`boot_id_file`, so a test can play a reboot. With ``plugin_identity`` it
    authenticates as the plugin's ServiceAccount with a token bound to a Pod on this node,
    which needs deploy/rbac.yaml; otherwise as the admin.
    """

    def __init__(
        self,
        plane: ControlPlane,
        base: Path,
        *,
        devices: list[dict[str, object]] | None,
        extra_args: Sequence[str],
        plugin_identity: bool,
    ) -> None:
        self.kube = plane.client
        self.name = unique_name("daemon")
        create_node(self.kube, self.name)
        self.identity_pod: str | None = None
        kubeconfig = plane.kubeconfig
        if plugin_identity:
            pod = create_plugin_pod(self.kube, self.name, image=PAUSE)
            self.identity_pod = pod["metadata"]["name"]
            kubeconfig = token_kubeconfig(
                plane.kubeconfig, request_plugin_token(self.kube, bound_pod=pod), base
            )
        self.root = base / "root"
        create_mock_node(
            self.root, parse_config({"devices": devices}) if devices else DEFAULT_CONFIG
        )
        self.boot_id_file = base / "boot_id"
        self.boot_id_file.write_text("boot-1\n")
        self.plugin = PluginProcess.in_directory(
            base,
            node_name=self.name,
            root=self.root,
            kubeconfig=kubeconfig,
            boot_id_file=self.boot_id_file,
            extra_args=extra_args,
        )

    def channel(self) -> grpc.Channel:
        """A channel to the daemon's DRA socket."""
        return grpc.insecure_channel(f"unix:{self.plugin.dra_socket}")

    def close(self) -> None:
        if self.plugin.process is not None:
            self.plugin.stop(signal.SIGKILL)
        if self.identity_pod is not None:
            delete_quietly(self.kube, paths.pods(PLUGIN_NAMESPACE, self.identity_pod))
        delete_quietly(self.kube, paths.nodes(self.name))


class DaemonNodeFactory(Protocol):
    def __call__(
        self,
        *extra_args: str,
        devices: list[dict[str, object]] | None = None,
        plugin_identity: bool = False,
    ) -> DaemonNode: ...


@pytest.fixture
def daemon_node(control_plane: ControlPlane, short_sock_dir: Path) -> Iterator[DaemonNodeFactory]:
    """Start a :class:`DaemonNode` and wait for its registration socket; cleaned up afterwards.

    ``devices`` (mock-config entries) default to the default mock node.
    """
    nodes: list[DaemonNode] = []

    def start(
        *extra_args: str,
        devices: list[dict[str, object]] | None = None,
        plugin_identity: bool = False,
    ) -> DaemonNode:
        node = DaemonNode(
            control_plane,
            short_sock_dir / f"n{len(nodes)}",
            devices=devices,
            extra_args=extra_args,
            plugin_identity=plugin_identity,
        )
        nodes.append(node)
        node.plugin.start().wait_for_registration_socket()
        return node

    try:
        yield start
    finally:
        for node in reversed(nodes):
            node.close()


def mock_fault(root: Path, device: int, kind: str) -> str:
    """Run ``dcu-dra mock fault`` on the mock node at ``root``; returns its output."""
    done = subprocess.run(
        [
            *dcu_dra_command(),
            "mock",
            "fault",
            "--root",
            str(root),
            "--device",
            str(device),
            "--kind",
            kind,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


# --- what the scheduler writes, and the kubelet's calls ---------------------------------------


def share(request: str, device: str, cores: int, memory: str) -> dict[str, Any]:
    """An allocation result of a vDCU share, as the scheduler writes it."""
    return {
        "request": request,
        "driver": DRIVER_NAME,
        "device": device,
        "shareID": str(uuid.uuid4()),
        "consumedCapacity": {"cores": str(cores), "memory": memory, "vdevices": "1"},
    }


def allocated_claim(
    kube: KubeClient, namespace: str, node: str, results: Sequence[dict[str, Any]]
) -> dict[str, Any]:
    """Create a claim and write the allocation the scheduler would (pool = node).

    One request per request name of ``results``, in the order they first appear.
    """
    name = unique_name("claim")
    requests = dict.fromkeys(r["request"] for r in results)
    return create_allocated_claim(
        kube,
        namespace=namespace,
        name=name,
        requests=[
            {"name": r, "exactly": {"deviceClassName": "vdcu.dcu.hygon.com"}} for r in requests
        ],
        allocation=node_allocation(node, {"results": [{"pool": node, **r} for r in results]}),
    )


def v1_ref(claim: Mapping[str, Any]) -> dra_v1_pb2.Claim:
    meta = claim["metadata"]
    return dra_v1_pb2.Claim(namespace=meta["namespace"], name=meta["name"], uid=meta["uid"])


def prepare(dra_socket: Path, *claims: dict[str, Any]) -> dict[str, Any]:
    """NodePrepareResources on a DRA socket; returns the per-claim answers by UID."""
    with grpc.insecure_channel(f"unix:{dra_socket}") as channel:
        response = dra_v1_pb2_grpc.DRAPluginStub(channel).NodePrepareResources(
            dra_v1_pb2.NodePrepareResourcesRequest(claims=[v1_ref(c) for c in claims]),
            timeout=45,
        )
    return dict(response.claims)


def unprepare(dra_socket: Path, *claims: dict[str, Any]) -> dict[str, str]:
    """NodeUnprepareResources on a DRA socket; returns the per-claim errors by UID."""
    with grpc.insecure_channel(f"unix:{dra_socket}") as channel:
        response = dra_v1_pb2_grpc.DRAPluginStub(channel).NodeUnprepareResources(
            dra_v1_pb2.NodeUnprepareResourcesRequest(claims=[v1_ref(c) for c in claims]),
            timeout=45,
        )
    return {uid: answer.error for uid, answer in response.claims.items()}


def pinned_pod(
    name: str, node: str, *, template: str | None = None, claim: str | None = None
) -> dict[str, Any]:
    """A one-container pod on ``node`` using one claim ``dcu``, from a template or by name."""
    source = (
        {"resourceClaimTemplateName": template}
        if template is not None
        else {"resourceClaimName": claim}
    )
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": node},
            "terminationGracePeriodSeconds": 0,
            "containers": [
                {"name": "c", "image": PAUSE, "resources": {"claims": [{"name": "dcu"}]}}
            ],
            "resourceClaims": [{"name": "dcu", **source}],
        },
    }


def create_node(kube: KubeClient, name: str) -> None:
    kube.create(paths.nodes(), {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})


def delete_quietly(kube: KubeClient, path: str) -> None:
    try:
        kube.delete(path, grace_period_s=0)
    except NotFound:
        pass
    except ApiError as exc:  # cleanup must not hide the test's own result
        print(f"cleanup of {path} failed: {exc}")


# --- the real node (issue 14 prototype: dra_driver/testing/realnode) --------------------------


@pytest.fixture(scope="module")
def slice_policy(control_plane: ControlPlane) -> Iterator[None]:
    """deploy/admission-slices.yaml: a plugin may write only its own node's slices."""
    documents = load_yaml((DEPLOY_DIR / "admission-slices.yaml").read_text())
    with temporary_objects(control_plane.client, documents):
        yield


def started_real_nodes(control_plane: ControlPlane, count: int) -> Iterator[Any]:
    """``count`` real nodes (:class:`RealNodes`), stopped and the host restored afterwards.

    Skips with the reason when the machine cannot run them (not root, not Linux, no cgroups,
    binaries or images missing). Start and stop times are printed (``-s``).
    """
    from dra_driver.testing.realnode import RealNodes, unavailable_reason

    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    # Health checks every second (default 5 s): a fault shows within seconds.
    nodes = RealNodes(
        control_plane.client,
        control_plane.kubeconfig,
        count=count,
        plugin_args=("--health-interval", "1"),
    )
    try:
        nodes.start()
        if nodes.swept:
            print(f"\nrealnode: restored the host after a killed run first: {nodes.swept}")
        steps = {node.name: node.timings.steps for node in nodes.nodes}
        print(f"\nrealnode: {count} started in {nodes.start_s:.1f} s: {steps}")
        yield nodes
    finally:
        restored = nodes.stop()
        print(f"\nrealnode: stopped in {nodes.stop_s:.1f} s\nrealnode: host restore: {restored}")


@pytest.fixture
def real_node(
    control_plane: ControlPlane, device_classes: None, slice_policy: None
) -> Iterator[Any]:
    """One real node (containerd, runc, CNI, the real kubelet) named 127.0.0.2, with a mock DCU
    node (character devices) and the real daemon registered with its kubelet, authenticated as
    deploy/rbac.yaml's ServiceAccount (:class:`~dra_driver.testing.realnode.RealNode`)."""
    for nodes in started_real_nodes(control_plane, 1):
        yield nodes[0]


@pytest.fixture
def real_nodes(
    control_plane: ControlPlane, device_classes: None, slice_policy: None
) -> Iterator[Any]:
    """Two real nodes, 127.0.0.2 and 127.0.0.3, as ``real_node`` (a :class:`RealNodes`)."""
    yield from started_real_nodes(control_plane, 2)
