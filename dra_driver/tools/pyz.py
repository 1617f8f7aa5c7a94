"""One-file dcu-dra (a zipapp) for containers that have Python but not dcu-dra.

``build_pyz(target)`` packs the modules of the imported ``dra_driver`` package and a
``__main__`` into one file; ``python3 dcu-dra.pyz verify`` then runs ``dcu-dra verify`` in any
container with Python 3.11+ and nothing installed (the example pods' ``python:3.12-slim``).
``make pyz`` builds ``build/dist/dcu-dra.pyz``; ``make demo`` and ``kind/demo.sh`` run it
inside every example pod.

What runs from the pyz: the commands whose imports are standard library only, which are
``verify``, ``--help`` and ``--version``. The other commands need third-party packages
(``devices``, ``cdi``, ``mock``, ``convert``: PyYAML, jsonschema; ``kubelet-plugin``: gRPC
and the Kubernetes client); they stop with one line naming the missing package, not a
traceback.

Plumbing: reads the package's files and writes ``target`` atomically; never imports anything
beyond the standard library and ``dra_driver``'s own stdlib-only modules, so it runs from a
bare ``python3`` in the repository (``python3 -m dra_driver.tools.pyz OUT``).
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import marshal
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path

import dra_driver
from dra_driver.errors import DriverError
from dra_driver.util.fsutil import PUBLIC_FILE_MODE, write_atomically

#: The package whose modules go into the pyz: the one this module belongs to.
PACKAGE_DIR = Path(dra_driver.__file__).parent
#: Subpackages never needed in a container: the test tools (fake kubelet, control plane
#: helpers) and ``make demo``. Everything else goes in, so no command's lazy import breaks the
#: argument parser, and a command that cannot run says which package it lacks.
LEFT_OUT = frozenset({"testing", "demo", "__pycache__"})
#: ``env`` finds python3 wherever the image has it (``/usr/local/bin`` in python:*-slim).
SHEBANG = b"#!/usr/bin/env python3\n"
#: Every entry gets this timestamp (the zip format's earliest): the same sources always give
#: the same bytes, so a rebuild changes nothing and two builds compare equal.
ENTRY_TIME = (1980, 1, 1, 0, 0, 0)

#: The pyz's entry point. Not ``zipapp -m``: that discards ``main()``'s return value, and a
#: failed ``verify`` must exit 1. Catching ``ModuleNotFoundError`` turns a command that needs a
#: third-party package into one line instead of a traceback.
MAIN_PY = '''\
"""dcu-dra in one file (python -m dra_driver.tools.pyz): ``python3 dcu-dra.pyz verify``."""
import sys

if sys.version_info < (3, 11):
    sys.exit("dcu-dra: error: needs Python 3.11 or newer; this is Python " + sys.version.split()[0])
try:
    from dra_driver.cli import main

    code = main()
except ModuleNotFoundError as exc:
    package = (exc.name or "").partition(".")[0]
    if package in ("", "dra_driver"):
        raise  # a module of our own is missing: a broken build, show everything
    sys.exit(
        f"dcu-dra: error: this command needs the Python package {package!r}, which the "
        "one-file dcu-dra.pyz does not carry (it runs verify, --help and --version on the "
        "standard library alone); install dcu-dra with pip for the other commands"
    )
sys.exit(code)
'''


class PyzError(DriverError):
    """The pyz could not be built: what was missing or could not be written."""


def package_files() -> list[Path]:
    """The ``.py`` files of the package that go into the pyz, sorted (see ``LEFT_OUT``)."""
    return sorted(
        path
        for path in PACKAGE_DIR.rglob("*.py")
        if not LEFT_OUT.intersection(path.relative_to(PACKAGE_DIR).parts[:-1])
    )


def build_pyz(target: Path, *, include_bytecode: bool = False) -> Path:
    """Write the one-file dcu-dra to ``target`` (atomically, mode 0644); returns ``target``.

    Deterministic: the same package sources give the same bytes. ``include_bytecode`` also
    stores each module compiled by the running Python: a run by the same Python version then
    starts in half the time (no compiling from source on every run; ``make demo`` runs it
    once per container), any other version ignores it and compiles the source. Off by default
    because the bytes then depend on the building Python. Raises ``PyzError`` when the
    package has no ``cli.py`` (not a dcu-dra source tree) or ``target`` cannot be written.
    """
    files = package_files()
    if PACKAGE_DIR / "cli.py" not in files:
        raise PyzError(f"{PACKAGE_DIR} has no cli.py: not the dcu-dra package")
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as pyz:
        _add(pyz, "__main__.py", MAIN_PY.encode())
        for path in files:
            name = path.relative_to(PACKAGE_DIR.parent).as_posix()
            try:
                source = path.read_bytes()
            except OSError as exc:
                raise PyzError(f"cannot read {path}: {exc.strerror or exc}") from exc
            _add(pyz, name, source)
            if include_bytecode:
                _add(pyz, name.removesuffix(".py") + ".pyc", _bytecode(source, target / name))
    if target.parent.exists() and not target.parent.is_dir():
        raise PyzError(f"cannot write {target}: {target.parent} is not a directory")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(target, SHEBANG + archive.getvalue(), mode=PUBLIC_FILE_MODE)
    except OSError as exc:
        raise PyzError(f"cannot write {target}: {exc.strerror or exc}") from exc
    return target


def _add(pyz: zipfile.ZipFile, name: str, data: bytes) -> None:
    entry = zipfile.ZipInfo(name, date_time=ENTRY_TIME)
    entry.compress_type = zipfile.ZIP_DEFLATED
    entry.external_attr = (0o100000 | PUBLIC_FILE_MODE) << 16  # a regular file, rw-r--r--
    pyz.writestr(entry, data)


def _bytecode(source: bytes, shown_as: Path) -> bytes:
    """A ``.pyc`` that zipimport loads without comparing it to the source (PEP 552).

    Unchecked hash-based: the module and its source come from the same build, and the zip's
    fixed entry times could not serve a timestamp check anyway. ``shown_as`` is the path
    tracebacks show, the same as for a module compiled from the source in the pyz.
    """
    code = compile(source, str(shown_as), "exec", dont_inherit=True)
    hash_based_unchecked = (0b01).to_bytes(4, "little")
    return (
        importlib.util.MAGIC_NUMBER
        + hash_based_unchecked
        + importlib.util.source_hash(source)
        + marshal.dumps(code)
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dra_driver.tools.pyz OUT``: build the pyz; 0 on success, 1 with one error."""
    parser = argparse.ArgumentParser(
        prog="python -m dra_driver.tools.pyz",
        description="Build the one-file dcu-dra (a zipapp) that runs 'dcu-dra verify' in any "
        "container with Python 3.11+: python3 dcu-dra.pyz verify",
    )
    parser.add_argument("output", type=Path, metavar="OUT", help="The .pyz file to write.")
    args = parser.parse_args(argv)
    try:
        target = build_pyz(args.output)
    except PyzError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 1
    size_kib = target.stat().st_size / 1024
    print(f"==> {target} ({size_kib:.0f} KiB): run it with python3 {target.name} verify")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
