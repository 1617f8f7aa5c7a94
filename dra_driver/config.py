"""The node daemon's configuration: one field per flag, validated once at start-up."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from dra_driver import DRIVER_NAME
from dra_driver.cluster.slices import Sharing
from dra_driver.node.health import (
    DEFAULT_CHECK_INTERVAL_S,
    MAX_CHECK_INTERVAL_S,
    MIN_CHECK_INTERVAL_S,
)

DEFAULT_REGISTRAR_DIR = Path("/var/lib/kubelet/plugins_registry")
DEFAULT_PLUGINS_DIR = Path("/var/lib/kubelet/plugins")
#: The dynamic CDI directory: transient per-claim specs go here (runtimes read it by default).
DEFAULT_CDI_DIR = Path("/var/run/cdi")

#: Orphaned claims are looked for every minute: one GET per prepared claim, and CUs of a claim
#: deleted while the plugin was down come back within a minute of the next check.
DEFAULT_ORPHAN_INTERVAL_S = 120.0

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
#: A pod UID goes into socket file names: letters, digits, '-', '_' and '.' only.
_POD_UID = re.compile(r"^[A-Za-z0-9][-A-Za-z0-9_.]{0,127}$")


class ConfigError(ValueError):
    """A flag value that cannot work; the message says which flag and why."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PluginConfig:
    """Everything ``dcu-dra kubelet-plugin`` needs to run."""

    node_name: str
    driver_name: str = DRIVER_NAME
    root: Path = Path("/")
    kubeconfig: Path | None = None
    """None: in-cluster configuration (the pod's service account)."""
    registrar_dir: Path = DEFAULT_REGISTRAR_DIR
    plugin_data_dir: Path | None = None
    """None: ``/var/lib/kubelet/plugins/<driver>``."""
    cdi_dir: Path = DEFAULT_CDI_DIR
    sharing: Sharing = Sharing.CONSUMABLE
    max_vdevices: int = 4
    boot_id_file: Path = Path("/proc/sys/kernel/random/boot_id")
    """Where this boot's id is read; a change means the node rebooted (tests point elsewhere)."""
    rolling_update: bool = False
    """Sockets named after ``pod_uid``, so an old and a new instance can serve side by side."""
    pod_uid: str | None = None
    """This instance's pod UID (downward API ``metadata.uid``); needed by ``rolling_update``."""
    claim_status: bool = False
    """Write ``status.devices`` of prepared claims (best effort)."""
    orphan_interval_s: float = DEFAULT_ORPHAN_INTERVAL_S
    """How often prepared claims whose ResourceClaim is gone are unprepared; 0 = never."""
    health_interval_s: float = DEFAULT_CHECK_INTERVAL_S
    """How often device health is checked (``health.HealthMonitor``)."""
    metrics_addr: str = ""
    """``HOST:PORT`` of the Prometheus ``/metrics`` endpoint; empty = off."""
    healthcheck_port: int = 0
    """TCP port of the gRPC liveness endpoint (``grpc.health.v1``); 0 = off."""

    @property
    def data_dir(self) -> Path:
        """The plugin data dir, defaulted from the driver name."""
        return self.plugin_data_dir or DEFAULT_PLUGINS_DIR / self.driver_name

    def validate(self) -> None:
        """Raise ``ConfigError`` naming the first flag that cannot work."""
        if len(self.node_name) > 253 or not _DNS_SUBDOMAIN.match(self.node_name):
            raise ConfigError(
                f"--node-name {self.node_name!r} is not a valid node name (a lowercase DNS "
                "subdomain); in a DaemonSet set NODE_NAME from spec.nodeName"
            )
        if len(self.driver_name) > 63 or not _DNS_SUBDOMAIN.match(self.driver_name):
            raise ConfigError(
                f"--driver-name {self.driver_name!r} is not a lowercase DNS subdomain of at "
                "most 63 characters"
            )
        for flag, path in (
            ("--root", self.root),
            ("--registrar-dir", self.registrar_dir),
            ("--plugin-data-dir", self.data_dir),
            ("--cdi-dir", self.cdi_dir),
        ):
            # These reach CDI specs (device and vdev host paths), the kubelet (socket paths) or
            # the container runtime, which resolve a relative path in a directory of their own.
            if not path.is_absolute():
                raise ConfigError(
                    f"{flag} {path} is a relative path: give an absolute one (the kubelet and "
                    "the container runtime would resolve it against their own working "
                    "directory; the command line resolves it against dcu-dra's)"
                )
        if self.kubeconfig is not None and not self.kubeconfig.is_file():
            raise ConfigError(f"--kubeconfig {self.kubeconfig} does not exist")
        if not 1 <= self.max_vdevices <= 64:
            raise ConfigError(f"--max-vdevices {self.max_vdevices} must be between 1 and 64")
        self._validate_operations()
        self._validate_endpoints()
        if not MIN_CHECK_INTERVAL_S <= self.health_interval_s <= MAX_CHECK_INTERVAL_S:
            raise ConfigError(
                f"--health-interval {self.health_interval_s:g} must be between "
                f"{MIN_CHECK_INTERVAL_S:g} and {MAX_CHECK_INTERVAL_S:g} seconds (the health "
                "stream must stay fresh for the kubelet's 30 s timeout)"
            )

    def _validate_operations(self) -> None:
        """The rolling-update, claim-status and orphan-cleanup flags."""
        if self.rolling_update and not self.pod_uid:
            raise ConfigError(
                "--rolling-update needs this pod's UID for unique socket names: set --pod-uid, "
                "or POD_UID from the downward API (fieldRef metadata.uid)"
            )
        if self.pod_uid is not None and not _POD_UID.match(self.pod_uid):
            raise ConfigError(
                f"--pod-uid {self.pod_uid!r} is not a pod UID (letters, digits, '-', '_', '.'; "
                "at most 128 characters); it goes into socket file names"
            )
        if not 0 <= self.orphan_interval_s <= 86400:
            raise ConfigError(
                f"--orphan-interval {self.orphan_interval_s:g} must be between 0 (off) and "
                "86400 seconds"
            )

    def _validate_endpoints(self) -> None:
        """The metrics and liveness endpoints."""
        if self.metrics_addr:
            _, port = parse_listen_address(self.metrics_addr, flag="--metrics-addr")
            if port == self.healthcheck_port:
                raise ConfigError(
                    f"--metrics-addr {self.metrics_addr} and --healthcheck-port "
                    f"{self.healthcheck_port} use the same port; give them different ones"
                )
        if not 0 <= self.healthcheck_port <= 65535:
            raise ConfigError(
                f"--healthcheck-port {self.healthcheck_port} must be a TCP port (1-65535), or 0 "
                "for no liveness endpoint"
            )


def parse_listen_address(text: str, *, flag: str) -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT`` (every IPv4 interface) or ``[IPv6]:PORT`` as (host, port).

    Raises ``ConfigError`` naming ``flag``.
    """
    host, sep, port_text = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        sep = ""  # an IPv6 address needs brackets, or its last group reads as the port
    if not sep or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ConfigError(
            f"{flag} {text!r} is not HOST:PORT with a port from 1 to 65535 (e.g. :8080, "
            "127.0.0.1:8080 or [::]:8080)"
        )
    return host or "0.0.0.0", int(port_text)
