"""The floors: what a prepare cannot beat on this machine, measured in the same run.

A prepare is at least one gRPC round trip on a unix socket, one GET of the claim from the API
server and one durable write of the result. Each is measured on its own, with the tools the
daemon uses, and reported as a median:

- round trip: NodePrepareResources (v1, one claim, as the kubelet sends it) to a child process
  whose handler returns an empty answer (``bench.empty_server``: the daemon's socket server
  and worker count, nothing else);
- GET: one ResourceClaim, read as the daemon reads it (the API client's kept-open
  ``reader``) from the same API server;
- write: ``fsutil.write_atomically`` of 1 KiB (a checkpoint of a few claims) on the disk that
  holds the daemon's data dir: temp file, fsync, rename, fsync of the directory.

An unprepare needs no GET: its floor is a round trip and one write. A ``FloorProbe`` stays up
for the whole run and is sampled in blocks between the driver's own measurements, so a
machine that gets busier or quieter during the run moves the floors and the figures alike.

With N calls in flight, the floor is what N calls at once cost the same tools: the median of
N round trips to the empty server issued at once (one channel, as the kubelet's one
connection), plus the median of N GETs of the claim issued at once (the same reader, whose
kept-open connections the daemon's reads share too), plus one write, which a driver doing
nothing else could share between all N.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import grpc

from bench.latency import at_once
from bench.node import BenchError, BenchNode
from bench.stats import p50
from dra_driver.cluster.kube import paths
from dra_driver.kubeletplugin._pb import dra_v1_pb2, dra_v1_pb2_grpc
from dra_driver.testing.waiting import wait_for
from dra_driver.util.fsutil import write_atomically

REPO = Path(__file__).resolve().parents[1]
#: Calls before measuring: connections, thread pools and caches warm up.
WARM_UP = 20
#: Bytes of the floor's atomic write: about a checkpoint holding a few claims.
WRITE_BYTES = 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class Floors:
    """Medians of the three floor measurements, in milliseconds."""

    grpc_round_trip_ms: float
    claim_get_ms: float
    atomic_write_ms: float
    samples: int
    """Samples of each floor."""

    @property
    def prepare_ms(self) -> float:
        """A prepare's floor: round trip + GET + one atomic write."""
        return self.grpc_round_trip_ms + self.claim_get_ms + self.atomic_write_ms

    @property
    def unprepare_ms(self) -> float:
        """An unprepare's floor: round trip + one atomic write (no API read)."""
        return self.grpc_round_trip_ms + self.atomic_write_ms


@dataclass(slots=True)
class _Samples:
    round_trip_ms: list[float] = field(default_factory=list)
    get_ms: list[float] = field(default_factory=list)
    write_ms: list[float] = field(default_factory=list)


class FloorProbe:
    """The empty gRPC server, a claim to GET and a file to write; sampled on demand.

    Use as a context manager: the server runs until the block ends.
    """

    def __init__(self, node: BenchNode, work: Path) -> None:
        self.node = node
        self.socket = work / "empty.sock"
        self.target = node.plugin.data_dir.parent / "floor" / "floor.json"
        self._samples = _Samples()
        self._in_flight: dict[int, _Samples] = {}
        self._server: subprocess.Popen[bytes] | None = None
        self._channel: grpc.Channel | None = None
        self._claim_path = ""

    def __enter__(self) -> FloorProbe:
        self._server = subprocess.Popen(
            [sys.executable, "-m", "bench.empty_server", str(self.socket)],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            self._wait_for_server(self._server)
            self._channel = grpc.insecure_channel(f"unix:{self.socket}")
            claim = self.node.claim(self.node.devices[:1])
            self._claim_path = paths.resource_claims(claim.namespace, claim.name)
            self.target.parent.mkdir(parents=True, exist_ok=True)
            self.sample(WARM_UP, record=False)
        except BaseException:
            self._stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop()

    def sample(self, count: int, *, record: bool = True) -> None:
        """Take ``count`` samples of each floor, one of each in turn."""
        assert self._channel is not None, "use FloorProbe as a context manager"
        stub = dra_v1_pb2_grpc.DRAPluginStub(self._channel)
        request = dra_v1_pb2.NodePrepareResourcesRequest(
            claims=[dra_v1_pb2.Claim(namespace="bench", name="floor", uid=str(uuid.uuid4()))]
        )
        data = b"x" * (WRITE_BYTES - 1) + b"\n"
        samples = self._samples if record else _Samples()
        for _ in range(count):
            started = time.perf_counter()
            stub.NodePrepareResources(request, timeout=10)
            samples.round_trip_ms.append(_ms_since(started))
            started = time.perf_counter()
            self.node.kube.reader.get(self._claim_path)
            samples.get_ms.append(_ms_since(started))
            started = time.perf_counter()
            write_atomically(self.target, data)
            samples.write_ms.append(_ms_since(started))

    def sample_in_flight(self, calls: int) -> None:
        """One round: ``calls`` round trips at once, then ``calls`` GETs at once."""
        assert self._channel is not None, "use FloorProbe as a context manager"
        stub = dra_v1_pb2_grpc.DRAPluginStub(self._channel)
        requests = [
            dra_v1_pb2.NodePrepareResourcesRequest(
                claims=[dra_v1_pb2.Claim(namespace="bench", name="floor", uid=str(uuid.uuid4()))]
            )
            for _ in range(calls)
        ]
        samples = self._in_flight.setdefault(calls, _Samples())
        with ThreadPoolExecutor(max_workers=calls, thread_name_prefix="floor") as pool:
            samples.round_trip_ms += at_once(
                pool, lambda request: stub.NodePrepareResources(request, timeout=10), requests
            )
            samples.get_ms += at_once(
                pool, lambda _: self.node.kube.reader.get(self._claim_path), range(calls)
            )

    def in_flight_floors(self, calls: int) -> Floors:
        """The medians of every ``sample_in_flight(calls)`` so far, and of the sequential writes.

        The write is the sequential one: a driver doing nothing but the floors could share one
        write between all ``calls``.
        """
        samples = self._in_flight[calls]
        return Floors(
            grpc_round_trip_ms=p50(samples.round_trip_ms),
            claim_get_ms=p50(samples.get_ms),
            atomic_write_ms=p50(self._samples.write_ms),
            samples=len(samples.get_ms),
        )

    def floors(self) -> Floors:
        """The medians of every sample taken so far."""
        samples = self._samples
        return Floors(
            grpc_round_trip_ms=p50(samples.round_trip_ms),
            claim_get_ms=p50(samples.get_ms),
            atomic_write_ms=p50(samples.write_ms),
            samples=len(samples.round_trip_ms),
        )

    def _wait_for_server(self, server: subprocess.Popen[bytes]) -> None:
        try:
            wait_for(
                lambda: self.socket.exists() or server.poll() is not None,
                timeout_s=60,
                description=f"the empty gRPC server's socket {self.socket}",
                interval_s=0.02,
            )
        except AssertionError as exc:
            raise BenchError(str(exc).splitlines()[0]) from None
        if server.poll() is not None:
            assert server.stderr is not None
            lines = server.stderr.read().decode(errors="replace").strip().splitlines()
            raise BenchError(
                f"the empty gRPC server exited with {server.returncode}: {(lines or [''])[-1]}"
            )

    def _stop(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        server, self._server = self._server, None
        if server is None:
            return
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        if server.stderr is not None:
            server.stderr.close()


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000
