"""The floor of a DRA call: a gRPC server whose NodePrepareResources does nothing.

Run as a child process (``python -m bench.empty_server SOCKET``), as the daemon is, so the
client and the server do not share an interpreter lock. It serves ``v1.DRAPlugin`` on a unix
socket with the daemon's socket server and worker count; the handlers return an empty answer
at once. It runs until SIGTERM.
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from typing import Any

from dra_driver.kubeletplugin._pb import dra_v1_pb2, dra_v1_pb2_grpc
from dra_driver.kubeletplugin.plugin_server import DRA_WORKERS
from dra_driver.kubeletplugin.server import UnixSocketServer


class EmptyDraServicer:
    """Answers every call with an empty response."""

    def NodePrepareResources(self, request: Any, context: Any) -> Any:  # noqa: N802
        """Return an empty answer."""
        return dra_v1_pb2.NodePrepareResourcesResponse()

    def NodeUnprepareResources(self, request: Any, context: Any) -> Any:  # noqa: N802
        """Return an empty answer."""
        return dra_v1_pb2.NodeUnprepareResourcesResponse()


def main(argv: list[str]) -> int:
    """Serve on ``argv[0]`` until SIGTERM."""
    if len(argv) != 1:
        print("usage: python -m bench.empty_server SOCKET", file=sys.stderr)
        return 2
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda _signum, _frame: stop.set())
    server = UnixSocketServer(
        Path(argv[0]),
        name="empty",
        add_services=lambda grpc_server: dra_v1_pb2_grpc.add_DRAPluginServicer_to_server(
            EmptyDraServicer(), grpc_server
        ),
        max_workers=DRA_WORKERS,
    )
    server.start()
    stop.wait()
    server.stop(1.0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
