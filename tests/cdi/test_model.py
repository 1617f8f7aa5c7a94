"""Tests of dra_driver.cdi.model: the dataclasses, names, version rules and rendering."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dra_driver.cdi.model import (
    CDI_VERSIONS,
    ContainerEdits,
    Device,
    DeviceNode,
    Hook,
    Mount,
    Spec,
    minimum_version,
    minimum_version_of_document,
    qualified_id,
    render_spec,
    spec_document,
    spec_file_name,
    version_index,
    version_requirements,
)
from dra_driver.cdi.validate import BUNDLED_SCHEMA_DIR, validate_document
from dra_driver.errors import CdiError


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
    assert minimum_version_of_document(doc) == expected


def test_version_requirements_skip_parts_of_the_wrong_type() -> None:
    doc: dict[str, object] = {
        "kind": 7,
        "devices": [None, {"name": 3, "containerEdits": {"mounts": "x", "deviceNodes": [1]}}],
        "containerEdits": [],
    }
    assert version_requirements(doc) == []


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
    for older in CDI_VERSIONS[: version_index(version)]:
        problems = validate_document({**doc, "cdiVersion": older})
        assert len(problems) == 1
        assert problems[0].startswith(f"$.cdiVersion: '{older}' is too old for the fields used")
