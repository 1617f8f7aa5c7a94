"""bench.placement: the summary of where shares landed, and one real run of 8 pods.

The pure tests pin the counting and the printed lines; the e2e test runs the measurement on
the session's control plane (its kube-scheduler) with two fake-kubelet nodes and the real
plugin, and checks what any correct placement must satisfy, not one scheduler's choices.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.placement import (
    DCUS_PER_NODE,
    DEFAULT_SCHEDULER,
    NODE_LABEL,
    SHARES_PER_DCU,
    PlacementError,
    Share,
    check_pods,
    format_summary,
    measure,
    quarter_card_pod,
    summarize,
)
from dra_driver.cluster.kube import paths
from dra_driver.testing.cluster import ControlPlane


def shares(*placed: tuple[str, str]) -> list[Share]:
    return [
        Share(pod=f"p{index}", node=node, device=dev) for index, (node, dev) in enumerate(placed)
    ]


def test_summary_counts_cards_per_node_busiest_first() -> None:
    summary = summarize(
        "default-scheduler",
        shares(("a", "d1"), ("a", "d0"), ("a", "d1"), ("b", "d3")),
        ["a", "b", "c"],
    )
    assert [(n.node, n.shares, n.shares_per_card, n.cards_used) for n in summary.nodes] == [
        ("a", 3, (2, 1), 2),
        ("b", 1, (1,), 1),
        ("c", 0, (), 0),
    ]
    assert summary.pods == 4
    assert summary.cards_used == 3


def test_summary_lines_show_each_node_and_the_total() -> None:
    summary = summarize("volcano", shares(("a", "d0"), ("a", "d0"), ("a", "d1")), ["a", "b"])
    assert format_summary(summary) == [
        "volcano: 3 quarter-card pods",
        f"  a: 3 shares on 2 of {DCUS_PER_NODE} cards (2+1)",
        f"  b: 0 shares on 0 of {DCUS_PER_NODE} cards (-)",
        f"  cards used: 2 of {2 * DCUS_PER_NODE}",
    ]


def test_share_on_another_node_is_one_clear_error() -> None:
    with pytest.raises(PlacementError, match=r"^shares landed on x, not on the measured nodes a"):
        summarize("default-scheduler", shares(("a", "d0"), ("x", "d0")), ["a"])


def test_pod_names_its_scheduler_only_when_it_is_not_the_default() -> None:
    default = quarter_card_pod("p", "ns", DEFAULT_SCHEDULER, "run")
    assert "schedulerName" not in default["spec"]
    assert default["spec"]["nodeSelector"] == {NODE_LABEL: "run"}
    assert quarter_card_pod("p", "ns", "volcano", "run")["spec"]["schedulerName"] == "volcano"


@pytest.mark.e2e
def test_eight_pods_land_on_the_two_nodes_within_each_cards_slots(
    control_plane: ControlPlane, short_sock_dir: Path
) -> None:
    result = measure(control_plane, short_sock_dir, pods=8)
    summary = result.summary
    assert summary.scheduler == DEFAULT_SCHEDULER
    assert sum(node.shares for node in summary.nodes) == 8
    assert len(summary.nodes) == 2
    for node in summary.nodes:
        assert all(count <= SHARES_PER_DCU for count in node.shares_per_card), node
    # Eight quarter cards need at least two cards; every pod is named once.
    assert summary.cards_used >= 2
    assert sorted(share.pod for share in result.shares) == [f"p{i:02d}" for i in range(8)]
    assert result.all_running_s > 0
    # The run cleans up after itself: no measured node is left.
    nodes = control_plane.client.list(paths.nodes(), label_selector=NODE_LABEL)["items"]
    assert nodes == []


def run_placement(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench.placement", *args],
        capture_output=True,
        text=True,
        check=False,
        env={"DCU_DRA_CONTROLPLANE": str(tmp_path / "missing"), "PATH": "/usr/bin:/bin"},
        cwd=Path(__file__).resolve().parents[2],
    )


def test_too_many_pods_is_a_usage_error() -> None:
    with pytest.raises(PlacementError, match=r"^33 pods: give 1 to 32 \(quarter cards on 2 nodes"):
        check_pods(33)
    with pytest.raises(PlacementError, match=r"^0 pods: give 1 to 32"):
        check_pods(0)


def test_too_many_pods_exits_2_before_starting_anything(tmp_path: Path) -> None:
    done = run_placement(tmp_path, "--pods", "33")
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1].endswith(
        "error: 33 pods: give 1 to 32 (quarter cards on 2 nodes x 4 DCUs)"
    )


def test_missing_control_plane_is_one_line_and_exit_1(tmp_path: Path) -> None:
    done = run_placement(tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"placement: {tmp_path / 'missing'} does not exist: run `make controlplane` first "
        "(builds the local etcd/kube-apiserver/scheduler/controller-manager)"
    ]
