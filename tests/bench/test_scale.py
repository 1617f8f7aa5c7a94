"""``make scale`` in a tiny configuration (2 nodes x 2 DCUs): every figure is there and sound.

The run gets its own control plane, started with an audit log (the session's has none, and
the run's nodes must be the only ones the scheduler may pick). Timings are not judged
(machines are noisy), only their presence, their consistency and the correctness checks.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.scale import Settings, run_scale
from bench.scale_report import render_text
from bench.scale_workload import mixed_plan, whole_plan
from dra_driver.testing.cluster import ControlPlane

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TINY = Settings(nodes=2, dcus=2, wave=5, idle_s=3.0, after_restart_s=2.0)


def test_tiny_scale_run_reports_every_figure_and_finds_nothing_wrong(
    audited_plane: ControlPlane, short_sock_dir: Path
) -> None:
    progress: list[str] = []
    results = run_scale(audited_plane, short_sock_dir, TINY, progress=progress.append)

    # Every pod of both plans was placed and ran; nothing broke and nothing stayed prepared.
    assert results["mixed_pods"] == results["mixed_placed"] == len(mixed_plan(TINY.cards))
    assert results["whole_pods"] == results["whole_placed"] == len(whole_plan(TINY.cards))
    assert results["problems_at_full"] == []
    assert results["leftovers"] == []
    for prefix in ("mixed", "mixed_share", "whole"):
        key = prefix.replace("_share", "")
        suffix = "_share" if prefix.endswith("share") else ""
        assert (
            0 < results[f"{key}_running_p50_s{suffix}"] <= results[f"{key}_running_p99_s{suffix}"]
        )
        assert results[f"{key}_pods_per_s{suffix}"] > 0
    assert results["cold_publish_s"] > 0 and results["restart_publish_s"] > 0
    assert 0 < results["idle_rss_mib_p50"] <= results["idle_rss_mib_max"]
    assert results["slice_bytes_per_node_max"] > 0
    # Counted at the API server: every prepare read its claim once (the status write reuses
    # it: two GETs per prepare before; an orphan sweep GETs only a claim its cached LIST
    # missed), wrote its status once, and the daemons created their slices.
    assert 1 <= results["claim_gets_per_prepare"] < 1.5
    assert results["claim_status_writes_per_prepare"] == 1
    assert results["api_cold_start_by_verb"]["create resourceslices"] > 0
    assert "cold start: 2 daemons at once" in progress
    text = render_text(results)
    assert "2 nodes x 2 DCUs = 4 DCUs" in text and "MISSED" not in text.split("daemon RSS")[1]
