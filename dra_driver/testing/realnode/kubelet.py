"""The real kubelet of one real node: its KubeletConfiguration and the process.

:class:`Kubelet` writes a ``KubeletConfiguration`` for a cgroup-v1 host without systemd
(``failCgroupV1: false``, ``cgroupDriver: cgroupfs``, a ``cgroupRoot`` of its own), serving
on a loopback IPv4 address that is also the node's name (so the API server reaches it for
logs/exec without DNS) with anonymous authentication and ``AlwaysAllow`` (the API server has no
kubelet client certificate; the address is loopback only). It runs
``kubelet --config --kubeconfig --root-dir --hostname-override`` (no ``--node-ip``: the
kubelet rejects a loopback node IP and takes the host's default one) with the control plane's
DRA feature gates and the node's containerd as the CRI endpoint, and stops it with
SIGTERM, then SIGKILL.

Everything the kubelet configures by path points under the node's directory: root dir (with the
``plugins_registry`` dir our plugin registers in), certificates, pod logs, the flexvolume
plugin dir. What it does not own: ``/var/lib/kubelet/device-plugins/kubelet.sock`` and
``/var/log/containers`` (hard-coded in the kubelet), the sysctls it sets and the iptables
chains it tries to create; :class:`~dra_driver.testing.realnode.hoststate.HostGuard` records
and restores those. No static pods, no cluster DNS, no image GC or eviction to speak of
(thresholds near zero), no swap.
"""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dra_driver.errors import DriverError
from dra_driver.testing.fakekubelet.model import PreparedClaim, PreparedDevice
from dra_driver.testing.processes import dies_with_parent, log_tail, terminate

#: As tests/controlplane/featuregates.go passes to the default control plane (1.36: all beta, on
#: by default). Another version's kubelet gets what its own ``controlplane feature-gates`` says
#: (:func:`dra_driver.testing.cluster.feature_gates`): a gate that version does not know would
#: stop the kubelet.
FEATURE_GATES: dict[str, bool] = {
    "DRAConsumableCapacity": True,
    "DRAPartitionableDevices": True,
    "DRADeviceTaints": True,
    "DRADeviceBindingConditions": True,
    "DRAExtendedResource": True,
    "DRAResourceClaimDeviceStatus": True,
    "DRAResourceClaimGranularStatusAuthorization": True,
    "DRASchedulerFilterTimeout": True,
    "ResourceHealthStatus": True,
    "ResourceHealthStatusMessage": True,
}


class KubeletError(DriverError):
    """The kubelet exited early or never registered its Node."""


def free_port(address: str) -> int:
    """A TCP port free on ``address`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


@dataclass
class Kubelet:
    """One kubelet process for the node named ``node_ip`` (a loopback IPv4 literal)."""

    base: Path
    binary: Path
    node_ip: str
    kubeconfig: Path
    runtime_endpoint: str
    cgroup_root: str
    port: int = 0
    feature_gates: Mapping[str, bool] = field(default_factory=lambda: dict(FEATURE_GATES))

    def __post_init__(self) -> None:
        self.root_dir = self.base / "root"
        self.config_file = self.base / "kubelet.json"
        self.log_file = self.base / "kubelet.log"
        self.pod_logs_dir = self.base / "pod-logs"
        self.process: subprocess.Popen[bytes] | None = None
        if not self.port:
            self.port = free_port(self.node_ip)

    @property
    def node_name(self) -> str:
        """The Node's name: the loopback IPv4 literal the kubelet serves on."""
        return self.node_ip

    @property
    def plugins_registry(self) -> Path:
        """The dir the kubelet's plugin watcher watches for registration sockets."""
        return self.root_dir / "plugins_registry"

    @property
    def plugins_dir(self) -> Path:
        """``<root dir>/plugins``: where a DaemonSet mounts its plugin data dir."""
        return self.root_dir / "plugins"

    def config(self) -> dict[str, object]:
        """The KubeletConfiguration document."""
        return {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "failCgroupV1": False,
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": self.cgroup_root,
            "cgroupsPerQOS": True,
            "containerRuntimeEndpoint": self.runtime_endpoint,
            "imageServiceEndpoint": self.runtime_endpoint,
            "address": self.node_ip,
            "port": self.port,
            "readOnlyPort": 0,
            "healthzPort": 0,
            "enableServer": True,
            "authentication": {
                "anonymous": {"enabled": True},
                "webhook": {"enabled": False},
                "x509": {},
            },
            "authorization": {"mode": "AlwaysAllow"},
            "featureGates": dict(self.feature_gates),
            "failSwapOn": False,
            "podLogsDir": str(self.pod_logs_dir),
            "volumePluginDir": str(self.base / "volume-plugins"),
            "evictionHard": {
                "memory.available": "1Mi",
                "nodefs.available": "1%",
                "nodefs.inodesFree": "1%",
                "imagefs.available": "1%",
            },
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "registerNode": True,
            "serializeImagePulls": False,
            "nodeStatusUpdateFrequency": "5s",
            "syncFrequency": "5s",
            "fileCheckFrequency": "5s",
            "runtimeRequestTimeout": "2m",
            "resolvConf": "/etc/resolv.conf",
            "localStorageCapacityIsolation": False,
            "protectKernelDefaults": False,
            "makeIPTablesUtilChains": False,
            "shutdownGracePeriod": "0s",
        }

    def start(self) -> Kubelet:
        """Write the config and start the kubelet (it registers its Node by itself)."""
        self.root_dir.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(json.dumps(self.config(), indent=2))
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                dies_with_parent(
                    [
                        str(self.binary),
                        "--config",
                        str(self.config_file),
                        "--kubeconfig",
                        str(self.kubeconfig),
                        "--root-dir",
                        str(self.root_dir),
                        "--cert-dir",
                        str(self.base / "pki"),
                        "--hostname-override",
                        self.node_ip,
                        "--v",
                        "2",
                    ]
                ),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def check_running(self) -> None:
        """Raise :class:`KubeletError` with the log's tail if the kubelet has exited."""
        if self.process is not None and self.process.poll() is not None:
            raise KubeletError(
                f"the kubelet exited with {self.process.returncode}:\n{self.log_tail()}"
            )

    def stop(self, *, timeout_s: float = 20.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout_s``; the exit code (None if never started)."""
        return terminate(self.process, timeout_s=timeout_s)

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the kubelet's log."""
        return log_tail(self.log_file, lines)

    def prepared_claims(self) -> dict[str, PreparedClaim]:
        """The claims this kubelet holds prepared (its DRA checkpoint), by UID."""
        return read_prepared_claims(self.root_dir)


#: The real kubelet's DRA checkpoint in its root dir (pkg/kubelet/cm/dra/manager.go).
DRA_CHECKPOINT = "dra_manager_state"


def read_prepared_claims(root_dir: Path) -> dict[str, PreparedClaim]:
    """The claims the real kubelet holds prepared, by UID, from its DRA checkpoint.

    The checkpoint (``state.Checkpoint`` of pkg/kubelet/cm/dra/state) is JSON ``{"Data":
    "<JSON of CheckpointData>", "Checksum": <crc32>}``; ``Data`` lists ``ClaimInfoState``s with,
    per driver, the devices the plugin returned (pool, device, share ID, requests, CDI IDs).
    A missing file means nothing is prepared; a malformed one raises ``KeyError``/``ValueError``.
    """
    path = root_dir / DRA_CHECKPOINT
    try:
        outer = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    data = json.loads(outer["Data"])
    claims: dict[str, PreparedClaim] = {}
    for state in data.get("ClaimInfoStateList") or []:
        devices = tuple(
            PreparedDevice(
                driver=driver,
                pool=device["PoolName"],
                device=device["DeviceName"],
                request_names=tuple(device.get("RequestNames") or ()),
                cdi_device_ids=tuple(device.get("CDIDeviceIDs") or ()),
                share_id=device.get("ShareID"),
            )
            for driver, driver_state in sorted((state.get("DriverState") or {}).items())
            for device in driver_state.get("Devices") or []
        )
        claims[state["ClaimUID"]] = PreparedClaim(
            namespace=state["Namespace"],
            name=state["ClaimName"],
            uid=state["ClaimUID"],
            drivers=tuple(sorted(state.get("DriverState") or {})),
            devices=devices,
            pod_uids=frozenset(state.get("PodUIDs") or ()),
        )
    return claims
