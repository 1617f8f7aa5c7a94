"""What the fake kubelet records: prepared claims, plugin calls, registrations.

Plain frozen values, safe to hand to tests from any thread. Nothing here performs I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dra_driver.errors import DriverError

#: Registration strings of the DRA services this kubelet speaks, in the kubelet's own
#: preference order (kubelet-plugin-protocol.md §1.1, §2.3).
DRA_V1 = "v1.DRAPlugin"
DRA_V1BETA1 = "v1beta1.DRAPlugin"
SUPPORTED_DRA_SERVICES = (DRA_V1, DRA_V1BETA1)

#: Wire service names behind the registration strings (§1.1: they differ).
GRPC_SERVICES = {
    DRA_V1: "k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin",
    DRA_V1BETA1: "k8s.io.kubelet.pkg.apis.dra.v1beta1.DRAPlugin",
}

PREPARE = "NodePrepareResources"
UNPREPARE = "NodeUnprepareResources"


class FakeKubeletError(DriverError):
    """Base class of the fake kubelet's own failures."""


class RegistrationRejectedError(FakeKubeletError):
    """A plugin's GetInfo answer fails validation (§2.3, §2.4)."""


class PluginCallError(FakeKubeletError):
    """A NodePrepareResources/NodeUnprepareResources call failed as a whole or for a claim."""


class PodNotReadyError(FakeKubeletError):
    """A pod cannot start yet: its claims are not created, allocated or reserved for it."""


@dataclass(frozen=True, slots=True)
class ClaimRef:
    """The three fields the kubelet sends for a claim (§1.2 ``Claim``)."""

    namespace: str
    name: str
    uid: str


@dataclass(frozen=True, slots=True)
class PreparedDevice:
    """One device of a NodePrepareResources answer, as the kubelet checkpoints it."""

    driver: str
    pool: str
    device: str
    request_names: tuple[str, ...]
    """Base request names this device serves; empty = every request of the claim (§5)."""
    cdi_device_ids: tuple[str, ...]
    share_id: str | None
    """Only from v1 plugins, and only for shared devices (§1.3)."""


@dataclass(frozen=True, slots=True)
class PreparedClaim:
    """A claim the fake kubelet has prepared on its node."""

    namespace: str
    name: str
    uid: str
    drivers: tuple[str, ...]
    devices: tuple[PreparedDevice, ...]
    pod_uids: frozenset[str]
    """Pods on this node that use the claim; it is unprepared when the last one is gone."""

    @property
    def ref(self) -> ClaimRef:
        """The claim's identity as sent to plugins."""
        return ClaimRef(namespace=self.namespace, name=self.name, uid=self.uid)

    @property
    def driver(self) -> str:
        """The claim's only driver (ValueError if its devices come from several)."""
        if len(self.drivers) != 1:
            raise ValueError(f"claim {self.namespace}/{self.name} has drivers {self.drivers}")
        return self.drivers[0]


@dataclass(frozen=True, slots=True)
class PluginCall:
    """One DRA call the fake kubelet made, for tests to assert on."""

    method: str
    """``NodePrepareResources`` or ``NodeUnprepareResources``."""
    driver: str
    service: str
    """Registration string of the service used (``v1.DRAPlugin`` or ``v1beta1.DRAPlugin``)."""
    endpoint: str
    claims: tuple[ClaimRef, ...]
    error: str | None
    """None when every claim succeeded."""
    devices: tuple[PreparedDevice, ...] = ()
    """Devices returned by a successful prepare."""

    @property
    def grpc_method(self) -> str:
        """The full gRPC method path that was called."""
        return f"/{GRPC_SERVICES[self.service]}/{self.method}"

    @property
    def claim_uids(self) -> tuple[str, ...]:
        """UIDs of the claims in the request, in request order."""
        return tuple(claim.uid for claim in self.claims)


@dataclass(frozen=True, slots=True)
class PluginInfo:
    """A plugin's answer to GetInfo (§2.1 ``PluginInfo``)."""

    type: str
    name: str
    endpoint: str
    supported_versions: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RegistrationAttempt:
    """One pass of the registration flow for a socket (§2.4)."""

    socket_path: str
    info: PluginInfo | None
    """None when GetInfo itself failed."""
    accepted: bool
    error: str | None


@dataclass(frozen=True, slots=True)
class RegisteredPlugin:
    """A plugin instance the kubelet may call."""

    driver: str
    endpoint: str
    socket_path: str
    service: str
    """The DRA service chosen at registration (§2.3)."""
    sequence: int
    """Registration order; the highest connected one of a driver is used (§4.3)."""
    supported_versions: tuple[str, ...] = field(default=())
