"""The pure pool model: what a node's ResourceSlices say, and client-side validation."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from dra_driver.cluster.slices import (
    PoolSpec,
    Sharing,
    SliceValidationError,
    build_pool,
    device_entry,
    format_binary_quantity,
    format_decimal_quantity,
    is_semver,
    parse_quantity,
    validate_pool,
)
from dra_driver.node.devices import DeviceName, Inventory, discover

DRIVER = "dcu.hygon.com"


def pool_of(inventory: Inventory, sharing: Sharing = Sharing.CONSUMABLE) -> PoolSpec:
    return build_pool(inventory, driver=DRIVER, node_name="node-a", sharing=sharing)


def test_consumable_pool_of_the_default_mock_node(mock_root: Path) -> None:
    inventory = discover(mock_root)
    pool = pool_of(inventory)
    assert (pool.driver, pool.node_name, pool.pool_name, len(pool.slices)) == (
        DRIVER,
        "node-a",
        "node-a",
        1,
    )
    z100, _, k100 = pool.slices[0]
    assert z100["name"] == "dcu-0000-3b-00-0"
    assert z100["allowMultipleAllocations"] is True
    assert z100["attributes"] == {
        "model": {"string": "Z100"},
        "deviceID": {"string": "0x54b7"},
        "uuid": {"string": inventory.devices[0].uuid},  # random per mock node
        "index": {"int": 0},
        "computeUnits": {"int": 60},
        "memoryMiB": {"int": 32752},
        "numaNode": {"int": 0},
        "resource.kubernetes.io/pciBusID": {"string": "0000:3b:00.0"},
        "resource.kubernetes.io/pcieRoot": {"string": "pci0000:3a"},
        "driverVersion": {"version": "6.3.10"},
    }
    assert k100["capacity"] == {
        "cores": {
            "value": "120",
            "requestPolicy": {
                "default": "120",
                "validRange": {"min": "1", "max": "120", "step": "1"},
            },
        },
        "memory": {
            "value": "64Gi",
            "requestPolicy": {
                "default": "64Gi",
                "validRange": {"min": "1Mi", "max": "64Gi", "step": "1Mi"},
            },
        },
        "vdevices": {"value": "4", "requestPolicy": {"default": "1", "validValues": ["1"]}},
    }


def test_memory_is_rounded_down_to_whole_mib(mock_root: Path) -> None:
    """34342961152 bytes is 32752.03 MiB: max and default must sit on the 1Mi grid."""
    z100 = pool_of(discover(mock_root)).slices[0][0]
    assert z100["capacity"]["memory"]["value"] == "32752Mi"
    assert validate_pool(pool_of(discover(mock_root))) == []


def test_exclusive_pool_has_no_request_policies(mock_root: Path) -> None:
    for device in pool_of(discover(mock_root), Sharing.EXCLUSIVE).slices[0]:
        assert "allowMultipleAllocations" not in device
        assert all("requestPolicy" not in cap for cap in device["capacity"].values())


def test_vdevice_slots_follow_the_card_limit(mock_root: Path) -> None:
    inventory = discover(mock_root, max_vdevices=8)
    assert pool_of(inventory).slices[0][0]["capacity"]["vdevices"]["value"] == "8"


def test_cards_wider_than_the_cu_mask_are_offered_whole(mock_root: Path) -> None:
    wide = replace(discover(mock_root).devices[0], compute_units=160)
    entry = device_entry(wide, sharing=Sharing.CONSUMABLE, driver_version=None)
    assert "allowMultipleAllocations" not in entry
    assert entry["capacity"]["cores"] == {"value": "160"}


@pytest.mark.parametrize(
    ("version", "published"),
    [
        ("6.3.10", True),
        ("1.0.0-rc.1+build.5", True),
        ("6.3.10.2", False),
        ("v6.3.10", False),
        ("06.3.1", False),
        ("6.3", False),
    ],
    ids=["plain", "pre-and-build", "four-parts", "v-prefix", "leading-zero", "two-parts"],
)
def test_driver_version_is_published_only_when_strict_semver(
    mock_root: Path, version: str, published: bool
) -> None:
    inventory = replace(discover(mock_root), driver_version=version)
    attributes = pool_of(inventory).slices[0][0]["attributes"]
    assert ("driverVersion" in attributes) is published
    assert is_semver(version) is published


def test_pool_is_deterministic(mock_root: Path) -> None:
    assert pool_of(discover(mock_root)) == pool_of(discover(mock_root))


def test_node_without_dcus_publishes_one_empty_slice(tmp_path: Path) -> None:
    assert pool_of(discover(tmp_path)).slices == ((),)


def test_more_than_128_devices_are_split_over_slices(mock_root: Path) -> None:
    base = discover(mock_root)
    template = base.devices[0]
    many = tuple(
        replace(
            template,
            index=i,
            name=DeviceName(f"dcu-{i:04d}"),
            pci_bus_id=f"0000:{i // 32:02x}:{i % 32:02x}.0",
        )
        for i in range(130)
    )
    pool = pool_of(replace(base, devices=many))
    assert [len(s) for s in pool.slices] == [128, 2]


def _pool(device: dict[str, Any]) -> PoolSpec:
    return PoolSpec(driver=DRIVER, node_name="n", pool_name="n", slices=((device,),))


def _shared(capacity: dict[str, Any]) -> dict[str, Any]:
    return {"name": "dcu-x", "allowMultipleAllocations": True, "capacity": capacity}


@pytest.mark.parametrize(
    ("device", "problem"),
    [
        ({"name": "DCU_0"}, "name is not a DNS label"),
        (
            {"name": "d", "attributes": {"v": {"version": "1.2"}}},
            "version '1.2' is not strict SemVer",
        ),
        ({"name": "d", "attributes": {"s": {"string": "x" * 65}}}, "value longer than 64"),
        ({"name": "d", "attributes": {"s": {"string": "a", "int": 1}}}, "exactly one of"),
        ({"name": "d", "attributes": {"bad-key": {"int": 1}}}, "not a qualified name"),
        (
            {"name": "d", "attributes": {f"a{i}": {"int": i} for i in range(33)}},
            "33 attributes and capacities, more than 32",
        ),
        (
            {
                "name": "d",
                "capacity": {"cores": {"value": "60", "requestPolicy": {"default": "60"}}},
            },
            "requestPolicy without allowMultipleAllocations",
        ),
        (
            _shared(
                {
                    "memory": {
                        "value": "65520Mi",
                        "requestPolicy": {
                            "default": "65520Mi",
                            "validRange": {"min": "1Gi", "max": "65520Mi", "step": "1Gi"},
                        },
                    }
                }
            ),
            "max is not on the step grid from min",
        ),
        (
            _shared(
                {
                    "cores": {
                        "value": "60",
                        "requestPolicy": {
                            "default": "61",
                            "validRange": {"min": "1", "max": "60", "step": "1"},
                        },
                    }
                }
            ),
            "default exceeds max",
        ),
        (
            _shared(
                {
                    "cores": {
                        "value": "1",
                        "requestPolicy": {"default": "1", "validRange": {"min": "1", "step": "1"}},
                    }
                }
            ),
            "min + step exceeds the capacity",
        ),
        (
            _shared({"v": {"value": "4", "requestPolicy": {"default": "2", "validValues": ["1"]}}}),
            "default is not one of validValues",
        ),
        (
            _shared(
                {
                    "v": {
                        "value": "4",
                        "requestPolicy": {
                            "default": "1",
                            "validValues": ["1"],
                            "validRange": {"min": "1"},
                        },
                    }
                }
            ),
            "validValues and validRange are exclusive",
        ),
    ],
    ids=[
        "device-name",
        "semver",
        "long-string",
        "two-types",
        "attr-name",
        "too-many",
        "policy-without-sharing",
        "step-grid",
        "default-over-max",
        "min-plus-step",
        "default-not-valid-value",
        "values-and-range",
    ],
)
def test_validation_catches_what_the_api_server_rejects(
    device: dict[str, Any], problem: str
) -> None:
    problems = validate_pool(_pool(device))
    assert any(problem in p for p in problems), problems


def test_build_pool_refuses_an_invalid_pool(mock_root: Path) -> None:
    inventory = discover(mock_root)
    with pytest.raises(SliceValidationError, match=r"^driver name 'DCU\.Hygon' is not a DNS"):
        build_pool(inventory, driver="DCU.Hygon", node_name="n", sharing=Sharing.CONSUMABLE)
    duplicate = replace(inventory, devices=(inventory.devices[0], inventory.devices[0]))
    with pytest.raises(SliceValidationError, match=r"appears twice in the pool"):
        pool_of(duplicate)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("15", 15),
        ("2Gi", 2 * 2**30),
        ("1431Mi", 1431 * 2**20),
        ("1500M", 1500 * 10**6),
        ("4k", 4000),
    ],
)
def test_parse_quantity(text: str, value: int) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["1.5Gi", "-1", "1e3", "", "Gi"])
def test_parse_quantity_rejects_non_integral_forms(text: str) -> None:
    with pytest.raises(ValueError, match=r"^not an integral quantity"):
        parse_quantity(text)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0, "0"),
        (1, "1"),
        (2**20, "1Mi"),
        (65536 * 2**20, "64Gi"),
        (32752 * 2**20, "32752Mi"),
        (1536, "1536"),
        (3 * 2**40, "3Ti"),
    ],
)
def test_binary_quantities_are_canonical(value: int, text: str) -> None:
    assert format_binary_quantity(value) == text
    assert parse_quantity(text) == value


@pytest.mark.parametrize(("value", "text"), [(0, "0"), (60, "60"), (128, "128"), (2000, "2k")])
def test_decimal_quantities_are_canonical(value: int, text: str) -> None:
    assert format_decimal_quantity(value) == text
    assert parse_quantity(text) == value
