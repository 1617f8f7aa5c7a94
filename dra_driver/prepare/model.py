"""Typed values the core works on: claims as the driver sees them, and what preparing yields.

Pure data. Wire shapes (ResourceClaim JSON, protobuf) are converted to these at the edge
(``kubeletplugin``), so the core never sees a dict from the API server.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import NewType, TypeGuard

from dra_driver.node.devices import DeviceName
from dra_driver.vdcu.opaque import DcuConfig

ClaimUID = NewType("ClaimUID", str)
"""A ResourceClaim's metadata.uid; checked to be a UUID before it is used in any path."""

#: The canonical lowercase form the API server gives every UID and shareID.
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def is_uuid(text: object) -> TypeGuard[str]:
    """Whether ``text`` is a canonical UUID: the only form a claim UID may take in a path."""
    return isinstance(text, str) and _UUID.fullmatch(text) is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimRef:
    """Identifies a claim; all that NodeUnprepareResources sends."""

    uid: ClaimUID
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name} (uid {self.uid})"


@dataclass(frozen=True, slots=True, kw_only=True)
class AllocatedShare:
    """One allocation result of the claim for this driver on this node's pool."""

    request: str
    """Base request name (a ``firstAvailable`` result's ``/<subrequest>`` is stripped)."""
    pool: str
    device: DeviceName
    share_id: str | None
    """The scheduler's shareID; set only for devices with allowMultipleAllocations."""
    cores: int | None
    """consumedCapacity ``cores``; None when the device was allocated whole (exclusive)."""
    memory_bytes: int | None
    """consumedCapacity ``memory`` in bytes; None when allocated whole."""
    vdevices: int | None
    """consumedCapacity ``vdevices``; None when allocated whole."""
    admin_access: bool = False
    config: DcuConfig = field(default_factory=DcuConfig)


@dataclass(frozen=True, slots=True, kw_only=True)
class Claim:
    """An allocated ResourceClaim, reduced to what this driver must prepare."""

    ref: ClaimRef
    shares: tuple[AllocatedShare, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class PreparedDevice:
    """One device of a prepare response (one per allocation result)."""

    requests: tuple[str, ...]
    """Base request names this device serves; empty = every request of the claim."""
    pool: str
    device: DeviceName
    cdi_ids: tuple[str, ...]
    share_id: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class PrepareResult:
    """What preparing one claim gave; the same on every repeated prepare."""

    devices: tuple[PreparedDevice, ...]
