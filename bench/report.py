"""The bench's targets, the ratios to the floors, the printed table and the machine it ran on.

Results are one flat dict (the JSON ``build/bench.json``): numbers in the unit their key
names, the machine as a string, and ``target_<name>_met`` for each target. Targets are
reported, never enforced: a benchmark is a measurement, not a test.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from bench.latency import IN_FLIGHT
from bench.stats import shown

Results = dict[str, float | int | str | bool]


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """A figure and the bound the issue sets for it."""

    name: str
    key: str
    """The result the bound applies to."""
    limit: float
    at_most: bool = True
    """True: the figure must be <= limit; False: >= limit."""
    text: str
    """The target as the table shows it."""

    def is_met(self, results: Mapping[str, object]) -> bool:
        """Whether the result satisfies the bound."""
        value = results[self.key]
        if not isinstance(value, int | float):
            raise TypeError(f"result {self.key} is {value!r}, not a number")
        return value <= self.limit if self.at_most else value >= self.limit


#: Daemon CPU per prepare+unprepare cycle at a62d5d2 (before issue 15), ms: 800 cycles of each
#: kind, interleaved 4 at a time with the same cycles of the current code on one control plane
#: (2-core build machine, load 3.6-4.8, 2026-12-07). Issue 15 asks for half of it. The limits
#: are absolute, so a quieter or faster machine meets them without any halving (on a quiet
#: machine a62d5d2 itself measured 3.81 / 3.31 ms): the halving is judged against the old code
#: in the same run, with ``bench.compare`` or ``bench.reference``.
CPU_MS_PER_CYCLE_BEFORE = 6.6
CPU_MS_PER_CYCLE_WHOLE_BEFORE = 5.2

#: The issues' targets (issue 8, item 1, tightened by issue 15). Flatness compares the prepare
#: p50 with 64 live shares on the node to the p50 with only the prepared claim's own share
#: (both directions count). "In flight" compares the p50 of 16 or 64 concurrent prepares, one
#: per claim spread over 16 DCUs, with the p50 of one prepare alone.
TARGETS = (
    Target(name="prepare_p50", key="prepare_p50_floor_ratio", limit=1.5, text="<= 1.5x floor"),
    Target(name="prepare_p99", key="prepare_p99_floor_ratio", limit=3.0, text="<= 3x floor"),
    Target(name="unprepare_p50", key="unprepare_p50_floor_ratio", limit=1.5, text="<= 1.5x floor"),
    Target(name="unprepare_p99", key="unprepare_p99_floor_ratio", limit=3.0, text="<= 3x floor"),
    Target(
        name="cpu_per_cycle",
        key="cpu_ms_per_cycle",
        limit=CPU_MS_PER_CYCLE_BEFORE / 2,
        text=f"<= {CPU_MS_PER_CYCLE_BEFORE / 2:g} ms",
    ),
    Target(
        name="cpu_per_cycle_whole",
        key="cpu_ms_per_cycle_whole",
        limit=CPU_MS_PER_CYCLE_WHOLE_BEFORE / 2,
        text=f"<= {CPU_MS_PER_CYCLE_WHOLE_BEFORE / 2:g} ms",
    ),
    Target(
        name="in_flight_16",
        key="prepare_p50_single_ratio_16_in_flight",
        limit=3.0,
        text="<= 3x alone",
    ),
    Target(
        name="in_flight_64",
        key="prepare_p50_single_ratio_64_in_flight",
        limit=3.0,
        text="<= 3x alone",
    ),
    Target(name="cycles_per_s", key="cycles_per_s", limit=200, at_most=False, text=">= 200/s"),
    Target(name="start_to_socket", key="start_to_socket_s", limit=0.3, text="<= 0.3 s"),
    Target(name="start_to_slice", key="start_to_slice_s", limit=0.6, text="<= 0.6 s"),
    Target(name="rss_idle", key="rss_idle_mib", limit=50, text="<= 50 MiB"),
    Target(name="rss_growth", key="rss_growth_mib", limit=2, text="<= 2 MiB"),
    Target(
        name="prepare_flat",
        key="prepare_64_live_change",
        limit=0.20,
        text="within 20% of 1 live",
    ),
)


def judge(results: Results) -> None:
    """Add ``target_<name>_met`` for every target and ``targets_met`` ("6/7")."""
    met = 0
    for target in TARGETS:
        ok = target.is_met(results)
        results[f"target_{target.name}_met"] = ok
        met += ok
    results["targets_met"] = f"{met}/{len(TARGETS)}"


def _target(key: str) -> Target | None:
    return next((t for t in TARGETS if t.key == key), None)


@dataclass(frozen=True, slots=True, kw_only=True)
class Row:
    """One line of the table: a figure, its floor, the ratio and the target it is held to."""

    label: str
    key: str
    unit: str
    floor_key: str | None = None
    ratio_key: str | None = None
    target: Target | None = None


def _rows(results: Mapping[str, object]) -> list[Row]:
    callers = results.get("cycles_per_s_callers", "?")
    growth_cycles = results.get("rss_growth_cycles", "?")
    flat = _target("prepare_64_live_change")
    return [
        Row(
            label="floor: gRPC round trip, empty handler", key="floor_grpc_round_trip_ms", unit="ms"
        ),
        Row(label="floor: GET of a ResourceClaim", key="floor_claim_get_ms", unit="ms"),
        Row(label="floor: fsync'd atomic write, 1 KiB", key="floor_atomic_write_ms", unit="ms"),
        Row(
            label="prepare, 1 vDCU claim, p50",
            key="prepare_p50_ms",
            unit="ms",
            floor_key="prepare_floor_ms",
            ratio_key="prepare_p50_floor_ratio",
            target=_target("prepare_p50_floor_ratio"),
        ),
        Row(
            label="prepare, 1 vDCU claim, p99",
            key="prepare_p99_ms",
            unit="ms",
            floor_key="prepare_floor_ms",
            ratio_key="prepare_p99_floor_ratio",
            target=_target("prepare_p99_floor_ratio"),
        ),
        Row(
            label="unprepare, 1 vDCU claim, p50",
            key="unprepare_p50_ms",
            unit="ms",
            floor_key="unprepare_floor_ms",
            ratio_key="unprepare_p50_floor_ratio",
            target=_target("unprepare_p50_floor_ratio"),
        ),
        Row(
            label="unprepare, 1 vDCU claim, p99",
            key="unprepare_p99_ms",
            unit="ms",
            floor_key="unprepare_floor_ms",
            ratio_key="unprepare_p99_floor_ratio",
            target=_target("unprepare_p99_floor_ratio"),
        ),
        Row(
            label="daemon CPU per cycle, 1 vDCU claim",
            key="cpu_ms_per_cycle",
            unit="ms",
            target=_target("cpu_ms_per_cycle"),
        ),
        Row(
            label="prepare, whole-DCU claim, p50",
            key="prepare_p50_ms_whole",
            unit="ms",
            floor_key="prepare_floor_ms",
            ratio_key="prepare_p50_floor_ratio_whole",
        ),
        Row(
            label="prepare, whole-DCU claim, p99",
            key="prepare_p99_ms_whole",
            unit="ms",
            floor_key="prepare_floor_ms",
            ratio_key="prepare_p99_floor_ratio_whole",
        ),
        Row(
            label="unprepare, whole-DCU claim, p50",
            key="unprepare_p50_ms_whole",
            unit="ms",
            floor_key="unprepare_floor_ms",
            ratio_key="unprepare_p50_floor_ratio_whole",
        ),
        Row(
            label="daemon CPU per cycle, whole-DCU claim",
            key="cpu_ms_per_cycle_whole",
            unit="ms",
            target=_target("cpu_ms_per_cycle_whole"),
        ),
        Row(
            label="prepare, 2-DCU claim, p50",
            key="prepare_p50_ms_2dcu",
            unit="ms",
            floor_key="prepare_floor_ms",
            ratio_key="prepare_p50_floor_ratio_2dcu",
        ),
        Row(
            label="prepare, 2-DCU claim, p99",
            key="prepare_p99_ms_2dcu",
            unit="ms",
            floor_key="prepare_floor_ms",
            ratio_key="prepare_p99_floor_ratio_2dcu",
        ),
        Row(
            label="unprepare, 2-DCU claim, p50",
            key="unprepare_p50_ms_2dcu",
            unit="ms",
            floor_key="unprepare_floor_ms",
            ratio_key="unprepare_p50_floor_ratio_2dcu",
        ),
        Row(label="prepare, 1 live share on the node, p50", key="prepare_p50_ms_1_live", unit="ms"),
        Row(
            label="prepare, 64 live shares on the node, p50",
            key="prepare_p50_ms_64_live",
            unit="ms",
            floor_key="prepare_p50_ms_1_live",
            ratio_key="prepare_64_live_ratio",
            target=flat,
        ),
        *(row for size in IN_FLIGHT for row in _in_flight_rows(size)),
        Row(
            label=f"cycles/s, {callers} concurrent callers",
            key="cycles_per_s",
            unit="/s",
            floor_key="cycles_per_s_floor",
            ratio_key="cycles_per_s_floor_ratio",
            target=_target("cycles_per_s"),
        ),
        Row(
            label="cycles/s, 1 caller (sequential)",
            key="cycles_per_s_sequential",
            unit="/s",
            floor_key="cycles_per_s_floor",
            ratio_key="cycles_per_s_sequential_floor_ratio",
        ),
        Row(
            label="start -> DRA socket accepts, median",
            key="start_to_socket_s",
            unit="s",
            target=_target("start_to_socket_s"),
        ),
        Row(label="start -> DRA socket accepts, max", key="start_to_socket_max_s", unit="s"),
        Row(
            label="start -> slice visible, median",
            key="start_to_slice_s",
            unit="s",
            target=_target("start_to_slice_s"),
        ),
        Row(label="start -> slice visible, max", key="start_to_slice_max_s", unit="s"),
        Row(label="RSS idle", key="rss_idle_mib", unit="MiB", target=_target("rss_idle_mib")),
        Row(
            label=f"RSS growth over {growth_cycles} cycles",
            key="rss_growth_mib",
            unit="MiB",
            target=_target("rss_growth_mib"),
        ),
    ]


def _in_flight_rows(size: int) -> list[Row]:
    """The rows of ``size`` prepares in flight: their floors, p50 and p99 against them."""
    flight = f"{size}_in_flight"

    def against_floor(percentile: str) -> Row:
        return Row(
            label=f"prepare, {size} in flight, {percentile}",
            key=f"prepare_{percentile}_ms_{flight}",
            unit="ms",
            floor_key=f"prepare_floor_ms_{flight}",
            ratio_key=f"prepare_{percentile}_floor_ratio_{flight}",
        )

    return [
        Row(
            label=f"floor: {size} gRPC round trips at once, p50",
            key=f"floor_grpc_round_trip_ms_{flight}",
            unit="ms",
        ),
        Row(
            label=f"floor: {size} GETs at once, p50", key=f"floor_claim_get_ms_{flight}", unit="ms"
        ),
        against_floor("p50"),
        Row(
            label="  ... against 1 vDCU claim alone",
            key=f"prepare_p50_ms_{flight}",
            unit="ms",
            floor_key="prepare_p50_ms",
            ratio_key=f"prepare_p50_single_ratio_{flight}",
            target=_target(f"prepare_p50_single_ratio_{flight}"),
        ),
        Row(
            label="  ... its floor against 1 vDCU claim alone",
            key=f"prepare_floor_ms_{flight}",
            unit="ms",
            floor_key="prepare_p50_ms",
            ratio_key=f"prepare_floor_single_ratio_{flight}",
        ),
        against_floor("p99"),
    ]


def _number(value: object, unit: str) -> str:
    """A figure of the one-run table (seconds to the 10 ms), or ``-`` for a missing one."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return "-"
    return shown(value, unit, second_digits=2)


def table_rows(results: Mapping[str, object]) -> list[tuple[str, str, str, str, str, str]]:
    """(figure, value, floor, ratio, target, met) for every row of the table."""
    lines = []
    for row in _rows(results):
        floor_unit = row.unit
        ratio = results.get(row.ratio_key) if row.ratio_key else None
        met = ""
        if row.target is not None:
            met = "yes" if results.get(f"target_{row.target.name}_met") else "MISSED"
        lines.append(
            (
                row.label,
                _number(results.get(row.key), row.unit),
                _number(results.get(row.floor_key), floor_unit) if row.floor_key else "",
                f"{ratio:.2f}x" if isinstance(ratio, float) else "",
                row.target.text if row.target is not None else "",
                met,
            )
        )
    return lines


HEADER = ("figure", "value", "floor", "ratio", "target", "met")


def render_text(results: Mapping[str, object]) -> str:
    """The table with aligned columns, then the machine."""
    rows = [HEADER, *table_rows(results)]
    widths = [max(len(row[column]) for row in rows) for column in range(len(HEADER))]
    aligned = [
        "  ".join(
            cell.ljust(width) if column == 0 else cell.rjust(width)
            for column, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]
    return "\n".join([*aligned, f"machine: {results.get('machine', '?')}"])


def render_markdown(results: Mapping[str, object]) -> str:
    """The same table as Markdown (for the README)."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + " --- |" * len(HEADER)]
    lines.extend("| " + " | ".join(row) + " |" for row in table_rows(results))
    return "\n".join(lines)


# --- the machine ------------------------------------------------------------------------------


def describe_machine(data_dir: Path) -> str:
    """CPU model and count, memory, kernel, Python, and the filesystem under ``data_dir``."""
    cpu = _first_value(Path("/proc/cpuinfo"), "model name") or platform.processor() or "?"
    memory_kib = _first_value(Path("/proc/meminfo"), "MemTotal")
    memory = f"{int(memory_kib.split()[0]) / 1024 / 1024:.0f} GiB RAM" if memory_kib else "? RAM"
    return (
        f"{os.cpu_count()} x {cpu}, {memory}, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, data dir on {filesystem_of(data_dir)}"
    )


def _first_value(path: Path, key: str) -> str | None:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        name, _, value = line.partition(":")
        if name.strip() == key:
            return " ".join(value.split())
    return None


def filesystem_of(path: Path) -> str:
    """``<type> (<device>)`` of the mount that holds ``path``."""
    best: tuple[int, str] = (-1, "?")
    resolved = str(path.resolve())
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return "?"
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        device, mount_point, kind = fields[0], fields[1], fields[2]
        inside = resolved == mount_point or resolved.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) > best[0]:
            best = (len(mount_point), f"{kind} ({device})")
    return best[1]


def ratio(value: float, floor: float) -> float:
    """``value / floor``, rounded for the report."""
    return round(value / floor, 2) if floor > 0 else float("inf")
