"""``make bench`` in a tiny configuration: every figure is there and makes sense (no timings).

The bench runs against the session's control plane with the real daemon; the numbers are not
judged (machines are noisy), only their presence, units and consistency.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.report import TARGETS, render_markdown, render_text
from bench.run import QUICK, REPO, run_bench, write_json
from dra_driver.testing.cluster import ControlPlane

#: The keys the issue asks for, whatever else the bench reports.
REQUIRED = (
    "prepare_p50_ms",
    "prepare_p99_ms",
    "prepare_floor_ms",
    "unprepare_p50_ms",
    "cycles_per_s",
    "prepare_p50_ms_64_live",
    "start_to_slice_s",
    "start_to_socket_s",
    "cpu_ms_per_cycle",
    "cpu_ms_per_cycle_whole",
    "prepare_p50_single_ratio_16_in_flight",
    "prepare_p50_single_ratio_64_in_flight",
    "rss_idle_mib",
    "rss_growth_mib",
    "machine",
)
#: Latency pairs whose p50 cannot exceed their p99.
PERCENTILE_PAIRS = [
    ("prepare_p50_ms", "prepare_p99_ms"),
    ("unprepare_p50_ms", "unprepare_p99_ms"),
    ("prepare_p50_ms_whole", "prepare_p99_ms_whole"),
    ("prepare_p50_ms_2dcu", "prepare_p99_ms_2dcu"),
    ("unprepare_p50_ms_2dcu", "unprepare_p99_ms_2dcu"),
    ("prepare_p50_ms_64_live", "prepare_p99_ms_64_live"),
    ("prepare_p50_ms_16_in_flight", "prepare_p99_ms_16_in_flight"),
    ("prepare_p50_ms_64_in_flight", "prepare_p99_ms_64_in_flight"),
]


def test_quick_bench_reports_every_figure_consistently(
    control_plane: ControlPlane, short_sock_dir: Path, tmp_path: Path
) -> None:
    progress: list[str] = []
    results = run_bench(control_plane, short_sock_dir, QUICK, progress=progress.append)

    assert set(REQUIRED) <= set(results)
    machine = results["machine"]
    assert isinstance(machine, str) and " x " in machine and "data dir on " in machine
    n = {k: float(v) for k, v in results.items() if not isinstance(v, str | bool)}
    assert all(value >= 0 for key, value in n.items() if key != "rss_growth_mib")
    # The floors are measured, and a prepare's floor is their sum.
    for floor in ("floor_grpc_round_trip_ms", "floor_claim_get_ms", "floor_atomic_write_ms"):
        assert n[floor] > 0
    assert n["prepare_floor_ms"] == pytest.approx(
        n["floor_grpc_round_trip_ms"] + n["floor_claim_get_ms"] + n["floor_atomic_write_ms"],
        abs=0.002,
    )
    assert n["prepare_p50_floor_ratio"] == pytest.approx(
        n["prepare_p50_ms"] / n["prepare_floor_ms"], abs=0.01
    )
    for low, high in PERCENTILE_PAIRS:
        assert 0 < n[low] <= n[high], (low, high)
    # As many cycles as asked for, and figures derived from them.
    assert n["prepare_cycles"] == QUICK.cycles
    assert n["cycles_whole"] == QUICK.cycles_whole
    assert n["cycles_64_live"] == QUICK.cycles_64_live
    assert n["cycles_per_s_callers"] == QUICK.callers
    assert n["rss_growth_cycles"] == n["cycles_per_s_cycles"] > 0
    assert n["cycles_per_s"] > 0 and n["cycles_per_s_sequential"] > 0
    assert n["start_runs"] == QUICK.start_runs
    assert 0 < n["start_to_slice_s"] <= n["start_to_slice_max_s"]
    assert 0 < n["start_to_socket_s"] <= n["start_to_socket_max_s"]
    # CPU time is counted in clock ticks: a few cycles may fall within one.
    assert n["cpu_ms_per_cycle"] >= 0 and n["cpu_ms_per_cycle_whole"] >= 0
    assert n["prepare_p50_single_ratio_16_in_flight"] == pytest.approx(
        n["prepare_p50_ms_16_in_flight"] / n["prepare_p50_ms"], abs=0.01
    )
    # In flight, the floor is that many round trips and GETs at once, plus one write.
    for size in (16, 64):
        flight = f"{size}_in_flight"
        assert n[f"floor_grpc_round_trip_ms_{flight}"] > 0 and n[f"floor_claim_get_ms_{flight}"] > 0
        assert n[f"prepare_floor_ms_{flight}"] == pytest.approx(
            n[f"floor_grpc_round_trip_ms_{flight}"]
            + n[f"floor_claim_get_ms_{flight}"]
            + n["floor_atomic_write_ms"],
            abs=0.002,
        )
        assert n[f"prepare_p50_floor_ratio_{flight}"] == pytest.approx(
            n[f"prepare_p50_ms_{flight}"] / n[f"prepare_floor_ms_{flight}"], abs=0.01
        )
        assert n[f"prepare_floor_single_ratio_{flight}"] == pytest.approx(
            n[f"prepare_floor_ms_{flight}"] / n["prepare_p50_ms"], abs=0.01
        )
    assert 10 < n["rss_idle_mib"] < 1000
    assert n["rss_after_mib"] == pytest.approx(n["rss_warm_mib"] + n["rss_growth_mib"], abs=0.11)
    # Every target is judged.
    for target in TARGETS:
        assert isinstance(results[f"target_{target.name}_met"], bool)
    met = sum(bool(results[f"target_{t.name}_met"]) for t in TARGETS)
    assert results["targets_met"] == f"{met}/{len(TARGETS)}"
    assert progress[0].startswith("start -> slice")

    # The table and the JSON carry the same results.
    table = render_text(results)
    assert table.splitlines()[0].split() == ["figure", "value", "floor", "ratio", "target", "met"]
    assert f"{results['prepare_p50_ms']:.2f} ms" in table
    assert table.splitlines()[-1] == f"machine: {results['machine']}"
    # Markdown: header, separator, rows; text: header, rows, machine.
    assert len(render_markdown(results).splitlines()) == len(table.splitlines())
    path = tmp_path / "out" / "bench.json"
    write_json(results, path)
    assert json.loads(path.read_text()) == results
    # Nothing of the bench node is left in the API server.
    slices = control_plane.client.list(
        "/apis/resource.k8s.io/v1/resourceslices", field_selector="spec.driver=dcu.hygon.com"
    )["items"]
    assert not [s for s in slices if s["spec"]["nodeName"].startswith("bench-")]


def test_bench_without_a_control_plane_says_so_in_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--json", str(tmp_path / "b.json")],
        cwd=REPO,
        env={**os.environ, "DCU_DRA_CONTROLPLANE": str(tmp_path / "missing")},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"bench: {tmp_path / 'missing'} does not exist: run `make controlplane` first "
        "(builds the local etcd/kube-apiserver/scheduler/controller-manager)"
    ]
    assert not (tmp_path / "b.json").exists()
