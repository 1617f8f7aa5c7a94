"""``dcu-dra status``: one snapshot, or a redraw on every change (``--watch``).

Glue only: :mod:`source` reads the cluster, :mod:`model` computes, :mod:`render` formats.
"""

from __future__ import annotations

import json
import queue
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from dra_driver.tools.status.model import ClusterStatus, build_status, driver_classes
from dra_driver.tools.status.render import Output, render, status_document
from dra_driver.tools.status.source import (
    ClusterReader,
    Event,
    Kind,
    Snapshot,
    Store,
    connect,
    wait_quiet,
)

#: Events closer together than this are drawn once (see ``source.wait_quiet``).
SETTLE_S = 0.2
#: ANSI: cursor home, clear the screen; only written to a terminal.
CLEAR_SCREEN = "\x1b[H\x1b[2J"


@dataclass(frozen=True, slots=True)
class StatusOptions:
    """What ``dcu-dra status`` was asked for."""

    driver: str
    node: str | None = None
    output: Output = Output.TABLE
    watch: bool = False
    kubeconfig: Path | None = None
    context: str | None = None


def compute(snapshot: Snapshot, options: StatusOptions) -> ClusterStatus:
    """The status of one snapshot."""
    return build_status(
        slices=snapshot.slices,
        claims=snapshot.claims,
        pods=snapshot.pods,
        driver=options.driver,
        classes=driver_classes(snapshot.classes, options.driver),
        node=options.node,
    )


def run_status(options: StatusOptions, out: TextIO) -> int:
    """Print the status once, or on every change until interrupted; raises ``StatusError``."""
    reader = ClusterReader(
        connect(options.kubeconfig, options.context), driver=options.driver, node=options.node
    )
    reader.check_node()
    # Also with --watch: the first frame at once, and a missing permission or an unreachable
    # server as one line now (the watch threads would retry a lost connection for ever).
    status = compute(reader.snapshot(), options)
    if not options.watch:
        out.write(render(status, options.output))
        return 0
    watch_status(reader, options, out, first=status)
    return 0  # pragma: no cover - watch_status returns only by an exception


def watch_status(
    reader: ClusterReader, options: StatusOptions, out: TextIO, *, first: ClusterStatus
) -> None:
    """Draw ``first``, then redraw on every change; returns only by an exception.

    Ctrl-C (KeyboardInterrupt) or a ``StatusError`` of a watch end it. Each kind is listed
    and then watched on its own thread; nothing polls. A terminal gets the screen cleared
    before each frame; a pipe gets the frames one after the other (JSON: one compact document
    per line; YAML: ``---`` between documents; tables: a blank line).
    """
    last = _frame(first, options.output)
    _draw(last, options.output, out)
    events: queue.Queue[Event] = queue.Queue()
    stop = threading.Event()
    threads = [
        threading.Thread(
            target=reader.follow, args=(kind, events, stop), name=f"watch-{kind}", daemon=True
        )
        for kind in Kind
    ]
    for thread in threads:
        thread.start()
    store = Store()
    try:
        while True:
            for event in wait_quiet(events, events.get(), SETTLE_S):
                store.apply(event)
            if not store.is_complete:
                continue
            status = compute(store.snapshot(), options)
            frame = _frame(status, options.output)
            if frame == last:
                continue
            last = frame
            _draw(frame, options.output, out)
    finally:
        stop.set()


def _frame(status: ClusterStatus, output: Output) -> str:
    if output is Output.JSON:
        return json.dumps(status_document(status), separators=(",", ":")) + "\n"
    return render(status, output)


def _draw(frame: str, output: Output, out: TextIO) -> None:
    if out.isatty() and output in (Output.TABLE, Output.WIDE):
        stamp = datetime.now(UTC).astimezone().strftime("%H:%M:%S")
        out.write(f"{CLEAR_SCREEN}dcu-dra status (watching, {stamp}; Ctrl-C to stop)\n\n{frame}")
    elif output is Output.YAML:
        out.write(f"---\n{frame}")
    elif output is Output.JSON:
        out.write(frame)
    else:
        out.write(f"{frame}\n")
    out.flush()
