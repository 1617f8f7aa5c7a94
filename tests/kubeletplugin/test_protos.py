"""The generated stubs speak exactly the kubelet's wire protocol.

Every expectation below is written from the kubelet's DRA plugin protocol as upstream defines
it (kubernetes/kubelet ``pkg/apis/dra/v1/api.proto`` and ``v1beta1``,
``pkg/apis/pluginregistration/v1/api.proto``, ``pkg/apis/dra-health/v1alpha1`` and ``v1``),
never derived from the generated code, so a wrong field number, type, package or method name
in proto/ fails here. Field numbers are proven twice: via the descriptors and by decoding the
wire bytes with a hand-written decoder that knows nothing about protobuf's runtime.
"""

from __future__ import annotations

import enum
import importlib.util
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from dra_driver.kubeletplugin._pb import (
    dra_health_v1_pb2,
    dra_health_v1_pb2_grpc,
    dra_health_v1alpha1_pb2,
    dra_health_v1alpha1_pb2_grpc,
    dra_v1_pb2,
    dra_v1_pb2_grpc,
    dra_v1beta1_pb2,
    dra_v1beta1_pb2_grpc,
    pluginregistration_pb2,
    pluginregistration_pb2_grpc,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
GENERATOR = REPO_ROOT / "proto" / "generate.py"
PB_DIR = REPO_ROOT / "dra_driver" / "kubeletplugin" / "_pb"

DRA_V1 = "k8s.io.kubelet.pkg.apis.dra.v1"
DRA_V1BETA1 = "k8s.io.kubelet.pkg.apis.dra.v1beta1"
REGISTRATION = "pluginregistration"
HEALTH_V1ALPHA1 = "v1alpha1"
HEALTH_V1 = "v1"

PB2_MODULES: dict[str, ModuleType] = {
    DRA_V1: dra_v1_pb2,
    DRA_V1BETA1: dra_v1beta1_pb2,
    REGISTRATION: pluginregistration_pb2,
    HEALTH_V1ALPHA1: dra_health_v1alpha1_pb2,
    HEALTH_V1: dra_health_v1_pb2,
}


# --- The reference tables -------------------------------------------------------------------


class Kind(enum.Enum):
    """A field's shape as the reference writes it."""

    STRING = "string"
    OPTIONAL_STRING = "optional string"
    REPEATED_STRING = "repeated string"
    BOOL = "bool"
    INT64 = "int64"
    ENUM = "enum"
    MESSAGE = "message"
    REPEATED_MESSAGE = "repeated message"
    MAP_TO_MESSAGE = "map<string, message>"


#: Descriptor type, repeated-ness and wire type (0 = varint, 2 = length-delimited) per kind.
KIND_ENCODING: dict[Kind, tuple[int, bool, int]] = {
    Kind.STRING: (FieldDescriptor.TYPE_STRING, False, 2),
    Kind.OPTIONAL_STRING: (FieldDescriptor.TYPE_STRING, False, 2),
    Kind.REPEATED_STRING: (FieldDescriptor.TYPE_STRING, True, 2),
    Kind.BOOL: (FieldDescriptor.TYPE_BOOL, False, 0),
    Kind.INT64: (FieldDescriptor.TYPE_INT64, False, 0),
    Kind.ENUM: (FieldDescriptor.TYPE_ENUM, False, 0),
    Kind.MESSAGE: (FieldDescriptor.TYPE_MESSAGE, False, 2),
    Kind.REPEATED_MESSAGE: (FieldDescriptor.TYPE_MESSAGE, True, 2),
    Kind.MAP_TO_MESSAGE: (FieldDescriptor.TYPE_MESSAGE, True, 2),
}


@dataclass(frozen=True)
class Field:
    """One row of a reference message table."""

    name: str
    number: int
    kind: Kind
    #: Full name of the message (or map value message, or enum) the field refers to.
    target: str = ""


def _dra_messages(package: str, *, has_share_id: bool) -> dict[str, list[Field]]:
    """Reference §1.2; v1beta1 is the same minus ``Device.share_id``."""
    device = [
        Field("request_names", 1, Kind.REPEATED_STRING),
        Field("pool_name", 2, Kind.STRING),
        Field("device_name", 3, Kind.STRING),
        Field("cdi_device_ids", 4, Kind.REPEATED_STRING),
    ]
    if has_share_id:
        device.append(Field("share_id", 5, Kind.OPTIONAL_STRING))
    return {
        f"{package}.NodePrepareResourcesRequest": [
            Field("claims", 1, Kind.REPEATED_MESSAGE, f"{package}.Claim"),
        ],
        f"{package}.NodePrepareResourcesResponse": [
            Field("claims", 1, Kind.MAP_TO_MESSAGE, f"{package}.NodePrepareResourceResponse"),
        ],
        f"{package}.NodePrepareResourceResponse": [
            Field("devices", 1, Kind.REPEATED_MESSAGE, f"{package}.Device"),
            Field("error", 2, Kind.STRING),
        ],
        f"{package}.Device": device,
        f"{package}.NodeUnprepareResourcesRequest": [
            Field("claims", 1, Kind.REPEATED_MESSAGE, f"{package}.Claim"),
        ],
        f"{package}.NodeUnprepareResourcesResponse": [
            Field("claims", 1, Kind.MAP_TO_MESSAGE, f"{package}.NodeUnprepareResourceResponse"),
        ],
        f"{package}.NodeUnprepareResourceResponse": [
            Field("error", 1, Kind.STRING),
        ],
        f"{package}.Claim": [
            Field("namespace", 1, Kind.STRING),
            Field("uid", 2, Kind.STRING),
            Field("name", 3, Kind.STRING),
        ],
    }


def _health_messages(package: str) -> dict[str, list[Field]]:
    """Reference §3.2, identical for v1alpha1 and v1."""
    return {
        f"{package}.NodeWatchResourcesRequest": [],
        f"{package}.DeviceIdentifier": [
            Field("pool_name", 1, Kind.STRING),
            Field("device_name", 2, Kind.STRING),
        ],
        f"{package}.DeviceHealth": [
            Field("device", 1, Kind.MESSAGE, f"{package}.DeviceIdentifier"),
            Field("health", 2, Kind.ENUM, f"{package}.HealthStatus"),
            Field("last_updated_time", 3, Kind.INT64),
            Field("health_check_timeout_seconds", 4, Kind.INT64),
            Field("message", 5, Kind.STRING),
        ],
        f"{package}.NodeWatchResourcesResponse": [
            Field("devices", 1, Kind.REPEATED_MESSAGE, f"{package}.DeviceHealth"),
        ],
    }


#: Reference §2.1.
REGISTRATION_MESSAGES: dict[str, list[Field]] = {
    "pluginregistration.PluginInfo": [
        Field("type", 1, Kind.STRING),
        Field("name", 2, Kind.STRING),
        Field("endpoint", 3, Kind.STRING),
        Field("supported_versions", 4, Kind.REPEATED_STRING),
    ],
    "pluginregistration.RegistrationStatus": [
        Field("plugin_registered", 1, Kind.BOOL),
        Field("error", 2, Kind.STRING),
    ],
    "pluginregistration.RegistrationStatusResponse": [],
    "pluginregistration.InfoRequest": [],
}

#: Every message of every API, by full proto name.
REFERENCE_MESSAGES: dict[str, list[Field]] = {
    **_dra_messages(DRA_V1, has_share_id=True),
    **_dra_messages(DRA_V1BETA1, has_share_id=False),
    **REGISTRATION_MESSAGES,
    **_health_messages(HEALTH_V1ALPHA1),
    **_health_messages(HEALTH_V1),
}


@dataclass(frozen=True)
class Rpc:
    """One rpc of the reference: its full gRPC path and message types."""

    path: str
    request: str
    response: str
    is_server_streaming: bool = False


def _dra_rpcs(package: str) -> list[Rpc]:
    """Reference §1.1: two unary rpcs of ``DRAPlugin``."""
    service = f"/{package}.DRAPlugin"
    return [
        Rpc(
            f"{service}/NodePrepareResources",
            f"{package}.NodePrepareResourcesRequest",
            f"{package}.NodePrepareResourcesResponse",
        ),
        Rpc(
            f"{service}/NodeUnprepareResources",
            f"{package}.NodeUnprepareResourcesRequest",
            f"{package}.NodeUnprepareResourcesResponse",
        ),
    ]


def _health_rpcs(package: str) -> list[Rpc]:
    """Reference §3.1: one server-streaming rpc of ``DRAResourceHealth``."""
    return [
        Rpc(
            f"/{package}.DRAResourceHealth/NodeWatchResources",
            f"{package}.NodeWatchResourcesRequest",
            f"{package}.NodeWatchResourcesResponse",
            is_server_streaming=True,
        ),
    ]


#: (proto package, service name, pb2_grpc module, the service's rpcs).
SERVICES: list[tuple[str, str, ModuleType, list[Rpc]]] = [
    (DRA_V1, "DRAPlugin", dra_v1_pb2_grpc, _dra_rpcs(DRA_V1)),
    (DRA_V1BETA1, "DRAPlugin", dra_v1beta1_pb2_grpc, _dra_rpcs(DRA_V1BETA1)),
    (
        REGISTRATION,
        "Registration",
        pluginregistration_pb2_grpc,
        [
            Rpc(
                "/pluginregistration.Registration/GetInfo",
                "pluginregistration.InfoRequest",
                "pluginregistration.PluginInfo",
            ),
            Rpc(
                "/pluginregistration.Registration/NotifyRegistrationStatus",
                "pluginregistration.RegistrationStatus",
                "pluginregistration.RegistrationStatusResponse",
            ),
        ],
    ),
    (HEALTH_V1ALPHA1, "DRAResourceHealth", dra_health_v1alpha1_pb2_grpc, _health_rpcs("v1alpha1")),
    (HEALTH_V1, "DRAResourceHealth", dra_health_v1_pb2_grpc, _health_rpcs("v1")),
]
SERVICE_IDS = [f"{package}.{service}" for package, service, _, _ in SERVICES]


def _message_class(full_name: str) -> type[Message]:
    """Find a generated message class by its full proto name."""
    package, _, name = full_name.rpartition(".")
    cls: type[Message] = getattr(PB2_MODULES[package], name)
    return cls


# --- Fully populated messages -----------------------------------------------------------------


def _populated_dra(pb2: ModuleType, *, has_share_id: bool) -> list[Message]:
    """One instance of each request and response of ``DRAPlugin``, every field set."""
    claim = pb2.Claim(namespace="ns", uid="uid-1", name="claim-1")
    device_fields: dict[str, Any] = {
        "request_names": ["gpu", "vdcu"],
        "pool_name": "node-a",
        "device_name": "dcu-0",
        "cdi_device_ids": ["hygon.com/dcu=uid-1-dcu-0", "hygon.com/dcu=common"],
    }
    if has_share_id:
        device_fields["share_id"] = "share-7"
    prepared = pb2.NodePrepareResourceResponse(devices=[pb2.Device(**device_fields)], error="e")
    return [
        pb2.NodePrepareResourcesRequest(claims=[claim, claim]),
        pb2.NodePrepareResourcesResponse(claims={"uid-1": prepared, "uid-2": prepared}),
        pb2.NodeUnprepareResourcesRequest(claims=[claim]),
        pb2.NodeUnprepareResourcesResponse(
            claims={"uid-1": pb2.NodeUnprepareResourceResponse(error="busy")},
        ),
    ]


def _populated_health(pb2: ModuleType) -> list[Message]:
    """The request and response of ``DRAResourceHealth``, every field set (health non-zero)."""
    health = pb2.DeviceHealth(
        device=pb2.DeviceIdentifier(pool_name="node-a", device_name="dcu-0"),
        health=pb2.UNHEALTHY,
        last_updated_time=1_785_000_000,
        health_check_timeout_seconds=30,
        message="ECC errors",
    )
    return [pb2.NodeWatchResourcesRequest(), pb2.NodeWatchResourcesResponse(devices=[health])]


POPULATED_MESSAGES: list[Message] = [
    *_populated_dra(dra_v1_pb2, has_share_id=True),
    *_populated_dra(dra_v1beta1_pb2, has_share_id=False),
    pluginregistration_pb2.InfoRequest(),
    pluginregistration_pb2.PluginInfo(
        type="DRAPlugin",
        name="dcu.hygon.com",
        endpoint="/var/lib/kubelet/plugins/dcu.hygon.com/dra.sock",
        supported_versions=["v1.DRAPlugin", "v1beta1.DRAPlugin"],
    ),
    pluginregistration_pb2.RegistrationStatus(plugin_registered=True, error="none"),
    pluginregistration_pb2.RegistrationStatusResponse(),
    *_populated_health(dra_health_v1alpha1_pb2),
    *_populated_health(dra_health_v1_pb2),
]
POPULATED_IDS = [message.DESCRIPTOR.full_name for message in POPULATED_MESSAGES]


# --- A protobuf wire decoder that does not use the protobuf runtime ---------------------------


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """Decode the base-128 varint at ``pos``; return it and the position after it."""
    value = 0
    shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def decode_wire(data: bytes) -> list[tuple[int, int, int | bytes]]:
    """Split a serialized message into (field number, wire type, varint or payload) triples."""
    fields: list[tuple[int, int, int | bytes]] = []
    pos = 0
    while pos < len(data):
        tag, pos = _read_varint(data, pos)
        number, wire_type = tag >> 3, tag & 0x7
        value: int | bytes
        if wire_type == 0:
            value, pos = _read_varint(data, pos)
        elif wire_type == 2:
            length, pos = _read_varint(data, pos)
            value, pos = data[pos : pos + length], pos + length
        else:
            raise AssertionError(f"unexpected wire type {wire_type} for field {number}")
        fields.append((number, wire_type, value))
    return fields


def assert_wire_matches_reference(data: bytes, message_name: str) -> None:
    """Check every field on the wire, recursively, against the reference table.

    Every reference field must appear at least once, so the message must be fully populated.
    """
    by_number = {field.number: field for field in REFERENCE_MESSAGES[message_name]}
    seen: set[int] = set()
    for number, wire_type, value in decode_wire(data):
        assert number in by_number, f"{message_name}: field {number} is not in the reference"
        field = by_number[number]
        assert wire_type == KIND_ENCODING[field.kind][2], f"{message_name}.{field.name}"
        seen.add(number)
        if field.kind in (Kind.MESSAGE, Kind.REPEATED_MESSAGE):
            assert isinstance(value, bytes)
            assert_wire_matches_reference(value, field.target)
        elif field.kind is Kind.MAP_TO_MESSAGE:
            # A map entry is a message with key = 1 (string) and value = 2 (the message).
            assert isinstance(value, bytes)
            entry = decode_wire(value)
            assert [(n, w) for n, w, _ in entry] == [(1, 2), (2, 2)], f"{message_name} entry"
            entry_value = entry[1][2]
            assert isinstance(entry_value, bytes)
            assert_wire_matches_reference(entry_value, field.target)
    assert seen == set(by_number), f"{message_name}: fields {set(by_number) - seen} not set"


# --- Generated code vs. proto/ ----------------------------------------------------------------


def test_committed_stubs_match_what_proto_generates() -> None:
    result = subprocess.run(
        [sys.executable, str(GENERATOR), "--check"],
        capture_output=True,
        text=True,
        check=False,
        cwd=tempfile.gettempdir(),  # the generator must not depend on the working directory
    )
    assert result.returncode == 0, result.stderr


def _load_generator() -> Any:
    spec = importlib.util.spec_from_file_location("dcu_dra_proto_generate", GENERATOR)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generator_check_names_every_stale_file(tmp_path: Path) -> None:
    generator = _load_generator()
    committed = tmp_path / "committed"
    shutil.copytree(PB_DIR, committed, ignore=shutil.ignore_patterns("__pycache__"))
    (committed / "dra_v1_pb2.py").write_text("# edited by hand\n")
    (committed / "dra_v1_pb2_grpc.py").unlink()
    (committed / "leftover_pb2.py").write_text("")

    assert generator.diff_trees(PB_DIR, committed) == [
        "dra_v1_pb2.py (differs)",
        "dra_v1_pb2_grpc.py (missing)",
        "leftover_pb2.py (not generated from proto/)",
    ]


def test_generated_code_imports_siblings_package_absolutely() -> None:
    grpc_module = (PB_DIR / "dra_v1_pb2_grpc.py").read_text()
    assert "from dra_driver.kubeletplugin._pb import dra_v1_pb2 as " in grpc_module


def test_all_generated_modules_load_together_in_a_fresh_interpreter() -> None:
    # A fresh process so the result does not depend on what other tests imported first.
    modules = [path.stem for path in sorted(PB_DIR.glob("*_pb2*.py"))]
    assert len(modules) == 10
    code = "; ".join(f"import dra_driver.kubeletplugin._pb.{name}" for name in modules)
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO_ROOT,
    )
    assert result.returncode == 0, result.stderr


def test_proto_files_have_unique_names_in_the_descriptor_pool() -> None:
    names = [module.DESCRIPTOR.name for module in PB2_MODULES.values()]
    assert sorted(names) == [
        "dra_driver/kubeletplugin/_pb/dra_health_v1.proto",
        "dra_driver/kubeletplugin/_pb/dra_health_v1alpha1.proto",
        "dra_driver/kubeletplugin/_pb/dra_v1.proto",
        "dra_driver/kubeletplugin/_pb/dra_v1beta1.proto",
        "dra_driver/kubeletplugin/_pb/pluginregistration.proto",
    ]
    assert {package: module.DESCRIPTOR.package for package, module in PB2_MODULES.items()} == {
        package: package for package in PB2_MODULES
    }


# --- Messages ---------------------------------------------------------------------------------


def test_every_reference_message_and_no_other_is_generated() -> None:
    generated = {
        message.full_name
        for module in PB2_MODULES.values()
        for message in module.DESCRIPTOR.message_types_by_name.values()
    }
    assert generated == set(REFERENCE_MESSAGES)


@pytest.mark.parametrize("message_name", sorted(REFERENCE_MESSAGES))
def test_message_fields_have_reference_numbers_types_and_names(message_name: str) -> None:
    descriptor = _message_class(message_name).DESCRIPTOR
    expected = REFERENCE_MESSAGES[message_name]
    assert sorted(descriptor.fields_by_name) == sorted(field.name for field in expected)
    for field in expected:
        actual = descriptor.fields_by_name[field.name]
        expected_type, is_repeated, _ = KIND_ENCODING[field.kind]
        assert actual.number == field.number, field.name
        assert actual.type == expected_type, field.name
        # protobuf 7 dropped FieldDescriptor.label; is_repeated/is_required replace it.
        assert actual.is_repeated == is_repeated, field.name
        assert not actual.is_required, field.name
        assert actual.has_presence == (field.kind in (Kind.OPTIONAL_STRING, Kind.MESSAGE))
        if field.kind is Kind.MAP_TO_MESSAGE:
            entry = actual.message_type
            assert entry is not None
            assert entry.GetOptions().map_entry, field.name
            key, value = entry.fields_by_name["key"], entry.fields_by_name["value"]
            assert (key.number, key.type) == (1, FieldDescriptor.TYPE_STRING), field.name
            assert value.message_type is not None
            assert (value.number, value.message_type.full_name) == (2, field.target), field.name
        elif field.kind in (Kind.MESSAGE, Kind.REPEATED_MESSAGE):
            assert actual.message_type is not None
            assert actual.message_type.full_name == field.target, field.name
        elif field.kind is Kind.ENUM:
            assert actual.enum_type is not None
            assert actual.enum_type.full_name == field.target, field.name


@pytest.mark.parametrize("message", POPULATED_MESSAGES, ids=POPULATED_IDS)
def test_fully_populated_message_round_trips_with_reference_numbers_on_the_wire(
    message: Message,
) -> None:
    data = message.SerializeToString(deterministic=True)
    assert_wire_matches_reference(data, message.DESCRIPTOR.full_name)
    assert type(message).FromString(data) == message


def test_every_request_and_response_is_covered_by_a_populated_message() -> None:
    io_types = {rpc.request for *_, rpcs in SERVICES for rpc in rpcs}
    io_types |= {rpc.response for *_, rpcs in SERVICES for rpc in rpcs}
    assert io_types <= set(POPULATED_IDS)


@pytest.mark.parametrize(
    ("message", "wire"),
    [
        # Tag = number << 3 | wire type; written out by hand from the reference numbers.
        (dra_v1_pb2.Device(share_id="s"), b"\x2a\x01s"),  # 5 << 3 | 2
        (dra_v1_pb2.Device(cdi_device_ids=["c"]), b"\x22\x01c"),  # 4 << 3 | 2
        (dra_v1beta1_pb2.Claim(name="n"), b"\x1a\x01n"),  # 3 << 3 | 2
        (pluginregistration_pb2.RegistrationStatus(plugin_registered=True), b"\x08\x01"),
        (pluginregistration_pb2.PluginInfo(supported_versions=["v"]), b"\x22\x01v"),
        (dra_health_v1_pb2.DeviceHealth(health=dra_health_v1_pb2.UNHEALTHY), b"\x10\x02"),
        (dra_health_v1alpha1_pb2.DeviceHealth(message="m"), b"\x2a\x01m"),
        (dra_health_v1alpha1_pb2.DeviceHealth(health_check_timeout_seconds=1), b"\x20\x01"),
    ],
    ids=[
        "v1-share_id-5",
        "v1-cdi_device_ids-4",
        "v1beta1-claim-name-3",
        "registration-plugin_registered-1",
        "registration-supported_versions-4",
        "health-v1-health-2",
        "health-v1alpha1-message-5",
        "health-v1alpha1-timeout-4",
    ],
)
def test_single_field_encodes_to_hand_written_bytes(message: Message, wire: bytes) -> None:
    assert message.SerializeToString() == wire


def test_share_id_exists_only_in_v1_and_has_presence() -> None:
    share_id = dra_v1_pb2.Device.DESCRIPTOR.fields_by_name["share_id"]
    assert share_id.has_presence
    assert not dra_v1_pb2.Device().HasField("share_id")
    # Presence means an empty share ID is still sent, unlike a plain proto3 string.
    assert dra_v1_pb2.Device(share_id="").SerializeToString() == b"\x2a\x00"
    assert "share_id" not in dra_v1beta1_pb2.Device.DESCRIPTOR.fields_by_name
    # A v1beta1 peer skips field 5 as unknown; the rest of the device survives.
    data = dra_v1_pb2.Device(pool_name="p", share_id="s").SerializeToString()
    assert dra_v1beta1_pb2.Device.FromString(data).pool_name == "p"


@pytest.mark.parametrize(
    "pb2", [dra_health_v1alpha1_pb2, dra_health_v1_pb2], ids=["v1alpha1", "v1"]
)
def test_health_status_enum_has_reference_values(pb2: ModuleType) -> None:
    enum_type = pb2.DESCRIPTOR.enum_types_by_name["HealthStatus"]
    assert enum_type.full_name == f"{pb2.DESCRIPTOR.package}.HealthStatus"
    assert {value.name: value.number for value in enum_type.values} == {
        "UNKNOWN": 0,
        "HEALTHY": 1,
        "UNHEALTHY": 2,
    }


# --- Services ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("package", "service", "grpc_module", "rpcs"), SERVICES, ids=SERVICE_IDS)
def test_service_methods_have_reference_paths_and_types(
    package: str, service: str, grpc_module: ModuleType, rpcs: list[Rpc]
) -> None:
    descriptor = PB2_MODULES[package].DESCRIPTOR.services_by_name[service]
    assert descriptor.full_name == f"{package}.{service}"
    paths = {f"/{descriptor.full_name}/{method.name}": method for method in descriptor.methods}
    assert sorted(paths) == sorted(rpc.path for rpc in rpcs)
    for rpc in rpcs:
        method = paths[rpc.path]
        assert method.input_type.full_name == rpc.request
        assert method.output_type.full_name == rpc.response
        assert not method.client_streaming
        assert method.server_streaming == rpc.is_server_streaming


class RecordingChannel:
    """Stands in for a grpc.Channel and records which paths a stub registers."""

    def __init__(self) -> None:
        self.paths: dict[str, str] = {}

    def unary_unary(self, path: str, **_: object) -> None:
        self.paths[path] = "unary_unary"

    def unary_stream(self, path: str, **_: object) -> None:
        self.paths[path] = "unary_stream"


@pytest.mark.parametrize(("package", "service", "grpc_module", "rpcs"), SERVICES, ids=SERVICE_IDS)
def test_generated_client_stub_calls_reference_paths(
    package: str, service: str, grpc_module: ModuleType, rpcs: list[Rpc]
) -> None:
    channel = RecordingChannel()
    getattr(grpc_module, f"{service}Stub")(channel)
    assert channel.paths == {
        rpc.path: "unary_stream" if rpc.is_server_streaming else "unary_unary" for rpc in rpcs
    }


# --- A real server on a unix socket ------------------------------------------------------------

#: Linux sun_path is 108 bytes including the terminating NUL.
SUN_PATH_MAX = 107


class FakeDRAPlugin:
    """Prepares every claim as one device with a share ID; unprepare always succeeds."""

    def NodePrepareResources(self, request: Any, context: Any) -> Any:  # noqa: N802
        return dra_v1_pb2.NodePrepareResourcesResponse(
            claims={
                claim.uid: dra_v1_pb2.NodePrepareResourceResponse(
                    devices=[
                        dra_v1_pb2.Device(
                            pool_name="node-a",
                            device_name="dcu-0",
                            cdi_device_ids=[f"hygon.com/dcu={claim.uid}-dcu-0-s1"],
                            share_id="s1",
                        )
                    ]
                )
                for claim in request.claims
            }
        )

    def NodeUnprepareResources(self, request: Any, context: Any) -> Any:  # noqa: N802
        return dra_v1_pb2.NodeUnprepareResourcesResponse(
            claims={
                claim.uid: dra_v1_pb2.NodeUnprepareResourceResponse() for claim in request.claims
            }
        )


class FakeRegistration:
    """Answers GetInfo like a DRA driver and records the registration status."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.statuses: list[Any] = []

    def GetInfo(self, request: Any, context: Any) -> Any:  # noqa: N802
        return pluginregistration_pb2.PluginInfo(
            type="DRAPlugin",
            name="dcu.hygon.com",
            endpoint=self.endpoint,
            supported_versions=["v1.DRAPlugin", "v1beta1.DRAPlugin"],
        )

    def NotifyRegistrationStatus(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.statuses.append(request)
        return pluginregistration_pb2.RegistrationStatusResponse()


class FakeHealth:
    """Streams a single report with one unhealthy device."""

    def __init__(self, pb2: ModuleType) -> None:
        self.pb2 = pb2

    def NodeWatchResources(self, request: Any, context: Any) -> Iterator[Any]:  # noqa: N802
        yield self.pb2.NodeWatchResourcesResponse(
            devices=[
                self.pb2.DeviceHealth(
                    device=self.pb2.DeviceIdentifier(pool_name="node-a", device_name="dcu-0"),
                    health=self.pb2.UNHEALTHY,
                )
            ]
        )


@pytest.fixture
def socket_path(short_sock_dir: Path) -> Path:
    path = short_sock_dir / "dra.sock"
    assert len(str(path).encode()) <= SUN_PATH_MAX
    return path


@pytest.fixture
def registration(socket_path: Path) -> FakeRegistration:
    return FakeRegistration(endpoint=str(socket_path))


@pytest.fixture
def channel(socket_path: Path, registration: FakeRegistration) -> Iterator[Any]:
    """A real gRPC server on a unix socket with the fakes behind it, and a channel to it."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    dra_v1_pb2_grpc.add_DRAPluginServicer_to_server(FakeDRAPlugin(), server)
    pluginregistration_pb2_grpc.add_RegistrationServicer_to_server(registration, server)
    dra_health_v1alpha1_pb2_grpc.add_DRAResourceHealthServicer_to_server(
        FakeHealth(dra_health_v1alpha1_pb2), server
    )
    dra_health_v1_pb2_grpc.add_DRAResourceHealthServicer_to_server(
        FakeHealth(dra_health_v1_pb2), server
    )
    assert server.add_insecure_port(f"unix:{socket_path}") != 0
    server.start()
    try:
        with grpc.insecure_channel(f"unix:{socket_path}") as client_channel:
            yield client_channel
    finally:
        server.stop(grace=None).wait()


def test_prepare_and_unprepare_round_trip_over_a_unix_socket(channel: Any) -> None:
    stub = dra_v1_pb2_grpc.DRAPluginStub(channel)
    claim = dra_v1_pb2.Claim(namespace="ns", uid="uid-1", name="claim-1")

    prepared = stub.NodePrepareResources(
        dra_v1_pb2.NodePrepareResourcesRequest(claims=[claim]), timeout=10
    )
    unprepared = stub.NodeUnprepareResources(
        dra_v1_pb2.NodeUnprepareResourcesRequest(claims=[claim]), timeout=10
    )

    assert list(prepared.claims) == ["uid-1"]
    (device,) = prepared.claims["uid-1"].devices
    assert (device.pool_name, device.device_name, device.share_id) == ("node-a", "dcu-0", "s1")
    assert list(device.cdi_device_ids) == ["hygon.com/dcu=uid-1-dcu-0-s1"]
    assert device.HasField("share_id")
    assert list(unprepared.claims) == ["uid-1"]
    assert unprepared.claims["uid-1"].error == ""


def test_registration_round_trip_over_a_unix_socket(
    channel: Any, registration: FakeRegistration, socket_path: Path
) -> None:
    stub = pluginregistration_pb2_grpc.RegistrationStub(channel)

    info = stub.GetInfo(pluginregistration_pb2.InfoRequest(), timeout=10)
    stub.NotifyRegistrationStatus(
        pluginregistration_pb2.RegistrationStatus(plugin_registered=True), timeout=10
    )

    assert (info.type, info.name, info.endpoint) == ("DRAPlugin", "dcu.hygon.com", str(socket_path))
    assert list(info.supported_versions) == ["v1.DRAPlugin", "v1beta1.DRAPlugin"]
    assert [status.plugin_registered for status in registration.statuses] == [True]


@pytest.mark.parametrize(
    ("pb2", "grpc_module"),
    [
        (dra_health_v1alpha1_pb2, dra_health_v1alpha1_pb2_grpc),
        (dra_health_v1_pb2, dra_health_v1_pb2_grpc),
    ],
    ids=["v1alpha1", "v1"],
)
def test_health_stream_is_served_under_both_versions_on_one_socket(
    channel: Any, pb2: ModuleType, grpc_module: ModuleType
) -> None:
    stub = grpc_module.DRAResourceHealthStub(channel)

    responses = list(stub.NodeWatchResources(pb2.NodeWatchResourcesRequest(), timeout=10))

    assert len(responses) == 1
    (health,) = responses[0].devices
    assert (health.device.device_name, health.health) == ("dcu-0", pb2.UNHEALTHY)
