"""The fake kubelet's checkpoint round-trips and refuses what it cannot read."""

from __future__ import annotations

from pathlib import Path

import pytest

from dra_driver.testing.fakekubelet.checkpoint import load_checkpoint, save_checkpoint
from dra_driver.testing.fakekubelet.model import FakeKubeletError, PreparedClaim, PreparedDevice

CLAIM = PreparedClaim(
    namespace="ns",
    name="c",
    uid="u1",
    drivers=("d.example.com",),
    devices=(
        PreparedDevice(
            driver="d.example.com",
            pool="p",
            device="dev-0",
            request_names=("r",),
            cdi_device_ids=("v/c=u1-dev-0-s",),
            share_id="s",
        ),
    ),
    pod_uids=frozenset({"pod-1", "pod-2"}),
)


def test_checkpoint_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "state" / "dra_manager_state"

    save_checkpoint(path, [CLAIM])

    assert load_checkpoint(path) == [CLAIM]
    assert [p.name for p in path.parent.iterdir()] == ["dra_manager_state"]


def test_missing_checkpoint_is_empty(tmp_path: Path) -> None:
    assert load_checkpoint(tmp_path / "absent") == []


def test_corrupt_checkpoint_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state"
    path.write_text('{"version": 1, "claims": [{"uid": "x"}]}')

    with pytest.raises(FakeKubeletError, match=r"^checkpoint .*/state: corrupt entry: "):
        load_checkpoint(path)
