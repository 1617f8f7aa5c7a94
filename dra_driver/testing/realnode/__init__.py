"""Real Kubernetes nodes without Docker (containerd, runc, CNI, the real kubelet), for tests.

:class:`~.node.RealNode` starts one node joined to the local control plane
(:mod:`dra_driver.testing.cluster`) and the real ``dcu-dra kubelet-plugin`` registered with its
kubelet, as the chart's ServiceAccount; :class:`~.nodes.RealNodes` starts several on one host;
:func:`~.node.unavailable_reason` says why they cannot run on a machine. The modules:
:mod:`.hoststate` (what a node changes on the host, and its restore), :mod:`.containerd`,
:mod:`.cni`, :mod:`.kubelet`, :mod:`.node`, :mod:`.nodes`.

What it does not model: see each module; in short the plugin runs on the host (not in the
DaemonSet's container), no service network or DNS, cgroup v1 hosts only. Needs root on Linux
and the binaries of ``make node-binaries`` and the images of ``make images``.
"""

from dra_driver.testing.realnode.node import RealNode, unavailable_reason
from dra_driver.testing.realnode.nodes import RealNodes, node_ip

__all__ = ["RealNode", "RealNodes", "node_ip", "unavailable_reason"]
