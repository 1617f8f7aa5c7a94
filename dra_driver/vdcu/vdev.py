"""The vdev config file that defines a vDCU for the DCU runtime: render, parse, read, write.

Owns the file format (nine ``key: value`` lines in a fixed order) and the three runtime rules
measured by gpustack: ``cu_count`` equals the popcount of the two ``cu_mask`` words, ``vdev_id``
equals N of ``vdev<N>.conf``, and ``pipe_id`` is unique among a card's live shares. A file that
breaks a rule silently costs the container its accelerator, so rendering derives ``cu_count``
from the mask and parsing is strict: we only ever read files we wrote, and an unreadable record
must never be skipped (that would free a live share's CUs). ``write_vdev_dir`` (or its parts,
``stage_vdev_dir`` and ``remove_stale_vdev_files``) and ``read_vdev_dir`` are the only
functions here that touch the filesystem.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable, Sequence, Set
from dataclasses import dataclass
from pathlib import Path

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
from dra_driver.vdcu.allocator import PIPE_IDS_PER_CARD, CuMask

#: ``vdev_id`` bound: HAMi keeps a node-wide pool of 200 and gpustack bounds it at 200.
VDEV_ID_LIMIT = 200
#: The keys of a vdev file, in the order the runtime expects (two ``cu_mask`` lines: word 0, 1).
VDEV_KEYS = (
    "PciBusId",
    "cu_mask",
    "cu_mask",
    "cu_count",
    "mem",
    "device_id",
    "vdev_id",
    "pipe_id",
    "enable",
)

_FILE_NAME = re.compile(r"vdev(0|[1-9][0-9]*)\.conf")
_LINE = re.compile(r"([A-Za-z_]+): (.*)")
_PCI_BUS_ID = re.compile(r"[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]")
_MASK_WORD = re.compile(r"0x[0-9a-f]{16}")
_DECIMAL = re.compile(r"0|[1-9][0-9]*")
_MEMORY = re.compile(r"(0|[1-9][0-9]*) MiB")


class VdevError(ValueError):
    """A vdev config that breaks the format or a runtime rule; ``problems`` lists each one."""

    def __init__(self, subject: str, problems: Iterable[str]) -> None:
        self.subject = subject
        self.problems = list(problems)
        super().__init__(f"{subject}: " + "; ".join(self.problems))


@dataclass(frozen=True, slots=True)
class VdevConfig:
    """One vdev config file: a vDCU's card, CUs, memory cap and ids.

    ``cu_count`` is derived from ``mask``, never stored, so runtime rule 1 cannot be broken.
    Construction checks the value ranges and raises VdevError.
    """

    pci_bus_id: str
    """The card, ``DDDD:BB:DD.F`` lowercase."""
    mask: CuMask
    """The share's CUs; never empty."""
    memory_mib: int
    """Memory cap in MiB."""
    device_id: int
    """The DCU's ordinal inside the container."""
    vdev_id: int
    """Must equal N of the file name ``vdev<N>.conf`` (runtime rule 2)."""
    pipe_id: int
    """Unique among the card's live shares (runtime rule 3)."""
    enabled: bool = True
    """Rendered as ``enable: 1``; parsing accepts only enabled records."""

    def __post_init__(self) -> None:
        problems = _value_problems(
            pci_bus_id=self.pci_bus_id,
            mask=self.mask,
            memory_mib=self.memory_mib,
            device_id=self.device_id,
            vdev_id=self.vdev_id,
            pipe_id=self.pipe_id,
        )
        if problems:
            raise VdevError(f"vdev config for {self.pci_bus_id!r}", problems)

    @property
    def cu_count(self) -> int:
        """Number of CUs: the popcount of both mask words."""
        return self.mask.cu_count


def _value_problems(
    *,
    pci_bus_id: str | None,
    mask: CuMask | None,
    memory_mib: int | None,
    device_id: int | None,
    vdev_id: int | None,
    pipe_id: int | None,
) -> list[str]:
    """Range problems of the given values; ``None`` (a value that did not parse) is skipped."""
    problems = []
    if pci_bus_id is not None and not _PCI_BUS_ID.fullmatch(pci_bus_id):
        problems.append(f"PciBusId {pci_bus_id!r} is not a lowercase DDDD:BB:DD.F address")
    if mask is not None and mask.is_empty:
        problems.append("cu_mask holds no CU")
    if memory_mib is not None and memory_mib < 1:
        problems.append(f"mem {memory_mib} MiB is below 1 MiB")
    if device_id is not None and device_id < 0:
        problems.append(f"device_id {device_id} is negative")
    if vdev_id is not None and not 0 <= vdev_id < VDEV_ID_LIMIT:
        problems.append(f"vdev_id {vdev_id} is outside 0-{VDEV_ID_LIMIT - 1}")
    if pipe_id is not None and not 0 <= pipe_id < PIPE_IDS_PER_CARD:
        problems.append(f"pipe_id {pipe_id} is outside 0-{PIPE_IDS_PER_CARD - 1}")
    return problems


def vdev_file_name(vdev_id: int) -> str:
    """Return the file name the runtime requires for ``vdev_id``: ``vdev<N>.conf``."""
    if vdev_id < 0:
        raise ValueError(f"vdev_id {vdev_id} is negative")
    return f"vdev{vdev_id}.conf"


def is_vdev_file_name(name: str) -> bool:
    """Whether ``name`` is a ``vdev<N>.conf`` name (as ``vdev_file_name`` makes them)."""
    return _FILE_NAME.fullmatch(name) is not None


def render_vdev(config: VdevConfig) -> str:
    """Render the nine-line file, byte for byte the layout both existing writers use. Pure."""
    word0, word1 = config.mask.hex_words()
    values = (
        config.pci_bus_id,
        word0,
        word1,
        str(config.cu_count),
        f"{config.memory_mib} MiB",
        str(config.device_id),
        str(config.vdev_id),
        str(config.pipe_id),
        "1" if config.enabled else "0",
    )
    return "".join(f"{key}: {value}\n" for key, value in zip(VDEV_KEYS, values, strict=True))


def parse_vdev(text: str, *, file_name: str) -> VdevConfig:
    """Parse a vdev file named ``file_name``, strictly; pure.

    Checks the layout (nine ``key: value`` lines, keys in order, exactly two ``cu_mask``
    lines, ``mem`` in ``MiB``, ``enable: 1``) and runtime rules 1 and 2. Rule 3 spans files:
    see ``check_pipe_ids_unique``.

    Raises:
        VdevError: listing every problem found, one message each.
    """
    problems: list[str] = []
    file_match = _FILE_NAME.fullmatch(file_name)
    if file_match is None:
        problems.append(f"file name {file_name!r} is not vdev<N>.conf")
    lines = text.split("\n")
    if lines[-1]:
        problems.append("the last line does not end with a newline (truncated file?)")
    else:
        lines.pop()
    entries: list[tuple[str, str]] = []
    for number, line in enumerate(lines, start=1):
        line_match = _LINE.fullmatch(line)
        if line_match is None:
            problems.append(f"line {number} {line!r} is not 'key: value'")
            continue
        entries.append((line_match[1], line_match[2]))
    keys = tuple(key for key, _ in entries)
    if keys != VDEV_KEYS:
        problems.append(f"keys must be {', '.join(VDEV_KEYS)} in this order, got {', '.join(keys)}")
    fields: dict[str, list[str]] = {}
    for key, value in entries:
        fields.setdefault(key, []).append(value)

    def single(key: str, pattern: re.Pattern[str], expected: str) -> str | None:
        values = fields.get(key, [])
        if len(values) != 1:
            problems.append(f"expected exactly 1 {key} line, found {len(values)}")
            return None
        match = pattern.fullmatch(values[0])
        if match is None:
            problems.append(f"{key} {values[0]!r} is not {expected}")
            return None
        return match[match.lastindex or 0]

    pci_bus_id = single("PciBusId", _PCI_BUS_ID, "a lowercase DDDD:BB:DD.F address")
    mask = _parse_mask(fields.get("cu_mask", []), problems)
    cu_count = single("cu_count", _DECIMAL, "a decimal number")
    memory = single("mem", _MEMORY, "'<N> MiB'")
    device_id = single("device_id", _DECIMAL, "a decimal number")
    vdev_id = single("vdev_id", _DECIMAL, "a decimal number")
    pipe_id = single("pipe_id", _DECIMAL, "a decimal number")
    enable = single("enable", _DECIMAL, "a decimal number")
    if enable is not None and enable != "1":
        problems.append(f"enable {enable} is not 1; this driver writes only enabled records")
    if mask is not None and cu_count is not None and int(cu_count) != mask.cu_count:
        problems.append(
            f"cu_count {cu_count} is not the popcount {mask.cu_count} of the cu_mask words "
            "(rule 1: the runtime rejects the record)"
        )
    if file_match is not None and vdev_id is not None and vdev_id != file_match[1]:
        problems.append(
            f"vdev_id {vdev_id} does not match the file name {file_name} "
            "(rule 2: the container would get no accelerator)"
        )
    problems.extend(
        _value_problems(
            pci_bus_id=pci_bus_id,
            mask=mask,
            memory_mib=_int_or_none(memory),
            device_id=_int_or_none(device_id),
            vdev_id=_int_or_none(vdev_id),
            pipe_id=_int_or_none(pipe_id),
        )
    )
    if (
        problems
        or pci_bus_id is None
        or mask is None
        or memory is None
        or device_id is None
        or vdev_id is None
        or pipe_id is None
    ):
        raise VdevError(file_name, problems)
    return VdevConfig(
        pci_bus_id=pci_bus_id,
        mask=mask,
        memory_mib=int(memory),
        device_id=int(device_id),
        vdev_id=int(vdev_id),
        pipe_id=int(pipe_id),
    )


def _int_or_none(text: str | None) -> int | None:
    return None if text is None else int(text)


def _parse_mask(words: list[str], problems: list[str]) -> CuMask | None:
    """Parse the two ``cu_mask`` words (word 0 first), appending problems."""
    if len(words) != 2:
        problems.append(
            f"expected exactly 2 cu_mask lines (CUs 0-63, then 64-127), found {len(words)}"
        )
        return None
    bad = [word for word in words if not _MASK_WORD.fullmatch(word)]
    for word in bad:
        problems.append(f"cu_mask {word!r} is not 0x followed by 16 lowercase hex digits")
    if bad:
        return None
    return CuMask.from_words(int(words[0], 16), int(words[1], 16))


def check_pipe_ids_unique(configs: Iterable[VdevConfig]) -> None:
    """Check runtime rule 3: no two live configs on the same card share a ``pipe_id``. Pure.

    Raises:
        VdevError: naming every card and pipe id used more than once.
    """
    seen: dict[tuple[str, int], int] = {}
    for config in configs:
        slot = (config.pci_bus_id, config.pipe_id)
        seen[slot] = seen.get(slot, 0) + 1
    problems = [
        f"pipe_id {pipe_id} is used by {count} live shares on {pci_bus_id} "
        "(rule 3: all but one would lose their device)"
        for (pci_bus_id, pipe_id), count in sorted(seen.items())
        if count > 1
    ]
    if problems:
        raise VdevError("vdev configs", problems)


def write_vdev_dir(
    directory: Path, configs: Sequence[VdevConfig], *, sync_directory: bool = True
) -> None:
    """Write each config as ``vdev<vdev_id>.conf`` into ``directory``.

    The file name follows from ``vdev_id`` (runtime rule 2), which the caller chooses unique
    node-wide; ``device_id`` is the DCU's ordinal inside the container, also chosen by the
    caller. The directory is created with mode 0755 and each file is replaced atomically with
    mode 0644; other ``vdev<N>.conf`` files in it are removed, so rewriting the same configs
    is idempotent. The directory is fsync'd once, after all files (``sync_directory=False``:
    not at all, see ``fsutil.write_atomically``).

    Raises:
        VdevError: no configs, a vdev_id used twice or a pipe id used twice on a card; nothing
            is written.
        OSError: the directory or a file cannot be written.
    """
    staged = stage_vdev_dir(directory, configs)
    try:
        sync_staged(staged)
        for file in staged:
            commit_staged(file)
    except BaseException:
        discard_staged(staged)
        raise
    remove_stale_vdev_files(directory, keep={vdev_file_name(c.vdev_id) for c in configs})
    if sync_directory:
        fsync_directory(directory)


def stage_vdev_dir(directory: Path, configs: Sequence[VdevConfig]) -> list[StagedFile]:
    """``write_vdev_dir`` up to the temp files: checked, directory made, files staged.

    The caller syncs and commits them (``fsutil``), then calls ``remove_stale_vdev_files``.
    Raises ``VdevError`` (nothing written) or ``OSError`` (nothing left behind).
    """
    problems = []
    if not configs:
        problems.append("no vdev configs to write")
    seen: set[int] = set()
    for config in configs:
        if config.vdev_id in seen:
            problems.append(
                f"vdev_id {config.vdev_id} is given to two configs; each share needs its own "
                f"file (rule 2: vdev_id is N of vdev<N>.conf)"
            )
        seen.add(config.vdev_id)
    try:
        check_pipe_ids_unique(configs)
    except VdevError as exc:
        problems.extend(exc.problems)
    if problems:
        raise VdevError(str(directory), problems)
    ensure_directory(directory, mode=PUBLIC_DIR_MODE)
    staged: list[StagedFile] = []
    try:
        for config in configs:
            staged.append(
                stage_file(
                    directory / vdev_file_name(config.vdev_id),
                    render_vdev(config).encode("ascii"),
                    mode=PUBLIC_FILE_MODE,
                )
            )
    except BaseException:
        discard_staged(staged)
        raise
    return staged


def remove_stale_vdev_files(directory: Path, *, keep: Set[str]) -> bool:
    """Delete the ``vdev<N>.conf`` files whose names are not in ``keep`` (an earlier plan's)."""
    stale = [
        entry
        for entry in directory.iterdir()
        if _FILE_NAME.fullmatch(entry.name) and entry.name not in keep
    ]
    for entry in stale:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(entry)
    return bool(stale)


def read_vdev_dir(directory: Path) -> list[VdevConfig]:
    """Read a directory written by ``write_vdev_dir``, ordered by file number; fail closed.

    Temp files of an interrupted write (names starting with ``.``) are ignored; anything else
    that is not a well-formed ``vdev<N>.conf`` or a pipe id used twice on a card fails the
    whole read: guessing would free a live share's CUs. Numbers are node-wide, so a claim's
    files need not start at 0 nor follow each other.

    Raises:
        VdevError: listing every problem, including an unreadable directory or file.
    """
    try:
        names = sorted(entry.name for entry in directory.iterdir())
    except OSError as exc:
        raise VdevError(str(directory), [f"cannot list: {exc.strerror or exc}"]) from exc
    problems: list[str] = []
    numbered: dict[int, str] = {}
    for name in names:
        if name.startswith("."):
            continue
        match = _FILE_NAME.fullmatch(name)
        if match is None:
            problems.append(f"unexpected entry {name!r}: only vdev<N>.conf files belong here")
        else:
            numbered[int(match[1])] = name
    if not numbered and not problems:
        problems.append("holds no vdev<N>.conf file")
    configs: list[VdevConfig] = []
    for number in sorted(numbered):
        name = numbered[number]
        try:
            text = (directory / name).read_text(encoding="ascii")
            config = parse_vdev(text, file_name=name)
        except VdevError as exc:
            problems.extend(f"{name}: {problem}" for problem in exc.problems)
            continue
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            problems.append(f"{name}: cannot read: {reason}")
            continue
        configs.append(config)
    if not problems:
        try:
            check_pipe_ids_unique(configs)
        except VdevError as exc:
            problems.extend(exc.problems)
    if problems:
        raise VdevError(str(directory), problems)
    return configs
