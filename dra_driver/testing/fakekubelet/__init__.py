"""A fake kubelet that plays one node for DRA, for tests and the local demo.

Run it with ``python -m dra_driver.testing.fakekubelet --help``; use :class:`FakeKubelet` in
tests. See :mod:`.kubelet` for the behaviour and the reference sections it follows.
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
