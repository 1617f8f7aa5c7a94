"""One demo node: a mock DCU node, a fake kubelet and the real ``dcu-dra kubelet-plugin``.

The layout under ``<build dir>/<node>/`` is what a DaemonSet pod would see on a real node:

- ``root/``: the mock node (sysfs, devfs, /opt/hyhal), the plugin's ``--root``;
- ``registry/``: the kubelet's plugin registration dir, the plugin's ``--registrar-dir``;
- ``plugins/dcu.hygon.com/``: the plugin's ``--plugin-data-dir`` (sockets, checkpoint, vdev);
- ``cdi/``: where the plugin writes per-claim CDI specs (``/var/run/cdi`` on a node);
- ``plugin.log``: the plugin's output.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

from dra_driver import DRIVER_NAME
from dra_driver.cluster.kube import KubeClient
from dra_driver.node.devices import Inventory, discover
from dra_driver.node.mock import DEFAULT_CONFIG, create_mock_node
from dra_driver.testing.fakekubelet import FakeKubelet
from dra_driver.testing.plugin_process import PluginProcess

logger = logging.getLogger(__name__)

#: A failed prepare is retried this soon (the fake kubelet's default of 5 s would make a
#: newcomer wait for nothing when a claim is allocated a moment after its pod is bound).
RETRY_INTERVAL_S = 1.0
#: How long a plugin may take from start to registered and published.
READY_TIMEOUT_S = 30.0


class DemoNode:
    """A node of the demo; :meth:`start_kubelet`, :meth:`start_plugin`, then :meth:`wait_ready`."""

    def __init__(self, *, name: str, base: Path, client: KubeClient, kubeconfig: Path) -> None:
        self.name = name
        self.base = base
        self.root = base / "root"
        self.client = client
        self.kubelet = FakeKubelet(
            client=client,
            node_name=name,
            registry_dir=base / "registry",
            plugins_dir=base / "plugins",
            retry_interval_s=RETRY_INTERVAL_S,
        )
        self.plugin = PluginProcess(
            node_name=name,
            root=self.root,
            kubeconfig=kubeconfig,
            registrar_dir=base / "registry",
            data_dir=base / "plugins" / DRIVER_NAME,
            cdi_dir=base / "cdi",
            log_file=base / "plugin.log",
        )
        self._kubelet_started = False

    def create_mock_node(self) -> Inventory:
        """Write the default mock node (2x Z100, 1x K100_AI) and discover it, as the plugin will."""
        create_mock_node(self.root, DEFAULT_CONFIG)
        return discover(self.root)

    def start_kubelet(self) -> None:
        """Register the Node and start watching for plugins and pods."""
        self._kubelet_started = True
        self.kubelet.start()

    def start_plugin(self) -> None:
        """Start the real daemon with this node's directories."""
        self.plugin.start()

    def wait_ready(self) -> None:
        """Wait until the plugin is registered with the fake kubelet and its slice is visible."""
        self.plugin.wait_for_slices(self.client, timeout_s=READY_TIMEOUT_S)
        self.plugin.wait_for_registration_socket(timeout_s=READY_TIMEOUT_S)
        self.kubelet.wait_for_plugin(DRIVER_NAME, timeout_s=READY_TIMEOUT_S)

    def stop_plugin(self) -> int | None:
        """SIGTERM, then SIGKILL the plugin; its exit code (None if it never started)."""
        if self.plugin.process is None:
            return None
        return self.plugin.stop()

    def stop_kubelet(self) -> None:
        """Stop the fake kubelet's threads (idempotent; a no-op if it never started)."""
        if self._kubelet_started:
            self._kubelet_started = False
            self.kubelet.stop()

    @property
    def has_plain_device_nodes(self) -> bool:
        """Whether the mock node's device nodes are plain files (it was made without root)."""
        return (self.root / "dev" / "kfd").is_file()

    def leftover_files(self) -> list[Path]:
        """The vdev files and per-claim CDI specs still on disk."""
        return [*self.plugin.vdev_files(), *self.plugin.spec_files()]


def describe_inventory(inventory: Inventory) -> str:
    """``2x Z100, 1x K100_AI``: the models of a node's DCUs, in discovery order."""
    counts = Counter(device.model for device in inventory.devices)
    return ", ".join(f"{count}x {model}" for model, count in counts.items())
