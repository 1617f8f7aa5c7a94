"""``python -m bench.reference``: usage errors, the reference's claims, the measurement and table.

The reference driver itself is not built here (nothing of it belongs to the project), so the
measurement runs with our daemon on every side: what is tested is the bench's own plumbing
(restarts, cycles, figures, table), and that the API server takes the claims it makes for the
reference. README "Against the reference driver" has a run with the reference.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bench.node import BenchNode
from bench.reference import (
    DEVICES,
    REFERENCE_DRIVER,
    ReferenceNode,
    main,
    measure,
    our_side,
    reference_allocation,
    render,
)
from dra_driver.cluster.kube import paths
from dra_driver.testing.cluster import ControlPlane


def test_a_missing_binary_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main([str(tmp_path / "nothing")])
    assert exited.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"python -m bench.reference: error: {tmp_path / 'nothing'} is not a file: build the "
        "reference's cmd/dra-example-kubeletplugin (kubernetes-sigs/dra-example-driver) and "
        "pass its path"
    )


def test_a_before_tree_without_the_package_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    binary = tmp_path / "plugin"
    binary.write_bytes(b"")
    with pytest.raises(SystemExit) as exited:
        main([str(binary), "--before", str(tmp_path)])
    assert exited.value.code == 2
    assert (
        capsys.readouterr()
        .err.splitlines()[-1]
        .endswith(f"error: {tmp_path} is not a dcu-dra source tree (no dra_driver/daemon.py)")
    )


def test_a_reference_share_carries_a_share_id_and_its_memory_a_whole_device_neither() -> None:
    share = reference_allocation("node-a", "gpu-3", whole=False)
    (result,) = share["devices"]["results"]
    assert result["driver"] == REFERENCE_DRIVER and result["pool"] == "node-a"
    assert result["device"] == "gpu-3" and result["consumedCapacity"] == {"memory": "20Gi"}
    assert re.fullmatch(r"[0-9a-f-]{36}", result["shareID"])
    (whole,) = reference_allocation("node-a", "gpu-3", whole=True)["devices"]["results"]
    assert "shareID" not in whole and "consumedCapacity" not in whole
    terms = share["nodeSelector"]["nodeSelectorTerms"]
    assert terms == [
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["node-a"]}]}
    ]


def test_the_api_server_keeps_the_allocations_made_for_the_reference(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    node = ReferenceNode(control_plane, tmp_path, binary=tmp_path / "unused")
    try:
        share = node.claim(node.devices[0])
        whole = node.claim(node.devices[DEVICES - 1], whole=True)
        stored = control_plane.client.get(paths.resource_claims(node.namespace, share.name))
        (result,) = stored["status"]["allocation"]["devices"]["results"]
        assert result["device"] == "gpu-0" and result["consumedCapacity"] == {"memory": "20Gi"}
        assert "shareID" in result
        stored = control_plane.client.get(paths.resource_claims(node.namespace, whole.name))
        (result,) = stored["status"]["allocation"]["devices"]["results"]
        assert result["device"] == f"gpu-{DEVICES - 1}" and "shareID" not in result
    finally:
        node.close()


def test_the_measurement_and_table_with_our_daemon_on_both_sides(
    control_plane: ControlPlane, short_sock_dir: Path
) -> None:
    """Every figure is measured and shown, ratios to the last side (the reference's place)."""
    sides = [
        our_side("first", control_plane, short_sock_dir / "a", None),
        our_side("second", control_plane, short_sock_dir / "b", None),
    ]
    try:
        # Enough cycles that the daemon's CPU time, which the kernel counts in 10 ms ticks,
        # cannot come out 0 (with 3 per block it did under load).
        measure(sides, blocks=2, cycles=15, starts=1)
        for side in sides:
            assert side.whole.cycles == 30 and side.share.cycles == 30
            assert {size: flight.cycles for size, flight in side.in_flight.items()} == {
                16: 32,
                64: 128,
            }
            assert all(flight.cpu_ms_per_cycle > 0 for flight in side.in_flight.values())
            assert len(side.cycles_per_s) == 2 and all(rate > 0 for rate in side.cycles_per_s)
            assert len(side.socket_s) == 1 and 0 < side.socket_s[0] < 60
            assert side.whole.cpu_ms_per_cycle > 0 and 10 < side.rss_mib < 500
            assert isinstance(side.node, BenchNode) and side.node.manager is not None
        table = render(sides).splitlines()
    finally:
        for side in sides:
            side.node.close()
    assert table[0].split() == ["figure", "first", "second", "first/second"]
    assert [line.split("  ")[0].strip() for line in table[1:]] == [
        "prepare p50, whole device",
        "prepare p99, whole device",
        "unprepare p50, whole device",
        "cycles/s, 1 caller, whole device",
        "CPU per cycle, whole device",
        "prepare p50, share",
        "prepare p99, share",
        "unprepare p50, share",
        "cycles/s, 1 caller, share",
        "CPU per cycle, share",
        "cycles/s, 8 callers, share",
        "prepare p50, 16 in flight",
        "prepare p50, 16 in flight / share p50",
        "CPU per cycle, 16 in flight",
        "prepare p50, 64 in flight",
        "prepare p50, 64 in flight / share p50",
        "CPU per cycle, 64 in flight",
        "start -> DRA socket accepts",
        "RSS after the cycles",
    ]
    for line in table[1:]:
        assert re.search(r"\s\d+\.\d\d$", line), line  # the ratio column
