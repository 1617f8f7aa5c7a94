"""Discovery on mock trees: the real discovery code on the mock library's sysfs/devfs."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from dra_driver.errors import DiscoveryError
from dra_driver.node.devices import (
    DEFAULT_MAX_VDEVICES,
    HYGON_VENDOR_ID,
    device_name_for,
    discover,
    model_name,
)
from tests.conftest import MockNodeFactory

GIB = 1024**3


def test_default_mock_node_has_three_dcus_with_topology_capacity(mock_root: Path) -> None:
    inventory = discover(mock_root)
    summary = [
        (d.index, d.name, d.model, d.compute_units, d.memory_bytes, d.numa_node)
        for d in inventory.devices
    ]
    assert summary == [
        (0, "dcu-0000-3b-00-0", "Z100", 60, 34342961152, 0),
        (1, "dcu-0000-5e-00-0", "Z100", 60, 34342961152, 0),
        (2, "dcu-0000-af-00-0", "K100_AI", 120, 64 * GIB, 1),
    ]
    assert [(d.card, d.render) for d in inventory.devices] == [
        ("card1", "renderD129"),
        ("card2", "renderD130"),
        ("card3", "renderD131"),
    ]
    assert all(d.max_vdevices == DEFAULT_MAX_VDEVICES for d in inventory.devices)
    assert inventory.kfd == mock_root / "dev/kfd"
    assert inventory.mkfd == mock_root / "dev/mkfd"
    assert inventory.hyhal == mock_root / "opt/hyhal"


def test_devices_are_ordered_by_pci_bus_id_not_kfd_node_order(
    make_mock_node: MockNodeFactory,
) -> None:
    root = make_mock_node(
        [
            {"model": "K100_AI", "computeUnits": 120, "memory": "64Gi", "pciBusID": "0000:af:00.0"},
            {"model": "Z100", "computeUnits": 60, "memory": "32Gi", "pciBusID": "0000:3b:00.0"},
        ]
    )
    inventory = discover(root)
    assert [(d.index, d.pci_bus_id, d.kfd_node) for d in inventory.devices] == [
        (0, "0000:3b:00.0", 2),
        (1, "0000:af:00.0", 1),
    ]
    # DRM nodes follow the PCI device, not the ordinal: the K100_AI was probed first.
    assert inventory.devices[1].card == "card1"


def test_unknown_device_id_gets_capacity_from_topology(make_mock_node: MockNodeFactory) -> None:
    root = make_mock_node(
        [
            {
                "deviceID": "0x7777",
                "computeUnits": 77,
                "memory": "48Gi",
                "pciBusID": "0000:01:00.0",
            },
            {
                "model": "BW100",
                "computeUnits": 80,
                "memory": 65520 * 1024**2,
                "pciBusID": "0000:02:00.0",
            },
        ]
    )
    unknown, bw100 = discover(root).devices
    assert (unknown.model, unknown.device_id, unknown.compute_units, unknown.memory_bytes) == (
        "DCU-0x7777",
        0x7777,
        77,
        48 * GIB,
    )
    # The model table lists no CU count for BW100; topology gives the real one.
    assert (bw100.model, bw100.compute_units, bw100.memory_mib) == ("BW100", 80, 65520)


def test_cu_count_comes_from_topology_even_for_known_models(
    make_mock_node: MockNodeFactory,
) -> None:
    root = make_mock_node(
        [{"model": "Z100", "computeUnits": 64, "memory": "16Gi", "pciBusID": "0000:3b:00.0"}]
    )
    assert discover(root).devices[0].compute_units == 64


def test_foreign_vendor_gpu_is_ignored(make_mock_node: MockNodeFactory) -> None:
    root = make_mock_node(
        [
            {
                "deviceID": "0x2330",
                "vendorID": "0x10de",
                "computeUnits": 132,
                "memory": "80Gi",
                "pciBusID": "0000:18:00.0",
            },
            {"model": "K100_AI", "computeUnits": 120, "memory": "64Gi", "pciBusID": "0000:af:00.0"},
        ]
    )
    inventory = discover(root)
    assert [(d.index, d.model, d.card) for d in inventory.devices] == [(0, "K100_AI", "card2")]


def test_foreign_vendor_is_ignored_when_kfd_has_no_vendor_id(mock_root: Path) -> None:
    """Without vendor_id in the topology, the PCI vendor file decides."""
    props = mock_root / "sys/class/kfd/kfd/topology/nodes/1/properties"
    props.write_text(
        "".join(
            line + "\n"
            for line in props.read_text().splitlines()
            if not line.startswith("vendor_id")
        )
    )
    (mock_root / "sys/bus/pci/devices/0000:3b:00.0/vendor").write_text("0x1002\n")
    assert [d.pci_bus_id for d in discover(mock_root).devices] == ["0000:5e:00.0", "0000:af:00.0"]


def test_missing_render_node_is_a_clear_error(mock_root: Path) -> None:
    shutil.rmtree(mock_root / "sys/bus/pci/devices/0000:5e:00.0/drm/renderD130")
    with pytest.raises(DiscoveryError, match=r"^DCU 0000:5e:00\.0 has no DRM render node under "):
        discover(mock_root)


def test_missing_render_device_file_is_a_clear_error(mock_root: Path) -> None:
    (mock_root / "dev/dri/renderD131").unlink()
    with pytest.raises(
        DiscoveryError, match=r"^DCU 0000:af:00\.0 \(dcu-0000-af-00-0\): .*renderD131 is missing"
    ):
        discover(mock_root)


def test_missing_kfd_is_a_clear_error(mock_root: Path) -> None:
    (mock_root / "dev/kfd").unlink()
    with pytest.raises(DiscoveryError, match=r"^found 3 DCU\(s\) but .*/dev/kfd is missing"):
        discover(mock_root)


def test_missing_root_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DiscoveryError, match=r"^root .*/nope does not exist or is not a directory"):
        discover(tmp_path / "nope")


def test_node_without_kfd_topology_has_no_dcus(tmp_path: Path) -> None:
    inventory = discover(tmp_path)
    assert inventory.devices == ()
    assert inventory.kfd is None


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("simd_count 240\nsimd_per_cu four\n", r":2: expected '<key> <decimal value>'"),
        ("simd_count 240 extra\n", r":1: expected '<key> <decimal value>'"),
        (
            "simd_count 240\nsimd_per_cu 0\nlocation_id 15104\nvendor_id 7572\n",
            r"cannot derive compute units from simd_count 240 and simd_per_cu 0",
        ),
        (
            "simd_count 241\nsimd_per_cu 4\nlocation_id 15104\nvendor_id 7572\n",
            r"cannot derive compute units from simd_count 241 and simd_per_cu 4",
        ),
        ("simd_count 240\nsimd_per_cu 4\nvendor_id 7572\n", r"no location_id"),
        (
            "simd_count 240\nsimd_per_cu 4\nlocation_id 4352\nvendor_id 7572\n",
            r"KFD node 1 is PCI device 0000:11:00\.0, but .* does not exist",
        ),
    ],
    ids=[
        "non-decimal",
        "three-fields",
        "zero-simd-per-cu",
        "uneven-simds",
        "no-location",
        "no-pci-device",
    ],
)
def test_corrupt_properties_are_reported_with_their_file(
    mock_root: Path, content: str, message: str
) -> None:
    (mock_root / "sys/class/kfd/kfd/topology/nodes/1/properties").write_text(content)
    with pytest.raises(DiscoveryError, match=message):
        discover(mock_root)


def test_unreadable_properties_are_reported(mock_root: Path) -> None:
    props = mock_root / "sys/class/kfd/kfd/topology/nodes/2/properties"
    props.unlink()
    props.mkdir()  # reading a directory fails even for root
    with pytest.raises(DiscoveryError, match=r"^cannot read .*/nodes/2/properties: "):
        discover(mock_root)


def test_binary_garbage_in_properties_is_reported(mock_root: Path) -> None:
    (mock_root / "sys/class/kfd/kfd/topology/nodes/1/properties").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(DiscoveryError, match=r"^cannot read .*/nodes/1/properties"):
        discover(mock_root)


def test_memory_sums_device_banks_and_ignores_system_memory(mock_root: Path) -> None:
    banks = mock_root / "sys/class/kfd/kfd/topology/nodes/1/mem_banks"
    (banks / "1").mkdir()
    (banks / "1/properties").write_text("heap_type 2\nsize_in_bytes 1073741824\n")
    (banks / "2").mkdir()
    (banks / "2/properties").write_text("heap_type 0\nsize_in_bytes 999999999999\n")
    assert discover(mock_root).devices[0].memory_bytes == 34342961152 + GIB


def test_node_without_device_memory_is_an_error(mock_root: Path) -> None:
    shutil.rmtree(mock_root / "sys/class/kfd/kfd/topology/nodes/3/mem_banks")
    with pytest.raises(DiscoveryError, match=r"reports no device memory"):
        discover(mock_root)


def set_kfd_unique_id(root: Path, node: int, value: int | None) -> None:
    """Rewrite KFD topology node ``node``'s ``unique_id`` property (None: drop it)."""
    path = root / f"sys/class/kfd/kfd/topology/nodes/{node}/properties"
    lines = [line for line in path.read_text().splitlines() if not line.startswith("unique_id ")]
    path.write_text("\n".join([*lines, *([f"unique_id {value}"] if value is not None else [])]))


STABLE_FALLBACK = re.compile(r"DCU-[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}")


@pytest.mark.parametrize(
    ("pci_unique_id", "kfd_unique_id", "expected"),
    [
        ("abc123", 1234, "DCU-abc123"),
        (None, 1234, "DCU-00000000000004d2"),
        (None, 2**64 - 1, "DCU-ffffffffffffffff"),
        (None, 0, STABLE_FALLBACK),
        (None, None, STABLE_FALLBACK),
    ],
    ids=["pci-wins", "kfd", "kfd-max", "kfd-zero-is-unknown", "neither"],
)
def test_uuid_comes_from_the_pci_then_the_kfd_unique_id_then_the_machine(
    mock_root: Path, pci_unique_id: str | None, kfd_unique_id: int | None, expected: object
) -> None:
    """Regression: the KFD topology's unique_id was ignored, so a card without a PCI unique_id
    got an id from /etc/machine-id, the same on every machine without one."""
    pci = mock_root / "sys/bus/pci/devices/0000:3b:00.0/unique_id"
    pci.unlink(missing_ok=True)
    if pci_unique_id is not None:
        pci.write_text(f"{pci_unique_id}\n")
    set_kfd_unique_id(mock_root, 1, kfd_unique_id)
    uuid = discover(mock_root).devices[0].uuid
    if isinstance(expected, re.Pattern):
        assert expected.fullmatch(uuid), uuid
        assert discover(mock_root).devices[0].uuid == uuid  # stable
    else:
        assert uuid == expected


def test_numa_node_defaults_to_minus_one_when_unreported(mock_root: Path) -> None:
    (mock_root / "sys/bus/pci/devices/0000:3b:00.0/numa_node").unlink()
    assert discover(mock_root).devices[0].numa_node == -1


def test_max_vdevices_is_configurable_and_validated(mock_root: Path) -> None:
    assert {d.max_vdevices for d in discover(mock_root, max_vdevices=8).devices} == {8}
    with pytest.raises(DiscoveryError, match=r"^max vDCUs per card must be at least 1, got 0$"):
        discover(mock_root, max_vdevices=0)


def test_inventory_looks_up_devices_by_name(mock_root: Path) -> None:
    inventory = discover(mock_root)
    device = inventory.by_name("dcu-0000-af-00-0")
    assert device is not None and device.model == "K100_AI"
    assert inventory.by_name("dcu-9999-00-00-0") is None


@pytest.mark.parametrize(
    ("bus_id", "name"),
    [("0000:3b:00.0", "dcu-0000-3b-00-0"), ("0001:af:1f.7", "dcu-0001-af-1f-7")],
)
def test_device_names_are_dns_labels_from_the_pci_bus_id(bus_id: str, name: str) -> None:
    assert device_name_for(bus_id) == name


def test_device_name_rejects_non_pci_ids() -> None:
    with pytest.raises(ValueError, match=r"^not a PCI bus id: '../etc'$"):
        device_name_for("../etc")


def test_model_names_come_from_the_table_or_the_id() -> None:
    assert model_name(0x6210) == "K100_AI"
    assert model_name(0xABCD) == "DCU-0xabcd"
    assert HYGON_VENDOR_ID == 0x1D94


def test_pcie_root_comes_from_the_sysfs_device_path(mock_root: Path) -> None:
    assert [d.pcie_root for d in discover(mock_root).devices] == [
        "pci0000:3a",
        "pci0000:5d",
        "pci0000:ae",
    ]


def test_pcie_root_is_none_when_the_pci_entry_is_not_a_link(mock_root: Path) -> None:
    link = mock_root / "sys/bus/pci/devices/0000:3b:00.0"
    target = link.resolve()
    link.unlink()
    shutil.copytree(target, link)
    assert discover(mock_root).devices[0].pcie_root is None


def test_driver_version_is_read_from_the_hycu_module(mock_root: Path) -> None:
    assert discover(mock_root).driver_version == "6.3.10"
    (mock_root / "sys/module/hycu/version").unlink()
    assert discover(mock_root).driver_version is None


def test_simd_arrays_come_from_the_topology_when_consistent(mock_root: Path) -> None:
    assert [d.simd_arrays for d in discover(mock_root).devices] == [4, 4, 4]
    props = mock_root / "sys/class/kfd/kfd/topology/nodes/1/properties"
    props.write_text(props.read_text().replace("cu_per_simd_array 15", "cu_per_simd_array 14"))
    assert discover(mock_root).devices[0].simd_arrays == 1  # inconsistent: no grouping
