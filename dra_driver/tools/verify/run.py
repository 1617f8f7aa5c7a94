"""``verify()``: read the container's vdev directory, ``/dev`` and ``/sys``, run every check.

The order of the checks is the order of the report's lines: the vdev files and their rules,
then the device nodes, then the variables (when given the environment).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from dra_driver.cdi import container_env
from dra_driver.tools.verify.node_checks import check_vdcu_nodes, check_whole_card_nodes
from dra_driver.tools.verify.report import Card, Check, Report
from dra_driver.tools.verify.sysfs import read_sysfs
from dra_driver.tools.verify.variables import check_variables
from dra_driver.tools.verify.vdev_checks import (
    check_device_ids,
    check_mask_range,
    check_one_file_per_card,
    check_overlaps,
    check_pipe_ids,
    check_rules,
    read_vdev_file,
    vdev_entries,
)
from dra_driver.tools.verify_paths import DEFAULT_DEV_DIR, DEFAULT_SYS_DIR, DEFAULT_VDEV_DIR

__all__ = ["DEFAULT_DEV_DIR", "DEFAULT_SYS_DIR", "DEFAULT_VDEV_DIR", "verify"]


def verify(
    vdev_dir: Path = DEFAULT_VDEV_DIR,
    dev_dir: Path = DEFAULT_DEV_DIR,
    sys_dir: Path | None = DEFAULT_SYS_DIR,
    *,
    environ: Mapping[str, str] | None = None,
    allow_plain_files: bool = False,
) -> Report:
    """Check the DCU share of the container whose vdev dir, ``/dev`` and ``/sys`` are given.

    ``sys_dir`` None (or missing) skips what only sysfs can tell: the card's CU count and which
    ``/dev/dri`` nodes belong to which card (render nodes are then counted instead).
    ``allow_plain_files`` accepts regular files as device nodes, as a mock node made without
    root has them. ``environ`` (the container's environment; None skips the check) is
    compared with what the container has. Reads files only; never raises for what it finds,
    it reports it.
    """
    sysfs = read_sysfs(sys_dir)
    variables = container_env.parse(environ) if environ is not None else None
    checks: list[Check] = []
    names, ignored = vdev_entries(vdev_dir, checks)
    files = tuple(read_vdev_file(vdev_dir, name, checks) for name in names)
    configs = [(f.name, f.config) for f in files if f.config is not None]
    if files:
        check_rules(files, checks)
        check_one_file_per_card(configs, variables, checks)
        check_pipe_ids(configs, checks)
        check_overlaps(configs, checks)
        check_mask_range(configs, sysfs, checks)
        buses = sorted({f.pci_bus_id for f in files if f.pci_bus_id is not None})
        nodes = check_vdcu_nodes(buses, dev_dir, sysfs, checks, allow_plain_files)
        check_device_ids(configs, nodes, sysfs, variables, checks)
    else:
        nodes, buses = check_whole_card_nodes(vdev_dir, dev_dir, sysfs, checks, allow_plain_files)
    if variables is not None:
        check_variables(configs, nodes, sysfs, variables, checks)
    cards = tuple(
        Card(
            pci_bus_id=bus,
            compute_units=sysfs.compute_units.get(bus),
            drm_nodes=sysfs.drm_nodes.get(bus),
            vendor_id=sysfs.vendor.get(bus),
        )
        for bus in buses
    )
    return Report(
        vdev_dir=vdev_dir,
        dev_dir=dev_dir,
        sys_dir=sys_dir,
        vdev_files=files,
        ignored=tuple(ignored),
        cards=cards,
        device_nodes=tuple(nodes),
        checks=tuple(checks),
    )
