from __future__ import annotations

import json
from pathlib import Path

import pytest

from dra_driver.testing.cluster import REPO_ROOT
from dra_driver.tools.matrix.main import binaries, main, missing_binaries
from dra_driver.tools.matrix.model import CHECK_KEYS, PASS, CheckResult, MatrixRun, VersionRun
from dra_driver.tools.matrix.readme import BEGIN, END


def test_the_default_version_uses_the_default_binaries_and_others_their_own() -> None:
    assert binaries("1.36.3") == (
        REPO_ROOT / "build/bin/controlplane",
        REPO_ROOT / "build/bin/node/kubelet",
    )
    assert binaries("1.37.2") == (
        REPO_ROOT / "build/bin/k8s-1.37.2/controlplane",
        REPO_ROOT / "build/bin/k8s-1.37.2/node/kubelet",
    )


def test_a_version_not_built_says_how_to_build_it() -> None:
    assert missing_binaries("9.99.0") == (
        "build/bin/k8s-9.99.0/controlplane is missing: run `make controlplane kubelet K8S=9.99`"
    )


def test_a_bad_version_is_one_line_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--versions", "1.33"]) == 1
    assert capsys.readouterr().err.startswith("matrix: Kubernetes 1.33 is not one we build")


def test_readme_renders_the_section_from_the_results(tmp_path: Path) -> None:
    run = VersionRun(
        "1.37.2",
        results=tuple(CheckResult(key, PASS, 1.0) for key in CHECK_KEYS),
        server_version="v1.37.2",
    )
    results = tmp_path / "matrix.json"
    results.write_text(json.dumps(MatrixRun("2026-12-07 22:00:00", (run,)).to_json()))
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n{BEGIN}\nold\n{END}\n")
    assert main(["readme", "--json", str(results), "--readme", str(readme)]) == 0
    assert "Claimed (every check passed): v1.37.2." in readme.read_text()
    assert "old" not in readme.read_text()


def test_readme_without_results_says_to_run_the_matrix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["readme", "--json", str(tmp_path / "none.json"), "--readme", str(tmp_path)])
    assert code == 1
    assert "run `make matrix` first" in capsys.readouterr().err
