"""The real driver core (``state.DcuPlugin``) on a mock node, in-process, for tests.

Tests that need what the plugin writes for a claim (its CDI spec, vdev files, CDI IDs) prepare
it with the core itself rather than hand-writing those files, so they follow the core's layout.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from dra_driver.errors import DriverError
from dra_driver.node.devices import DeviceName, discover
from dra_driver.prepare.model import AllocatedShare, Claim, ClaimRef, ClaimUID, PrepareResult
from dra_driver.prepare.plugin import DcuPlugin

NODE = "node-a"
DRIVER = "dcu.hygon.com"
MIB = 2**20


def local_plugin(mock_root: Path, base: Path) -> DcuPlugin:
    """A recovered core on the mock node at ``mock_root``.

    Its data dir is ``base/data`` and its CDI specs go to ``base/cdi``.
    """
    data_dir = base / "data"
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    plugin = DcuPlugin(
        discover(mock_root),
        driver_name=DRIVER,
        node_name=NODE,
        data_dir=data_dir,
        cdi_dir=base / "cdi",
        boot_id="boot-1",
    )
    plugin.recover()
    return plugin


def allocated_share(
    device: str, *, cores: int | None, memory_mib: int | None, request: str = "dcu"
) -> AllocatedShare:
    """A share as the scheduler allocates it; no cores and memory: the whole device."""
    whole = cores is None and memory_mib is None
    return AllocatedShare(
        request=request,
        pool=NODE,
        device=DeviceName(device),
        share_id=None if whole else str(uuid.uuid4()),
        cores=cores,
        memory_bytes=None if memory_mib is None else memory_mib * MIB,
        vdevices=None if whole else 1,
    )


def prepare_claim(
    plugin: DcuPlugin, *shares: AllocatedShare, name: str = "c"
) -> tuple[Claim, PrepareResult]:
    """Prepare one new claim ``ns/<name>`` of ``shares``; raises the core's error if it fails."""
    claim = Claim(
        ref=ClaimRef(uid=ClaimUID(str(uuid.uuid4())), namespace="ns", name=name), shares=shares
    )
    result = plugin.prepare_claims([claim])[claim.ref.uid]
    if isinstance(result, DriverError):
        raise result
    return claim, result


def cdi_ids(result: PrepareResult) -> list[str]:
    """Every CDI ID of a prepared claim, in device order."""
    return [cdi_id for device in result.devices for cdi_id in device.cdi_ids]
