"""The pod network of one real node: a CNI conflist for containerd's CRI plugin.

:func:`write_cni_config` writes one ``.conflist``: the ``bridge`` plugin with the node's own
bridge name and gateway, ``host-local`` IPAM over the node's own subnet with its data dir under
the node's directory (not ``/var/lib/cni``), and ``portmap`` chained for hostPorts. containerd
runs ``loopback`` for every sandbox by itself (it must be in the bin dir).

What it does not model: traffic between nodes or to services (no routes between node bridges,
no kube-proxy, no masquerading: ``ipMasq`` is off, so no iptables rules are written), IPv6,
and network policy. A pod reaches its own node's bridge gateway and the pods of its node only.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path


def cni_config(*, bridge: str, subnet: str, ipam_dir: Path) -> dict[str, object]:
    """The conflist document for one node."""
    network = ipaddress.ip_network(subnet)
    gateway = str(next(network.hosts()))
    return {
        "cniVersion": "1.0.0",
        "name": f"{bridge}-net",
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": False,
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(ipam_dir),
                    "ranges": [[{"subnet": subnet, "gateway": gateway}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def write_cni_config(conf_dir: Path, *, bridge: str, subnet: str, ipam_dir: Path) -> Path:
    """Write ``conf_dir/10-<bridge>.conflist``; returns its path."""
    conf_dir.mkdir(parents=True, exist_ok=True)
    path = conf_dir / f"10-{bridge}.conflist"
    path.write_text(
        json.dumps(cni_config(bridge=bridge, subnet=subnet, ipam_dir=ipam_dir), indent=2)
    )
    return path
