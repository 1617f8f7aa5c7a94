"""The durable record of prepared claims: a versioned JSON file in the plugin data dir.

It holds everything about a prepared claim that cannot be derived from the claim again: the
CU masks and pipe ids chosen, the vdev files and the CDI ids handed to the kubelet. It lives
in the plugin data dir (``/var/lib/kubelet/plugins/<driver>``, on disk), never on the tmpfs
that holds CDI specs, so a reboot cannot make the driver forget a claim the kubelet still
holds.

Decoding is loose on purpose: only the driver writes this file, and an older or newer driver
version must be able to read it (unknown fields are ignored, missing optional fields take
defaults) so an upgrade or a rollback never strands prepared claims. A file that is not JSON
of the expected shape is ``CheckpointCorruptError``: we never guess at its contents, since a
wrong guess would free CUs a running container uses. Writes are atomic (temp file, fsync,
rename) with mode 0600.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from dra_driver.errors import CheckpointCorruptError, CheckpointError
from dra_driver.node.devices import DeviceName
from dra_driver.prepare.model import ClaimUID
from dra_driver.util.fsutil import (
    PRIVATE_FILE_MODE,
    commit_staged,
    discard_staged,
    fsync_directory,
    stage_file,
    sync_staged,
    write_atomically,
)

logger = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.json"
#: Version written by this code. 1: the first layout.
CHECKPOINT_VERSION = 1


class ClaimState(StrEnum):
    """Where a claim is in the two-phase prepare."""

    PREPARE_STARTED = "PrepareStarted"
    """Choices recorded, files may be partly written: rolled back at start-up."""
    PREPARE_COMPLETED = "PrepareCompleted"
    """Files written and IDs returned to the kubelet."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PreparedShare:
    """One allocation result of a prepared claim and everything chosen for it."""

    request: str
    pool: str
    device: DeviceName
    share_id: str | None
    cdi_id: str
    whole_device: bool
    """True: the full card is exposed and no vdev file exists."""
    cores: int
    memory_mib: int
    cu_mask: tuple[int, int] = (0, 0)
    """The two 64-bit mask words (CUs 0-63, 64-127); both 0 for a whole device."""
    pipe_id: int | None = None
    vdev_id: int | None = None
    """N of ``vdev<N>.conf`` in the claim's vdev dir (= device ordinal in the container)."""
    admin_access: bool = False
    counts_against_capacity: bool = True
    """False for admin access: it ignores other allocations and takes no share of the card."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimEntry:
    """A claim in the checkpoint."""

    uid: ClaimUID
    namespace: str
    name: str
    state: ClaimState
    shares: tuple[PreparedShare, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Checkpoint:
    """The whole file."""

    boot_id: str
    claims: dict[ClaimUID, ClaimEntry] = field(default_factory=dict)

    def with_claim(self, entry: ClaimEntry) -> Checkpoint:
        """Return a copy with ``entry`` added or replaced."""
        return replace(self, claims={**self.claims, entry.uid: entry})

    def without_claim(self, uid: ClaimUID) -> Checkpoint:
        """Return a copy without the claim (unchanged if absent)."""
        return replace(self, claims={k: v for k, v in self.claims.items() if k != uid})


def load(path: Path, *, boot_id: str) -> Checkpoint:
    """Read the checkpoint; a missing file is an empty checkpoint for ``boot_id``."""
    data = _read(path)
    return Checkpoint(boot_id=boot_id) if data is None else _decoded(path, data)


def save(path: Path, checkpoint: Checkpoint) -> None:
    """Write the checkpoint atomically and durably (mode 0600)."""
    _write(path, render(checkpoint))


def render(checkpoint: Checkpoint) -> bytes:
    """The file's bytes: compact JSON, keys sorted (the same checkpoint gives the same bytes).

    Compact because ``json`` encodes only without indentation in C; an indented file took
    longer to encode than the rest of a prepare's computing with a few dozen claims.
    """
    return _json(encode(checkpoint)).encode() + b"\n"


def _json(document: object) -> str:
    return json.dumps(document, sort_keys=True, separators=(",", ":"))


class CheckpointStore:
    """The checkpoint of one plugin data dir, read from disk on every ``load``, decoded once.

    Every ``load`` reads the file, so a caller always sees what is on disk now, including what
    another plugin instance wrote (rolling updates share the data dir). Decoding, which grows
    with the number of claims, is skipped when the bytes are those this store last read or
    wrote. ``load`` may run on any thread (its cache is one tuple, replaced whole); ``save``
    on one thread at a time (callers hold the serialization lock).
    """

    def __init__(self, path: Path, *, boot_id: str) -> None:
        self.path = path
        self.boot_id = boot_id
        self._cached: tuple[bytes, Checkpoint] | None = None
        self._fragments: dict[ClaimUID, tuple[ClaimEntry, str]] = {}

    def load(self) -> Checkpoint:
        """Read the checkpoint (see ``load``); raises ``CheckpointError``."""
        data = _read(self.path)
        if data is None:
            return Checkpoint(boot_id=self.boot_id)
        cached = self._cached
        if cached is not None and cached[0] == data:
            return cached[1]
        checkpoint = _decoded(self.path, data)
        self._cached = (data, checkpoint)
        return checkpoint

    def save(self, checkpoint: Checkpoint, *, sync_directory: bool = True) -> None:
        """Write the checkpoint atomically and durably (see ``save``); raise ``CheckpointError``.

        ``sync_directory=False`` skips the directory fsync (see ``fsutil.write_atomically``):
        for a write that a later durable write of the same call supersedes.
        """
        data = self._render(checkpoint)
        self._cached = None  # until the new file is in place
        try:
            staged = stage_file(self.path, data, mode=PRIVATE_FILE_MODE)
            try:
                sync_staged([staged])
                commit_staged(staged)
            except BaseException:
                discard_staged([staged])
                raise
            if sync_directory:
                fsync_directory(self.path.parent)
        except OSError as exc:
            raise CheckpointError(
                f"cannot write checkpoint {self.path}: {exc.strerror or exc}"
            ) from exc
        self._cached = (data, checkpoint)

    def _render(self, checkpoint: Checkpoint) -> bytes:
        """``render(checkpoint)``, re-encoding only the claims that changed since the last call.

        Claims are immutable and carried from one checkpoint to the next by reference, so a
        claim whose entry is the very object encoded last time has the same JSON; a prepare
        then encodes one claim, not all of them.
        """
        fragments: dict[ClaimUID, tuple[ClaimEntry, str]] = {}
        for uid, entry in sorted(checkpoint.claims.items()):
            known = self._fragments.get(uid)
            if known is None or known[0] is not entry:
                known = (entry, f"{_json(uid)}:{_json(_encode_entry(entry))}")
            fragments[uid] = known
        self._fragments = fragments
        claims = (member for _, member in fragments.values())
        # The layout of _json(encode(checkpoint)): keys sorted, no spaces.
        text = (
            f'{{"bootID":{_json(checkpoint.boot_id)},"claims":{{{",".join(claims)}}},'
            f'"version":{CHECKPOINT_VERSION}}}\n'
        )
        return text.encode()


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc.strerror}") from exc


def _decoded(path: Path, data: bytes) -> Checkpoint:
    try:
        return decode(json.loads(data.decode("utf-8")))
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointCorruptError(
            f"checkpoint {path} is corrupt ({exc}); the driver will not guess which CUs are "
            "in use. Drain the node's DCU pods, then move the file aside and restart the plugin"
        ) from exc


def _write(path: Path, data: bytes, *, sync_directory: bool = True) -> None:
    try:
        write_atomically(path, data, mode=PRIVATE_FILE_MODE, sync_directory=sync_directory)
    except OSError as exc:
        raise CheckpointError(f"cannot write checkpoint {path}: {exc.strerror or exc}") from exc


def encode(checkpoint: Checkpoint) -> dict[str, Any]:
    """Return the JSON document of a checkpoint."""
    return {
        "version": CHECKPOINT_VERSION,
        "bootID": checkpoint.boot_id,
        "claims": {uid: _encode_entry(entry) for uid, entry in sorted(checkpoint.claims.items())},
    }


def _encode_entry(entry: ClaimEntry) -> dict[str, Any]:
    return {
        "namespace": entry.namespace,
        "name": entry.name,
        "state": entry.state.value,
        "shares": [_encode_share(s) for s in entry.shares],
    }


def _encode_share(share: PreparedShare) -> dict[str, Any]:
    return {
        "request": share.request,
        "pool": share.pool,
        "device": share.device,
        "shareID": share.share_id,
        "cdiID": share.cdi_id,
        "wholeDevice": share.whole_device,
        "cores": share.cores,
        "memoryMiB": share.memory_mib,
        "cuMask": [f"0x{w:016x}" for w in share.cu_mask],
        "pipeID": share.pipe_id,
        "vdevID": share.vdev_id,
        "adminAccess": share.admin_access,
        "countsAgainstCapacity": share.counts_against_capacity,
    }


def decode(document: Any) -> Checkpoint:
    """Build a checkpoint from its JSON document, tolerating other versions' fields.

    Raises ValueError, KeyError or TypeError when the document lacks what every version has.
    """
    if not isinstance(document, dict):
        raise TypeError("top level is not an object")
    version = document.get("version")
    if not isinstance(version, int) or version < 1:
        raise ValueError(f"unknown checkpoint version {version!r}")
    if version > CHECKPOINT_VERSION:
        logger.warning(
            "checkpoint version %d is newer than this driver's %d: reading the fields"
            " this version knows",
            version,
            CHECKPOINT_VERSION,
        )
    claims: dict[ClaimUID, ClaimEntry] = {}
    for uid, raw in dict(document.get("claims") or {}).items():
        claims[ClaimUID(str(uid))] = ClaimEntry(
            uid=ClaimUID(str(uid)),
            namespace=str(raw["namespace"]),
            name=str(raw["name"]),
            state=ClaimState(raw.get("state", ClaimState.PREPARE_COMPLETED.value)),
            shares=tuple(_decode_share(s) for s in raw.get("shares") or []),
        )
    return Checkpoint(boot_id=str(document.get("bootID", "")), claims=claims)


def _decode_share(raw: dict[str, Any]) -> PreparedShare:
    mask = raw.get("cuMask") or ["0x0", "0x0"]
    pipe = raw.get("pipeID")
    vdev = raw.get("vdevID")
    return PreparedShare(
        request=str(raw["request"]),
        pool=str(raw["pool"]),
        device=DeviceName(str(raw["device"])),
        share_id=None if raw.get("shareID") is None else str(raw["shareID"]),
        cdi_id=str(raw["cdiID"]),
        whole_device=bool(raw.get("wholeDevice", False)),
        cores=int(raw.get("cores", 0)),
        memory_mib=int(raw.get("memoryMiB", 0)),
        cu_mask=(int(str(mask[0]), 16), int(str(mask[1]), 16)),
        pipe_id=None if pipe is None else int(pipe),
        vdev_id=None if vdev is None else int(vdev),
        admin_access=bool(raw.get("adminAccess", False)),
        counts_against_capacity=bool(raw.get("countsAgainstCapacity", True)),
    )
