"""Node invariants: the daemon's files agree with each other and no two live shares collide.

:func:`node_state_problems` reads the checkpoint, the vdev files and the per-claim CDI specs a
daemon wrote (at the paths :class:`~dra_driver.testing.plugin_process.PluginProcess` knows)
while no call is in flight, and returns every broken rule as one line; an empty list means the
node is sound:

- the checkpoint is readable and, once settled, holds only completed prepares;
- on every DCU the live shares' CU masks are disjoint and within the card, their pipe ids are
  unique, their memory fits, and a whole-DCU allocation has the card to itself: checked both in
  the checkpoint and in the vdev files on disk, because the DCU runtime reads only the files;
- a claim with vDCU shares has exactly its ``vdev<N>.conf`` files, with the checkpoint's card,
  mask, memory and pipe id; a claim without has no vdev directory;
- every prepared claim has its CDI spec, naming exactly its shares' CDI devices and mounting its
  vdev directory; no spec and no vdev directory exists for any other claim.

For reliability tests (after a round of concurrent calls, after a crash and restart). Reads
only; never changes a file.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from dra_driver.errors import DriverError
from dra_driver.node.devices import Inventory
from dra_driver.prepare.checkpoint import (
    CHECKPOINT_FILE,
    Checkpoint,
    ClaimEntry,
    ClaimState,
    PreparedShare,
)
from dra_driver.prepare.checkpoint import load as load_checkpoint
from dra_driver.prepare.model import ClaimUID
from dra_driver.prepare.plugin import VDEV_SUBDIR
from dra_driver.testing.plugin_process import PluginProcess
from dra_driver.vdcu.allocator import EMPTY_MASK, CuMask
from dra_driver.vdcu.vdev import VdevConfig, VdevError, read_vdev_dir, vdev_file_name


@dataclass(frozen=True, slots=True)
class NodeState:
    """What the daemon's files say, and every rule they break."""

    checkpoint: Checkpoint | None
    """None when the checkpoint cannot be read (then ``problems`` says why)."""
    problems: tuple[str, ...]

    @property
    def prepared(self) -> dict[ClaimUID, ClaimEntry]:
        """The checkpoint's claims by UID (empty when it cannot be read)."""
        return {} if self.checkpoint is None else dict(self.checkpoint.claims)


def node_state(plugin: PluginProcess, inventory: Inventory, *, settled: bool = True) -> NodeState:
    """Read the daemon's files and check every rule of the module docstring.

    ``inventory`` is the node's DCUs (``discover(root)`` of the mock node). ``settled``: no call
    is in flight and start-up recovery is over, so an unfinished prepare is a problem too.
    """
    problems: list[str] = []
    try:
        checkpoint = load_checkpoint(plugin.data_dir / CHECKPOINT_FILE, boot_id="")
    except DriverError as exc:
        return NodeState(None, (f"checkpoint: {exc}",))
    claims = checkpoint.claims
    if settled:
        problems += [
            f"claim {uid}: still {entry.state.value} in the checkpoint"
            for uid, entry in sorted(claims.items())
            if entry.state is not ClaimState.PREPARE_COMPLETED
        ]
    problems += _share_problems(claims.values(), inventory)
    on_disk: list[tuple[str, VdevConfig]] = []
    for _, entry in sorted(claims.items()):
        problems += _vdev_problems(plugin, entry, inventory, on_disk)
        problems += _spec_problems(plugin, entry)
    problems += _disk_collisions(on_disk)
    problems += _leftovers(plugin, set(claims))
    return NodeState(checkpoint, tuple(problems))


def node_state_problems(plugin: PluginProcess, inventory: Inventory) -> list[str]:
    """Every broken rule of a settled node, one line each (empty: all is well)."""
    return list(node_state(plugin, inventory).problems)


def _live(shares: Iterable[PreparedShare]) -> list[PreparedShare]:
    """Shares that hold CUs, a pipe id and memory (admin access takes none)."""
    return [share for share in shares if share.counts_against_capacity]


def _share_problems(entries: Iterable[ClaimEntry], inventory: Inventory) -> list[str]:
    """The checkpoint's shares, card by card: shapes, disjoint masks, unique pipes, memory."""
    problems: list[str] = []
    by_card: dict[str, list[tuple[str, PreparedShare]]] = defaultdict(list)
    for entry in entries:
        for share in entry.shares:
            where = f"claim {entry.uid} share on {share.device}"
            dcu = inventory.by_name(share.device)
            if dcu is None:
                problems.append(f"{where}: no such DCU on this node")
                continue
            if not share.counts_against_capacity:
                continue
            by_card[share.device].append((entry.uid, share))
            if share.whole_device:
                if share.vdev_id is not None or share.pipe_id is not None:
                    problems.append(f"{where}: a whole DCU with a vdev or pipe id")
                continue
            mask = CuMask.from_words(*share.cu_mask)
            if mask.is_empty or not mask.is_within(dcu.compute_units):
                problems.append(f"{where}: CU mask {mask.hex_words()} is empty or off the card")
            if mask.cu_count != share.cores:
                problems.append(f"{where}: {mask.cu_count} CUs in the mask, {share.cores} asked")
            if share.pipe_id is None or share.vdev_id is None:
                problems.append(f"{where}: a vDCU share without a pipe id or vdev id")
    for device, shares in sorted(by_card.items()):
        dcu = inventory.by_name(device)
        assert dcu is not None
        wholes = [uid for uid, share in shares if share.whole_device]
        if wholes and len(shares) > 1:
            problems.append(f"{device}: whole-DCU claim {wholes[0]} shares the card with others")
        used = EMPTY_MASK
        pipes: dict[int, str] = {}
        for uid, share in shares:
            if share.whole_device:
                continue
            mask = CuMask.from_words(*share.cu_mask)
            if mask.overlaps(used):
                problems.append(f"{device}: claim {uid}'s CUs overlap another share's")
            used = used.union(mask)
            if share.pipe_id is not None:
                if share.pipe_id in pipes:
                    problems.append(
                        f"{device}: pipe id {share.pipe_id} used by claims "
                        f"{pipes[share.pipe_id]} and {uid}"
                    )
                pipes[share.pipe_id] = uid
        memory_mib = sum(share.memory_mib for _, share in shares)
        if memory_mib > dcu.memory_mib:
            problems.append(f"{device}: shares hold {memory_mib} MiB of {dcu.memory_mib} MiB")
    return problems


def _vdev_problems(
    plugin: PluginProcess,
    entry: ClaimEntry,
    inventory: Inventory,
    on_disk: list[tuple[str, VdevConfig]],
) -> list[str]:
    """The claim's vdev files match its vDCU shares exactly; adds what was read to ``on_disk``."""
    directory = plugin.vdev_dir(entry.uid)
    shares = sorted(
        (s for s in entry.shares if s.vdev_id is not None), key=lambda s: s.vdev_id or 0
    )
    if not shares:
        if directory.exists():
            return [f"claim {entry.uid}: has no vDCU share but a vdev directory {directory}"]
        return []
    try:
        configs = read_vdev_dir(directory)
    except VdevError as exc:
        return [f"claim {entry.uid}: vdev files: {exc}"]
    on_disk += [(entry.uid, config) for config in configs]
    if len(configs) != len(shares):
        return [f"claim {entry.uid}: {len(configs)} vdev files for {len(shares)} vDCU shares"]
    problems = []
    for config, share in zip(configs, shares, strict=True):
        dcu = inventory.by_name(share.device)
        expected = (
            None if dcu is None else dcu.pci_bus_id,
            CuMask.from_words(*share.cu_mask),
            share.memory_mib,
            share.pipe_id,
            share.vdev_id,
        )
        found = (config.pci_bus_id, config.mask, config.memory_mib, config.pipe_id, config.vdev_id)
        if found != expected:
            name = vdev_file_name(config.vdev_id)
            problems.append(
                f"claim {entry.uid}: {name} says {found}, the checkpoint {expected} "
                "(card, mask, MiB, pipe, vdev id)"
            )
    return problems


def _spec_problems(plugin: PluginProcess, entry: ClaimEntry) -> list[str]:
    """The claim's CDI spec names exactly its shares' CDI devices; each share mounts its file."""
    path = plugin.spec_file(entry.uid)
    try:
        spec = json.loads(path.read_text())
        kind = str(spec["kind"])
        mounts = {
            f"{kind}={device['name']}": {
                str(mount.get("hostPath"))
                for mount in (device.get("containerEdits") or {}).get("mounts") or []
            }
            for device in spec["devices"]
        }
        names = set(mounts)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return [f"claim {entry.uid}: CDI spec {path} unreadable: {exc}"]
    problems = []
    expected = {share.cdi_id for share in entry.shares}
    if names != expected:
        problems.append(
            f"claim {entry.uid}: CDI spec names {sorted(names)}, not {sorted(expected)}"
        )
    for share in entry.shares:
        if share.vdev_id is None:
            continue
        file = str(plugin.vdev_dir(entry.uid) / vdev_file_name(share.vdev_id))
        if file not in mounts.get(share.cdi_id, set()):
            problems.append(f"claim {entry.uid}: CDI device {share.cdi_id} does not mount {file}")
    return problems


def _disk_collisions(on_disk: list[tuple[str, VdevConfig]]) -> list[str]:
    """What the DCU runtime would see: the vdev files of all claims, card by card.

    Also: no two live files share a vdev number (node-wide), else a container holding both
    would get one of them on one path.
    """
    problems = []
    by_card: dict[str, list[tuple[str, VdevConfig]]] = defaultdict(list)
    by_number: dict[int, list[str]] = defaultdict(list)
    for uid, config in on_disk:
        by_card[config.pci_bus_id].append((uid, config))
        by_number[config.vdev_id].append(uid)
    problems += [
        f"{vdev_file_name(number)} is written for claims {', '.join(uids)}"
        for number, uids in sorted(by_number.items())
        if len(uids) > 1
    ]
    for card, configs in sorted(by_card.items()):
        used = EMPTY_MASK
        pipes: set[int] = set()
        for uid, config in configs:
            if config.mask.overlaps(used):
                problems.append(f"{card}: the vdev file of claim {uid} overlaps another in CUs")
            if config.pipe_id in pipes:
                problems.append(f"{card}: the vdev file of claim {uid} reuses pipe id")
            used = used.union(config.mask)
            pipes.add(config.pipe_id)
    return problems


def _leftovers(plugin: PluginProcess, prepared: set[str]) -> list[str]:
    """Files of claims that are not prepared: CDI specs and vdev directories."""
    problems = []
    spec_names = {plugin.spec_file(uid).name for uid in prepared}
    problems += [
        f"CDI spec {path.name} belongs to no prepared claim"
        for path in plugin.spec_files()
        if path.name not in spec_names
    ]
    vdev_root = plugin.data_dir / VDEV_SUBDIR
    if vdev_root.is_dir():
        problems += [
            f"vdev directory {path.name} belongs to no prepared claim"
            for path in sorted(vdev_root.iterdir())
            if path.name not in prepared and not path.name.startswith(".")
        ]
    return problems
