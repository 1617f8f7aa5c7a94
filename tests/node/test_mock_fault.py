"""``dcu-dra mock fault``: a lost DCU looks lost to the health check and recovers exactly."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from dra_driver.cli import main
from dra_driver.node.devices import DeviceName, discover
from dra_driver.node.health import HealthStatus, UnhealthyReason, observe
from dra_driver.node.mock import create_mock_node
from dra_driver.node.mock.fault import RECORD_NAME, STASH_DIR, MockFaultError, inject_fault

DCU_DRA = str(Path(sys.executable).parent / "dcu-dra")
Z100_1 = DeviceName("dcu-0000-5e-00-0")


def tree(root: Path) -> dict[str, tuple[str, int, bytes | str]]:
    """Every entry under ``root``: kind, mode and content (or link target)."""
    entries: dict[str, tuple[str, int, bytes | str]] = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        relative = path.relative_to(root).as_posix()
        if stat.S_ISLNK(info.st_mode):
            entries[relative] = ("link", 0, os.readlink(path))
        elif stat.S_ISDIR(info.st_mode):
            entries[relative] = ("dir", stat.S_IMODE(info.st_mode), b"")
        elif stat.S_ISCHR(info.st_mode):
            entries[relative] = ("char", stat.S_IMODE(info.st_mode), str(info.st_rdev))
        else:
            entries[relative] = ("file", stat.S_IMODE(info.st_mode), path.read_bytes())
    return entries


def test_lost_makes_the_device_unhealthy_for_every_signal_it_simulates(mock_root: Path) -> None:
    inventory = discover(mock_root)
    summary = inject_fault(mock_root, device=1, kind="lost")
    assert summary == (
        "device 1 (dcu-0000-5e-00-0, 0000:5e:00.0) is now lost: removed /dev/dri/card2, "
        "/dev/dri/renderD130; removed KFD topology node 2; its config space reads all ones"
    )
    seen = observe(inventory)
    assert seen[Z100_1].status is HealthStatus.UNHEALTHY
    assert seen[Z100_1].reason is UnhealthyReason.NOT_RESPONDING
    assert "the KFD topology no longer lists a compute node at 0000:5e:00.0" in seen[Z100_1].message
    assert "/dev/dri/card2 and /dev/dri/renderD130 missing" in seen[Z100_1].message
    others = [o.status for name, o in seen.items() if name != Z100_1]
    assert others == [HealthStatus.HEALTHY, HealthStatus.HEALTHY]


def test_recover_restores_exactly_what_the_mock_created(mock_root: Path) -> None:
    before = tree(mock_root)
    inject_fault(mock_root, device=1, kind="lost")
    assert tree(mock_root) != before
    summary = inject_fault(mock_root, device=1, kind="recover")
    assert summary == (
        "device 1 (dcu-0000-5e-00-0, 0000:5e:00.0) recovered: restored /dev/dri/card2, "
        "/dev/dri/renderD130, /sys/class/kfd/kfd/topology/nodes/2"
    )
    after = tree(mock_root)
    # The stash directory itself is gone too, only its (empty) parent may remain.
    after.pop(STASH_DIR, None)
    assert after == before
    assert {o.status for o in observe(discover(mock_root)).values()} == {HealthStatus.HEALTHY}


def test_an_existing_config_file_comes_back_unchanged(mock_root: Path) -> None:
    config = mock_root / "sys/bus/pci/devices/0000:5e:00.0/config"
    config.write_bytes(b"\x94\x1d\xb7\x54" + bytes(60))
    inject_fault(mock_root, device=1, kind="lost")
    assert config.read_bytes() == b"\xff" * 64
    inject_fault(mock_root, device=1, kind="recover")
    assert config.read_bytes() == b"\x94\x1d\xb7\x54" + bytes(60)


def test_device_numbers_do_not_shift_while_a_dcu_is_lost(mock_root: Path) -> None:
    inject_fault(mock_root, device=0, kind="lost")
    assert [d.pci_bus_id for d in discover(mock_root).devices] == ["0000:5e:00.0", "0000:af:00.0"]
    # Device 2 is still the K100_AI (PCI order counts the lost card).
    assert "0000:af:00.0" in inject_fault(mock_root, device=2, kind="lost")
    assert [d.pci_bus_id for d in discover(mock_root).devices] == ["0000:5e:00.0"]
    inject_fault(mock_root, device=0, kind="recover")
    inject_fault(mock_root, device=2, kind="recover")
    assert len(discover(mock_root).devices) == 3


def test_faults_are_idempotent(mock_root: Path) -> None:
    assert inject_fault(mock_root, device=1, kind="recover").endswith(
        "is not lost; nothing changed"
    )
    inject_fault(mock_root, device=1, kind="lost")
    lost = tree(mock_root)
    assert inject_fault(mock_root, device=1, kind="lost").endswith("already lost; nothing changed")
    assert tree(mock_root) == lost


def test_an_interrupted_lost_is_undone_by_recover(mock_root: Path) -> None:
    """The record is written before anything moves: recover restores what did move."""
    before = tree(mock_root)
    stash = mock_root / STASH_DIR / Z100_1
    stash.mkdir(parents=True)
    (stash / RECORD_NAME).write_text(
        json.dumps(
            {
                "pciBusID": "0000:5e:00.0",
                "moved": [["dev/dri/card2", "dri/card2"], ["dev/dri/renderD130", "dri/renderD130"]],
                "created": ["sys/bus/pci/devices/0000:5e:00.0/config"],
            }
        )
    )
    (stash / "dri").mkdir()
    (mock_root / "dev/dri/card2").rename(stash / "dri/card2")  # renderD130 never moved
    inject_fault(mock_root, device=1, kind="recover")
    after = tree(mock_root)
    after.pop(STASH_DIR, None)
    assert after == before


def test_a_record_left_from_before_a_recreate_does_not_block_a_new_fault(mock_root: Path) -> None:
    inventory = discover(mock_root)
    inject_fault(mock_root, device=1, kind="lost")
    create_mock_node(mock_root)  # wipes sys/ and dev/, not the stash
    assert observe(inventory)[Z100_1].status is HealthStatus.HEALTHY
    assert "is now lost" in inject_fault(mock_root, device=1, kind="lost")
    assert observe(inventory)[Z100_1].status is HealthStatus.UNHEALTHY


@pytest.mark.parametrize(
    ("device", "message"),
    [
        (3, r"^no device 3 on the mock node at .*: it has 3 DCU\(s\) \(indexes 0-2\)$"),
        (-1, r"^no device -1 on the mock node"),
    ],
    ids=["too-big", "negative"],
)
def test_unknown_device_numbers_are_refused(mock_root: Path, device: int, message: str) -> None:
    with pytest.raises(MockFaultError, match=message):
        inject_fault(mock_root, device=device, kind="lost")


def test_only_mock_nodes_take_faults(tmp_path: Path) -> None:
    (tmp_path / "sys").mkdir()
    with pytest.raises(MockFaultError, match=r"^.* holds no mock DCU node \(no \.dcu-dra-mock\)"):
        inject_fault(tmp_path, device=0, kind="lost")


def test_a_corrupt_record_is_reported_with_the_fix(mock_root: Path) -> None:
    stash = mock_root / STASH_DIR / Z100_1
    stash.mkdir(parents=True)
    (stash / RECORD_NAME).write_text("{not json")
    with pytest.raises(MockFaultError, match=r"^cannot read the fault record .*; remove "):
        inject_fault(mock_root, device=1, kind="recover")


def test_cli_lost_and_recover(mock_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["mock", "fault", "--root", str(mock_root), "--device", "2", "--kind", "lost"]) == 0
    assert "device 2 (dcu-0000-af-00-0, 0000:af:00.0) is now lost" in capsys.readouterr().out
    assert (
        main(["mock", "fault", "--root", str(mock_root), "--device", "2", "--kind", "recover"]) == 0
    )
    assert "recovered: restored" in capsys.readouterr().out


def test_cli_errors_are_one_line_and_exit_1(
    mock_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["mock", "fault", "--root", str(mock_root), "--device", "9", "--kind", "lost"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("dcu-dra: error: no device 9 on the mock node")
    assert err.count("\n") == 1


def test_cli_rejects_an_unknown_kind(mock_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["mock", "fault", "--root", str(mock_root), "--device", "0", "--kind", "melt"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'melt'" in capsys.readouterr().err


def test_cli_end_to_end_in_a_subprocess(mock_root: Path) -> None:
    done = subprocess.run(
        [DCU_DRA, "mock", "fault", "--root", str(mock_root), "--device", "0", "--kind", "lost"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.startswith("device 0 (dcu-0000-3b-00-0, 0000:3b:00.0) is now lost")
