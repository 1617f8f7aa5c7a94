"""A real Kubernetes node for tests, without Docker: containerd, runc, CNI and the real kubelet.

Issue 14's prototype. :class:`~.node.RealNode` starts one node joined to the local control
plane (:mod:`dra_driver.testing.cluster`) and the real ``dcu-dra kubelet-plugin`` registered
with its kubelet; :func:`~.node.unavailable_reason` says why it cannot run on a machine.
The modules: :mod:`.hoststate` (what the node changes on the host, and its restore),
:mod:`.containerd`, :mod:`.cni`, :mod:`.kubelet`, :mod:`.node`.

What it does not model: see each module; in short one node per host (several are untested),
the plugin with the admin kubeconfig, no service network or DNS, cgroup v1 hosts only.
Needs root on Linux and the binaries of ``make node-binaries`` and the images of ``make images``.
"""

from dra_driver.testing.realnode.node import RealNode, unavailable_reason

__all__ = ["RealNode", "unavailable_reason"]
