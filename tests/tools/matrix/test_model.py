from __future__ import annotations

import pytest

from dra_driver.tools.matrix.model import (
    CHECK_KEYS,
    FAIL,
    NOT_RUN,
    PASS,
    CheckResult,
    MatrixError,
    MatrixRun,
    VersionRun,
    cell,
    minor_of,
    parse_version,
    render_table,
)


def all_passed(version: str, seconds: float = 1.0) -> VersionRun:
    return VersionRun(
        version,
        results=tuple(CheckResult(key, PASS, seconds) for key in CHECK_KEYS),
        server_version=f"v{version}",
        feature_gates=("DRAConsumableCapacity=true",),
    )


@pytest.mark.parametrize(
    ("text", "version"),
    [("1.37", "1.37.2"), ("1.37.2", "1.37.2"), ("v1.34.4", "1.34.4"), (" 1.35 ", "1.35.4")],
)
def test_a_minor_or_a_release_names_the_pinned_release(text: str, version: str) -> None:
    assert parse_version(text) == version


def test_a_version_we_do_not_build_is_refused_with_the_ones_we_do() -> None:
    with pytest.raises(MatrixError, match=r"1\.33 is not one we build: pick one of 1\.34\.4"):
        parse_version("1.33")
    with pytest.raises(MatrixError, match="is not a Kubernetes version"):
        parse_version("latest")
    with pytest.raises(MatrixError, match="not one we build"):
        parse_version("1.37.1")


def test_minor_of() -> None:
    assert minor_of("1.37.2") == "1.37"


def test_an_unknown_check_or_status_is_refused() -> None:
    with pytest.raises(MatrixError, match="unknown check 'speed'"):
        CheckResult("speed", PASS)
    with pytest.raises(MatrixError, match="status 'ok' is not one of"):
        CheckResult("slice", "ok")


def test_a_check_the_run_did_not_reach_is_not_run_and_the_version_did_not_pass() -> None:
    run = VersionRun("1.34.4", results=(CheckResult("chart", PASS, 2.0),), error="node failed")
    assert run.result("health").status == NOT_RUN
    assert not run.passed
    assert all_passed("1.36.3").passed


def test_one_failed_check_fails_the_version() -> None:
    results = list(all_passed("1.35.4").results)
    results[2] = CheckResult(results[2].check, FAIL, 3.0, "no")
    assert not VersionRun("1.35.4", results=tuple(results)).passed


def test_the_json_reads_back_as_written() -> None:
    failed = VersionRun(
        "1.34.4",
        results=(
            CheckResult("chart", PASS, 2.5, "9 objects"),
            CheckResult("slice", FAIL, 1.0, "x"),
        ),
        error="boom",
        server_version="v1.34.4",
        feature_gates=("A=true", "B=true"),
        setup_s=41.5,
    )
    run = MatrixRun("2026-12-07 22:00:00", (failed, all_passed("1.37.2")), ("load 1.0",))
    assert MatrixRun.from_json(run.to_json()) == run


def test_a_malformed_results_file_says_how_to_get_a_good_one() -> None:
    with pytest.raises(MatrixError, match="run `make matrix`"):
        MatrixRun.from_json({"versions": [{"checks": []}]})


def test_cells_show_the_outcome_and_the_time() -> None:
    assert cell(CheckResult("slice", PASS, 3.14)) == "ok 3.1s"
    assert cell(CheckResult("slice", FAIL, 12)) == "FAIL 12.0s"
    assert cell(CheckResult("slice", NOT_RUN)) == "-"


def test_the_table_has_a_row_per_version_and_names_what_failed() -> None:
    broken = VersionRun(
        "1.34.4", results=(CheckResult("slice", FAIL, 1.0, "device x lost requestPolicy"),)
    )
    table = render_table([all_passed("1.37.2", 2.0), broken]).splitlines()
    assert table[0].split() == [
        "version", "register", "slice", "4", "shares", "whole", "card",
        "prepare", "health", "chart", "gate", "off", "all",
    ]  # fmt: skip
    assert set(table[1]) == {"-", " "}
    assert table[2].split() == ["v1.37.2", *["ok", "2.0s"] * len(CHECK_KEYS), "ok"]
    assert table[3].split()[:5] == ["1.34.4", "-", "FAIL", "1.0s", "-"]
    assert table[3].split()[-1] == "FAIL"
    assert table[4] == "1.34.4 slice: device x lost requestPolicy"
