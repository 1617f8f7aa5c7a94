"""``make demo`` (python -m dra_driver.demo) shows the mock node's DCUs and a valid CDI spec."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from dra_driver import cdi_validate
from tests.conftest import CDI_SCHEMA_DIR


def test_demo_lists_three_dcus_and_prints_a_valid_spec(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "dra_driver.demo", "--root", str(tmp_path / "node")],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    lines = done.stdout.splitlines()
    rows = [line.split() for line in lines if line[:1].isdigit()]
    assert [(r[1], r[2], r[5], r[6]) for r in rows] == [
        ("dcu-0000-3b-00-0", "Z100", "60", "32752"),
        ("dcu-0000-5e-00-0", "Z100", "60", "32752"),
        ("dcu-0000-af-00-0", "K100_AI", "120", "65536"),
    ]
    start = lines.index("{")
    end = lines.index("}", start)
    spec_path = tmp_path / "spec.json"
    spec_path.write_text("\n".join(lines[start : end + 1]))
    assert json.loads(spec_path.read_text())["kind"] == "hygon.com/dcu"
    assert cdi_validate.validate_file(spec_path, schema_dir=CDI_SCHEMA_DIR) == []
    assert lines[-1].startswith(
        "==> the spec is valid CDI 0.5.0; a pod can ask for: hygon.com/dcu=0"
    )
