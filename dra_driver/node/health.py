"""Device health: a fresh look at the node, judged against the DCUs discovered at start.

Owns what "healthy" means and the bookkeeping around it; never speaks gRPC or to the API
server. ``observe`` makes pure reads under the injected root (as ``devices`` does), ``advance``
turns observations into ``DeviceHealth`` records that remember since when a status holds,
``HealthBoard`` hands the latest records to readers on other threads, and ``HealthMonitor``
runs the check periodically and tells listeners (the slice publisher) about changes.

What is checked, per DCU, and what it corresponds to on a real node:

====================  ==============================================  =======================
Reason (taint value)  Check under ``--root``                          On hardware
====================  ==============================================  =======================
``PciDeviceGone``     ``/sys/bus/pci/devices/<bdf>`` is gone          The kernel removes the
                                                                      device on hot-unplug or
                                                                      surprise removal
                                                                      (confirmed, any PCI
                                                                      device).
``NotResponding``     the vendor id at the start of the device's      A device that fell off
                      ``config`` file reads ``0xffff``                the bus answers config
                                                                      reads with all ones
                                                                      (confirmed PCI
                                                                      behaviour; see note).
``NotInKfdTopology``  no KFD topology node with ``simd_count > 0``    amdgpu removes a lost
                      sits at the device's PCI address any more       GPU's topology node;
                                                                      that hycu does the same
                                                                      is unconfirmed.
``DeviceNodeMissing`` ``/dev/dri/cardN`` or ``renderDN`` is gone      The DRM device was
                                                                      unregistered (unbind,
                                                                      unplug).
``KfdMissing``        ``/dev/kfd`` is gone (every DCU)                The hycu module was
                                                                      unloaded.
``RasUncorrectable``  ``<bdf>/ras/*_err_count`` reports ``ue: N > 0`` amdgpu's RAS counters
                                                                      (``ue``/``ce`` lines);
                                                                      whether hycu exposes
                                                                      them on DCUs is
                                                                      unconfirmed.
====================  ==============================================  =======================

Note on ``NotResponding``: reading ``config`` wakes a runtime-suspended PCI device. Server
DCUs do not runtime-suspend (unconfirmed for every SKU); the check reads only 2 bytes.

A device with several problems is Unhealthy with the first reason above and a message that
lists all of them. A check that cannot decide (a file that exists but cannot be read, a corrupt
topology file where the device should be) makes the device Unknown, never Unhealthy: our own
read problems must not take a DCU away from the scheduler.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from dra_driver.errors import DiscoveryError
from dra_driver.node.devices import (
    DcuDevice,
    DeviceName,
    Inventory,
    read_properties,
)

logger = logging.getLogger(__name__)

#: How often the daemon looks at the node by default. The health stream re-sends at least
#: every 10 s and the kubelet trusts a report for 30 s, so a check every 5 s keeps every
#: report fresh with room for a slow check.
DEFAULT_CHECK_INTERVAL_S = 5.0
#: Bounds of the configurable interval: faster wastes CPU on sysfs reads; slower than 10 s
#: would let reports age towards the kubelet's 30 s timeout between checks.
MIN_CHECK_INTERVAL_S = 0.1
MAX_CHECK_INTERVAL_S = 10.0
#: A PCI config space read of a device that no longer answers returns all ones.
_DEAD_VENDOR_ID = 0xFFFF


class HealthStatus(StrEnum):
    """A device's health, named as Kubernetes shows it in the Pod status."""

    UNKNOWN = "Unknown"
    HEALTHY = "Healthy"
    UNHEALTHY = "Unhealthy"


class UnhealthyReason(StrEnum):
    """Why a device is Unhealthy; short and label-value safe (it becomes the taint value)."""

    PCI_DEVICE_GONE = "PciDeviceGone"
    NOT_RESPONDING = "NotResponding"
    NOT_IN_KFD_TOPOLOGY = "NotInKfdTopology"
    DEVICE_NODE_MISSING = "DeviceNodeMissing"
    KFD_MISSING = "KfdMissing"
    RAS_UNCORRECTABLE = "RasUncorrectable"


@dataclass(frozen=True, slots=True)
class Observation:
    """What one check saw of one device."""

    status: HealthStatus
    reason: UnhealthyReason | None
    """Set exactly when ``status`` is Unhealthy."""
    message: str
    """Human-readable detail (empty when healthy)."""


_ALL_GOOD = Observation(status=HealthStatus.HEALTHY, reason=None, message="")


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceHealth:
    """The health of one device as the driver reports it."""

    device: DeviceName
    status: HealthStatus
    reason: UnhealthyReason | None
    message: str
    since: float
    """Unix seconds at which ``status`` and ``reason`` became what they are."""
    checked_at: float
    """Unix seconds of the check that confirmed this record (the stream's update time)."""

    @property
    def verdict(self) -> tuple[HealthStatus, UnhealthyReason | None, str]:
        """What a change is measured by (the timestamps change on every check)."""
        return (self.status, self.reason, self.message)


# --- the check ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Topology:
    """The KFD topology as seen now: accelerator nodes by PCI address, and unreadable nodes."""

    bus_ids: frozenset[str]
    unreadable: tuple[str, ...]


def observe(inventory: Inventory) -> dict[DeviceName, Observation]:
    """Look at the node again and judge every device of ``inventory``.

    Pure reads under ``inventory.root``; never raises for a missing or unreadable file (that
    is what it reports). Deterministic for a given tree.
    """
    root = inventory.root
    topology = _read_topology(root)
    kfd_present = _exists(root / "dev/kfd")
    return {
        device.name: _observe_device(root, device, topology, kfd_present=kfd_present)
        for device in inventory.devices
    }


def _observe_device(
    root: Path, device: DcuDevice, topology: _Topology, *, kfd_present: bool
) -> Observation:
    problems: list[tuple[UnhealthyReason, str]] = []
    undecided: list[str] = []
    pci_dir = root / "sys/bus/pci/devices" / device.pci_bus_id
    if not _exists(pci_dir):
        problems.append(
            (
                UnhealthyReason.PCI_DEVICE_GONE,
                f"PCI device {device.pci_bus_id} is gone from /sys/bus/pci/devices "
                "(removed or fell off the bus)",
            )
        )
    else:
        try:
            vendor = _config_vendor_id(pci_dir / "config")
        except OSError as exc:
            undecided.append(f"cannot read {pci_dir / 'config'}: {_reason(exc)}")
        else:
            if vendor == _DEAD_VENDOR_ID:
                problems.append(
                    (
                        UnhealthyReason.NOT_RESPONDING,
                        f"PCI device {device.pci_bus_id} does not respond (its config space "
                        "reads all ones)",
                    )
                )
    if device.pci_bus_id not in topology.bus_ids:
        if topology.unreadable:
            undecided.append(
                f"{device.pci_bus_id} is not among the readable KFD topology nodes; "
                + "; ".join(topology.unreadable)
            )
        else:
            problems.append(
                (
                    UnhealthyReason.NOT_IN_KFD_TOPOLOGY,
                    f"the KFD topology no longer lists a compute node at {device.pci_bus_id}",
                )
            )
    missing = [
        f"/dev/dri/{node}"
        for node in (device.card, device.render)
        if not _exists(root / "dev/dri" / node)
    ]
    if missing:
        problems.append((UnhealthyReason.DEVICE_NODE_MISSING, f"{' and '.join(missing)} missing"))
    if not kfd_present:
        problems.append((UnhealthyReason.KFD_MISSING, "/dev/kfd is missing"))
    if _exists(pci_dir):
        try:
            ras = _uncorrectable_errors(pci_dir / "ras")
        except (OSError, ValueError) as exc:
            undecided.append(f"cannot read RAS counters under {pci_dir / 'ras'}: {exc}")
        else:
            if ras:
                counts = ", ".join(f"{block} {count}" for block, count in ras)
                problems.append(
                    (UnhealthyReason.RAS_UNCORRECTABLE, f"uncorrectable RAS errors: {counts}")
                )
    if problems:
        message = "; ".join(text for _, text in problems)
        return Observation(status=HealthStatus.UNHEALTHY, reason=problems[0][0], message=message)
    if undecided:
        return Observation(status=HealthStatus.UNKNOWN, reason=None, message="; ".join(undecided))
    return _ALL_GOOD


def _read_topology(root: Path) -> _Topology:
    """Collect the PCI addresses of the KFD compute nodes of any vendor that are listed now."""
    nodes_dir = root / "sys/class/kfd/kfd/topology/nodes"
    bus_ids: set[str] = set()
    unreadable: list[str] = []
    try:
        entries = [p for p in nodes_dir.iterdir() if p.name.isdigit()]
    except FileNotFoundError:
        return _Topology(frozenset(), ())  # no topology at all: every DCU is missing from it
    except OSError as exc:
        return _Topology(frozenset(), (f"cannot list {nodes_dir}: {_reason(exc)}",))
    for node_dir in entries:
        properties = node_dir / "properties"
        if not _exists(properties):
            continue  # a node being torn down
        try:
            props = read_properties(properties)
        except DiscoveryError as exc:
            unreadable.append(str(exc))
            continue
        if props.get("simd_count", 0) == 0 or "location_id" not in props:
            continue
        location, domain = props["location_id"], props.get("domain", 0)
        bus, devfn = (location >> 8) & 0xFF, location & 0xFF
        bus_ids.add(f"{domain:04x}:{bus:02x}:{devfn >> 3:02x}.{devfn & 0x7:x}")
    return _Topology(frozenset(bus_ids), tuple(sorted(unreadable)))


def _config_vendor_id(config: Path) -> int | None:
    """The vendor id from the first two bytes of PCI config space; None without the file."""
    try:
        with config.open("rb") as handle:
            head = handle.read(2)
    except FileNotFoundError:
        return None
    if len(head) < 2:
        # A config read that returns nothing is as dead as one that returns all ones.
        return _DEAD_VENDOR_ID
    return int.from_bytes(head, "little")


def _uncorrectable_errors(ras_dir: Path) -> list[tuple[str, int]]:
    """``(block, ue count)`` for every ``<block>_err_count`` with a non-zero ``ue`` line.

    amdgpu writes ``ue: N`` and ``ce: N`` lines; correctable errors are not a failure.
    Raises ValueError for a file in another format (so the device goes Unknown, not Healthy).
    """
    try:
        files = sorted(p for p in ras_dir.iterdir() if p.name.endswith("_err_count"))
    except FileNotFoundError:
        return []
    found: list[tuple[str, int]] = []
    for path in files:
        counts: dict[str, int] = {}
        for line in path.read_text(encoding="ascii").splitlines():
            key, sep, value = line.partition(":")
            if not sep or not value.strip().isdigit():
                raise ValueError(f"{path}: expected 'ue: N' and 'ce: N' lines, got {line!r}")
            counts[key.strip()] = int(value.strip())
        if counts.get("ue", 0) > 0:
            found.append((path.name.removesuffix("_err_count"), counts["ue"]))
    return found


def _exists(path: Path) -> bool:
    try:
        os.stat(path)
    except OSError:
        return False
    return True


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


# --- records over time -------------------------------------------------------------------------


def advance(
    previous: Mapping[DeviceName, DeviceHealth],
    observed: Mapping[DeviceName, Observation],
    *,
    now: float,
) -> tuple[DeviceHealth, ...]:
    """The new records after a check at ``now``, in the order of ``observed``.

    ``since`` is kept while the status and reason stay the same (a message may change, e.g.
    a growing error count); a device seen for the first time starts at ``now``. Pure.
    """
    records: list[DeviceHealth] = []
    for name, seen in observed.items():
        before = previous.get(name)
        unchanged = (
            before is not None and before.status == seen.status and before.reason == seen.reason
        )
        records.append(
            DeviceHealth(
                device=name,
                status=seen.status,
                reason=seen.reason,
                message=seen.message,
                since=before.since if before is not None and unchanged else now,
                checked_at=now,
            )
        )
    return tuple(records)


@dataclass(frozen=True, slots=True)
class HealthSnapshot:
    """What a reader of a ``HealthBoard`` gets."""

    revision: int
    """Grows by one whenever a verdict changes (not when only timestamps move)."""
    devices: tuple[DeviceHealth, ...]
    closed: bool
    """The board is shutting down: readers should stop."""


class HealthBoard:
    """The latest health of every device: one writer (the monitor), any number of readers.

    Thread-safe. Readers block in ``wait`` until the verdicts change, the board closes, a
    timeout passes or someone calls ``wake`` (a reader whose client went away).
    """

    def __init__(self, devices: Sequence[DeviceHealth] = ()) -> None:
        self._cond = threading.Condition()
        self._devices = tuple(devices)
        self._revision = 0
        self._closed = False

    def update(self, devices: Sequence[DeviceHealth]) -> bool:
        """Store the latest records; return whether any verdict changed (and wake readers)."""
        devices = tuple(devices)
        with self._cond:
            changed = [d.verdict for d in devices] != [d.verdict for d in self._devices] or [
                d.device for d in devices
            ] != [d.device for d in self._devices]
            self._devices = devices
            if changed:
                self._revision += 1
                self._cond.notify_all()
            return changed

    def snapshot(self) -> HealthSnapshot:
        """The current records."""
        with self._cond:
            return HealthSnapshot(self._revision, self._devices, self._closed)

    def wait(self, revision: int, *, timeout_s: float) -> HealthSnapshot:
        """Return once the revision differs from ``revision``, on close, wake or timeout."""
        with self._cond:
            if self._revision == revision and not self._closed:
                self._cond.wait(timeout_s)
            return HealthSnapshot(self._revision, self._devices, self._closed)

    def wake(self) -> None:
        """Wake every waiting reader (it re-checks why it waits)."""
        with self._cond:
            self._cond.notify_all()

    def close(self) -> None:
        """Tell every reader to stop, now and in future waits."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()


#: Called with the new records whenever a verdict changed.
HealthListener = Callable[[tuple[DeviceHealth, ...]], None]


class HealthMonitor:
    """Checks the node every ``interval_s`` and publishes the result.

    Every check updates the board (fresh ``checked_at``); listeners hear only of changes,
    and of the first check. One daemon thread; ``stop`` joins it.
    """

    def __init__(
        self,
        inventory: Inventory,
        *,
        board: HealthBoard,
        interval_s: float = DEFAULT_CHECK_INTERVAL_S,
        listeners: Sequence[HealthListener] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.inventory = inventory
        self.board = board
        self.interval_s = interval_s
        self._listeners = tuple(listeners)
        self._clock = clock
        self._records: dict[DeviceName, DeviceHealth] = {}
        self._notify_pending = True  # listeners hear of the first check, and retry a failure
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def check_once(self) -> tuple[DeviceHealth, ...]:
        """Run one check now, log transitions, update the board, tell listeners of changes."""
        records = advance(self._records, observe(self.inventory), now=self._clock())
        changed = [r for r in records if self._transitioned(r)]
        for record in changed:
            _log_transition(self._records.get(record.device), record)
        self._records = {r.device: r for r in records}
        if self.board.update(records):
            self._notify_pending = True
        if self._notify_pending:
            for listener in self._listeners:
                listener(records)
            self._notify_pending = False  # not reached when a listener raised: retried
        return records

    def _transitioned(self, record: DeviceHealth) -> bool:
        before = self._records.get(record.device)
        if before is None:
            return record.status is not HealthStatus.HEALTHY
        return before.verdict != record.verdict

    def start(self) -> None:
        """Check once synchronously (so the first state is known), then every interval."""
        self.check_once()
        self._thread = threading.Thread(target=self._run, name="health-monitor", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop checking; the board stays as it was (its owner closes it)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.check_once()
            except Exception:
                # The checks themselves never raise; a listener might. Health must keep
                # flowing to the kubelet either way, and the listeners are called again.
                logger.exception(
                    "device health check failed; trying again in %.1f s", self.interval_s
                )


def _log_transition(before: DeviceHealth | None, after: DeviceHealth) -> None:
    if after.status is HealthStatus.UNHEALTHY:
        logger.warning("DCU %s is unhealthy (%s): %s", after.device, after.reason, after.message)
    elif after.status is HealthStatus.UNKNOWN:
        logger.warning("health of DCU %s is unknown: %s", after.device, after.message)
    elif before is not None:
        logger.info("DCU %s is healthy again (was %s)", after.device, before.status)
