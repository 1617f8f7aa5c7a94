"""The kubelet-facing servers over real unix sockets, with a fake Plugin and fake claims.

Every call goes through the generated client stubs, as the kubelet's would; nothing here needs
an API server (claims come from an injected getter) or hardware (the Plugin is a fake).
"""

from __future__ import annotations

import fcntl
import itertools
import logging
import os
import re
import socket
import stat
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from dra_driver.cluster.kube.errors import NotFound, ServerError
from dra_driver.errors import DriverError
from dra_driver.kubeletplugin import calllog
from dra_driver.kubeletplugin._pb import (
    dra_v1_pb2,
    dra_v1_pb2_grpc,
    dra_v1beta1_pb2,
    dra_v1beta1_pb2_grpc,
    pluginregistration_pb2,
    pluginregistration_pb2_grpc,
)
from dra_driver.kubeletplugin.plugin_server import KubeletPluginServer
from dra_driver.kubeletplugin.server import SocketServerError, UnixSocketServer
from dra_driver.kubeletplugin.servicer import (
    CallContextInterceptor,
    CallSerializer,
    DraService,
    add_dra_services,
)
from dra_driver.node.devices import DeviceName
from dra_driver.prepare.model import Claim, ClaimRef, ClaimUID, PreparedDevice, PrepareResult

DRIVER = "dcu.hygon.com"
NODE = "node-a"
DEVICE = "dcu-0000-3b-00-0"
TIMEOUT_S = 10


def uid(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


def share_id(n: int) -> str:
    return f"11111111-0000-4000-8000-{n:012d}"


def claim_json(n: int, *, shared: bool = True, allocated: bool = True) -> dict[str, Any]:
    result: dict[str, Any] = {
        "request": "dcu/small",
        "driver": DRIVER,
        "pool": NODE,
        "device": DEVICE,
    }
    if shared:
        result["shareID"] = share_id(n)
        result["consumedCapacity"] = {"cores": "10", "memory": "4Gi", "vdevices": "1"}
    obj: dict[str, Any] = {"metadata": {"namespace": "ns", "name": f"c{n}", "uid": uid(n)}}
    if allocated:
        obj["status"] = {"allocation": {"devices": {"results": [result]}}}
    return obj


@dataclass
class FakeClaims:
    """The API server's claims by (namespace, name); records every read."""

    objects: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    failing: set[str] = field(default_factory=set)
    reads: list[tuple[str, str]] = field(default_factory=list)
    delay_s: float = 0.0
    barrier: threading.Barrier | None = None

    def add(self, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        self.objects[(meta["namespace"], meta["name"])] = obj

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        self.reads.append((namespace, name))
        if self.barrier is not None:
            self.barrier.wait(timeout=TIMEOUT_S)
        time.sleep(self.delay_s)
        if name in self.failing:
            raise ServerError(503, "ServiceUnavailable", "etcd is sad", method="GET", path="/x")
        try:
            return self.objects[(namespace, name)]
        except KeyError:
            raise NotFound(404, "NotFound", f"{name} not found") from None


@dataclass
class FakePlugin:
    """Prepares each share as one device; records calls and their time intervals."""

    errors: dict[str, DriverError] = field(default_factory=dict)
    skip: set[str] = field(default_factory=set)
    raises: BaseException | None = None
    sleep_s: float = 0.0
    entered: threading.Event = field(default_factory=threading.Event)
    release: threading.Event | None = None
    prepared: list[list[Claim]] = field(default_factory=list)
    unprepared: list[list[ClaimRef]] = field(default_factory=list)
    intervals: list[tuple[float, float]] = field(default_factory=list)

    def _run(self) -> None:
        start = time.monotonic()
        self.entered.set()
        if self.release is not None:
            self.release.wait(TIMEOUT_S)
        time.sleep(self.sleep_s)
        if self.raises is not None:
            raise self.raises
        self.intervals.append((start, time.monotonic()))

    def prepare_claims(
        self, claims: Sequence[Claim]
    ) -> dict[ClaimUID, PrepareResult | DriverError]:
        self.prepared.append(list(claims))
        self._run()
        results: dict[ClaimUID, PrepareResult | DriverError] = {}
        for claim in claims:
            if claim.ref.uid in self.skip:
                continue
            if claim.ref.uid in self.errors:
                results[claim.ref.uid] = self.errors[claim.ref.uid]
                continue
            results[claim.ref.uid] = PrepareResult(
                devices=tuple(
                    PreparedDevice(
                        requests=(s.request,),
                        pool=s.pool,
                        device=s.device,
                        cdi_ids=(f"k8s.{DRIVER}/dcu={claim.ref.uid}-{s.device}",),
                        share_id=s.share_id,
                    )
                    for s in claim.shares
                )
            )
        return results

    def unprepare_claims(self, refs: Sequence[ClaimRef]) -> dict[ClaimUID, DriverError | None]:
        self.unprepared.append(list(refs))
        self._run()
        return {ref.uid: self.errors.get(ref.uid) for ref in refs if ref.uid not in self.skip}


@dataclass
class Served:
    server: KubeletPluginServer
    plugin: FakePlugin
    claims: FakeClaims
    dra: grpc.Channel
    registration: grpc.Channel
    base: Path

    def stub(self, version: str) -> Any:
        module = dra_v1_pb2_grpc if version == "v1" else dra_v1beta1_pb2_grpc
        return module.DRAPluginStub(self.dra)

    def registration_stub(self) -> Any:
        return pluginregistration_pb2_grpc.RegistrationStub(self.registration)


@pytest.fixture
def served(short_sock_dir: Path) -> Iterator[Served]:
    plugin = FakePlugin()
    claims = FakeClaims()
    server = KubeletPluginServer(
        driver_name=DRIVER,
        node_name=NODE,
        registrar_dir=short_sock_dir / "reg",
        data_dir=short_sock_dir / "data",
        plugin=plugin,
        get_claim=claims.get,
    )
    server.start()
    try:
        with (
            grpc.insecure_channel(f"unix:{server.dra_socket}") as dra,
            grpc.insecure_channel(f"unix:{server.registration_socket}") as registration,
        ):
            yield Served(server, plugin, claims, dra, registration, short_sock_dir)
    finally:
        server.stop(1)


PB2 = {"v1": dra_v1_pb2, "v1beta1": dra_v1beta1_pb2}


def prepare(served: Served, *numbers: int, version: str = "v1", **claim_fields: str) -> Any:
    pb2 = PB2[version]
    request = pb2.NodePrepareResourcesRequest(
        claims=[
            pb2.Claim(
                namespace=claim_fields.get("namespace", "ns"),
                name=claim_fields.get("name", f"c{n}"),
                uid=claim_fields.get("uid", uid(n)),
            )
            for n in numbers
        ]
    )
    return served.stub(version).NodePrepareResources(request, timeout=TIMEOUT_S)


def unprepare(served: Served, *numbers: int, version: str = "v1") -> Any:
    pb2 = PB2[version]
    request = pb2.NodeUnprepareResourcesRequest(
        claims=[pb2.Claim(namespace="ns", name=f"c{n}", uid=uid(n)) for n in numbers]
    )
    return served.stub(version).NodeUnprepareResources(request, timeout=TIMEOUT_S)


# --- registration ---------------------------------------------------------------------------


def test_get_info_names_the_driver_endpoint_and_versions_in_order(served: Served) -> None:
    info = served.registration_stub().GetInfo(
        pluginregistration_pb2.InfoRequest(), timeout=TIMEOUT_S
    )
    assert info.type == "DRAPlugin"
    assert info.name == DRIVER
    assert info.endpoint == str(served.base / "data" / "dra.sock")
    assert os.path.isabs(info.endpoint)
    assert list(info.supported_versions) == ["v1.DRAPlugin", "v1beta1.DRAPlugin"]


def test_registration_status_is_recorded(served: Served, caplog: pytest.LogCaptureFixture) -> None:
    stub = served.registration_stub()
    caplog.set_level(logging.INFO, logger="dra_driver")
    assert not served.server.registered.is_set()

    stub.NotifyRegistrationStatus(
        pluginregistration_pb2.RegistrationStatus(plugin_registered=True), timeout=TIMEOUT_S
    )
    assert served.server.registered.is_set()
    assert "registered with the kubelet as DRA driver dcu.hygon.com" in caplog.text

    with pytest.raises(grpc.RpcError) as caught:
        stub.NotifyRegistrationStatus(
            pluginregistration_pb2.RegistrationStatus(
                plugin_registered=False, error="version mismatch"
            ),
            timeout=TIMEOUT_S,
        )
    assert caught.value.code() == grpc.StatusCode.UNKNOWN
    assert caught.value.details() == "registration of dcu.hygon.com failed: version mismatch"
    assert not served.server.registered.is_set()
    assert served.server.registration.last_error == "version mismatch"
    (rejection,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert rejection.getMessage().endswith(
        "the kubelet rejected the registration of DRA driver dcu.hygon.com: version mismatch"
    )


def test_each_registration_calls_on_registered_and_a_rejection_does_not(served: Served) -> None:
    stub = served.registration_stub()
    calls: list[None] = []
    served.server.registration.on_registered = lambda: calls.append(None)
    for registered in (True, True):
        stub.NotifyRegistrationStatus(
            pluginregistration_pb2.RegistrationStatus(plugin_registered=registered),
            timeout=TIMEOUT_S,
        )
    with pytest.raises(grpc.RpcError):
        stub.NotifyRegistrationStatus(
            pluginregistration_pb2.RegistrationStatus(plugin_registered=False, error="no"),
            timeout=TIMEOUT_S,
        )
    assert len(calls) == 2


# --- prepare --------------------------------------------------------------------------------


def test_v1_prepare_returns_devices_with_share_ids(served: Served) -> None:
    served.claims.add(claim_json(1))
    served.claims.add(claim_json(2, shared=False))

    response = prepare(served, 1, 2)

    assert sorted(response.claims) == [uid(1), uid(2)]
    (shared,) = response.claims[uid(1)].devices
    assert response.claims[uid(1)].error == ""
    assert list(shared.request_names) == ["dcu"]  # the subrequest is stripped
    assert (shared.pool_name, shared.device_name) == (NODE, DEVICE)
    assert list(shared.cdi_device_ids) == [f"k8s.{DRIVER}/dcu={uid(1)}-{DEVICE}"]
    assert shared.HasField("share_id") and shared.share_id == share_id(1)
    (whole,) = response.claims[uid(2)].devices
    assert not whole.HasField("share_id")
    # What the Plugin was handed: converted claims.
    ((first, second),) = served.plugin.prepared
    assert first.ref == ClaimRef(uid=ClaimUID(uid(1)), namespace="ns", name="c1")
    assert first.shares[0].cores == 10 and first.shares[0].memory_bytes == 4 * 2**30
    assert second.shares[0].share_id is None


def test_v1beta1_prepare_drops_share_ids(served: Served) -> None:
    served.claims.add(claim_json(1))

    response = prepare(served, 1, version="v1beta1")

    (device,) = response.claims[uid(1)].devices
    assert isinstance(device, dra_v1beta1_pb2.Device)
    assert (device.pool_name, device.device_name) == (NODE, DEVICE)
    assert list(device.cdi_device_ids) == [f"k8s.{DRIVER}/dcu={uid(1)}-{DEVICE}"]
    # Field 5 never goes on the wire: a v1 reader sees no share_id either.
    assert not dra_v1_pb2.Device.FromString(device.SerializeToString()).HasField("share_id")


@pytest.mark.parametrize("version", ["v1", "v1beta1"])
def test_every_requested_claim_gets_an_entry(served: Served, version: str) -> None:
    served.claims.add(claim_json(1))  # prepared
    # 2: not in the API server
    served.claims.add(claim_json(3, allocated=False))
    replaced = claim_json(4)
    replaced["metadata"]["uid"] = uid(44)
    served.claims.add(replaced)
    served.claims.add(claim_json(5))
    served.plugin.errors[uid(5)] = DriverError("no room on dcu-0000-3b-00-0")
    served.claims.add(claim_json(6))
    served.plugin.skip.add(uid(6))
    served.claims.add(claim_json(7))
    served.claims.failing.add("c7")

    response = prepare(served, 1, 2, 3, 4, 5, 6, 7, version=version)

    errors = {key: value.error for key, value in response.claims.items()}
    assert sorted(errors) == sorted(uid(n) for n in range(1, 8))
    assert errors[uid(1)] == ""

    def where(n: int) -> str:
        return re.escape(f"claim ns/c{n} (uid {uid(n)}): ")

    expected = {
        2: r"not found in the API server \(deleted\?\)$",
        3: r"not allocated \(status\.allocation is empty\)$",
        4: rf"got replaced: the API server now has uid {uid(44)} under this name$",
        5: r"no room on dcu-0000-3b-00-0$",
        6: r"the driver returned no result for this claim$",
        7: r"cannot read it from the API server: GET /x: 503 ServiceUnavailable: etcd is sad$",
    }
    for n, pattern in expected.items():
        assert re.match(rf"^{where(n)}{pattern}", errors[uid(n)]), (n, errors[uid(n)])
        assert not response.claims[uid(n)].devices
    # Only the claims that converted reached the Plugin, in one call.
    assert [[c.ref.uid for c in call] for call in served.plugin.prepared] == [
        [uid(1), uid(5), uid(6)]
    ]


def test_uid_that_is_not_a_uuid_is_refused_without_reading_the_claim(served: Served) -> None:
    response = prepare(served, 1, uid="../../etc")

    assert list(response.claims) == ["../../etc"]
    assert re.match(
        r"^claim ns/c1: uid '\.\./\.\./etc' is not a UUID; refusing to prepare it",
        response.claims["../../etc"].error,
    )
    assert served.claims.reads == []
    assert served.plugin.prepared == []


def test_repeated_claims_are_prepared_once(served: Served) -> None:
    served.claims.add(claim_json(1))

    response = prepare(served, 1, 1)

    assert list(response.claims) == [uid(1)]
    assert [len(call) for call in served.plugin.prepared] == [1]


@pytest.mark.parametrize(
    ("fields", "missing"),
    [({"uid": ""}, "uid"), ({"namespace": ""}, "namespace"), ({"name": ""}, "name")],
)
def test_malformed_request_is_invalid_argument(
    served: Served, fields: dict[str, str], missing: str
) -> None:
    served.claims.add(claim_json(1))
    with pytest.raises(grpc.RpcError) as caught:
        prepare(served, 1, **fields)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == f"claim #0 of the request has an empty {missing}"
    assert served.plugin.prepared == []


@pytest.mark.parametrize(
    ("error", "details"),
    [
        (DriverError("checkpoint unreadable"), "prepare failed: checkpoint unreadable"),
        (KeyError("boom"), "prepare failed: KeyError: 'boom'"),
    ],
    ids=["driver-error", "bug"],
)
def test_plugin_that_raises_fails_the_call_and_the_server_keeps_serving(
    served: Served, caplog: pytest.LogCaptureFixture, error: Exception, details: str
) -> None:
    served.claims.add(claim_json(1))
    served.plugin.raises = error
    caplog.set_level(logging.INFO, logger="dra_driver")

    with pytest.raises(grpc.RpcError) as caught:
        prepare(served, 1)

    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert caught.value.details() == details
    failures = [r for r in caplog.records if "failed as a whole" in r.getMessage()]
    assert len(failures) == 1
    served.plugin.raises = None
    assert prepare(served, 1).claims[uid(1)].error == ""
    assert unprepare(served, 1).claims[uid(1)].error == ""


def test_unexpected_error_in_the_claim_getter_is_internal(served: Served) -> None:
    def broken(namespace: str, name: str) -> dict[str, Any]:
        raise RuntimeError("bug")

    served.server.service.get_claim = broken
    with pytest.raises(grpc.RpcError) as caught:
        prepare(served, 1)
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert caught.value.details() == "internal error: RuntimeError: bug"


def test_claims_are_read_before_the_lock_and_concurrently(served: Served) -> None:
    for n in range(1, 5):
        served.claims.add(claim_json(n))
    served.plugin.release = threading.Event()
    with ThreadPoolExecutor(max_workers=1) as pool:
        first = pool.submit(prepare, served, 1)
        assert served.plugin.entered.wait(TIMEOUT_S)
        # While the first call holds the lock inside the Plugin, a second call reads its
        # three claims, all at the same time (the barrier needs three readers at once).
        served.claims.barrier = threading.Barrier(3)
        with ThreadPoolExecutor(max_workers=1) as other:
            second = other.submit(prepare, served, 2, 3, 4)
            deadline = time.monotonic() + TIMEOUT_S
            while len(served.claims.reads) < 4 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert sorted(served.claims.reads) == [("ns", f"c{n}") for n in range(1, 5)]
            assert len(served.plugin.prepared) == 1  # the second waits for the lock
            served.plugin.release.set()
            assert all(e.error == "" for e in second.result(TIMEOUT_S).claims.values())
        assert first.result(TIMEOUT_S).claims[uid(1)].error == ""


def test_one_log_line_per_claim_with_request_ids(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    served.claims.add(claim_json(1))
    caplog.set_level(logging.INFO, logger="dra_driver")

    prepare(served, 1, 2)
    unprepare(served, 1)

    # Besides the one line per claim, the servicer says once which DRA version the kubelet uses.
    records = [
        r
        for r in caplog.records
        if r.name.startswith("dra_driver") and not r.getMessage().startswith("the kubelet's first")
    ]
    lines = [r.getMessage() for r in records]
    assert len(lines) == 3, caplog.messages
    assert re.match(
        rf"^\[call (\d+) NodePrepareResources\] prepared claim ns/c1 \(uid {uid(1)}\) in \d+ ms: "
        r"1 device\(s\)$",
        lines[0],
    ), lines
    assert re.match(
        rf"^\[call \d+ NodePrepareResources\] prepare failed: claim ns/c2 \(uid {uid(2)}\): not "
        r"found",
        lines[1],
    ), lines
    assert re.match(
        rf"^\[call (\d+) NodeUnprepareResources\] unprepared claim ns/c1 \(uid {uid(1)}\) "
        r"in \d+ ms$",
        lines[2],
    ), lines
    ids = [int(re.match(r"^\[call (\d+)", line).group(1)) for line in lines]  # type: ignore[union-attr]
    assert ids[0] == ids[1] < ids[2]
    assert [r.levelno for r in records] == [
        logging.INFO,
        logging.ERROR,
        logging.INFO,
    ]


# --- unprepare ------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["v1", "v1beta1"])
def test_unprepare_answers_every_claim(served: Served, version: str) -> None:
    served.plugin.errors[uid(2)] = DriverError("vdev files busy")
    served.plugin.skip.add(uid(3))

    response = unprepare(served, 1, 2, 3, version=version)

    assert {k: v.error for k, v in response.claims.items()} == {
        uid(1): "",
        uid(2): f"claim ns/c2 (uid {uid(2)}): vdev files busy",
        uid(3): f"claim ns/c3 (uid {uid(3)}): the driver returned no result for this claim",
    }
    # Unprepare never reads the claim (it may be gone).
    assert served.claims.reads == []
    ((first, *_),) = served.plugin.unprepared
    assert first == ClaimRef(uid=ClaimUID(uid(1)), namespace="ns", name="c1")


def test_unprepare_refuses_a_uid_that_is_not_a_uuid(served: Served) -> None:
    request = dra_v1_pb2.NodeUnprepareResourcesRequest(
        claims=[
            dra_v1_pb2.Claim(namespace="ns", name="bad", uid="x/y"),
            dra_v1_pb2.Claim(namespace="ns", name="c1", uid=uid(1)),
        ]
    )
    response = served.stub("v1").NodeUnprepareResources(request, timeout=TIMEOUT_S)
    assert response.claims["x/y"].error.startswith("claim ns/bad: uid 'x/y' is not a UUID")
    assert response.claims[uid(1)].error == ""
    assert [[r.uid for r in call] for call in served.plugin.unprepared] == [[uid(1)]]


def test_unprepare_with_a_raising_plugin_is_internal(served: Served) -> None:
    served.plugin.raises = DriverError("checkpoint unreadable")
    with pytest.raises(grpc.RpcError) as caught:
        unprepare(served, 1)
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert caught.value.details() == "unprepare failed: checkpoint unreadable"


def test_empty_requests_get_empty_answers(served: Served) -> None:
    assert dict(prepare(served).claims) == {}
    assert dict(unprepare(served).claims) == {}
    assert served.plugin.prepared == []
    assert served.plugin.unprepared == []


# --- sockets --------------------------------------------------------------------------------


def test_sockets_are_private_and_the_new_directory_is_0700(served: Served) -> None:
    for path in (served.server.dra_socket, served.server.registration_socket):
        info = path.lstat()
        assert stat.S_ISSOCK(info.st_mode)
        assert stat.S_IMODE(info.st_mode) == 0o600, path
    assert stat.S_IMODE((served.base / "data").stat().st_mode) == 0o700
    assert stat.S_IMODE((served.base / "reg").stat().st_mode) == 0o700
    # Nothing else (temporary names) is left in the directories.
    assert sorted(os.listdir(served.base / "data")) == ["dra.sock"]
    assert sorted(os.listdir(served.base / "reg")) == ["dcu.hygon.com-reg.sock"]


def test_serialize_lock_file_is_private(served: Served) -> None:
    served.claims.add(claim_json(1))
    prepare(served, 1)
    lock = served.base / "data" / "serialize.lock"
    assert stat.S_IMODE(lock.stat().st_mode) == 0o600


def make_server(path: Path, service: DraService | None = None) -> UnixSocketServer:
    def add(server: grpc.Server) -> None:
        if service is not None:
            add_dra_services(server, service)

    return UnixSocketServer(path, name="test", add_services=add)


def test_stale_socket_is_removed_before_listening(short_sock_dir: Path) -> None:
    path = short_sock_dir / "dra.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()
    assert stat.S_IMODE(path.lstat().st_mode) != 0o600
    server = make_server(path)
    server.start()
    try:
        assert stat.S_ISSOCK(path.lstat().st_mode)
        assert stat.S_IMODE(path.lstat().st_mode) == 0o600
        with grpc.insecure_channel(f"unix:{path}") as channel:
            grpc.channel_ready_future(channel).result(timeout=TIMEOUT_S)
    finally:
        server.stop(0)


def test_a_file_that_is_not_a_socket_is_never_removed(short_sock_dir: Path) -> None:
    path = short_sock_dir / "dra.sock"
    path.write_text("precious")
    with pytest.raises(
        SocketServerError,
        match=rf"^{re.escape(str(path))} exists and is not a socket; refusing to replace it",
    ):
        make_server(path).start()
    assert path.read_text() == "precious"


def test_too_long_socket_path_fails_clearly(short_sock_dir: Path) -> None:
    path = short_sock_dir / ("d" * 100) / "dra.sock"
    with pytest.raises(
        SocketServerError,
        match=rf"^socket path {re.escape(str(path))} is \d+ bytes, longer than the 107 a unix "
        r"socket allows \(108 with the NUL\); use a shorter directory or driver name$",
    ):
        make_server(path).start()
    with pytest.raises(SocketServerError, match=r"^socket path .* is \d+ bytes"):
        KubeletPluginServer(
            driver_name=DRIVER,
            node_name=NODE,
            registrar_dir=short_sock_dir / ("r" * 100),
            data_dir=short_sock_dir / "data",
            plugin=FakePlugin(),
            get_claim=FakeClaims().get,
        )
    assert not (short_sock_dir / ("d" * 100)).exists()


def test_stop_removes_only_our_sockets(short_sock_dir: Path) -> None:
    plugin, claims = FakePlugin(), FakeClaims()
    server = KubeletPluginServer(
        driver_name=DRIVER,
        node_name=NODE,
        registrar_dir=short_sock_dir / "reg",
        data_dir=short_sock_dir / "data",
        plugin=plugin,
        get_claim=claims.get,
    )
    server.start()
    other = socket.socket(socket.AF_UNIX)
    other.bind(str(short_sock_dir / "reg" / "gpu.example.com-reg.sock"))
    (short_sock_dir / "data" / "checkpoint.json").write_text("{}")
    # A successor instance took over our DRA socket name meanwhile.
    server.dra_socket.unlink()
    successor = socket.socket(socket.AF_UNIX)
    successor.bind(str(server.dra_socket))
    successor_inode = server.dra_socket.lstat().st_ino
    try:
        server.stop(1)
        assert not server.registration_socket.exists()
        assert sorted(os.listdir(short_sock_dir / "reg")) == ["gpu.example.com-reg.sock"]
        assert sorted(os.listdir(short_sock_dir / "data")) == ["checkpoint.json", "dra.sock"]
        assert server.dra_socket.lstat().st_ino == successor_inode
    finally:
        other.close()
        successor.close()


def test_stop_lets_in_flight_calls_finish(served: Served) -> None:
    served.claims.add(claim_json(1))
    served.plugin.sleep_s = 0.5
    with ThreadPoolExecutor(max_workers=1) as pool:
        call = pool.submit(prepare, served, 1)
        assert served.plugin.entered.wait(TIMEOUT_S)
        served.server.stop(5)
        assert call.result(TIMEOUT_S).claims[uid(1)].error == ""
    assert not served.server.dra_socket.exists()
    assert not served.server.registration_socket.exists()


def test_start_fails_cleanly_when_registration_cannot_listen(short_sock_dir: Path) -> None:
    (short_sock_dir / "reg").mkdir()
    (short_sock_dir / "reg" / "dcu.hygon.com-reg.sock").mkdir()  # not a socket
    server = KubeletPluginServer(
        driver_name=DRIVER,
        node_name=NODE,
        registrar_dir=short_sock_dir / "reg",
        data_dir=short_sock_dir / "data",
        plugin=FakePlugin(),
        get_claim=FakeClaims().get,
    )
    with pytest.raises(SocketServerError, match=r"exists and is not a socket"):
        server.start()
    assert not server.dra_socket.exists()  # the DRA server was stopped again


# --- serialization --------------------------------------------------------------------------


def test_flock_serializes_two_servers_sharing_a_data_dir(short_sock_dir: Path) -> None:
    """Two plugin instances (a rolling update): separate processes in real life, so separate
    in-process locks here; only the flock on the shared serialize.lock keeps them apart."""
    data_dir = short_sock_dir / "data"
    data_dir.mkdir()
    plugin = FakePlugin(sleep_s=0.15)
    claims = FakeClaims()
    for n in range(1, 7):
        claims.add(claim_json(n))
    servers = []
    for name in ("a", "b"):
        service = DraService(
            plugin=plugin,
            get_claim=claims.get,
            driver=DRIVER,
            node_name=NODE,
            serializer=CallSerializer(data_dir / "serialize.lock"),
        )
        server = make_server(short_sock_dir / f"{name}.sock", service)
        server.start()
        servers.append(server)
    try:

        def call(n: int) -> Any:
            path = short_sock_dir / ("a.sock" if n % 2 else "b.sock")
            with grpc.insecure_channel(f"unix:{path}") as channel:
                stub = dra_v1_pb2_grpc.DRAPluginStub(channel)
                claim = dra_v1_pb2.Claim(namespace="ns", name=f"c{n}", uid=uid(n))
                if n > 3:
                    return stub.NodeUnprepareResources(
                        dra_v1_pb2.NodeUnprepareResourcesRequest(claims=[claim]),
                        timeout=TIMEOUT_S,
                    )
                return stub.NodePrepareResources(
                    dra_v1_pb2.NodePrepareResourcesRequest(claims=[claim]), timeout=TIMEOUT_S
                )

        with ThreadPoolExecutor(max_workers=6) as pool:
            responses = list(pool.map(call, range(1, 7)))
    finally:
        for server in servers:
            server.stop(1)
    assert all(entry.error == "" for r in responses for entry in r.claims.values())
    intervals = sorted(plugin.intervals)
    assert len(intervals) == 6
    for (_, end), (start, _) in itertools.pairwise(intervals):
        assert end <= start, intervals


def test_lock_wait_beyond_the_deadline_is_deadline_exceeded(
    short_sock_dir: Path,
) -> None:
    data_dir = short_sock_dir / "data"
    data_dir.mkdir()
    claims = FakeClaims()
    claims.add(claim_json(1))
    service = DraService(
        plugin=FakePlugin(),
        get_claim=claims.get,
        driver=DRIVER,
        node_name=NODE,
        serializer=CallSerializer(data_dir / "serialize.lock"),
    )
    fd = os.open(data_dir / "serialize.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        from dra_driver.kubeletplugin.servicer import AbortCallError, RequestedClaim

        with pytest.raises(AbortCallError, match=r"^gave up waiting for the serialization lock"):
            service.prepare([RequestedClaim("ns", "c1", uid(1))], timeout_s=0.2)
    finally:
        os.close(fd)
        service.close()


def test_interceptor_leaves_non_unary_handlers_alone() -> None:
    handler = grpc.unary_stream_rpc_method_handler(lambda request, context: iter(()))

    class Details:
        method = "/v1.DRAResourceHealth/NodeWatchResources"

    assert CallContextInterceptor().intercept_service(lambda _: handler, Details()) is handler
    assert CallContextInterceptor().intercept_service(lambda _: None, Details()) is None


def test_interceptor_wraps_each_method_once_and_numbers_every_call() -> None:
    """The wrapped handler is built at a method's first call, not again for every call."""
    seen: list[str] = []
    handler = grpc.unary_unary_rpc_method_handler(
        lambda request, context: seen.append(calllog._CALL.get())
    )
    lookups: list[str] = []

    class Details:
        method = "/v1.DRAPlugin/NodePrepareResources"

    def continuation(details: Any) -> grpc.RpcMethodHandler:
        lookups.append(details.method)
        return handler

    interceptor = CallContextInterceptor()
    first = interceptor.intercept_service(continuation, Details())
    second = interceptor.intercept_service(continuation, Details())
    assert first is not None
    assert second is not None
    first.unary_unary(None, None)
    second.unary_unary(None, None)

    assert second is first
    assert lookups == ["/v1.DRAPlugin/NodePrepareResources"]
    assert seen == ["1 NodePrepareResources", "2 NodePrepareResources"]


def test_prepared_device_request_names_are_base_names(served: Served) -> None:
    served.claims.add(claim_json(1))
    original = served.plugin.prepare_claims

    def with_subrequest(claims: Sequence[Claim]) -> dict[ClaimUID, PrepareResult | DriverError]:
        original(claims)
        return {
            claims[0].ref.uid: PrepareResult(
                devices=(
                    PreparedDevice(
                        requests=("dcu/small", "other"),
                        pool=NODE,
                        device=DeviceName(DEVICE),
                        cdi_ids=(),
                        share_id=None,
                    ),
                )
            )
        }

    served.plugin.prepare_claims = with_subrequest  # type: ignore[method-assign]
    (device,) = prepare(served, 1).claims[uid(1)].devices
    assert list(device.request_names) == ["dcu", "other"]
