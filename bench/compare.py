"""Two versions of the daemon side by side in one run: ``python -m bench.compare OTHER_TREE``.

``make bench`` judges one version against floors; a change is judged against the code before
it. On a shared 2-core machine two separate runs differ by more than most changes do, so this
runs both daemons at once, each on its own bench node of one control plane, and alternates
between them in small blocks: a machine that gets busier moves both alike. ``OTHER_TREE`` is a
source tree of the other version (``git worktree add /tmp/before <commit>``, or ``git archive
<commit> | tar -x -C /tmp/before``); its daemon runs with ``PYTHONPATH=OTHER_TREE``, this one
with this tree's package. Both are compiled first, as installed code is.

Figures, for each version: the daemon's CPU time (user + system) per prepare+unprepare cycle
of a one-vDCU claim and of a whole-DCU claim, their p50 latencies, the p50 of 16 and 64
prepares in flight, cycles/s with 8 callers, and process start to DRA socket accepting (wall
time and the daemon's CPU time by then). The last column is this tree ÷ the other.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dra_driver
from bench import latency, throughput
from bench.node import BenchNode
from bench.startup import time_to_socket
from bench.stats import shown
from dra_driver.errors import DriverError
from dra_driver.testing.cluster import ControlPlane
from dra_driver.testing.fakekubelet import ClaimRef

#: This tree: the directory that holds the ``dra_driver`` package being benchmarked.
THIS_TREE = Path(dra_driver.__file__).resolve().parents[1]
#: Shares per DCU for the in-flight rounds (64 claims over 16 DCUs).
SHARES_PER_DCU = 4
#: Callers of the throughput blocks (the daemon's gRPC worker count).
CALLERS = 8


@dataclass(slots=True)
class Side:
    """One version of the daemon, its node and what was measured of it."""

    name: str
    tree: Path
    node: BenchNode
    shares: list[ClaimRef] = field(default_factory=list)
    wholes: list[ClaimRef] = field(default_factory=list)
    share: latency.Cycles = field(default_factory=latency.Cycles)
    whole: latency.Cycles = field(default_factory=latency.Cycles)
    flight16: list[float] = field(default_factory=list)
    flight64: list[float] = field(default_factory=list)
    cycles_per_s: list[float] = field(default_factory=list)
    socket_s: list[float] = field(default_factory=list)
    socket_cpu_s: list[float] = field(default_factory=list)


def run(other: Path, *, blocks: int, cycles: int, starts: int, work: Path) -> list[Side]:
    """Measure both versions in alternating blocks; ``[other, this]``."""
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(other / "dra_driver"), str(THIS_TREE)],
        check=True,
    )
    plane = ControlPlane(data_dir=work / "cp")
    plane.start()
    sides: list[Side] = []
    try:
        for name, tree in (("other", other), ("this", THIS_TREE)):
            node = BenchNode(plane, work / name, dcus=16)
            node.plugin.args = ["env", f"PYTHONPATH={tree}", *node.plugin.args]
            sides.append(Side(name=name, tree=tree, node=node))
        for index in range(starts):
            for side in _in_turn(sides, index):
                _start(side)
        for side in sides:
            side.node.connect()
            devices = side.node.devices
            side.shares = [side.node.claim([d]) for _ in range(SHARES_PER_DCU) for d in devices]
            side.wholes = [side.node.claim([d], whole=True) for d in devices[4:6]]
            latency.sequential(side.node, side.shares[:4], cycles=latency.WARM_UP_CYCLES)
            latency.sequential(side.node, side.wholes, cycles=latency.WARM_UP_CYCLES)
        for index in range(blocks):
            for side in _in_turn(sides, index):
                node = side.node
                side.share.extend(
                    latency.sequential(node, side.shares[:4], cycles=cycles, warm_up=0)
                )
                side.whole.extend(latency.sequential(node, side.wholes, cycles=cycles, warm_up=0))
                for size, samples in ((16, side.flight16), (64, side.flight64)):
                    samples.extend(latency.in_flight(node, side.shares[:size]).prepare_ms)
                busy = throughput.concurrent_cycles(
                    node, side.shares[:CALLERS], cycles=CALLERS * cycles * 4
                )
                side.cycles_per_s.append(busy.cycles_per_s)
    finally:
        for side in sides:
            side.node.close()
        plane.stop()
    return sides


def _in_turn(sides: Sequence[Side], index: int) -> Sequence[Side]:
    """Both sides, the first one first in even blocks and last in odd ones."""
    return sides if index % 2 == 0 else list(reversed(sides))


def _start(side: Side) -> None:
    """(Re)start the side's daemon; record when its DRA socket accepts, and its CPU by then."""
    plugin = side.node.plugin
    plugin.stop_if_started()
    side.socket_s.append(time_to_socket(plugin.start, plugin.data_dir / "dra.sock"))
    side.socket_cpu_s.append(side.node.cpu_s())  # ``env`` execs: the daemon keeps the pid


def render(sides: Sequence[Side]) -> str:
    """The figures of both sides and their ratio, one row each."""
    other, this = sides
    med = statistics.median
    rows: list[tuple[str, Callable[[Side], float], str]] = [
        ("daemon CPU per cycle, 1 vDCU claim", lambda s: s.share.cpu_ms_per_cycle, "ms"),
        ("daemon CPU per cycle, whole-DCU claim", lambda s: s.whole.cpu_ms_per_cycle, "ms"),
        ("prepare p50, 1 vDCU claim", lambda s: med(s.share.prepare_ms), "ms"),
        ("unprepare p50, 1 vDCU claim", lambda s: med(s.share.unprepare_ms), "ms"),
        ("prepare p50, whole-DCU claim", lambda s: med(s.whole.prepare_ms), "ms"),
        ("unprepare p50, whole-DCU claim", lambda s: med(s.whole.unprepare_ms), "ms"),
        ("prepare p50, 16 in flight", lambda s: med(s.flight16), "ms"),
        ("prepare p50, 64 in flight", lambda s: med(s.flight64), "ms"),
        (f"cycles/s, {CALLERS} callers, median of blocks", lambda s: med(s.cycles_per_s), "/s"),
        ("start -> DRA socket accepts, median", lambda s: med(s.socket_s), "s"),
        ("daemon CPU by then, median", lambda s: med(s.socket_cpu_s), "s"),
    ]
    width = max(len(label) for label, _, _ in rows)
    lines = [f"{'figure':{width}}  {'other':>10}  {'this':>10}  this/other"]
    for label, figure, unit in rows:
        before, after = figure(other), figure(this)
        ratio = f"{after / before:.2f}" if before else "-"
        lines.append(
            f"{label:{width}}  {shown(before, unit):>10}  {shown(after, unit):>10}  {ratio:>10}"
        )
    lines.append(f"other: {other.tree}; this: {this.tree}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Compare the daemon of another source tree with this one's; 0 when it ran."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.compare", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("other", type=Path, help="source tree of the other version")
    parser.add_argument("--blocks", type=int, default=20, help="alternating blocks (default 20)")
    parser.add_argument(
        "--cycles", type=int, default=20, help="sequential cycles of each kind per block"
    )
    parser.add_argument("--starts", type=int, default=10, help="starts of each daemon")
    args = parser.parse_args(argv)
    other = args.other.resolve()
    if not (other / "dra_driver" / "daemon.py").is_file():
        parser.error(f"{other} is not a dcu-dra source tree (no dra_driver/daemon.py)")
    work = Path(tempfile.mkdtemp(prefix="cmp-", dir="/tmp"))
    try:
        sides = run(other, blocks=args.blocks, cycles=args.cycles, starts=args.starts, work=work)
    except DriverError as exc:
        print(f"bench.compare: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(render(sides))
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
