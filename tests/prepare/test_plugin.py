"""DcuPlugin: preparing claims into vdev files and CDI specs, durably and idempotently."""

from __future__ import annotations

import json
import os
import re
import threading
import uuid
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from dra_driver.cdi import validate as cdi_validate
from dra_driver.cdi.build import build_node_spec
from dra_driver.cdi.files import stage_spec
from dra_driver.cdi.model import Spec
from dra_driver.errors import AllocationError, CheckpointError, ClaimError, DriverError
from dra_driver.node.devices import DeviceName, Inventory, discover
from dra_driver.node.mock import create_mock_node, parse_config
from dra_driver.prepare import checkpoint
from dra_driver.prepare.checkpoint import ClaimState
from dra_driver.prepare.model import AllocatedShare, Claim, ClaimRef, ClaimUID, PrepareResult
from dra_driver.prepare.plugin import DcuPlugin
from dra_driver.util import fsutil
from dra_driver.vdcu.allocator import CuMask, Layout
from dra_driver.vdcu.opaque import DcuConfig
from dra_driver.vdcu.vdev import parse_vdev, read_vdev_dir
from tests.conftest import CDI_SCHEMA_DIR

NODE = "node-a"
DRIVER = "dcu.hygon.com"
Z100_A = DeviceName("dcu-0000-3b-00-0")
Z100_B = DeviceName("dcu-0000-5e-00-0")
K100 = DeviceName("dcu-0000-af-00-0")
MIB = 2**20


def share(
    device: str = Z100_A,
    *,
    cores: int | None = 15,
    memory_mib: int | None = 4096,
    request: str = "dcu",
    layout: Layout = Layout.PACKED,
    admin: bool = False,
    share_id: str | None = "auto",
) -> AllocatedShare:
    exclusive = cores is None and memory_mib is None
    return AllocatedShare(
        request=request,
        pool=NODE,
        device=DeviceName(device),
        share_id=None if exclusive else (str(uuid.uuid4()) if share_id == "auto" else share_id),
        cores=cores,
        memory_bytes=None if memory_mib is None else memory_mib * MIB,
        vdevices=None if exclusive else 1,
        admin_access=admin,
        config=DcuConfig(cu_layout=layout),
    )


def claim(*shares: AllocatedShare, uid: str | None = None, name: str = "c") -> Claim:
    return Claim(
        ref=ClaimRef(uid=ClaimUID(uid or str(uuid.uuid4())), namespace="ns", name=name),
        shares=shares,
    )


class Node:
    """A mock node plus the plugin's directories; ``plugin()`` is a fresh process's view."""

    def __init__(self, base: Path, inventory: Inventory) -> None:
        self.base = base
        self.inventory = inventory
        self.data_dir = base / "data"
        self.cdi_dir = base / "cdi"
        self.data_dir.mkdir(mode=0o700)
        self.boot_id = "boot-1"

    def plugin(self) -> DcuPlugin:
        plugin = DcuPlugin(
            self.inventory,
            driver_name=DRIVER,
            node_name=NODE,
            data_dir=self.data_dir,
            cdi_dir=self.cdi_dir,
            boot_id=self.boot_id,
        )
        plugin.recover()
        return plugin

    def prepare(self, plugin: DcuPlugin, c: Claim) -> PrepareResult:
        result = plugin.prepare_claims([c])[c.ref.uid]
        if isinstance(result, DriverError):
            raise result
        return result

    def spec(self, uid: str) -> dict[str, object]:
        data: dict[str, object] = json.loads(
            (self.cdi_dir / f"k8s.dcu.hygon.com-dcu_{uid}.json").read_text()
        )
        return data

    def vdev_dir(self, uid: str) -> Path:
        return self.data_dir / "vdev" / uid

    def snapshot(self) -> dict[str, bytes]:
        files = {}
        for root in (self.data_dir, self.cdi_dir):
            if root.exists():
                for path in sorted(root.rglob("*")):
                    if path.is_file() and path.name != "serialize.lock":
                        files[str(path)] = path.read_bytes()
        return files


@pytest.fixture
def node(tmp_path: Path, mock_root: Path) -> Node:
    return Node(tmp_path, discover(mock_root))


def test_a_vdcu_share_gets_a_vdev_file_and_a_valid_cdi_spec(node: Node) -> None:
    plugin = node.plugin()
    c = claim(
        share(Z100_A, cores=30, memory_mib=16384, share_id="5b0e6a0c-6c2f-4f0e-9d57-2a1d3c4b5e6f")
    )
    result = node.prepare(plugin, c)
    (device,) = result.devices
    assert device.device == Z100_A and device.pool == NODE and device.requests == ("dcu",)
    assert device.share_id == "5b0e6a0c-6c2f-4f0e-9d57-2a1d3c4b5e6f"
    assert device.cdi_ids == (
        f"k8s.dcu.hygon.com/dcu={c.ref.uid}-{Z100_A}-5b0e6a0c-6c2f-4f0e-9d57-2a1d3c4b5e6f",
    )
    vdev = node.vdev_dir(c.ref.uid) / "vdev0.conf"
    assert vdev.read_text() == (
        "PciBusId: 0000:3b:00.0\ncu_mask: 0x000000003fffffff\ncu_mask: 0x0000000000000000\n"
        "cu_count: 30\nmem: 16384 MiB\ndevice_id: 0\nvdev_id: 0\npipe_id: 0\nenable: 1\n"
    )
    assert vdev.stat().st_mode & 0o777 == 0o644
    spec_path = node.cdi_dir / f"k8s.dcu.hygon.com-dcu_{c.ref.uid}.json"
    assert spec_path.stat().st_mode & 0o777 == 0o644
    assert cdi_validate.validate_file(spec_path, schema_dir=CDI_SCHEMA_DIR) == []
    spec = node.spec(c.ref.uid)
    edits = spec["containerEdits"]
    assert isinstance(edits, dict)
    # Spec level: only what every device of the claim needs.
    assert [n["path"] for n in edits["deviceNodes"]] == ["/dev/kfd", "/dev/mkfd"]
    assert [m["containerPath"] for m in edits["mounts"]] == ["/opt/hyhal"]
    assert "env" not in edits
    devices = spec["devices"]
    assert isinstance(devices, list)
    cdi_device: dict[str, Any] = devices[0]
    own = cdi_device["containerEdits"]
    assert [n["path"] for n in own["deviceNodes"]] == ["/dev/dri/card1", "/dev/dri/renderD129"]
    assert own["mounts"] == [
        {
            "hostPath": str(vdev),
            "containerPath": "/etc/vdev/docker/vdev0.conf",
            "options": ["ro", "nosuid", "nodev", "noexec", "bind"],
        }
    ]
    card = node.inventory.by_name(Z100_A)
    assert card is not None
    assert own["env"] == [
        f"DCU_0000_3B_00_0_UUID={card.uuid}",
        "DCU_VDEV0_PCI_BUS_ID=0000:3b:00.0",
        "DCU_VDEV0_COMPUTE_UNITS=30",
        "DCU_VDEV0_MEMORY_MIB=16384",
        "DCU_VDEV0_CLAIM=ns/c",
    ]
    stored = checkpoint.load(node.data_dir / "checkpoint.json", boot_id="x")
    assert stored.claims[c.ref.uid].state is ClaimState.PREPARE_COMPLETED
    assert (node.data_dir / "checkpoint.json").stat().st_mode & 0o777 == 0o600


def test_prepare_is_idempotent_with_no_new_side_effects(node: Node) -> None:
    plugin = node.plugin()
    c = claim(share(cores=10))
    first = node.prepare(plugin, c)
    before = node.snapshot()
    mtimes = {p: Path(p).stat().st_mtime_ns for p in before}
    assert node.prepare(node.plugin(), c) == first  # even from a restarted process
    assert node.snapshot() == before
    assert {p: Path(p).stat().st_mtime_ns for p in before} == mtimes


def test_two_shares_of_a_card_get_disjoint_masks_and_distinct_pipes(node: Node) -> None:
    plugin = node.plugin()
    a, b = claim(share(cores=30)), claim(share(cores=20))
    node.prepare(plugin, a)
    node.prepare(plugin, b)
    (va,) = read_vdev_dir(node.vdev_dir(a.ref.uid))
    (vb,) = read_vdev_dir(node.vdev_dir(b.ref.uid))
    assert vb.mask.hex_words() == ("0x0003ffffc0000000", "0x0000000000000000")
    assert not va.mask.overlaps(vb.mask)
    # vdev numbers are node-wide: b's file is vdev1.conf although it is b's only share.
    assert (va.pipe_id, vb.pipe_id, va.vdev_id, vb.vdev_id) == (0, 1, 0, 1)
    assert (va.device_id, vb.device_id) == (0, 0)


def test_a_request_of_two_dcus_numbers_them_in_the_container(node: Node) -> None:
    plugin = node.plugin()
    c = claim(
        share(K100, cores=60, memory_mib=8192),
        share(Z100_B, cores=15, memory_mib=4096),
    )
    result = node.prepare(plugin, c)
    assert [d.device for d in result.devices] == [Z100_B, K100]  # PCI order
    files = sorted(p.name for p in node.vdev_dir(c.ref.uid).iterdir())
    assert files == ["vdev0.conf", "vdev1.conf"]
    configs = read_vdev_dir(node.vdev_dir(c.ref.uid))
    assert [(v.pci_bus_id, v.device_id, v.vdev_id, v.cu_count) for v in configs] == [
        ("0000:5e:00.0", 0, 0, 15),
        ("0000:af:00.0", 1, 1, 60),
    ]
    assert "env" not in node.spec(c.ref.uid)["containerEdits"]  # type: ignore[operator]


def test_each_request_numbers_its_own_dcus_from_zero(node: Node) -> None:
    # Regression (containers issue, defect 3): a container naming request "b" alone holds
    # one DCU, so its file says device_id 0 (it said 1: the card's place in the claim).
    c = claim(
        share(Z100_B, cores=15, memory_mib=4096, request="a"),
        share(K100, cores=60, memory_mib=8192, request="b"),
    )
    node.prepare(node.plugin(), c)
    configs = read_vdev_dir(node.vdev_dir(c.ref.uid))
    assert [(v.pci_bus_id, v.device_id, v.vdev_id) for v in configs] == [
        ("0000:5e:00.0", 0, 0),
        ("0000:af:00.0", 0, 1),
    ]


def test_vdev_numbers_are_unique_node_wide_and_reused_once_free(node: Node) -> None:
    # Regression (defect 3): each claim numbered its files from vdev0.conf, so two claims in
    # one container mounted their vdev0.conf on one path and the container lost a file.
    plugin = node.plugin()
    c = claim(share(Z100_A, cores=10), share(Z100_B, cores=10))
    d = claim(share(K100, cores=10))
    node.prepare(plugin, c)
    node.prepare(plugin, d)
    numbers = {
        uid: [v.vdev_id for v in read_vdev_dir(node.vdev_dir(uid))]
        for uid in (c.ref.uid, d.ref.uid)
    }
    assert numbers == {c.ref.uid: [0, 1], d.ref.uid: [2]}
    plugin.unprepare_claims([c.ref])
    e = claim(share(Z100_A, cores=10))
    node.prepare(plugin, e)
    assert [v.vdev_id for v in read_vdev_dir(node.vdev_dir(e.ref.uid))] == [0]


def test_two_shares_of_one_card_in_one_request_are_refused(node: Node) -> None:
    plugin = node.plugin()
    c = claim(share(Z100_A, cores=10), share(Z100_A, cores=10))
    with pytest.raises(
        ClaimError,
        match=r"request 'dcu' got two shares of dcu-0000-3b-00-0; a container takes one vDCU "
        r"per card\. .*distinctAttribute: resource\.kubernetes\.io/pciBusID",
    ):
        node.prepare(plugin, c)
    assert plugin.prepared_claims() == {}
    # In two requests, each may reach its own container: allowed.
    node.prepare(plugin, claim(share(Z100_A, cores=10, request="a"), share(Z100_A, request="b")))


def test_no_two_devices_prepared_on_a_node_set_a_variable_to_different_values(
    node: Node,
) -> None:
    # Regression (defect 1): per-claim specs keyed variables by the device's place in the
    # claim (DCU_0_UUID, ...) and set DCU_VISIBLE_DEVICES and DCU_DRA_CLAIM at spec level, so
    # a container holding two claims got one claim's values for both.
    plugin = node.plugin()
    claims = [
        claim(share(K100, cores=None, memory_mib=None), name="whole"),
        claim(share(Z100_A, cores=10), share(Z100_B, cores=20), name="two"),
        claim(share(Z100_A, cores=5, request="x"), share(Z100_B, request="y"), name="reqs"),
        claim(share(K100, cores=None, memory_mib=None, admin=True), name="admin"),
    ]
    for c in claims:
        node.prepare(plugin, c)
    values: dict[str, set[str]] = {}
    for c in claims:
        spec = node.spec(c.ref.uid)
        edits = [spec.get("containerEdits", {})] + [
            d["containerEdits"]
            for d in spec["devices"]  # type: ignore[attr-defined]
        ]
        for e in edits:
            for entry in e.get("env", []):  # type: ignore[attr-defined]
                key, _, value = entry.partition("=")
                values.setdefault(key, set()).add(value)
    assert {k: v for k, v in values.items() if len(v) > 1} == {}
    node_spec = build_node_spec(node.inventory)
    for device in node_spec.devices:
        for entry in device.container_edits.env:
            key, _, value = entry.partition("=")
            assert values.get(key, {value}) == {value}, entry


def test_a_whole_card_share_has_no_vdev_file(node: Node) -> None:
    plugin = node.plugin()
    c = claim(share(Z100_A, cores=60, memory_mib=32752))
    node.prepare(plugin, c)
    assert not node.vdev_dir(c.ref.uid).exists()
    mounts = node.spec(c.ref.uid)["containerEdits"]["mounts"]  # type: ignore[index]
    assert all(m["containerPath"] != "/etc/vdev/docker" for m in mounts)
    # The card is taken: a vDCU share of it is refused by the node-side guard.
    with pytest.raises(AllocationError, match=r"dcu-0000-3b-00-0 is held whole by a live claim"):
        node.prepare(plugin, claim(share(Z100_A, cores=1, memory_mib=1)))


@pytest.mark.parametrize(("cores", "memory_mib"), [(61, 32752), (60, 32753), (120, 65536)])
def test_consuming_more_than_the_card_is_refused_not_taken_as_the_whole_card(
    node: Node, cores: int, memory_mib: int
) -> None:
    plugin = node.plugin()
    with pytest.raises(ClaimError, match=r"dcu-0000-3b-00-0: the allocation consumed .* more than"):
        node.prepare(plugin, claim(share(Z100_A, cores=cores, memory_mib=memory_mib)))
    assert plugin.prepared_claims() == {}


def test_an_exclusively_allocated_device_is_whole(node: Node) -> None:
    c = claim(share(K100, cores=None, memory_mib=None))
    (device,) = node.prepare(node.plugin(), c).devices
    assert device.share_id is None
    assert device.cdi_ids == (f"k8s.dcu.hygon.com/dcu={c.ref.uid}-{K100}",)
    assert not node.vdev_dir(c.ref.uid).exists()


def test_admin_access_exposes_the_card_without_taking_capacity(node: Node) -> None:
    plugin = node.plugin()
    node.prepare(plugin, claim(share(Z100_A, cores=60, memory_mib=32752)))
    admin = claim(share(Z100_A, cores=60, memory_mib=32752, admin=True))
    node.prepare(plugin, admin)
    assert not node.vdev_dir(admin.ref.uid).exists()


@pytest.mark.parametrize(
    ("shares", "message"),
    [
        ([share(cores=40), share(cores=30)], r"requested 30 CUs, only 20 of 60 free"),
        (
            [share(memory_mib=30000), share(memory_mib=4000)],
            r"requested 4000 MiB, only 2752 of 32752 MiB free",
        ),
        ([share(cores=1)] * 4 + [share(cores=1)], r"all 4 vDCU slots are taken"),
        (
            [share(cores=5), share(Z100_A, cores=60, memory_mib=32752)],
            r"dcu-0000-3b-00-0 is allocated whole, but 1 share\(s\) of it are live",
        ),
    ],
    ids=["cores", "memory", "slots", "whole-over-share"],
)
def test_the_node_side_guard_refuses_overcommit(
    node: Node, shares: list[AllocatedShare], message: str
) -> None:
    plugin = node.plugin()
    for earlier in shares[:-1]:
        node.prepare(plugin, claim(replace(earlier, share_id=str(uuid.uuid4()))))
    before = node.snapshot()
    with pytest.raises(AllocationError, match=message):
        node.prepare(plugin, claim(shares[-1]))
    assert node.snapshot() == before  # a refused prepare changes nothing


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (claim(share(), uid="../../etc"), r"^claim uid '\.\./\.\./etc' is not a UUID"),
        (claim(share("dcu-0000-99-00-0")), r"device dcu-0000-99-00-0 is not on node node-a"),
        (claim(replace(share(), pool="node-b")), r"is in pool 'node-b', not this node's pool"),
        (claim(replace(share(), vdevices=None)), r"has no consumedCapacity for cores, memory"),
        (claim(replace(share(), vdevices=2)), r"a share takes exactly 1 vdevices slot"),
        (claim(replace(share(), memory_bytes=MIB + 1)), r"is not a whole number of MiB"),
        (claim(), r"no devices of dcu.hygon.com allocated on node node-a"),
    ],
    ids=[
        "path-uid",
        "unknown-device",
        "foreign-pool",
        "missing-capacity",
        "two-slots",
        "unaligned-memory",
        "no-shares",
    ],
)
def test_bad_claims_get_a_clear_per_claim_error(node: Node, bad: Claim, message: str) -> None:
    plugin = node.plugin()
    good = claim(share())
    results = plugin.prepare_claims([bad, good])
    error = results[bad.ref.uid]
    assert isinstance(error, ClaimError), error
    assert re.search(message, str(error)), str(error)
    assert isinstance(results[good.ref.uid], PrepareResult)
    outside = [p for p in node.base.rglob("*") if "etc" in p.parts and p.is_file()]
    assert outside == []


def test_unprepare_removes_everything_and_frees_the_cus(node: Node) -> None:
    plugin = node.plugin()
    c = claim(share(cores=30))
    node.prepare(plugin, c)
    assert plugin.unprepare_claims([c.ref]) == {c.ref.uid: None}
    assert not node.vdev_dir(c.ref.uid).exists()
    assert list(node.cdi_dir.iterdir()) == []
    assert checkpoint.load(node.data_dir / "checkpoint.json", boot_id="x").claims == {}
    again = claim(share(cores=30))
    node.prepare(plugin, again)
    (vdev,) = read_vdev_dir(node.vdev_dir(again.ref.uid))
    assert vdev.mask == CuMask.from_cus(range(30)) and vdev.pipe_id == 0
    assert plugin.unprepare_claims([c.ref]) == {c.ref.uid: None}  # unknown: success


def test_interrupted_prepare_is_rolled_back_at_start(node: Node) -> None:
    plugin = node.plugin()
    c = claim(share(cores=30))
    node.prepare(plugin, c)
    path = node.data_dir / "checkpoint.json"
    state = checkpoint.load(path, boot_id="x")
    entry = state.claims[c.ref.uid]
    checkpoint.save(path, state.with_claim(replace(entry, state=ClaimState.PREPARE_STARTED)))
    node.plugin()  # restart
    assert checkpoint.load(path, boot_id="x").claims == {}
    assert not node.vdev_dir(c.ref.uid).exists()
    assert list(node.cdi_dir.iterdir()) == []


def test_missing_files_are_regenerated_identically(node: Node) -> None:
    plugin = node.plugin()
    c = claim(share(cores=30), share(K100, cores=40, memory_mib=1024))
    node.prepare(plugin, c)
    before = node.snapshot()
    spec = node.cdi_dir / f"k8s.dcu.hygon.com-dcu_{c.ref.uid}.json"
    spec.unlink()
    (node.vdev_dir(c.ref.uid) / "vdev1.conf").unlink()
    node.plugin()  # restart regenerates
    assert node.snapshot() == before
    spec.unlink()
    node.prepare(plugin, c)  # so does a repeated prepare (runtime restarted, tmpfs emptied)
    assert node.snapshot() == before


def test_a_new_boot_id_drops_prepared_state(node: Node) -> None:
    plugin = node.plugin()
    c = claim(share(cores=60, memory_mib=32752))
    node.prepare(plugin, c)
    node.boot_id = "boot-2"
    plugin = node.plugin()
    assert checkpoint.load(node.data_dir / "checkpoint.json", boot_id="x").boot_id == "boot-2"
    assert list(node.cdi_dir.iterdir()) == []
    node.prepare(plugin, claim(share(cores=60, memory_mib=32752)))  # the card is free again


def test_a_power_cut_tears_only_files_that_start_up_removes(node: Node) -> None:
    """The vdev files and CDI specs are not fsync'd: a power cut may leave them empty or cut
    short under their names. It also reboots the node, and start-up with the new boot id
    removes every claim's files, torn or not, before any call; the cards are free again."""
    plugin = node.plugin()
    claims = [claim(share(cores=30, memory_mib=16384)), claim(share(K100, cores=10))]
    for c in claims:
        node.prepare(plugin, c)
    for c in claims:
        node.spec(c.ref.uid)  # whole before the cut
        (node.cdi_dir / f"k8s.dcu.hygon.com-dcu_{c.ref.uid}.json").write_bytes(b"")
        (node.vdev_dir(c.ref.uid) / "vdev0.conf").write_bytes(b"PciBusId:")
    node.boot_id = "boot-2"
    plugin = node.plugin()
    assert list(node.cdi_dir.iterdir()) == []
    assert list((node.data_dir / "vdev").iterdir()) == []
    assert checkpoint.load(node.data_dir / "checkpoint.json", boot_id="x").claims == {}
    again = claim(share(cores=60, memory_mib=32752))  # all of the card: nothing was kept
    node.prepare(plugin, again)
    assert node.spec(again.ref.uid)["kind"] == "k8s.dcu.hygon.com/dcu"


def test_only_the_checkpoint_is_fsynced_before_a_prepare_answers(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A prepare fsyncs the checkpoint's temp file twice (plan, completed) and the data dir
    once, and nothing else: the claim's vdev files and CDI spec are rebuilt from the
    checkpoint, so an fsync of theirs would only cost disk waits (see ``prepare.plugin``)."""
    plugin = node.plugin()
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    c = claim(share(cores=30, memory_mib=16384))
    node.prepare(plugin, c)
    temp = re.compile(rf"^{re.escape(str(node.data_dir))}/\.checkpoint\.json\.\w+\.tmp$")
    assert len(synced) == 3, synced
    assert all(temp.match(path) for path in synced[:2]), synced
    assert synced[2] == str(node.data_dir)
    synced.clear()
    plugin.unprepare_claims([c.ref])
    assert len(synced) == 2 and temp.match(synced[0]) and synced[1] == str(node.data_dir)


def test_files_of_unknown_claims_are_removed_at_start(node: Node) -> None:
    node.plugin()
    stray = str(uuid.uuid4())
    (node.cdi_dir).mkdir(exist_ok=True)
    (node.cdi_dir / f"k8s.dcu.hygon.com-dcu_{stray}.json").write_text("{}")
    (node.cdi_dir / "other-vendor.json").write_text("{}")
    (node.data_dir / "vdev" / stray).mkdir(parents=True)
    node.plugin()
    assert [p.name for p in node.cdi_dir.iterdir()] == ["other-vendor.json"]
    assert list((node.data_dir / "vdev").iterdir()) == []


def test_temp_files_of_interrupted_writes_are_removed_at_start(node: Node) -> None:
    """A crash between staging a file and renaming it leaves a temp file; a restart removes
    ours (checkpoint, claim specs, vdev files) and nothing else."""
    plugin = node.plugin()
    c = claim(share(cores=30))
    node.prepare(plugin, c)
    before = node.snapshot()
    ours = [
        node.data_dir / ".checkpoint.json.k3j_x9a1.tmp",
        node.cdi_dir / f".k8s.dcu.hygon.com-dcu_{uuid.uuid4()}.json.ab12cd34.tmp",
        node.vdev_dir(c.ref.uid) / ".vdev1.conf.zz9yy8xx.tmp",
    ]
    foreign = [node.cdi_dir / ".other-vendor.json.ab12cd34.tmp", node.data_dir / ".keep.tmp"]
    for path in ours + foreign:
        path.write_text("partial")
    node.plugin()
    assert [p for p in ours + foreign if p.exists()] == foreign
    for path in foreign:
        path.unlink()
    assert node.snapshot() == before


def test_a_claim_whose_files_fail_fails_alone_in_a_call_with_others(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    plugin = node.plugin()
    good, bad, other = claim(share(cores=10)), claim(share(cores=10)), claim(share(cores=10))
    real_stage_spec = stage_spec

    def failing_stage_spec(spec: Spec, directory: Path, file_name: str) -> object:
        if bad.ref.uid in file_name:
            raise OSError(28, "No space left on device", str(directory / file_name))
        return real_stage_spec(spec, directory, file_name)

    # The plugin calls the name it imported from cdi.files: patch it there.
    monkeypatch.setattr("dra_driver.prepare.plugin.stage_spec", failing_stage_spec)
    results = plugin.prepare_claims([good, bad, other])
    assert isinstance(results[good.ref.uid], PrepareResult)
    assert isinstance(results[other.ref.uid], PrepareResult)
    assert re.fullmatch(
        rf"claim ns/c \(uid {bad.ref.uid}\): writing its files failed: No space left on "
        r"device \(.*\.json\)",
        str(results[bad.ref.uid]),
    )
    stored = checkpoint.load(node.data_dir / "checkpoint.json", boot_id="x").claims
    assert set(stored) == {good.ref.uid, other.ref.uid}
    assert not node.vdev_dir(bad.ref.uid).exists()
    names = [p.name for p in node.cdi_dir.iterdir()]
    assert sorted(names) == sorted(f"k8s.dcu.hygon.com-dcu_{c.ref.uid}.json" for c in (good, other))


def test_a_failing_disk_fails_the_call_and_leaves_nothing(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A disk error when the plan is fsync'd fails the whole call (the kubelet retries it)
    before any file of its claims is in place."""
    plugin = node.plugin()
    before = node.snapshot()
    claims = [claim(share(cores=10)), claim(share(K100, cores=10))]
    real_sync_staged = fsutil.sync_staged

    def sync_staged(files: Sequence[fsutil.StagedFile]) -> None:
        for file in files:
            file.close()
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(checkpoint, "sync_staged", sync_staged)
    with pytest.raises(CheckpointError, match=r"^cannot write checkpoint .*: Input/output error$"):
        plugin.prepare_claims(claims)
    assert node.snapshot() == before  # no claim, no file, no temp file
    monkeypatch.setattr(checkpoint, "sync_staged", real_sync_staged)
    results = plugin.prepare_claims(claims)
    assert all(isinstance(results[c.ref.uid], PrepareResult) for c in claims)


def test_spread_layout_takes_cus_across_simd_arrays(node: Node) -> None:
    c = claim(share(cores=8, layout=Layout.SPREAD))
    node.prepare(node.plugin(), c)
    (vdev,) = read_vdev_dir(node.vdev_dir(c.ref.uid))
    assert vdev.mask.cus() == (0, 1, 15, 16, 30, 31, 45, 46)


def test_64_claims_prepared_from_parallel_calls_never_overlap(tmp_path: Path) -> None:
    devices = [
        {
            "model": "Z100",
            "computeUnits": 60,
            "memory": "32Gi",
            "pciBusID": f"0000:{0x10 + i:02x}:00.0",
        }
        for i in range(16)
    ]
    root = tmp_path / "node16"
    create_mock_node(root, parse_config({"devices": devices}))
    inventory = discover(root)
    (tmp_path / "plugin").mkdir()
    node = Node(tmp_path / "plugin", inventory)
    plugins = [node.plugin() for _ in range(4)]  # several instances sharing the data dir
    claims = [
        claim(share(d.name, cores=15, memory_mib=8192)) for d in inventory.devices for _ in range(4)
    ]
    errors: list[object] = []

    def prepare(index: int) -> None:
        result = plugins[index % 4].prepare_claims([claims[index]])[claims[index].ref.uid]
        if isinstance(result, DriverError):
            errors.append(result)

    threads = [threading.Thread(target=prepare, args=(i,)) for i in range(64)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    by_card: dict[str, list[CuMask]] = {}
    pipes: dict[str, set[int]] = {}
    for c in claims:
        (vdev,) = read_vdev_dir(node.vdev_dir(c.ref.uid))
        for other in by_card.setdefault(vdev.pci_bus_id, []):
            assert not vdev.mask.overlaps(other)
        by_card[vdev.pci_bus_id].append(vdev.mask)
        assert vdev.pipe_id not in pipes.setdefault(vdev.pci_bus_id, set())
        pipes[vdev.pci_bus_id].add(vdev.pipe_id)
    assert len(checkpoint.load(node.data_dir / "checkpoint.json", boot_id="x").claims) == 64


class PrepareUnprepareMachine(RuleBasedStateMachine):
    """Random prepare/unprepare/restart sequences keep the vDCU invariants."""

    def __init__(self) -> None:
        super().__init__()
        import tempfile

        self.base = Path(tempfile.mkdtemp(prefix="sm-"))
        root = self.base / "root"
        create_mock_node(root)
        (self.base / "n").mkdir()
        self.node: Node | None = Node(self.base / "n", discover(root))
        self.plugin = self.node.plugin()
        self.live: dict[ClaimUID, Claim] = {}
        self.results: dict[ClaimUID, PrepareResult] = {}

    def teardown(self) -> None:
        import shutil

        shutil.rmtree(self.base, ignore_errors=True)

    @rule(
        device=st.sampled_from([Z100_A, Z100_B, K100]),
        cores=st.integers(1, 70),
        memory_mib=st.integers(1, 40000),
        layout=st.sampled_from(list(Layout)),
        whole=st.booleans(),
    )
    def prepare(
        self, device: str, cores: int, memory_mib: int, layout: Layout, whole: bool
    ) -> None:
        assert self.node is not None
        dcu = self.node.inventory.by_name(device)
        assert dcu is not None
        s = share(
            device,
            cores=dcu.compute_units if whole else cores,
            memory_mib=dcu.memory_mib if whole else memory_mib,
            layout=layout,
        )
        c = claim(s)
        result = self.plugin.prepare_claims([c])[c.ref.uid]
        if isinstance(result, PrepareResult):
            self.live[c.ref.uid] = c
            self.results[c.ref.uid] = result
        else:
            assert isinstance(result, DriverError)

    @precondition(lambda self: bool(self.live))
    @rule(data=st.data())
    def unprepare(self, data: st.DataObject) -> None:
        uid = list(self.live)[data.draw(st.integers(0, len(self.live) - 1))]
        assert self.plugin.unprepare_claims([self.live[uid].ref]) == {uid: None}
        del self.live[uid], self.results[uid]

    @rule()
    def restart(self) -> None:
        assert self.node is not None
        self.plugin = self.node.plugin()

    @precondition(lambda self: bool(self.live))
    @rule(data=st.data())
    def prepare_again_is_identical(self, data: st.DataObject) -> None:
        uid = list(self.live)[data.draw(st.integers(0, len(self.live) - 1))]
        assert self.plugin.prepare_claims([self.live[uid]])[uid] == self.results[uid]

    @invariant()
    def shares_never_overlap_and_files_match_the_checkpoint(self) -> None:
        assert self.node is not None
        masks: dict[str, list[CuMask]] = {}
        pipes: dict[str, set[int]] = {}
        for uid in self.live:
            vdev_dir = self.node.vdev_dir(uid)
            for path in sorted(vdev_dir.glob("vdev*.conf")) if vdev_dir.exists() else []:
                config = parse_vdev(path.read_text(), file_name=path.name)
                for other in masks.setdefault(config.pci_bus_id, []):
                    assert not config.mask.overlaps(other)
                masks[config.pci_bus_id].append(config.mask)
                assert config.pipe_id not in pipes.setdefault(config.pci_bus_id, set())
                pipes[config.pci_bus_id].add(config.pipe_id)
        stored = checkpoint.load(self.node.data_dir / "checkpoint.json", boot_id="x")
        assert set(stored.claims) == set(self.live)
        specs = (
            {p.name for p in self.node.cdi_dir.glob("*.json")}
            if self.node.cdi_dir.exists()
            else set()
        )
        assert specs == {f"k8s.dcu.hygon.com-dcu_{uid}.json" for uid in self.live}
        vdev_root = self.node.data_dir / "vdev"
        dirs = {p.name for p in vdev_root.iterdir()} if vdev_root.exists() else set()
        assert dirs <= set(self.live)


TestPrepareUnprepare = PrepareUnprepareMachine.TestCase
TestPrepareUnprepare.settings = settings(
    max_examples=30,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
