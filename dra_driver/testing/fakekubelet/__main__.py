"""``python -m dra_driver.testing.fakekubelet``: run a fake kubelet until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from dra_driver.cluster.kube import KubeClient, KubeError
from dra_driver.testing.fakekubelet.kubelet import (
    DEFAULT_CALL_TIMEOUT_S,
    DEFAULT_RETRY_INTERVAL_S,
    DEFAULT_WIPING_DELAY_S,
    FakeKubelet,
)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line; every option has a sentence of help and a default."""
    parser = argparse.ArgumentParser(
        prog="python -m dra_driver.testing.fakekubelet",
        description="Play the kubelet of one node for DRA drivers (no containers are run).",
    )
    parser.add_argument("--kubeconfig", required=True, type=Path, help="Admin kubeconfig file.")
    parser.add_argument("--node-name", required=True, help="Name of the Node to create and play.")
    parser.add_argument(
        "--registry-dir",
        required=True,
        type=Path,
        help="Plugin registration directory to watch (the kubelet's plugins_registry).",
    )
    parser.add_argument(
        "--plugins-dir",
        type=Path,
        default=None,
        help="Directory created for plugin data and DRA sockets (the kubelet's plugins dir).",
    )
    parser.add_argument(
        "--call-timeout-s",
        type=float,
        default=DEFAULT_CALL_TIMEOUT_S,
        help="Timeout of each NodePrepareResources/NodeUnprepareResources call.",
    )
    parser.add_argument(
        "--retry-interval-s",
        type=float,
        default=DEFAULT_RETRY_INTERVAL_S,
        help="Delay before a failed pod start, unprepare or registration is retried.",
    )
    parser.add_argument(
        "--wiping-delay-s",
        type=float,
        default=DEFAULT_WIPING_DELAY_S,
        help="How long a driver may have no plugin before its ResourceSlices are deleted.",
    )
    parser.add_argument(
        "--state-file",
        type=Path,
        default=None,
        help="Checkpoint file of prepared claims (default: in memory only).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="Log at DEBUG level.")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run until SIGTERM or SIGINT; a second signal exits at once."""
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        # Restore the default at once so that a stuck shutdown can still be interrupted.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        client = KubeClient.from_kubeconfig(args.kubeconfig, user_agent="fakekubelet")
        kubelet = FakeKubelet(
            client=client,
            node_name=args.node_name,
            registry_dir=args.registry_dir,
            plugins_dir=args.plugins_dir,
            call_timeout_s=args.call_timeout_s,
            retry_interval_s=args.retry_interval_s,
            wiping_delay_s=args.wiping_delay_s,
            state_file=args.state_file,
        ).start()
    except KubeError as exc:
        print(f"fakekubelet: {exc}", file=sys.stderr)
        return 1
    try:
        stop.wait()
    finally:
        kubelet.stop()
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
