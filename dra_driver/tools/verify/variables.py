"""The check of the ``DCU_*`` variables against the cards and vdev files the container has.

The claim's CDI spec sets the variables per device (``cdi.container_env``); this compares what
``container_env.parse`` reads back with the vdev files and the DCUs whose render nodes are here.
"""

from __future__ import annotations

from collections.abc import Sequence

from dra_driver.cdi import container_env
from dra_driver.tools.verify.node_checks import dcus_present, renders_present
from dra_driver.tools.verify.report import REWRITE_HINT, Check, CheckKind, DeviceNode, Status
from dra_driver.tools.verify.sysfs import Sysfs
from dra_driver.vdcu.vdev import VdevConfig


def check_variables(
    configs: Sequence[tuple[str, VdevConfig]],
    nodes: Sequence[DeviceNode],
    sysfs: Sysfs,
    variables: container_env.ContainerVariables,
    checks: list[Check],
) -> None:
    """The ``DCU_*`` variables match the vdev files and the cards whose nodes are here."""
    problems: list[str] = []
    files = {config.vdev_id: (name, config) for name, config in configs}
    for vdev_id, (name, config) in sorted(files.items()):
        vdcu = variables.vdcus.get(vdev_id)
        if vdcu is None:
            problems.append(f"{name} has no DCU_VDEV{vdev_id}_* variables")
            continue
        expected = {
            "PCI_BUS_ID": config.pci_bus_id,
            "COMPUTE_UNITS": str(config.cu_count),
            "MEMORY_MIB": str(config.memory_mib),
        }
        problems.extend(
            f"DCU_VDEV{vdev_id}_{key} is {vdcu.values.get(key)!r}, but {name} says {value!r}"
            for key, value in expected.items()
            if vdcu.values.get(key) != value
        )
    problems.extend(
        f"DCU_VDEV{vdev_id}_* describe a share whose vdev{vdev_id}.conf the container lacks"
        for vdev_id in sorted(set(variables.vdcus) - set(files))
    )
    cards = {config.pci_bus_id for _, config in configs}
    renders = renders_present(nodes)
    # Only a sysfs that maps this container's render nodes to cards can say which card a
    # variable's render node is (a container's /sys is the host's: on a node whose DCUs it
    # does not list, the render nodes are counted instead).
    if sysfs.available and any(n.pci_bus_id is not None for n in renders):
        cards |= dcus_present(nodes, sysfs)
        problems.extend(
            f"DCU_{container_env.card_token(bus)}_UUID names {bus}, whose render node this "
            "container lacks"
            for bus in sorted(set(variables.uuids) - cards)
        )
    elif len(variables.uuids) > len(renders):
        problems.append(
            f"{len(variables.uuids)} DCU_*_UUID variables but {len(renders)} render node(s) "
            "in the container (counted: sysfs maps none of them to a card)"
        )
    problems.extend(
        f"{bus} has no DCU_{container_env.card_token(bus)}_UUID variable"
        for bus in sorted(cards - set(variables.uuids))
    )
    for problem in problems:
        checks.append(
            Check(
                CheckKind.VARIABLES,
                Status.FAIL,
                f"{problem}; the claim's CDI spec sets these per device: {REWRITE_HINT}",
            )
        )
    if not problems:
        described = ", ".join(sorted(variables.uuids)) or "none"
        checks.append(
            Check(
                CheckKind.VARIABLES,
                Status.OK,
                f"DCU_* variables match the container's cards ({described}) and "
                f"{len(files)} vdev file(s)",
            )
        )
