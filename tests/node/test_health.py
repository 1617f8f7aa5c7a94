"""Device health: the checks on a mock node, records over time, the board, the monitor, and
the taints an unhealthy DCU gets in the ResourceSlice."""

from __future__ import annotations

import logging
import re
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from dra_driver.cluster.slices import (
    UNHEALTHY_TAINT_KEY,
    DeviceTaint,
    PoolSpec,
    Sharing,
    build_pool,
    format_time,
    health_taints,
    keep_taint_times,
    validate_pool,
)
from dra_driver.node.devices import DeviceName, Inventory, discover
from dra_driver.node.health import (
    DeviceHealth,
    HealthBoard,
    HealthMonitor,
    HealthStatus,
    Observation,
    UnhealthyReason,
    advance,
    observe,
)

Z100_0 = DeviceName("dcu-0000-3b-00-0")
Z100_1 = DeviceName("dcu-0000-5e-00-0")
K100 = DeviceName("dcu-0000-af-00-0")


@pytest.fixture
def inventory(mock_root: Path) -> Inventory:
    return discover(mock_root)


def pci_dir(root: Path, bus_id: str) -> Path:
    return root / "sys/bus/pci/devices" / bus_id


def topology_node(root: Path, number: int) -> Path:
    return root / f"sys/class/kfd/kfd/topology/nodes/{number}"


# --- observe ------------------------------------------------------------------------------------


def test_a_fresh_mock_node_is_healthy(inventory: Inventory) -> None:
    observed = observe(inventory)
    assert list(observed) == [Z100_0, Z100_1, K100]
    assert {o.status for o in observed.values()} == {HealthStatus.HEALTHY}
    assert {o.message for o in observed.values()} == {""}


def remove_render_node(root: Path) -> None:
    (root / "dev/dri/renderD130").unlink()


def remove_both_drm_nodes(root: Path) -> None:
    (root / "dev/dri/renderD130").unlink()
    (root / "dev/dri/card2").unlink()


def remove_topology_node(root: Path) -> None:
    shutil.rmtree(topology_node(root, 2))


def dead_config_space(root: Path) -> None:
    (pci_dir(root, "0000:5e:00.0") / "config").write_bytes(b"\xff" * 64)


def empty_config_space(root: Path) -> None:
    (pci_dir(root, "0000:5e:00.0") / "config").write_bytes(b"")


def remove_pci_device(root: Path) -> None:
    pci_dir(root, "0000:5e:00.0").unlink()  # the /sys/bus/pci/devices entry is a link


def ras_uncorrectable(root: Path) -> None:
    ras = pci_dir(root, "0000:5e:00.0") / "ras"
    ras.mkdir()
    (ras / "umc_err_count").write_text("ue: 3\nce: 7\n")
    (ras / "gfx_err_count").write_text("ue: 0\nce: 1\n")


@pytest.mark.parametrize(
    ("fault", "reason", "message"),
    [
        (remove_render_node, UnhealthyReason.DEVICE_NODE_MISSING, r"^/dev/dri/renderD130 missing$"),
        (
            remove_both_drm_nodes,
            UnhealthyReason.DEVICE_NODE_MISSING,
            r"^/dev/dri/card2 and /dev/dri/renderD130 missing$",
        ),
        (
            remove_topology_node,
            UnhealthyReason.NOT_IN_KFD_TOPOLOGY,
            r"^the KFD topology no longer lists a compute node at 0000:5e:00\.0$",
        ),
        (
            dead_config_space,
            UnhealthyReason.NOT_RESPONDING,
            r"^PCI device 0000:5e:00\.0 does not respond \(its config space reads all ones\)$",
        ),
        (empty_config_space, UnhealthyReason.NOT_RESPONDING, r"does not respond"),
        (
            remove_pci_device,
            UnhealthyReason.PCI_DEVICE_GONE,
            r"^PCI device 0000:5e:00\.0 is gone from /sys/bus/pci/devices",
        ),
        (
            ras_uncorrectable,
            UnhealthyReason.RAS_UNCORRECTABLE,
            r"^uncorrectable RAS errors: umc 3$",
        ),
    ],
    ids=[
        "render-node",
        "both-drm-nodes",
        "kfd-topology",
        "config-all-ones",
        "config-empty",
        "pci-device-gone",
        "ras-uncorrectable",
    ],
)
def test_each_signal_makes_only_its_device_unhealthy(
    inventory: Inventory, fault: object, reason: UnhealthyReason, message: str
) -> None:
    assert callable(fault)
    fault(inventory.root)
    observed = observe(inventory)
    assert observed[Z100_1].status is HealthStatus.UNHEALTHY
    assert observed[Z100_1].reason is reason
    assert re.search(message, observed[Z100_1].message), observed[Z100_1].message
    assert observed[Z100_0].status is HealthStatus.HEALTHY
    assert observed[K100].status is HealthStatus.HEALTHY


def test_a_healthy_config_space_and_correctable_errors_are_fine(inventory: Inventory) -> None:
    config = pci_dir(inventory.root, "0000:5e:00.0") / "config"
    config.write_bytes(b"\x94\x1d\xb7\x54" + b"\x00" * 60)  # vendor 0x1d94, little endian
    ras = pci_dir(inventory.root, "0000:5e:00.0") / "ras"
    ras.mkdir()
    (ras / "umc_err_count").write_text("ue: 0\nce: 12\n")
    (ras / "features").write_text("feature mask: 0x3\n")  # not a counter: ignored
    assert observe(inventory)[Z100_1] == Observation(HealthStatus.HEALTHY, None, "")


def test_several_problems_are_all_named_and_the_first_is_the_reason(inventory: Inventory) -> None:
    remove_both_drm_nodes(inventory.root)
    remove_topology_node(inventory.root)
    dead_config_space(inventory.root)
    seen = observe(inventory)[Z100_1]
    assert seen.reason is UnhealthyReason.NOT_RESPONDING
    assert seen.message == (
        "PCI device 0000:5e:00.0 does not respond (its config space reads all ones); "
        "the KFD topology no longer lists a compute node at 0000:5e:00.0; "
        "/dev/dri/card2 and /dev/dri/renderD130 missing"
    )


def test_a_missing_dev_kfd_makes_every_dcu_unhealthy(inventory: Inventory) -> None:
    (inventory.root / "dev/kfd").unlink()
    observed = observe(inventory)
    assert {o.reason for o in observed.values()} == {UnhealthyReason.KFD_MISSING}
    assert {o.message for o in observed.values()} == {"/dev/kfd is missing"}


def test_a_topology_that_is_gone_entirely_makes_every_dcu_unhealthy(inventory: Inventory) -> None:
    shutil.rmtree(inventory.root / "sys/class/kfd")
    observed = observe(inventory)
    assert {o.reason for o in observed.values()} == {UnhealthyReason.NOT_IN_KFD_TOPOLOGY}


def test_a_corrupt_topology_file_makes_the_unlisted_device_unknown_not_unhealthy(
    inventory: Inventory,
) -> None:
    (topology_node(inventory.root, 2) / "properties").write_text("simd_count lots\n")
    observed = observe(inventory)
    assert observed[Z100_1].status is HealthStatus.UNKNOWN
    assert observed[Z100_1].reason is None
    assert "is not among the readable KFD topology nodes" in observed[Z100_1].message
    assert "the topology file is corrupt" in observed[Z100_1].message
    # The others are still found in the readable nodes.
    assert observed[Z100_0].status is HealthStatus.HEALTHY


def test_an_unreadable_ras_counter_makes_the_device_unknown(inventory: Inventory) -> None:
    ras = pci_dir(inventory.root, "0000:5e:00.0") / "ras"
    ras.mkdir()
    (ras / "umc_err_count").write_text("garbage\n")
    seen = observe(inventory)[Z100_1]
    assert seen.status is HealthStatus.UNKNOWN
    assert seen.message.startswith("cannot read RAS counters under ")


def test_unhealthy_wins_over_unknown(inventory: Inventory) -> None:
    ras_dir = pci_dir(inventory.root, "0000:5e:00.0") / "ras"
    ras_dir.mkdir()
    (ras_dir / "umc_err_count").write_text("garbage\n")
    remove_render_node(inventory.root)
    assert observe(inventory)[Z100_1].status is HealthStatus.UNHEALTHY


def test_observation_recovers_when_the_tree_is_restored(inventory: Inventory) -> None:
    render = inventory.root / "dev/dri/renderD130"
    render.rename(inventory.root / "dev/renderD130.away")
    assert observe(inventory)[Z100_1].status is HealthStatus.UNHEALTHY
    (inventory.root / "dev/renderD130.away").rename(render)
    assert observe(inventory)[Z100_1].status is HealthStatus.HEALTHY


# --- advance ------------------------------------------------------------------------------------

BAD = Observation(HealthStatus.UNHEALTHY, UnhealthyReason.DEVICE_NODE_MISSING, "gone")
OK = Observation(HealthStatus.HEALTHY, None, "")


def test_since_is_kept_while_the_verdict_holds_and_reset_when_it_changes() -> None:
    first = advance({}, {Z100_0: OK, Z100_1: BAD}, now=100.0)
    assert [(r.since, r.checked_at) for r in first] == [(100.0, 100.0), (100.0, 100.0)]
    second = advance({r.device: r for r in first}, {Z100_0: OK, Z100_1: BAD}, now=105.0)
    assert [(r.since, r.checked_at) for r in second] == [(100.0, 105.0), (100.0, 105.0)]
    third = advance({r.device: r for r in second}, {Z100_0: BAD, Z100_1: OK}, now=110.0)
    assert [(r.status, r.since) for r in third] == [
        (HealthStatus.UNHEALTHY, 110.0),
        (HealthStatus.HEALTHY, 110.0),
    ]


def test_a_new_message_with_the_same_reason_keeps_since() -> None:
    first = advance({}, {Z100_0: BAD}, now=100.0)
    more = Observation(BAD.status, BAD.reason, "gone, and more")
    (record,) = advance({r.device: r for r in first}, {Z100_0: more}, now=105.0)
    assert (record.since, record.message) == (100.0, "gone, and more")


# --- the board ----------------------------------------------------------------------------------


def record(device: DeviceName, seen: Observation, at: float) -> DeviceHealth:
    return DeviceHealth(
        device=device,
        status=seen.status,
        reason=seen.reason,
        message=seen.message,
        since=at,
        checked_at=at,
    )


def test_board_revision_moves_only_when_a_verdict_changes() -> None:
    board = HealthBoard()
    assert board.update([record(Z100_0, OK, 1.0)]) is True
    assert board.snapshot().revision == 1
    assert board.update([record(Z100_0, OK, 2.0)]) is False  # only the timestamps moved
    snapshot = board.snapshot()
    assert (snapshot.revision, snapshot.devices[0].checked_at) == (1, 2.0)
    assert board.update([record(Z100_0, BAD, 3.0)]) is True
    assert board.snapshot().revision == 2


def test_board_wait_returns_on_change_close_or_timeout() -> None:
    board = HealthBoard([record(Z100_0, OK, 1.0)])
    started = time.monotonic()
    assert board.wait(0, timeout_s=0.1).revision == 0
    assert time.monotonic() - started >= 0.09
    assert board.wait(5, timeout_s=10).revision == 0  # differs already: no wait

    results = []
    waiter = threading.Thread(target=lambda: results.append(board.wait(0, timeout_s=10)))
    waiter.start()
    time.sleep(0.05)
    board.update([record(Z100_0, BAD, 2.0)])
    waiter.join(5)
    assert results[0].revision == 1

    closer = threading.Thread(target=lambda: results.append(board.wait(1, timeout_s=10)))
    closer.start()
    time.sleep(0.05)
    board.close()
    closer.join(5)
    assert results[1].closed
    assert board.wait(1, timeout_s=10).closed  # and at once from now on


# --- the monitor --------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        self.now += 1
        return self.now


def test_monitor_tells_listeners_of_the_first_check_and_of_changes_only(
    inventory: Inventory, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[tuple[DeviceHealth, ...]] = []
    board = HealthBoard()
    monitor = HealthMonitor(inventory, board=board, listeners=[calls.append], clock=Clock())
    caplog.set_level(logging.INFO, logger="dra_driver.node.health")
    monitor.check_once()
    monitor.check_once()
    assert len(calls) == 1
    remove_render_node(inventory.root)
    monitor.check_once()
    monitor.check_once()
    assert len(calls) == 2
    unhealthy = {r.device: r for r in calls[1]}[Z100_1]
    assert (unhealthy.status, unhealthy.since) == (HealthStatus.UNHEALTHY, 1003.0)
    assert board.snapshot().devices[1].checked_at == 1004.0
    assert "DCU dcu-0000-5e-00-0 is unhealthy (DeviceNodeMissing): /dev/dri/renderD130 missing" in (
        caplog.text
    )
    (inventory.root / "dev/dri/renderD130").write_bytes(b"")
    monitor.check_once()
    assert len(calls) == 3
    assert "DCU dcu-0000-5e-00-0 is healthy again (was Unhealthy)" in caplog.text


def test_a_failing_listener_is_called_again_on_the_next_check(inventory: Inventory) -> None:
    attempts: list[int] = []

    def flaky(devices: tuple[DeviceHealth, ...]) -> None:
        attempts.append(len(devices))
        if len(attempts) == 1:
            raise RuntimeError("API down")

    monitor = HealthMonitor(inventory, board=HealthBoard(), listeners=[flaky])
    with pytest.raises(RuntimeError, match=r"^API down$"):
        monitor.check_once()
    monitor.check_once()
    monitor.check_once()
    assert attempts == [3, 3]


def test_monitor_thread_checks_every_interval_until_stopped(inventory: Inventory) -> None:
    board = HealthBoard()
    monitor = HealthMonitor(inventory, board=board, interval_s=0.05)
    monitor.start()
    try:
        assert board.snapshot().revision == 1  # the first check ran before start returned
        remove_render_node(inventory.root)
        deadline = time.monotonic() + 5
        while board.snapshot().revision < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert board.snapshot().devices[1].status is HealthStatus.UNHEALTHY
    finally:
        monitor.stop()
    assert monitor._thread is not None and not monitor._thread.is_alive()


# --- slice taints -------------------------------------------------------------------------------


def test_unhealthy_devices_get_a_noschedule_taint_and_unknown_ones_none() -> None:
    unknown = Observation(HealthStatus.UNKNOWN, None, "cannot tell")
    devices = advance({}, {Z100_0: OK, Z100_1: BAD, K100: unknown}, now=1_785_000_000.7)
    assert health_taints(devices) == {
        Z100_1: (
            DeviceTaint(
                key="dcu.hygon.com/unhealthy",
                value="DeviceNodeMissing",
                effect="NoSchedule",
                time_added=1_785_000_000.7,
            ),
        )
    }


def test_taints_render_into_the_slice_with_a_whole_second_time(inventory: Inventory) -> None:
    devices = advance({}, {Z100_0: OK, Z100_1: BAD, K100: OK}, now=1_785_000_000.7)
    pool = build_pool(
        inventory,
        driver="dcu.hygon.com",
        node_name="node-a",
        sharing=Sharing.CONSUMABLE,
        taints=health_taints(devices),
    )
    (entries,) = pool.slices
    assert [e.get("taints") for e in entries] == [
        None,
        [
            {
                "key": UNHEALTHY_TAINT_KEY,
                "value": "DeviceNodeMissing",
                "effect": "NoSchedule",
                "timeAdded": "2026-07-25T17:20:00Z",
            }
        ],
        None,
    ]
    assert format_time(1_785_000_000.7) == "2026-07-25T17:20:00Z"


def test_a_recovered_device_has_no_taints_key_at_all(inventory: Inventory) -> None:
    """An empty list would differ from what the API server stores (nothing) on every sync."""
    pool = build_pool(
        inventory, driver="dcu.hygon.com", node_name="node-a", sharing=Sharing.CONSUMABLE, taints={}
    )
    assert all("taints" not in entry for entry in pool.slices[0])
    plain = build_pool(
        inventory, driver="dcu.hygon.com", node_name="node-a", sharing=Sharing.CONSUMABLE
    )
    assert pool == plain


def test_a_tainted_pool_splits_at_64_devices(inventory: Inventory) -> None:
    from dataclasses import replace

    from dra_driver.node.devices import device_name_for

    many = tuple(
        replace(
            inventory.devices[0],
            index=i,
            name=device_name_for(f"0000:{i // 32:02x}:{i % 32:02x}.0"),
            pci_bus_id=f"0000:{i // 32:02x}:{i % 32:02x}.0",
        )
        for i in range(130)
    )
    big = replace(inventory, devices=many)
    taint = DeviceTaint(key=UNHEALTHY_TAINT_KEY, value="KfdMissing", effect="NoSchedule")
    tainted = build_pool(
        big,
        driver="dcu.hygon.com",
        node_name="node-a",
        sharing=Sharing.EXCLUSIVE,
        taints={many[5].name: (taint,)},
    )
    assert [len(s) for s in tainted.slices] == [64, 64, 2]
    untainted = build_pool(
        big, driver="dcu.hygon.com", node_name="node-a", sharing=Sharing.EXCLUSIVE
    )
    assert [len(s) for s in untainted.slices] == [128, 2]


def _pool_with(devices: list[dict[str, object]]) -> PoolSpec:
    return PoolSpec(driver="d.example.com", node_name="n", pool_name="n", slices=(tuple(devices),))


@pytest.mark.parametrize(
    ("taints", "problem"),
    [
        (
            [{"key": "dcu.hygon.com/un healthy", "value": "x", "effect": "NoSchedule"}],
            "device 'dcu-0': taint key 'dcu.hygon.com/un healthy' is not a qualified name",
        ),
        (
            [{"key": "k", "value": "-bad-", "effect": "NoSchedule"}],
            "device 'dcu-0': taint k value '-bad-' is not a label value",
        ),
        (
            [{"key": "k", "value": "v", "effect": "Evict"}],
            "device 'dcu-0': taint k effect 'Evict' is not one of NoExecute, NoSchedule, None",
        ),
        (
            [{"key": f"k{i}", "value": "v", "effect": "NoSchedule"} for i in range(17)],
            "device 'dcu-0': 17 taints, more than 16",
        ),
    ],
    ids=["key", "value", "effect", "count"],
)
def test_taint_validation(taints: list[dict[str, str]], problem: str) -> None:
    assert validate_pool(_pool_with([{"name": "dcu-0", "taints": taints}])) == [problem]


def test_a_slice_with_taints_may_hold_only_64_devices() -> None:
    devices: list[dict[str, object]] = [{"name": f"dcu-{i}"} for i in range(65)]
    assert validate_pool(_pool_with(devices)) == []
    devices[0]["taints"] = [{"key": "k", "value": "v", "effect": "NoSchedule"}]
    assert validate_pool(_pool_with(devices)) == [
        "a slice with device taints has 65 devices, more than 64"
    ]


def test_keep_taint_times_preserves_the_published_time_of_the_same_taint() -> None:
    stored: list[dict[str, Any]] = [
        {"name": "a", "taints": [{"key": "k", "value": "v", "effect": "NoSchedule",
                                   "timeAdded": "2026-01-01T00:00:00Z"}]},
        {"name": "b", "taints": [{"key": "k", "value": "old", "effect": "NoSchedule",
                                   "timeAdded": "2026-01-01T00:00:00Z"}]},
    ]  # fmt: skip
    desired: list[dict[str, Any]] = [
        {"name": "a", "taints": [{"key": "k", "value": "v", "effect": "NoSchedule",
                                   "timeAdded": "2026-07-01T00:00:00Z"}]},
        {"name": "b", "taints": [{"key": "k", "value": "new", "effect": "NoSchedule",
                                   "timeAdded": "2026-07-01T00:00:00Z"}]},
        {"name": "c"},
    ]  # fmt: skip
    kept = keep_taint_times(stored, desired)
    assert [t["timeAdded"] for d in kept[:2] for t in d["taints"]] == [
        "2026-01-01T00:00:00Z",  # same taint: its first time stays
        "2026-07-01T00:00:00Z",  # another value is another taint
    ]
    assert kept[2] == {"name": "c"}
    assert desired[0]["taints"][0]["timeAdded"] == "2026-07-01T00:00:00Z"  # input untouched
