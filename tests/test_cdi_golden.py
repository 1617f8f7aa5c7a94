"""The reference CDI specs in cdi/ are exactly what the driver generates for the default mock node.

Regenerate them after an intended change with ``make golden``.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

from dra_driver import cdi, cdi_validate
from dra_driver.devices import discover
from dra_driver.mock import DEFAULT_CONFIG, create_mock_node
from tests.conftest import CDI_SCHEMA_DIR, REPO_ROOT

GOLDEN_DIR = REPO_ROOT / "cdi"
#: Where the reference specs pretend the mock node lives on the host (the kind demo's path).
GOLDEN_HOST_ROOT = Path("/var/lib/dcu-dra/mock")
UPDATE = os.environ.get("DCU_DRA_UPDATE_GOLDEN") == "1"
IS_ROOT = os.geteuid() == 0


def _without_device_numbers(document: Any) -> Any:
    """Drop type/major/minor: a node made without root has plain files, not char devices."""
    stripped = copy.deepcopy(document)
    edits = [stripped.get("containerEdits", {})]
    edits += [device["containerEdits"] for device in stripped["devices"]]
    for edit in edits:
        for node in edit.get("deviceNodes", []):
            for key in ("type", "major", "minor"):
                node.pop(key, None)
    return stripped


def test_node_spec_matches_the_reference_in_cdi_dir(tmp_path: Path) -> None:
    root = tmp_path / "node"
    create_mock_node(root, DEFAULT_CONFIG, device_nodes="char" if IS_ROOT else "file")
    spec = cdi.build_node_spec(discover(root), host_root=GOLDEN_HOST_ROOT)
    rendered = cdi.render_spec(spec)
    golden = GOLDEN_DIR / cdi.spec_file_name(spec.kind)
    if UPDATE:
        assert IS_ROOT, "regenerate the reference specs as root, so device numbers are included"
        golden.write_bytes(rendered)
    expected = golden.read_bytes()
    if IS_ROOT:
        assert rendered == expected, f"{golden} is stale: run 'make golden' and review the diff"
    else:
        assert json.loads(rendered) == _without_device_numbers(json.loads(expected))


def test_reference_specs_are_valid_cdi() -> None:
    specs = sorted(GOLDEN_DIR.glob("*.json"))
    assert specs, "cdi/ holds no reference spec"
    for path in specs:
        assert cdi_validate.validate_file(path, schema_dir=CDI_SCHEMA_DIR) == []
        assert path.stat().st_mode & 0o022 == 0, f"{path} must not be group/world writable"
