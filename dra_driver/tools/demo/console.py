"""What the terminal shows: progress lines, one-line failures, short paths; the build dir.

Nothing here knows the cluster. :func:`step` is the one place where an exception becomes a
:class:`DemoError` line; the full exception goes to the log (``demo.log``), never the terminal.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dra_driver.errors import DriverError

logger = logging.getLogger(__name__)

#: Written into the build dir so a later run only ever wipes a directory the demo made.
MARKER = ".dcu-dra-demo"


class DemoError(Exception):
    """A step failed: what failed and why, in one line, and the log that tells more."""

    def __init__(self, what: str, log: Path | None) -> None:
        self.what = what
        self.log = log
        super().__init__(what)

    def __str__(self) -> str:
        return self.what if self.log is None else f"{self.what} (see {shown(self.log)})"


@contextmanager
def step(what: str, *, log: Path | None) -> Iterator[None]:
    """Turn a failure inside the block into ``DemoError("<what>: <first line of cause>")``."""
    try:
        yield
    except (DriverError, AssertionError, OSError, ValueError) as exc:
        logger.error("%s failed", what, exc_info=True)  # the whole story goes to the log
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        # A log that was never written (the step failed before it started) helps nobody.
        raise DemoError(f"{what}: {reason}", log if log and log.exists() else None) from exc


def say(message: str) -> None:
    """Print one progress line (flushed: the output may be a pipe)."""
    print(f"==> {message}", flush=True)


def shown(path: Path) -> str:
    """``path`` relative to the working directory when it is inside it (shorter to read)."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def prepare_build_dir(build_dir: Path, *, is_default: bool) -> None:
    """Wipe the build dir of an earlier run; refuse to wipe a directory the demo did not make."""
    if build_dir.exists() and any(build_dir.iterdir()):
        if not (is_default or (build_dir / MARKER).exists()):
            raise DemoError(
                f"refusing to wipe {build_dir}: it is not empty and was not made by the demo",
                None,
            )
        shutil.rmtree(build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    (build_dir / MARKER).write_text("made by python -m dra_driver.tools.demo; wiped at each run\n")
