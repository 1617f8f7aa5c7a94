"""The ``dcu-dra`` command line: argument parsing and error reporting only.

Every option has a help sentence, a default and, where an operator would set it in a
DaemonSet, an environment twin. The work itself is in ``commands``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

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


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser for every subcommand."""
    parser = argparse.ArgumentParser(
        prog="dcu-dra",
        description="Kubernetes DRA driver for Hygon DCUs: discovery, CDI specs, mock nodes.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="Log more (repeat for debug)."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

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
    cdi_sub = cdi.add_subparsers(dest="cdi_command", required=True, metavar="COMMAND")
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
    mock_sub = mock.add_subparsers(dest="mock_command", required=True, metavar="COMMAND")
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``dcu-dra``; returns the exit code (0 ok, 1 failure, 2 usage error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
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
