"""The real node daemon (``dcu-dra kubelet-plugin``) as a child process, for tests and the demo.

:class:`PluginProcess` starts the daemon with the directories a DaemonSet would mount, waits
until it is useful (its registration socket exists, its ResourceSlice is visible in the API
server), and stops it with SIGTERM, then SIGKILL. Every wait notices a daemon that exited
early and fails with the tail of its log, which is where the reason is.

It also knows where the daemon leaves its files (per-claim CDI specs, vdev directories, the
checkpoint) and its sockets, so callers can look at them without repeating the layout.
:meth:`PluginProcess.in_directory` and :meth:`PluginProcess.for_kubelet` build the two
layouts tests use: everything under one directory, or mounted beside a fake kubelet as the
DaemonSet mounts it beside the real one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from dra_driver import DRIVER_NAME
from dra_driver.cdi.model import spec_file_name
from dra_driver.cluster.kube import KubeClient, paths
from dra_driver.errors import DriverError
from dra_driver.kubeletplugin.plugin_server import dra_socket_name, registration_socket_name
from dra_driver.prepare.checkpoint import CHECKPOINT_FILE
from dra_driver.prepare.plugin import VDEV_SUBDIR, claim_kind
from dra_driver.testing.processes import dies_with_parent
from dra_driver.testing.waiting import wait_for

if TYPE_CHECKING:
    from dra_driver.testing.fakekubelet import FakeKubelet

T = TypeVar("T")

#: After SIGTERM the daemon gives in-flight calls up to ``daemon.SHUTDOWN_GRACE_S`` (20 s); an
#: idle one exits in well under a second. SIGKILL only after the grace, as a DaemonSet does.
DEFAULT_STOP_TIMEOUT_S = 30.0
#: Start to slice takes ~0.4 s on a 2-core machine; a loaded CI machine needs far more.
DEFAULT_READY_TIMEOUT_S = 30.0


class PluginProcessError(DriverError):
    """The daemon exited early or did not become ready in time.

    The first line of the message says what and quotes the daemon's last log line (usually the
    reason); the lines after it are the log's tail.
    """

    def __init__(self, message: str, *, log_file: Path | None = None, log_tail: str = "") -> None:
        self.log_file = log_file
        self.log_tail = log_tail
        if log_file is None:
            super().__init__(message)
            return
        last = log_tail.splitlines()[-1] if log_tail.strip() else "(empty)"
        super().__init__(f"{message}; last log line: {last}\nlog {log_file}:\n{log_tail}")


def dcu_dra_command() -> list[str]:
    """The command that runs ``dcu-dra``: the console script beside this Python, else ``-m``."""
    script = Path(sys.executable).parent / "dcu-dra"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "dra_driver"]


class PluginProcess:
    """One ``dcu-dra kubelet-plugin`` process for one node.

    Construct it with the daemon's directories (or with :meth:`in_directory` or
    :meth:`for_kubelet`), then :meth:`start` it. :meth:`restart` stops it and starts it again
    with the same arguments, so the same directories and state. :attr:`args` is the command
    line, for a test that runs it in the foreground to see stderr apart from stdout.
    """

    def __init__(
        self,
        *,
        node_name: str,
        root: Path,
        kubeconfig: Path,
        registrar_dir: Path,
        data_dir: Path,
        cdi_dir: Path,
        log_file: Path,
        driver_name: str = DRIVER_NAME,
        boot_id_file: Path | None = None,
        pod_uid: str | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        """Describe the daemon; nothing runs until :meth:`start`.

        ``boot_id_file`` replaces the kernel's boot id, so a test can play a reboot by
        changing the file's content between two starts. ``pod_uid`` runs it as one instance
        of a rolling update (``--rolling-update --pod-uid``; its sockets' names carry the UID).
        """
        self.node_name = node_name
        self.driver_name = driver_name
        self.registrar_dir = registrar_dir
        self.data_dir = data_dir
        self.cdi_dir = cdi_dir
        self.log_file = log_file
        self.kubeconfig = kubeconfig
        self.pod_uid = pod_uid
        self.args = [
            *dcu_dra_command(),
            "kubelet-plugin",
            "--node-name",
            node_name,
            "--driver-name",
            driver_name,
            "--root",
            str(root),
            "--kubeconfig",
            str(kubeconfig),
            "--registrar-dir",
            str(registrar_dir),
            "--plugin-data-dir",
            str(data_dir),
            "--cdi-dir",
            str(cdi_dir),
            *(["--boot-id-file", str(boot_id_file)] if boot_id_file is not None else []),
            *(["--rolling-update", "--pod-uid", pod_uid] if pod_uid is not None else []),
            *extra_args,
        ]
        self.process: subprocess.Popen[bytes] | None = None

    @classmethod
    def in_directory(
        cls,
        base: Path,
        *,
        node_name: str,
        root: Path,
        kubeconfig: Path,
        boot_id_file: Path | None = None,
        extra_args: Sequence[str] = (),
    ) -> PluginProcess:
        """A daemon with everything under ``base``: ``reg/``, ``data/``, ``cdi/``, ``plugin.log``.

        For a daemon that no kubelet watches: tests call its DRA socket themselves. Keep
        ``base`` short; the sockets' paths must fit ``AF_UNIX``'s 108 bytes.
        """
        return cls(
            node_name=node_name,
            root=root,
            kubeconfig=kubeconfig,
            registrar_dir=base / "reg",
            data_dir=base / "data",
            cdi_dir=base / "cdi",
            log_file=base / "plugin.log",
            boot_id_file=boot_id_file,
            extra_args=extra_args,
        )

    @classmethod
    def for_kubelet(
        cls,
        kubelet: FakeKubelet,
        base: Path,
        *,
        root: Path,
        kubeconfig: Path,
        extra_args: Sequence[str] = (),
    ) -> PluginProcess:
        """A daemon of ``kubelet``'s node, mounted as the DaemonSet mounts it.

        The kubelet's registration dir is the registrar dir and ``<plugins dir>/<driver>`` the
        plugin data dir; the CDI dir (``cdi/``) and the log (``plugin.log``) are under ``base``.
        """
        if kubelet.plugins_dir is None:
            raise PluginProcessError(
                f"the fake kubelet of node {kubelet.node_name} has no plugins dir to mount"
            )
        return cls(
            node_name=kubelet.node_name,
            root=root,
            kubeconfig=kubeconfig,
            registrar_dir=kubelet.registry_dir,
            data_dir=kubelet.plugins_dir / DRIVER_NAME,
            cdi_dir=base / "cdi",
            log_file=base / "plugin.log",
            extra_args=extra_args,
        )

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> PluginProcess:
        """Start the daemon, appending its output to :attr:`log_file`; returns ``self``."""
        if self.process is not None:
            raise PluginProcessError(f"the plugin of node {self.node_name} was already started")
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                dies_with_parent(self.args),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Own session: a Ctrl-C in the terminal reaches only the caller, which then
                # stops the daemon in its own order (it must outlive the pods' unprepare).
                start_new_session=True,
            )
        return self

    def stop(self, sig: int = signal.SIGTERM, *, timeout_s: float = DEFAULT_STOP_TIMEOUT_S) -> int:
        """Send ``sig``, wait up to ``timeout_s``, then SIGKILL; returns the exit code.

        Idempotent: a daemon that already exited just reports its code.
        """
        if self.process is None:
            raise PluginProcessError(f"the plugin of node {self.node_name} was never started")
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()

    def restart(self, sig: int = signal.SIGTERM) -> PluginProcess:
        """Stop the daemon with ``sig`` (if it runs) and start it again; returns ``self``.

        The new process appends to the same log, so :meth:`output` holds both runs.
        """
        self.stop_if_started(sig)
        return self.start()

    def stop_if_started(self, sig: int = signal.SIGTERM) -> None:
        """Stop the daemon with ``sig`` if it was started, so that :meth:`start` can run again."""
        if self.process is not None:
            self.stop(sig)
            self.process = None

    @property
    def returncode(self) -> int | None:
        """The exit code, or None while running (or before :meth:`start`)."""
        return None if self.process is None else self.process.poll()

    # --- waiting --------------------------------------------------------------------------

    @property
    def registration_socket(self) -> Path:
        """The socket the kubelet's plugin watcher finds in the registrar dir."""
        name = registration_socket_name(
            self.driver_name, pod_uid=self.pod_uid, registrar_dir=self.registrar_dir
        )
        return self.registrar_dir / name

    @property
    def dra_socket(self) -> Path:
        """The socket the kubelet calls (NodePrepareResources, ...)."""
        return self.data_dir / dra_socket_name(pod_uid=self.pod_uid, data_dir=self.data_dir)

    def wait_for_registration_socket(self, *, timeout_s: float = DEFAULT_READY_TIMEOUT_S) -> None:
        """Wait until the daemon's registration socket exists."""
        self._wait(
            self.registration_socket.exists,
            timeout_s=timeout_s,
            what=f"its registration socket {self.registration_socket} appeared",
        )

    def wait_for_slices(
        self, client: KubeClient, *, count: int = 1, timeout_s: float = DEFAULT_READY_TIMEOUT_S
    ) -> list[dict[str, Any]]:
        """Wait until ``count`` ResourceSlices of this node and driver are visible; return them."""

        def published() -> list[dict[str, Any]] | None:
            found = self.slices(client)
            return found if len(found) == count else None

        return self._wait(
            published,
            timeout_s=timeout_s,
            what=(
                "its ResourceSlice was visible in the API server"
                if count == 1
                else f"its {count} ResourceSlices were visible in the API server"
            ),
        )

    def slices(self, client: KubeClient) -> list[dict[str, Any]]:
        """The ResourceSlices of this node and driver, by name."""
        items = client.list(
            paths.resource_slices(),
            field_selector=f"spec.driver={self.driver_name},spec.nodeName={self.node_name}",
        ).get("items")
        return sorted(items or [], key=lambda s: str(s["metadata"]["name"]))

    def _wait(self, predicate: Callable[[], T | None], *, timeout_s: float, what: str) -> T:
        def check() -> T | None:
            if self.returncode is not None:
                raise PluginProcessError(
                    f"the plugin of node {self.node_name} exited with code {self.returncode} "
                    f"before {what}",
                    log_file=self.log_file,
                    log_tail=self.log_tail(),
                )
            return predicate()

        try:
            return wait_for(check, timeout_s=timeout_s, description=what)
        except AssertionError:
            raise PluginProcessError(
                f"the plugin of node {self.node_name}: timed out after {timeout_s:g} s "
                f"waiting until {what}",
                log_file=self.log_file,
                log_tail=self.log_tail(),
            ) from None

    # --- output and files -----------------------------------------------------------------

    def output(self) -> str:
        """Everything the daemon logged so far (empty before it wrote anything)."""
        try:
            return self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines of the log."""
        return "\n".join(self.output().splitlines()[-lines:])

    def spec_file(self, claim_uid: str) -> Path:
        """The per-claim CDI spec the daemon writes for ``claim_uid``."""
        return self.cdi_dir / spec_file_name(claim_kind(self.driver_name), claim_uid)

    def vdev_dir(self, claim_uid: str) -> Path:
        """The directory of the claim's ``vdev<N>.conf`` files (absent for whole cards)."""
        return self.data_dir / VDEV_SUBDIR / claim_uid

    def spec_files(self) -> list[Path]:
        """Every per-claim CDI spec in the CDI dir."""
        if not self.cdi_dir.is_dir():
            return []
        prefix = spec_file_name(claim_kind(self.driver_name)).removesuffix(".json") + "_"
        return sorted(p for p in self.cdi_dir.iterdir() if p.name.startswith(prefix))

    def vdev_files(self) -> list[Path]:
        """Every vdev file of every claim."""
        root = self.data_dir / VDEV_SUBDIR
        return sorted(root.glob("*/vdev*.conf")) if root.is_dir() else []

    def checkpoint_claims(self) -> dict[str, Any]:
        """The claims recorded in the daemon's checkpoint, by UID."""
        document = json.loads((self.data_dir / CHECKPOINT_FILE).read_text())
        return dict(document["claims"])
