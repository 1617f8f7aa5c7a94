"""``dcu-dra status`` (also ``kubectl dcu status``): the cluster's DCUs at a glance.

One row per DCU: node, device, model, health (its taints), CUs, memory and vDCU slots
allocated out of the total, and the claims and pods holding it; then a summary and the
pending claims of the driver's DeviceClasses with what the scheduler said about them.

- ``model``: pure; slices, claims and pods (wire-form dicts) to typed rows, by the scheduler's
  rules;
- ``render``: pure; the table (plain or wide), the summary, JSON and YAML;
- ``source``: the official ``kubernetes`` client (kubeconfig, contexts, exec plugins, OIDC):
  list, watch, and one-line errors;
- ``run``: the command, once or ``--watch``.

``source`` and ``run`` need the ``status`` extra (``pip install 'dcu-dra[status]'``); the
CLI prints that hint when the client is missing.
"""

from dra_driver.tools.status.model import (
    ClusterStatus,
    DeviceStatus,
    Holder,
    PendingClaim,
    build_status,
    driver_classes,
)
from dra_driver.tools.status.render import Output, render, status_document

__all__ = [
    "ClusterStatus",
    "DeviceStatus",
    "Holder",
    "Output",
    "PendingClaim",
    "build_status",
    "driver_classes",
    "render",
    "status_document",
]
