"""What each ``dcu-dra`` subcommand does, apart from parsing its arguments.

Each function takes already-validated arguments and output streams, calls the core, and
returns the process exit code. Errors are raised as ``DriverError`` and printed by ``cli``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TextIO

from dra_driver.cdi import validate as cdi_validate
from dra_driver.cdi.build import build_node_spec
from dra_driver.cdi.files import write_spec
from dra_driver.cdi.model import qualified_id, render_spec, spec_file_name
from dra_driver.errors import DriverError
from dra_driver.node import hysmi
from dra_driver.node.devices import DcuDevice, Inventory, discover
from dra_driver.node.mock import DEFAULT_CONFIG, create_mock_node, load_config
from dra_driver.node.mock.layout import DeviceNodeKind

logger = logging.getLogger(__name__)

#: The CDI kind of the whole-device node spec.
NODE_SPEC_KIND = "hygon.com/dcu"


def device_record(device: DcuDevice) -> dict[str, object]:
    """Return the JSON form of a device printed by ``dcu-dra devices --json``."""
    return {
        "index": device.index,
        "name": device.name,
        "model": device.model,
        "deviceID": f"0x{device.device_id:04x}",
        "pciBusID": device.pci_bus_id,
        "uuid": device.uuid,
        "computeUnits": device.compute_units,
        "memoryBytes": device.memory_bytes,
        "memoryMiB": device.memory_mib,
        "numaNode": device.numa_node,
        "card": device.card,
        "render": device.render,
        "maxVdevices": device.max_vdevices,
        "kfdNode": device.kfd_node,
        "gpuID": device.gpu_id,
    }


def format_device_table(devices: tuple[DcuDevice, ...]) -> str:
    """Render devices as an aligned text table."""
    header = (
        "INDEX",
        "NAME",
        "MODEL",
        "DEVICE",
        "PCI BUS ID",
        "CUS",
        "MEMORY",
        "NUMA",
        "CARD",
        "RENDER",
        "UUID",
    )
    rows = [
        (
            str(d.index),
            d.name,
            d.model,
            f"0x{d.device_id:04x}",
            d.pci_bus_id,
            str(d.compute_units),
            f"{d.memory_mib} MiB",
            str(d.numa_node),
            d.card,
            d.render,
            d.uuid,
        )
        for d in devices
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    return "\n".join(lines) + "\n"


def crosscheck_with_hy_smi(inventory: Inventory, err: TextIO) -> None:
    """Warn on stderr where hy-smi (when installed under the root) disagrees with sysfs."""
    executable = hysmi.find_hy_smi(inventory.root)
    if executable is None:
        return
    try:
        reported = hysmi.parse_device_info(
            hysmi.run_hy_smi(executable, "virtual", "-show-device-info")
        )
    except DriverError as exc:
        err.write(f"dcu-dra: warning: hy-smi cross-check skipped: {exc}\n")
        return
    for problem in hysmi.crosscheck(inventory, reported):
        err.write(f"dcu-dra: warning: {problem}\n")


def devices(*, root: Path, as_json: bool, out: TextIO, err: TextIO) -> int:
    """``dcu-dra devices``: list the node's DCUs."""
    inventory = discover(root)
    crosscheck_with_hy_smi(inventory, err)
    if as_json:
        json.dump([device_record(d) for d in inventory.devices], out, indent=2)
        out.write("\n")
    elif inventory.devices:
        out.write(format_device_table(inventory.devices))
    else:
        err.write(f"no DCUs found under {root}\n")
    return 0


def cdi_generate(
    *, root: Path, host_root: Path | None, output_dir: Path | None, out: TextIO
) -> int:
    """``dcu-dra cdi generate``: the whole-device spec, to a directory or to stdout."""
    inventory = discover(root)
    if not inventory.devices:
        raise DriverError(f"no DCUs found under {root}: nothing to put in a CDI spec")
    spec = build_node_spec(inventory, host_root=host_root, kind=NODE_SPEC_KIND)
    if output_dir is None:
        cdi_validate.validate_spec(spec)
        out.write(render_spec(spec).decode())
        return 0
    path = write_spec(spec, output_dir, spec_file_name(NODE_SPEC_KIND, None))
    out.write(
        f"wrote {path} ({len(spec.devices)} CDI devices: "
        f"{', '.join(qualified_id(spec.kind, d.name) for d in spec.devices)})\n"
    )
    return 0


def cdi_validate_files(*, paths: list[Path], schema_dir: Path | None, out: TextIO) -> int:
    """``dcu-dra cdi validate``: exit 0 when every file is valid, 1 otherwise.

    Checks the Go library's rules and the official schema in ``schema_dir``; None means the
    copy the package ships.
    """
    schema_dir = schema_dir or cdi_validate.BUNDLED_SCHEMA_DIR
    failed = False
    for path in paths:
        problems = cdi_validate.validate_file(path, schema_dir=schema_dir)
        for problem in problems:
            out.write(f"{path}: {problem}\n")
        failed = failed or bool(problems)
    if len(paths) > 1:
        for conflict in cdi_validate.find_conflicts(paths):
            out.write(f"{conflict}\n")
            failed = True
    if not failed:
        out.write(f"{len(paths)} CDI spec(s) valid\n")
    return 1 if failed else 0


def mock_create(
    *, root: Path, config_path: Path | None, device_nodes: DeviceNodeKind, out: TextIO
) -> int:
    """``dcu-dra mock create``: write a mock DCU node."""
    config = load_config(config_path) if config_path is not None else DEFAULT_CONFIG
    create_mock_node(root, config, device_nodes=device_nodes)
    inventory = discover(root)
    out.write(f"mock DCU node written to {root}: {len(inventory.devices)} DCU(s)\n")
    return 0
