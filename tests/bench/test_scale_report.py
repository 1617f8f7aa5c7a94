"""The scale run's table: goals judged from the results, nothing invented."""

from __future__ import annotations

from typing import Any

from bench.scale_report import render_markdown, render_text, rows, share_throughput_ratio

RESULTS: dict[str, Any] = {
    "nodes": 2,
    "dcus_per_node": 2,
    "dcus": 4,
    "machine": "2 x CPU",
    "cold_publish_s": 12.0,
    "restart_publish_s": 40.0,
    "api_idle_per_node_minute_no_watch": 0.5,
    "api_idle_per_node_minute": 0.6,
    "api_restart_all_429": 3,
    "claim_status_writes_per_prepare": 1.0,
    "mixed_pods_per_s": 10.0,
    "whole_pods_per_s": 25.0,
    "problems_at_full": [],
    "leftovers": ["node n1: claim x still in the checkpoint"],
    "api_idle_by_verb": {"get resourceclaims": 0.5},
}


def verdicts() -> dict[str, bool | None]:
    return {row.figure: row.met for row in rows(RESULTS)}


def test_each_goal_is_judged_from_its_figure() -> None:
    met = verdicts()
    assert met["DCUs published from cold start"] is True
    assert met["daemon API requests / node / min, idle (watch opens left out)"] is True
    assert met["429 answers after the mass restart (any client)"] is False
    assert met["claim status writes per prepare"] is True
    assert met["mixed pods/s vs. the whole-card baseline"] is False
    assert met["CU masks disjoint, capacity within totals, at full"] is True
    assert met["nothing prepared after the pods are gone"] is False


def test_a_missing_figure_is_a_dash_and_not_judged() -> None:
    table = {row.figure: row for row in rows({})}
    row = table["DCUs published from cold start"]
    assert (row.value, row.met) == ("-", None)
    assert table["nothing prepared after the pods are gone"].met is None
    assert share_throughput_ratio({"mixed_pods_per_s": 1.0, "whole_pods_per_s": 0}) is None


def test_the_ratio_is_mixed_over_baseline() -> None:
    assert share_throughput_ratio(RESULTS) == 0.4


def test_both_renderings_carry_every_row_and_the_verbs() -> None:
    text, markdown = render_text(RESULTS), render_markdown(RESULTS)
    for row in rows(RESULTS):
        assert row.figure.strip() in text and row.figure.strip() in markdown
    assert "12.0 s  (goal <= 30 s: met)" in text
    assert "| 40 % | >= 50 % (MISSED) |" in markdown
    assert "requests / node / min idle: get resourceclaims 0.50" in text
