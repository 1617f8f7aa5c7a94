"""Durable writes: one file at a time, or staged, synced together and committed in order."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dra_driver.util.fsutil import (
    commit_staged,
    discard_staged,
    stage_file,
    sync_staged,
    temp_target,
    write_atomically,
)


def test_write_atomically_replaces_the_file_with_its_mode_and_leaves_no_temp(
    tmp_path: Path,
) -> None:
    path = tmp_path / "a.json"
    path.write_text("old")
    write_atomically(path, b"new", mode=0o600)
    assert path.read_bytes() == b"new"
    assert path.stat().st_mode & 0o777 == 0o600
    assert os.listdir(tmp_path) == ["a.json"]


def test_a_staged_file_is_invisible_until_committed(tmp_path: Path) -> None:
    path = tmp_path / "spec.json"
    path.write_text("old")
    staged = stage_file(path, b"new", mode=0o644)
    assert path.read_text() == "old"
    assert temp_target(staged.temp.name) == "spec.json"
    assert not staged.temp.name.endswith(".json")  # CDI runtimes skip it
    sync_staged([staged])
    commit_staged(staged)
    assert path.read_bytes() == b"new"
    assert path.stat().st_mode & 0o777 == 0o644
    assert os.listdir(tmp_path) == ["spec.json"]


def test_many_staged_files_are_synced_together_then_committed(tmp_path: Path) -> None:
    staged = [stage_file(tmp_path / f"f{n}", f"content {n}".encode()) for n in range(20)]
    sync_staged(staged)
    for file in staged:
        commit_staged(file)
    assert sorted(os.listdir(tmp_path)) == sorted(f"f{n}" for n in range(20))
    assert all((tmp_path / f"f{n}").read_text() == f"content {n}" for n in range(20))


def test_discarding_keeps_the_old_file_and_removes_the_temp(tmp_path: Path) -> None:
    path = tmp_path / "a"
    path.write_text("old")
    staged = [stage_file(path, b"new"), stage_file(tmp_path / "b", b"b")]
    sync_staged(staged[1:])
    commit_staged(staged[1])
    discard_staged(staged)  # a committed file stays
    assert sorted(os.listdir(tmp_path)) == ["a", "b"]
    assert path.read_text() == "old"


def test_a_failing_fsync_is_raised_after_every_file_was_tried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = stage_file(tmp_path / "good", b"x")
    broken = stage_file(tmp_path / "broken", b"x")
    broken_fd = os.open(broken.temp, os.O_RDONLY)  # the same file, to tell it apart
    broken_inode = os.fstat(broken_fd).st_ino
    os.close(broken_fd)
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if os.fstat(fd).st_ino == broken_inode:
            raise OSError(5, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OSError, match="Input/output error"):
        sync_staged([good, broken])
    commit_staged(good)  # the good file was synced and closed all the same
    assert (tmp_path / "good").read_bytes() == b"x"
    discard_staged([broken])
    assert os.listdir(tmp_path) == ["good"]


@pytest.mark.parametrize(
    ("name", "target"),
    [
        (".checkpoint.json.k3j_x9a1.tmp", "checkpoint.json"),
        (".vdev0.conf.abc.tmp", "vdev0.conf"),
        ("checkpoint.json", None),
        (".hidden", None),
        (".a.b.tmp.json", None),
    ],
    ids=["checkpoint", "vdev", "plain", "dot-file", "not-a-temp-suffix"],
)
def test_temp_target_names_what_a_temp_file_was_for(name: str, target: str | None) -> None:
    assert temp_target(name) == target


def test_stage_file_failure_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        stage_file(tmp_path / "missing-dir" / "a", b"x")
    assert os.listdir(tmp_path) == []
