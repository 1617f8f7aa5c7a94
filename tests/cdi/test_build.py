"""Tests of dra_driver.cdi.build: the node spec built from an Inventory."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from dra_driver.cdi.build import build_node_spec
from dra_driver.cdi.model import Mount, minimum_version, render_spec, spec_document
from dra_driver.cdi.validate import BUNDLED_SCHEMA_DIR, validate_document
from dra_driver.errors import CdiError
from dra_driver.node.devices import DcuDevice, DeviceName, Inventory

IS_ROOT = os.geteuid() == 0
#: Numbers of /dev/null: a harmless real character device for tests running as root.
NULL_MAJOR, NULL_MINOR = 1, 3


def make_dcu(index: int, *, uuid: str | None = None) -> DcuDevice:
    bus = f"0000:{0x3B + index:02x}:00.0"
    return DcuDevice(
        index=index,
        name=DeviceName(f"dcu-{bus.replace(':', '-').replace('.', '-')}"),
        model="Z100",
        device_id=0x54B7,
        pci_bus_id=bus,
        uuid=uuid if uuid is not None else f"DCU-0000000{index}abcdef",
        compute_units=60,
        memory_bytes=32 * 1024**3,
        numa_node=0,
        card=f"card{index + 1}",
        render=f"renderD{129 + index}",
        max_vdevices=4,
        kfd_node=index + 1,
        gpu_id=1000 + index,
    )


def make_node_file(path: Path, *, is_char_device: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if is_char_device:
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(NULL_MAJOR, NULL_MINOR))
    else:
        path.write_bytes(b"")


def make_inventory(
    root: Path,
    *,
    count: int = 2,
    is_char_device: bool = False,
    has_kfd: bool = True,
    has_mkfd: bool = True,
    has_hyhal: bool = True,
    uuids: tuple[str, ...] | None = None,
) -> Inventory:
    dcus = tuple(make_dcu(i, uuid=None if uuids is None else uuids[i]) for i in range(count))
    for dcu in dcus:
        for drm in (dcu.card, dcu.render):
            make_node_file(root / "dev" / "dri" / drm, is_char_device=is_char_device)
    for name, present in (("kfd", has_kfd), ("mkfd", has_mkfd)):
        if present:
            make_node_file(root / "dev" / name, is_char_device=is_char_device)
    if has_hyhal:
        (root / "opt" / "hyhal").mkdir(parents=True)
    return Inventory(
        root=root,
        devices=dcus,
        kfd=root / "dev" / "kfd" if has_kfd else None,
        mkfd=root / "dev" / "mkfd" if has_mkfd else None,
        hyhal=root / "opt" / "hyhal" if has_hyhal else None,
    )


# --- build_node_spec ---------------------------------------------------------------------------

NODE_SPEC_FOR_ONE_PLAIN_FILE_DCU = """\
{
  "cdiVersion": "0.5.0",
  "kind": "hygon.com/dcu",
  "devices": [
    {
      "name": "0",
      "containerEdits": {
        "env": [
          "DCU_0000_3B_00_0_UUID=DCU-00000000abcdef"
        ],
        "deviceNodes": [
          {
            "path": "/dev/dri/card1",
            "permissions": "rw"
          },
          {
            "path": "/dev/dri/renderD129",
            "permissions": "rw"
          }
        ]
      }
    },
    {
      "name": "DCU-00000000abcdef",
      "containerEdits": {
        "env": [
          "DCU_0000_3B_00_0_UUID=DCU-00000000abcdef"
        ],
        "deviceNodes": [
          {
            "path": "/dev/dri/card1",
            "permissions": "rw"
          },
          {
            "path": "/dev/dri/renderD129",
            "permissions": "rw"
          }
        ]
      }
    },
    {
      "name": "all",
      "containerEdits": {
        "env": [
          "DCU_0000_3B_00_0_UUID=DCU-00000000abcdef"
        ],
        "deviceNodes": [
          {
            "path": "/dev/dri/card1",
            "permissions": "rw"
          },
          {
            "path": "/dev/dri/renderD129",
            "permissions": "rw"
          }
        ]
      }
    }
  ],
  "containerEdits": {
    "deviceNodes": [
      {
        "path": "/dev/kfd",
        "permissions": "rw"
      },
      {
        "path": "/dev/mkfd",
        "permissions": "rw"
      }
    ],
    "mounts": [
      {
        "hostPath": "/opt/hyhal",
        "containerPath": "/opt/hyhal",
        "options": [
          "ro",
          "nosuid",
          "nodev",
          "bind"
        ]
      }
    ]
  }
}
"""


def test_node_spec_for_one_dcu_renders_byte_for_byte(tmp_path: Path) -> None:
    inventory = make_inventory(tmp_path, count=1)
    spec = build_node_spec(inventory, host_root=Path("/"))
    assert render_spec(spec).decode() == NODE_SPEC_FOR_ONE_PLAIN_FILE_DCU


def test_node_spec_names_every_dcu_by_index_and_uuid_plus_all(tmp_path: Path) -> None:
    inventory = make_inventory(tmp_path, count=2)
    spec = build_node_spec(inventory)
    names = [device.name for device in spec.devices]
    assert names == ["0", "1", "DCU-00000000abcdef", "DCU-00000001abcdef", "all"]
    by_name = {device.name: device.container_edits for device in spec.devices}
    assert [node.path for node in by_name["1"].device_nodes] == [
        "/dev/dri/card2",
        "/dev/dri/renderD130",
    ]
    assert by_name["DCU-00000001abcdef"] == by_name["1"]
    assert [node.path for node in by_name["all"].device_nodes] == [
        "/dev/dri/card1",
        "/dev/dri/renderD129",
        "/dev/dri/card2",
        "/dev/dri/renderD130",
    ]
    assert by_name["all"].env == (
        "DCU_0000_3B_00_0_UUID=DCU-00000000abcdef",
        "DCU_0000_3C_00_0_UUID=DCU-00000001abcdef",
    )
    assert by_name["1"].env == ("DCU_0000_3C_00_0_UUID=DCU-00000001abcdef",)
    assert [node.path for node in spec.container_edits.device_nodes] == ["/dev/kfd", "/dev/mkfd"]
    assert spec.container_edits.mounts == (
        Mount(
            host_path=str(tmp_path / "opt" / "hyhal"),
            container_path="/opt/hyhal",
            options=("ro", "nosuid", "nodev", "bind"),
        ),
    )


@pytest.mark.parametrize("is_char_device", [False, True], ids=["plain-files", "char-devices"])
def test_node_spec_passes_the_official_schema_and_the_strict_rules(
    tmp_path: Path, is_char_device: bool
) -> None:
    inventory = make_inventory(tmp_path, is_char_device=is_char_device and IS_ROOT)
    doc = spec_document(build_node_spec(inventory))
    assert validate_document(doc, schema_dir=BUNDLED_SCHEMA_DIR) == []


def test_host_path_defaults_to_the_inventory_root(tmp_path: Path) -> None:
    spec = build_node_spec(make_inventory(tmp_path))
    kfd = spec.container_edits.device_nodes[0]
    assert (kfd.path, kfd.host_path) == ("/dev/kfd", str(tmp_path / "dev" / "kfd"))
    assert minimum_version(spec) == "0.5.0"


def test_host_path_uses_host_root_where_the_runtime_sees_the_node(tmp_path: Path) -> None:
    spec = build_node_spec(make_inventory(tmp_path), host_root=Path("/var/lib/dcu-mock"))
    nodes = spec.container_edits.device_nodes + spec.devices[0].container_edits.device_nodes
    assert [node.host_path for node in nodes] == [
        "/var/lib/dcu-mock/dev/kfd",
        "/var/lib/dcu-mock/dev/mkfd",
        "/var/lib/dcu-mock/dev/dri/card1",
        "/var/lib/dcu-mock/dev/dri/renderD129",
    ]
    assert spec.container_edits.mounts[0].host_path == "/var/lib/dcu-mock/opt/hyhal"


def test_host_path_is_omitted_when_it_equals_the_container_path(tmp_path: Path) -> None:
    spec = build_node_spec(make_inventory(tmp_path), host_root=Path("/"))
    all_nodes = [
        node
        for edits in (spec.container_edits, *(d.container_edits for d in spec.devices))
        for node in edits.device_nodes
    ]
    assert all_nodes
    assert all(node.host_path is None for node in all_nodes)
    assert "hostPath" not in render_spec(spec).decode().replace('"hostPath": "/opt/hyhal"', "")


def test_character_devices_get_type_and_numbers_plain_files_get_none(tmp_path: Path) -> None:
    plain = build_node_spec(make_inventory(tmp_path / "plain"))
    node = plain.container_edits.device_nodes[0]
    assert (node.type, node.major, node.minor, node.permissions) == (None, None, None, "rw")

    # As root the node is a real character device; otherwise mknod is not possible and the
    # node stays a plain file, so the plain-file behaviour is what must hold.
    real = build_node_spec(make_inventory(tmp_path / "real", is_char_device=IS_ROOT))
    node = real.devices[0].container_edits.device_nodes[0]
    if IS_ROOT:
        assert (node.type, node.major, node.minor) == ("c", NULL_MAJOR, NULL_MINOR)
    else:
        assert (node.type, node.major, node.minor) == (None, None, None)


def test_node_spec_without_kfd_mkfd_and_hyhal_has_no_spec_level_edits(tmp_path: Path) -> None:
    inventory = make_inventory(tmp_path, has_kfd=False, has_mkfd=False, has_hyhal=False)
    doc = spec_document(build_node_spec(inventory))
    assert "containerEdits" not in doc
    assert validate_document(doc, schema_dir=BUNDLED_SCHEMA_DIR) == []


def test_node_spec_skips_an_invalid_or_repeated_uuid(tmp_path: Path) -> None:
    inventory = make_inventory(tmp_path, count=3, uuids=("DCU 0", "DCU-1", "DCU-1"))
    names = [device.name for device in build_node_spec(inventory).devices]
    assert names == ["0", "1", "2", "DCU-1", "all"]


def test_node_spec_refuses_an_inventory_without_dcus(tmp_path: Path) -> None:
    inventory = Inventory(root=tmp_path, devices=(), kfd=None, mkfd=None, hyhal=None)
    with pytest.raises(
        CdiError, match=r"^no DCUs under .*: a node spec needs at least one device$"
    ):
        build_node_spec(inventory)


def test_node_spec_refuses_a_missing_device_node(tmp_path: Path) -> None:
    inventory = make_inventory(tmp_path, count=1)
    (tmp_path / "dev" / "dri" / "renderD129").unlink()
    with pytest.raises(CdiError, match=r"^device node .*/dev/dri/renderD129 is missing"):
        build_node_spec(inventory)
