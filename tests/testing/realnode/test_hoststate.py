"""HostGuard and the sweep of killed runs put the host back as it was found (root only).

These change real host state (a sysctl, a network link, a cgroup, a path) and put it back in
``finally`` whatever happens.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dra_driver.testing.realnode.hoststate import (
    HostGuard,
    HostView,
    cgroup_dirs,
    links,
    read_sysctls,
)
from dra_driver.testing.realnode.node import GUARD_FILE, OWNER_FILE, sweep_stale_nodes

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.geteuid() != 0,
    reason="changes host state: needs root on Linux",
)

SYSCTL = "vm.overcommit_memory"


def write_sysctl(value: str) -> None:
    Path("/proc/sys/vm/overcommit_memory").write_text(value)


def other(value: str) -> str:
    return "1" if value != "1" else "0"


def test_restore_undoes_a_sysctl_a_link_a_cgroup_a_path_and_a_process(tmp_path: Path) -> None:
    original = read_sysctls([SYSCTL])[SYSCTL]
    base = tmp_path / "node"
    base.mkdir()
    extra = tmp_path / "created-later"
    guard = HostGuard.snapshot(base, "/dcurn-test-guard", extra_paths=[str(extra)])
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", str(base)])
    try:
        write_sysctl(other(original))
        subprocess.run(["ip", "link", "add", "dcurntest0", "type", "bridge"], check=True)
        (Path("/sys/fs/cgroup/pids") / "dcurn-test-guard").mkdir()
        extra.mkdir()
        actions = guard.restore()
        assert read_sysctls([SYSCTL])[SYSCTL] == original
        assert "dcurntest0" not in links()
        assert cgroup_dirs("/dcurn-test-guard") == []
        assert not extra.exists()
        assert sleeper.wait(timeout=5) == -9
        assert f"sysctl {SYSCTL}: {other(original)} -> {original}" in actions
        assert "deleted link dcurntest0" in actions
    finally:
        sleeper.kill()
        write_sysctl(original)
        subprocess.run(["ip", "link", "del", "dcurntest0"], capture_output=True, check=False)
        for path in cgroup_dirs("/dcurn-test-guard"):
            path.rmdir()


def test_the_sweep_restores_the_runs_of_a_dead_owner_newest_first(tmp_path: Path) -> None:
    """Node 1 snapshots after node 0 changed the sysctl: restoring node 0 last ends as found."""
    original = read_sysctls([SYSCTL])[SYSCTL]
    dead = subprocess.Popen(["true"])
    dead.wait()
    try:
        for index in range(2):
            base = tmp_path / f"rn{index}-x"
            base.mkdir()
            HostGuard.snapshot(base, f"/dcurn-sweep-{index}").save(base / GUARD_FILE)
            (base / OWNER_FILE).write_text(str(dead.pid))
            write_sysctl(other(original))  # what node <index>'s kubelet did
            time.sleep(0.05)  # distinct snapshot times
        done = sweep_stale_nodes(tmp_path)
        assert len(done) == 2, done
        assert [line.split()[2] for line in done] == [
            f"{tmp_path}/rn1-x:",
            f"{tmp_path}/rn0-x:",
        ]
        assert read_sysctls([SYSCTL])[SYSCTL] == original
        assert not list(tmp_path.glob("rn*"))
    finally:
        write_sysctl(original)


def test_the_sweep_leaves_a_live_owners_node_alone(tmp_path: Path) -> None:
    base = tmp_path / "rn0-live"
    base.mkdir()
    HostGuard.snapshot(base, "/dcurn-live").save(base / GUARD_FILE)
    (base / OWNER_FILE).write_text(str(os.getpid()))
    assert sweep_stale_nodes(tmp_path) == []
    assert base.is_dir()


def test_host_view_names_what_changed() -> None:
    before = HostView.now()
    assert before.differences(HostView.now()) == []
    try:
        subprocess.run(["ip", "link", "add", "dcurntest1", "type", "bridge"], check=True)
        (changed,) = before.differences(HostView.now())
        assert changed.startswith("links: ") and "dcurntest1" in changed
    finally:
        subprocess.run(["ip", "link", "del", "dcurntest1"], capture_output=True, check=False)
    assert before.differences(HostView.now()) == []
