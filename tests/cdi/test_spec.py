"""Tests of dra_driver.cdi.spec: model, version rules, rendering, node spec, writer."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dra_driver.cdi import spec as cdi
from dra_driver.cdi.spec import (
    ContainerEdits,
    Device,
    DeviceNode,
    Hook,
    Mount,
    Spec,
    build_node_spec,
    minimum_version,
    qualified_id,
    remove_spec,
    render_spec,
    spec_document,
    spec_file_name,
    write_spec,
)
from dra_driver.cdi.validate import BUNDLED_SCHEMA_DIR, validate_document
from dra_driver.errors import CdiError, CdiValidationError
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


def env_device(name: str = "dcu0") -> Device:
    return Device(name=name, container_edits=ContainerEdits(env=("A=1",)))


# --- minimum_version ---------------------------------------------------------------------------

MINIMUM_VERSION_CASES: list[tuple[Spec, str]] = [
    (Spec(kind="example.com/dcu", devices=(env_device(),)), "0.3.0"),
    (
        Spec(
            kind="example.com/dcu",
            devices=(
                Device(
                    name="dcu0",
                    container_edits=ContainerEdits(
                        mounts=(Mount(host_path="/h", container_path="/c", type="tmpfs"),)
                    ),
                ),
            ),
        ),
        "0.4.0",
    ),
    (
        Spec(
            kind="example.com/dcu",
            devices=(env_device(),),
            container_edits=ContainerEdits(
                device_nodes=(DeviceNode(path="/dev/kfd", host_path="/mock/dev/kfd"),)
            ),
        ),
        "0.5.0",
    ),
    (Spec(kind="example.com/dcu", devices=(env_device("0"),)), "0.5.0"),
    (Spec(kind="example.com/dcu", devices=(env_device(),), annotations={"a": "b"}), "0.6.0"),
    (
        Spec(
            kind="example.com/dcu",
            devices=(
                Device(
                    name="dcu0",
                    container_edits=ContainerEdits(env=("A=1",)),
                    annotations={"a": "b"},
                ),
            ),
        ),
        "0.6.0",
    ),
    (Spec(kind="example.com/dcu.v2", devices=(env_device(),)), "0.6.0"),
    (Spec(kind="hygon.com/dcu", devices=(env_device(),)), "0.3.0"),
    (
        Spec(
            kind="example.com/dcu",
            devices=(env_device(),),
            container_edits=ContainerEdits(additional_gids=(44,)),
        ),
        "0.7.0",
    ),
    (
        Spec(
            kind="example.com/dcu",
            devices=(Device(name="dcu0", container_edits=ContainerEdits(additional_gids=(44,))),),
        ),
        "0.7.0",
    ),
    (
        Spec(
            kind="example.com/dcu",
            devices=(env_device("0"),),
            annotations={"a": "b"},
            container_edits=ContainerEdits(
                mounts=(Mount(host_path="/h", container_path="/c", type="tmpfs"),)
            ),
        ),
        "0.6.0",
    ),
]


@pytest.mark.parametrize(
    ("spec", "expected"),
    MINIMUM_VERSION_CASES,
    ids=[
        "base",
        "mount-type",
        "device-node-host-path",
        "device-name-starting-with-digit",
        "spec-annotations",
        "device-annotations",
        "dot-in-class",
        "dot-in-vendor-only",
        "spec-additional-gids",
        "device-additional-gids",
        "highest-of-several",
    ],
)
def test_minimum_version_is_the_lowest_version_supporting_the_fields_used(
    spec: Spec, expected: str
) -> None:
    assert minimum_version(spec) == expected
    assert spec_document(spec)["cdiVersion"] == expected


@pytest.mark.parametrize(
    ("edits", "expected"),
    [
        ({"intelRdt": {}}, "0.7.0"),
        ({"intelRdt": {"closID": "x", "schemata": []}}, "1.1.0"),
        ({"intelRdt": {"enableMonitoring": False}}, "1.1.0"),
        ({"netDevices": []}, "1.1.0"),
        ({"env": ["A=1"], "additionalGids": []}, "0.3.0"),
    ],
    ids=["intel-rdt", "schemata", "enable-monitoring", "net-devices", "empty-gids"],
)
def test_minimum_version_of_document_covers_raw_only_fields(
    edits: dict[str, object], expected: str
) -> None:
    doc: dict[str, object] = {
        "kind": "example.com/dcu",
        "devices": [{"name": "dcu0", "containerEdits": edits}],
    }
    assert cdi.minimum_version_of_document(doc) == expected


def test_version_requirements_skip_parts_of_the_wrong_type() -> None:
    doc: dict[str, object] = {
        "kind": 7,
        "devices": [None, {"name": 3, "containerEdits": {"mounts": "x", "deviceNodes": [1]}}],
        "containerEdits": [],
    }
    assert cdi.version_requirements(doc) == []


# --- names -------------------------------------------------------------------------------------


def test_qualified_id_joins_kind_and_name() -> None:
    assert qualified_id("hygon.com/dcu", "DCU-0a1b") == "hygon.com/dcu=DCU-0a1b"


@pytest.mark.parametrize(
    ("kind", "name", "message"),
    [
        ("hygon.com", "0", r"^kind 'hygon\.com' must have the form <vendor>/<class>$"),
        ("hygon.com/dcu", "a b", r"^device name 'a b' contains ' '; only letters"),
        ("hygon.com/dcu", "", r"^device name is empty$"),
    ],
    ids=["kind-without-class", "name-with-space", "empty-name"],
)
def test_qualified_id_rejects_names_the_runtime_cannot_parse(
    kind: str, name: str, message: str
) -> None:
    with pytest.raises(CdiError, match=message):
        qualified_id(kind, name)


@pytest.mark.parametrize(
    ("kind", "suffix", "expected"),
    [
        ("hygon.com/dcu", None, "hygon.com-dcu.json"),
        ("k8s.dcu.hygon.com/vdcu", "6b9a-11ef", "k8s.dcu.hygon.com-vdcu_6b9a-11ef.json"),
        ("hygon.com/dcu", "ns/claim", "hygon.com-dcu_ns_claim.json"),
    ],
    ids=["static", "transient", "slash-in-suffix"],
)
def test_spec_file_name_follows_the_go_library_convention(
    kind: str, suffix: str | None, expected: str
) -> None:
    assert spec_file_name(kind, suffix) == expected


def test_spec_file_name_rejects_an_invalid_kind() -> None:
    with pytest.raises(CdiError, match=r"^kind 'dcu' must have the form <vendor>/<class>$"):
        spec_file_name("dcu")


# --- rendering ---------------------------------------------------------------------------------


def test_render_is_deterministic_and_ignores_annotation_order() -> None:
    def build(annotations: dict[str, str]) -> Spec:
        return Spec(
            kind="example.com/dcu",
            devices=(env_device(),),
            annotations=annotations,
            container_edits=ContainerEdits(
                hooks=(Hook(hook_name="createContainer", path="/bin/true", timeout=5),)
            ),
        )

    first = render_spec(build({"b": "2", "a": "1"}))
    second = render_spec(build({"a": "1", "b": "2"}))
    assert first == second
    assert first.endswith(b"}\n")
    assert list(json.loads(first)) == [
        "cdiVersion",
        "kind",
        "annotations",
        "devices",
        "containerEdits",
    ]
    assert b'\n  "kind": "example.com/dcu",\n' in first


def test_render_omits_empty_optional_fields() -> None:
    spec = Spec(
        kind="example.com/dcu",
        devices=(
            Device(
                name="dcu0",
                container_edits=ContainerEdits(
                    device_nodes=(DeviceNode(path="/dev/x", major=0, minor=0, type="c"),),
                    mounts=(Mount(host_path="/h", container_path="/c"),),
                ),
            ),
        ),
    )
    doc = json.loads(render_spec(spec))
    assert doc == {
        "cdiVersion": "0.3.0",
        "kind": "example.com/dcu",
        "devices": [
            {
                "name": "dcu0",
                "containerEdits": {
                    "deviceNodes": [{"path": "/dev/x", "type": "c", "major": 0, "minor": 0}],
                    "mounts": [{"hostPath": "/h", "containerPath": "/c"}],
                },
            }
        ],
    }


def test_annotations_are_read_only_copies() -> None:
    source = {"a": "1"}
    spec = Spec(kind="example.com/dcu", devices=(env_device(),), annotations=source)
    source["b"] = "2"
    assert dict(spec.annotations) == {"a": "1"}
    with pytest.raises(TypeError):
        spec.annotations["c"] = "3"  # type: ignore[index]
    assert hash(spec) == hash(Spec(kind="example.com/dcu", devices=(env_device(),)))


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


# --- write_spec / remove_spec ------------------------------------------------------------------


@pytest.fixture
def strict_umask() -> Iterator[None]:
    """Run with umask 077 so modes that depend on the umask would show."""
    previous = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(previous)


VALID_SPEC = Spec(kind="example.com/dcu", devices=(env_device(),))
INVALID_SPEC = Spec(
    kind="example.com/dcu", devices=(Device(name="dcu0", container_edits=ContainerEdits()),)
)


@pytest.mark.usefixtures("strict_umask")
def test_write_spec_writes_0644_into_a_new_0755_directory(tmp_path: Path) -> None:
    directory = tmp_path / "run" / "cdi"
    path = write_spec(VALID_SPEC, directory, "example.com-dcu.json")
    assert path == directory / "example.com-dcu.json"
    assert path.read_bytes() == render_spec(VALID_SPEC)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert stat.S_IMODE(directory.stat().st_mode) == 0o755
    assert os.listdir(directory) == ["example.com-dcu.json"]


def test_write_spec_keeps_the_mode_of_an_existing_directory(tmp_path: Path) -> None:
    tmp_path.chmod(0o711)
    write_spec(VALID_SPEC, tmp_path, "a.json")
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o711


def test_write_spec_replaces_an_existing_file_without_leaving_temp_files(tmp_path: Path) -> None:
    write_spec(Spec(kind="example.com/dcu", devices=(env_device("old"),)), tmp_path, "a.json")
    write_spec(VALID_SPEC, tmp_path, "a.json")
    assert (tmp_path / "a.json").read_bytes() == render_spec(VALID_SPEC)
    assert os.listdir(tmp_path) == ["a.json"]


def test_write_spec_refuses_an_invalid_spec_and_changes_nothing(tmp_path: Path) -> None:
    write_spec(VALID_SPEC, tmp_path, "a.json")
    before = (tmp_path / "a.json").read_bytes()
    with pytest.raises(
        CdiValidationError,
        match=r"^CDI spec of kind 'example\.com/dcu': \$\.devices\[0\]\.containerEdits: "
        r"a device's containerEdits must not be empty",
    ):
        write_spec(INVALID_SPEC, tmp_path, "a.json")
    assert os.listdir(tmp_path) == ["a.json"]
    assert (tmp_path / "a.json").read_bytes() == before


def test_write_spec_refuses_an_invalid_spec_before_creating_the_directory(tmp_path: Path) -> None:
    with pytest.raises(CdiValidationError):
        write_spec(INVALID_SPEC, tmp_path / "cdi", "a.json")
    assert not (tmp_path / "cdi").exists()


@pytest.mark.parametrize(
    ("file_name", "message"),
    [
        ("a.yaml", r"^CDI spec file name 'a\.yaml' must end in \.json"),
        ("sub/a.json", r"^CDI spec file name 'sub/a\.json' must not contain '/'$"),
        (".json", r"^CDI spec file name '\.json' must end in \.json and not start with '\.'"),
    ],
    ids=["not-json", "slash", "hidden"],
)
def test_write_spec_refuses_a_bad_file_name(tmp_path: Path, file_name: str, message: str) -> None:
    with pytest.raises(CdiError, match=message):
        write_spec(VALID_SPEC, tmp_path, file_name)
    assert os.listdir(tmp_path) == []


def test_write_spec_failure_keeps_the_old_file_and_leaves_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_spec(VALID_SPEC, tmp_path, "a.json")
    before = (tmp_path / "a.json").read_bytes()

    def failing_replace(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    other = Spec(kind="example.com/dcu", devices=(env_device("other"),))
    with pytest.raises(CdiError, match=r"^cannot write CDI spec .*/a\.json: No space left"):
        write_spec(other, tmp_path, "a.json")
    assert os.listdir(tmp_path) == ["a.json"]
    assert (tmp_path / "a.json").read_bytes() == before


def test_remove_spec_is_idempotent(tmp_path: Path) -> None:
    write_spec(VALID_SPEC, tmp_path, "a.json")
    assert remove_spec(tmp_path, "a.json") is True
    assert remove_spec(tmp_path, "a.json") is False
    assert remove_spec(tmp_path / "missing-dir", "a.json") is False
    assert os.listdir(tmp_path) == []


# --- properties --------------------------------------------------------------------------------

device_names = st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9_.:-]{0,16}[A-Za-z0-9])?", fullmatch=True)
env_entries = st.from_regex(r"[A-Z_][A-Z0-9_]{0,8}=[ -~]{0,8}", fullmatch=True)
device_nodes = st.builds(
    DeviceNode,
    path=st.sampled_from(["/dev/kfd", "/dev/dri/card1"]),
    host_path=st.none() | st.just("/mock/dev/x"),
    type=st.none() | st.sampled_from(["c", "b"]),
    major=st.none() | st.integers(0, 511),
    minor=st.none() | st.integers(0, 511),
    permissions=st.none() | st.sampled_from(["r", "rw", "rwm"]),
    uid=st.none() | st.integers(0, 2**32 - 1),
)
mounts = st.builds(
    Mount,
    host_path=st.just("/opt/hyhal"),
    container_path=st.just("/opt/hyhal"),
    options=st.lists(st.sampled_from(["ro", "bind", "nosuid"]), max_size=3).map(tuple),
    type=st.none() | st.just("tmpfs"),
)
annotation_maps = st.dictionaries(st.from_regex(r"[a-z]{1,8}", fullmatch=True), st.text(max_size=8))
edits = st.builds(
    ContainerEdits,
    env=st.lists(env_entries, min_size=1, max_size=2).map(tuple),
    device_nodes=st.lists(device_nodes, max_size=2).map(tuple),
    mounts=st.lists(mounts, max_size=2).map(tuple),
    additional_gids=st.lists(st.integers(0, 2**32 - 1), max_size=2).map(tuple),
)
specs = st.builds(
    Spec,
    kind=st.sampled_from(["example.com/dcu", "example.com/dcu.v1", "hygon.com/dcu"]),
    devices=st.lists(
        st.builds(Device, name=device_names, container_edits=edits, annotations=annotation_maps),
        min_size=1,
        max_size=3,
        unique_by=lambda device: device.name,
    ).map(tuple),
    annotations=annotation_maps,
)


@settings(max_examples=75, deadline=None)
@given(spec=specs)
def test_any_rendered_spec_is_valid_and_declares_exactly_its_minimum_version(spec: Spec) -> None:
    doc = json.loads(render_spec(spec))
    assert validate_document(doc, schema_dir=BUNDLED_SCHEMA_DIR) == []
    version = doc["cdiVersion"]
    assert version == minimum_version(spec)
    for older in cdi.CDI_VERSIONS[: cdi.version_index(version)]:
        problems = validate_document({**doc, "cdiVersion": older})
        assert len(problems) == 1
        assert problems[0].startswith(f"$.cdiVersion: '{older}' is too old for the fields used")
