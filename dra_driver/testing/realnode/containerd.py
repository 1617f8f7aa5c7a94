"""containerd for one real node: its config, the daemon, and image import with ``ctr``.

:class:`Containerd` writes a version-4 config that keeps everything of the node under its own
directory (root, state, gRPC/ttrpc sockets, runc's state root, netns bind mounts, the ``opt``
plugin's path, CNI conf and IPAM data) and sets what a host of this kind needs
(``restrict_oom_score_adj``: root lacks CAP_SYS_RESOURCE; ``cdi_spec_dirs`` = the node's CDI
dir, CDI being always on in 2.x; the sandbox image pinned to the imported pause image; runc and
the CNI plugins from ``build/bin/node``). It starts ``containerd`` with that config, waits for
its socket, imports OCI archives with ``ctr -n k8s.io images import`` and stops the daemon
(SIGTERM, then SIGKILL).

What it does not own: the shims' sockets, which containerd 2.x always puts under
``/run/containerd/s`` (the shims remove them on exit), the containers themselves (the kubelet
stops them; :class:`~dra_driver.testing.realnode.hoststate.HostGuard` kills what is left) and
image registries (there are none: images come only from archives), and the host's
``/etc/containerd/conf.d/*.toml`` drop-ins, which containerd 2.4 imports whatever the config
says (a warning is printed when there are any). NRI is disabled (it would
create ``/var/run/nri``), and so are the snapshotters this host cannot use.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from dra_driver.errors import DriverError
from dra_driver.testing.processes import dies_with_parent, log_tail, terminate
from dra_driver.testing.waiting import wait_for

NAMESPACE = "k8s.io"
#: containerd 2.4 imports these whatever the config says (its default ``imports``).
HOST_DROP_INS = "/etc/containerd/conf.d/*.toml"


class ContainerdError(DriverError):
    """containerd did not start, or ctr failed."""


@dataclass
class Containerd:
    """One containerd daemon under ``base`` (keep ``base`` short: socket paths)."""

    base: Path
    bin_dir: Path
    cdi_dir: Path
    cni_conf_dir: Path
    sandbox_image: str
    snapshotter: str = "overlayfs"

    def __post_init__(self) -> None:
        self.socket = self.base / "ctrd.sock"
        self.config_file = self.base / "containerd.toml"
        self.log_file = self.base / "containerd.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        """The CRI endpoint for the kubelet (``unix://`` + socket)."""
        return f"unix://{self.socket}"

    def config(self) -> str:
        """The config file's text (config version 4, containerd 2.4's own)."""
        b, n = self.base, self.bin_dir
        return f"""version = 4
root = "{b}/root"
state = "{b}/state"
# containerd 2.4 always adds /etc/containerd/conf.d/*.toml to imports (its default config's
# list is merged with this file's): a host's drop-ins there apply to this node too.
disabled_plugins = ["io.containerd.nri.v1.nri", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing"]

[debug]
  level = "info"

# Version 4: the sockets are server plugins (a top-level [grpc] is ignored and containerd
# would listen on /run/containerd/containerd.sock).
[plugins."io.containerd.server.v1.grpc"]
  address = "{self.socket}"
[plugins."io.containerd.server.v1.ttrpc"]
  address = "{self.socket}.ttrpc"
[plugins."io.containerd.server.v1.metrics"]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{b}/opt"

[plugins."io.containerd.cri.v1.images"]
  snapshotter = "{self.snapshotter}"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "{self.sandbox_image}"

[plugins."io.containerd.cri.v1.runtime"]
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  cdi_spec_dirs = ["{self.cdi_dir}"]
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        BinaryName = "{n}/runc"
        Root = "{b}/runc"
        SystemdCgroup = false
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["{n}"]
    conf_dir = "{self.cni_conf_dir}"
    max_conf_num = 1
"""

    def start(self, *, timeout_s: float = 60.0) -> Containerd:
        """Write the config, start containerd and wait until ``ctr version`` answers."""
        self.base.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(self.config())
        drop_ins = sorted(Path(HOST_DROP_INS).parent.glob("*.toml"))
        if drop_ins:
            print(f"realnode: warning: containerd will also read the host's drop-ins {drop_ins}")
        env = {**os.environ, "PATH": f"{self.bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                dies_with_parent(
                    [str(self.bin_dir / "containerd"), "--config", str(self.config_file)]
                ),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )

        def ready() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise ContainerdError(
                    f"containerd exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            return self.socket.exists() and self.ctr("version", check=False).returncode == 0

        wait_for(ready, timeout_s=timeout_s, description="containerd's socket", interval_s=0.2)
        return self

    def ctr(
        self, *args: str, check: bool = True, timeout_s: float = 120.0, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``ctr --address SOCKET -n k8s.io ARGS`` (``stdin``: text fed to it)."""
        done = subprocess.run(
            [str(self.bin_dir / "ctr"), "--address", str(self.socket), "-n", NAMESPACE, *args],
            input=stdin,
            stdin=None if stdin is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        if check and done.returncode != 0:
            raise ContainerdError(f"ctr {' '.join(args)} failed ({done.returncode}): {done.stderr}")
        return done

    def import_image(self, archive: Path) -> str:
        """``ctr images import`` an OCI archive (unpacked for the CRI snapshotter)."""
        return self.ctr(
            "images", "import", "--snapshotter", self.snapshotter, "--local", str(archive)
        ).stdout

    def stop_all_tasks(self) -> None:
        """SIGKILL and delete every task and container left in the k8s.io namespace."""
        if self.process is None or self.process.poll() is not None:
            return
        tasks = self.ctr("tasks", "ls", "-q", check=False).stdout.split()
        for task in tasks:
            self.ctr("tasks", "kill", "-s", "SIGKILL", task, check=False)
        for task in tasks:
            self.ctr("tasks", "rm", "-f", task, check=False)
        for container in self.ctr("containers", "ls", "-q", check=False).stdout.split():
            self.ctr("containers", "rm", container, check=False)

    def stop(self, *, timeout_s: float = 20.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout_s``; the exit code (None if never started)."""
        return terminate(self.process, timeout_s=timeout_s)

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines of containerd's log."""
        return log_tail(self.log_file, lines)
