"""CDI spec files: validate, then write atomically; stage for a caller's commit; remove.

Owns the only functions of ``cdi`` that change files: ``write_spec`` (validated, temp file,
fsync, rename, 0644 in a 0755 directory), ``stage_spec`` (up to the temp file, for a caller
that commits several files together) and ``remove_spec`` (idempotent), plus the rule for spec
file names. Every spec passes ``validate.validate_spec`` before a byte is written (through
``validated_document``, whose document is then rendered).

Must not build specs (``build`` does) nor decide their content or bytes (``model`` renders).
Sits on top of ``cdi``: imports ``model`` and ``validate``; neither imports it back. Never
imports gRPC or the Kubernetes client.
"""

from __future__ import annotations

import logging
from pathlib import Path

from dra_driver.cdi.model import Spec, render_document
from dra_driver.cdi.validate import validated_document
from dra_driver.errors import CdiError
from dra_driver.util.fsutil import (
    PUBLIC_DIR_MODE,
    PUBLIC_FILE_MODE,
    StagedFile,
    commit_staged,
    discard_staged,
    ensure_directory,
    fsync_directory,
    stage_file,
    sync_staged,
)

logger = logging.getLogger(__name__)


def _checked_file_name(file_name: str) -> str:
    if "/" in file_name or "\0" in file_name:
        raise CdiError(f"CDI spec file name {file_name!r} must not contain '/'")
    if not file_name.endswith(".json") or file_name.startswith("."):
        raise CdiError(
            f"CDI spec file name {file_name!r} must end in .json and not start with '.' "
            "(runtimes read only visible *.json and *.yaml files)"
        )
    return file_name


def write_spec(spec: Spec, directory: Path, file_name: str, *, sync_directory: bool = True) -> Path:
    """Validate ``spec`` strictly, then write it to ``directory/file_name`` atomically, 0644.

    Nothing is created or changed when the spec or the name is invalid
    (``CdiValidationError``/``CdiError``). A missing directory is created with mode 0755; an
    existing one keeps its mode. Readers see the old file or the new one, never a torn one.
    Idempotent: writing the same spec again rewrites identical bytes. ``sync_directory``: see
    ``fsutil.write_atomically``.
    """
    staged = stage_spec(spec, directory, file_name)
    try:
        sync_staged([staged])
        commit_staged(staged)
        if sync_directory:
            fsync_directory(directory)
    except OSError as exc:
        discard_staged([staged])
        raise CdiError(f"cannot write CDI spec {staged.path}: {exc.strerror or exc}") from exc
    logger.debug(
        "wrote CDI spec %s (kind %s, %d devices)", staged.path, spec.kind, len(spec.devices)
    )
    return staged.path


def stage_spec(spec: Spec, directory: Path, file_name: str) -> StagedFile:
    """``write_spec`` up to the temp file: validated, directory made, content staged.

    The caller syncs and commits it (``fsutil``). Raises ``CdiValidationError``/``CdiError``,
    leaving nothing behind.
    """
    name = _checked_file_name(file_name)
    document = validated_document(spec)
    path = directory / name
    try:
        if not directory.is_dir():
            ensure_directory(directory, mode=PUBLIC_DIR_MODE)
        return stage_file(path, render_document(document), mode=PUBLIC_FILE_MODE)
    except OSError as exc:
        raise CdiError(f"cannot write CDI spec {path}: {exc.strerror or exc}") from exc


def remove_spec(directory: Path, file_name: str, *, sync_directory: bool = True) -> bool:
    """Delete ``directory/file_name``; returns whether a file was removed.

    Idempotent: a missing file (or directory) is not an error, so an unprepare may repeat.
    ``sync_directory=False`` leaves the removal to reach the disk with the next journal
    commit (for a caller that deletes left-over specs at start-up, as ``state`` does).
    """
    path = directory / _checked_file_name(file_name)
    try:
        path.unlink()
        if sync_directory:
            fsync_directory(directory)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise CdiError(f"cannot remove CDI spec {path}: {exc.strerror or exc}") from exc
    logger.debug("removed CDI spec %s", path)
    return True
