"""Record the host state a real node changes, and put it back.

:class:`HostGuard` snapshots, before anything starts, what the kubelet, containerd and the CNI
plugins are known to change outside their own directories, and :meth:`HostGuard.restore` undoes
every change it can see afterwards (also after a failed test: callers run it in ``finally``):

- sysctls: the kubelet sets ``vm.overcommit_memory``, ``kernel.panic`` and
  ``kernel.panic_on_oops`` (its ``protectKernelDefaults: false`` behaviour); the bridge plugin
  sets ``net.ipv4.ip_forward``. Restored to the recorded values when they differ.
- paths outside the node's directory that did not exist before (``/var/lib/kubelet``, whose
  ``device-plugins/kubelet.sock`` the kubelet's device manager creates whatever its root dir,
  ``/var/log/containers``, ``/var/log/pods``, ``/run/containerd/s``...): removed again. A path
  that existed before is left alone, and so is anything created inside it.
- iptables chains (``KUBE-FIREWALL``, ``KUBE-KUBELET-CANARY``, ``KUBE-IPTABLES-HINT``, in every
  table ``iptables-save`` lists): a chain that was not there before is flushed and deleted.
  Skipped when the host has no ``iptables`` (the kubelet then only logs its failures).
- network interfaces: any link that appears (the node's bridge; veths should go with their
  network namespaces) is deleted with ``ip link del``.
- shim sockets in ``/run/containerd/s`` of the node's tasks (left by SIGKILLed shims);
- mounts under the node's directory (netns bind mounts, overlay rootfs, shm) are unmounted,
  deepest first, lazily if busy; processes whose command line names the node's directory (the
  shims) or that sit in the node's cgroup root are killed; the cgroup root is removed in every
  v1 hierarchy, deepest first.

What it does not model: conntrack entries, ARP/route entries of the bridge (they go with the
link), kernel modules the CNI plugins load (``bridge``, ``veth``, ``br_netfilter`` stay
loaded), nftables tables, and a concurrent process changing the same state meanwhile (its
changes would be undone too). It does not restore the content of files that existed before.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

#: Sysctls the kubelet and the bridge plugin were seen to change on a host of this kind.
SYSCTLS = (
    "vm.overcommit_memory",
    "kernel.panic",
    "kernel.panic_on_oops",
    "net.ipv4.ip_forward",
    "net.ipv6.conf.all.forwarding",
)
#: Paths outside the node's own directory that the kubelet or containerd create.
HOST_PATHS = (
    "/var/lib/kubelet",
    "/var/log/containers",
    "/var/log/pods",
    "/run/containerd",
    "/run/containerd/containerd.sock",
    "/run/containerd/containerd.sock.ttrpc",
    "/var/run/netns",
    "/run/netns",
    "/var/lib/cni",
    "/opt/containerd",
    "/var/run/nri",
    "/etc/cni",
    "/opt/cni",
)
CGROUP_V1_ROOT = Path("/sys/fs/cgroup")
#: Where containerd 2.x shims put their sockets, whatever containerd's config says.
SHIM_SOCKET_DIR = Path("/run/containerd/s")


def shim_sockets(containerd_socket: str, containerd_state: str) -> list[Path]:
    """The sockets the shims of the tasks under ``containerd_state`` have (or had).

    A shim's socket is ``/run/containerd/s/<sha256 of "<containerd address>/<ns>/<task id>">``
    (``pkg/shim/util_unix.go``); a SIGKILLed shim leaves it behind.
    """
    tasks = Path(containerd_state) / "io.containerd.runtime.v2.task"
    if not containerd_socket or not tasks.is_dir():
        return []
    found: list[Path] = []
    for task in tasks.glob("*/*"):
        key = os.path.join(containerd_socket, task.parent.name, task.name)
        for path in (key, os.path.join(key, "debug")):
            found.append(SHIM_SOCKET_DIR / hashlib.sha256(path.encode()).hexdigest())
    return found


def _sysctl_path(name: str) -> Path:
    return Path("/proc/sys") / name.replace(".", "/")


def read_sysctls(names: Iterable[str]) -> dict[str, str]:
    """The current values of the sysctls that exist, by name."""
    values: dict[str, str] = {}
    for name in names:
        try:
            values[name] = _sysctl_path(name).read_text().strip()
        except OSError:
            pass
    return values


def iptables_chains() -> set[tuple[str, str]] | None:
    """``(table, chain)`` of every chain ``iptables-save`` lists; None without iptables."""
    if shutil.which("iptables-save") is None:
        return None
    done = subprocess.run(["iptables-save"], capture_output=True, text=True, check=False)
    chains: set[tuple[str, str]] = set()
    table = ""
    for line in done.stdout.splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith(":"):
            chains.add((table, line[1:].split()[0]))
    return chains


def links() -> set[str]:
    """The names of the host's network interfaces."""
    return {p.name for p in Path("/sys/class/net").iterdir()}


def mounts_under(base: Path) -> list[str]:
    """Mount points at or under ``base``, deepest first."""
    prefix = str(base).rstrip("/") + "/"
    found: list[str] = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        point = line.split()[1].encode().decode("unicode_escape")
        if point == str(base) or point.startswith(prefix):
            found.append(point)
    return sorted(set(found), key=lambda p: (-p.count("/"), p))


def cgroup_dirs(cgroup_root: str) -> list[Path]:
    """The node's cgroup root in every mounted v1 hierarchy (those that have it)."""
    rel = cgroup_root.strip("/")
    return [h / rel for h in sorted(CGROUP_V1_ROOT.iterdir()) if (h / rel).is_dir()]


def create_cgroup_root(cgroup_root: str) -> list[Path]:
    """Create ``cgroup_root`` in every v1 hierarchy (the kubelet refuses a missing one).

    cpuset needs ``cpuset.cpus``/``cpuset.mems`` copied from the parent before any task joins.
    """
    rel = cgroup_root.strip("/")
    made: list[Path] = []
    for hierarchy in sorted(CGROUP_V1_ROOT.iterdir()):
        if not (hierarchy / "cgroup.procs").exists():
            continue
        path = hierarchy / rel
        path.mkdir(exist_ok=True)
        made.append(path)
        for knob in ("cpuset.cpus", "cpuset.mems"):
            if (hierarchy / knob).exists():
                (path / knob).write_text((hierarchy / knob).read_text())
    return made


def _pids_in(cgroup: Path) -> set[int]:
    pids: set[int] = set()
    for procs in cgroup.rglob("cgroup.procs"):
        try:
            pids.update(int(p) for p in procs.read_text().split())
        except OSError:
            pass
    return pids


def _pids_naming(text: str) -> set[int]:
    pids: set[int] = set()
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            pids.add(int(entry.name))
    return pids


def kill_pids(pids: Iterable[int]) -> None:
    """SIGKILL each pid that still exists."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def remove_cgroup_tree(path: Path) -> None:
    """Rmdir ``path`` and every cgroup below it, deepest first (cgroup dirs refuse rm -r)."""
    if not path.is_dir():
        return
    for sub in sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        try:
            sub.rmdir()
        except OSError:
            pass
    try:
        path.rmdir()
    except OSError:
        pass


@dataclass
class HostGuard:
    """A snapshot of the host taken before a real node starts, and its :meth:`restore`.

    ``base`` is the node's own directory (tmp dir; removed by the caller), ``cgroup_root``
    its kubelet's ``cgroupRoot``.
    """

    base: Path
    cgroup_root: str
    #: containerd's socket and state dir, to find the shims' sockets of a killed run.
    containerd_socket: str = ""
    containerd_state: str = ""
    sysctls: dict[str, str] = field(default_factory=dict)
    chains: set[tuple[str, str]] | None = None
    link_names: set[str] = field(default_factory=set)
    absent_paths: list[Path] = field(default_factory=list)
    #: What :meth:`restore` did, for the report of a test (one line each).
    actions: list[str] = field(default_factory=list)

    @classmethod
    def snapshot(
        cls,
        base: Path,
        cgroup_root: str,
        *,
        containerd_socket: str = "",
        containerd_state: str = "",
        extra_paths: Sequence[str] = (),
    ) -> HostGuard:
        """Record the host now (call before anything of the node starts)."""
        return cls(
            base=base,
            cgroup_root=cgroup_root,
            containerd_socket=containerd_socket,
            containerd_state=containerd_state,
            sysctls=read_sysctls(SYSCTLS),
            chains=iptables_chains(),
            link_names=links(),
            absent_paths=[Path(p) for p in (*HOST_PATHS, *extra_paths) if not os.path.lexists(p)],
        )

    def save(self, path: Path) -> None:
        """Write the snapshot as JSON, so a later run can restore after this process died."""
        path.write_text(
            json.dumps(
                {
                    "base": str(self.base),
                    "cgroup_root": self.cgroup_root,
                    "containerd_socket": self.containerd_socket,
                    "containerd_state": self.containerd_state,
                    "sysctls": self.sysctls,
                    "chains": None if self.chains is None else sorted(self.chains),
                    "links": sorted(self.link_names),
                    "absent_paths": [str(p) for p in self.absent_paths],
                }
            )
        )

    @classmethod
    def load(cls, path: Path) -> HostGuard:
        """A snapshot written by :meth:`save`."""
        data = json.loads(path.read_text())
        chains = data["chains"]
        return cls(
            base=Path(data["base"]),
            cgroup_root=data["cgroup_root"],
            containerd_socket=data.get("containerd_socket", ""),
            containerd_state=data.get("containerd_state", ""),
            sysctls=dict(data["sysctls"]),
            chains=None if chains is None else {(t, c) for t, c in chains},
            link_names=set(data["links"]),
            absent_paths=[Path(p) for p in data["absent_paths"]],
        )

    def restore(self) -> list[str]:
        """Undo every change seen since :meth:`snapshot`; returns what was done."""
        sockets = shim_sockets(self.containerd_socket, self.containerd_state)
        self._kill_leftovers()
        for socket in sockets:
            if socket.exists():
                socket.unlink()
                self._note(f"removed shim socket {socket}")
        self._unmount()
        for path in cgroup_dirs(self.cgroup_root):
            remove_cgroup_tree(path)
            self._note(f"removed cgroup {path}" if not path.exists() else f"cgroup {path} busy")
        for name in sorted(links() - self.link_names):
            subprocess.run(["ip", "link", "del", name], capture_output=True, check=False)
            self._note(f"deleted link {name}")
        self._restore_iptables()
        for name, value in self.sysctls.items():
            now = read_sysctls([name]).get(name)
            if now != value:
                try:
                    _sysctl_path(name).write_text(value)
                    self._note(f"sysctl {name}: {now} -> {value}")
                except OSError as exc:
                    self._note(f"sysctl {name}: could not restore {value}: {exc}")
        for path in self.absent_paths:
            if os.path.lexists(path):
                if path.is_dir() and not path.is_symlink():
                    for point in mounts_under(path):
                        subprocess.run(["umount", "-l", point], capture_output=True, check=False)
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
                self._note(f"removed {path}")
        return self.actions

    def _note(self, text: str) -> None:
        self.actions.append(text)

    def _kill_leftovers(self) -> None:
        for _ in range(3):
            pids = _pids_naming(str(self.base))
            for path in cgroup_dirs(self.cgroup_root):
                pids |= _pids_in(path)
            pids.discard(os.getpid())
            if not pids:
                return
            self._note(f"killed leftover pids {sorted(pids)}")
            kill_pids(pids)
            time.sleep(0.5)

    def _unmount(self) -> None:
        for point in mounts_under(self.base):
            done = subprocess.run(["umount", point], capture_output=True, check=False)
            if done.returncode != 0:
                subprocess.run(["umount", "-l", point], capture_output=True, check=False)
            self._note(f"unmounted {point}")

    def _restore_iptables(self) -> None:
        if self.chains is None:
            return
        now = iptables_chains() or set()
        for table, chain in sorted(now - self.chains):
            # Rules that jump to the chain must go first; the kubelet adds them to built-ins.
            save = subprocess.run(
                ["iptables-save", "-t", table], capture_output=True, text=True, check=False
            ).stdout
            for line in save.splitlines():
                if line.startswith("-A ") and f"-j {chain}" in line:
                    rule = line.split()[1:]
                    subprocess.run(
                        ["iptables", "-t", table, "-D", *rule], capture_output=True, check=False
                    )
            subprocess.run(["iptables", "-t", table, "-F", chain], capture_output=True, check=False)
            subprocess.run(["iptables", "-t", table, "-X", chain], capture_output=True, check=False)
            self._note(f"deleted iptables chain {table}/{chain}")


@dataclass(frozen=True)
class HostView:
    """What real nodes change on the host, seen from outside: compare one before and after.

    Links, the sysctls of :data:`SYSCTLS`, iptables chains, which of :data:`HOST_PATHS`
    exist, and anything left of a node: directories ``rn*-*`` in the temp dir, mounts under
    them, ``dcurn-*`` cgroups, processes naming them.
    """

    links: frozenset[str]
    sysctls: tuple[tuple[str, str], ...]
    chains: frozenset[tuple[str, str]] | None
    host_paths: frozenset[str]
    node_dirs: frozenset[str]
    node_mounts: frozenset[str]
    node_cgroups: frozenset[str]
    node_processes: frozenset[int]

    @classmethod
    def now(cls, tmp: Path = Path("/tmp")) -> HostView:
        """The host as it is now."""
        dirs = sorted(tmp.glob("rn*-*"))
        chains = iptables_chains()
        return cls(
            links=frozenset(links()),
            sysctls=tuple(sorted(read_sysctls(SYSCTLS).items())),
            chains=None if chains is None else frozenset(chains),
            host_paths=frozenset(p for p in HOST_PATHS if os.path.lexists(p)),
            node_dirs=frozenset(str(d) for d in dirs),
            node_mounts=frozenset(m for d in dirs for m in mounts_under(d)),
            node_cgroups=frozenset(
                str(p) for h in CGROUP_V1_ROOT.iterdir() for p in h.glob("dcurn-*")
            ),
            node_processes=frozenset(pid for d in dirs for pid in _pids_naming(str(d))),
        )

    def differences(self, later: HostView) -> list[str]:
        """What differs in ``later``, one line per field; empty when the host is as it was."""
        return [
            f"{name}: {getattr(self, name)!r} -> {getattr(later, name)!r}"
            for name in self.__dataclass_fields__
            if getattr(self, name) != getattr(later, name)
        ]
