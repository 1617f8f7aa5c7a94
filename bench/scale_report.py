"""The scale run's table: every figure with its unit and, where the issue set one, its goal.

Pure: it formats the flat results of :func:`bench.scale.run_scale` (a dict, as written to
``build/scale.json``) and judges the goals; it measures nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the table."""

    figure: str
    value: str
    goal: str = ""
    met: bool | None = None
    """None: no goal (or its figure is missing)."""


def _number(results: Mapping[str, Any], key: str) -> float | None:
    value = results.get(key)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _fmt(value: float | None, unit: str, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}{unit}"


def _goal(
    results: Mapping[str, Any],
    figure: str,
    key: str,
    unit: str,
    goal: str,
    ok: Callable[[float], bool],
    digits: int = 1,
) -> Row:
    value = _number(results, key)
    return Row(figure, _fmt(value, unit, digits), goal, None if value is None else ok(value))


def share_throughput_ratio(results: Mapping[str, Any]) -> float | None:
    """Pods/s of the mixed workload over pods/s of the whole-card baseline."""
    mixed = _number(results, "mixed_pods_per_s")
    whole = _number(results, "whole_pods_per_s")
    if mixed is None or not whole:
        return None
    return mixed / whole


def rows(results: Mapping[str, Any]) -> list[Row]:
    """The table, in the issue's order."""
    ratio = share_throughput_ratio(results)
    problems = list(results.get("problems_at_full") or [])
    leftovers = list(results.get("leftovers") or [])
    restart_429 = _number(results, "api_restart_all_429")
    table = [
        _goal(
            results,
            "DCUs published from cold start",
            "cold_publish_s",
            " s",
            "<= 30 s",
            lambda v: v <= 30,
        ),
        Row(
            "  daemon CPU from start to published, p50 / all daemons",
            _pair(results, "cold_start_cpu_s_p50", "cold_start_cpu_s_total"),
        ),
        Row("published after a mass restart", _fmt(_number(results, "restart_publish_s"), " s")),
        Row(
            "  daemon CPU from start to published, p50 / all daemons",
            _pair(results, "restart_cpu_s_p50", "restart_cpu_s_total"),
        ),
        _goal(
            results,
            "daemon API requests / node / min, idle (watch opens left out)",
            "api_idle_per_node_minute_no_watch",
            "",
            "<= 1",
            lambda v: v <= 1,
            2,
        ),
        Row(
            "  idle, watch (re)opens included",
            _fmt(_number(results, "api_idle_per_node_minute"), "", 2),
        ),
        Row(
            "  under the mixed workload (filling)",
            _fmt(_number(results, "api_mixed_fill_per_node_minute"), "", 1),
        ),
        Row(
            "  cluster full, nothing changing (no watch opens)",
            _fmt(_number(results, "api_mixed_steady_per_node_minute_no_watch"), "", 2),
        ),
        Row(
            "  while the mixed pods go",
            _fmt(_number(results, "api_mixed_drain_per_node_minute"), "", 1),
        ),
        Row(
            "  after the mass restart", _fmt(_number(results, "api_restart_per_node_minute"), "", 1)
        ),
        Row(
            "429 answers after the mass restart (any client)",
            "-" if restart_429 is None else f"{restart_429:.0f}",
            "0",
            None if restart_429 is None else restart_429 == 0,
        ),
        _goal(
            results,
            "claim status writes per prepare",
            "claim_status_writes_per_prepare",
            "",
            "<= 1",
            lambda v: v <= 1.0,
            2,
        ),
        Row(
            "claim GETs per prepare (the prepare's own and the status write's)",
            _fmt(_number(results, "claim_gets_per_prepare"), "", 2),
        ),
        Row(
            "mixed workload: pods placed / asked",
            f"{results.get('mixed_placed', '-')} / {results.get('mixed_pods', '-')}",
        ),
        Row(
            "mixed workload: pods/s placed (all)", _fmt(_number(results, "mixed_pods_per_s"), "", 1)
        ),
        Row("  share pods/s placed", _fmt(_number(results, "mixed_pods_per_s_share"), "", 1)),
        Row("  whole-card pods/s placed", _fmt(_number(results, "mixed_pods_per_s_whole"), "", 1)),
        Row(
            "  share pods: creation to Running p50 / p99",
            _pair(results, "mixed_running_p50_s_share", "mixed_running_p99_s_share"),
        ),
        Row(
            "  whole-card pods: creation to Running p50 / p99",
            _pair(results, "mixed_running_p50_s_whole", "mixed_running_p99_s_whole"),
        ),
        Row(
            "baseline, whole cards only: pods placed / asked",
            f"{results.get('whole_placed', '-')} / {results.get('whole_pods', '-')}",
        ),
        Row("  pods/s placed", _fmt(_number(results, "whole_pods_per_s"), "", 1)),
        Row(
            "  creation to Running p50 / p99",
            _pair(results, "whole_running_p50_s", "whole_running_p99_s"),
        ),
        Row(
            "mixed pods/s vs. the whole-card baseline",
            "-" if ratio is None else f"{100 * ratio:.0f} %",
            ">= 50 %",
            None if ratio is None else ratio >= 0.5,
        ),
        Row(
            "daemon RSS idle p50 / max",
            _pair(results, "idle_rss_mib_p50", "idle_rss_mib_max", " MiB", 1),
        ),
        Row(
            "daemon CPU idle p50 / max",
            _pair(results, "idle_cpu_percent_p50", "idle_cpu_percent_max", " %", 2),
        ),
        Row(
            "ResourceSlice bytes per node (JSON)",
            _fmt(_number(results, "slice_bytes_per_node_max"), " B", 0),
        ),
        Row(
            "CU masks disjoint, capacity within totals, at full",
            "yes" if not problems else f"{len(problems)} problem(s)",
            "yes",
            not problems if "problems_at_full" in results else None,
        ),
        Row(
            "nothing prepared after the pods are gone",
            "yes" if not leftovers else f"{len(leftovers)} leftover(s)",
            "yes",
            not leftovers if "leftovers" in results else None,
        ),
    ]
    return table


def _pair(
    results: Mapping[str, Any], low: str, high: str, unit: str = " s", digits: int = 2
) -> str:
    first, second = _number(results, low), _number(results, high)
    return f"{_fmt(first, unit, digits)} / {_fmt(second, unit, digits)}"


def _verdict(row: Row) -> str:
    if row.met is None:
        return ""
    return "met" if row.met else "MISSED"


def _header(results: Mapping[str, Any]) -> list[str]:
    error = results.get("error")
    return [
        *([f"THE RUN STOPPED EARLY: {error}"] if error else []),
        f"{results.get('nodes')} nodes x {results.get('dcus_per_node')} DCUs = "
        f"{results.get('dcus')} DCUs; started {results.get('started')}",
        f"machine: {results.get('machine')}",
        f"load average (1/5/15 min): start {results.get('load_at_start')}, idle "
        f"{results.get('load_idle')}, after the mixed workload {results.get('load_after_mixed')}, "
        f"at the end {results.get('load_at_end')}",
    ]


def render_text(results: Mapping[str, Any]) -> str:
    """A plain table for the terminal, then the busiest requests per verb."""
    table = rows(results)
    width = max(len(row.figure) for row in table)
    lines = [*_header(results), ""]
    for row in table:
        goal = f"  (goal {row.goal}: {_verdict(row)})" if row.goal and row.met is not None else ""
        lines.append(f"{row.figure:<{width}}  {row.value}{goal}")
    lines += _by_verb(results)
    return "\n".join(lines)


def render_markdown(results: Mapping[str, Any]) -> str:
    """The table as Markdown, for the README."""
    lines = [f"_{line}_  " for line in _header(results)] + [
        "",
        "| Figure | Value | Goal |",
        "| --- | --- | --- |",
    ]
    for row in rows(results):
        goal = f"{row.goal} ({_verdict(row)})" if row.goal and row.met is not None else row.goal
        lines.append(f"| {row.figure.strip()} | {row.value} | {goal} |")
    lines += _by_verb(results)
    return "\n".join(lines)


def _by_verb(results: Mapping[str, Any]) -> list[str]:
    lines: list[str] = []
    for window, title in (
        ("idle", "idle"),
        ("mixed_fill", "under the mixed workload"),
        ("mixed_steady", "with the cluster full and quiet"),
        ("restart", "after the mass restart"),
    ):
        by_verb = results.get(f"api_{window}_by_verb")
        if not isinstance(by_verb, Mapping) or not by_verb:
            continue
        parts = ", ".join(f"{key} {rate:.2f}" for key, rate in by_verb.items())
        lines.append(f"requests / node / min {title}: {parts}")
    return ["", *lines] if lines else []
