"""Preparing claims: the device work behind NodePrepareResources and NodeUnprepareResources.

``DcuPlugin`` implements ``driver.Plugin``. Each call runs under the data dir's
``SerializeLock`` and re-reads the checkpoint (decoding it only when its bytes changed), so no
state lives only in memory and two plugin instances (a rolling update) can share the work.

Prepare is two-phase, so a crash at any point is recoverable:

1. plan: choose every share's CUs and pipe id (``plan_claim``: pure, deterministic);
2. record the plan in the checkpoint as ``PrepareStarted``;
3. put the claim's vdev files and its CDI spec in place;
4. mark the claim ``PrepareCompleted`` and answer with its CDI ids.

At start-up (``recover``): a changed boot id drops every claim (nothing survives a reboot);
``PrepareStarted`` claims are rolled back; completed claims whose vdev files or CDI spec are
missing get them rewritten identically from the checkpoint; files of unknown claims go, and
so do temp files of writes a crash cut short.

Durability: every file is written to a temp file and renamed into place, so neither a reader
nor a restarted plugin ever sees a torn file. Only the checkpoint is fsync'd before its rename,
and only its last write of each call also fsyncs its directory, which makes the call's outcome
survive a power cut: it is the one record that cannot be derived again. The vdev files and CDI
specs are derived from it alone (``claim_files``), so they are renamed into place without an
fsync of their own: a crash of the process loses nothing the kernel already has (SIGKILL does
not drop the page cache), and a power cut reboots the node, which drops every claim and removes
every claim's files at start-up (the boot id, above), torn or not, before any call is served.
The files of step 3 are written (staged) before step 2, so step 3 only renames them. A rename
or removal a crash loses is put right by the start-up repair above (missing files of completed
claims are rewritten, files of claims the checkpoint does not hold are removed), and the
record of step 2 is superseded by the call's last write anyway. On ext4 every fsync is a
journal commit of its own (``fsutil.sync_staged``), so a prepare waits for three (step 2,
step 4 and its directory) where fsyncing the claim's files too waited for five; an unprepare
for two.

A share that takes all of a card's CUs and memory is a whole-device share: the full card is
exposed and no vdev file is written. Anything less is a vDCU confined by a vdev file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from dra_driver.cdi.files import remove_spec, stage_spec
from dra_driver.cdi.model import spec_file_name
from dra_driver.errors import ClaimError, DriverError
from dra_driver.node.devices import DeviceName, Inventory
from dra_driver.prepare import checkpoint
from dra_driver.prepare.checkpoint import Checkpoint, ClaimEntry, ClaimState
from dra_driver.prepare.claim_files import ClaimFiles
from dra_driver.prepare.model import (
    Claim,
    ClaimRef,
    ClaimUID,
    PreparedDevice,
    PrepareResult,
    is_uuid,
)
from dra_driver.prepare.plan import MIB, Planner
from dra_driver.util import faultpoints
from dra_driver.util.flock import SerializeLock
from dra_driver.util.fsutil import (
    PUBLIC_DIR_MODE,
    StagedFile,
    close_staged,
    commit_staged,
    discard_staged,
    ensure_directory,
    temp_target,
)
from dra_driver.vdcu.vdev import (
    is_vdev_file_name,
    remove_stale_vdev_files,
    stage_vdev_dir,
    vdev_file_name,
)

logger = logging.getLogger(__name__)

#: Where the kernel publishes this boot's id; a new id means the node rebooted.
BOOT_ID_FILE = Path("/proc/sys/kernel/random/boot_id")
#: Subdirectory of the plugin data dir holding one vdev directory per claim.
VDEV_SUBDIR = "vdev"


def claim_kind(driver_name: str) -> str:
    """The CDI kind of per-claim specs: ``k8s.<driver>/dcu`` (the example driver's vendor)."""
    return f"k8s.{driver_name}/dcu"


@dataclass(frozen=True, slots=True, kw_only=True)
class _Paths:
    checkpoint: Path
    vdev_root: Path
    cdi_dir: Path


class DcuPlugin:
    """Prepares and unprepares claims on one node's DCUs."""

    def __init__(
        self,
        inventory: Inventory,
        *,
        driver_name: str,
        node_name: str,
        data_dir: Path,
        cdi_dir: Path,
        boot_id: str,
        host_root: Path | None = None,
    ) -> None:
        self.inventory = inventory
        self.driver_name = driver_name
        self.node_name = node_name
        self.boot_id = boot_id
        self.host_root = host_root
        self.kind = claim_kind(driver_name)
        self._paths = _Paths(
            checkpoint=data_dir / checkpoint.CHECKPOINT_FILE,
            vdev_root=data_dir / VDEV_SUBDIR,
            cdi_dir=cdi_dir,
        )
        self._planner = Planner(
            inventory=inventory, node_name=node_name, driver_name=driver_name, kind=self.kind
        )
        self._claim_files = ClaimFiles(inventory=inventory, kind=self.kind, host_root=host_root)
        self._lock = SerializeLock(data_dir)
        self._checkpoint = checkpoint.CheckpointStore(self._paths.checkpoint, boot_id=boot_id)

    # --- the Plugin protocol ----------------------------------------------------------------

    def prepare_claims(
        self, claims: Sequence[Claim]
    ) -> dict[ClaimUID, PrepareResult | DriverError]:
        """Prepare claims; idempotent, one entry per claim (see ``driver.Plugin``)."""
        results: dict[ClaimUID, PrepareResult | DriverError] = {}
        with self._lock.held():
            state = self._load()
            fresh: list[ClaimEntry] = []
            for claim in claims:
                try:
                    entry, is_new = self._plan_or_reuse(state, claim)
                except DriverError as exc:
                    results[claim.ref.uid] = exc
                    continue
                state = state.with_claim(entry)
                if is_new:
                    fresh.append(entry)
                else:
                    results[claim.ref.uid] = self._result(entry)
            staged, failed = self._stage_files(fresh)
            if fresh:
                # Phase 2: the plan is in place before any file of the claims is. The files
                # are staged (temp files), not fsync'd: the checkpoint can rebuild them (see
                # the module doc). The plan's rename is made durable by the final write
                # below; should a power cut lose it, the node reboots and start-up removes
                # every claim's files anyway.
                files = [file for claim in staged for file in claim.files]
                close_staged(files)
                try:
                    self._save(state, sync_directory=False)
                except BaseException:
                    discard_staged(files)
                    raise
                faultpoints.reached("prepare.planned")
            failed.update(self._commit_files(staged))
            for entry in fresh:
                error = failed.get(entry.uid)
                if error is not None:
                    self._remove_files(entry.uid)
                    state = state.without_claim(entry.uid)
                    results[entry.uid] = error
                    continue
                state = state.with_claim(replace(entry, state=ClaimState.PREPARE_COMPLETED))
                results[entry.uid] = self._result(entry)
            if fresh:
                self._save(state)
                faultpoints.reached("prepare.completed")
        return results

    def unprepare_claims(self, refs: Sequence[ClaimRef]) -> dict[ClaimUID, DriverError | None]:
        """Unprepare claims; an unknown claim is success (see ``driver.Plugin``)."""
        results: dict[ClaimUID, DriverError | None] = {}
        with self._lock.held():
            state = self._load()
            changed = False
            for ref in refs:
                try:
                    _check_uid(ref.uid)
                    self._remove_files(ref.uid)
                except DriverError as exc:
                    results[ref.uid] = exc
                    continue
                if ref.uid in state.claims:
                    faultpoints.reached("unprepare.files_removed")
                    state = state.without_claim(ref.uid)
                    changed = True
                results[ref.uid] = None
            if changed:
                self._save(state)
                faultpoints.reached("unprepare.completed")
        return results

    # --- start-up -----------------------------------------------------------------------------

    def recover(self) -> None:
        """Bring files and checkpoint in line after a restart, crash or reboot."""
        with self._lock.held():
            loaded = state = self._load()
            if state.boot_id != self.boot_id:
                if state.claims:
                    logger.warning(
                        "node rebooted (boot id %s -> %s): dropping %d prepared claim(s); the "
                        "kubelet prepares its running pods' claims again",
                        state.boot_id or "unknown",
                        self.boot_id,
                        len(state.claims),
                    )
                for uid in state.claims:
                    self._remove_files(uid)
                state = Checkpoint(boot_id=self.boot_id)
            for uid, entry in list(state.claims.items()):
                if entry.state is ClaimState.PREPARE_STARTED:
                    logger.warning(
                        "rolling back claim %s/%s (uid %s): its prepare was interrupted",
                        entry.namespace,
                        entry.name,
                        uid,
                    )
                    self._remove_files(uid)
                    faultpoints.reached("recover.rolled_back")
                    state = state.without_claim(uid)
                else:
                    self._regenerate_if_missing(entry)
            self._remove_unknown_files(set(state.claims))
            self._remove_temp_files()
            if state != loaded or not self._paths.checkpoint.exists():
                self._save(state)

    # --- read-only views for claim status and orphan cleanup --------------------------------

    def prepared_claims(self) -> dict[ClaimUID, ClaimEntry]:
        """The claims in the checkpoint, read now (so another instance's work is included).

        Takes no lock: the checkpoint is only ever replaced by an atomic rename, so a reader
        sees either the old or the new file whole. Raises ``CheckpointError``.
        """
        return dict(self._load().claims)

    def vdev_dir(self, uid: ClaimUID) -> Path:
        """Where the claim's vdev files are (or would be)."""
        return self._vdev_dir(uid)

    # --- planning (pure apart from reading the inventory) -----------------------------------

    def _plan_or_reuse(self, state: Checkpoint, claim: Claim) -> tuple[ClaimEntry, bool]:
        """Return the claim's entry: the recorded one if prepared, else a new plan."""
        _check_uid(claim.ref.uid)
        known = state.claims.get(claim.ref.uid)
        if known is not None and known.state is ClaimState.PREPARE_COMPLETED:
            self._regenerate_if_missing(known)  # a repeated prepare after a runtime restart
            return known, False
        if known is not None:  # interrupted earlier in this boot: start over
            self._remove_files(claim.ref.uid)
            state = state.without_claim(claim.ref.uid)
        return self.plan_claim(state, claim), True

    def plan_claim(self, state: Checkpoint, claim: Claim) -> ClaimEntry:
        """Choose CUs, pipe ids and vdev numbers for every share (``plan.Planner``); pure."""
        return self._planner.plan_claim(state, claim)

    # --- side effects -------------------------------------------------------------------------

    def _result(self, entry: ClaimEntry) -> PrepareResult:
        return PrepareResult(
            devices=tuple(
                PreparedDevice(
                    requests=(s.request,),
                    pool=s.pool,
                    device=s.device,
                    cdi_ids=(s.cdi_id,),
                    share_id=s.share_id,
                )
                for s in entry.shares
            )
        )

    def _vdev_dir(self, uid: ClaimUID) -> Path:
        return self._paths.vdev_root / uid

    def _spec_file(self, uid: ClaimUID) -> str:
        return spec_file_name(self.kind, uid)

    def _write_files(self, entries: Sequence[ClaimEntry]) -> dict[ClaimUID, DriverError]:
        """Write the vdev files and CDI specs of ``entries`` (derived from them alone).

        Returns the claims whose files could not be written, with the reason; such a claim may
        have some of its files in place (the caller removes them). All files are staged, then
        renamed into place claim by claim; like every derived file, without an fsync (see the
        module doc).
        """
        staged, failed = self._stage_files(entries)
        close_staged([file for claim in staged for file in claim.files])
        failed.update(self._commit_files(staged))
        return failed

    def _stage_files(
        self, entries: Sequence[ClaimEntry]
    ) -> tuple[list[_StagedFiles], dict[ClaimUID, DriverError]]:
        """Stage the files of each claim; those staged, and the failures by claim."""
        staged: list[_StagedFiles] = []
        failed: dict[ClaimUID, DriverError] = {}
        for entry in entries:
            try:
                staged.append(self._stage_claim_files(entry))
            except DriverError as exc:
                failed[entry.uid] = exc
        return staged, failed

    def _commit_files(self, staged: Sequence[_StagedFiles]) -> dict[ClaimUID, DriverError]:
        """Rename the closed staged files into place, claim by claim, vdev first; the failures."""
        failed: dict[ClaimUID, DriverError] = {}
        for claim in staged:
            try:
                if claim.vdev_dir is not None:
                    for file in claim.vdev_files:
                        commit_staged(file)
                    remove_stale_vdev_files(
                        claim.vdev_dir, keep={file.path.name for file in claim.vdev_files}
                    )
                    faultpoints.reached("prepare.vdev_written")
                commit_staged(claim.spec_file)
                faultpoints.reached("prepare.spec_written")
            except OSError as exc:
                discard_staged(claim.files)
                failed[claim.entry.uid] = _files_error(claim.entry, exc)
        return failed

    def _stage_claim_files(self, entry: ClaimEntry) -> _StagedFiles:
        """Stage the claim's files (temp files, still open); raises ``DriverError``."""
        vdev_configs = self._claim_files.vdev_configs(entry)
        vdev_dir = self._vdev_dir(entry.uid) if vdev_configs else None
        vdev_files: list[StagedFile] = []
        try:
            if vdev_dir is not None:
                ensure_directory(self._paths.vdev_root, mode=PUBLIC_DIR_MODE)
                vdev_files = stage_vdev_dir(vdev_dir, vdev_configs)
            spec = self._claim_files.spec(entry, vdev_dir)
            spec_file = stage_spec(spec, self._paths.cdi_dir, self._spec_file(entry.uid))
        except BaseException as exc:
            discard_staged(vdev_files)
            if isinstance(exc, OSError):
                raise _files_error(entry, exc) from exc
            raise
        return _StagedFiles(
            entry=entry, vdev_dir=vdev_dir, vdev_files=tuple(vdev_files), spec_file=spec_file
        )

    def _regenerate_if_missing(self, entry: ClaimEntry) -> None:
        spec_missing = not (self._paths.cdi_dir / self._spec_file(entry.uid)).is_file()
        vdev_dir = self._vdev_dir(entry.uid)
        vdev_missing = any(s.vdev_id is not None for s in entry.shares) and not all(
            (vdev_dir / vdev_file_name(s.vdev_id)).is_file()
            for s in entry.shares
            if s.vdev_id is not None
        )
        if not (spec_missing or vdev_missing):
            return
        error = self._write_files([entry]).get(entry.uid)
        if error is not None:
            logger.error(
                "cannot regenerate the files of claim %s/%s: %s", entry.namespace, entry.name, error
            )
            return
        logger.warning(
            "regenerated the %s of claim %s/%s (uid %s) from the checkpoint",
            "CDI spec and vdev files"
            if spec_missing and vdev_missing
            else "CDI spec"
            if spec_missing
            else "vdev files",
            entry.namespace,
            entry.name,
            entry.uid,
        )

    def _remove_files(self, uid: ClaimUID) -> None:
        _check_uid(uid)
        try:
            remove_spec(self._paths.cdi_dir, self._spec_file(uid), sync_directory=False)
            faultpoints.reached("remove.spec_removed")
            _remove_vdev_dir(self._vdev_dir(uid))
        except OSError as exc:
            raise DriverError(
                f"claim uid {uid}: removing its files failed: "
                f"{exc.strerror or exc} ({exc.filename})"
            ) from exc

    def _remove_unknown_files(self, known: set[ClaimUID]) -> None:
        """Delete files of claims the checkpoint does not know (left by a crash)."""
        prefix, suffix = self._spec_file(ClaimUID("X")).split("X")
        if self._paths.cdi_dir.is_dir():
            for path in self._paths.cdi_dir.iterdir():
                name = path.name
                if name.startswith(prefix) and name.endswith(suffix):
                    uid = name[len(prefix) : -len(suffix)]
                    if is_uuid(uid) and uid not in known:
                        logger.info("removing CDI spec %s of an unknown claim", path)
                        path.unlink(missing_ok=True)
        if self._paths.vdev_root.is_dir():
            for path in self._paths.vdev_root.iterdir():
                if is_uuid(path.name) and path.name not in known:
                    logger.info("removing vdev dir %s of an unknown claim", path)
                    shutil.rmtree(path, ignore_errors=True)

    def _remove_temp_files(self) -> None:
        """Delete temp files of writes a crash cut short (checkpoint, CDI specs, vdev files)."""
        prefix, suffix = self._spec_file(ClaimUID("X")).split("X")
        directories: list[tuple[Path, Callable[[str], bool]]] = [
            (self._paths.checkpoint.parent, lambda name: name == self._paths.checkpoint.name),
            (self._paths.cdi_dir, lambda name: name.startswith(prefix) and name.endswith(suffix)),
        ]
        if self._paths.vdev_root.is_dir():
            directories += [
                (path, is_vdev_file_name)
                for path in self._paths.vdev_root.iterdir()
                if is_uuid(path.name) and path.is_dir()
            ]
        for directory, is_ours in directories:
            if not directory.is_dir():
                continue
            for path in directory.iterdir():
                target = temp_target(path.name)
                if target is not None and is_ours(target):
                    logger.info("removing %s, left by an interrupted write", path)
                    path.unlink(missing_ok=True)

    def _load(self) -> Checkpoint:
        return self._checkpoint.load()

    def _save(self, state: Checkpoint, *, sync_directory: bool = True) -> None:
        self._checkpoint.save(state, sync_directory=sync_directory)

    # --- read-only view for metrics -----------------------------------------------------------

    def device_usage(self) -> dict[DeviceName, DeviceUsage]:
        """What live claims hold of each DCU, from the checkpoint as it is now (for metrics).

        Every DCU of the inventory has an entry, zero when idle. Claims still being prepared
        count (their CUs are taken); admin-access shares do not (they take no capacity). Takes
        no lock: the checkpoint is only ever replaced by an atomic rename, so this never waits
        for a prepare. Raises ``CheckpointError``.
        """
        usage = {dcu.name: DeviceUsage() for dcu in self.inventory.devices}
        for entry in self._load().claims.values():
            for share in entry.shares:
                dcu = self.inventory.by_name(share.device)
                if dcu is None or not share.counts_against_capacity:
                    continue
                held = usage[dcu.name]
                usage[dcu.name] = DeviceUsage(
                    cores=held.cores + share.cores,
                    # A whole DCU holds all its bytes, which need not be whole MiB.
                    memory_bytes=held.memory_bytes
                    + (dcu.memory_bytes if share.whole_device else share.memory_mib * MIB),
                    shares=held.shares + 1,
                )
        return usage


def read_boot_id(path: Path = BOOT_ID_FILE) -> str:
    """Return this boot's id (the kernel's random boot_id)."""
    try:
        return path.read_text(encoding="ascii").strip()
    except OSError as exc:
        raise DriverError(f"cannot read the boot id from {path}: {exc.strerror}") from exc


@dataclass(frozen=True, slots=True, kw_only=True)
class _StagedFiles:
    """A claim's files, staged (``DcuPlugin._stage_files``) and waiting to be committed."""

    entry: ClaimEntry
    vdev_dir: Path | None
    vdev_files: tuple[StagedFile, ...]
    spec_file: StagedFile

    @property
    def files(self) -> list[StagedFile]:
        """Every staged file of the claim, in commit order."""
        return [*self.vdev_files, self.spec_file]


def _remove_vdev_dir(directory: Path) -> None:
    """Delete a claim's vdev dir: its few files, then itself (``shutil.rmtree`` if more)."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return
    try:
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(directory, name))
        with contextlib.suppress(FileNotFoundError):
            os.rmdir(directory)
    except OSError:  # not ours alone (a subdirectory?): take everything
        shutil.rmtree(directory)


def _files_error(entry: ClaimEntry, exc: OSError) -> DriverError:
    return DriverError(
        f"claim {entry.namespace}/{entry.name} (uid {entry.uid}): writing its files failed: "
        f"{exc.strerror or exc} ({exc.filename})"
    )


def _check_uid(uid: str) -> None:
    """A claim UID goes into file names: only a lowercase UUID is ever accepted."""
    if not is_uuid(uid):
        raise ClaimError(f"claim uid {uid!r} is not a UUID; refusing to use it in a file name")


@dataclass(frozen=True, slots=True)
class DeviceUsage:
    """What the live claims of this node hold of one DCU (``DcuPlugin.device_usage``)."""

    cores: int = 0
    """CUs held: a vDCU's CU count, all of a whole DCU's."""
    memory_bytes: int = 0
    shares: int = 0
    """Live allocations of the DCU: vDCUs plus whole-device allocations."""
