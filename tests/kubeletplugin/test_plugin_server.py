"""Socket names of the kubelet plugin: defaults, rolling-update names and the 108-byte hashing.

The rules (kubelet-plugin-protocol.md §4.1-4.2) are restated here with hashlib and base64, so
the tests check the module against the reference rather than against itself.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import socket
from pathlib import Path
from typing import Any

import grpc
import pytest

from dra_driver import cli
from dra_driver.config import ConfigError, PluginConfig
from dra_driver.kubeletplugin._pb import pluginregistration_pb2, pluginregistration_pb2_grpc
from dra_driver.kubeletplugin.plugin_server import (
    KubeletPluginServer,
    dra_socket_name,
    registration_socket_name,
)
from dra_driver.kubeletplugin.server import MAX_SOCKET_PATH_BYTES
from tests.kubeletplugin.test_servicer import DRIVER, NODE, FakeClaims, FakePlugin

POD_UID = "8f14e45f-ceea-467f-a0e6-b2f4a1b3c9d7"
OTHER_POD_UID = "c9f0f895-fb98-4b9b-99cf-0ba6c2b1e7d4"


def b64(digest: bytes) -> str:
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


B1 = b64(hashlib.sha256(POD_UID.encode()).digest()[:8])
B2 = b64(hashlib.sha256(DRIVER.encode() + b"\x00" + POD_UID.encode()).digest()[:16])


def directory_for(name: str, total_bytes: int) -> Path:
    """An absolute directory such that ``<directory>/<name>`` is exactly ``total_bytes`` long."""
    padding = total_bytes - len("/") - len("/") - len(name.encode())
    assert padding > 0
    return Path("/" + "d" * padding)


def test_default_names_without_a_pod_uid() -> None:
    assert registration_socket_name(DRIVER) == "dcu.hygon.com-reg.sock"
    assert dra_socket_name() == "dra.sock"


def test_rolling_update_names_carry_the_pod_uid() -> None:
    assert registration_socket_name(DRIVER, pod_uid=POD_UID, registrar_dir=Path("/r")) == (
        f"dcu.hygon.com-{POD_UID}-reg.sock"
    )
    assert dra_socket_name(pod_uid=POD_UID, data_dir=Path("/d")) == f"dra-{POD_UID}.sock"


def test_hashes_are_unpadded_base64url_of_the_reference_lengths() -> None:
    assert len(B1) == 11 and len(B2) == 22
    assert all(c.isalnum() or c in "-_" for c in B1 + B2)


@pytest.mark.parametrize(
    ("total_bytes", "expected"),
    [
        (MAX_SOCKET_PATH_BYTES, f"{DRIVER}-{POD_UID}-reg.sock"),
        (MAX_SOCKET_PATH_BYTES + 1, f"{DRIVER}-{B1}-reg.sock"),
    ],
    ids=["full-name-fits-at-107-bytes", "one-byte-more-hashes-the-pod-uid"],
)
def test_registration_name_is_hashed_at_the_limit(total_bytes: int, expected: str) -> None:
    directory = directory_for(f"{DRIVER}-{POD_UID}-reg.sock", total_bytes)
    name = registration_socket_name(DRIVER, pod_uid=POD_UID, registrar_dir=directory)
    assert name == expected
    assert len(os.fsencode(directory / name)) <= MAX_SOCKET_PATH_BYTES


@pytest.mark.parametrize(
    ("total_bytes", "expected"),
    [
        (MAX_SOCKET_PATH_BYTES, f"{DRIVER}-{B1}-reg.sock"),
        (MAX_SOCKET_PATH_BYTES + 1, f"dra-{B2}-reg.sock"),
    ],
    ids=["driver-and-short-hash-fit", "only-the-driver-free-hash-fits"],
)
def test_registration_name_falls_back_to_the_third_candidate(
    total_bytes: int, expected: str
) -> None:
    directory = directory_for(f"{DRIVER}-{B1}-reg.sock", total_bytes)
    assert registration_socket_name(DRIVER, pod_uid=POD_UID, registrar_dir=directory) == expected


def test_third_candidate_is_returned_even_when_nothing_fits() -> None:
    directory = Path("/" + "d" * 120)
    assert (
        registration_socket_name(DRIVER, pod_uid=POD_UID, registrar_dir=directory)
        == f"dra-{B2}-reg.sock"
    )


@pytest.mark.parametrize(
    ("total_bytes", "expected"),
    [(MAX_SOCKET_PATH_BYTES, f"dra-{POD_UID}.sock"), (MAX_SOCKET_PATH_BYTES + 1, f"dra-{B1}.sock")],
    ids=["fits", "hashed"],
)
def test_dra_socket_name_is_hashed_when_too_long(total_bytes: int, expected: str) -> None:
    directory = directory_for(f"dra-{POD_UID}.sock", total_bytes)
    assert dra_socket_name(pod_uid=POD_UID, data_dir=directory) == expected


def test_names_differ_per_pod_uid() -> None:
    for directory in (Path("/r"), Path("/" + "d" * 80)):
        assert registration_socket_name(
            DRIVER, pod_uid=POD_UID, registrar_dir=directory
        ) != registration_socket_name(DRIVER, pod_uid=OTHER_POD_UID, registrar_dir=directory)


def server(directory: Path, pod_uid: str) -> KubeletPluginServer:
    return KubeletPluginServer(
        driver_name=DRIVER,
        node_name=NODE,
        registrar_dir=directory / "reg",
        data_dir=directory / "data",
        plugin=FakePlugin(),
        get_claim=FakeClaims().get,
        pod_uid=pod_uid,
    )


def endpoint(registration_socket: Path) -> str:
    with grpc.insecure_channel(f"unix:{registration_socket}") as channel:
        stub = pluginregistration_pb2_grpc.RegistrationStub(channel)
        return str(stub.GetInfo(pluginregistration_pb2.InfoRequest(), timeout=10).endpoint)


def test_two_instances_serve_side_by_side_and_stop_leaves_the_other(
    short_sock_dir: Path,
) -> None:
    old, new = server(short_sock_dir, POD_UID), server(short_sock_dir, OTHER_POD_UID)
    old.start()
    try:
        new.start()
        try:
            assert sorted(os.listdir(short_sock_dir / "reg")) == sorted(
                [f"{DRIVER}-{POD_UID}-reg.sock", f"{DRIVER}-{OTHER_POD_UID}-reg.sock"]
            )
            assert endpoint(old.registration_socket) == str(
                short_sock_dir / "data" / f"dra-{POD_UID}.sock"
            )
            assert endpoint(new.registration_socket) == str(
                short_sock_dir / "data" / f"dra-{OTHER_POD_UID}.sock"
            )
            old.stop(1)
            # The old instance removed its own sockets only; the new one still answers.
            assert sorted(os.listdir(short_sock_dir / "reg")) == [
                f"{DRIVER}-{OTHER_POD_UID}-reg.sock"
            ]
            assert not old.dra_socket.exists() and new.dra_socket.exists()
            assert endpoint(new.registration_socket) == str(new.dra_socket)
        finally:
            new.stop(1)
    finally:
        old.stop(1)


def test_a_stale_socket_of_another_instance_is_left_alone(short_sock_dir: Path) -> None:
    (short_sock_dir / "reg").mkdir()
    stale = socket.socket(socket.AF_UNIX)
    stale_path = short_sock_dir / "reg" / f"{DRIVER}-{OTHER_POD_UID}-reg.sock"
    stale.bind(str(stale_path))
    instance = server(short_sock_dir, POD_UID)
    try:
        instance.start()
        instance.stop(1)
        assert stale_path.exists()
    finally:
        stale.close()


# --- the flags ----------------------------------------------------------------------------


def plugin_args(*extra: str) -> Any:
    return cli.build_parser().parse_args(["kubelet-plugin", "--node-name", "n", *extra])


def test_rolling_update_flags_and_env_twins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ROLLING_UPDATE", raising=False)
    monkeypatch.delenv("POD_UID", raising=False)
    args = plugin_args()
    assert (args.rolling_update, args.pod_uid) == (False, None)
    args = plugin_args("--rolling-update", "--pod-uid", POD_UID)
    assert (args.rolling_update, args.pod_uid) == (True, POD_UID)
    monkeypatch.setenv("ROLLING_UPDATE", "true")
    monkeypatch.setenv("POD_UID", OTHER_POD_UID)
    args = plugin_args()
    assert (args.rolling_update, args.pod_uid) == (True, OTHER_POD_UID)
    assert plugin_args("--no-rolling-update").rolling_update is False


def test_rolling_update_without_a_pod_uid_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("POD_UID", raising=False)
    with pytest.raises(SystemExit) as exited:
        cli.main(["kubelet-plugin", "--node-name", "n", "--rolling-update"])
    assert exited.value.code == 2
    assert re.fullmatch(
        r"dcu-dra kubelet-plugin: error: --rolling-update needs this pod's UID for unique socket "
        r"names: set --pod-uid, or POD_UID from the downward API \(fieldRef metadata.uid\)\n",
        capsys.readouterr().err,
    )


@pytest.mark.parametrize(
    "bad", ["", "../x", "a/b", "x" * 129], ids=["empty", "dots", "slash", "long"]
)
def test_a_pod_uid_unfit_for_file_names_is_refused(bad: str) -> None:
    config = PluginConfig(node_name="n", rolling_update=True, pod_uid=bad)
    with pytest.raises(ConfigError, match=r"^--(rolling-update|pod-uid) "):
        config.validate()


def test_a_bad_boolean_environment_value_is_one_clear_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ROLLING_UPDATE", "maybe")
    with pytest.raises(SystemExit, match=r"ROLLING_UPDATE='maybe' is not a boolean"):
        plugin_args()
