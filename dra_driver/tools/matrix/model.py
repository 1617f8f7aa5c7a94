"""The compatibility matrix as data: versions, checks, results, their JSON and the table.

Pure: no processes, no cluster. A run is one :class:`VersionRun` per Kubernetes version, each
with one :class:`CheckResult` per check in :data:`CHECKS` order; a version whose set-up failed
(binaries missing, the control plane or the node did not start) has ``error`` set and the
checks it did not reach are ``not run``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dra_driver.errors import DriverError

#: The Kubernetes releases we build and claim (as the Makefile's K8S_VERSIONS).
VERSIONS = ("1.34.4", "1.35.4", "1.36.3", "1.37.2")

#: (key, column title, what passing means), in run order.
CHECKS: tuple[tuple[str, str, str], ...] = (
    ("register", "register", "the plugin registers with the version's kubelet (DRA gRPC version)"),
    ("slice", "slice", "the API server keeps allowMultipleAllocations and requestPolicy"),
    ("shares", "4 shares", "the scheduler puts four quarter shares on one card, not a fifth"),
    ("whole", "whole card", "a whole-card claim is allocated"),
    ("prepare", "prepare", "a pod's claim is prepared (CDI spec) and unprepared when it goes"),
    ("health", "health", "the kubelet opens a health stream (its API version)"),
    ("chart", "chart", "the API server accepts every object the Helm chart renders"),
    (
        "gate",
        "gate off",
        "without DRAConsumableCapacity the plugin logs one error naming the gate and the version",
    ),
)
CHECK_KEYS = tuple(key for key, _, _ in CHECKS)

PASS = "pass"
FAIL = "fail"
NOT_RUN = "not run"
STATUSES = (PASS, FAIL, NOT_RUN)

_VERSION_RE = re.compile(r"^v?(1)\.(\d+)(?:\.(\d+))?$")


class MatrixError(DriverError):
    """A bad version, a malformed results file."""


def parse_version(text: str, known: Sequence[str] = VERSIONS) -> str:
    """The release in ``known`` that ``text`` names: "1.37", "1.37.2" or "v1.37.2"."""
    match = _VERSION_RE.match(text.strip())
    if match is None:
        raise MatrixError(
            f"{text!r} is not a Kubernetes version: give major.minor or major.minor.patch "
            f"(one of {', '.join(known)})"
        )
    wanted = text.strip().removeprefix("v")
    for version in known:
        if version == wanted or version.rsplit(".", 1)[0] == wanted:
            return version
    raise MatrixError(f"Kubernetes {wanted} is not one we build: pick one of {', '.join(known)}")


def minor_of(version: str) -> str:
    """The minor of a release: 1.37 for 1.37.2."""
    return ".".join(version.split(".")[:2])


@dataclass(frozen=True)
class CheckResult:
    """One check on one version."""

    check: str
    status: str
    seconds: float = 0.0
    detail: str = ""

    def __post_init__(self) -> None:
        if self.check not in CHECK_KEYS:
            raise MatrixError(f"unknown check {self.check!r}: the checks are {CHECK_KEYS}")
        if self.status not in STATUSES:
            raise MatrixError(
                f"check {self.check}: status {self.status!r} is not one of {STATUSES}"
            )

    @property
    def passed(self) -> bool:
        """Whether the check passed."""
        return self.status == PASS


@dataclass(frozen=True)
class VersionRun:
    """Every check on one version, and what the version reported of itself."""

    version: str
    results: tuple[CheckResult, ...] = ()
    #: What went wrong before or outside the checks (None: nothing).
    error: str | None = None
    #: The API server's /version gitVersion, e.g. "v1.37.2".
    server_version: str = ""
    #: The feature gates the control plane and kubelet ran with.
    feature_gates: tuple[str, ...] = ()
    #: Seconds for the control plane and node to start.
    setup_s: float = 0.0

    def result(self, check: str) -> CheckResult:
        """The result of ``check``, ``not run`` when the run did not get to it."""
        for result in self.results:
            if result.check == check:
                return result
        return CheckResult(check, NOT_RUN)

    @property
    def passed(self) -> bool:
        """Every check passed and nothing else failed."""
        return self.error is None and all(self.result(key).passed for key in CHECK_KEYS)


@dataclass(frozen=True)
class MatrixRun:
    """One ``make matrix`` run."""

    started: str  # UTC, ISO 8601 to the second
    runs: tuple[VersionRun, ...] = field(default_factory=tuple)
    #: The machine's 1-minute load average at the start of each version, for the record.
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The JSON document ``build/matrix.json`` holds."""
        return {
            "started": self.started,
            "notes": list(self.notes),
            "versions": [
                {
                    "version": run.version,
                    "server_version": run.server_version,
                    "feature_gates": list(run.feature_gates),
                    "setup_s": run.setup_s,
                    "error": run.error,
                    "checks": [
                        {
                            "check": r.check,
                            "status": r.status,
                            "seconds": r.seconds,
                            "detail": r.detail,
                        }
                        for r in run.results
                    ],
                }
                for run in self.runs
            ],
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> MatrixRun:
        """Read back :meth:`to_json`; a malformed document raises :class:`MatrixError`."""
        try:
            runs = tuple(
                VersionRun(
                    version=str(v["version"]),
                    server_version=str(v.get("server_version") or ""),
                    feature_gates=tuple(v.get("feature_gates") or ()),
                    setup_s=float(v.get("setup_s") or 0.0),
                    error=v.get("error"),
                    results=tuple(
                        CheckResult(
                            check=str(c["check"]),
                            status=str(c["status"]),
                            seconds=float(c.get("seconds") or 0.0),
                            detail=str(c.get("detail") or ""),
                        )
                        for c in v.get("checks") or ()
                    ),
                )
                for v in doc["versions"]
            )
            return cls(started=str(doc["started"]), runs=runs, notes=tuple(doc.get("notes") or ()))
        except (KeyError, TypeError, ValueError) as exc:
            raise MatrixError(
                f"not a matrix results file ({type(exc).__name__}: {exc}): "
                "run `make matrix` to write one"
            ) from exc


def cell(result: CheckResult) -> str:
    """One table cell: "ok 3.1s", "FAIL 12.0s" or "-"."""
    if result.status == NOT_RUN:
        return "-"
    word = "ok" if result.passed else "FAIL"
    return f"{word} {result.seconds:.1f}s"


def render_table(runs: Sequence[VersionRun]) -> str:
    """The terminal table: one row per version, one column per check, then what failed."""
    header = ["version", *(title for _, title, _ in CHECKS), "all"]
    rows = [
        [
            run.server_version or run.version,
            *(cell(run.result(key)) for key in CHECK_KEYS),
            "ok" if run.passed else "FAIL",
        ]
        for run in runs
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for run in runs:
        if run.error:
            lines.append(f"{run.version}: {run.error}")
        for key in CHECK_KEYS:
            result = run.result(key)
            if result.status == FAIL:
                lines.append(f"{run.version} {key}: {result.detail}")
    return "\n".join(lines)
