"""A prepared claim's files: its vdev configs and its CDI spec, derived from its entry alone.

``ClaimFiles`` turns a checkpoint ``ClaimEntry`` into the ``vdcu.vdev`` configs of its vDCU
shares and the per-claim CDI spec (``cdi.build``), so the start-up repair rewrites them
identically. Pure apart from the ``os.stat`` of device nodes the CDI spec builder does; writing
them is ``prepare.plugin``'s job.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dra_driver.cdi import container_env
from dra_driver.cdi.build import ClaimDevice, build_claim_spec
from dra_driver.cdi.model import Spec
from dra_driver.errors import ClaimError
from dra_driver.node.devices import DcuDevice, Inventory
from dra_driver.prepare.checkpoint import ClaimEntry, PreparedShare
from dra_driver.vdcu.allocator import CuMask
from dra_driver.vdcu.vdev import VdevConfig, vdev_file_name


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimFiles:
    """Derives the files of prepared claims on one node."""

    inventory: Inventory
    kind: str
    """CDI kind of the per-claim specs."""
    host_root: Path | None = None
    """Where the container runtime sees the inventory's root (see ``cdi.build``)."""

    def vdev_configs(self, entry: ClaimEntry) -> list[VdevConfig]:
        """The vdev configs of the claim's vDCU shares, by vdev number."""
        configs: list[VdevConfig] = []
        for share in sorted(
            (s for s in entry.shares if s.vdev_id is not None), key=lambda s: s.vdev_id or 0
        ):
            dcu = self._inventory_device(share.device)
            assert share.pipe_id is not None  # vDCU shares always have one
            configs.append(
                VdevConfig(
                    pci_bus_id=dcu.pci_bus_id,
                    mask=CuMask.from_words(*share.cu_mask),
                    memory_mib=share.memory_mib,
                    device_id=self._device_ordinal(entry, share),
                    vdev_id=share.vdev_id or 0,
                    pipe_id=share.pipe_id,
                )
            )
        return configs

    def _device_ordinal(self, entry: ClaimEntry, share: PreparedShare) -> int:
        """``device_id`` of a share's vdev file: its card's ordinal among its request's cards.

        The runtime wants the card's ordinal among the DCUs the container sees (HAMi found on
        hardware that any other value exposes the whole card). A request is what the kubelet
        hands a container: all of a request's devices reach the same containers, so this is
        right for every container holding the DCUs of one request. README "vdev files"
        says what it cannot be right for (a container holding shares of several requests).
        """
        cards = sorted(
            {
                self._inventory_device(s.device).pci_bus_id
                for s in entry.shares
                if s.request == share.request
            }
        )
        return cards.index(self._inventory_device(share.device).pci_bus_id)

    def spec(self, entry: ClaimEntry, vdev_dir: Path | None) -> Spec:
        """The claim's CDI spec; ``vdev_dir`` holds its vdev files (None: it has none)."""
        claim = f"{entry.namespace}/{entry.name}"
        devices = []
        for share in entry.shares:
            dcu = self._inventory_device(share.device)
            env = container_env.card_variables(dcu.pci_bus_id, dcu.uuid)
            vdev_file = None
            if share.vdev_id is not None:
                assert vdev_dir is not None  # a claim with shares has its vdev dir
                vdev_file = vdev_dir / vdev_file_name(share.vdev_id)
                env += container_env.vdcu_variables(
                    share.vdev_id,
                    pci_bus_id=dcu.pci_bus_id,
                    compute_units=share.cores,
                    memory_mib=share.memory_mib,
                    claim=claim,
                )
            elif share.whole_device and not share.admin_access:
                env += container_env.whole_card_variables(dcu.pci_bus_id, claim=claim)
            devices.append(
                ClaimDevice(
                    name=share.cdi_id.split("=", 1)[1], dcu=dcu, env=env, vdev_file=vdev_file
                )
            )
        return build_claim_spec(
            self.inventory, kind=self.kind, devices=devices, host_root=self.host_root
        )

    def _inventory_device(self, name: str) -> DcuDevice:
        dcu = self.inventory.by_name(name)
        if dcu is None:
            raise ClaimError(f"device {name} of a prepared claim is no longer on this node")
        return dcu
