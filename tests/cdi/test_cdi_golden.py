"""The reference CDI specs in cdi/ are exactly what the driver generates for the default mock node.

Regenerate them after an intended change with ``make golden``.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest

from dra_driver.cdi import validate as cdi_validate
from dra_driver.cdi.build import build_node_spec
from dra_driver.cdi.model import render_spec, spec_file_name
from dra_driver.node.devices import discover
from dra_driver.node.mock import DEFAULT_CONFIG, create_mock_node
from tests.conftest import CDI_SCHEMA_DIR, REPO_ROOT

GOLDEN_DIR = REPO_ROOT / "cdi"
#: Where the reference specs pretend the mock node lives on the host (the kind demo's path).
GOLDEN_HOST_ROOT = Path("/var/lib/dcu-dra/mock")
#: The reference specs describe one fixed mock node: its cards' uuids derive from this id.
GOLDEN_NODE_ID = "golden"
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
    create_mock_node(
        root, DEFAULT_CONFIG, device_nodes="char" if IS_ROOT else "file", node_id=GOLDEN_NODE_ID
    )
    spec = build_node_spec(discover(root), host_root=GOLDEN_HOST_ROOT)
    rendered = render_spec(spec)
    golden = GOLDEN_DIR / spec_file_name(spec.kind)
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


def device_numbers(edits: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """``path -> (major, minor)`` of the device nodes of one containerEdits."""
    return {n["path"]: (n["major"], n["minor"]) for n in edits.get("deviceNodes", [])}


@pytest.mark.skipif(not IS_ROOT, reason="character devices need root (mknod)")
def test_each_card_carries_its_own_device_numbers(tmp_path: Path) -> None:
    """Regression: every mock device node had /dev/null's numbers, so a card's CDI edit could
    carry another card's numbers unnoticed. Each node's numbers are what stat says of it, and no
    two nodes share numbers, in a freshly generated spec and in the reference one."""
    root = tmp_path / "node"
    create_mock_node(root, DEFAULT_CONFIG, device_nodes="char", node_id=GOLDEN_NODE_ID)
    inventory = discover(root)
    generated = json.loads(render_spec(build_node_spec(inventory)))
    golden = json.loads((GOLDEN_DIR / "hygon.com-dcu.json").read_bytes())
    for document in (generated, golden):
        by_name = {d["name"]: d["containerEdits"] for d in document["devices"]}
        seen = device_numbers(document["containerEdits"])  # /dev/kfd and /dev/mkfd
        for dcu in inventory.devices:
            own = device_numbers(by_name[str(dcu.index)])
            assert device_numbers(by_name[dcu.uuid]) == own
            assert set(own) == {f"/dev/dri/{dcu.card}", f"/dev/dri/{dcu.render}"}
            assert not set(own) & set(seen)
            seen.update(own)
        for path, numbers in seen.items():
            info = (root / path.removeprefix("/")).stat()
            assert numbers == (os.major(info.st_rdev), os.minor(info.st_rdev)), path
        assert len(set(seen.values())) == len(seen) == 2 + 2 * len(inventory.devices)
        everything = [
            numbers for edits in by_name.values() for numbers in device_numbers(edits).values()
        ]
        assert set(everything) <= set(seen.values())
