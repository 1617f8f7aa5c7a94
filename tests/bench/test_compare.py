"""``python -m bench.compare``: refuses a tree that is not dcu-dra before starting anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.compare import main


def test_a_directory_without_the_package_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main([str(tmp_path)])
    assert exited.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"python -m bench.compare: error: {tmp_path} is not a dcu-dra source tree "
        "(no dra_driver/daemon.py)"
    )
