"""The mock DCU node library: config parsing and the tree it writes."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest

from dra_driver.errors import MockConfigError
from dra_driver.node.devices import discover
from dra_driver.node.mock import DEFAULT_CONFIG, create_mock_node, load_config, parse_config
from dra_driver.node.mock.layout import MARKER, device_number


def test_default_config_is_two_z100_and_one_k100_ai() -> None:
    assert [(d.device_id, d.compute_units, d.memory_bytes) for d in DEFAULT_CONFIG.devices] == [
        (0x54B7, 60, 34342961152),
        (0x54B7, 60, 34342961152),
        (0x6210, 120, 64 * 1024**3),
    ]


def test_config_accepts_models_ids_and_quantities(tmp_path: Path) -> None:
    path = tmp_path / "node.yaml"
    path.write_text(
        "devices:\n"
        "- {model: K100_AI, computeUnits: 120, memory: 64Gi, pciBusID: '0000:AF:00.0',"
        " numaNode: 1}\n"
        "- {deviceID: 0x6370, computeUnits: 80, memory: 68702699520, pciBusID: '0000:3b:00.0',"
        " serial: abc123}\n"
    )
    config = load_config(path)
    first, second = config.devices
    assert (first.device_id, first.memory_bytes, first.pci_bus_id, first.numa_node) == (
        0x6210,
        64 * 1024**3,
        "0000:af:00.0",
        1,
    )
    assert (second.device_id, second.memory_bytes, second.serial) == (0x6370, 68702699520, "abc123")


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], r"^t: expected a mapping with one key, 'devices'$"),
        ({"devices": [], "extra": 1}, r"^t: expected a mapping with one key, 'devices'$"),
        ({"devices": []}, r"^t: 'devices' must be a non-empty list$"),
        (
            {
                "devices": [
                    {"model": "Z999", "computeUnits": 1, "memory": 1, "pciBusID": "0000:01:00.0"}
                ]
            },
            r"^t: devices\[0\]: model 'Z999' is not in the device-id table; give 'deviceID'",
        ),
        (
            {
                "devices": [
                    {"model": "Z100", "computeUnits": 0, "memory": 1, "pciBusID": "0000:01:00.0"}
                ]
            },
            r"^t: devices\[0\]\.computeUnits: expected a positive integer, got 0$",
        ),
        (
            {
                "devices": [
                    {
                        "model": "Z100",
                        "computeUnits": 1,
                        "memory": "1GB",
                        "pciBusID": "0000:01:00.0",
                    }
                ]
            },
            r"^t: devices\[0\]\.memory: expected bytes or a quantity like 64Gi, got '1GB'$",
        ),
        (
            {"devices": [{"model": "Z100", "computeUnits": 1, "memory": 1, "pciBusID": "01:00.0"}]},
            r"^t: devices\[0\]\.pciBusID: expected 'DDDD:BB:DD\.F'",
        ),
        (
            {
                "devices": [
                    {
                        "model": "Z100",
                        "computeUnits": 1,
                        "memory": 1,
                        "pciBusID": "0000:01:00.0",
                        "colour": "red",
                    }
                ]
            },
            r"^t: devices\[0\]: unknown key\(s\) colour; allowed: ",
        ),
        (
            {
                "devices": [
                    {"deviceID": "0xZZ", "computeUnits": 1, "memory": 1, "pciBusID": "0000:01:00.0"}
                ]
            },
            r"^t: devices\[0\]\.deviceID: expected a 16-bit id like 0x6210, got '0xZZ'$",
        ),
        (
            {
                "devices": [
                    {"model": "Z100", "computeUnits": 1, "memory": 1, "pciBusID": "0000:01:00.0"},
                    {"model": "Z100", "computeUnits": 1, "memory": 1, "pciBusID": "0000:01:00.0"},
                ]
            },
            r"^t: duplicate pciBusID 0000:01:00\.0$",
        ),
        (
            {
                "devices": [
                    {
                        "model": "Z100",
                        "computeUnits": 1,
                        "memory": 1,
                        "pciBusID": "0000:01:00.0",
                        "serial": "../x",
                    }
                ]
            },
            r"^t: devices\[0\]\.serial: expected letters and digits only$",
        ),
    ],
    ids=[
        "not-mapping",
        "extra-key",
        "empty",
        "unknown-model",
        "zero-cus",
        "bad-memory",
        "bad-bus-id",
        "unknown-key",
        "bad-device-id",
        "duplicate-bus",
        "path-like-serial",
    ],
)
def test_bad_configs_get_one_clear_message(document: object, message: str) -> None:
    with pytest.raises(MockConfigError, match=message):
        parse_config(document, source="t")


def test_unparsable_and_missing_config_files(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("devices: [\n")
    with pytest.raises(MockConfigError, match=r"^mock config .*broken\.yaml is not valid YAML"):
        load_config(broken)
    with pytest.raises(MockConfigError, match=r"^cannot read mock config .*missing\.yaml"):
        load_config(tmp_path / "missing.yaml")


#: What ``ls -l /dev`` of the default mock node shows: majors 120 and 121 (local and
#: experimental use), the DRM minors of each card's own nodes.
DEFAULT_DEVICE_NUMBERS = {
    "kfd": (120, 0),
    "mkfd": (120, 1),
    "dri/card1": (121, 1),
    "dri/renderD129": (121, 129),
    "dri/card2": (121, 2),
    "dri/renderD130": (121, 130),
    "dri/card3": (121, 3),
    "dri/renderD131": (121, 131),
}


def test_device_nodes_are_char_devices_with_numbers_of_their_own_when_root(
    tmp_path: Path,
) -> None:
    """Regression: every node had /dev/null's numbers (1:3), so nothing could tell whether a
    card's CDI edit carried that card's numbers. Each node now has its own, from the local and
    experimental char majors no host driver uses."""
    if os.geteuid() != 0:
        with pytest.raises(PermissionError):
            create_mock_node(tmp_path / "n", device_nodes="char")
        return
    create_mock_node(tmp_path / "n", device_nodes="char")
    found = {}
    for path in sorted((tmp_path / "n/dev").rglob("*")):
        info = path.lstat()
        if not stat.S_ISDIR(info.st_mode):
            assert stat.S_ISCHR(info.st_mode), path
            found[path.relative_to(tmp_path / "n/dev").as_posix()] = (
                os.major(info.st_rdev),
                os.minor(info.st_rdev),
            )
    assert found == DEFAULT_DEVICE_NUMBERS
    assert len(set(found.values())) == len(found)
    assert {name: device_number(name) for name in found} == {
        name: os.makedev(*numbers) for name, numbers in DEFAULT_DEVICE_NUMBERS.items()
    }


def test_two_mock_nodes_give_the_same_card_different_uuids(tmp_path: Path) -> None:
    """Regression: without /etc/machine-id (and with the PCI unique_id the mock derived from the
    bus id alone) every mock node gave a card in the same slot the same uuid."""
    create_mock_node(tmp_path / "a")
    create_mock_node(tmp_path / "b")
    assert not (tmp_path / "a/etc/machine-id").exists()
    a, b = discover(tmp_path / "a").devices, discover(tmp_path / "b").devices
    assert [d.pci_bus_id for d in a] == [d.pci_bus_id for d in b]
    assert len({d.uuid for d in (*a, *b)}) == 6
    assert all(re.fullmatch(r"DCU-[0-9a-f]{16}", d.uuid) for d in (*a, *b))


def test_the_uuids_come_from_the_kfd_topology_unless_a_serial_is_configured(
    tmp_path: Path,
) -> None:
    config = parse_config(
        {
            "devices": [
                {"model": "Z100", "computeUnits": 60, "memory": "32Gi", "pciBusID": "0000:01:00.0"},
                {
                    "model": "Z100",
                    "computeUnits": 60,
                    "memory": "32Gi",
                    "pciBusID": "0000:02:00.0",
                    "serial": "abc123",
                },
            ]
        }
    )
    create_mock_node(tmp_path / "n", config)
    assert not (tmp_path / "n/sys/bus/pci/devices/0000:01:00.0/unique_id").exists()
    props = (tmp_path / "n/sys/class/kfd/kfd/topology/nodes/1/properties").read_text()
    [unique_id] = [
        int(line.split()[1]) for line in props.splitlines() if line.startswith("unique_id ")
    ]
    first, second = discover(tmp_path / "n").devices
    assert first.uuid == f"DCU-{unique_id:016x}"
    assert second.uuid == "DCU-abc123"


def test_recreating_a_mock_node_keeps_its_uuids(tmp_path: Path) -> None:
    """The chart's init container re-creates the node on every start: card ids must survive."""
    create_mock_node(tmp_path / "n")
    before = [d.uuid for d in discover(tmp_path / "n").devices]
    create_mock_node(tmp_path / "n")
    assert [d.uuid for d in discover(tmp_path / "n").devices] == before


def test_a_node_id_makes_the_uuids_reproducible(tmp_path: Path) -> None:
    create_mock_node(tmp_path / "a", node_id="golden")
    create_mock_node(tmp_path / "b", node_id="golden")
    create_mock_node(tmp_path / "c", node_id="other")
    a, b, c = (discover(tmp_path / name).devices for name in "abc")
    assert [d.uuid for d in a] == [d.uuid for d in b]
    assert not {d.uuid for d in a} & {d.uuid for d in c}
    with pytest.raises(MockConfigError, match=r"^mock node id '\.\./x': expected 1-128 letters"):
        create_mock_node(tmp_path / "d", node_id="../x")


def test_device_nodes_can_be_plain_files(tmp_path: Path) -> None:
    create_mock_node(tmp_path / "n", device_nodes="file")
    assert stat.S_ISREG((tmp_path / "n/dev/dri/renderD129").stat().st_mode)
    assert len(discover(tmp_path / "n").devices) == 3


def test_tree_has_no_world_writable_files_or_dirs(mock_root: Path) -> None:
    for path in [mock_root, *mock_root.rglob("*")]:
        mode = path.lstat().st_mode
        if stat.S_ISLNK(mode):
            continue  # a symlink's own mode means nothing; its target is checked
        if stat.S_ISCHR(mode) or (path.parent.name in {"dev", "dri"} and stat.S_ISREG(mode)):
            continue  # device nodes are rw for all, as /dev/kfd is on a node
        assert mode & 0o002 == 0, path
    hy_smi = mock_root / "opt/hyhal/bin/hy-smi"
    assert hy_smi.stat().st_mode & 0o777 == 0o755


def test_recreating_a_mock_node_replaces_it(tmp_path: Path) -> None:
    root = tmp_path / "n"
    create_mock_node(root)
    one = parse_config(
        {
            "devices": [
                {"model": "Z100", "computeUnits": 60, "memory": "32Gi", "pciBusID": "0000:01:00.0"}
            ]
        }
    )
    create_mock_node(root, one)
    assert [d.pci_bus_id for d in discover(root).devices] == ["0000:01:00.0"]
    assert (root / MARKER).is_file()


def test_refuses_a_non_empty_directory_that_is_not_a_mock(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(MockConfigError, match=r"is not empty and holds no mock node"):
        create_mock_node(tmp_path)
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_refuses_a_file_as_root(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("")
    with pytest.raises(MockConfigError, match=r"exists and is not a directory$"):
        create_mock_node(target)
