"""Planning a claim: which CUs, pipe id and vdev number each of its shares gets.

``Planner.plan_claim`` turns an allocated claim and the checkpoint into the claim's
``ClaimEntry`` (state ``PrepareStarted``): whole devices, admin-access devices and vDCU shares
with a CU mask from ``vdcu.allocator``, a pipe id unique on the card and a vdev number unique
on the node. Pure and deterministic for a given checkpoint and claim: it reads the inventory,
never a file. Refusals (``ClaimError``, ``AllocationError``) name the claim, the device and the
numbers. ``prepare.plugin`` records the plan and writes the files.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence, Set
from dataclasses import dataclass, replace

from dra_driver.cdi.model import qualified_id
from dra_driver.errors import AllocationError, CheckpointError, ClaimError
from dra_driver.node.devices import DcuDevice, DeviceName, Inventory
from dra_driver.prepare.checkpoint import Checkpoint, ClaimEntry, ClaimState, PreparedShare
from dra_driver.prepare.model import AllocatedShare, Claim, ClaimUID
from dra_driver.vdcu.allocator import CardLedger, CuMask, Share, ShareKey
from dra_driver.vdcu.vdev import VDEV_ID_LIMIT

MIB = 1024 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class Planner:
    """Plans claims on one node's DCUs."""

    inventory: Inventory
    node_name: str
    driver_name: str
    kind: str
    """CDI kind of the per-claim specs, for the shares' CDI ids."""

    def plan_claim(self, state: Checkpoint, claim: Claim) -> ClaimEntry:
        """Choose CUs, pipe ids and vdev numbers for every share of ``claim``.

        Deterministic for a given checkpoint and claim; no side effects. Raises ``ClaimError``
        or ``AllocationError`` (the node-side guard) with the device and the numbers.
        """
        if not claim.shares:
            raise ClaimError(
                f"claim {claim.ref}: no devices of {self.driver_name} allocated "
                f"on node {self.node_name}"
            )
        ledgers = self._ledgers(state, devices={share.device for share in claim.shares})
        whole_taken = self._whole_devices(state)
        vdev_ids = _free_vdev_ids(state)
        ordered = sorted(
            enumerate(claim.shares),
            key=lambda item: (self._device(claim, item[1]).pci_bus_id, item[0]),
        )
        _check_one_share_per_card_and_request(claim, ordered)
        planned: list[PreparedShare] = []
        for index, share in ordered:
            dcu = self._device(claim, share)
            cdi_name = _cdi_device_name(claim.ref.uid, dcu.name, share.share_id)
            cdi_id = qualified_id(self.kind, cdi_name)
            _check_within_card(claim, dcu, share)
            whole = _is_whole(dcu, share)
            ledger = ledgers.setdefault(dcu.name, CardLedger(dcu.name))
            base = PreparedShare(
                request=share.request,
                pool=share.pool,
                device=dcu.name,
                share_id=share.share_id,
                cdi_id=cdi_id,
                whole_device=whole,
                cores=dcu.compute_units if whole else share.cores or 0,
                memory_mib=dcu.memory_mib if whole else (share.memory_bytes or 0) // MIB,
                admin_access=share.admin_access,
                counts_against_capacity=not share.admin_access,
            )
            if share.admin_access:
                planned.append(base)
                continue
            if whole:
                if ledger.share_count or dcu.name in whole_taken:
                    raise AllocationError(
                        f"claim {claim.ref}: {dcu.name} is allocated whole, but "
                        f"{ledger.share_count or 1} share(s) of it are live on this node; the "
                        "allocation overlaps a live claim (stale claim or scheduler race)"
                    )
                whole_taken.add(dcu.name)
                planned.append(base)
                continue
            if dcu.name in whole_taken:
                raise AllocationError(
                    f"claim {claim.ref}: {dcu.name} is held whole by a live claim, so no vDCU "
                    "share of it can be prepared (stale claim or scheduler race)"
                )
            self._check_share_capacity(claim, dcu, share)
            placed = ledger.place_share(
                key=ShareKey(f"{claim.ref.uid}/{index}"),
                cores=base.cores,
                memory_mib=base.memory_mib,
                card=dcu,
                layout=share.config.cu_layout,
            )
            ledgers[dcu.name] = ledger.with_share(placed)
            vdev_id = next(vdev_ids, None)
            if vdev_id is None:
                raise AllocationError(
                    f"claim {claim.ref}: all {VDEV_ID_LIMIT} vdev numbers of node "
                    f"{self.node_name} are held by live vDCU shares; unprepare some first"
                )
            planned.append(
                replace(
                    base,
                    cu_mask=(placed.mask.word0, placed.mask.word1),
                    pipe_id=placed.pipe_id,
                    vdev_id=vdev_id,
                )
            )
        return ClaimEntry(
            uid=claim.ref.uid,
            namespace=claim.ref.namespace,
            name=claim.ref.name,
            state=ClaimState.PREPARE_STARTED,
            shares=tuple(planned),
        )

    def _device(self, claim: Claim, share: AllocatedShare) -> DcuDevice:
        if share.pool != self.node_name:
            raise ClaimError(
                f"claim {claim.ref}: device {share.device} is in pool {share.pool!r}, not this "
                f"node's pool {self.node_name!r}; the claim is allocated to another node"
            )
        dcu = self.inventory.by_name(share.device)
        if dcu is None:
            known = ", ".join(d.name for d in self.inventory.devices) or "none"
            raise ClaimError(
                f"claim {claim.ref}: device {share.device} is not on node {self.node_name} "
                f"(its DCUs: {known}); the allocation refers to a device that went away"
            )
        return dcu

    def _check_share_capacity(self, claim: Claim, dcu: DcuDevice, share: AllocatedShare) -> None:
        if share.cores is None or share.memory_bytes is None or share.vdevices is None:
            raise ClaimError(
                f"claim {claim.ref}: {dcu.name} is shared but the allocation has no "
                "consumedCapacity for cores, memory and vdevices; is DRAConsumableCapacity on "
                "in kube-scheduler?"
            )
        if share.memory_bytes % MIB:
            raise ClaimError(
                f"claim {claim.ref}: {dcu.name}: consumed memory {share.memory_bytes} bytes is "
                "not a whole number of MiB (the slice's step is 1Mi)"
            )
        if share.vdevices != 1:
            raise ClaimError(
                f"claim {claim.ref}: {dcu.name}: a share takes exactly 1 vdevices slot, the "
                f"allocation consumed {share.vdevices}"
            )
        if not dcu.is_sliceable:
            raise ClaimError(
                f"claim {claim.ref}: {dcu.name} has {dcu.compute_units} CUs, more than a vdev "
                "CU mask can describe; it can only be allocated whole"
            )

    def _ledgers(self, state: Checkpoint, *, devices: Set[str]) -> dict[str, CardLedger]:
        """The ledgers of the live vDCU shares on ``devices`` (the cards a plan touches).

        Only those cards are built, so planning costs the same with 1 or 64 live shares
        elsewhere on the node.
        """
        shares: dict[str, list[Share]] = {}
        for entry in state.claims.values():
            for index, prepared in enumerate(entry.shares):
                if prepared.device not in devices:
                    continue
                if prepared.whole_device or not prepared.counts_against_capacity:
                    continue
                if prepared.pipe_id is None:
                    raise CheckpointError(
                        f"checkpoint: claim {entry.uid} share {index} on {prepared.device} has "
                        "no pipe id"
                    )
                shares.setdefault(prepared.device, []).append(
                    Share(
                        key=ShareKey(f"{entry.uid}/{index}"),
                        mask=CuMask.from_words(*prepared.cu_mask),
                        pipe_id=prepared.pipe_id,
                        memory_mib=prepared.memory_mib,
                    )
                )
        return {name: CardLedger(DeviceName(name), tuple(s)) for name, s in shares.items()}

    def _whole_devices(self, state: Checkpoint) -> set[str]:
        return {
            prepared.device
            for entry in state.claims.values()
            for prepared in entry.shares
            if prepared.whole_device and prepared.counts_against_capacity
        }


def _free_vdev_ids(state: Checkpoint) -> Iterator[int]:
    """The vdev numbers no live share of the node holds, lowest first.

    Node-wide, as Hygon's own DRA driver numbers its vDCUs: every share's file is mounted on
    its own as ``/etc/vdev/docker/vdev<N>.conf``, so two shares in one container (of two claims,
    or two requests) never meet on one path.
    """
    taken = {
        share.vdev_id
        for entry in state.claims.values()
        for share in entry.shares
        if share.vdev_id is not None
    }
    return (n for n in range(VDEV_ID_LIMIT) if n not in taken)


def _check_one_share_per_card_and_request(
    claim: Claim, shares: Sequence[tuple[int, AllocatedShare]]
) -> None:
    """Refuse two vDCU shares of one card in one request: they always meet in one container.

    The DCU runtime confines a card in a container by one vdev config; two for the same card
    would give it two masks (what it does then is unconfirmed, so fail closed and say why).
    """
    seen: set[tuple[str, str]] = set()
    for _, share in shares:
        if share.share_id is None or share.admin_access:
            continue
        slot = (share.request, share.device)
        if slot in seen:
            raise ClaimError(
                f"claim {claim.ref}: request {share.request!r} got two shares of {share.device}; "
                "a container takes one vDCU per card. Ask for one larger share, or add the "
                "constraint distinctAttribute: resource.kubernetes.io/pciBusID to the claim"
            )
        seen.add(slot)


def _check_within_card(claim: Claim, dcu: DcuDevice, share: AllocatedShare) -> None:
    """A share may consume at most the card; the scheduler never gives more (the slice's max)."""
    memory_bytes = dcu.memory_mib * MIB
    if (share.cores or 0) > dcu.compute_units or (share.memory_bytes or 0) > memory_bytes:
        raise ClaimError(
            f"claim {claim.ref}: {dcu.name}: the allocation consumed {share.cores} CUs and "
            f"{share.memory_bytes} bytes, more than the DCU's {dcu.compute_units} CUs and "
            f"{memory_bytes} bytes; the scheduler never allocates that: was the claim's status "
            "written by hand?"
        )


def _is_whole(dcu: DcuDevice, share: AllocatedShare) -> bool:
    if share.cores is None and share.memory_bytes is None:
        return True  # an exclusively allocated device
    return (share.cores or 0) >= dcu.compute_units and (share.memory_bytes or 0) >= (
        dcu.memory_mib * MIB
    )


def _cdi_device_name(uid: ClaimUID, device: str, share_id: str | None) -> str:
    return f"{uid}-{device}" if share_id is None else f"{uid}-{device}-{share_id}"
