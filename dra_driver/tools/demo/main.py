"""``python -m dra_driver.tools.demo``: flags, the order of the steps, Ctrl-C and exit codes.

Whatever happens, the terminal gets progress lines and at most one ``demo failed: ...`` line
per failure, never a traceback: tracebacks go to ``<build dir>/demo.log``. The first Ctrl-C
(or SIGTERM) tears down in order; a second one during the teardown kills what is left.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType

from dra_driver.testing.cluster import REPO_ROOT
from dra_driver.testing.realnode import unavailable_reason
from dra_driver.tools.demo.console import DemoError, prepare_build_dir, say, shown
from dra_driver.tools.demo.session import DemoSession

logger = logging.getLogger(__name__)

DEFAULT_BUILD_DIR = REPO_ROOT / "build" / "demo"
#: Exit code of a run ended by Ctrl-C (128 + SIGINT), as shells report it.
INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    """The demo's flags."""
    parser = argparse.ArgumentParser(
        prog="python -m dra_driver.tools.demo",
        description="Two mock DCU nodes with the real dcu-dra kubelet plugin on a local control "
        "plane: every deploy/examples/*.yaml pod scheduled, allocated and prepared. The nodes "
        "are real (containerd, runc, the real kubelet) where the machine allows it (root, "
        "Linux, cgroup v1, make node-binaries images), else fake kubelets.",
    )
    parser.add_argument(
        "--fake-nodes",
        action="store_true",
        help="Use fake kubelets even where real nodes could run (make demo FAKE=1).",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="Keep everything running after the table until Ctrl-C (make demo KEEP=1).",
    )
    parser.add_argument(
        "--build-dir",
        type=Path,
        default=DEFAULT_BUILD_DIR,
        help=f"Where the control plane, nodes and logs live; wiped at start "
        f"(default {shown(DEFAULT_BUILD_DIR)}).",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the demo; 0 on success, 1 on a failure, 130 when interrupted."""
    args = build_parser().parse_args(argv)
    build_dir: Path = args.build_dir.absolute()
    # Python leaves SIGINT ignored when it started ignored (a background job of a script, or
    # make under some shells); the demo must still tear down on Ctrl-C.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    started = time.monotonic()
    try:
        prepare_build_dir(build_dir, is_default=build_dir == DEFAULT_BUILD_DIR)
    except (DemoError, OSError) as exc:
        _fail(str(exc))
        return 1
    except KeyboardInterrupt:
        return INTERRUPTED
    _log_to(build_dir / "demo.log")
    reason = "asked for with --fake-nodes" if args.fake_nodes else unavailable_reason()
    if reason is None:
        say("real nodes: containerd, runc and the real kubelet (no Docker needed)")
    else:
        say(f"fake kubelets instead of real nodes: {reason}")
    session = DemoSession(build_dir, real_nodes=reason is None)
    code = 0
    kept = False
    try:
        try:
            _run(session)
            if args.keep:
                session.print_try_lines()
                kept = True
                while True:
                    signal.pause()
        except KeyboardInterrupt:
            say("interrupted")
            code = 0 if kept else INTERRUPTED  # with --keep, Ctrl-C is the way to finish
        except DemoError as exc:
            _fail(str(exc))
            code = 1
        except Exception as exc:  # a bug: one line here, the traceback in the log
            logger.exception("unexpected failure")
            _fail(f"unexpected error: {exc!r} (see {shown(session.log)})")
            code = 1
        for failure in session.teardown(failed=code != 0):
            _fail(failure)
            code = code or 1
    except KeyboardInterrupt:
        say("interrupted again: killing what is left")
        session.kill()
        return INTERRUPTED
    except Exception as exc:
        logger.exception("teardown failed")
        _fail(f"teardown: unexpected error: {exc!r} (see {shown(session.log)})")
        session.kill()
        return 1
    if code == 0:
        say(f"done in {time.monotonic() - started:.1f} s")
    return code


def _run(session: DemoSession) -> None:
    """The steps, in order; each prints its own progress line."""
    session.build_pyz()
    session.start_control_plane()
    session.apply_deploy()
    session.start_nodes()
    session.apply_examples()
    session.show()


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    """SIGTERM ends the demo the way Ctrl-C does: through the teardown."""
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _fail(message: str) -> None:
    print(f"demo failed: {message}", file=sys.stderr, flush=True)


def _log_to(path: Path) -> None:
    """Send every log record, and any thread's uncaught exception, to ``path``, not the terminal."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)

    def log_thread_exception(hook: threading.ExceptHookArgs) -> None:
        name = hook.thread.name if hook.thread else "?"
        if hook.exc_value is None:
            logger.error("uncaught %s in thread %s", hook.exc_type.__name__, name)
        else:
            logger.error("uncaught exception in thread %s", name, exc_info=hook.exc_value)

    threading.excepthook = log_thread_exception
