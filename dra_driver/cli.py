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
from typing import Any, NoReturn

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


def _absolute(path: Path) -> Path:
    """``path`` made absolute against our working directory (``..`` folded, links kept).

    For paths that name this process's own view of the node (``--root``, the daemon's
    directories): they go into CDI specs and kubelet registrations, whose readers resolve a
    relative path against a working directory of their own.
    """
    return Path(os.path.abspath(path))


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


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


def _env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    if value.strip().lower() in _TRUE:
        return True
    if value.strip().lower() in _FALSE:
        return False
    raise SystemExit(
        f"dcu-dra: error: environment variable {name}={value!r} is not a boolean (true or false)"
    )


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return float(value)
    except ValueError:
        raise SystemExit(
            f"dcu-dra: error: environment variable {name}={value!r} is not a number"
        ) from None


class _Parser(argparse.ArgumentParser):
    """Usage errors are one line naming the problem and where to look, then exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _top_parser(prog: str, description: str) -> tuple[_Parser, Any]:
    """A program's parser with --version and -v, and its subcommands' action."""
    parser = _Parser(prog=prog, description=description)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="Log more (repeat for debug)."
    )
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )
    return parser, sub


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser for every subcommand."""
    parser, sub = _top_parser(
        "dcu-dra", "Kubernetes DRA driver for Hygon DCUs: discovery, CDI specs, mock nodes."
    )

    def add_root(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--root",
            type=Path,
            default=_env_path(ENV_ROOT, Path("/")),
            help=f"Filesystem root holding the node's /sys and /dev; a relative path is taken "
            f"from the working directory (env {ENV_ROOT}; default /).",
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
        help="Where the container runtime sees --root, when it differs; an absolute path "
        f"(env {ENV_HOST_ROOT}; default: the same as --root).",
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
        help="Check against the official CDI JSON schema in this directory (schema.json + "
        f"defs.json; env {ENV_CDI_SCHEMA_DIR}; default: the copy shipped with dcu-dra).",
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
    add_mock_fault(mock_sub)
    add_kubelet_plugin(sub)
    add_verify(sub)
    add_convert(sub)
    add_status(sub)
    return parser


def build_kubectl_parser() -> argparse.ArgumentParser:
    """The parser of ``kubectl-dcu``: the user commands of a workstation, under kubectl's name."""
    parser, sub = _top_parser(
        "kubectl dcu", "Hygon DCUs in a Kubernetes cluster (the dcu.hygon.com DRA driver)."
    )
    add_status(sub)
    return parser


def add_status(sub: argparse._SubParsersAction[_Parser]) -> None:
    """``status``: every DCU of the cluster (or a node), who holds it, what is pending."""
    from dra_driver import DRIVER_NAME

    status = sub.add_parser(
        "status",
        help="Show each DCU of the cluster: health, CUs, memory and vDCU slots allocated, and "
        "the claims and pods holding it.",
        description="One row per DCU, computed from the ResourceSlices and ResourceClaims by "
        "the scheduler's rules, then a summary and the pending claims of the driver's "
        "DeviceClasses with what the scheduler said about them. Needs list and watch on "
        "resourceslices, resourceclaims, deviceclasses (resource.k8s.io) and pods, and get on "
        "nodes with --node.",
    )
    status.add_argument(
        "--node", default=None, metavar="NAME", help="Only the DCUs of this node (default: all)."
    )
    status.add_argument(
        "-o",
        "--output",
        choices=("table", "wide", "json", "yaml"),
        default="table",
        help="table; wide (adds the PCI bus ID and a line per claim: share ID and amounts); "
        "json or yaml for scripts (exact bytes and CUs). Default table.",
    )
    status.add_argument(
        "-w",
        "--watch",
        action="store_true",
        help="Keep watching and redraw on every change (watch requests, no polling).",
    )
    status.add_argument(
        "--kubeconfig",
        type=Path,
        default=None,
        help="Kubeconfig file (default: $KUBECONFIG, then ~/.kube/config, then the pod's "
        "service account).",
    )
    status.add_argument(
        "--context", default=None, help="Kubeconfig context (default: its current-context)."
    )
    status.add_argument(
        "--driver-name",
        default=os.environ.get("DRIVER_NAME", DRIVER_NAME),
        help=f"DRA driver name (env DRIVER_NAME; default {DRIVER_NAME}).",
    )


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
    add_operations_flags(plugin)
    add_health_flags(plugin)
    add_endpoint_flags(plugin)
    plugin.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=env("LOG_FORMAT", "text"),
        help="Log as text or JSON lines (env LOG_FORMAT; default text).",
    )


def add_operations_flags(plugin: argparse.ArgumentParser) -> None:
    """Rolling updates, claim status and orphan cleanup (issue 7 items 4-6)."""
    from dra_driver.config import DEFAULT_ORPHAN_INTERVAL_S

    env = os.environ.get
    plugin.add_argument(
        "--rolling-update",
        action=argparse.BooleanOptionalAction,
        default=_env_bool("ROLLING_UPDATE", False),
        help="Name the sockets after --pod-uid so an old and a new instance can serve side by "
        "side during a DaemonSet rolling update (env ROLLING_UPDATE; default false).",
    )
    plugin.add_argument(
        "--pod-uid",
        default=env("POD_UID") or None,
        help="UID of this plugin's pod, needed by --rolling-update (env POD_UID; from the "
        "downward API metadata.uid).",
    )
    plugin.add_argument(
        "--claim-status",
        action=argparse.BooleanOptionalAction,
        default=_env_bool("CLAIM_STATUS", False),
        help="Write status.devices (CUs, CU mask, pipe id, memory, vdev file) of prepared "
        "claims (env CLAIM_STATUS; default false).",
    )
    plugin.add_argument(
        "--orphan-interval",
        type=float,
        default=_env_float("ORPHAN_INTERVAL", DEFAULT_ORPHAN_INTERVAL_S),
        metavar="SECONDS",
        help="Unprepare prepared claims whose ResourceClaim is gone, at start and this often; "
        f"0 = off (env ORPHAN_INTERVAL; default {DEFAULT_ORPHAN_INTERVAL_S:g}).",
    )


def add_mock_fault(mock_sub: argparse._SubParsersAction[_Parser]) -> None:
    """``mock fault``: make a mock DCU look lost, or recover it (issue 7 item 1)."""
    fault = mock_sub.add_parser("fault", help="Make a mock DCU look lost, or recover it.")
    fault.add_argument("--root", type=Path, required=True, help="The mock node's directory.")
    fault.add_argument(
        "--device",
        type=int,
        required=True,
        metavar="N",
        help="DCU number, in PCI order as 'dcu-dra devices' prints it.",
    )
    fault.add_argument(
        "--kind",
        choices=("lost", "recover"),
        required=True,
        help="lost: remove its device nodes and KFD topology node, config space reads all ones;"
        " recover: restore exactly what lost removed.",
    )


def add_health_flags(plugin: argparse.ArgumentParser) -> None:
    """Device health checks (issue 7 item 1)."""
    from dra_driver.node.health import DEFAULT_CHECK_INTERVAL_S

    plugin.add_argument(
        "--health-interval",
        type=float,
        default=_env_float("HEALTH_INTERVAL", DEFAULT_CHECK_INTERVAL_S),
        metavar="SECONDS",
        help="How often device health is checked; unhealthy DCUs are tainted (env "
        f"HEALTH_INTERVAL; default {DEFAULT_CHECK_INTERVAL_S:g}).",
    )


def add_endpoint_flags(plugin: argparse.ArgumentParser) -> None:
    """The Prometheus and liveness endpoints (issue 7 items 2-3); both off by default."""
    plugin.add_argument(
        "--metrics-addr",
        default=os.environ.get("METRICS_ADDR", ""),
        metavar="HOST:PORT",
        help="Serve Prometheus metrics at http://HOST:PORT/metrics (:PORT = every interface; "
        "env METRICS_ADDR; default empty = off).",
    )
    plugin.add_argument(
        "--healthcheck-port",
        type=int,
        default=_env_int("HEALTHCHECK_PORT", 0),
        metavar="PORT",
        help="Serve the gRPC liveness check (grpc.health.v1, service 'liveness') on this TCP "
        "port on every interface (env HEALTHCHECK_PORT; default 0 = off; the chart uses 51515).",
    )


def run_kubelet_plugin(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Validate the daemon's flags (a bad one is a usage error) and run it."""
    started_at = time.monotonic()
    from dra_driver import daemon
    from dra_driver.cluster.slices import Sharing
    from dra_driver.config import ConfigError, PluginConfig
    from dra_driver.util import logs

    config = PluginConfig(
        node_name=args.node_name,
        driver_name=args.driver_name,
        root=_absolute(args.root),
        kubeconfig=args.kubeconfig,
        registrar_dir=_absolute(args.registrar_dir),
        plugin_data_dir=None if args.plugin_data_dir is None else _absolute(args.plugin_data_dir),
        cdi_dir=_absolute(args.cdi_dir),
        sharing=Sharing(args.sharing),
        max_vdevices=args.max_vdevices,
        boot_id_file=args.boot_id_file,
        rolling_update=args.rolling_update,
        pod_uid=args.pod_uid,
        claim_status=args.claim_status,
        orphan_interval_s=args.orphan_interval,
        health_interval_s=args.health_interval,
        metrics_addr=args.metrics_addr,
        healthcheck_port=args.healthcheck_port,
    )
    try:
        config.validate()
    except ConfigError as exc:
        parser.exit(2, f"dcu-dra kubelet-plugin: error: {exc}\n")
    logs.configure(verbosity=args.verbose, log_format=args.log_format)
    return daemon.run(config, started_at=started_at)


def add_verify(sub: argparse._SubParsersAction[_Parser]) -> None:
    """``dcu-dra verify``: run inside a container to check the DCU share it got."""
    from dra_driver.tools.verify_paths import DEFAULT_DEV_DIR, DEFAULT_SYS_DIR, DEFAULT_VDEV_DIR

    verify = sub.add_parser(
        "verify",
        help="Inside a container: check its vdev files and DCU device nodes; exit 1 on problems.",
    )
    verify.add_argument(
        "--vdev-dir",
        type=Path,
        default=DEFAULT_VDEV_DIR,
        help=f"Where the DCU runtime reads vdev<N>.conf files (default {DEFAULT_VDEV_DIR}); "
        "none there means a whole-card container.",
    )
    verify.add_argument(
        "--dev-dir",
        type=Path,
        default=DEFAULT_DEV_DIR,
        help=f"The container's device directory (default {DEFAULT_DEV_DIR}).",
    )
    verify.add_argument(
        "--sys-dir",
        type=Path,
        default=DEFAULT_SYS_DIR,
        help=f"sysfs, to map cards to DRM nodes and read their CU counts (default "
        f"{DEFAULT_SYS_DIR}; when missing, render nodes are counted instead).",
    )
    verify.add_argument("--json", action="store_true", help="Print JSON instead of text.")
    verify.add_argument(
        "--no-env",
        action="store_true",
        help="Do not check the DCU_* variables (when run outside the container, e.g. on a "
        "laid-out view of it).",
    )
    verify.add_argument(
        "--allow-plain-files",
        action="store_true",
        help="Accept regular files as device nodes (a mock node made without root).",
    )


def run_verify(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Print the verification report; 0 when every check passes, 1 otherwise."""
    import json

    from dra_driver.tools import verify

    if not args.dev_dir.is_dir():
        parser.exit(
            2,
            f"dcu-dra verify: error: --dev-dir {args.dev_dir} is not a directory "
            "(see 'dcu-dra verify --help')\n",
        )
    report = verify.verify(
        args.vdev_dir,
        args.dev_dir,
        args.sys_dir,
        environ=None if args.no_env else os.environ,
        allow_plain_files=args.allow_plain_files,
    )
    if args.json:
        json.dump(verify.report_document(report), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(verify.format_report(report))
    return 0 if report.ok else 1


def add_convert(sub: argparse._SubParsersAction[_Parser]) -> None:
    """``dcu-dra convert``: HAMi DCU manifests to this driver's DRA claims (a user tool)."""
    convert = sub.add_parser(
        "convert",
        help="Turn HAMi DCU workloads (hygon.com/dcunum, dcumem, dcucores) into DRA claims.",
        description="Print the DRA equivalent of the HAMi manifests in FILE as multi-document "
        "YAML: a ResourceClaimTemplate per DCU container, then the workload using it. "
        "Documents that ask for no DCU pass through unchanged; warnings go to stderr.",
    )
    convert.add_argument(
        "file", metavar="FILE", help="YAML file with one or more manifests ('-' for stdin)."
    )
    size = convert.add_mutually_exclusive_group()
    size.add_argument(
        "--compute-units",
        type=int,
        default=None,
        metavar="N",
        help="Compute units of one DCU, to turn hygon.com/dcucores percentages into CUs "
        "(the computeUnits column of `dcu-dra devices`; default: none, shares then fail).",
    )
    size.add_argument(
        "--model",
        default=None,
        metavar="NAME",
        help="DCU model (K100, K100_AI, K100_LC_AI, K100_LC_E_AI, Z100, Z100L): its CU count "
        "converts percentages, and shares are kept on that model (default: none).",
    )
    convert.add_argument(
        "--namespace",
        default=None,
        metavar="NS",
        help="Namespace for converted workloads (and their claim templates) that have none "
        "(default: leave them without one).",
    )


def run_convert(args: argparse.Namespace) -> int:
    """Print the converted manifests; 0 on success, 1 on bad input, 2 on bad flags."""
    from dra_driver.tools import convert

    try:
        options = convert.ConvertOptions(
            compute_units=args.compute_units, model=args.model, namespace=args.namespace
        )
    except DriverError as exc:
        sys.stderr.write(f"dcu-dra convert: error: {exc} (see 'dcu-dra convert --help')\n")
        return 2
    try:
        if args.file == "-":
            text, source = sys.stdin.read(), "<stdin>"
        else:
            text, source = Path(args.file).read_text(encoding="utf-8"), args.file
        result = convert.convert_text(text, options, source=source)
    except DriverError as exc:
        sys.stderr.write(f"dcu-dra: error: {exc}\n")
        return 1
    except UnicodeDecodeError:
        sys.stderr.write(f"dcu-dra: error: {args.file}: not UTF-8 text\n")
        return 1
    except OSError as exc:
        sys.stderr.write(f"dcu-dra: error: {args.file}: {exc.strerror or exc}\n")
        return 1
    for warning in result.warnings:
        sys.stderr.write(f"dcu-dra convert: warning: {warning}\n")
    sys.stdout.write(convert.dump_documents(result.documents))
    return 0


#: What to run when the ``status`` extra is missing (the httpx CLI's install hint).
STATUS_INSTALL_HINT = "pip install 'dcu-dra[status]'"


def run_status(args: argparse.Namespace, prog: str) -> int:
    """Print the status (once or ``--watch``); 0 on success, 1 with one line on failure."""
    try:
        from dra_driver.tools.status.render import Output
        from dra_driver.tools.status.run import StatusOptions
        from dra_driver.tools.status.run import run_status as run
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] != "kubernetes":
            raise
        sys.stderr.write(
            f"{prog} status: error: needs the Kubernetes Python client: {STATUS_INSTALL_HINT}\n"
        )
        return 1
    options = StatusOptions(
        driver=args.driver_name,
        node=args.node,
        output=Output(args.output),
        watch=args.watch,
        kubeconfig=args.kubeconfig,
        context=args.context,
    )
    try:
        return run(options, sys.stdout)
    except DriverError as exc:
        sys.stderr.write(f"{prog} status: error: {exc}\n")
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `| head`: the reader is gone, nothing to report
        return 0


def _host_root(host_root: Path | None, parser: argparse.ArgumentParser) -> Path | None:
    """``--host-root`` as given; a relative one is a usage error (exit 2).

    It names the node as the container runtime sees it, from another mount namespace and
    working directory: unlike ``--root``, ours cannot make it absolute.
    """
    if host_root is None or host_root.is_absolute():
        return host_root
    parser.exit(
        2,
        f"dcu-dra cdi generate: error: --host-root {host_root} (flag or {ENV_HOST_ROOT}) is a "
        "relative path: give the absolute path at which the container runtime sees the node "
        "(the runtime would resolve a relative one against its own working directory)\n",
    )


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
    if args.command == "verify":
        return run_verify(args, parser)
    if args.command == "convert":
        return run_convert(args)
    if args.command == "status":
        _configure_status_logging(args.verbose)
        return run_status(args, "dcu-dra")
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from dra_driver import commands  # after parsing: --help stays fast

    out, err = sys.stdout, sys.stderr
    try:
        if args.command == "devices":
            return commands.devices(root=_absolute(args.root), as_json=args.json, out=out, err=err)
        if args.command == "cdi" and args.cdi_command == "generate":
            return commands.cdi_generate(
                root=_absolute(args.root),
                host_root=_host_root(args.host_root, parser),
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
        if args.command == "mock" and args.mock_command == "fault":
            from dra_driver.node.mock.fault import fault_command

            return fault_command(root=args.root, device=args.device, kind=args.kind, out=out)
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


def kubectl_dcu_main(argv: Sequence[str] | None = None) -> int:
    """Run ``kubectl-dcu`` (``kubectl dcu status``: kubectl runs plugins found on PATH)."""
    args = build_kubectl_parser().parse_args(argv)
    _configure_status_logging(args.verbose)
    return run_status(args, "kubectl dcu")


def _configure_status_logging(verbosity: int) -> None:
    # The kubernetes client logs its requests at DEBUG: only -vv shows them.
    logging.basicConfig(
        level=logging.WARNING - 10 * min(verbosity, 2),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
