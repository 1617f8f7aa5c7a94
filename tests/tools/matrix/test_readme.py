from __future__ import annotations

import pytest

from dra_driver.tools.matrix.model import (
    CHECK_KEYS,
    FAIL,
    PASS,
    CheckResult,
    MatrixError,
    MatrixRun,
    VersionRun,
)
from dra_driver.tools.matrix.readme import BEGIN, END, render_section, replace_section


def run_of(version: str, failing: str | None = None, error: str | None = None) -> VersionRun:
    return VersionRun(
        version,
        results=tuple(
            CheckResult(
                key, FAIL if key == failing else PASS, 1.0, "DRA v1" if key == "register" else ""
            )
            for key in CHECK_KEYS
        ),
        server_version=f"v{version}",
        feature_gates=("DRAConsumableCapacity=true", "DRADeviceTaints=true"),
        error=error,
    )


MATRIX = MatrixRun(
    "2026-12-07 22:10:00",
    (
        run_of("1.34.4", error="the kubelet exited"),
        run_of("1.35.4", failing="health"),
        run_of("1.37.2"),
    ),
)


def test_only_versions_that_passed_every_check_are_claimed() -> None:
    section = render_section(MATRIX)
    assert "Claimed (every check passed): v1.37.2." in section
    assert "2026-12-07 22:10:00 (UTC)" in section


def test_each_version_has_a_row_with_each_check() -> None:
    rows = [line for line in render_section(MATRIX).splitlines() if line.startswith("| v1.")]
    assert [row.split(" | ")[0] for row in rows] == ["| v1.34.4", "| v1.35.4", "| v1.37.2"]
    assert rows[1].count("**no**") == 1
    assert "yes (DRA v1)" in rows[2]
    assert rows[2].endswith("| yes |")


def test_what_stopped_a_version_is_listed() -> None:
    assert "- v1.34.4: the kubelet exited" in render_section(MATRIX)


def test_the_section_replaces_only_what_is_between_the_markers() -> None:
    readme = f"# t\n\nbefore\n{BEGIN}\nold table\n{END}\nafter\n"
    new = replace_section(readme, f"{BEGIN}\nnew\n{END}")
    assert new == f"# t\n\nbefore\n{BEGIN}\nnew\n{END}\nafter\n"


def test_a_readme_without_the_markers_is_refused() -> None:
    with pytest.raises(MatrixError, match="exactly one"):
        replace_section("# no markers\n", f"{BEGIN}\n{END}")
