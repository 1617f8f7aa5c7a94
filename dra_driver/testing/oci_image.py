"""OCI image archives built from a root filesystem directory, for containerd with no registry.

:func:`write_image_archive` turns a directory into a one-layer image and writes it as an OCI
image layout packed in a tar (``oci-layout``, ``index.json`` and ``blobs/sha256/*``), the form
``ctr -n k8s.io images import FILE.tar`` reads. The index's one manifest carries both names
containerd looks at: ``io.containerd.image.name`` (the full reference, which ``ctr images
import`` names the image by) and ``org.opencontainers.image.ref.name`` (the tag alone, as
containerd's own exporter writes it, and what ``umoci``/``skopeo`` select an image by).
``make images`` builds the real-node test bed's pause and test images with it.

Deterministic: the same directory (contents, modes, symlink targets, hardlinks) and the same
options always give the same bytes. Tar entries are sorted by path, every mtime is
:data:`ENTRY_MTIME`, owners are uid/gid 0 with no user or group names, and no pax header is
written unless a path or link target is too long for the ustar fields (never for times). The
gzip stream has no file name and a zero mtime; its bytes depend on the zlib build, so
another machine may compress differently while the uncompressed layer (the config's
``diff_ids``) stays the same.

What it does not model:

- more than one layer, whiteouts, or a base image: the image is exactly the directory;
- file ownership, extended attributes, file capabilities and ACLs: everything belongs to
  root and only the permission bits (with setuid/setgid/sticky) are kept;
- device nodes, FIFOs and sockets: a directory holding one is rejected (runc creates
  ``/dev`` in the container anyway);
- image signing, attestations, the Docker ``manifest.json`` of ``docker save`` archives, and
  multi-platform indexes: one ``linux`` manifest for one architecture.

Test tooling. Standard library only (so the host's ``python3`` runs it without a venv); reads
the directory, writes ``out`` through a temporary file next to it, and nothing else.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import stat
import sys
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from dra_driver.errors import DriverError

#: Media types from the OCI image spec v1.1 (``specs-go/v1/mediatype.go``).
MEDIA_TYPE_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_TYPE_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_TYPE_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_TYPE_LAYER = "application/vnd.oci.image.layer.v1.tar"
MEDIA_TYPE_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
#: The annotation containerd's importer names an image by (``images.AnnotationImageName``).
ANNOTATION_CONTAINERD_NAME = "io.containerd.image.name"
#: The OCI annotation for the image's reference within the layout: the tag, as containerd writes.
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
#: ``oci-layout``'s content: the only layout version there is.
OCI_LAYOUT = {"imageLayoutVersion": "1.0.0"}
#: Every tar entry's mtime (the epoch): a rebuild from the same directory gives the same bytes.
ENTRY_MTIME = 0
#: The config's and its history entry's ``created``: fixed, like the tar mtimes. Optional in
#: the spec, but umoci 0.4's ``stat`` dereferences the history entry's time without a check.
CREATED = "1970-01-01T00:00:00Z"
#: zlib's default level: nearly level 9's size in a fraction of its time on a 30 MB layer.
GZIP_LEVEL = 6
#: PATH for images that name none: Debian's (and containerd's own default) order.
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class OciImageError(DriverError):
    """A root filesystem or image name that cannot be made into an OCI image archive."""


@dataclass(frozen=True, slots=True)
class ImageSpec:
    """What goes into an image besides its files.

    ``name`` is the full reference (``registry.local/dcu-dra/pause:3.10``); it must carry a
    tag, which becomes ``org.opencontainers.image.ref.name``. ``env`` entries are
    ``KEY=VALUE``; a ``PATH`` is added (:data:`DEFAULT_PATH`) unless one is given.
    """

    name: str
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    working_dir: str = "/"
    architecture: str = "amd64"
    labels: tuple[tuple[str, str], ...] = field(default=())


@dataclass(frozen=True, slots=True)
class Descriptor:
    """An OCI content descriptor: a blob's media type, ``sha256:`` digest and size."""

    media_type: str
    digest: str
    size_bytes: int

    def to_json(self) -> dict[str, Any]:
        """The descriptor as the OCI JSON documents write it."""
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size_bytes}


@dataclass(frozen=True, slots=True)
class ImageArchive:
    """What :func:`write_image_archive` wrote: the manifest's descriptor and its parts."""

    path: Path
    manifest: Descriptor
    config: Descriptor
    layer: Descriptor
    #: The uncompressed layer's digest, the config's ``rootfs.diff_ids[0]``.
    diff_id: str


def image_tag(name: str) -> str:
    """The tag of a full image reference (``a.b/c/d:1.0`` → ``1.0``); rejects a missing tag."""
    last = name.rsplit("/", 1)[-1]
    if "@" in last or ":" not in last:
        raise OciImageError(
            f"image name {name!r} has no tag: write it as REPOSITORY:TAG, e.g. "
            "registry.local/dcu-dra/pause:3.10 (digest references are not supported)"
        )
    tag = last.rsplit(":", 1)[1]
    if not tag:
        raise OciImageError(f"image name {name!r} has an empty tag")
    return tag


class _Sink(Protocol):
    def write(self, data: bytes, /) -> object: ...


class _HashingWriter(io.RawIOBase):
    """A write-only file that hashes and counts what passes through to ``target``."""

    def __init__(self, target: _Sink) -> None:
        self._target = target
        self.sha256 = hashlib.sha256()
        self.size_bytes = 0

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        # tarfile asks where the stream starts; the base class would try (and fail) to seek.
        return self.size_bytes

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self._target.write(chunk)
        self.sha256.update(chunk)
        self.size_bytes += len(chunk)
        return len(chunk)

    @property
    def digest(self) -> str:
        return "sha256:" + self.sha256.hexdigest()


def _entries(rootfs: Path) -> Iterator[Path]:
    """Every path under ``rootfs`` (not itself): parents first, siblings sorted by name."""
    for child in sorted(rootfs.iterdir(), key=lambda p: p.name):
        yield child
        if child.is_dir() and not child.is_symlink():
            yield from _entries(child)


def _tar_info(path: Path, arcname: str, st: os.stat_result) -> tarfile.TarInfo:
    """A tar header for ``path`` with the fixed owner and mtime; rejects special files."""
    info = tarfile.TarInfo(arcname)
    info.mode = stat.S_IMODE(st.st_mode)
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = ENTRY_MTIME
    if stat.S_ISDIR(st.st_mode):
        info.type = tarfile.DIRTYPE
    elif stat.S_ISLNK(st.st_mode):
        info.type = tarfile.SYMTYPE
        info.linkname = os.readlink(path)
    elif stat.S_ISREG(st.st_mode):
        info.type = tarfile.REGTYPE
        info.size = st.st_size
    else:
        raise OciImageError(
            f"{path}: not a regular file, directory or symlink (mode {stat.filemode(st.st_mode)}):"
            " device nodes, FIFOs and sockets cannot go into the image; remove it from the rootfs"
        )
    return info


def write_layer_tar(rootfs: Path, out: IO[bytes] | io.RawIOBase) -> None:
    """Write ``rootfs``'s tree to ``out`` as a deterministic tar (see the module docstring).

    A file with several links inside ``rootfs`` is stored once, under its first path in
    entry order; its other paths become hardlink entries to it.
    """
    if not rootfs.is_dir():
        raise OciImageError(f"rootfs {rootfs} is not a directory")
    first_path: dict[tuple[int, int], str] = {}
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in _entries(rootfs):
            arcname = path.relative_to(rootfs).as_posix()
            st = path.lstat()
            info = _tar_info(path, arcname, st)
            if info.type == tarfile.REGTYPE and st.st_nlink > 1:
                key = (st.st_dev, st.st_ino)
                if key in first_path:
                    info.type = tarfile.LNKTYPE
                    info.linkname = first_path[key]
                    info.size = 0
                else:
                    first_path[key] = arcname
            if info.type == tarfile.REGTYPE:
                with path.open("rb") as source:
                    tar.addfile(info, source)
            else:
                tar.addfile(info)


def _json_bytes(document: object) -> bytes:
    """Canonical JSON for a blob: sorted keys, no spaces, so its digest is stable."""
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def _descriptor(media_type: str, data: bytes) -> Descriptor:
    return Descriptor(media_type, "sha256:" + hashlib.sha256(data).hexdigest(), len(data))


def image_config(spec: ImageSpec, *, diff_id: str) -> dict[str, Any]:
    """The image config document (``application/vnd.oci.image.config.v1+json``). Pure.

    Its ``created`` times are the fixed :data:`CREATED`, so it depends on nothing but its
    inputs.
    """
    env = list(spec.env)
    if not any(item.startswith("PATH=") for item in env):
        env.insert(0, f"PATH={DEFAULT_PATH}")
    config: dict[str, Any] = {"Env": env, "WorkingDir": spec.working_dir}
    if spec.entrypoint:
        config["Entrypoint"] = list(spec.entrypoint)
    if spec.cmd:
        config["Cmd"] = list(spec.cmd)
    if spec.labels:
        config["Labels"] = dict(spec.labels)
    return {
        "created": CREATED,
        "architecture": spec.architecture,
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": CREATED, "created_by": "dra_driver.testing.oci_image"}],
    }


def image_manifest(*, config: Descriptor, layer: Descriptor) -> dict[str, Any]:
    """The image manifest document for one config and one layer. Pure."""
    return {
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_MANIFEST,
        "config": config.to_json(),
        "layers": [layer.to_json()],
    }


def image_index(spec: ImageSpec, *, manifest: Descriptor) -> dict[str, Any]:
    """The layout's ``index.json``: one manifest, named for containerd and for OCI tools. Pure."""
    entry = manifest.to_json()
    entry["platform"] = {"architecture": spec.architecture, "os": "linux"}
    entry["annotations"] = {
        ANNOTATION_CONTAINERD_NAME: spec.name,
        ANNOTATION_REF_NAME: image_tag(spec.name),
    }
    return {"schemaVersion": 2, "mediaType": MEDIA_TYPE_INDEX, "manifests": [entry]}


def _archive_info(name: str, *, size: int = 0, is_dir: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mtime = ENTRY_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.DIRTYPE if is_dir else tarfile.REGTYPE
    info.mode = 0o755 if is_dir else 0o644
    info.size = size
    return info


def write_image_archive(
    rootfs: Path, spec: ImageSpec, out: Path, *, is_gzipped: bool = True
) -> ImageArchive:
    """Build a one-layer image of ``rootfs`` and write it to ``out`` as an OCI archive tar.

    Deterministic (see the module docstring) and atomic: ``out`` is replaced only once the
    whole archive is written. ``is_gzipped`` picks the layer's media type: containerd imports
    both ``tar`` and ``tar+gzip`` layers; gzip makes the archive about a third the size.
    """
    image_tag(spec.name)  # a name containerd cannot use fails before any work
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as scratch:
        layer_path = Path(scratch) / "layer"
        with layer_path.open("wb") as layer_file:
            layer_hash = _HashingWriter(layer_file)
            if is_gzipped:
                with gzip.GzipFile(
                    filename="", mode="wb", compresslevel=GZIP_LEVEL, fileobj=layer_hash, mtime=0
                ) as gz:
                    tar_hash = _HashingWriter(gz)
                    write_layer_tar(rootfs, tar_hash)
            else:
                tar_hash = layer_hash
                write_layer_tar(rootfs, tar_hash)
        diff_id = tar_hash.digest
        layer = Descriptor(
            MEDIA_TYPE_LAYER_GZIP if is_gzipped else MEDIA_TYPE_LAYER,
            layer_hash.digest,
            layer_hash.size_bytes,
        )
        config_bytes = _json_bytes(image_config(spec, diff_id=diff_id))
        config = _descriptor(MEDIA_TYPE_CONFIG, config_bytes)
        manifest_bytes = _json_bytes(image_manifest(config=config, layer=layer))
        manifest = _descriptor(MEDIA_TYPE_MANIFEST, manifest_bytes)
        index_bytes = _json_bytes(image_index(spec, manifest=manifest))

        small_blobs = {config.digest: config_bytes, manifest.digest: manifest_bytes}
        blob_names = sorted({*small_blobs, layer.digest})
        partial = Path(scratch) / "archive"
        with tarfile.open(partial, mode="w", format=tarfile.PAX_FORMAT) as archive:
            archive.addfile(_archive_info("blobs", is_dir=True))
            archive.addfile(_archive_info("blobs/sha256", is_dir=True))
            for digest in blob_names:
                name = "blobs/sha256/" + digest.removeprefix("sha256:")
                if digest in small_blobs:
                    data = small_blobs[digest]
                    archive.addfile(_archive_info(name, size=len(data)), io.BytesIO(data))
                else:
                    with layer_path.open("rb") as blob:
                        archive.addfile(_archive_info(name, size=layer.size_bytes), blob)
            archive.addfile(
                _archive_info("index.json", size=len(index_bytes)), io.BytesIO(index_bytes)
            )
            layout = _json_bytes(OCI_LAYOUT)
            archive.addfile(_archive_info("oci-layout", size=len(layout)), io.BytesIO(layout))
        partial.chmod(0o644)
        os.replace(partial, out)
    return ImageArchive(out, manifest, config, layer, diff_id)


def _command(value: str) -> tuple[str, ...]:
    """An --entrypoint/--cmd value: a JSON array of strings (a Dockerfile's exec form) or a word.

    Not argparse's ``nargs="+"``: that would read ``--serve`` in a command as an option.
    """
    if not value.startswith("["):
        return (value,)
    try:
        words = json.loads(value)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"{value!r} is not a JSON array: {exc}") from exc
    if not isinstance(words, list) or not all(isinstance(word, str) for word in words):
        raise argparse.ArgumentTypeError(f"{value!r} is not a JSON array of strings")
    return tuple(words)


def _key_value(item: str) -> tuple[str, str]:
    key, _, value = item.partition("=")
    return key, value


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dra_driver.testing.oci_image``: write one image archive, print its digest."""
    parser = argparse.ArgumentParser(
        prog="python -m dra_driver.testing.oci_image",
        description="Write a directory as a one-layer OCI image archive that "
        "`ctr -n k8s.io images import` reads.",
    )
    parser.add_argument("--rootfs", type=Path, required=True, help="The image's root directory.")
    parser.add_argument(
        "--name", required=True, help="The full image name with a tag: registry.local/x/y:1.0."
    )
    parser.add_argument(
        "--entrypoint",
        type=_command,
        default=(),
        help='The entrypoint: one word (/pause) or a JSON array (\'["/bin/app", "--serve"]\').',
    )
    parser.add_argument(
        "--cmd", type=_command, default=(), help="The default arguments (CMD), as --entrypoint."
    )
    parser.add_argument(
        "--env", action="append", default=[], help=f"KEY=VALUE, repeatable (PATH: {DEFAULT_PATH})."
    )
    parser.add_argument(
        "--label", action="append", default=[], help="KEY=VALUE image label, repeatable."
    )
    parser.add_argument(
        "--no-gzip", action="store_true", help="Store the layer uncompressed (tar, not tar+gzip)."
    )
    parser.add_argument("--out", type=Path, required=True, help="The archive to write (.tar).")
    args = parser.parse_args(argv)
    for item in (*args.env, *args.label):
        if "=" not in item:
            parser.error(f"{item!r} is not KEY=VALUE")
    spec = ImageSpec(
        name=args.name,
        entrypoint=args.entrypoint,
        cmd=args.cmd,
        env=tuple(args.env),
        labels=tuple(sorted(_key_value(item) for item in args.label)),
    )
    try:
        result = write_image_archive(args.rootfs, spec, args.out, is_gzipped=not args.no_gzip)
    except (OciImageError, OSError) as exc:
        print(f"oci_image: error: {exc}", file=sys.stderr)
        return 1
    size_mib = result.path.stat().st_size / (1 << 20)
    print(f"==> {result.path}: {spec.name} ({result.manifest.digest}, {size_mib:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
