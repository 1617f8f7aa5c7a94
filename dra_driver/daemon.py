"""The node daemon's lifecycle: start-up, the running services, and an orderly shutdown.

Start-up discovers the node's DCUs, then publishes them. SIGTERM/SIGINT stop it cleanly
(exit 0); default signal handling is restored after the first signal, so a second one ends a
stuck shutdown at once.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from types import FrameType

from dra_driver.config import PluginConfig
from dra_driver.devices import discover
from dra_driver.fsutil import PRIVATE_DIR_MODE, PUBLIC_DIR_MODE, ensure_directory
from dra_driver.kube.client import KubeClient
from dra_driver.publisher import SlicePublisher
from dra_driver.slices import build_pool

logger = logging.getLogger(__name__)


def prepare_directories(config: PluginConfig) -> None:
    """Create the directories the daemon writes to, with tight modes.

    The plugin data dir holds sockets and state: only root may enter it. The registration dir
    belongs to the kubelet: created only if missing, never re-moded. CDI specs must be
    readable by the container runtime.
    """
    ensure_directory(config.data_dir, mode=PRIVATE_DIR_MODE)
    if not config.registrar_dir.is_dir():
        config.registrar_dir.mkdir(parents=True, mode=PRIVATE_DIR_MODE)
    if not config.cdi_dir.is_dir():
        config.cdi_dir.mkdir(parents=True, mode=PUBLIC_DIR_MODE)


def make_client(config: PluginConfig) -> KubeClient:
    """An API client from ``--kubeconfig``, or the pod's service account."""
    if config.kubeconfig is not None:
        return KubeClient.from_kubeconfig(config.kubeconfig, user_agent="dcu-dra-kubelet-plugin")
    return KubeClient.in_cluster(user_agent="dcu-dra-kubelet-plugin")


def run(config: PluginConfig, *, started_at: float | None = None) -> int:
    """Run the daemon until SIGTERM/SIGINT; returns the exit code."""
    started_at = time.monotonic() if started_at is None else started_at
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        logger.info(
            "received %s: shutting down (send it again to exit at once)",
            signal.Signals(signum).name,
        )
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    prepare_directories(config)
    inventory = discover(config.root, max_vdevices=config.max_vdevices)
    logger.info(
        "discovered %d DCU(s) under %s: %s",
        len(inventory.devices),
        config.root,
        ", ".join(
            f"{d.name} ({d.model}, {d.compute_units} CUs, {d.memory_mib} MiB)"
            for d in inventory.devices
        )
        or "none",
    )
    pool = build_pool(
        inventory, driver=config.driver_name, node_name=config.node_name, sharing=config.sharing
    )
    client = make_client(config)
    announced = threading.Event()

    def on_synced() -> None:
        if not announced.is_set():
            announced.set()
            logger.info(
                "ResourceSlices of node %s published %.0f ms after start",
                config.node_name,
                (time.monotonic() - started_at) * 1000,
            )

    publisher = SlicePublisher(client, pool, on_synced=on_synced)
    publisher.start()
    try:
        stop.wait()
    finally:
        publisher.stop()
        client.close()
        logger.info("stopped; ResourceSlices stay published for the next instance")
    return 0
