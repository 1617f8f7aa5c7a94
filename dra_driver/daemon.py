"""The node daemon's lifecycle: start-up, the running services, and an orderly shutdown.

Start-up, in order: directories, DCU discovery, the driver core (``Plugin``, which recovers
its durable state), the kubelet-facing gRPC servers (the DRA socket first, the registration
socket last), then ResourceSlice publishing. SIGTERM/SIGINT stop it cleanly (exit 0): the
registration socket goes first so the kubelet stops sending, in-flight calls finish, our
sockets are removed, and publishing stops (the slices stay for the next instance). Default
signal handling is restored after the first signal, so a second one ends a stuck shutdown.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType
from typing import Any, Protocol, runtime_checkable

from dra_driver import __version__
from dra_driver.cluster.claimstatus import ClaimStatusReporter, StatusReportingPlugin
from dra_driver.cluster.kube.client import KubeClient
from dra_driver.cluster.orphans import OrphanCleaner, claim_lister
from dra_driver.cluster.publisher import SlicePublisher
from dra_driver.cluster.slices import build_pool, health_taints
from dra_driver.config import PluginConfig
from dra_driver.kubeletplugin.fetch import ClaimGetter
from dra_driver.kubeletplugin.plugin_server import KubeletPluginServer, claim_getter
from dra_driver.node.devices import Inventory, discover
from dra_driver.node.health import DeviceHealth, HealthBoard, HealthMonitor
from dra_driver.prepare.checkpoint import ClaimEntry
from dra_driver.prepare.driver import Plugin
from dra_driver.prepare.model import ClaimUID
from dra_driver.util.fsutil import PRIVATE_DIR_MODE, PUBLIC_DIR_MODE, ensure_directory

logger = logging.getLogger(__name__)

#: Builds the driver core for a node; called once at start-up, after discovery.
PluginFactory = Callable[[Inventory, PluginConfig], Plugin]
#: How long in-flight prepare/unprepare calls may run on after SIGTERM. The kubelet gives a
#: call 45 s; a DaemonSet pod gets 30 s by default before SIGKILL, so stay well inside that.
SHUTDOWN_GRACE_S = 20.0


def build_dcu_plugin(inventory: Inventory, config: PluginConfig) -> Plugin:
    """The real core, ``prepare.plugin.DcuPlugin``, recovered (imported only when it runs)."""
    from dra_driver.prepare.plugin import DcuPlugin, read_boot_id

    plugin = DcuPlugin(
        inventory,
        driver_name=config.driver_name,
        node_name=config.node_name,
        data_dir=config.data_dir,
        cdi_dir=config.cdi_dir,
        boot_id=read_boot_id(config.boot_id_file),
    )
    plugin.recover()
    return plugin


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


def user_agent(node_name: str) -> str:
    """The daemon's HTTP User-Agent: program, version and node.

    Every node's plugin uses the same service account, so the node in the user agent is what
    tells their requests apart in the API server's audit log (``make scale`` counts them so).
    """
    return f"dcu-dra-kubelet-plugin/{__version__} (node {node_name})"


def make_client(config: PluginConfig) -> KubeClient:
    """An API client from ``--kubeconfig``, or the pod's service account."""
    agent = user_agent(config.node_name)
    if config.kubeconfig is not None:
        return KubeClient.from_kubeconfig(config.kubeconfig, user_agent=agent)
    return KubeClient.in_cluster(user_agent=agent)


@runtime_checkable
class StateViews(Protocol):
    """The read-only views of the core that claim status and orphan cleanup need."""

    def prepared_claims(self) -> Mapping[ClaimUID, ClaimEntry]:
        """The checkpoint's claims, read now."""
        ...

    def vdev_dir(self, uid: ClaimUID) -> Path:
        """Where a claim's vdev files are."""
        ...


def with_claim_status(
    config: PluginConfig, client: KubeClient, plugin: Plugin, inventory: Inventory
) -> tuple[Plugin, ClaimStatusReporter | None]:
    """With ``--claim-status``: the plugin to serve, wrapped to report claim status.

    The reporter is returned unstarted; without the flag (or for a core without state views)
    the plugin is returned as it is.
    """
    if not config.claim_status:
        return plugin, None
    if not isinstance(plugin, StateViews):
        logger.warning("--claim-status: this driver core keeps no checkpoint; no status written")
        return plugin, None
    reporter = ClaimStatusReporter(
        client=client,
        driver=config.driver_name,
        pool=config.node_name,
        prepared_claims=plugin.prepared_claims,
        vdev_dir=plugin.vdev_dir,
        pci_bus_ids={d.name: d.pci_bus_id for d in inventory.devices},
    )
    return StatusReportingPlugin(plugin, reporter), reporter


def remembering(get_claim: ClaimGetter, reporter: ClaimStatusReporter | None) -> ClaimGetter:
    """``get_claim``, handing each claim it reads to the claim status reporter (if any).

    The status write after a prepare then starts from the claim the prepare read instead of
    reading it again: one GET less per prepare at the API server.
    """
    if reporter is None:
        return get_claim

    def get_and_remember(namespace: str, name: str) -> Mapping[str, Any]:
        claim = get_claim(namespace, name)
        reporter.remember(claim)
        return claim

    return get_and_remember


def orphan_cleaner(
    config: PluginConfig, client: KubeClient, *, views: Plugin, served: Plugin
) -> OrphanCleaner | None:
    """The orphan cleanup (unstarted) unless ``--orphan-interval 0``.

    ``views`` is the core (it reads the checkpoint), ``served`` what the kubelet calls, so an
    orphan is unprepared exactly as NodeUnprepareResources would (claim status included).
    """
    if config.orphan_interval_s <= 0:
        return None
    if not isinstance(views, StateViews):
        logger.warning("orphan cleanup: this driver core keeps no checkpoint; cleanup is off")
        return None
    return OrphanCleaner(
        prepared_claims=views.prepared_claims,
        list_claims=claim_lister(client),
        get_claim=claim_getter(client),
        unprepare=served.unprepare_claims,
        interval_s=config.orphan_interval_s,
    )


def sweep_on_reregistration(cleaner: OrphanCleaner) -> Callable[[], None]:
    """A kubelet registration callback: sweep for orphans when the kubelet registers us again.

    A kubelet that registers us again has restarted, and may have forgotten claims it should
    have unprepared. The first registration after our start needs no sweep of its own: the
    cleaner's first round runs at start.
    """
    registered_before = threading.Event()

    def on_registered() -> None:
        if not registered_before.is_set():
            registered_before.set()
            return
        logger.info("orphan cleanup: the kubelet registered this plugin again; sweeping now")
        cleaner.sweep_soon()

    return on_registered


def start_health_monitor(
    config: PluginConfig, inventory: Inventory, board: HealthBoard, publisher: SlicePublisher
) -> HealthMonitor:
    """Check device health now and every ``--health-interval`` (issue 7 item 1).

    Each check feeds ``board`` (the kubelet's health stream); a changed verdict re-publishes
    the pool, with a ``dcu.hygon.com/unhealthy`` NoSchedule taint on every unhealthy DCU (and
    none on a recovered one). Call before ``publisher.start()`` so a DCU that is already
    unhealthy is never published untainted.
    """

    def publish_taints(devices: tuple[DeviceHealth, ...]) -> None:
        publisher.update(
            build_pool(
                inventory,
                driver=config.driver_name,
                node_name=config.node_name,
                sharing=config.sharing,
                taints=health_taints(devices),
            )
        )

    monitor = HealthMonitor(
        inventory, board=board, interval_s=config.health_interval_s, listeners=[publish_taints]
    )
    monitor.start()
    return monitor


def start_endpoints(
    config: PluginConfig,
    *,
    plugin: Plugin,
    inventory: Inventory,
    servers: KubeletPluginServer,
    publisher: SlicePublisher,
    health: HealthBoard,
    cleaner: OrphanCleaner | None,
    stopping: threading.Event,
) -> Callable[[], None]:
    """Start the metrics and liveness endpoints their flags ask for (issue 7 items 2-3).

    Returns the function that stops them. Call before ``servers.start()`` and
    ``publisher.start()``, so no call and no publish failure goes uncounted. Device health
    (``health``) and the count of orphans ``cleaner`` unprepared (None: cleanup is off) are
    read at scrape time, so the monitor and the cleaner may start later. Liveness answers
    NOT_SERVING as soon as ``stopping`` is set (the first step of a graceful shutdown); metrics
    stay up until the end, so the drain can be watched. Their libraries are imported only when
    a flag is set, so a daemon without them starts as fast as before. Raises ``DriverError``
    when an endpoint cannot listen.
    """
    stops: list[Callable[[], None]] = []

    def stop_all() -> None:
        for stop_one in reversed(stops):
            stop_one()

    try:
        if config.metrics_addr:
            from prometheus_client import disable_created_metrics

            from dra_driver import metrics
            from dra_driver.config import parse_listen_address
            from dra_driver.prepare.plugin import DcuPlugin

            # A "<counter>_created" timestamp series beside every counter and histogram only
            # doubles what Prometheus stores; the switch is process-wide, which is fine here.
            disable_created_metrics()  # type: ignore[no-untyped-call]
            host, port = parse_listen_address(config.metrics_addr, flag="--metrics-addr")
            core = plugin if isinstance(plugin, DcuPlugin) else None  # tests may run a fake
            driver_metrics = metrics.DriverMetrics(
                devices=inventory.devices,
                read_usage=core.device_usage if core is not None else None,
                read_health=lambda: health.snapshot().devices,
                read_orphans_cleaned=_orphans_cleaned(cleaner),
            )
            servers.service.observer = driver_metrics
            metrics.observe_publish_errors(publisher, driver_metrics)
            if core is not None:
                metrics.observe_checkpoint_writes(core, driver_metrics)
            metrics_server = metrics.MetricsServer(driver_metrics, host=host, port=port)
            metrics_server.start()
            stops.append(metrics_server.stop)
        if config.healthcheck_port:
            from dra_driver.kubeletplugin.liveness import LivenessServer, LivenessServicer

            liveness = LivenessServer(
                LivenessServicer(
                    registration_socket=servers.registration_socket,
                    dra_socket=servers.dra_socket,
                    shutting_down=stopping,
                ),
                port=config.healthcheck_port,
            )
            liveness.start()
            stops.append(liveness.stop)
    except BaseException:
        stop_all()
        raise
    return stop_all


def _orphans_cleaned(cleaner: OrphanCleaner | None) -> Callable[[], int] | None:
    """Reads the cleaner's count at scrape time (an int read: safe from another thread)."""
    if cleaner is None:
        return None
    return lambda: cleaner.cleaned


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
    served, reporter = with_claim_status(config, client, plugin, inventory)
    health = HealthBoard()
    try:
        servers = KubeletPluginServer(
            driver_name=config.driver_name,
            node_name=config.node_name,
            registrar_dir=config.registrar_dir,
            data_dir=config.data_dir,
            plugin=served,
            get_claim=remembering(claim_getter(client), reporter),
            # The core (state.DcuPlugin) holds <data dir>/serialize.lock during every call;
            # flock is per open file, so holding it here as well would deadlock.
            lock_across_processes=False,
            pod_uid=config.pod_uid if config.rolling_update else None,
            health=health,
        )
    except BaseException:
        client.close()
        raise
    cleaner = orphan_cleaner(config, client, views=plugin, served=served)
    if cleaner is not None:
        servers.registration.on_registered = sweep_on_reregistration(cleaner)
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
    try:
        stop_endpoints = start_endpoints(
            config,
            plugin=plugin,
            inventory=inventory,
            servers=servers,
            publisher=publisher,
            health=health,
            cleaner=cleaner,
            stopping=stop,
        )
    except BaseException:
        client.close()
        raise
    monitor = start_health_monitor(config, inventory, health, publisher)
    try:
        # The kubelet's sockets first: the API work below runs on threads of its own, and
        # its first request imports the HTTP stack (see ``cluster.kube.client``), which would
        # otherwise share the interpreter with the servers' start.
        servers.start()
        try:
            publisher.start()
            if reporter is not None:
                reporter.start()
            if cleaner is not None:
                cleaner.start()  # its first round runs at once: "at start, after recovery"
            # Wake every second: a SIGTERM the kernel hands to another thread only sets
            # CPython's pending flag, and the main thread runs the handler when it next
            # returns to Python; an untimed wait would never return (seen once in a test).
            while not stop.wait(timeout=1.0):
                pass
        finally:
            logger.info(
                "deregistering from the kubelet; in-flight calls get up to %.0f s to finish",
                SHUTDOWN_GRACE_S,
            )
            servers.stop(SHUTDOWN_GRACE_S)
    finally:
        stop_endpoints()
        if cleaner is not None:
            cleaner.stop()
        if reporter is not None:
            reporter.stop()
        monitor.stop()
        publisher.stop()
        client.close()
        logger.info("stopped; ResourceSlices stay published for the next instance")
    return 0
