"""One real node joined to the local control plane, and its teardown.

A real node is containerd, CNI, the real kubelet, a mock DCU node and the real
``dcu-dra kubelet-plugin``.

:class:`RealNode` starts, in order: a :class:`~.hoststate.HostGuard` snapshot; the kubelet's
cgroup root; containerd (:mod:`.containerd`) with the CNI conflist (:mod:`.cni`); the pause
and test images imported with ``ctr``; the kubelet (:mod:`.kubelet`), until its Node is
Ready; a mock DCU node with character device nodes (``dcu-dra mock create --device-nodes
char``); and the plugin (:class:`~dra_driver.testing.plugin_process.PluginProcess`) with the
kubelet's ``plugins_registry`` as registrar dir, ``plugins/<driver>`` as data dir and the CDI dir
containerd reads, until its ResourceSlice is published. The plugin authenticates as the chart
does, with deploy/rbac.yaml's ServiceAccount and a token bound to a pod of that account on the
node (:mod:`dra_driver.testing.identity`; the pod runs the pause image), so RBAC and
deploy/admission-slices.yaml's node check apply to it; ``plugin_identity=False`` gives it the
admin kubeconfig instead. :meth:`RealNode.stop` deletes the node's pods (so the kubelet
unprepares their claims), stops the plugin, deletes its identity pod, stops the kubelet and
containerd, deletes the Node and its slices, and restores the host (:meth:`HostGuard.restore`).

The test image is also tagged as the examples' image (:data:`EXAMPLE_IMAGE_ALIASES`), so
deploy/examples run unchanged without a registry.

:func:`unavailable_reason` says why a real node cannot run here (not root, not Linux, no
cgroups, a binary or image missing), or None.

Several nodes share one host (:class:`~.nodes.RealNodes`): each has its own containerd,
kubelet, cgroup root, bridge and subnet. What it does not model: the plugin runs as a host
process, not in the DaemonSet's container (its token is requested once, not refreshed); no
kube-proxy, DNS or cross-node pod network; the mock node's ``/sys`` is not the container's
``/sys``.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dra_driver import DRIVER_NAME
from dra_driver.cluster.kube import KubeClient, KubeError, NotFound, paths
from dra_driver.testing.cluster import REPO_ROOT
from dra_driver.testing.identity import (
    DEFAULT_EXPIRATION_S,
    PLUGIN_NAMESPACE,
    create_plugin_pod,
    ensure_plugin_account,
    request_plugin_token,
    token_kubeconfig,
)
from dra_driver.testing.plugin_process import PluginProcess, dcu_dra_command
from dra_driver.testing.realnode.cni import write_cni_config
from dra_driver.testing.realnode.containerd import Containerd
from dra_driver.testing.realnode.hoststate import HostGuard, create_cgroup_root
from dra_driver.testing.realnode.kubelet import FEATURE_GATES, Kubelet, KubeletError
from dra_driver.testing.waiting import wait_for

NODE_BIN = REPO_ROOT / "build" / "bin" / "node"
IMAGES_DIR = REPO_ROOT / "build" / "images"
#: As the Makefile's PAUSE_IMAGE_NAME / TEST_IMAGE_NAME.
PAUSE_IMAGE = "registry.local/dcu-dra/pause:3.10"
TEST_IMAGE = "registry.local/dcu-dra/dcu-test:py3.11"
#: Other names of the test image: the image deploy/examples name (sh, python3 and sleep are
#: all they need of it), so the examples run unchanged with no registry.
EXAMPLE_IMAGE_ALIASES = ("docker.io/library/python:3.12-slim",)
NODE_BINARIES = (
    "kubelet",
    "containerd",
    "containerd-shim-runc-v2",
    "ctr",
    "runc",
    "bridge",
    "host-local",
    "loopback",
    "portmap",
)
IMAGE_ARCHIVES = ("pause.tar", "dcu-test.tar")


def unavailable_reason() -> str | None:
    """Why a real node cannot run on this machine, or None when it can."""
    if not sys.platform.startswith("linux"):
        return f"a real node needs Linux (this is {sys.platform})"
    if os.geteuid() != 0:
        return "a real node needs root (kubelet, containerd, runc, CNI)"
    if (
        not Path("/sys/fs/cgroup/memory/cgroup.procs").exists()
        and not Path("/sys/fs/cgroup/cgroup.controllers").exists()
    ):
        return "a real node needs cgroups (no /sys/fs/cgroup/memory or cgroup2 mount)"
    if Path("/sys/fs/cgroup/cgroup.controllers").exists():
        return "this prototype handles cgroup v1 only (cgroup v2 host)"
    missing = [b for b in NODE_BINARIES if not (NODE_BIN / b).is_file()]
    if missing:
        return f"missing {', '.join(missing)} in {NODE_BIN}: run `make node-binaries`"
    missing = [a for a in IMAGE_ARCHIVES if not (IMAGES_DIR / a).is_file()]
    if missing:
        return f"missing {', '.join(missing)} in {IMAGES_DIR}: run `make images`"
    return None


def runtime_container_id(status: Mapping[str, Any]) -> str:
    """Containerd's ID of a container, from its pod status entry (``containerd://<id>``)."""
    return str(status["containerID"]).split("://", 1)[1]


#: Writes its standard input, base64, to argv[1] (``ctr`` passes text, not bytes).
WRITE_STDIN = (
    "import base64, sys; open(sys.argv[1], 'wb').write(base64.b64decode(sys.stdin.read()))"
)

#: In every node's directory: the HostGuard snapshot and the pid of the process that owns it.
GUARD_FILE = "hostguard.json"
OWNER_FILE = "owner.pid"


def sweep_stale_nodes(tmp: Path = Path("/tmp")) -> list[str]:
    """Restore the host after real nodes whose owner died without a teardown (SIGKILL).

    Such a run leaves the shims, the containers, their mounts and cgroups, the bridge and the
    changed sysctls; its directory holds the snapshot taken before it started. Returns what was
    done. Called before a new node takes its own snapshot.
    """
    done: list[str] = []
    # Newest snapshot first: a later node of a run recorded the earlier nodes' changes as the
    # host's own, so only restoring in reverse start order ends with the host as it was found.
    guards = sorted(tmp.glob(f"rn*-*/{GUARD_FILE}"), key=lambda p: p.stat().st_mtime, reverse=True)
    for guard_file in guards:
        base = guard_file.parent
        try:
            owner = int((base / OWNER_FILE).read_text())
        except (OSError, ValueError):
            owner = 0
        if owner and Path(f"/proc/{owner}").exists():
            continue
        actions = HostGuard.load(guard_file).restore()
        shutil.rmtree(base, ignore_errors=True)
        done.append(f"stale node {base}: {actions}")
    return done


@dataclass
class PluginInstance:
    """One started ``dcu-dra kubelet-plugin`` of a node and its pod (None: admin kubeconfig)."""

    process: PluginProcess
    pod: dict[str, Any] | None


@dataclass
class Timings:
    """Seconds per start-up and teardown step, for reports."""

    steps: dict[str, float] = field(default_factory=dict)

    def mark(self, name: str, since: float) -> float:
        """Record ``name`` as the time since ``since``; returns now."""
        now = time.monotonic()
        self.steps[name] = round(now - since, 2)
        return now


class RealNode:
    """A real node named ``node_ip`` (a loopback IPv4 literal such as 127.0.0.2)."""

    def __init__(
        self,
        client: KubeClient,
        kubeconfig: Path,
        *,
        node_ip: str = "127.0.0.2",
        index: int = 0,
        snapshotter: str = "overlayfs",
        plugin_args: tuple[str, ...] = (),
        plugin_identity: bool = True,
        kubelet_binary: Path | None = None,
        feature_gates: Mapping[str, bool] | None = None,
    ) -> None:
        self.client = client
        self.kubeconfig = kubeconfig
        self.node_ip = node_ip
        #: What the sweep of dead runs restored before this node's snapshot.
        self.swept = sweep_stale_nodes()
        self.base = Path(tempfile.mkdtemp(prefix=f"rn{index}-", dir="/tmp"))
        tag = self.base.name.replace("-", "").replace("_", "")[:10]
        self.cgroup_root = f"/dcurn-{tag}"
        self.bridge = f"dcurn{index}"
        self.subnet = f"10.244.{100 + index}.0/24"
        self.cdi_dir = self.base / "cdi"
        self.mock_root = self.base / "dcu"
        self.containerd = Containerd(
            base=self.base / "ctrd",
            bin_dir=NODE_BIN,
            cdi_dir=self.cdi_dir,
            cni_conf_dir=self.base / "cni",
            sandbox_image=PAUSE_IMAGE,
            snapshotter=snapshotter,
        )
        self.guard = HostGuard.snapshot(
            self.base,
            self.cgroup_root,
            containerd_socket=str(self.containerd.socket),
            containerd_state=str(self.containerd.base / "state"),
        )
        self.guard.save(self.base / GUARD_FILE)
        (self.base / OWNER_FILE).write_text(str(os.getpid()))
        self.kubelet = Kubelet(
            base=self.base / "kl",
            binary=kubelet_binary or NODE_BIN / "kubelet",
            node_ip=node_ip,
            kubeconfig=kubeconfig,
            runtime_endpoint=self.containerd.endpoint,
            cgroup_root=self.cgroup_root,
            feature_gates=dict(FEATURE_GATES if feature_gates is None else feature_gates),
        )
        self.plugin_identity = plugin_identity
        self.plugin_args = plugin_args
        #: Every plugin instance started (more than one during a rolling update), oldest first.
        self.instances: list[PluginInstance] = []
        #: The newest instance's process; with ``plugin_identity`` it is replaced by
        #: :meth:`start_plugin_instance` (the instance's pod UID names its sockets).
        self.plugin = self._plugin_process(kubeconfig, "plugin.log", pod_uid=None)
        self.timings = Timings()
        self.restored: list[str] = []

    @property
    def name(self) -> str:
        """The Node's name (its loopback IPv4 literal)."""
        return self.node_ip

    # --- start ----------------------------------------------------------------------------

    def start(self, *, timeout_s: float = 120.0) -> RealNode:
        """Start everything, in order, until the plugin is registered and published.

        On failure the caller must still call :meth:`stop` (it restores the host).
        """
        t = time.monotonic()
        create_cgroup_root(self.cgroup_root)
        self.cdi_dir.mkdir(parents=True, exist_ok=True)
        write_cni_config(
            self.base / "cni", bridge=self.bridge, subnet=self.subnet, ipam_dir=self.base / "ipam"
        )
        self.containerd.start()
        t = self.timings.mark("containerd", t)
        for archive in IMAGE_ARCHIVES:
            self.containerd.import_image(IMAGES_DIR / archive)
        for alias in EXAMPLE_IMAGE_ALIASES:
            self.containerd.ctr("images", "tag", "--force", TEST_IMAGE, alias)
        t = self.timings.mark("images", t)
        self.kubelet.start()
        self.wait_node_ready(timeout_s=timeout_s)
        t = self.timings.mark("kubelet_ready", t)
        done = subprocess.run(
            [
                *dcu_dra_command(),
                "mock",
                "create",
                "--root",
                str(self.mock_root),
                "--device-nodes",
                "char",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"dcu-dra mock create failed: {done.stderr}")
        if self.plugin_identity:
            self.start_plugin_instance()
        else:
            self.instances.append(PluginInstance(self.plugin.start(), None))
            self.plugin.wait_for_registration_socket()
        self.plugin.wait_for_slices(self.client, timeout_s=timeout_s)
        self.wait_plugin_registered(timeout_s=timeout_s)
        self.timings.mark("plugin", t)
        return self

    def _plugin_process(
        self, kubeconfig: Path, log_name: str, *, pod_uid: str | None
    ) -> PluginProcess:
        return PluginProcess(
            node_name=self.node_ip,
            root=self.mock_root,
            kubeconfig=kubeconfig,
            registrar_dir=self.kubelet.plugins_registry,
            data_dir=self.kubelet.plugins_dir / DRIVER_NAME,
            cdi_dir=self.cdi_dir,
            log_file=self.base / log_name,
            pod_uid=pod_uid,
            extra_args=self.plugin_args,
        )

    def start_plugin_instance(self) -> PluginInstance:
        """Start a plugin instance as the chart's DaemonSet would start a pod on this node.

        That is: a pod of the plugin's ServiceAccount here (running the pause image), a token
        bound to it, and ``dcu-dra kubelet-plugin --rolling-update --pod-uid <its UID>`` with
        that token, until its registration socket exists. It becomes :attr:`plugin`; an older
        instance keeps running (a rolling update's surge) until :meth:`stop_plugin_instance`.
        """
        ensure_plugin_account(self.client)
        pod = create_plugin_pod(self.client, self.name, image=PAUSE_IMAGE)
        uid = pod["metadata"]["uid"]
        token = request_plugin_token(self.client, bound_pod=pod, expiration_s=DEFAULT_EXPIRATION_S)
        kubeconfig = token_kubeconfig(
            self.kubeconfig, token, self.base, name=f"plugin-{uid[:8]}.kubeconfig"
        )
        self.plugin = self._plugin_process(kubeconfig, f"plugin-{uid[:8]}.log", pod_uid=uid)
        instance = PluginInstance(self.plugin, pod)
        self.instances.append(instance)
        self.plugin.start().wait_for_registration_socket()
        return instance

    def stop_plugin_instance(self, instance: PluginInstance, sig: int = signal.SIGTERM) -> int:
        """Stop an instance (its exit code) and delete its pod, as a rollout deletes a pod."""
        code = instance.process.stop(sig) if instance.process.process is not None else 0
        if instance.pod is not None:
            try:
                self.client.delete(
                    paths.pods(PLUGIN_NAMESPACE, instance.pod["metadata"]["name"]),
                    grace_period_s=0,
                )
            except NotFound:
                pass
        return code

    @property
    def plugin_kubeconfig(self) -> Path:
        """The kubeconfig of the newest plugin instance."""
        return self.plugin.kubeconfig

    def wait_node_ready(self, *, timeout_s: float) -> dict[str, Any]:
        """Until the kubelet's Node is Ready with no taint left; returns it."""

        def ready() -> dict[str, Any] | None:
            self.kubelet.check_running()
            try:
                node = self.client.get(paths.nodes(self.name))
            except NotFound:
                return None
            for cond in node.get("status", {}).get("conditions", []):
                if cond["type"] == "Ready" and cond["status"] == "True":
                    taints = node.get("spec", {}).get("taints") or []
                    return None if taints else node
            return None

        try:
            return wait_for(
                ready, timeout_s=timeout_s, description=f"Node {self.name} Ready", interval_s=0.5
            )
        except AssertionError as exc:
            raise KubeletError(f"{exc}\nkubelet log:\n{self.kubelet.log_tail()}") from None

    def wait_plugin_registered(self, *, timeout_s: float) -> None:
        """Until the plugin logs the kubelet's NotifyRegistrationStatus(registered=true)."""

        def registered() -> bool:
            self.kubelet.check_running()
            return "registered with the kubelet as DRA driver" in self.plugin.output()

        try:
            wait_for(
                registered,
                timeout_s=timeout_s,
                description="the kubelet registering the plugin",
                interval_s=0.3,
            )
        except AssertionError as exc:
            raise KubeletError(
                f"{exc}\nplugin log:\n{self.plugin.log_tail()}"
                f"\nkubelet log:\n{self.kubelet.log_tail()}"
            ) from None

    # --- inside the containers ---------------------------------------------------------------

    def exec_in(
        self, container_id: str, *argv: str, stdin: str | None = None, timeout_s: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        """``ctr tasks exec`` ``argv`` in a running container (``stdin``: text fed to it).

        As ``kubectl exec`` does, without the API server: the kubelet's CRI streaming server
        is reached through the API server only.
        """
        return self.containerd.ctr(
            "tasks",
            "exec",
            "--exec-id",
            f"x{uuid.uuid4().hex[:12]}",
            container_id,
            *argv,
            check=False,
            stdin=stdin,
            timeout_s=timeout_s,
        )

    def copy_into(self, container_id: str, source: Path, dest: str) -> None:
        """Copy a host file into a running container (as ``kubectl cp``), with its python3.

        Raises :class:`RuntimeError` naming the container when that fails.
        """
        text = base64.b64encode(source.read_bytes()).decode()
        done = self.exec_in(
            container_id, "python3", "-I", "-S", "-c", WRITE_STDIN, dest, stdin=text
        )
        if done.returncode != 0:
            raise RuntimeError(f"copying {source} into container {container_id}: {done.stderr}")

    # --- stop -----------------------------------------------------------------------------

    def node_pods(self, *, with_identity: bool = False) -> list[dict[str, Any]]:
        """The pods bound to this node, in every namespace (but the plugin's identity pod)."""
        items = self.client.list(paths.pods(), field_selector=f"spec.nodeName={self.name}").get(
            "items"
        )
        identities = {i.pod["metadata"]["uid"] for i in self.instances if i.pod is not None}
        return [
            pod for pod in items or [] if with_identity or pod["metadata"]["uid"] not in identities
        ]

    def drain(self, *, timeout_s: float = 60.0) -> None:
        """Delete the node's pods; wait until their claims are unprepared.

        That is: no pod of the node in the API (but the plugin instances' pods, which must
        outlive the plugin: its token dies with its pod) and no CDI spec left. Their containers
        are waited for by :meth:`stop_plugins`, which comes after.

        Pods force-deleted by someone else (a namespace teardown) vanish from the API at once;
        the kubelet still kills their containers, so the wait is on containerd, not the API.
        Best effort: a timeout is printed, and :meth:`stop` kills what is left anyway.
        """
        for pod in self.node_pods():
            meta = pod["metadata"]
            try:
                self.client.delete(paths.pods(meta["namespace"], meta["name"]), grace_period_s=0)
            except NotFound:
                pass
        if self.kubelet.process is None or self.kubelet.process.poll() is not None:
            return

        def drained() -> bool:
            return not self.node_pods() and not self.plugin.spec_files()

        try:
            wait_for(
                drained,
                timeout_s=timeout_s,
                description="the node's pods stopped and unprepared",
                interval_s=0.3,
            )
        except AssertionError as exc:
            print(f"realnode: {exc}")

    def stop_plugins(self, *, timeout_s: float = 30.0) -> None:
        """Stop every plugin instance, delete their pods; wait until no task of the node runs."""
        for instance in reversed(self.instances):
            self.stop_plugin_instance(instance)
        if self.kubelet.process is None or self.kubelet.process.poll() is not None:
            return

        def stopped() -> bool:
            tasks = self.containerd.ctr("tasks", "ls", "-q", check=False).stdout.split()
            return not self.node_pods(with_identity=True) and not tasks

        try:
            wait_for(stopped, timeout_s=timeout_s, description="the node's containers stopped")
        except AssertionError as exc:
            print(f"realnode: {exc}")

    def stop(self) -> list[str]:
        """Stop everything and restore the host; returns what the restore did. Never raises."""
        t = time.monotonic()
        steps: list[tuple[str, Callable[[], object]]] = [
            ("drain", self.drain),
            ("plugins", self.stop_plugins),
            ("kubelet", self.kubelet.stop),
            ("tasks", self.containerd.stop_all_tasks),
            ("containerd", self.containerd.stop),
            ("api_objects", self._delete_api_objects),
        ]
        for name, step in steps:
            try:
                step()
            except Exception as exc:  # teardown goes on whatever fails
                print(f"realnode: teardown step {name} failed: {exc!r}")
            t = self.timings.mark(f"stop_{name}", t)
        try:
            self.restored = self.guard.restore()
        finally:
            self._remove_base()
        self.timings.mark("stop_restore", t)
        return self.restored

    def _delete_api_objects(self) -> None:
        try:
            self.client.delete_collection(
                paths.resource_slices(), field_selector=f"spec.nodeName={self.name}"
            )
        except KubeError as exc:
            print(f"realnode: slices of {self.name}: {exc}")
        try:
            self.client.delete(paths.nodes(self.name))
        except NotFound:
            pass

    def _remove_base(self) -> None:
        # Keep the logs of the last run for a post-mortem (under /tmp, replaced by the next run).
        keep = Path(tempfile.gettempdir()) / f"realnode-logs-{self.node_ip}"
        shutil.rmtree(keep, ignore_errors=True)
        keep.mkdir(parents=True, exist_ok=True)
        for log in (
            *self.base.rglob("*.log"),
            *self.base.rglob("*.toml"),
            *self.base.rglob("*.json"),
        ):
            if log.is_file() and log.stat().st_size < 50_000_000 and "pod-logs" not in log.parts:
                shutil.copy(log, keep / str(log.relative_to(self.base)).replace("/", "_"))
        # Device nodes and read-only bits are fine for rmtree as root; mounts were removed.
        shutil.rmtree(self.base, ignore_errors=True)
        if self.base.exists():
            subprocess.run(["rm", "-rf", str(self.base)], check=False)
