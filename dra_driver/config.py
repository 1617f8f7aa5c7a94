"""The node daemon's configuration: one field per flag, validated once at start-up."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from dra_driver import DRIVER_NAME
from dra_driver.slices import Sharing

DEFAULT_REGISTRAR_DIR = Path("/var/lib/kubelet/plugins_registry")
DEFAULT_PLUGINS_DIR = Path("/var/lib/kubelet/plugins")
#: The dynamic CDI directory: transient per-claim specs go here (runtimes read it by default).
DEFAULT_CDI_DIR = Path("/var/run/cdi")

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


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
            if not path.is_absolute():
                raise ConfigError(f"{flag} {path} must be an absolute path")
        if self.kubeconfig is not None and not self.kubeconfig.is_file():
            raise ConfigError(f"--kubeconfig {self.kubeconfig} does not exist")
        if not 1 <= self.max_vdevices <= 64:
            raise ConfigError(f"--max-vdevices {self.max_vdevices} must be between 1 and 64")
