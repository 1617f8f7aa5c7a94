"""Measure the node daemon's start-up cost: process start -> ResourceSlice visible, and RSS.

Runs the real control plane (build/bin/controlplane), registers a Node, then starts
``dcu-dra kubelet-plugin`` on a mock DCU node several times. For each run it records the
time from spawning the process until the node's slice is visible through the API server
(polled every 10 ms, so the figure includes at most 10 ms of polling slack), and the
plugin's resident memory once the slice is published. Prints a table and writes JSON.

Usage: .venv/bin/python bench/start_to_slice.py [--runs N] [--json build/bench-start.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dra_driver.kube import NotFound, paths  # noqa: E402
from dra_driver.mock import create_mock_node  # noqa: E402
from dra_driver.testing.cluster import ControlPlane  # noqa: E402

DCU_DRA = str(Path(sys.executable).parent / "dcu-dra")


def rss_mib(pid: int) -> float:
    """Resident set size of a process in MiB (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def main() -> int:
    """Run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", type=Path, default=REPO / "build" / "bench-start.json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-", dir="/tmp"))
    plane = ControlPlane(data_dir=work / "cp").start()
    kube = plane.client
    node = "bench-node"
    kube.create(paths.nodes(), {"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}})
    root = work / "node"
    create_mock_node(root)
    selector = f"spec.driver=dcu.hygon.com,spec.nodeName={node}"
    times: list[float] = []
    rss: list[float] = []
    try:
        for run in range(args.runs):
            kube.delete_collection(paths.resource_slices(), field_selector=selector)
            base = work / f"run{run}"
            started = time.monotonic()
            process = subprocess.Popen(
                [
                    DCU_DRA,
                    "kubelet-plugin",
                    "--node-name",
                    node,
                    "--root",
                    str(root),
                    "--kubeconfig",
                    str(plane.kubeconfig),
                    "--registrar-dir",
                    str(base / "reg"),
                    "--plugin-data-dir",
                    str(base / "data"),
                    "--cdi-dir",
                    str(base / "cdi"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            while not kube.list(paths.resource_slices(), field_selector=selector)["items"]:
                if process.poll() is not None:
                    raise RuntimeError(f"plugin exited with {process.returncode}")
                time.sleep(0.01)
            times.append(time.monotonic() - started)
            time.sleep(0.5)  # let start-up allocations settle
            rss.append(rss_mib(process.pid))
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=15)
    finally:
        try:
            kube.delete(paths.nodes(node))
        except NotFound:
            pass
        plane.stop()
        shutil.rmtree(work, ignore_errors=True)
    result = {
        "start_to_slice_s": round(statistics.median(times), 3),
        "start_to_slice_max_s": round(max(times), 3),
        "rss_idle_mib": round(statistics.median(rss), 1),
        "runs": args.runs,
        "machine": f"{platform.machine()} {platform.processor() or ''} "
        f"{__import__('os').cpu_count()} cpus, Python {platform.python_version()}",
    }
    print(f"{'metric':<24}{'value':>10}")
    print(f"{'start -> slice (median)':<24}{result['start_to_slice_s']:>9.3f}s")
    print(f"{'start -> slice (max)':<24}{result['start_to_slice_max_s']:>9.3f}s")
    print(f"{'RSS after publish':<24}{result['rss_idle_mib']:>7.1f} MiB")
    print(f"machine: {result['machine']}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
