"""dra_driver/testing/core.py: the real core prepares what the helpers describe."""

from __future__ import annotations

from pathlib import Path

import pytest

from dra_driver.errors import ClaimError
from dra_driver.testing.core import allocated_share, cdi_ids, local_plugin, prepare_claim


def test_a_share_and_a_whole_card_are_prepared_with_their_files(
    mock_root: Path, tmp_path: Path
) -> None:
    plugin = local_plugin(mock_root, tmp_path)
    share = allocated_share("dcu-0000-3b-00-0", cores=15, memory_mib=8188)
    whole = allocated_share("dcu-0000-af-00-0", cores=None, memory_mib=None)
    assert (share.share_id is not None, whole.share_id, whole.vdevices) == (True, None, None)
    claim, result = prepare_claim(plugin, share, whole)
    ids = cdi_ids(result)
    assert len(ids) == 2 and all(i.startswith("k8s.dcu.hygon.com/dcu=") for i in ids)
    assert [p.name for p in plugin.vdev_dir(claim.ref.uid).iterdir()] == ["vdev0.conf"]
    assert (tmp_path / "cdi" / f"k8s.dcu.hygon.com-dcu_{claim.ref.uid}.json").is_file()


def test_a_failed_prepare_raises_the_cores_error(mock_root: Path, tmp_path: Path) -> None:
    plugin = local_plugin(mock_root, tmp_path)
    with pytest.raises(ClaimError, match="more than the DCU's 60 CUs"):
        prepare_claim(plugin, allocated_share("dcu-0000-3b-00-0", cores=61, memory_mib=1))
