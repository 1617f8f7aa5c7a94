"""A fake kubelet that plays one node for DRA, for tests and the local demo.

Run it with ``python -m dra_driver.testing.fakekubelet --help``; use :class:`FakeKubelet` in
tests. It follows the kubelet v1.36.3 where it models something at all; :mod:`.kubelet` lists
what it does as the kubelet does and, precisely, what it does not model (containers, pod
``allocatedResourcesStatus``, a restart without a state file, the kubelet's back-off timing,
among others). Where a test needs the real behaviour, it needs the real kubelet.
"""

from dra_driver.testing.fakekubelet.kubelet import (
    DEFAULT_CALL_TIMEOUT_S,
    DEFAULT_RETRY_INTERVAL_S,
    DEFAULT_WIPING_DELAY_S,
    FakeKubelet,
)
from dra_driver.testing.fakekubelet.model import (
    DRA_V1,
    DRA_V1BETA1,
    PREPARE,
    UNPREPARE,
    ClaimRef,
    FakeKubeletError,
    PluginCall,
    PluginCallError,
    PluginInfo,
    PreparedClaim,
    PreparedDevice,
    RegisteredPlugin,
    RegistrationAttempt,
)

__all__ = [
    "DEFAULT_CALL_TIMEOUT_S",
    "DEFAULT_RETRY_INTERVAL_S",
    "DEFAULT_WIPING_DELAY_S",
    "DRA_V1",
    "DRA_V1BETA1",
    "PREPARE",
    "UNPREPARE",
    "ClaimRef",
    "FakeKubelet",
    "FakeKubeletError",
    "PluginCall",
    "PluginCallError",
    "PluginInfo",
    "PreparedClaim",
    "PreparedDevice",
    "RegisteredPlugin",
    "RegistrationAttempt",
]
