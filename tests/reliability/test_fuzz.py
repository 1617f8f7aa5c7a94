"""Bad input against the real daemon: fuzzed NodePrepareResources and NodeUnprepareResources.

The real daemon (``dcu-dra kubelet-plugin``, a child process) runs on a default mock node with
every one of its directories under one sandbox (``DaemonNode``: ``root/``, ``reg/``, ``data/``,
``cdi/``, ``plugin.log``). Claims are created in the real API server, with the allocation the
scheduler would write through the status subresource; what the API server refuses to store
stays unallocated, as it would in a cluster. Hypothesis builds the requests
(tests/test_fuzz_requests.py): unknown devices, foreign drivers and pools, missing, partial,
oversize and non-positive consumedCapacity, bad opaque configs up to the API's 10 KiB and
nested up to 4000 levels, UIDs that are not UUIDs or not the API server's, path-like, NUL,
newline and 5000-character names, duplicate claims, empty requests and empty fields. They go
over v1 and v1beta1, as the kubelet sends them.

After every request: the same process still answers; each bad claim has its own error (one
printable line, naming the claim, saying what was wrong) and the good claims of the same
request were prepared; the plugin data dir and the CDI dir hold the prepared claims' files
only, and nothing once they are unprepared. At the end: nothing appeared anywhere else in the
sandbox, nor under /tmp with a fuzzed name, and the daemon's log holds no traceback. A second
test sends undecodable bytes to the same four methods.

The counts of what was tried are printed (``pytest -s``) and checked.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shutil
import signal
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dra_driver.cluster.kube import Invalid, KubeClient, paths
from dra_driver.kubeletplugin._pb import (
    dra_v1_pb2,
    dra_v1_pb2_grpc,
    dra_v1beta1_pb2,
    dra_v1beta1_pb2_grpc,
)
from dra_driver.testing.cluster import (
    ControlPlane,
    create_namespace,
    delete_namespace,
    node_allocation,
    unique_name,
)
from dra_driver.vdcu.opaque import API_VERSION, KIND, MAX_PARAMETERS_BYTES
from tests.e2e.conftest import DaemonNode
from tests.test_fuzz_requests import (
    FUZZ_SETTINGS,
    NESTED_TOO_DEEP,
    REFUSED_REFERENCES,
    UNDECODABLE,
    UNREADABLE_DEPTH,
    Z100_A,
    ClaimCase,
    FuzzRequest,
    FuzzStats,
    Kind,
    Sent,
    check_claim_files,
    check_error,
    expected_outcomes,
    find_marked,
    fuzz_requests,
    opaque_entry,
    result,
    tree,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

#: Requests sent to the daemon: about a minute on a 2-core machine, with claims in the API.
MAX_REQUESTS = 400
#: Undecodable messages sent to the daemon (no API calls: fast).
MAX_RAW_MESSAGES = 150
#: Python's json reads ~1000 levels at the default recursion limit; the test itself must write
#: (and read back) claims whose opaque config is nested 4000 deep.
TEST_RECURSION_LIMIT = 20_000
RPC_TIMEOUT_S = 45
PB2 = {"v1": (dra_v1_pb2, dra_v1_pb2_grpc), "v1beta1": (dra_v1beta1_pb2, dra_v1beta1_pb2_grpc)}


@dataclass
class FuzzNode:
    """The daemon under fuzz, the namespace of its claims and what the tests compare against."""

    daemon: DaemonNode
    kube: KubeClient
    namespace: str
    sandbox: Path
    channel: grpc.Channel
    pid: int
    cdi_baseline: set[str]
    """Files of the CDI dir that are not per-claim specs, as the daemon left them at start."""
    data_baseline: set[str]
    """Entries of the plugin data dir at start (``vdev/`` comes and goes with shares)."""
    counter: Iterator[int]

    @property
    def data_dir(self) -> Path:
        return self.daemon.plugin.data_dir

    @property
    def cdi_dir(self) -> Path:
        return self.daemon.plugin.cdi_dir


@pytest.fixture(scope="module")
def fuzz_node(control_plane: ControlPlane) -> Iterator[FuzzNode]:
    """One daemon for every fuzzed request of this module; all its dirs in one sandbox."""
    kube = control_plane.client
    sandbox = Path(tempfile.mkdtemp(prefix="fz-", dir="/tmp"))  # short: socket paths
    namespace = unique_name("fuzz")
    create_namespace(kube, namespace)
    daemon = DaemonNode(control_plane, sandbox, devices=None, extra_args=(), plugin_identity=False)
    try:
        daemon.plugin.start().wait_for_registration_socket()
        daemon.plugin.wait_for_slices(kube)
        assert daemon.plugin.process is not None
        with grpc.insecure_channel(f"unix:{daemon.plugin.dra_socket}") as channel:
            yield FuzzNode(
                daemon=daemon,
                kube=kube,
                namespace=namespace,
                sandbox=sandbox,
                channel=channel,
                pid=daemon.plugin.process.pid,
                cdi_baseline=listing(daemon.plugin.cdi_dir),
                data_baseline=listing(daemon.plugin.data_dir) - {"vdev"},
                counter=iter(range(10**9)),
            )
    finally:
        if daemon.plugin.process is not None and daemon.plugin.returncode is None:
            daemon.plugin.stop(signal.SIGTERM)
        daemon.close()
        delete_namespace(kube, namespace)
        shutil.rmtree(sandbox, ignore_errors=True)


def listing(directory: Path) -> set[str]:
    return set(os.listdir(directory)) if directory.is_dir() else set()


@contextlib.contextmanager
def deep_json() -> Iterator[None]:
    """Let this process write and read JSON nested deeper than Python's default allows."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(TEST_RECURSION_LIMIT)
    try:
        yield
    finally:
        sys.setrecursionlimit(limit)


def create_claim(node: FuzzNode, case: ClaimCase, name: str, stats: FuzzStats) -> tuple[str, bool]:
    """Create the case's claim and write its allocation; (its UID, whether the API stored it)."""
    created = node.kube.create(
        paths.resource_claims(node.namespace),
        {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceClaim",
            "metadata": {"name": name, "namespace": node.namespace},
            "spec": {
                "devices": {
                    "requests": [
                        {"name": r, "exactly": {"deviceClassName": "vdcu.dcu.hygon.com"}}
                        for r in case.request_names()
                    ]
                }
            },
        },
    )
    uid = str(created["metadata"]["uid"])
    if not case.allocated:
        return uid, True
    created["status"] = {
        "allocation": node_allocation(node.daemon.name, case.allocation(node.daemon.name))
    }
    try:
        with deep_json():
            node.kube.replace(
                paths.resource_claims(node.namespace, name, subresource="status"), created
            )
    except Invalid:
        stats.notes[f"allocation refused by the API server ({case.kind})"] += 1
        return uid, False
    return uid, True


def materialise(node: FuzzNode, request: FuzzRequest, stats: FuzzStats) -> list[Sent]:
    """Create the request's claims in the API server; the claims as the kubelet sends them."""
    made: dict[int, Sent] = {}
    for index, case in enumerate(request.cases):
        name = f"fz-{next(node.counter)}"
        uid = ""
        if case.nest_depth >= UNREADABLE_DEPTH:
            stats.notes[f"configs nested {UNREADABLE_DEPTH}+ deep"] += 1
            case = dataclasses.replace(case, expect=UNDECODABLE)
        elif case.nest_depth:
            case = dataclasses.replace(case, expect=f"opaque config for .*: {NESTED_TOO_DEEP}")
        if case.in_api:
            uid, stored = create_claim(node, case, name, stats)
            if not stored:
                # A kind the API server rejects: the claim stays unallocated, as in a cluster.
                assert case.expect is not None, f"the API server refused a good claim: {case}"
                case = dataclasses.replace(case, expect=r"not allocated")
        made[index] = Sent(
            case=case,
            namespace=case.namespace if case.namespace is not None else node.namespace,
            name=case.name if case.name is not None else name,
            uid=case.uid if case.uid is not None else uid or str(uuid.uuid4()),
        )
    return [made[i] for i in request.order]


def call(node: FuzzNode, version: str, method: str, sent: list[Sent], empty: Any = None) -> Any:
    pb2, pb2_grpc = PB2[version]
    claims = [pb2.Claim(namespace=s.namespace, name=s.name, uid=s.uid) for s in sent]
    if empty is not None:
        position, blank = empty
        setattr(claims[position], blank, "")
    stub = pb2_grpc.DRAPluginStub(node.channel)
    if method == "prepare":
        return stub.NodePrepareResources(
            pb2.NodePrepareResourcesRequest(claims=claims), timeout=RPC_TIMEOUT_S
        )
    return stub.NodeUnprepareResources(
        pb2.NodeUnprepareResourcesRequest(claims=claims), timeout=RPC_TIMEOUT_S
    )


def check_alive(node: FuzzNode) -> None:
    """The same daemon process still runs and answers an empty call (the liveness probe's)."""
    process = node.daemon.plugin.process
    assert process is not None and process.poll() is None, node.daemon.plugin.log_tail()
    assert process.pid == node.pid
    response = call(node, "v1", "prepare", [])
    assert dict(response.claims) == {}


def check_files(node: FuzzNode, prepared: set[str]) -> None:
    check_claim_files(node.data_dir, node.cdi_dir, prepared, cdi_baseline=node.cdi_baseline)
    assert listing(node.data_dir) - {"vdev"} == node.data_baseline


def run_request(node: FuzzNode, request: FuzzRequest, stats: FuzzStats) -> None:
    try:
        check_request(node, request, stats)
    finally:  # a failed example must not leave claims behind for the next ones
        leftovers = [
            Sent(case=LEFTOVER, namespace=entry["namespace"], name=entry["name"], uid=uid)
            for uid, entry in node.daemon.plugin.checkpoint_claims().items()
        ]
        if leftovers:
            call(node, "v1", "unprepare", leftovers)


#: Stands for a claim found in the checkpoint after a failed example.
LEFTOVER = ClaimCase(kind=Kind.SHARE, expect=None)


def check_request(node: FuzzNode, request: FuzzRequest, stats: FuzzStats) -> None:
    sent = materialise(node, request, stats)
    if request.empty is not None:
        with pytest.raises(grpc.RpcError) as refused:
            call(node, request.version, "prepare", sent, request.empty)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        details = refused.value.details()
        assert re.fullmatch(r"claim #\d+ of the request has an empty [a-z, ]+", details), details
        check_files(node, set())
        check_alive(node)
        return
    response = call(node, request.version, "prepare", sent)
    expected = expected_outcomes(sent)
    assert set(response.claims) == set(expected)
    prepared: set[str] = set()
    for uid, claim in expected.items():
        answer = response.claims[uid]
        if claim.case.expect is None:
            assert answer.error == "", f"{claim.case.kind}: {answer.error}"
            check_devices(node, request.version, claim.case, answer.devices)
            prepared.add(uid)
        else:
            check_error(claim, answer.error)
            assert not answer.devices
    check_files(node, prepared)
    answers = call(node, request.version, "unprepare", sent)
    assert set(answers.claims) == set(expected)
    for uid, claim in expected.items():
        error = answers.claims[uid].error
        if claim.case.kind in REFUSED_REFERENCES:
            check_error(claim, error)
        else:
            assert error == "", f"{claim.case.kind}: {error}"
    check_files(node, set())
    check_alive(node)


def check_devices(node: FuzzNode, version: str, case: ClaimCase, devices: Any) -> None:
    """One device per allocation result, on this node's pool, with a CDI id each."""
    wanted = sorted(((r["request"],), r["device"], "shareID" in r) for r in case.results)
    got = sorted(
        (tuple(d.request_names), d.device_name, version == "v1" and d.HasField("share_id"))
        for d in devices
    )
    if version == "v1beta1":  # no share_id in v1beta1
        wanted = [(requests, device, False) for requests, device, _ in wanted]
    assert got == wanted
    assert all(d.pool_name == node.daemon.name and list(d.cdi_device_ids) for d in devices)


def test_fuzzed_requests_get_one_clear_error_per_bad_claim_and_touch_nothing_else(
    fuzz_node: FuzzNode,
) -> None:
    node = fuzz_node
    stats = FuzzStats()
    outside = tree(node.sandbox, skip=[node.data_dir, node.cdi_dir])

    @settings(FUZZ_SETTINGS, max_examples=MAX_REQUESTS)
    @given(request=fuzz_requests())
    def fuzz(request: FuzzRequest) -> None:
        stats.add(request)
        run_request(node, request, stats)

    fuzz()
    # Whether Hypothesis draws a config past what the API server stores is up to its draws;
    # this one always is (4x the limit), so the refused-allocation path is always tried.
    oversize = ClaimCase(
        kind=Kind.BAD_CONFIG,
        expect=rf"parameters are \d+ bytes, more than the {MAX_PARAMETERS_BYTES} allowed",
        results=(result("r0", Z100_A, cores="2", memory="1Gi"),),
        config=(
            opaque_entry(
                {
                    "apiVersion": API_VERSION,
                    "kind": KIND,
                    "cuLayout": "y" * 4 * MAX_PARAMETERS_BYTES,
                }
            ),
        ),
    )
    run_request(node, FuzzRequest(cases=(oversize,), order=(0,), version="v1"), stats)
    print(stats.summary("request fuzz against the daemon"))
    stats.check_coverage(requests=MAX_REQUESTS)
    assert any(note.startswith("allocation refused by the API server") for note in stats.notes)
    assert stats.notes[f"configs nested {UNREADABLE_DEPTH}+ deep"] >= 1
    check_alive(node)
    assert tree(node.sandbox, skip=[node.data_dir, node.cdi_dir]) == outside
    assert find_marked(node.sandbox, depth=20) == []
    assert find_marked(Path("/tmp"), depth=3) == []
    assert find_marked(Path.cwd(), depth=1) == []
    log = node.daemon.plugin.output()
    assert "Traceback" not in log, node.daemon.plugin.log_tail(60)
    assert log.count("prepare failed: claim ") >= stats.claims // 2


# --- undecodable messages ---------------------------------------------------------------------

METHODS = [
    f"/k8s.io.kubelet.pkg.apis.dra.{version}.DRAPlugin/{method}"
    for version in ("v1", "v1beta1")
    for method in ("NodePrepareResources", "NodeUnprepareResources")
]


def wire_string(field: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (short payloads only: one-byte lengths)."""
    assert len(payload) < 128
    return bytes([field << 3 | 2, len(payload)]) + payload


@st.composite
def raw_messages(draw: st.DrawFn) -> bytes:
    """Bytes that are not a valid request: random, truncated, or strings that are not UTF-8."""
    kind = draw(st.sampled_from(["random", "bad-utf8", "truncated"]))
    if kind == "random":
        return draw(st.binary(min_size=1, max_size=300))
    if kind == "bad-utf8":
        bad = draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"a\x80b"]))
        claim = wire_string(draw(st.sampled_from([1, 2, 3])), bad)
        return wire_string(1, claim)
    claim = wire_string(1, b"ns") + wire_string(2, b"x" * 36) + wire_string(3, b"c")
    whole = wire_string(1, claim)
    return whole[: draw(st.integers(1, len(whole) - 1))]


def test_undecodable_messages_are_refused_and_the_daemon_keeps_serving(
    fuzz_node: FuzzNode,
) -> None:
    node = fuzz_node
    tried = refused = 0

    @settings(FUZZ_SETTINGS, max_examples=MAX_RAW_MESSAGES)
    @given(method=st.sampled_from(METHODS), message=raw_messages())
    def fuzz(method: str, message: bytes) -> None:
        nonlocal tried, refused
        tried += 1
        send = node.channel.unary_unary(method)  # bytes in, bytes out
        try:
            answer = send(message, timeout=RPC_TIMEOUT_S)
        except grpc.RpcError as exc:
            refused += 1
            assert exc.code() in (grpc.StatusCode.INTERNAL, grpc.StatusCode.INVALID_ARGUMENT)
            assert exc.details() and exc.details().isprintable(), exc.details()
        else:
            # Random bytes can decode as a request: its claims all get their answer.
            assert isinstance(answer, bytes)
        check_alive(node)
        check_files(node, set())

    fuzz()
    print(f"raw message fuzz: {tried} messages sent, {refused} refused as undecodable")
    assert tried >= MAX_RAW_MESSAGES
    assert refused >= MAX_RAW_MESSAGES // 4
    assert "Traceback" not in node.daemon.plugin.output(), node.daemon.plugin.log_tail(60)
