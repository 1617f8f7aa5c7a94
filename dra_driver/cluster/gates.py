"""Which Kubernetes version turns on which feature gate the driver needs, and what to say.

Pure. Two gates change what the API server keeps of our ResourceSlices: without
``DRAConsumableCapacity`` it drops ``allowMultipleAllocations`` and every capacity's
``requestPolicy`` (no DCU can be shared), without ``DRADeviceTaints`` it drops device taints
(unhealthy DCUs stay schedulable). Both are alpha and off by default in 1.34 and 1.35 and beta
and on by default from 1.36 (measured on each version by ``make matrix``). The publisher sees
the drop when it reads back a slice it wrote and logs :func:`dropped_message` once, naming the
gate and the API server's version, so the operator knows what to turn on where.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Gate:
    """A feature gate and the first minor version of 1.x that turns it on by default."""

    name: str
    on_by_default_from: int
    #: What the API server drops from a slice when the gate is off.
    drops: str
    #: What the cluster loses.
    consequence: str
    #: Components that must have the gate on.
    components: str
    #: What the operator can do instead of turning it on ("" when nothing).
    alternative: str = ""


CONSUMABLE_CAPACITY = Gate(
    name="DRAConsumableCapacity",
    on_by_default_from=36,
    drops="allowMultipleAllocations/requestPolicy",
    consequence="DCUs cannot be shared",
    components="kube-apiserver, kube-scheduler, kube-controller-manager and every kubelet",
    alternative="or run the plugin with --sharing=exclusive to publish whole DCUs only",
)
DEVICE_TAINTS = Gate(
    name="DRADeviceTaints",
    on_by_default_from=36,
    drops="the device taints",
    consequence="unhealthy DCUs stay schedulable",
    components="kube-apiserver and kube-scheduler",
)

_GIT_VERSION = re.compile(r"^v?1\.(\d+)(?:\.\d+)?")


def server_minor(git_version: str) -> int | None:
    """The minor version of an API server's ``/version`` gitVersion ("v1.35.4" -> 35)."""
    match = _GIT_VERSION.match(git_version.strip())
    return int(match.group(1)) if match else None


def gate_stage(gate: Gate, minor: int | None) -> str:
    """Where ``gate`` stands in Kubernetes 1.<minor> (or in every version, when unknown)."""
    if minor is None:
        return (
            f"alpha and off by default before 1.{gate.on_by_default_from}, "
            f"beta and on by default from 1.{gate.on_by_default_from}"
        )
    if minor < gate.on_by_default_from:
        return f"alpha and off by default in 1.{minor}"
    return f"on by default in 1.{minor}, so it was turned off"


def dropped_message(gate: Gate, slice_name: str, git_version: str) -> str:
    """The one error line for a slice whose fields the API server dropped.

    ``git_version``: the API server's /version gitVersion, or "" when it could not be read.
    """
    version = git_version or "of unknown version"
    alternative = f", {gate.alternative}" if gate.alternative else ""
    return (
        f"the API server (Kubernetes {version}) dropped {gate.drops} from ResourceSlice "
        f"{slice_name}: its {gate.name} feature gate is off "
        f"({gate_stage(gate, server_minor(git_version))}), so {gate.consequence}. Turn it on "
        f"with --feature-gates={gate.name}=true on {gate.components}{alternative}."
    )
