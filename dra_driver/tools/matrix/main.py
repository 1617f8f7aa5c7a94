"""``python -m dra_driver.tools.matrix``: the smoke suite on each version, the table, the files.

``run`` (the default; ``make matrix``) runs every version, or those of ``--versions``, one after
the other: that version's control plane (``build/bin/k8s-<version>/controlplane``, the default
version's ``build/bin/controlplane``) with the gates it needs (``controlplane feature-gates``),
one real node with that version's kubelet and the same gates, the checks, the teardown. It
prints the table and writes ``--json`` (``build/matrix.json``). Needs what real nodes need (root,
Linux, cgroup v1, ``make node-binaries images``) and ``make helm``.

``readme`` renders the README's compatibility section from ``--json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from dra_driver.testing.cluster import REPO_ROOT, ControlPlane, feature_gates
from dra_driver.testing.realnode import unavailable_reason
from dra_driver.testing.realnode.nodes import RealNodes
from dra_driver.tools.matrix import checks
from dra_driver.tools.matrix.model import (
    CHECK_KEYS,
    VERSIONS,
    CheckResult,
    MatrixError,
    MatrixRun,
    VersionRun,
    minor_of,
    parse_version,
    render_table,
)
from dra_driver.tools.matrix.readme import render_section, replace_section
from dra_driver.util.fsutil import write_atomically

logger = logging.getLogger(__name__)

DEFAULT_JSON = REPO_ROOT / "build" / "matrix.json"
WORK_DIR = REPO_ROOT / "build" / "matrix"
HELM = REPO_ROOT / "build" / "bin" / "helm"
README = REPO_ROOT / "README.md"
#: The version tests/controlplane/go.mod pins: its binaries are build/bin/controlplane and
#: build/bin/node/kubelet; every other version's are under build/bin/k8s-<version>/.
DEFAULT_VERSION = "1.36.3"


def binaries(version: str) -> tuple[Path, Path]:
    """The control plane and kubelet binaries of ``version``."""
    if version == DEFAULT_VERSION:
        return REPO_ROOT / "build/bin/controlplane", REPO_ROOT / "build/bin/node/kubelet"
    base = REPO_ROOT / "build" / "bin" / f"k8s-{version}"
    return base / "controlplane", base / "node" / "kubelet"


def missing_binaries(version: str) -> str | None:
    """Why ``version`` cannot run (a binary missing or of another version), or None."""
    controlplane, kubelet = binaries(version)
    make = f"make controlplane kubelet K8S={minor_of(version)}"
    for binary in (controlplane, kubelet):
        if not binary.is_file():
            return f"{binary.relative_to(REPO_ROOT)} is missing: run `{make}`"
    said = subprocess.run(
        [str(kubelet), "--version"], capture_output=True, text=True, check=False, timeout=60
    ).stdout.strip()
    if said != f"Kubernetes v{version}":
        return f"{kubelet.relative_to(REPO_ROOT)} says {said!r}, not v{version}: run `{make}`"
    return None


def run_version(version: str) -> VersionRun:
    """The whole suite on one version; never raises (a failure is in the result)."""
    reason = missing_binaries(version)
    if reason is not None:
        return VersionRun(version, error=reason)
    controlplane_binary, kubelet_binary = binaries(version)
    try:
        gates = feature_gates(controlplane_binary)
    except Exception as exc:
        return VersionRun(version, error=str(exc))
    gate_list = tuple(f"{name}={str(on).lower()}" for name, on in sorted(gates.items()))
    work = WORK_DIR / version
    shutil.rmtree(work, ignore_errors=True)
    started = time.monotonic()
    control_plane = ControlPlane(binary=controlplane_binary, data_dir=work)
    nodes: RealNodes | None = None
    results: list[CheckResult] = []
    server_version = ""
    error: str | None = None
    setup_s = 0.0
    try:
        control_plane.start()
        client = control_plane.client
        server_version = str(client.get("/version").get("gitVersion") or "")
        results.append(
            checks.run_check(
                "chart", lambda: checks.check_chart(client, HELM, server_version or f"v{version}")
            )
        )
        nodes = RealNodes(
            client,
            control_plane.kubeconfig,
            count=1,
            kubelet_binary=kubelet_binary,
            feature_gates=gates,
        )
        say(f"{version}: control plane up; starting a real node with its kubelet")
        nodes.start(timeout_s=180.0)
        setup_s = round(time.monotonic() - started, 1)
        bed = checks.Bed(client, nodes[0], HELM, server_version)
        for key, body in (
            ("slice", lambda: checks.check_slice(bed)),
            ("shares", lambda: checks.check_shares(bed)),
            ("prepare", lambda: checks.check_prepare(bed)),
            ("whole", lambda: checks.check_whole(bed)),
            ("register", lambda: checks.check_register(bed)),
            ("health", lambda: checks.check_health(bed)),
        ):
            result = checks.run_check(key, body)
            say(f"{version}: {key} {result.status} in {result.seconds:.1f} s: {result.detail}")
            results.append(result)
    except Exception as exc:
        logger.exception("%s: set-up failed", version)
        error = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
    finally:
        if nodes is not None:
            try:
                nodes.stop()
            except Exception as exc:
                logger.exception("%s: node teardown failed", version)
                error = error or f"teardown: {exc}"
        control_plane.stop()
    if error is None:
        result = checks.run_check(
            "gate", lambda: checks.check_gate_off(controlplane_binary, work / "gate-off")
        )
        say(f"{version}: gate {result.status} in {result.seconds:.1f} s: {result.detail}")
        results.append(result)
    ordered = tuple(sorted(results, key=lambda r: CHECK_KEYS.index(r.check)))
    return VersionRun(
        version,
        results=ordered,
        error=error,
        server_version=server_version,
        feature_gates=gate_list,
        setup_s=setup_s,
    )


def say(line: str) -> None:
    """One progress line."""
    print(f"matrix: {line}", flush=True)


def build_parser() -> argparse.ArgumentParser:
    """The flags."""
    parser = argparse.ArgumentParser(
        prog="python -m dra_driver.tools.matrix",
        description="Run the smoke suite on every Kubernetes version we claim (run), or render "
        "the README's compatibility section from the last run (readme).",
    )
    parser.add_argument("command", nargs="?", choices=("run", "readme"), default="run")
    parser.add_argument(
        "--versions",
        default=",".join(VERSIONS),
        help="comma-separated versions to run, e.g. 1.37 or 1.34,1.35 "
        f"(default {','.join(VERSIONS)})",
    )
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="the results file")
    parser.add_argument("--readme", type=Path, default=README, help="the README to update")
    return parser


def main(argv: list[str] | None = None) -> int:
    """0 when every version passed (run) or the README was written (readme); 1 otherwise."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "readme":
            return write_readme(args.json, args.readme)
        versions = [parse_version(v) for v in args.versions.split(",") if v.strip()]
    except MatrixError as exc:
        print(f"matrix: {exc}", file=sys.stderr)
        return 1
    reason = unavailable_reason()
    if reason is not None:
        print(f"matrix: the suite runs on real nodes: {reason}", file=sys.stderr)
        return 1
    if not HELM.is_file():
        print(f"matrix: {HELM} is missing: run `make helm`", file=sys.stderr)
        return 1
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        filename=WORK_DIR / "matrix.log",
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    runs = []
    notes = []
    for version in versions:
        load = os.getloadavg()[0]
        notes.append(f"{version}: load average {load:.2f} at start ({os.cpu_count()} CPUs)")
        say(f"{version}: starting (load average {load:.2f})")
        t = time.monotonic()
        run = run_version(version)
        say(f"{version}: {'passed' if run.passed else 'FAILED'} in {time.monotonic() - t:.0f} s")
        runs.append(run)
    matrix = MatrixRun(started=started, runs=tuple(runs), notes=tuple(notes))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(args.json, (json.dumps(matrix.to_json(), indent=2) + "\n").encode())
    print(render_table(matrix.runs))
    say(f"results in {args.json}; `python -m dra_driver.tools.matrix readme` updates the README")
    return 0 if all(run.passed for run in runs) else 1


def write_readme(results: Path, readme: Path) -> int:
    """Replace the README's compatibility section with one rendered from ``results``."""
    try:
        matrix = MatrixRun.from_json(json.loads(results.read_text()))
        text = replace_section(readme.read_text(), render_section(matrix))
    except FileNotFoundError as exc:
        print(f"matrix: {exc.filename} does not exist: run `make matrix` first", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"matrix: {results} is not JSON ({exc}): run `make matrix` again", file=sys.stderr)
        return 1
    except MatrixError as exc:
        print(f"matrix: {exc}", file=sys.stderr)
        return 1
    write_atomically(readme, text.encode())
    print(f"matrix: {readme} updated from {results} (run of {matrix.started} UTC)")
    return 0
