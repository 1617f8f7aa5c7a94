"""dcu-dra verify: good containers built from claims our plugin prepared, and broken ones.

A "container" here is a directory laid out from the claim's own CDI spec: every device node the
spec injects is a symlink to its host path on the mock node (stat follows it, so a character
device stays one), and /etc/vdev/docker points at the spec's vdev mount.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dra_driver import cli
from dra_driver.cdi.model import spec_file_name
from dra_driver.node.mock import create_mock_node, parse_config
from dra_driver.prepare.model import AllocatedShare, Claim
from dra_driver.testing.core import allocated_share, local_plugin, prepare_claim
from dra_driver.tools.verify import CheckKind, NodeType, Report, Status, format_report, verify
from dra_driver.vdcu.allocator import CuMask
from dra_driver.vdcu.vdev import VdevConfig, render_vdev, write_vdev_dir

Z100_A = "0000:3b:00.0"  # 60 CUs, card1 / renderD129 on the default mock node
Z100_B = "0000:5e:00.0"  # 60 CUs, card2 / renderD130
K100 = "0000:af:00.0"  # 120 CUs, card3 / renderD131
MIB = 2**20
#: Without root the mock node's device nodes are plain files; verify must be told to accept them.
PLAIN = os.geteuid() != 0
DCU_DRA = str(Path(sys.executable).parent / "dcu-dra")


def share(device: str, cores: int | None, memory_mib: int | None) -> AllocatedShare:
    return allocated_share(device, cores=cores, memory_mib=memory_mib)


def prepare(mock_root: Path, base: Path, *shares: AllocatedShare) -> tuple[Claim, Path]:
    """Prepare one claim with the real plugin; return it and its CDI spec file."""
    plugin = local_plugin(mock_root, base)
    claim, _ = prepare_claim(plugin, *shares)
    return claim, base / "cdi" / spec_file_name(plugin.kind, claim.ref.uid)


def container_from_spec(spec_path: Path, root: Path) -> Path:
    """Lay out what the runtime would inject from the spec: device nodes and the vdev mounts."""
    for edit in _edits(spec_path):
        for node in edit.get("deviceNodes", []):
            target = root / node["path"].lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.is_symlink():
                target.symlink_to(node.get("hostPath", node["path"]))
        for mount in edit.get("mounts", []):
            target = root / mount["containerPath"].lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(mount["hostPath"])
    return root


def env_from_spec(spec_path: Path) -> dict[str, str]:
    """The variables the spec's edits set (ours never set one key twice)."""
    return dict(entry.split("=", 1) for edit in _edits(spec_path) for entry in edit.get("env", []))


def _edits(spec_path: Path) -> list[dict[str, Any]]:
    spec: dict[str, Any] = json.loads(spec_path.read_text())
    return [spec.get("containerEdits", {})] + [d["containerEdits"] for d in spec["devices"]]


def failing(report: Report) -> set[CheckKind]:
    return {c.kind for c in report.problems}


def messages(report: Report, kind: CheckKind) -> list[str]:
    return [c.message for c in report.checks if c.kind is kind]


def config(
    bus: str = Z100_A,
    cus: range = range(30),
    *,
    vdev_id: int = 0,
    pipe_id: int = 0,
    device_id: int = 0,
    memory_mib: int = 4096,
) -> VdevConfig:
    return VdevConfig(
        pci_bus_id=bus,
        mask=CuMask.from_cus(cus),
        memory_mib=memory_mib,
        device_id=device_id,
        vdev_id=vdev_id,
        pipe_id=pipe_id,
    )


def write_files(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)
    return directory


# --- good containers ---------------------------------------------------------------------------


def test_a_container_of_a_prepared_vdcu_claim_passes_every_check(
    mock_root: Path, tmp_path: Path
) -> None:
    _, spec = prepare(
        mock_root,
        tmp_path,
        share("dcu-0000-3b-00-0", 30, 16384),
        share("dcu-0000-af-00-0", 20, 4096),
    )
    container = container_from_spec(spec, tmp_path / "ctr")
    report = verify(
        container / "etc/vdev/docker",
        container / "dev",
        mock_root / "sys",
        environ=env_from_spec(spec),
        allow_plain_files=PLAIN,
    )
    assert report.ok, format_report(report)
    assert not report.whole_card
    got = [
        (f.name, c.pci_bus_id, c.mask.cus(), c.memory_mib, c.device_id, c.vdev_id, c.pipe_id)
        for f in report.vdev_files
        if (c := f.config) is not None
    ]
    assert got == [
        ("vdev0.conf", Z100_A, tuple(range(30)), 16384, 0, 0, 0),
        ("vdev1.conf", K100, tuple(range(20)), 4096, 1, 1, 0),
    ]
    assert [(c.pci_bus_id, c.compute_units) for c in report.cards] == [(Z100_A, 60), (K100, 120)]
    # Only the claim's cards' DRM nodes are in the container; sysfs maps each to its card.
    assert [(n.path.name, n.pci_bus_id) for n in report.device_nodes] == [
        ("kfd", None),
        ("mkfd", None),
        ("card1", Z100_A),
        ("card3", K100),
        ("renderD129", Z100_A),
        ("renderD131", K100),
    ]
    assert {c.kind for c in report.checks if c.status is Status.OK} == set(CheckKind) - {
        CheckKind.VDEV_DIR,
        CheckKind.DCU_PRESENT,
    }
    assert not [c for c in report.checks if c.status is Status.SKIP]
    text = format_report(report)
    lines = text.splitlines()
    assert lines[0] == f"vDCU container: 2 vdev file(s) in {container / 'etc/vdev/docker'}"
    assert lines[2].split() == [
        "vdev0.conf",
        Z100_A,
        "30/60",
        "0x000000003fffffff,0x0000000000000000",
        "16384",
        "MiB",
        "0",
        "0",
        "0",
    ]
    assert "OK: rule 3: pipe ids are unique per card" in text
    assert lines[-1] == f"verify: all {len(report.checks)} checks passed"
    assert "FAIL" not in text


def test_a_container_of_a_whole_card_claim_is_a_whole_card_container(
    mock_root: Path, tmp_path: Path
) -> None:
    _, spec = prepare(mock_root, tmp_path, share("dcu-0000-5e-00-0", None, None))
    container = container_from_spec(spec, tmp_path / "ctr")
    assert not (container / "etc/vdev/docker").exists()  # a whole card gets no vdev file
    report = verify(
        container / "etc/vdev/docker", container / "dev", mock_root / "sys", allow_plain_files=PLAIN
    )
    assert report.ok, format_report(report)
    assert report.whole_card
    assert [(c.pci_bus_id, c.compute_units, c.drm_nodes) for c in report.cards] == [
        (Z100_B, 60, ("card2", "renderD130"))
    ]
    (present,) = messages(report, CheckKind.DCU_PRESENT)
    assert present.endswith(f"1 DCU render node(s): renderD130 ({Z100_B})")
    assert format_report(report).startswith("whole-card container: no vdev files in ")


def test_without_sysfs_render_nodes_are_counted_and_card_sizes_skipped(
    mock_root: Path, tmp_path: Path
) -> None:
    _, spec = prepare(mock_root, tmp_path, share("dcu-0000-3b-00-0", 15, 8188))
    container = container_from_spec(spec, tmp_path / "ctr")
    report = verify(container / "etc/vdev/docker", container / "dev", None, allow_plain_files=PLAIN)
    assert report.ok, format_report(report)
    (skip,) = [c for c in report.checks if c.status is Status.SKIP]
    assert skip.kind is CheckKind.MASK_RANGE
    assert skip.message.startswith(f"card size unknown for {Z100_A} (no --sys-dir)")
    assert any(
        "1 render node(s)" in m and "counted" in m for m in messages(report, CheckKind.DEVICE_NODE)
    )
    shutil.rmtree(container / "dev/dri")
    report = verify(container / "etc/vdev/docker", container / "dev", tmp_path / "no-sys")
    assert failing(report) == {CheckKind.DEVICE_NODE}
    assert any(
        f"vdev files name 1 card(s) ({Z100_A}) but" in m and "has 0 usable render node(s)" in m
        for m in messages(report, CheckKind.DEVICE_NODE)
    )


def test_entries_that_are_not_vdev_files_are_listed_not_checked(
    mock_root: Path, tmp_path: Path
) -> None:
    vdev_dir = tmp_path / "vdev"
    write_vdev_dir(vdev_dir, [config()])
    write_files(vdev_dir, {"README": "notes\n", ".vdev0.conf.abc.tmp": "half a file"})
    report = verify(vdev_dir, mock_root / "dev", mock_root / "sys", allow_plain_files=PLAIN)
    assert report.ok, format_report(report)
    assert report.ignored == ("README",)
    assert [f.name for f in report.vdev_files] == ["vdev0.conf"]
    assert "ignored (not vdev files): README" in format_report(report)


# --- broken containers -------------------------------------------------------------------------


@dataclass(frozen=True)
class Broken:
    """A broken container: what to do to a good one, the check that must fail, its message."""

    vdev: Callable[[Path], None]
    dev: Callable[[Path], None]
    fails: CheckKind | set[CheckKind]
    message: str


def _files(files: dict[str, str]) -> Callable[[Path], None]:
    def write(directory: Path) -> None:
        write_files(directory, files)

    return write


def _keep(_: Path) -> None:
    return None


def _good(d: Path) -> None:
    write_vdev_dir(d, [config()])


def _remove(*relative: str) -> Callable[[Path], None]:
    def remove(dev: Path) -> None:
        for name in relative:
            (dev / name).unlink()

    return remove


def _a_file(path: Path) -> None:
    path.write_text("not a directory\n")


def _empty_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)


BROKEN = {
    "overlapping masks on one card": Broken(
        lambda d: write_vdev_dir(
            d, [config(cus=range(30)), config(cus=range(20, 40), vdev_id=1, pipe_id=1)]
        ),
        _keep,
        {CheckKind.OVERLAP, CheckKind.ONE_PER_CARD},
        f"vdev0.conf and vdev1.conf overlap on CUs 20-29 of {Z100_A}",
    ),
    "cu_count is not the popcount of the mask": Broken(
        _files({"vdev0.conf": render_vdev(config()).replace("cu_count: 30", "cu_count: 29")}),
        _keep,
        CheckKind.CU_COUNT,
        "vdev0.conf: cu_count 29 is not the popcount 30 of the cu_mask words (rule 1",
    ),
    "two shares of one card": Broken(
        _files(
            {
                "vdev0.conf": render_vdev(config()),
                "vdev2.conf": render_vdev(config(cus=range(30, 40), vdev_id=2, pipe_id=1)),
            }
        ),
        _keep,
        CheckKind.ONE_PER_CARD,
        f"vdev0.conf and vdev2.conf both configure {Z100_A}: a container takes one vDCU per card",
    ),
    "vdev_id differs from the file number": Broken(
        _files({"vdev0.conf": render_vdev(config(vdev_id=1))}),
        _keep,
        CheckKind.VDEV_ID,
        "vdev0.conf: vdev_id 1 does not match the file name vdev0.conf (rule 2",
    ),
    "duplicate pipe id on one card": Broken(
        _files(
            {
                "vdev0.conf": render_vdev(config()),
                "vdev1.conf": render_vdev(config(cus=range(30, 40), vdev_id=1, pipe_id=0)),
            }
        ),
        _keep,
        {CheckKind.PIPE_ID, CheckKind.ONE_PER_CARD},
        f"vdev0.conf and vdev1.conf both use pipe_id 0 on {Z100_A} (rule 3",
    ),
    "mask beyond the card's CUs": Broken(
        lambda d: write_vdev_dir(d, [config(cus=range(56, 62))]),
        _keep,
        CheckKind.MASK_RANGE,
        f"vdev0.conf: cu_mask holds CUs 60-61, beyond the 60 CUs of {Z100_A}",
    ),
    # The mock's /dev holds all three cards: K100 is the container's third DCU.
    "device_id not the card's ordinal in the container": Broken(
        lambda d: write_vdev_dir(d, [config(), config(K100, vdev_id=1)]),
        _keep,
        CheckKind.DEVICE_ID,
        f"vdev1.conf: device_id 0, but {K100} is DCU 2 of the container's 3 ({Z100_A}, {Z100_B}, "
        f"{K100}): the runtime would not confine the card to this share",
    ),
    "unparseable file": Broken(
        _files({"vdev0.conf": "PciBusId 0000:3b:00.0\n"}),
        _keep,
        CheckKind.FORMAT,
        "vdev0.conf: line 1 'PciBusId 0000:3b:00.0' is not 'key: value'",
    ),
    "misnamed file": Broken(
        _files({"vdev00.conf": render_vdev(config())}),
        _keep,
        CheckKind.FORMAT,
        "vdev00.conf: file name 'vdev00.conf' is not vdev<N>.conf",
    ),
    "render node of the card missing": Broken(
        _good,
        _remove("dri/renderD129"),
        CheckKind.DEVICE_NODE,
        f"no render node of {Z100_A} in ",
    ),
    "/dev/mkfd missing": Broken(
        _good, _remove("mkfd"), CheckKind.DEVICE_NODE, "mkfd (Hygon-specific) is missing"
    ),
    "/dev/kfd missing": Broken(
        _good, _remove("kfd"), CheckKind.DEVICE_NODE, "kfd (the compute interface) is missing"
    ),
    "empty vdev dir and no device nodes": Broken(
        _empty_dir,
        _empty_dir,
        CheckKind.DCU_PRESENT,
        "no DCU in this container: no vdev files in ",
    ),
    "vdev dir is a file": Broken(_a_file, _keep, CheckKind.VDEV_DIR, "is not a directory"),
}


@pytest.mark.parametrize("case", BROKEN.values(), ids=list(BROKEN))
def test_a_broken_container_fails_exactly_its_check(
    case: Broken, mock_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    vdev_dir = tmp_path / "vdev"
    case.vdev(vdev_dir)
    dev_dir = mock_root / "dev"
    case.dev(dev_dir)
    report = verify(vdev_dir, dev_dir, mock_root / "sys", allow_plain_files=PLAIN)
    fails = case.fails if isinstance(case.fails, set) else {case.fails}
    assert failing(report) == fails, format_report(report)
    assert any(case.message in c.message for c in report.problems), format_report(report)
    assert all(c.message.count("; ") >= 1 for c in report.problems)  # each says what to do
    args = ["verify", "--no-env", "--vdev-dir", str(vdev_dir), "--dev-dir", str(dev_dir)]
    args += ["--sys-dir", str(mock_root / "sys"), *(["--allow-plain-files"] if PLAIN else [])]
    assert cli.main(args) == 1
    out = capsys.readouterr().out
    fail_lines = [line for line in out.splitlines() if line.startswith("FAIL: ")]
    assert len(fail_lines) == len(report.problems)
    assert any(case.message in line for line in fail_lines), out
    assert out.splitlines()[-1] == f"verify: {len(report.problems)} problem(s)"


def test_a_broken_file_still_gets_its_cards_device_nodes_checked(
    mock_root: Path, tmp_path: Path
) -> None:
    """A rejected file's PciBusId is read leniently so a missing render node is still named."""
    vdev_dir = write_files(
        tmp_path / "vdev",
        {"vdev0.conf": render_vdev(config(K100)).replace("cu_count: 30", "cu_count: 3")},
    )
    (mock_root / "dev/dri/renderD131").unlink()
    report = verify(vdev_dir, mock_root / "dev", mock_root / "sys", allow_plain_files=PLAIN)
    assert failing(report) == {CheckKind.CU_COUNT, CheckKind.DEVICE_NODE}
    assert report.vdev_files[0].config is None and report.vdev_files[0].pci_bus_id == K100
    assert "(rejected by the parser)" in format_report(report)


def test_plain_file_device_nodes_fail_unless_allowed(tmp_path: Path) -> None:
    root = tmp_path / "node"
    create_mock_node(root, device_nodes="file")
    vdev_dir = tmp_path / "vdev"
    write_vdev_dir(vdev_dir, [config()])
    report = verify(vdev_dir, root / "dev", root / "sys")
    assert failing(report) == {CheckKind.DEVICE_NODE}
    assert len(report.problems) == 3  # kfd, mkfd, renderD129
    assert all("is a regular file, not a character device" in c.message for c in report.problems)
    assert all("--allow-plain-files" in c.message for c in report.problems)
    allowed = verify(vdev_dir, root / "dev", root / "sys", allow_plain_files=True)
    assert allowed.ok, format_report(allowed)
    assert {n.type for n in allowed.device_nodes} == {NodeType.FILE}


def test_a_whole_card_container_with_only_another_vendors_gpu_has_no_dcu(tmp_path: Path) -> None:
    root = tmp_path / "node"
    create_mock_node(
        root,
        parse_config(
            {
                "devices": [
                    {
                        "deviceID": 0x2330,
                        "vendorID": 0x10DE,
                        "computeUnits": 132,
                        "memory": "80Gi",
                        "pciBusID": "0000:18:00.0",
                    }
                ]
            }
        ),
    )
    report = verify(tmp_path / "none", root / "dev", root / "sys", allow_plain_files=PLAIN)
    assert failing(report) == {CheckKind.DCU_PRESENT}
    (problem,) = report.problems
    assert "no DCU in this container" in problem.message
    assert "renderD129 (0000:18:00.0, vendor 0x10de)" in problem.message


# --- command line ------------------------------------------------------------------------------


def test_json_output_parses_and_carries_the_report(
    mock_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    vdev_dir = tmp_path / "vdev"
    write_vdev_dir(
        vdev_dir, [config(memory_mib=8188), config(K100, range(64, 72), vdev_id=1, device_id=2)]
    )
    args = ["verify", "--json", "--no-env", "--vdev-dir", str(vdev_dir)]
    args += ["--dev-dir", str(mock_root / "dev")]
    args += ["--sys-dir", str(mock_root / "sys"), *(["--allow-plain-files"] if PLAIN else [])]
    assert cli.main(args) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is True and doc["mode"] == "vdcu"
    assert doc["vdevFiles"][1] == {
        "file": "vdev1.conf",
        "parsed": True,
        "pciBusID": K100,
        "computeUnits": 8,
        "cus": "64-71",
        "cuMask": ["0x0000000000000000", "0x00000000000000ff"],
        "memoryMiB": 4096,
        "deviceID": 2,
        "vdevID": 1,
        "pipeID": 0,
    }
    assert doc["cards"][0] == {
        "pciBusID": Z100_A,
        "computeUnits": 60,
        "drmNodes": ["card1", "renderD129"],
        "vendorID": "0x1d94",
    }
    assert {c["status"] for c in doc["checks"]} == {"ok"}
    assert {c["check"] for c in doc["checks"]} >= {"cu-count", "vdev-id", "pipe-id", "overlap"}

    (vdev_dir / "vdev1.conf").unlink()
    (vdev_dir / "vdev7.conf").write_text(render_vdev(config(K100, vdev_id=7, device_id=1)))
    assert cli.main(args) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is False
    assert [c["check"] for c in doc["checks"] if c["status"] == "fail"] == ["device-id"]


def test_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["verify", "--dev-dir", str(tmp_path / "missing")])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err == (
        f"dcu-dra verify: error: --dev-dir {tmp_path / 'missing'} is not a directory "
        "(see 'dcu-dra verify --help')\n"
    )
    with pytest.raises(SystemExit) as exited:
        cli.main(["verify", "--no-such-flag"])
    assert exited.value.code == 2


def test_the_installed_command_exits_0_then_1(mock_root: Path, tmp_path: Path) -> None:
    vdev_dir = tmp_path / "vdev"
    write_vdev_dir(vdev_dir, [config()])
    args = [DCU_DRA, "verify", "--no-env", "--vdev-dir", str(vdev_dir)]
    args += ["--dev-dir", str(mock_root / "dev")]
    args += ["--sys-dir", str(mock_root / "sys"), *(["--allow-plain-files"] if PLAIN else [])]
    done = subprocess.run(args, capture_output=True, text=True, check=False, timeout=60)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.splitlines()[-1].startswith("verify: all ")
    (mock_root / "dev/kfd").unlink()
    done = subprocess.run(args, capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 1
    assert [line for line in done.stdout.splitlines() if line.startswith("FAIL: ")] == [
        f"FAIL: {mock_root / 'dev/kfd'} (the compute interface) is missing: the DCU runtime "
        "cannot reach the card; the claim's CDI spec injects it: check that the container lists "
        "the claim under resources.claims and that the container runtime has CDI enabled"
    ]


# --- variables ---------------------------------------------------------------------------------


def test_variables_that_disagree_with_the_files_or_cards_fail(
    mock_root: Path, tmp_path: Path
) -> None:
    _, spec = prepare(mock_root, tmp_path, share("dcu-0000-3b-00-0", 30, 16384))
    container = container_from_spec(spec, tmp_path / "ctr")
    env = env_from_spec(spec)
    paths = (container / "etc/vdev/docker", container / "dev", mock_root / "sys")
    assert verify(*paths, environ=env, allow_plain_files=PLAIN).ok
    wrong = {
        "DCU_VDEV0_COMPUTE_UNITS": "31",
        "DCU_VDEV5_PCI_BUS_ID": Z100_A,
        "DCU_0000_AF_00_0_UUID": "DCU-x",
    }
    report = verify(*paths, environ=env | wrong, allow_plain_files=PLAIN)
    assert failing(report) == {CheckKind.VARIABLES}
    assert [c.message.split(";")[0] for c in report.problems] == [
        "DCU_VDEV0_COMPUTE_UNITS is '31', but vdev0.conf says '30'",
        "DCU_VDEV5_* describe a share whose vdev5.conf the container lacks",
        f"DCU_0000_AF_00_0_UUID names {K100}, whose render node this container lacks",
    ]
    del env["DCU_0000_3B_00_0_UUID"]
    report = verify(*paths, environ=env, allow_plain_files=PLAIN)
    assert [c.message.split(";")[0] for c in report.problems] == [
        f"{Z100_A} has no DCU_0000_3B_00_0_UUID variable"
    ]


def test_the_command_checks_its_own_environment(mock_root: Path, tmp_path: Path) -> None:
    _, spec = prepare(mock_root, tmp_path, share("dcu-0000-5e-00-0", None, None))
    container = container_from_spec(spec, tmp_path / "ctr")
    args = [DCU_DRA, "verify", "--vdev-dir", str(container / "etc/vdev/docker")]
    args += ["--dev-dir", str(container / "dev"), "--sys-dir", str(mock_root / "sys")]
    args += ["--allow-plain-files"] if PLAIN else []
    env = {"PATH": os.environ["PATH"], **env_from_spec(spec)}
    done = subprocess.run(args, capture_output=True, text=True, check=False, timeout=60, env=env)
    assert done.returncode == 0, done.stdout
    assert "OK: DCU_* variables match the container's cards (0000:5e:00.0)" in done.stdout
    env.pop("DCU_0000_5E_00_0_UUID")
    done = subprocess.run(args, capture_output=True, text=True, check=False, timeout=60, env=env)
    assert done.returncode == 1
    assert f"FAIL: {Z100_B} has no DCU_0000_5E_00_0_UUID variable" in done.stdout


def test_a_sysfs_that_does_not_list_the_containers_cards_counts_render_nodes(
    mock_root: Path, tmp_path: Path
) -> None:
    """In a real container /sys is the host's: on a node whose sysfs lists none of the
    container's DCUs (the mock's cards, here) the variables are counted against the render
    nodes, not failed for lacking a card sysfs cannot name (seen on the real-node test bed)."""
    _, spec = prepare(mock_root, tmp_path, share("dcu-0000-af-00-0", None, None))
    container = container_from_spec(spec, tmp_path / "ctr")
    host_sys = tmp_path / "host-sys"
    (host_sys / "bus/pci/devices").mkdir(parents=True)
    env = env_from_spec(spec)
    paths = (container / "etc/vdev/docker", container / "dev", host_sys)
    report = verify(*paths, environ=env, allow_plain_files=PLAIN)
    assert report.ok, format_report(report)
    report = verify(
        *paths, environ=env | {"DCU_0000_3B_00_0_UUID": "DCU-x"}, allow_plain_files=PLAIN
    )
    assert [c.message.split(";")[0] for c in report.problems] == [
        "2 DCU_*_UUID variables but 1 render node(s) in the container (counted: sysfs maps none "
        "of them to a card)"
    ]
