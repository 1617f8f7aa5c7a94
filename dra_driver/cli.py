"""The ``dcu-dra`` command line: argument parsing and error reporting only.

Every option has a help sentence, a default and, where an operator would set it in a
DaemonSet, an environment twin. The work itself is in ``commands``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from dra_driver import __version__
from dra_driver.errors import DriverError

#: Environment twins of options (the Helm chart sets these).
ENV_ROOT = "DCU_DRA_ROOT"
ENV_HOST_ROOT = "DCU_DRA_HOST_ROOT"
ENV_CDI_SCHEMA_DIR = "CDI_SCHEMA_DIR"
#: Static CDI specs live in /etc/cdi; the per-claim transient ones go to /var/run/cdi.
DEFAULT_STATIC_CDI_DIR = Path("/etc/cdi")


def _env_path(name: str, default: Path | None) -> Path | None:
    value = os.environ.get(name)
    return Path(value) if value else default


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise SystemExit(
            f"dcu-dra: error: environment variable {name}={value!r} is not a whole number"
        ) from None


class _Parser(argparse.ArgumentParser):
    """Usage errors are one line naming the problem and where to look, then exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser for every subcommand."""
    parser = _Parser(
        prog="dcu-dra",
        description="Kubernetes DRA driver for Hygon DCUs: discovery, CDI specs, mock nodes.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="Log more (repeat for debug)."
    )
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )

    def add_root(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--root",
            type=Path,
            default=_env_path(ENV_ROOT, Path("/")),
            help=f"Filesystem root holding the node's /sys and /dev (env {ENV_ROOT}; default /).",
        )

    devices = sub.add_parser("devices", help="List the node's DCUs.")
    add_root(devices)
    devices.add_argument("--json", action="store_true", help="Print JSON instead of a table.")

    cdi = sub.add_parser("cdi", help="Generate or validate CDI specs.")
    cdi_sub = cdi.add_subparsers(
        dest="cdi_command", required=True, metavar="COMMAND", parser_class=_Parser
    )
    generate = cdi_sub.add_parser("generate", help="Write the whole-device CDI spec of the node.")
    add_root(generate)
    generate.add_argument(
        "--host-root",
        type=Path,
        default=_env_path(ENV_HOST_ROOT, None),
        help="Where the container runtime sees --root, when it differs (env "
        f"{ENV_HOST_ROOT}; default: the same as --root).",
    )
    target = generate.add_mutually_exclusive_group()
    target.add_argument(
        "--output-dir",
        type=Path,
        default=DEFAULT_STATIC_CDI_DIR,
        help=f"Directory for the spec file (default {DEFAULT_STATIC_CDI_DIR}).",
    )
    target.add_argument("--stdout", action="store_true", help="Print the spec instead.")
    validate = cdi_sub.add_parser("validate", help="Check CDI spec files; exit 1 on problems.")
    validate.add_argument("files", nargs="+", type=Path, metavar="FILE", help="Spec files.")
    validate.add_argument(
        "--schema-dir",
        type=Path,
        default=_env_path(ENV_CDI_SCHEMA_DIR, None),
        help="Also check against the official CDI JSON schema in this directory "
        f"(schema.json + defs.json; env {ENV_CDI_SCHEMA_DIR}).",
    )

    mock = sub.add_parser("mock", help="Mock DCU nodes for kind and CI.")
    mock_sub = mock.add_subparsers(
        dest="mock_command", required=True, metavar="COMMAND", parser_class=_Parser
    )
    create = mock_sub.add_parser("create", help="Write a mock DCU node under a directory.")
    create.add_argument(
        "--root", type=Path, required=True, help="Directory to write the node into."
    )
    create.add_argument(
        "--config", type=Path, default=None, help="Mock node YAML (default: 2x Z100 + K100_AI)."
    )
    create.add_argument(
        "--device-nodes",
        choices=("auto", "char", "file"),
        default="auto",
        help="Device nodes as character devices (needs root), plain files, or auto.",
    )
    add_kubelet_plugin(sub)
    return parser


def add_kubelet_plugin(sub: argparse._SubParsersAction[_Parser]) -> None:
    """The node daemon's flags; each has an environment twin set by the Helm chart."""
    from dra_driver import DRIVER_NAME
    from dra_driver.config import DEFAULT_CDI_DIR, DEFAULT_PLUGINS_DIR, DEFAULT_REGISTRAR_DIR

    plugin = sub.add_parser(
        "kubelet-plugin",
        help="Run the node daemon: publish this node's DCUs and serve the kubelet.",
    )
    env = os.environ.get
    plugin.add_argument(
        "--node-name",
        default=env("NODE_NAME"),
        required=env("NODE_NAME") is None,
        help="Name of this node (env NODE_NAME; from the downward API in a DaemonSet).",
    )
    plugin.add_argument(
        "--driver-name",
        default=env("DRIVER_NAME", DRIVER_NAME),
        help=f"DRA driver name (env DRIVER_NAME; default {DRIVER_NAME}).",
    )
    plugin.add_argument(
        "--root",
        type=Path,
        default=_env_path(ENV_ROOT, Path("/")),
        help=f"Filesystem root holding the node's /sys and /dev (env {ENV_ROOT}; default /).",
    )
    plugin.add_argument(
        "--kubeconfig",
        type=Path,
        default=_env_path("KUBECONFIG", None),
        help="Kubeconfig file (env KUBECONFIG; default: the pod's service account).",
    )
    plugin.add_argument(
        "--registrar-dir",
        type=Path,
        default=_env_path("REGISTRAR_DIR", DEFAULT_REGISTRAR_DIR),
        help=f"Kubelet plugin registration dir (env REGISTRAR_DIR; default "
        f"{DEFAULT_REGISTRAR_DIR}).",
    )
    plugin.add_argument(
        "--plugin-data-dir",
        type=Path,
        default=_env_path("PLUGIN_DATA_DIR", None),
        help=f"Sockets and state (env PLUGIN_DATA_DIR; default {DEFAULT_PLUGINS_DIR}/<driver>).",
    )
    plugin.add_argument(
        "--cdi-dir",
        type=Path,
        default=_env_path("CDI_DIR", DEFAULT_CDI_DIR),
        help=f"Where per-claim CDI specs go (env CDI_DIR; default {DEFAULT_CDI_DIR}).",
    )
    plugin.add_argument(
        "--sharing",
        choices=("consumable", "exclusive"),
        default=env("SHARING", "consumable"),
        help="consumable: DCUs shared through consumable capacity (needs DRAConsumableCapacity);"
        " exclusive: whole DCUs only (env SHARING; default consumable).",
    )
    plugin.add_argument(
        "--max-vdevices",
        type=int,
        default=_env_int("MAX_VDEVICES", 4),
        help="vDCUs per DCU when the platform reports no limit (env MAX_VDEVICES; default 4).",
    )
    plugin.add_argument(
        "--boot-id-file",
        type=Path,
        default=_env_path("BOOT_ID_FILE", Path("/proc/sys/kernel/random/boot_id")),
        help=argparse.SUPPRESS,  # tests simulate a reboot by changing the boot id
    )
    plugin.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=env("LOG_FORMAT", "text"),
        help="Log as text or JSON lines (env LOG_FORMAT; default text).",
    )


def run_kubelet_plugin(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Validate the daemon's flags (a bad one is a usage error) and run it."""
    started_at = time.monotonic()
    from dra_driver import daemon, logs
    from dra_driver.config import ConfigError, PluginConfig
    from dra_driver.slices import Sharing

    config = PluginConfig(
        node_name=args.node_name,
        driver_name=args.driver_name,
        root=args.root,
        kubeconfig=args.kubeconfig,
        registrar_dir=args.registrar_dir,
        plugin_data_dir=args.plugin_data_dir,
        cdi_dir=args.cdi_dir,
        sharing=Sharing(args.sharing),
        max_vdevices=args.max_vdevices,
        boot_id_file=args.boot_id_file,
    )
    try:
        config.validate()
    except ConfigError as exc:
        parser.exit(2, f"dcu-dra kubelet-plugin: error: {exc}\n")
    logs.configure(verbosity=args.verbose, log_format=args.log_format)
    return daemon.run(config, started_at=started_at)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``dcu-dra``; returns the exit code (0 ok, 1 failure, 2 usage error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "kubelet-plugin":
        try:
            return run_kubelet_plugin(args, parser)
        except DriverError as exc:
            # Logging is configured by now: the one line goes where operators read logs.
            logging.getLogger("dra_driver").error("cannot run: %s", exc)
            return 1
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from dra_driver import commands  # after parsing: --help stays fast

    out, err = sys.stdout, sys.stderr
    try:
        if args.command == "devices":
            return commands.devices(root=args.root, as_json=args.json, out=out, err=err)
        if args.command == "cdi" and args.cdi_command == "generate":
            return commands.cdi_generate(
                root=args.root,
                host_root=args.host_root,
                output_dir=None if args.stdout else args.output_dir,
                out=out,
            )
        if args.command == "cdi" and args.cdi_command == "validate":
            return commands.cdi_validate_files(
                paths=args.files, schema_dir=args.schema_dir, out=out
            )
        if args.command == "mock" and args.mock_command == "create":
            return commands.mock_create(
                root=args.root,
                config_path=args.config,
                device_nodes=args.device_nodes,
                out=out,
            )
    except DriverError as exc:
        err.write(f"dcu-dra: error: {exc}\n")
        return 1
    except OSError as exc:
        # Paths the user gave us (output dirs, config files) that the OS refuses.
        where = f" {exc.filename}" if exc.filename else ""
        err.write(f"dcu-dra: error:{where}: {exc.strerror or exc}\n")
        return 1
    except KeyboardInterrupt:
        return 130
    parser.error(f"unknown command {args.command!r}")
    return 2  # pragma: no cover - parser.error exits
