"""The hy-smi parser and cross-check, and the mock hy-smi inside a vDCU container."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from dra_driver.errors import HySmiParseError
from dra_driver.node.devices import discover
from dra_driver.node.hysmi import (
    HySmiDevice,
    crosscheck,
    find_hy_smi,
    parse_device_info,
    run_hy_smi,
)

DEVICE_INFO = """\
Device 0:
\tActual Device: 0
\tCompute units: 60
\tGlobal memory: 34342961152 bytes
Device 1:
\tActual Device: 1
\tCompute units: 120
\tGlobal memory: 68719476736 bytes
"""

VDEVICE_INFO = """\
============ Virtual devices ============
Virtual Device 0:
    Actual Device: 1
    Compute units: 30
    Global memory: 17179869184 bytes
    Usage: 0
"""


def test_parses_device_blocks() -> None:
    assert parse_device_info(DEVICE_INFO) == [
        HySmiDevice(
            number=0, actual_device=0, compute_units=60, memory_bytes=34342961152, is_virtual=False
        ),
        HySmiDevice(
            number=1, actual_device=1, compute_units=120, memory_bytes=68719476736, is_virtual=False
        ),
    ]


def test_parses_virtual_device_blocks_ignoring_banners_and_unknown_fields() -> None:
    assert parse_device_info(VDEVICE_INFO) == [
        HySmiDevice(
            number=0, actual_device=1, compute_units=30, memory_bytes=17179869184, is_virtual=True
        )
    ]


def test_empty_output_has_no_devices() -> None:
    assert parse_device_info("") == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "Device 0:\n\tActual Device: 0\n\tCompute units: 60\n",
            r"^hy-smi output line 1 \(Device 0\): no 'Global memory:' line in the block$",
        ),
        (
            "Device 3:\n\tActual Device: 0\n\tCompute units: 60\n\tGlobal memory: 32 GiB\n",
            r"^hy-smi output line 1 \(Device 3\): Global memory '32 GiB' is not '<N> bytes'$",
        ),
        (
            "Virtual Device 2:\n\tActual Device: x\n\tCompute units: 6\n\tGlobal memory: 1 bytes\n",
            r"^hy-smi output line 1 \(Virtual Device 2\): invalid literal",
        ),
    ],
    ids=["missing-field", "bad-memory-unit", "bad-number"],
)
def test_malformed_blocks_are_errors(text: str, message: str) -> None:
    with pytest.raises(HySmiParseError, match=message):
        parse_device_info(text)


def test_crosscheck_agrees_with_the_mock_node(mock_root: Path) -> None:
    inventory = discover(mock_root)
    hy_smi = find_hy_smi(mock_root)
    assert hy_smi is not None
    reported = parse_device_info(run_hy_smi(hy_smi, "virtual", "-show-device-info"))
    assert crosscheck(inventory, reported) == []


def test_crosscheck_reports_disagreements(mock_root: Path) -> None:
    inventory = discover(mock_root)
    reported = [
        HySmiDevice(
            number=0, actual_device=0, compute_units=56, memory_bytes=34342961152, is_virtual=False
        ),
        HySmiDevice(number=1, actual_device=1, compute_units=60, memory_bytes=1, is_virtual=False),
    ]
    assert crosscheck(inventory, reported) == [
        "hy-smi reports 2 DCU(s), sysfs discovery found 3",
        "DCU 0 (0000:3b:00.0): hy-smi says 56 compute units, KFD topology says 60",
        "DCU 1 (0000:5e:00.0): hy-smi says 1 bytes of memory, KFD topology says 34342961152",
    ]


def test_run_hy_smi_reports_failures(mock_root: Path) -> None:
    hy_smi = find_hy_smi(mock_root)
    assert hy_smi is not None
    with pytest.raises(HySmiParseError, match=r"hy-smi bogus exited 2"):
        run_hy_smi(hy_smi, "bogus")
    with pytest.raises(HySmiParseError, match=r"failed"):
        run_hy_smi(mock_root / "missing-tool")


VDEV = """\
PciBusId: 0000:af:00.0
cu_mask: 0x000000003fffffff
cu_mask: 0x0000000000000000
cu_count: 30
mem: 16384 MiB
device_id: 0
vdev_id: 0
pipe_id: 1
enable: 1
"""


def _run_in_container(hy_smi: Path, vdev_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, HY_SMI_VDEV_DIR=str(vdev_dir))
    return subprocess.run(
        [str(hy_smi), *args], capture_output=True, text=True, env=env, check=False
    )


def test_mock_hy_smi_in_a_vdcu_container_prints_the_vdev_limits(
    mock_root: Path, tmp_path: Path
) -> None:
    vdev_dir = tmp_path / "etc-vdev-docker"
    vdev_dir.mkdir()
    (vdev_dir / "vdev0.conf").write_text(VDEV)
    hy_smi = find_hy_smi(mock_root)
    assert hy_smi is not None
    shown = _run_in_container(hy_smi, vdev_dir, "virtual", "-show-device-info")
    assert shown.returncode == 0
    assert parse_device_info(shown.stdout) == [
        HySmiDevice(
            number=0, actual_device=2, compute_units=30, memory_bytes=16 * 1024**3, is_virtual=False
        )
    ]
    vshown = _run_in_container(hy_smi, vdev_dir, "virtual", "-show-vdevice-info")
    assert [d.compute_units for d in parse_device_info(vshown.stdout)] == [30]


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        (
            "vdev0.conf",
            VDEV.replace("cu_count: 30", "cu_count: 29"),
            "cu_count 29 is not the popcount of cu_mask",
        ),
        ("vdev1.conf", VDEV, "vdev_id 0 does not match the file name"),
    ],
    ids=["popcount-rule", "vdev-id-rule"],
)
def test_mock_hy_smi_rejects_records_the_runtime_rejects(
    mock_root: Path, tmp_path: Path, name: str, content: str, reason: str
) -> None:
    vdev_dir = tmp_path / "vdev"
    vdev_dir.mkdir()
    (vdev_dir / name).write_text(content)
    hy_smi = find_hy_smi(mock_root)
    assert hy_smi is not None
    shown = _run_in_container(hy_smi, vdev_dir, "virtual", "-show-device-info")
    assert parse_device_info(shown.stdout) == []
    assert f"record rejected: {reason}" in shown.stderr
