"""The node daemon's lifecycle: start-up, the running services, and an orderly shutdown.

Start-up, in order: directories, DCU discovery, the driver core (``Plugin``, which recovers
its durable state), ResourceSlice publishing, then the kubelet-facing gRPC servers (the DRA
socket first, the registration socket last). SIGTERM/SIGINT stop it cleanly (exit 0): the
registration socket goes first so the kubelet stops sending, in-flight calls finish, our
sockets are removed, and publishing stops (the slices stay for the next instance). Default
signal handling is restored after the first signal, so a second one ends a stuck shutdown.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType

from dra_driver.config import PluginConfig
from dra_driver.devices import Inventory, discover
from dra_driver.driver import Plugin
from dra_driver.fsutil import PRIVATE_DIR_MODE, PUBLIC_DIR_MODE, ensure_directory
from dra_driver.kube.client import KubeClient
from dra_driver.kubeletplugin.plugin_server import KubeletPluginServer, claim_getter
from dra_driver.publisher import SlicePublisher
from dra_driver.slices import build_pool

logger = logging.getLogger(__name__)

#: Builds the driver core for a node; called once at start-up, after discovery.
PluginFactory = Callable[[Inventory, PluginConfig], Plugin]
#: How long in-flight prepare/unprepare calls may run on after SIGTERM. The kubelet gives a
#: call 45 s; a DaemonSet pod gets 30 s by default before SIGKILL, so stay well inside that.
SHUTDOWN_GRACE_S = 20.0


def build_dcu_plugin(inventory: Inventory, config: PluginConfig) -> Plugin:
    """The real core: ``state.DcuPlugin`` (imported here, only when the daemon runs)."""
    from dra_driver.state import DcuPlugin

    return DcuPlugin.from_config(inventory, config)


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


def run(
    config: PluginConfig,
    *,
    started_at: float | None = None,
    plugin_factory: PluginFactory = build_dcu_plugin,
) -> int:
    """Run the daemon until SIGTERM/SIGINT; returns the exit code.

    ``plugin_factory`` builds the driver core (tests inject a fake one).
    """
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
    plugin = plugin_factory(inventory, config)
    client = make_client(config)
    try:
        servers = KubeletPluginServer(
            driver_name=config.driver_name,
            node_name=config.node_name,
            registrar_dir=config.registrar_dir,
            data_dir=config.data_dir,
            plugin=plugin,
            get_claim=claim_getter(client),
            # The core (state.DcuPlugin) holds <data dir>/serialize.lock during every call;
            # flock is per open file, so holding it here as well would deadlock.
            lock_across_processes=False,
        )
    except BaseException:
        client.close()
        raise
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
        servers.start()
        try:
            stop.wait()
        finally:
            logger.info(
                "deregistering from the kubelet; in-flight calls get up to %.0f s to finish",
                SHUTDOWN_GRACE_S,
            )
            servers.stop(SHUTDOWN_GRACE_S)
    finally:
        publisher.stop()
        client.close()
        logger.info("stopped; ResourceSlices stay published for the next instance")
    return 0
