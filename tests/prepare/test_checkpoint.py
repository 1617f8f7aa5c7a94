"""The versioned checkpoint: round trip, tolerant decoding, fail-closed corruption."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from dra_driver.errors import CheckpointCorruptError
from dra_driver.node.devices import DeviceName
from dra_driver.prepare import checkpoint
from dra_driver.prepare.checkpoint import Checkpoint, ClaimEntry, ClaimState, PreparedShare
from dra_driver.prepare.model import ClaimUID

UID = ClaimUID("0d3c9a6e-1b2f-4c5d-8e7f-0a1b2c3d4e5f")


def sample() -> Checkpoint:
    share = PreparedShare(
        request="dcu",
        pool="node-a",
        device=DeviceName("dcu-0000-3b-00-0"),
        share_id="5b0e6a0c-6c2f-4f0e-9d57-2a1d3c4b5e6f",
        cdi_id="k8s.dcu.hygon.com/dcu=x",
        whole_device=False,
        cores=30,
        memory_mib=16384,
        cu_mask=(0x3FFFFFFF, 0),
        pipe_id=1,
        vdev_id=0,
    )
    entry = ClaimEntry(
        uid=UID, namespace="ns", name="c", state=ClaimState.PREPARE_COMPLETED, shares=(share,)
    )
    return Checkpoint(boot_id="boot-1", claims={UID: entry})


def test_round_trip_is_lossless_and_private(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.json"
    checkpoint.save(path, sample())
    assert checkpoint.load(path, boot_id="other") == sample()
    assert path.stat().st_mode & 0o777 == 0o600
    assert json.loads(path.read_text())["claims"][UID]["shares"][0]["cuMask"] == [
        "0x000000003fffffff",
        "0x0000000000000000",
    ]


def test_missing_file_is_an_empty_checkpoint(tmp_path: Path) -> None:
    assert checkpoint.load(tmp_path / "none.json", boot_id="b") == Checkpoint(boot_id="b")


def test_newer_versions_fields_are_ignored(tmp_path: Path) -> None:
    document = checkpoint.encode(sample())
    document["version"] = 7
    document["futureTopLevel"] = {"x": 1}
    document["claims"][UID]["futureField"] = True
    document["claims"][UID]["shares"][0]["futureShareField"] = "y"
    path = tmp_path / "c.json"
    path.write_text(json.dumps(document))
    assert checkpoint.load(path, boot_id="b") == sample()


def test_older_documents_without_optional_fields_get_defaults(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(
        json.dumps(
            {
                "version": 1,
                "bootID": "b",
                "claims": {
                    UID: {
                        "namespace": "ns",
                        "name": "c",
                        "shares": [
                            {
                                "request": "dcu",
                                "pool": "p",
                                "device": "dcu-0000-3b-00-0",
                                "cdiID": "k/c=x",
                            }
                        ],
                    }
                },
            }
        )
    )
    (share,) = checkpoint.load(path, boot_id="b").claims[UID].shares
    assert (share.whole_device, share.pipe_id, share.cu_mask, share.counts_against_capacity) == (
        False,
        None,
        (0, 0),
        True,
    )
    assert checkpoint.load(path, boot_id="b").claims[UID].state is ClaimState.PREPARE_COMPLETED


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "[]",
        '{"version": 0}',
        '{"version": 1, "claims": {"u": {"name": "x"}}}',
        '{"version": 1, "claims": {"u": {"namespace": "n", "name": "x", "state": "Bogus"}}}',
    ],
    ids=["not-json", "not-object", "bad-version", "missing-namespace", "unknown-state"],
)
def test_corrupt_checkpoints_fail_closed(tmp_path: Path, content: str) -> None:
    path = tmp_path / "c.json"
    path.write_text(content)
    with pytest.raises(CheckpointCorruptError, match=r"^checkpoint .* is corrupt .*will not guess"):
        checkpoint.load(path, boot_id="b")
    assert path.read_text() == content  # never rewritten or moved by a reader


def test_a_checkpoint_that_is_not_utf8_fails_closed(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_bytes(b'{"version": 1, "bootID": "\xff"}')
    with pytest.raises(CheckpointCorruptError, match=r"^checkpoint .* is corrupt "):
        checkpoint.load(path, boot_id="b")


def entry(uid: str, *, cores: int) -> ClaimEntry:
    (share,) = sample().claims[UID].shares
    return ClaimEntry(
        uid=ClaimUID(uid),
        namespace="ns",
        name=f"c-{cores}",
        state=ClaimState.PREPARE_STARTED,
        shares=(replace(share, cores=cores),),
    )


def test_store_writes_exactly_what_render_writes_as_claims_come_and_go(tmp_path: Path) -> None:
    """The store re-encodes only changed claims; the file must not tell the difference."""
    path = tmp_path / "checkpoint.json"
    store = checkpoint.CheckpointStore(path, boot_id="boot-1")
    state = sample()
    steps = [
        lambda s: s.with_claim(entry("aaaaaaaa-0000-4000-8000-000000000000", cores=1)),
        lambda s: s.with_claim(entry("00000000-0000-4000-8000-000000000000", cores=2)),
        lambda s: s.with_claim(replace(s.claims[UID], state=ClaimState.PREPARE_STARTED)),
        lambda s: s.without_claim(UID),
        lambda s: replace(s, boot_id='boot "2"'),
        lambda s: Checkpoint(boot_id=s.boot_id),
    ]
    for step in steps:
        state = step(state)
        store.save(state)
        assert path.read_bytes() == checkpoint.render(state)
        assert store.load() == state
        assert checkpoint.load(path, boot_id="other") == state


def test_store_reads_what_another_instance_wrote(tmp_path: Path) -> None:
    """Two plugin instances (a rolling update) share the file: a cached decode must not hide
    the other's write."""
    path = tmp_path / "checkpoint.json"
    ours = checkpoint.CheckpointStore(path, boot_id="boot-1")
    theirs = checkpoint.CheckpointStore(path, boot_id="boot-1")
    ours.save(sample())
    assert ours.load() == sample()
    changed = sample().with_claim(entry("aaaaaaaa-0000-4000-8000-000000000000", cores=3))
    theirs.save(changed)
    assert ours.load() == changed
    path.unlink()
    assert ours.load() == Checkpoint(boot_id="boot-1")


def test_checkpoint_file_is_compact_sorted_json_with_a_newline(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.json"
    checkpoint.save(path, sample())
    text = path.read_text()
    assert text.endswith("}\n") and text.count("\n") == 1 and ": " not in text
    assert list(json.loads(text)) == ["bootID", "claims", "version"]
