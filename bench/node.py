"""The bench node: mock DCUs, a Node object, the real daemon and a kubelet side.

Every bench that needs a DCU node builds it here, so all of them lay out the mock node, run
``dcu-dra kubelet-plugin`` (``PluginProcess``) and clean up alike. The daemon runs with its
default flags unless a bench adds some. What differs is who plays the kubelet:

- the bench itself (the default; ``make bench``, ``bench.compare``): the Node object and a
  namespace named after the node are created here, and :meth:`BenchNode.connect` registers the
  daemon with the fake kubelet's ``PluginManager``, which makes NodePrepareResources/
  NodeUnprepareResources calls over one reused unix-socket connection, checking the answers as
  the kubelet does. Claims are created in the API server with the allocation the scheduler
  would write (pool = node, a share of a DCU with its consumed capacity), so the daemon reads
  real ResourceClaims;
- a fake kubelet (``kubelet=FakeKubeletSettings(...)``; ``make scale``, ``bench.placement``,
  ``make volcano``): it registers the Node, watches the pods the scheduler binds to it and
  prepares their claims through the daemon, which is mounted beside it as the DaemonSet mounts
  it beside the real kubelet.
"""

from __future__ import annotations

import itertools
import os
import signal
import sys
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from dra_driver import DRIVER_NAME
from dra_driver.cluster.kube import AlreadyExists, KubeClient, NotFound, paths
from dra_driver.errors import DriverError
from dra_driver.node.devices import Inventory, device_name_for, discover
from dra_driver.node.mock import MockConfig, create_mock_node, parse_config
from dra_driver.testing.cluster import (
    ControlPlane,
    create_allocated_claim,
    node_allocation,
    unique_name,
)
from dra_driver.testing.fakekubelet import ClaimRef, FakeKubelet, PluginCallError
from dra_driver.testing.fakekubelet.plugins import PluginManager
from dra_driver.testing.invariants import node_state
from dra_driver.testing.plugin_process import PluginProcess
from dra_driver.testing.waiting import wait_for

#: Compute units of each mock DCU (a Z100) and a quarter of it: 4 shares fill a card, so 64
#: live shares fit on 16 DCUs (the default ``--max-vdevices`` is 4).
DCU_CORES = 60
SHARE_CORES = 15
#: A Z100's memory, and a quarter of it in whole MiB (the README's quarter-card example).
DCU_MEMORY_BYTES = 34342961152
SHARE_MEMORY = "8188Mi"
#: The kubelet's call timeout (kubelet-plugin-protocol.md §5, ``defaultClientCallTimeout``).
CALL_TIMEOUT_S = 45.0
#: Clock ticks per second of ``/proc/<pid>/stat``'s CPU times.
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
#: The daemon needs well under a second to start; a loaded machine needs more.
READY_TIMEOUT_S = 60.0


class BenchError(DriverError):
    """The bench could not run or the driver answered wrongly (one line: what and why)."""


def mock_config(dcus: int) -> MockConfig:
    """``dcus`` Z100s on consecutive PCI buses."""
    return parse_config(
        {
            "devices": [
                {
                    "model": "Z100",
                    "computeUnits": DCU_CORES,
                    "memory": DCU_MEMORY_BYTES,
                    "pciBusID": _bus_id(index),
                }
                for index in range(dcus)
            ]
        }
    )


def _bus_id(index: int) -> str:
    return f"0000:{0x10 + index:02x}:00.0"


@dataclass(frozen=True, slots=True, kw_only=True)
class FakeKubeletSettings:
    """A node's fake kubelet, for the benches whose pods the scheduler places."""

    labels: Mapping[str, str] = field(default_factory=dict)
    """Labels of the Node it registers: a run's nodeSelector finds the run's nodes by them."""
    poll_interval_s: float = 0.2
    """How often it looks for registration sockets (the fake kubelet's own default)."""
    retry_interval_s: float = 0.5
    """How soon a failed pod start or unprepare is tried again (a bench does not wait 5 s)."""


class BenchNode:
    """One DCU node of a bench: create it, :meth:`start` it, use its daemon, :meth:`close` it."""

    def __init__(
        self,
        plane: ControlPlane,
        base: Path,
        *,
        dcus: int,
        name: str | None = None,
        daemon_args: Sequence[str] = (),
        kubelet: FakeKubeletSettings | None = None,
    ) -> None:
        """Lay out a mock node of ``dcus`` Z100s under ``base``; no process runs yet.

        ``name``: the Node's (default: a new ``bench-`` name). ``daemon_args``: flags beyond
        the daemon's defaults. ``kubelet``: a fake kubelet plays the node's kubelet instead of
        the bench (module docstring); it then registers the Node, and no namespace is made.
        Keep ``base`` short: the sockets' paths must fit ``AF_UNIX``'s 108 bytes.
        """
        self.plane = plane
        self.kube: KubeClient = plane.client
        self.base = base
        self.name = name or unique_name("bench")
        self.devices = [device_name_for(_bus_id(index)) for index in range(dcus)]
        root = base / "root"
        create_mock_node(root, mock_config(dcus))
        self.inventory: Inventory = discover(root)
        self.manager: PluginManager | None = None
        """The bench's kubelet-side client, once :meth:`connect` made it."""
        self.namespace: str | None = self.name if kubelet is None else None
        """Where the bench's own claims go (None with a fake kubelet: pods bring theirs)."""
        self._names = itertools.count()
        self._kubelet: FakeKubelet | None = None
        self.plugin: PluginProcess
        if kubelet is None:
            self.plugin = PluginProcess.in_directory(
                base,
                node_name=self.name,
                root=root,
                kubeconfig=plane.kubeconfig,
                extra_args=daemon_args,
            )
            self._create(paths.nodes(), {"apiVersion": "v1", "kind": "Node"}, self.name)
            self._create(paths.namespaces(), {"apiVersion": "v1", "kind": "Namespace"}, self.name)
        else:
            self._kubelet = FakeKubelet(
                # Its own connection, as each kubelet has: a hundred pod watches would outgrow
                # one client's pool, and the audit log tells its requests from the bench's.
                client=KubeClient.from_kubeconfig(
                    plane.kubeconfig, user_agent=f"fakekubelet/{self.name}"
                ),
                node_name=self.name,
                registry_dir=base / "reg",
                plugins_dir=base / "plugins",
                poll_interval_s=kubelet.poll_interval_s,
                retry_interval_s=kubelet.retry_interval_s,
                node_labels=dict(kubelet.labels),
            )
            self.plugin = PluginProcess.for_kubelet(
                self._kubelet, base, root=root, kubeconfig=plane.kubeconfig, extra_args=daemon_args
            )

    def _create(self, path: str, body: dict[str, Any], name: str) -> None:
        try:
            self.kube.create(path, {**body, "metadata": {"name": name}})
        except AlreadyExists:
            pass

    @property
    def kubelet(self) -> FakeKubelet:
        """The node's fake kubelet (a node made with ``kubelet=`` settings has one)."""
        if self._kubelet is None:
            raise BenchError(f"node {self.name} has no fake kubelet: the bench calls its daemon")
        return self._kubelet

    # --- the daemon -----------------------------------------------------------------------

    @property
    def pid(self) -> int:
        """The daemon's process id (it must be running)."""
        if self.plugin.process is None or self.plugin.returncode is not None:
            raise BenchError(
                f"the daemon of node {self.name} is not running; its log:\n{self.plugin.log_tail()}"
            )
        return self.plugin.process.pid

    def slice_selector(self) -> str:
        """The field selector of this node's ResourceSlices."""
        return f"spec.driver={DRIVER_NAME},spec.nodeName={self.name}"

    def start(self) -> None:
        """Start the fake kubelet if the node has one (it registers the Node), then the daemon."""
        if self._kubelet is not None:
            self._kubelet.start()
        self.plugin.start()

    def wait_ready(self) -> None:
        """Wait until the daemon's slice is visible and it registered with the fake kubelet.

        Without a fake kubelet only the slice is waited for: :meth:`connect` registers it.
        """
        self.plugin.wait_for_slices(self.kube, timeout_s=READY_TIMEOUT_S)
        if self._kubelet is not None:
            self._kubelet.wait_for_plugin(DRIVER_NAME, timeout_s=READY_TIMEOUT_S)

    def connect(self) -> None:
        """Register the running daemon with a kubelet-side client, as the kubelet does."""
        if self._kubelet is not None:
            raise BenchError(f"node {self.name} has a fake kubelet: it registers the daemon")
        self.plugin.wait_for_registration_socket(timeout_s=READY_TIMEOUT_S)
        self.manager = kubelet_client(self.plugin.registrar_dir)
        self.manager.start()
        try:
            wait_for(
                self.manager.registered_plugins,
                timeout_s=READY_TIMEOUT_S,
                description=f"the plugin of node {self.name} to register",
            )
        except AssertionError as exc:
            raise BenchError(str(exc).splitlines()[0]) from None

    def rss_mib(self) -> float:
        """The daemon's resident memory now (VmRSS), in MiB."""
        return process_rss_mib(self.pid)

    def cpu_s(self) -> float:
        """CPU time the daemon has used so far (user + system), in s."""
        return process_cpu_s(self.pid)

    def problems(self) -> list[str]:
        """The node's broken invariants (CU masks, pipe ids, files) while shares are live."""
        state = node_state(self.plugin, self.inventory)
        return [f"node {self.name}: {line}" for line in state.problems]

    def leftovers(self) -> list[str]:
        """What is still prepared on the node (claims, vdev files, CDI specs); empty: nothing."""
        state = node_state(self.plugin, self.inventory)
        found = [*state.problems]
        found += [f"claim {uid} still in the checkpoint" for uid in state.prepared]
        found += [f"{path} left behind" for path in self.plugin.vdev_files()]
        found += [f"{path} left behind" for path in self.plugin.spec_files()]
        return [f"node {self.name}: {line}" for line in found]

    def close(self, *, delete_objects: bool = True) -> None:
        """Stop the client, the daemon and the fake kubelet; delete the node's objects.

        Its objects: the Node, its ResourceSlices and its namespace if it has one; each is
        deleted on its own, and a failure is printed, not raised (cleanup must not hide the
        bench's own result). ``delete_objects=False`` leaves them to a control plane that is
        stopped next anyway (``make scale``).
        """
        if self.manager is not None:
            self.manager.stop()
        if self.plugin.process is not None:
            self.plugin.stop(signal.SIGTERM)
        if self._kubelet is not None:
            self._kubelet.stop()  # it leaves the Node in place, as the kubelet does
            self._kubelet.client.close()
        if delete_objects:
            self._delete_objects()

    def _delete_objects(self) -> None:
        namespaces = [paths.namespaces(self.namespace)] if self.namespace is not None else []
        for path in (*namespaces, paths.nodes(self.name)):
            try:
                self.kube.delete(path)
            except NotFound:
                pass
            except DriverError as exc:
                print(f"cleanup of {path} failed: {exc}", file=sys.stderr)
        try:
            self.kube.delete_collection(
                paths.resource_slices(), field_selector=self.slice_selector()
            )
        except DriverError as exc:
            print(f"cleanup of the slices of node {self.name} failed: {exc}", file=sys.stderr)

    # --- claims and calls -----------------------------------------------------------------

    def claim(self, devices: Sequence[str], *, whole: bool = False) -> ClaimRef:
        """Create a claim allocated as one quarter-card vDCU share on each of ``devices``.

        ``whole``: each of ``devices`` allocated whole instead (class ``dcu.hygon.com``).
        """
        namespace = self._claims_namespace()
        name = f"c{next(self._names)}"
        requests = [f"dcu{index}" for index in range(len(devices))]
        exactly: dict[str, Any] = (
            {"deviceClassName": "dcu.hygon.com"}
            if whole
            else {
                "deviceClassName": "vdcu.dcu.hygon.com",
                "capacity": {"requests": {"cores": str(SHARE_CORES), "memory": SHARE_MEMORY}},
            }
        )
        stored = create_allocated_claim(
            self.kube,
            namespace=namespace,
            name=name,
            requests=[{"name": request, "exactly": exactly} for request in requests],
            allocation=node_allocation(
                self.name,
                {
                    "results": [
                        _result(request, device, pool=self.name, whole=whole)
                        for request, device in zip(requests, devices, strict=True)
                    ]
                },
            ),
        )
        return ClaimRef(namespace=namespace, name=name, uid=stored["metadata"]["uid"])

    def prepare(self, claim: ClaimRef) -> None:
        """NodePrepareResources for one claim (one pod's call); raise ``BenchError`` if it fails."""
        prepare_claim(self.manager, DRIVER_NAME, claim, plugin=f"the plugin of node {self.name}")

    def unprepare(self, claim: ClaimRef) -> None:
        """NodeUnprepareResources for one claim; raise ``BenchError`` if it fails."""
        unprepare_claim(self.manager, DRIVER_NAME, claim, plugin=f"the plugin of node {self.name}")

    def _claims_namespace(self) -> str:
        if self.namespace is None:
            raise BenchError(
                f"node {self.name} has a fake kubelet: claims come from pods, not from the bench"
            )
        return self.namespace


def prepare_claim(
    manager: PluginManager | None, driver: str, claim: ClaimRef, *, plugin: str
) -> None:
    """NodePrepareResources for one claim through ``manager``, to ``driver``'s plugin.

    Raises ``BenchError``, naming ``plugin``, if it is not connected, the call fails or the
    answer holds no devices for the claim.
    """
    try:
        devices = _connected(manager, plugin).prepare(driver, [claim])
    except PluginCallError as exc:
        raise BenchError(f"{plugin}: prepare of claim {claim.name}: {exc}") from None
    if not devices.get(claim.uid):
        raise BenchError(f"{plugin}: prepare of claim {claim.name}: the answer has no devices")


def unprepare_claim(
    manager: PluginManager | None, driver: str, claim: ClaimRef, *, plugin: str
) -> None:
    """NodeUnprepareResources for one claim (see ``prepare_claim``); raises ``BenchError``."""
    try:
        _connected(manager, plugin).unprepare(driver, [claim])
    except PluginCallError as exc:
        raise BenchError(f"{plugin}: unprepare of claim {claim.name}: {exc}") from None


def _connected(manager: PluginManager | None, plugin: str) -> PluginManager:
    if manager is None:
        raise BenchError(f"{plugin} is not connected")
    return manager


def _result(request: str, device: str, *, pool: str, whole: bool) -> dict[str, Any]:
    """The allocation result the scheduler writes: a whole DCU, or a quarter-card share."""
    result: dict[str, Any] = {
        "request": request,
        "driver": DRIVER_NAME,
        "pool": pool,
        "device": device,
    }
    if not whole:
        result["shareID"] = str(uuid.uuid4())
        result["consumedCapacity"] = {
            "cores": str(SHARE_CORES),
            "memory": SHARE_MEMORY,
            "vdevices": "1",
        }
    return result


def process_rss_mib(pid: int) -> float:
    """A process's resident memory now (VmRSS), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise BenchError(f"no VmRSS in /proc/{pid}/status")


def process_cpu_s(pid: int) -> float:
    """CPU time a process has used so far (user + system, ``/proc/<pid>/stat``), in s."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # Fields after the command name (which may hold spaces) closed by its ")".
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def _never_wipe(driver: str) -> None:
    """The bench's kubelet never wipes slices (its plugin never goes away for long)."""


class CycledNode(Protocol):
    """What the latency and throughput measurements call: a node whose plugin they cycle.

    ``BenchNode`` (our daemon) and ``reference.ReferenceNode`` (the upstream reference driver)
    both are one, so one run measures both the same way.
    """

    def prepare(self, claim: ClaimRef) -> None:
        """NodePrepareResources for one claim; raises ``BenchError`` if it fails."""

    def unprepare(self, claim: ClaimRef) -> None:
        """NodeUnprepareResources for one claim; raises ``BenchError`` if it fails."""

    def cpu_s(self) -> float:
        """CPU time the plugin process has used so far (user + system), in s."""

    def rss_mib(self) -> float:
        """The plugin process's resident memory now (VmRSS), in MiB."""

    def close(self) -> None:
        """Stop the client and the plugin and delete the node's objects (best effort)."""


def kubelet_client(registry_dir: Path) -> PluginManager:
    """The fake kubelet's plugin manager as the benches use it, watching ``registry_dir``.

    It registers the plugins it finds there and makes every call over one kept-open
    connection per plugin, as the kubelet does; it never wipes a plugin's slices (the benches
    restart plugins on purpose).
    """
    return PluginManager(
        registry_dir=registry_dir,
        call_timeout_s=CALL_TIMEOUT_S,
        retry_interval_s=0.2,
        wiping_delay_s=3600.0,
        wipe_driver=_never_wipe,
        poll_interval_s=0.05,
    )
