"""In-container verification: what DCU share did this container get, and will the runtime use it?

``dcu-dra verify`` runs inside a container. The DCU runtime reads ``/etc/vdev/docker/vdev*.conf``
(written by the driver, mounted read-only) and confines the process to the CU mask and memory
cap in them; a file that breaks one of the runtime's rules costs the container its accelerator
without a diagnostic. ``verify`` reads the vdev directory, the container's ``/dev`` and, when
it is there, ``/sys``, and returns a ``Report``: what the container got and one ``Check`` per
rule, each ``ok``, ``fail`` (with what to do) or ``skip`` (with why it could not be checked).

The rules are the ones ``hygon-dcu.md`` states: the strict file format (``vdev.parse_vdev``),
runtime rule 1 (``cu_count`` = popcount of the mask), rule 2 (``vdev_id`` = N of
``vdev<N>.conf``), rule 3 (``pipe_id`` unique on a card), one file per card, disjoint masks on
one card, ``device_id`` as the card's ordinal among the container's DCUs (PCI bus order), the
device nodes a DCU container needs (``/dev/kfd``, ``/dev/mkfd``, a ``/dev/dri/renderD*`` per
card) and, when given the environment, the ``DCU_*`` variables (``container_env``) against the
cards and files the container has. No vdev file at all means a whole-card container: the
device nodes and variables are checked. A failure about a share names its claim (from the
share's ``DCU_VDEV<N>_CLAIM``).

- ``run``: ``verify()``, the default paths, the order of the checks;
- ``report``: the report types (``Report``, ``Check``, ``CheckKind``, ``Status``, ...);
- ``sysfs``: what sysfs says about the PCI devices (DRM nodes, vendor, KFD compute units);
- ``vdev_checks``: the vdev files (format, the runtime's rules, masks, device ids);
- ``node_checks``: the device nodes, for vDCU and whole-card containers;
- ``variables``: the ``DCU_*`` variables;
- ``render``: the text report and the JSON document.

Reads files only; never writes, never imports gRPC, the Kubernetes client or any other
third-party package: the one-file ``dcu-dra.pyz`` (``tools.pyz``) runs it in any container
with Python alone.
"""

from dra_driver.tools.verify.render import format_report, report_document
from dra_driver.tools.verify.report import (
    Card,
    Check,
    CheckKind,
    DeviceNode,
    NodeType,
    Report,
    Status,
    VdevFile,
)
from dra_driver.tools.verify.run import (
    DEFAULT_DEV_DIR,
    DEFAULT_SYS_DIR,
    DEFAULT_VDEV_DIR,
    verify,
)

__all__ = [
    "DEFAULT_DEV_DIR",
    "DEFAULT_SYS_DIR",
    "DEFAULT_VDEV_DIR",
    "Card",
    "Check",
    "CheckKind",
    "DeviceNode",
    "NodeType",
    "Report",
    "Status",
    "VdevFile",
    "format_report",
    "report_document",
    "verify",
]
