"""``dcu-dra verify`` in every example pod's container, as ``kind/demo.sh`` runs it in real pods.

For each container of an example pod: the CDI device IDs the fake kubelet passed for it (what
a runtime gets) are resolved against its node's CDI spec directory by the runtime's CDI library
and laid out into a directory, the container's view (:mod:`dra_driver.testing.container`);
then the one-file ``dcu-dra.pyz`` runs ``verify --json`` there with ``python -I -S``, the
standard library alone, as the example image ``python:3.12-slim`` has it. All runs start at
once, so their times overlap.

A container sees the host's ``/sys``; the demo node's host is its mock node, so ``--sys-dir``
is the mock node's ``sys/``.

:func:`outcome_of`, :func:`summarize`, :func:`format_outcomes` and :func:`failure_message`
are pure; :func:`lay_out` writes the views and :func:`run_verify` starts the processes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dra_driver.testing.container import ContainerView, build_container_view

#: Where the runtime puts the vdev files and the device nodes, inside the container.
VDEV_DIR = "/etc/vdev/docker"
DEV_DIR = "/dev"
#: One verify takes ~0.1 s; a loaded machine may need far more, none needs this much.
VERIFY_TIMEOUT_S = 30.0
#: The verdict of a container whose checks all passed.
OK = "ok"
HEADER = ("POD", "VERIFY", "WHAT VERIFY FOUND")


@dataclass(frozen=True, slots=True, kw_only=True)
class ContainerTarget:
    """One container to verify: where its view is and how to read it."""

    label: str
    """``namespace/pod``, plus ``/container`` when the pod has several DCU containers."""
    view: ContainerView
    sys_dir: Path
    """The sysfs the container sees: its node's."""
    allow_plain_files: bool
    """Its node's device nodes are plain files (a mock node made without root)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifyOutcome:
    """What ``verify`` said about one container."""

    label: str
    verdict: str
    """``ok``, or ``failed: <check>`` naming the first failing check."""
    found: str
    """What the container got, in a few words (or why verify gave no report)."""
    problem: str | None = None
    """The first failure's message (what is wrong and what to do)."""

    @property
    def ok(self) -> bool:
        """Whether every check passed."""
        return self.verdict == OK


def lay_out(
    root: Path,
    *,
    pod: str,
    containers: Mapping[str, Sequence[str]],
    spec_dirs: Sequence[Path],
    sys_dir: Path,
    allow_plain_files: bool,
) -> list[ContainerTarget]:
    """Build the view of each container of ``pod`` that got CDI devices, under ``root``.

    ``containers`` maps container names to their CDI device IDs; containers without any get
    no DCU and are not verified. ``spec_dirs``: the node's CDI spec directories, lowest
    priority first. Raises ``ContainerViewError`` when the specs cannot serve an ID.
    """
    with_devices = {name: ids for name, ids in containers.items() if ids}
    return [
        ContainerTarget(
            label=pod if len(with_devices) == 1 else f"{pod}/{name}",
            view=build_container_view(root / pod / name, spec_dirs, ids),
            sys_dir=sys_dir,
            allow_plain_files=allow_plain_files,
        )
        for name, ids in sorted(with_devices.items())
    ]


def verify_command(pyz: Path, target: ContainerTarget, *, as_json: bool) -> list[str]:
    """``python -I -S dcu-dra.pyz verify ...`` with paths relative to the view (run in it).

    Relative paths make the report read like one from inside the container
    (``etc/vdev/docker``, ``dev/kfd``). ``-I -S``: no site-packages, no ``PYTHON*`` variables.
    A view laid out by our model (not root) has no container environment: ``--no-env``.
    """
    return [
        sys.executable,
        "-I",
        "-S",
        str(pyz),
        "verify",
        *(["--json"] if as_json else []),
        "--vdev-dir",
        VDEV_DIR.lstrip("/"),
        "--dev-dir",
        DEV_DIR.lstrip("/"),
        "--sys-dir",
        str(target.sys_dir),
        *(["--allow-plain-files"] if target.allow_plain_files else []),
        *(["--no-env"] if target.view.container is None else []),
    ]


def container_environ(target: ContainerTarget) -> dict[str, str] | None:
    """The environment the CDI library gave the container, for verify; None: ours (no view env).

    Exactly the runtime's ``process.env``, nothing inherited: a real container's variables come
    from its image and the runtime, not from the demo's shell.
    """
    return None if target.view.container is None else dict(target.view.container.env)


@dataclass(frozen=True, slots=True)
class _Finished:
    returncode: int | None
    """None: killed after the timeout."""
    stdout: str
    stderr: str


def run_verify(
    pyz: Path, targets: Sequence[ContainerTarget], *, text_of: ContainerTarget | None = None
) -> tuple[list[VerifyOutcome], str | None]:
    """Verify every target at once; also ``text_of``'s plain-text report, when given.

    Returns one outcome per target, in order, and the text report (None without ``text_of``,
    or verify's stderr when it printed no report).
    """
    runs = [(target, True) for target in targets]
    if text_of is not None:
        runs.append((text_of, False))
    processes = [
        subprocess.Popen(
            verify_command(pyz, target, as_json=as_json),
            cwd=target.view.root,
            env=container_environ(target),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for target, as_json in runs
    ]
    finished = [_finish(process) for process in processes]
    outcomes = [
        outcome_of(target.label, done.returncode, done.stdout, done.stderr)
        for target, done in zip(targets, finished[: len(targets)], strict=True)
    ]
    text = None
    if text_of is not None:
        done = finished[-1]
        text = done.stdout or done.stderr
    return outcomes, text


def _finish(process: subprocess.Popen[str]) -> _Finished:
    try:
        stdout, stderr = process.communicate(timeout=VERIFY_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
        return _Finished(None, stdout, stderr)
    return _Finished(process.returncode, stdout, stderr)


def outcome_of(label: str, returncode: int | None, stdout: str, stderr: str) -> VerifyOutcome:
    """Read one ``verify --json`` run: its verdict, first problem and what it found."""
    if returncode is None:
        return VerifyOutcome(
            label=label,
            verdict="failed: no report",
            found=f"verify did not finish in {VERIFY_TIMEOUT_S:g} s",
        )
    try:
        document = json.loads(stdout)
    except ValueError:
        last = (stderr.strip().splitlines() or ["(no output)"])[-1]
        return VerifyOutcome(
            label=label,
            verdict="failed: no report",
            found=f"verify exited with code {returncode}: {last}",
        )
    failures = [c for c in document.get("checks") or [] if c.get("status") == "fail"]
    if not failures and returncode == 0:
        return VerifyOutcome(label=label, verdict=OK, found=summarize(document))
    first = failures[0] if failures else {"check": "exit code", "message": f"{returncode}"}
    return VerifyOutcome(
        label=label,
        verdict=f"failed: {first.get('check')}",
        found=summarize(document),
        problem=str(first.get("message")),
    )


def summarize(document: Mapping[str, Any]) -> str:
    """What a ``verify --json`` report says the container got, in a few words.

    A vDCU: ``vDCU 15/60 CUs (0-14), 8188 MiB of 0000:5e:00.0`` per vdev file; a whole card:
    ``whole card 0000:3b:00.0 (60 CUs)`` per card sysfs maps (else its render nodes).
    """
    cards = {c["pciBusID"]: c for c in document.get("cards") or []}
    if document.get("mode") == "vdcu":
        shares = []
        for vdev in document.get("vdevFiles") or []:
            if not vdev.get("parsed"):
                shares.append(f"{vdev.get('file')} rejected by the parser")
                continue
            total = (cards.get(vdev["pciBusID"]) or {}).get("computeUnits")
            cus = f"{vdev['computeUnits']}" + (f"/{total}" if total else "")
            shares.append(
                f"vDCU {cus} CUs ({vdev['cus']}), {vdev['memoryMiB']} MiB of {vdev['pciBusID']}"
            )
        return "; ".join(shares)
    if cards:
        return "; ".join(
            f"whole card {bus}"
            + (f" ({card['computeUnits']} CUs)" if card.get("computeUnits") else "")
            for bus, card in cards.items()
        )
    renders = [
        Path(node["path"]).name
        for node in document.get("deviceNodes") or []
        if Path(node["path"]).name.startswith("renderD") and node.get("type") != "missing"
    ]
    return "whole card " + ", ".join(renders) if renders else "no DCU"


def format_outcomes(outcomes: Sequence[VerifyOutcome]) -> str:
    """One aligned line per container under :data:`HEADER`; a failure's problem ends its line."""
    lines = [HEADER, *((o.label, o.verdict, o.found) for o in outcomes)]
    widths = [max(len(line[i]) for line in lines) for i in range(2)]
    text = []
    for line, outcome in zip(lines, [None, *outcomes], strict=True):
        row = f"{line[0].ljust(widths[0])}  {line[1].ljust(widths[1])}  {line[2]}".rstrip()
        if outcome is not None and outcome.problem:
            row += f"; {outcome.problem}"
        text.append(row)
    return "\n".join(text) + "\n"


def failure_message(outcomes: Sequence[VerifyOutcome]) -> str | None:
    """One line naming every container verify failed in and the first problem; None if none."""
    failed = [o for o in outcomes if not o.ok]
    if not failed:
        return None
    first = failed[0]
    return (
        f"dcu-dra verify found problems in {len(failed)} of {len(outcomes)} containers: "
        f"{', '.join(o.label for o in failed)}; first, in {first.label}: "
        f"{first.verdict.removeprefix('failed: ')}: {first.problem or first.found}"
    )
