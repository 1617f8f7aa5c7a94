"""dra_driver/testing/invariants.py finds every broken rule in files the real core wrote.

The core (``state.DcuPlugin``) prepares claims in-process into the layout of a
``PluginProcess`` (which is never started here); each test then breaks one thing the way a bug
or a crash would, and the checker must name it.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import pytest

from dra_driver.node.devices import DeviceName, Inventory, discover
from dra_driver.prepare.checkpoint import CHECKPOINT_FILE
from dra_driver.prepare.model import AllocatedShare, Claim, ClaimRef, ClaimUID, PrepareResult
from dra_driver.prepare.plugin import DcuPlugin
from dra_driver.testing.invariants import node_state, node_state_problems
from dra_driver.testing.plugin_process import PluginProcess
from dra_driver.vdcu.opaque import DcuConfig

NODE = "node-a"
DRIVER = "dcu.hygon.com"
Z100_A = DeviceName("dcu-0000-3b-00-0")
K100 = DeviceName("dcu-0000-af-00-0")
MIB = 2**20


def vdcu(device: DeviceName, cores: int) -> AllocatedShare:
    return AllocatedShare(
        request="dcu",
        pool=NODE,
        device=device,
        share_id=str(uuid.uuid4()),
        cores=cores,
        memory_bytes=1024 * MIB,
        vdevices=1,
        admin_access=False,
        config=DcuConfig(),
    )


def whole(device: DeviceName) -> AllocatedShare:
    return AllocatedShare(
        request="big",
        pool=NODE,
        device=device,
        share_id=None,
        cores=None,
        memory_bytes=None,
        vdevices=None,
        admin_access=False,
        config=DcuConfig(),
    )


class Prepared:
    """Three claims prepared by the real core: two shares of one Z100 and a whole K100."""

    def __init__(self, base: Path, mock_root: Path) -> None:
        self.inventory: Inventory = discover(mock_root)
        self.plugin = PluginProcess.in_directory(
            base, node_name=NODE, root=mock_root, kubeconfig=base / "unused"
        )
        self.plugin.data_dir.mkdir(mode=0o700)
        core = DcuPlugin(
            self.inventory,
            driver_name=DRIVER,
            node_name=NODE,
            data_dir=self.plugin.data_dir,
            cdi_dir=self.plugin.cdi_dir,
            boot_id="boot-1",
        )
        core.recover()
        self.uids: list[ClaimUID] = []
        for shares in ([vdcu(Z100_A, 15)], [vdcu(Z100_A, 20)], [whole(K100)]):
            claim = Claim(
                ref=ClaimRef(uid=ClaimUID(str(uuid.uuid4())), namespace="ns", name="c"),
                shares=tuple(shares),
            )
            assert isinstance(core.prepare_claims([claim])[claim.ref.uid], PrepareResult)
            self.uids.append(claim.ref.uid)

    def problems(self) -> list[str]:
        return node_state_problems(self.plugin, self.inventory)

    def edit_checkpoint(self, uid: str, **share_fields: object) -> None:
        path = self.plugin.data_dir / CHECKPOINT_FILE
        document = json.loads(path.read_text())
        document["claims"][uid]["shares"][0].update(share_fields)
        path.write_text(json.dumps(document))


@pytest.fixture
def prepared(short_sock_dir: Path, mock_root: Path) -> Prepared:
    return Prepared(short_sock_dir, mock_root)


def test_files_written_by_the_core_break_no_rule(prepared: Prepared) -> None:
    assert prepared.problems() == []
    assert set(node_state(prepared.plugin, prepared.inventory).prepared) == set(prepared.uids)


def test_overlapping_cus_are_found_in_the_checkpoint_and_on_disk(prepared: Prepared) -> None:
    first, second, _ = prepared.uids
    mask = json.loads((prepared.plugin.data_dir / CHECKPOINT_FILE).read_text())["claims"][first][
        "shares"
    ][0]["cuMask"]
    prepared.edit_checkpoint(second, cuMask=mask, cores=15)
    vdev = prepared.plugin.vdev_dir(second) / "vdev1.conf"  # vdev numbers are node-wide
    first_mask = (prepared.plugin.vdev_dir(first) / "vdev0.conf").read_text().splitlines()[1:3]
    lines = vdev.read_text().splitlines()
    lines[1:3] = first_mask
    lines[3] = "cu_count: 15"
    vdev.write_text("\n".join(lines) + "\n")
    # Claims are checked in UID order: the later of the two is the one that overlaps.
    later = max(first, second)
    assert prepared.problems() == [
        f"{Z100_A}: claim {later}'s CUs overlap another share's",
        f"0000:3b:00.0: the vdev file of claim {later} overlaps another in CUs",
    ]


def test_a_pipe_id_used_twice_on_a_card_is_found(prepared: Prepared) -> None:
    first, second, _ = prepared.uids
    prepared.edit_checkpoint(second, pipeID=0)
    problems = prepared.problems()
    earlier, later = sorted((first, second))
    assert f"{Z100_A}: pipe id 0 used by claims {earlier} and {later}" in problems
    # The file on disk still says pipe 1: the checkpoint and the file disagree.
    assert any(p.startswith(f"claim {second}: vdev1.conf says ") for p in problems)


def test_files_of_claims_that_are_not_prepared_are_found(prepared: Prepared) -> None:
    stray = str(uuid.uuid4())
    first = prepared.uids[0]
    shutil.copy(prepared.plugin.spec_file(first), prepared.plugin.spec_file(stray))
    shutil.copytree(prepared.plugin.vdev_dir(first), prepared.plugin.vdev_dir(stray))
    assert prepared.problems() == [
        f"CDI spec {prepared.plugin.spec_file(stray).name} belongs to no prepared claim",
        f"vdev directory {stray} belongs to no prepared claim",
    ]


def test_missing_files_of_a_prepared_claim_are_found(prepared: Prepared) -> None:
    first, _, third = prepared.uids
    prepared.plugin.spec_file(third).unlink()
    shutil.rmtree(prepared.plugin.vdev_dir(first))
    problems = sorted(prepared.problems(), key=lambda p: "vdev" not in p)
    assert len(problems) == 2
    assert problems[0].startswith(f"claim {first}: vdev files: ")
    assert problems[1].startswith(f"claim {third}: CDI spec ")
    assert problems[1].endswith(
        "No such file or directory: " + repr(str(prepared.plugin.spec_file(third)))
    )


def test_an_unfinished_prepare_and_a_shared_whole_dcu_are_found(prepared: Prepared) -> None:
    first, _, third = prepared.uids
    path = prepared.plugin.data_dir / CHECKPOINT_FILE
    document = json.loads(path.read_text())
    document["claims"][first]["state"] = "PrepareStarted"
    document["claims"][first]["shares"][0]["device"] = K100
    path.write_text(json.dumps(document))
    problems = prepared.problems()
    assert f"claim {first}: still PrepareStarted in the checkpoint" in problems
    assert f"{K100}: whole-DCU claim {third} shares the card with others" in problems
