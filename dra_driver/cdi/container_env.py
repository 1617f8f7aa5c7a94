"""The environment variables a DCU container gets: one naming scheme for every CDI spec we write.

A container may hold devices of several CDI specs at once (two claims, or a claim and a device
of the node spec), and the container runtime applies each device's ``env`` edits in turn, a
later value replacing an earlier one without a word. So every key names the one thing it
describes, and no two devices prepared on a node ever set a key to different values:

- ``DCU_<card>_UUID=<uuid>``: one per card, ``<card>`` being its PCI bus id with ``:`` and
  ``.`` made ``_`` and hex digits upper-cased (``0000:3b:00.0`` -> ``0000_3B_00_0``). Every
  device of a card sets it, always to the card's uuid.
- ``DCU_<card>_CLAIM=<namespace>/<name>``: the claim holding the card whole. A card is held
  whole by at most one live claim, and admin-access devices (which share the card with
  others) do not set it.
- ``DCU_VDEV<N>_PCI_BUS_ID``, ``_COMPUTE_UNITS``, ``_MEMORY_MIB``, ``_CLAIM``: one set per vDCU
  share, ``N`` being the share's node-wide vdev number (its file is ``vdev<N>.conf``), which no
  two live shares of a node ever have in common.

There is no list variable such as ``DCU_VISIBLE_DEVICES``: a list describing the whole
container cannot be a per-device edit (each device would overwrite it with its own list). The
container's DCUs are the ``DCU_*_UUID`` variables; ``parse`` reads them back (``dcu-dra verify``
checks them against the device nodes and vdev files the container has).

Pure and standard library only, so it runs inside a container from the one-file ``dcu-dra.pyz``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

#: What every variable of ours starts with.
PREFIX: Final = "DCU_"

_CARD_KEY = re.compile(r"DCU_([0-9A-F]{4})_([0-9A-F]{2})_([0-9A-F]{2})_([0-7])_(UUID|CLAIM)")
_VDCU_KEY = re.compile(r"DCU_VDEV(0|[1-9][0-9]*)_(PCI_BUS_ID|COMPUTE_UNITS|MEMORY_MIB|CLAIM)")


def card_token(pci_bus_id: str) -> str:
    """The card's part of a key: ``0000:3b:00.0`` -> ``0000_3B_00_0``."""
    return pci_bus_id.replace(":", "_").replace(".", "_").upper()


def card_variables(pci_bus_id: str, uuid: str) -> tuple[str, ...]:
    """What every device of a card sets: the card's uuid."""
    return (f"{PREFIX}{card_token(pci_bus_id)}_UUID={uuid}",)


def whole_card_variables(pci_bus_id: str, *, claim: str) -> tuple[str, ...]:
    """What a card held whole by ``claim`` (``namespace/name``) adds."""
    return (f"{PREFIX}{card_token(pci_bus_id)}_CLAIM={claim}",)


def vdcu_variables(
    vdev_id: int, *, pci_bus_id: str, compute_units: int, memory_mib: int, claim: str
) -> tuple[str, ...]:
    """What a vDCU share adds, keyed by its node-wide vdev number."""
    key = f"{PREFIX}VDEV{vdev_id}"
    return (
        f"{key}_PCI_BUS_ID={pci_bus_id}",
        f"{key}_COMPUTE_UNITS={compute_units}",
        f"{key}_MEMORY_MIB={memory_mib}",
        f"{key}_CLAIM={claim}",
    )


@dataclass(frozen=True, slots=True)
class VdcuVariables:
    """The ``DCU_VDEV<N>_*`` variables of one share as the container has them (raw strings)."""

    vdev_id: int
    values: Mapping[str, str]
    """``PCI_BUS_ID``, ``COMPUTE_UNITS``, ``MEMORY_MIB``, ``CLAIM`` -> value, as far as set."""


@dataclass(frozen=True, slots=True)
class ContainerVariables:
    """Our variables in a container's environment, read back by ``parse``."""

    uuids: Mapping[str, str] = field(default_factory=dict)
    """PCI bus id (lowercase) -> uuid, from ``DCU_<card>_UUID``."""
    whole_claims: Mapping[str, str] = field(default_factory=dict)
    """PCI bus id -> claim, from ``DCU_<card>_CLAIM``."""
    vdcus: Mapping[int, VdcuVariables] = field(default_factory=dict)


def parse(environ: Mapping[str, str]) -> ContainerVariables:
    """Read our variables out of an environment, ignoring all others. Pure.

    ``DCU_*`` variables of other tools that fit neither pattern are ignored too.
    """
    uuids: dict[str, str] = {}
    whole_claims: dict[str, str] = {}
    vdcu_values: dict[int, dict[str, str]] = {}
    for key, value in sorted(environ.items()):
        if not key.startswith(PREFIX):
            continue
        if (card := _CARD_KEY.fullmatch(key)) is not None:
            bus = f"{card[1]}:{card[2]}:{card[3]}.{card[4]}".lower()
            (uuids if card[5] == "UUID" else whole_claims)[bus] = value
        elif (vdcu := _VDCU_KEY.fullmatch(key)) is not None:
            vdcu_values.setdefault(int(vdcu[1]), {})[vdcu[2]] = value
    return ContainerVariables(
        uuids=uuids,
        whole_claims=whole_claims,
        vdcus={n: VdcuVariables(n, values) for n, values in sorted(vdcu_values.items())},
    )
