"""dra_driver/testing/plugin_process.py: the two directory layouts, the boot id file, restart.

The daemons here run for real, against an API server that cannot be reached: the daemon still
serves the kubelet (it registers and recovers its checkpoint), which is all these tests need.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from dra_driver import DRIVER_NAME
from dra_driver.cluster.kube import KubeClient, KubeConfig
from dra_driver.prepare.checkpoint import CHECKPOINT_FILE
from dra_driver.testing.fakekubelet import FakeKubelet
from dra_driver.testing.plugin_process import PluginProcess, PluginProcessError

#: Port 1 on loopback refuses at once; plain HTTP so no TLS settings are involved.
UNREACHABLE_SERVER = "http://127.0.0.1:1"
UNREACHABLE_KUBECONFIG = f"""\
apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "{UNREACHABLE_SERVER}"}}}}]
users: [{{name: u, user: {{token: t}}}}]
contexts: [{{name: c, context: {{cluster: c, user: u}}}}]
current-context: c
"""


@pytest.fixture
def kubeconfig(short_sock_dir: Path) -> Path:
    path = short_sock_dir / "kubeconfig"
    path.write_text(UNREACHABLE_KUBECONFIG)
    return path


@pytest.fixture
def client() -> Iterator[KubeClient]:
    with KubeClient(KubeConfig(server=UNREACHABLE_SERVER)) as kube:
        yield kube


def flag(plugin: PluginProcess, name: str) -> str:
    """The value given to ``name`` on the daemon's command line."""
    return plugin.args[plugin.args.index(name) + 1]


def boot_id_in_checkpoint(plugin: PluginProcess) -> str:
    return str(json.loads((plugin.data_dir / CHECKPOINT_FILE).read_text())["bootID"])


def test_in_directory_puts_every_directory_and_the_log_under_base(
    tmp_path: Path, mock_root: Path, kubeconfig: Path
) -> None:
    plugin = PluginProcess.in_directory(
        tmp_path, node_name="n", root=mock_root, kubeconfig=kubeconfig, extra_args=["--x", "1"]
    )
    assert (plugin.registrar_dir, plugin.data_dir, plugin.cdi_dir, plugin.log_file) == (
        tmp_path / "reg",
        tmp_path / "data",
        tmp_path / "cdi",
        tmp_path / "plugin.log",
    )
    assert flag(plugin, "--registrar-dir") == str(tmp_path / "reg")
    assert flag(plugin, "--plugin-data-dir") == str(tmp_path / "data")
    assert flag(plugin, "--cdi-dir") == str(tmp_path / "cdi")
    assert plugin.args[-2:] == ["--x", "1"]
    assert "--boot-id-file" not in plugin.args
    assert plugin.dra_socket == tmp_path / "data" / "dra.sock"
    assert plugin.registration_socket == tmp_path / "reg" / f"{DRIVER_NAME}-reg.sock"


def test_for_kubelet_mounts_the_kubelets_dirs_as_the_daemonset_does(
    tmp_path: Path, mock_root: Path, kubeconfig: Path, client: KubeClient
) -> None:
    """The registration dir is the kubelet's; the data dir is ``<plugins dir>/<driver>``."""
    kubelet = FakeKubelet(
        client=client,
        node_name="n1",
        registry_dir=tmp_path / "registry",
        plugins_dir=tmp_path / "plugins",
    )
    plugin = PluginProcess.for_kubelet(
        kubelet, tmp_path / "base", root=mock_root, kubeconfig=kubeconfig
    )
    assert plugin.node_name == "n1" and flag(plugin, "--node-name") == "n1"
    assert plugin.registrar_dir == tmp_path / "registry"
    assert plugin.data_dir == tmp_path / "plugins" / DRIVER_NAME
    assert (plugin.cdi_dir, plugin.log_file) == (
        tmp_path / "base" / "cdi",
        tmp_path / "base" / "plugin.log",
    )
    assert plugin.registration_socket == tmp_path / "registry" / f"{DRIVER_NAME}-reg.sock"


def test_for_kubelet_needs_a_kubelet_with_a_plugins_dir(
    tmp_path: Path, mock_root: Path, kubeconfig: Path, client: KubeClient
) -> None:
    kubelet = FakeKubelet(client=client, node_name="n1", registry_dir=tmp_path / "registry")
    with pytest.raises(
        PluginProcessError, match=r"^the fake kubelet of node n1 has no plugins dir to mount$"
    ):
        PluginProcess.for_kubelet(kubelet, tmp_path, root=mock_root, kubeconfig=kubeconfig)


def test_restart_keeps_the_object_and_the_boot_id_file_plays_a_reboot(
    short_sock_dir: Path, mock_root: Path, kubeconfig: Path
) -> None:
    """The daemon reads the given boot id; restart() runs it again in place, same log."""
    boot_id_file = short_sock_dir / "boot_id"
    boot_id_file.write_text("boot-1\n")
    plugin = PluginProcess.in_directory(
        short_sock_dir / "p",
        node_name="n",
        root=mock_root,
        kubeconfig=kubeconfig,
        boot_id_file=boot_id_file,
    )
    assert flag(plugin, "--boot-id-file") == str(boot_id_file)
    try:
        plugin.start().wait_for_registration_socket()
        first = plugin.process
        assert first is not None and plugin.dra_socket.is_socket()
        assert boot_id_in_checkpoint(plugin) == "boot-1"

        boot_id_file.write_text("boot-2\n")
        assert plugin.restart(signal.SIGTERM) is plugin
        plugin.wait_for_registration_socket()
        assert plugin.process is not None and plugin.process.pid != first.pid
        assert first.returncode == 0 and plugin.returncode is None
        assert boot_id_in_checkpoint(plugin) == "boot-2"
    finally:
        if plugin.process is not None:
            plugin.stop(signal.SIGKILL)
    # Both runs logged to the same file; only the first was stopped with SIGTERM.
    assert plugin.output().count("discovered 3 DCU(s)") == 2, plugin.output()
    assert plugin.output().count("received SIGTERM") == 1, plugin.output()


# --- start, wait, stop ----------------------------------------------------------------------


def test_registers_and_stops_on_sigterm(
    short_sock_dir: Path, mock_root: Path, kubeconfig: Path
) -> None:
    """The API server being unreachable does not keep the daemon from serving the kubelet."""
    plugin = PluginProcess.in_directory(
        short_sock_dir, node_name="n", root=mock_root, kubeconfig=kubeconfig
    ).start()
    try:
        plugin.wait_for_registration_socket(timeout_s=30)
    finally:
        code = plugin.stop(signal.SIGTERM)
    assert code == 0
    assert "received SIGTERM" in plugin.output()
    assert plugin.returncode == 0 and plugin.spec_files() == [] and plugin.vdev_files() == []


def test_a_daemon_that_exits_early_fails_the_wait_with_its_log(
    short_sock_dir: Path, kubeconfig: Path
) -> None:
    plugin = PluginProcess.in_directory(
        short_sock_dir, node_name="n", root=short_sock_dir / "missing-root", kubeconfig=kubeconfig
    ).start()
    with pytest.raises(
        PluginProcessError, match=r"^the plugin of node n exited with code 1 before"
    ):
        plugin.wait_for_registration_socket(timeout_s=30)
    assert "does not exist" in plugin.log_tail()
    assert plugin.stop() == 1
