"""The contract between the kubelet-facing plumbing and the driver's core.

``kubeletplugin`` fetches claims, checks them, serializes calls and converts to and from
protobuf; an implementation of ``Plugin`` does the device work. This mirrors the Go helper's
``DRAPlugin`` interface (k8s.io/dynamic-resource-allocation/kubeletplugin).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from dra_driver.errors import DriverError
from dra_driver.prepare.model import Claim, ClaimRef, ClaimUID, PrepareResult


class Plugin(Protocol):
    """What the kubelet plugin plumbing calls. Calls arrive serialized (one at a time)."""

    def prepare_claims(
        self, claims: Sequence[Claim]
    ) -> dict[ClaimUID, PrepareResult | DriverError]:
        """Prepare allocated claims for containers on this node.

        Contract: idempotent (a prepared claim returns the same result with no new side
        effects); one entry per claim; a failure of one claim is its entry, never an
        exception; raising means the whole call failed.
        """
        ...

    def unprepare_claims(self, refs: Sequence[ClaimRef]) -> dict[ClaimUID, DriverError | None]:
        """Undo prepare. Idempotent; an unknown claim is success (None).

        The claim may be gone from the API server and this process may not be the one that
        prepared it (restart, rolling update): everything needed must be in durable state.
        """
        ...
