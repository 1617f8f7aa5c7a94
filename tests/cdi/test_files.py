"""Tests of dra_driver.cdi.files: the atomic spec writer and remove_spec."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from dra_driver.cdi.files import remove_spec, write_spec
from dra_driver.cdi.model import ContainerEdits, Device, Spec, render_spec
from dra_driver.errors import CdiError, CdiValidationError
from tests.cdi.test_model import env_device

# --- write_spec / remove_spec ------------------------------------------------------------------


@pytest.fixture
def strict_umask() -> Iterator[None]:
    """Run with umask 077 so modes that depend on the umask would show."""
    previous = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(previous)


VALID_SPEC = Spec(kind="example.com/dcu", devices=(env_device(),))
INVALID_SPEC = Spec(
    kind="example.com/dcu", devices=(Device(name="dcu0", container_edits=ContainerEdits()),)
)


@pytest.mark.usefixtures("strict_umask")
def test_write_spec_writes_0644_into_a_new_0755_directory(tmp_path: Path) -> None:
    directory = tmp_path / "run" / "cdi"
    path = write_spec(VALID_SPEC, directory, "example.com-dcu.json")
    assert path == directory / "example.com-dcu.json"
    assert path.read_bytes() == render_spec(VALID_SPEC)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert stat.S_IMODE(directory.stat().st_mode) == 0o755
    assert os.listdir(directory) == ["example.com-dcu.json"]


def test_write_spec_keeps_the_mode_of_an_existing_directory(tmp_path: Path) -> None:
    tmp_path.chmod(0o711)
    write_spec(VALID_SPEC, tmp_path, "a.json")
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o711


def test_write_spec_replaces_an_existing_file_without_leaving_temp_files(tmp_path: Path) -> None:
    write_spec(Spec(kind="example.com/dcu", devices=(env_device("old"),)), tmp_path, "a.json")
    write_spec(VALID_SPEC, tmp_path, "a.json")
    assert (tmp_path / "a.json").read_bytes() == render_spec(VALID_SPEC)
    assert os.listdir(tmp_path) == ["a.json"]


def test_write_spec_refuses_an_invalid_spec_and_changes_nothing(tmp_path: Path) -> None:
    write_spec(VALID_SPEC, tmp_path, "a.json")
    before = (tmp_path / "a.json").read_bytes()
    with pytest.raises(
        CdiValidationError,
        match=r"^CDI spec of kind 'example\.com/dcu': \$\.devices\[0\]\.containerEdits: "
        r"a device's containerEdits must not be empty",
    ):
        write_spec(INVALID_SPEC, tmp_path, "a.json")
    assert os.listdir(tmp_path) == ["a.json"]
    assert (tmp_path / "a.json").read_bytes() == before


def test_write_spec_refuses_an_invalid_spec_before_creating_the_directory(tmp_path: Path) -> None:
    with pytest.raises(CdiValidationError):
        write_spec(INVALID_SPEC, tmp_path / "cdi", "a.json")
    assert not (tmp_path / "cdi").exists()


@pytest.mark.parametrize(
    ("file_name", "message"),
    [
        ("a.yaml", r"^CDI spec file name 'a\.yaml' must end in \.json"),
        ("sub/a.json", r"^CDI spec file name 'sub/a\.json' must not contain '/'$"),
        (".json", r"^CDI spec file name '\.json' must end in \.json and not start with '\.'"),
    ],
    ids=["not-json", "slash", "hidden"],
)
def test_write_spec_refuses_a_bad_file_name(tmp_path: Path, file_name: str, message: str) -> None:
    with pytest.raises(CdiError, match=message):
        write_spec(VALID_SPEC, tmp_path, file_name)
    assert os.listdir(tmp_path) == []


def test_write_spec_failure_keeps_the_old_file_and_leaves_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_spec(VALID_SPEC, tmp_path, "a.json")
    before = (tmp_path / "a.json").read_bytes()

    def failing_replace(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    other = Spec(kind="example.com/dcu", devices=(env_device("other"),))
    with pytest.raises(CdiError, match=r"^cannot write CDI spec .*/a\.json: No space left"):
        write_spec(other, tmp_path, "a.json")
    assert os.listdir(tmp_path) == ["a.json"]
    assert (tmp_path / "a.json").read_bytes() == before


def test_remove_spec_is_idempotent(tmp_path: Path) -> None:
    write_spec(VALID_SPEC, tmp_path, "a.json")
    assert remove_spec(tmp_path, "a.json") is True
    assert remove_spec(tmp_path, "a.json") is False
    assert remove_spec(tmp_path / "missing-dir", "a.json") is False
    assert os.listdir(tmp_path) == []
