"""The OCI image archive writer: deterministic bytes, matching digests, the rootfs in the layer."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import stat
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from dra_driver.testing import oci_image
from dra_driver.testing.oci_image import ImageSpec, OciImageError, write_image_archive

SPEC = ImageSpec(
    name="registry.local/dcu-dra/test:1.0",
    entrypoint=("/bin/app", "--serve"),
    cmd=("--port", "80"),
    env=("LANG=C.UTF-8",),
)
#: A tree with every kind of entry the writer keeps: (path, kind, mode, content or link target).
TREE: list[tuple[str, str, int, str]] = [
    ("bin", "dir", 0o755, ""),
    ("bin/app", "file", 0o755, "#!/bin/sh\necho app\n"),
    ("bin/sh", "symlink", 0, "/bin/app"),
    ("bin/suid", "file", 0o4755, "setuid\n"),
    ("etc", "dir", 0o755, ""),
    ("etc/secret", "file", 0o600, "s3cret\n"),
    ("etc/dangling", "symlink", 0, "../nowhere"),
    ("srv", "dir", 0o750, ""),
    ("srv/empty", "dir", 0o700, ""),
    ("tmp", "dir", 0o1777, ""),
    ("lib", "symlink", 0, "usr/lib"),
    ("usr", "dir", 0o755, ""),
    ("usr/lib", "dir", 0o755, ""),
    ("usr/lib/data.bin", "file", 0o644, "\x00\x01binary\xff"),
]


def make_rootfs(root: Path, *, reverse: bool = False, mtime: int = 1_700_000_000) -> Path:
    """Lay TREE out under ``root``; ``reverse`` creates entries in the opposite order."""
    root.mkdir()
    entries = sorted(TREE, key=lambda e: e[0].count("/"))
    if reverse:
        entries = sorted(entries, key=lambda e: (e[0].count("/"), e[0]), reverse=True)
        entries.sort(key=lambda e: e[0].count("/"))
    for rel, kind, _, content in entries:
        path = root / rel
        if kind == "dir":
            path.mkdir(parents=True, exist_ok=True)
        elif kind == "file":
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content.encode("latin-1"))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.symlink_to(content)
    # A second name for one file: stored once, the other a hardlink entry.
    os.link(root / "bin/app", root / "usr/lib/app-link")
    for rel, kind, mode, _ in TREE:
        if kind != "symlink":
            (root / rel).chmod(mode)
    for path in [root, *root.rglob("*")]:
        os.utime(path, (mtime, mtime), follow_symlinks=False)
    return root


def read_archive(path: Path) -> dict[str, bytes]:
    """The archive's regular files by name."""
    with tarfile.open(path) as tar:
        return {
            m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.isfile()
        }


def blob(files: dict[str, bytes], digest: str) -> bytes:
    return files["blobs/sha256/" + digest.removeprefix("sha256:")]


def manifest_of(files: dict[str, bytes]) -> dict[str, Any]:
    index = json.loads(files["index.json"])
    return json.loads(blob(files, index["manifests"][0]["digest"]))  # type: ignore[no-any-return]


def layer_bytes(files: dict[str, bytes]) -> bytes:
    """The layer blob, uncompressed."""
    layer = manifest_of(files)["layers"][0]
    data = blob(files, layer["digest"])
    return gzip.decompress(data) if layer["mediaType"].endswith("+gzip") else data


@pytest.mark.parametrize("is_gzipped", [True, False], ids=["gzip", "plain"])
def test_archive_is_deterministic(tmp_path: Path, is_gzipped: bool) -> None:
    """Two trees with the same contents, built in another order at other times: same bytes."""
    first = make_rootfs(tmp_path / "a")
    second = make_rootfs(tmp_path / "b", reverse=True, mtime=1_234_567)
    out_a = write_image_archive(first, SPEC, tmp_path / "a.tar", is_gzipped=is_gzipped)
    out_b = write_image_archive(second, SPEC, tmp_path / "b.tar", is_gzipped=is_gzipped)
    again = write_image_archive(first, SPEC, tmp_path / "a.tar", is_gzipped=is_gzipped)
    assert out_a.path.read_bytes() == out_b.path.read_bytes()
    assert again.manifest == out_a.manifest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "a.tar", "b", "b.tar"]


def test_archive_entries_are_sorted_and_owned_by_root(tmp_path: Path) -> None:
    result = write_image_archive(make_rootfs(tmp_path / "root"), SPEC, tmp_path / "image.tar")
    with tarfile.open(result.path) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names[:2] == ["blobs", "blobs/sha256"]
    assert names[-2:] == ["index.json", "oci-layout"]
    assert names[2:-2] == sorted(names[2:-2])
    assert {(m.uid, m.gid, m.uname, m.gname, m.mtime) for m in members} == {(0, 0, "", "", 0)}
    assert all(not m.pax_headers for m in members)


@pytest.mark.parametrize("is_gzipped", [True, False], ids=["gzip", "plain"])
def test_descriptors_match_the_blobs(tmp_path: Path, is_gzipped: bool) -> None:
    """Every blob's name is its sha256, and each descriptor's digest and size are its blob's."""
    result = write_image_archive(
        make_rootfs(tmp_path / "root"), SPEC, tmp_path / "image.tar", is_gzipped=is_gzipped
    )
    files = read_archive(result.path)
    blobs = {name: data for name, data in files.items() if name.startswith("blobs/")}
    for name, data in blobs.items():
        assert name == "blobs/sha256/" + hashlib.sha256(data).hexdigest()
    index = json.loads(files["index.json"])
    manifest_desc = index["manifests"][0]
    manifest = manifest_of(files)
    descriptors = [manifest_desc, manifest["config"], *manifest["layers"]]
    for desc in descriptors:
        data = blob(files, desc["digest"])
        assert desc["size"] == len(data)
        assert desc["digest"] == "sha256:" + hashlib.sha256(data).hexdigest()
    assert len(blobs) == len(descriptors)  # nothing unreferenced
    assert (manifest_desc["digest"], manifest["layers"][0]["size"]) == (
        result.manifest.digest,
        result.layer.size_bytes,
    )


def test_media_types_are_the_oci_ones(tmp_path: Path) -> None:
    rootfs = make_rootfs(tmp_path / "root")
    gz = read_archive(write_image_archive(rootfs, SPEC, tmp_path / "gz.tar").path)
    plain = read_archive(
        write_image_archive(rootfs, SPEC, tmp_path / "plain.tar", is_gzipped=False).path
    )
    index = json.loads(gz["index.json"])
    manifest = manifest_of(gz)
    assert json.loads(gz["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    assert index["schemaVersion"] == manifest["schemaVersion"] == 2
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert index["manifests"][0]["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    assert manifest["layers"][0]["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
    assert manifest_of(plain)["layers"][0]["mediaType"] == "application/vnd.oci.image.layer.v1.tar"


def test_index_names_the_image_for_containerd_and_oci_tools(tmp_path: Path) -> None:
    """``ctr images import`` reads the containerd name; OCI tools select by the tag."""
    result = write_image_archive(make_rootfs(tmp_path / "root"), SPEC, tmp_path / "image.tar")
    entry = json.loads(read_archive(result.path)["index.json"])["manifests"][0]
    assert entry["annotations"] == {
        "io.containerd.image.name": "registry.local/dcu-dra/test:1.0",
        "org.opencontainers.image.ref.name": "1.0",
    }
    assert entry["platform"] == {"architecture": "amd64", "os": "linux"}


def test_config_runs_the_entrypoint_with_path_set(tmp_path: Path) -> None:
    result = write_image_archive(make_rootfs(tmp_path / "root"), SPEC, tmp_path / "image.tar")
    config = json.loads(blob(read_archive(result.path), result.config.digest))
    assert (config["architecture"], config["os"]) == ("amd64", "linux")
    assert config["config"] == {
        "Entrypoint": ["/bin/app", "--serve"],
        "Cmd": ["--port", "80"],
        "Env": [f"PATH={oci_image.DEFAULT_PATH}", "LANG=C.UTF-8"],
        "WorkingDir": "/",
    }


@pytest.mark.parametrize("is_gzipped", [True, False], ids=["gzip", "plain"])
def test_diff_id_is_the_uncompressed_layer_digest(tmp_path: Path, is_gzipped: bool) -> None:
    result = write_image_archive(
        make_rootfs(tmp_path / "root"), SPEC, tmp_path / "image.tar", is_gzipped=is_gzipped
    )
    files = read_archive(result.path)
    config = json.loads(blob(files, result.config.digest))
    expected = "sha256:" + hashlib.sha256(layer_bytes(files)).hexdigest()
    assert config["rootfs"] == {"type": "layers", "diff_ids": [expected]}
    assert result.diff_id == expected
    assert (result.layer.digest == expected) is not is_gzipped


def test_layer_holds_the_rootfs_with_modes_and_symlinks(tmp_path: Path) -> None:
    rootfs = make_rootfs(tmp_path / "root")
    result = write_image_archive(rootfs, SPEC, tmp_path / "image.tar")
    with tarfile.open(fileobj=io.BytesIO(layer_bytes(read_archive(result.path)))) as layer:
        members = {m.name: m for m in layer.getmembers()}
        contents = {
            name: layer.extractfile(m).read()  # type: ignore[union-attr]
            for name, m in members.items()
            if m.isfile()
        }
    assert sorted(members) == sorted([rel for rel, *_ in TREE] + ["usr/lib/app-link"])
    for rel, kind, mode, content in TREE:
        member = members[rel]
        if kind == "symlink":
            assert (member.issym(), member.linkname) == (True, content), rel
        else:
            assert stat.S_IMODE(member.mode) == mode, rel
            assert member.isdir() == (kind == "dir"), rel
        if kind == "file":
            assert contents[rel] == content.encode("latin-1"), rel
    # The file with two names is stored under its first path in entry order (bin/ sorts first).
    link = members["usr/lib/app-link"]
    assert (link.islnk(), link.linkname) == (True, "bin/app")
    assert {(m.uid, m.gid, m.mtime) for m in members.values()} == {(0, 0, 0)}
    assert all(not m.pax_headers for m in members.values())


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("registry.local/dcu-dra/pause", r"^image name .* has no tag: write it as REPOSITORY:TAG"),
        ("localhost:5000/pause", r"^image name .* has no tag"),
        ("pause@sha256:" + "0" * 64, r"^image name .* has no tag"),
        ("pause:", r"^image name 'pause:' has an empty tag$"),
    ],
    ids=["no-tag", "port-not-tag", "digest", "empty-tag"],
)
def test_image_name_needs_a_tag(tmp_path: Path, name: str, message: str) -> None:
    rootfs = make_rootfs(tmp_path / "root")
    with pytest.raises(OciImageError, match=message):
        write_image_archive(rootfs, ImageSpec(name=name), tmp_path / "image.tar")
    assert not (tmp_path / "image.tar").exists()


def test_special_files_are_rejected_and_nothing_is_written(tmp_path: Path) -> None:
    rootfs = make_rootfs(tmp_path / "root")
    os.mkfifo(rootfs / "srv/fifo")
    with pytest.raises(OciImageError, match=r"srv/fifo: not a regular file, directory or symlink"):
        write_image_archive(rootfs, SPEC, tmp_path / "image.tar")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["root"]


def test_cli_writes_the_archive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rootfs = make_rootfs(tmp_path / "root")
    out = tmp_path / "cli.tar"
    argv = ["--rootfs", str(rootfs), "--name", SPEC.name]
    argv += ["--entrypoint", '["/bin/app", "--serve"]', "--cmd", '["--port", "80"]']
    argv += ["--env", "LANG=C.UTF-8", "--out", str(out)]
    assert oci_image.main(argv) == 0
    assert (
        out.read_bytes()
        == write_image_archive(rootfs, SPEC, tmp_path / "api.tar").path.read_bytes()
    )
    assert capsys.readouterr().out.startswith(f"==> {out}: {SPEC.name} (sha256:")


@pytest.mark.parametrize(
    ("value", "expected"),
    [("/pause", ("/pause",)), ('["/bin/sh", "-c", "sleep 1"]', ("/bin/sh", "-c", "sleep 1"))],
    ids=["one-word", "json-array"],
)
def test_cli_entrypoint_is_a_word_or_a_json_array(
    tmp_path: Path, value: str, expected: tuple[str, ...]
) -> None:
    out = tmp_path / "image.tar"
    rootfs = make_rootfs(tmp_path / "root")
    assert (
        oci_image.main(
            ["--rootfs", str(rootfs), "--name", "a/b:1", "--entrypoint", value, "--out", str(out)]
        )
        == 0
    )
    files = read_archive(out)
    config = json.loads(blob(files, manifest_of(files)["config"]["digest"]))
    assert config["config"]["Entrypoint"] == list(expected)


@pytest.mark.parametrize("value", ['["/bin/sh", 1]', "[not json"], ids=["not-strings", "bad-json"])
def test_cli_rejects_a_bad_entrypoint(tmp_path: Path, value: str) -> None:
    with pytest.raises(SystemExit) as exited:
        oci_image.main(
            ["--rootfs", str(tmp_path), "--name", "a/b:1", "--entrypoint", value, "--out", "x"]
        )
    assert exited.value.code == 2


def test_cli_reports_errors_in_one_line(tmp_path: Path) -> None:
    """Once end to end, as make images runs it: a bad name is one line and exit code 1."""
    rootfs = make_rootfs(tmp_path / "root")
    run = subprocess.run(
        [
            *(sys.executable, "-m", "dra_driver.testing.oci_image", "--rootfs", str(rootfs)),
            *("--name", "untagged", "--out", str(tmp_path / "x.tar")),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (run.returncode, run.stdout) == (1, "")
    assert run.stderr.startswith("oci_image: error: image name 'untagged' has no tag")
    assert run.stderr.count("\n") == 1
