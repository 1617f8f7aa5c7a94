"""ObjectReader against a scripted local HTTP peer: framing, kept-open connections, errors.

The peer answers each request with the next scripted answer, byte for byte, so the tests
control what no real API server can be made to do on cue (a chunked trailer, a truncated body,
a kept-open connection closed while idle). TLS, certificates and tokens against the real API
server are in test_reader_e2e.py.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from dra_driver.cluster.kube import (
    AnswerTooDeepError,
    ConnectionFailed,
    Forbidden,
    KubeConfig,
    KubeConfigError,
    KubeError,
    NotFound,
    ObjectReader,
    ServerError,
    TokenSource,
    Unauthorized,
)


@dataclass(frozen=True)
class Answer:
    """What the peer does with one request: send ``raw``, then maybe close the connection."""

    raw: bytes
    close_after: bool = False
    silent: bool = False
    """Send nothing and keep the connection open (a server that hangs)."""


@dataclass
class Peer:
    """A TCP server answering requests from a script, one thread per connection."""

    answers: list[Answer]
    requests: list[bytes] = field(default_factory=list)
    connections: int = 0
    closed_by_client: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    listener: socket.socket = field(default_factory=socket.socket)

    @property
    def url(self) -> str:
        host, port = self.listener.getsockname()
        return f"http://{host}:{port}"

    def serve(self) -> None:
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as file:
            while True:
                head = b""
                while not head.endswith(b"\r\n\r\n"):
                    line = file.readline()
                    if not line:
                        with self.lock:
                            self.closed_by_client += 1
                        return
                    head += line
                with self.lock:
                    self.requests.append(head)
                    answer = self.answers.pop(0) if self.answers else Answer(b"", close_after=True)
                if answer.silent:
                    time.sleep(2)
                    return
                conn.sendall(answer.raw)
                if answer.close_after:
                    return

    def stop(self) -> None:
        self.listener.close()


def ok(obj: object, *, extra_headers: str = "") -> Answer:
    body = json.dumps(obj).encode()
    head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{extra_headers}"
    return Answer(head.encode() + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)


def status(code: int, reason: str, message: str) -> Answer:
    body = json.dumps(
        {"kind": "Status", "status": "Failure", "reason": reason, "message": message, "code": code}
    ).encode()
    return Answer(f"HTTP/1.1 {code} X\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)


@pytest.fixture
def peer() -> Iterator[Peer]:
    server = Peer(answers=[])
    server.serve()
    yield server
    server.stop()


def reader_for(
    peer: Peer,
    *,
    token: str | None = None,
    tokens: TokenSource | None = None,
    read_timeout_s: float = 5.0,
    server_suffix: str = "",
) -> ObjectReader:
    config = KubeConfig(server=peer.url + server_suffix, token=token, source="test")
    return ObjectReader(
        config,
        tokens=tokens or TokenSource(token=token),
        tls_context=None,
        connect_timeout_s=2.0,
        read_timeout_s=read_timeout_s,
        user_agent="dcu-dra-test",
    )


def test_reads_an_object_framed_by_content_length_with_the_clients_headers(peer: Peer) -> None:
    peer.answers.append(ok({"kind": "ResourceClaim", "metadata": {"name": "c"}}))
    reader = reader_for(peer, token="secret", server_suffix="/prefix/")

    obj = reader.get("/apis/resource.k8s.io/v1/namespaces/ns/resourceclaims/c")
    reader.close()

    assert obj == {"kind": "ResourceClaim", "metadata": {"name": "c"}}
    host, port = peer.listener.getsockname()
    assert peer.requests == [
        b"GET /prefix/apis/resource.k8s.io/v1/namespaces/ns/resourceclaims/c HTTP/1.1\r\n"
        + f"Host: {host}:{port}\r\n".encode()
        + b"User-Agent: dcu-dra-test\r\nAccept: application/json\r\n"
        + b"Authorization: Bearer secret\r\n\r\n"
    ]


def test_reads_a_chunked_object_with_extensions_and_trailers(peer: Peer) -> None:
    body = json.dumps({"spec": {"x": "y" * 300}}).encode()
    first, second = body[:100], body[100:]
    peer.answers.append(
        Answer(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            + f"{len(first):x};ext=1\r\n".encode()
            + first
            + b"\r\n"
            + f"{len(second):X}\r\n".encode()
            + second
            + b"\r\n0\r\nX-Trailer: t\r\n\r\n"
        )
    )
    peer.answers.append(ok({"after": "chunked"}))
    reader = reader_for(peer)

    assert reader.get("/a") == {"spec": {"x": "y" * 300}}
    assert reader.get("/b") == {"after": "chunked"}
    reader.close()

    assert peer.connections == 1


def test_keeps_one_connection_open_across_sequential_reads(peer: Peer) -> None:
    peer.answers.extend(ok({"n": n}) for n in range(5))
    reader = reader_for(peer)

    objs = [reader.get(f"/o/{n}") for n in range(5)]
    reader.close()

    assert objs == [{"n": n} for n in range(5)]
    assert peer.connections == 1


def test_close_closes_idle_connections(peer: Peer) -> None:
    peer.answers.append(ok({}))
    reader = reader_for(peer)
    reader.get("/o")

    reader.close()

    deadline = time.monotonic() + 5
    while peer.closed_by_client < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert peer.closed_by_client == 1


@pytest.mark.parametrize(
    "answer",
    [
        ok({"n": 1}, extra_headers="Connection: close\r\n"),
        Answer(b'HTTP/1.1 200 OK\r\n\r\n{"n": 1}', close_after=True),
        Answer(b'HTTP/1.0 200 OK\r\nContent-Length: 8\r\n\r\n{"n": 1}'),
    ],
    ids=["connection-close", "body-to-end-of-connection", "http-1.0"],
)
def test_an_answer_that_ends_its_connection_is_not_reused(peer: Peer, answer: Answer) -> None:
    peer.answers.extend([answer, ok({"n": 2})])
    reader = reader_for(peer)

    assert reader.get("/one") == {"n": 1}
    assert reader.get("/two") == {"n": 2}
    reader.close()

    assert peer.connections == 2


def test_informational_answers_are_skipped(peer: Peer) -> None:
    peer.answers.append(Answer(b"HTTP/1.1 100 Continue\r\n\r\n" + ok({"n": 1}).raw))
    reader = reader_for(peer)

    assert reader.get("/o") == {"n": 1}
    reader.close()


def test_a_kept_open_connection_closed_while_idle_is_replaced_once(peer: Peer) -> None:
    """The API server may close an idle connection; the next read must not fail for it."""
    peer.answers.extend([Answer(ok({"n": 1}).raw, close_after=True), ok({"n": 2})])
    reader = reader_for(peer)
    assert reader.get("/one") == {"n": 1}
    time.sleep(0.1)  # the peer's close reaches us

    assert reader.get("/two") == {"n": 2}
    reader.close()

    assert peer.connections == 2
    assert len(peer.requests) == 2


def test_a_new_connection_closed_before_the_answer_is_not_retried(peer: Peer) -> None:
    peer.answers.append(Answer(b"", close_after=True))
    reader = reader_for(peer)

    with pytest.raises(
        ConnectionFailed, match=r"^GET /o: connection failed: the server closed the connection$"
    ):
        reader.get("/o")
    reader.close()

    assert len(peer.requests) == 1


def test_a_silent_server_times_out_once_without_a_second_request(peer: Peer) -> None:
    peer.answers.append(Answer(b"", silent=True))
    reader = reader_for(peer, read_timeout_s=0.2)

    with pytest.raises(ConnectionFailed, match=r"^GET /o: connection failed: TimeoutError: "):
        reader.get("/o")
    reader.close()

    assert len(peer.requests) == 1


def test_a_refused_connection_is_connection_failed() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # nothing listens on the port any more
    config = KubeConfig(server=f"http://127.0.0.1:{port}", source="test")
    reader = ObjectReader(
        config,
        tokens=TokenSource(),
        tls_context=None,
        connect_timeout_s=2.0,
        read_timeout_s=2.0,
        user_agent="t",
    )

    with pytest.raises(
        ConnectionFailed, match=r"^GET /o: connection failed: ConnectionRefusedError: "
    ):
        reader.get("/o")


@pytest.mark.parametrize(
    ("code", "reason", "error"),
    [
        (404, "NotFound", NotFound),
        (401, "Unauthorized", Unauthorized),
        (403, "Forbidden", Forbidden),
        (500, "InternalError", ServerError),
        (503, "ServiceUnavailable", ServerError),
    ],
    ids=["404", "401", "403", "500", "503"],
)
def test_error_statuses_map_to_the_clients_errors_and_keep_the_connection(
    peer: Peer, code: int, reason: str, error: type[KubeError]
) -> None:
    peer.answers.extend([status(code, reason, "the server's words"), ok({"n": 1})])
    reader = reader_for(peer)

    with pytest.raises(error, match=rf"^GET /o: {code} {reason}: the server's words$"):
        reader.get("/o")
    assert reader.get("/o") == {"n": 1}
    reader.close()

    assert peer.connections == 1


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"SMTP ready\r\n\r\n", r"bad status line b'SMTP ready\\r\\n'"),
        (b"HTTP/1.1 2x0 OK\r\n\r\n", r"bad status code in b'HTTP/1.1 2x0 OK\\r\\n'"),
        (b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n", r"bad header line b'no colon\\r\\n'"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n", r"Content-Length 'ten' is not a"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}", r"answer ended after 2 of 10 body"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            r"bad chunk size b'zz'",
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}XX",
            r"a chunk does not end with CRLF",
        ),
    ],
    ids=[
        "not-http",
        "bad-status-code",
        "bad-header",
        "bad-length",
        "truncated-body",
        "bad-chunk-size",
        "chunk-without-crlf",
    ],
)
def test_malformed_answers_are_connection_failed(peer: Peer, raw: bytes, message: str) -> None:
    peer.answers.append(Answer(raw, close_after=True))
    reader = reader_for(peer)

    with pytest.raises(
        ConnectionFailed, match=rf"^GET /o: connection failed: malformed HTTP answer: {message}"
    ):
        reader.get("/o")
    reader.close()


def test_an_answer_that_is_not_a_json_object_is_a_kube_error(peer: Peer) -> None:
    peer.answers.extend([ok([1, 2]), Answer(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc")])
    reader = reader_for(peer)

    with pytest.raises(KubeError, match=r"^GET /o: answer is not a JSON object$"):
        reader.get("/o")
    with pytest.raises(KubeError, match=r"^GET /o: answer is not JSON: b'abc'$"):
        reader.get("/o")
    reader.close()


def test_an_answer_nested_too_deeply_is_answer_too_deep(peer: Peer) -> None:
    body = b'{"a": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    peer.answers.append(
        Answer(f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
    )
    reader = reader_for(peer)

    with pytest.raises(AnswerTooDeepError, match=r"^GET /o: answer nests too deeply to decode"):
        reader.get("/o")
    reader.close()


def test_a_token_file_is_read_again_as_the_client_reads_it(peer: Peer, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("first\n")
    peer.answers.extend([ok({}), ok({})])
    reader = reader_for(peer, tokens=TokenSource(token_file=token_file, reread_after_s=0))

    reader.get("/o")
    token_file.write_text("second\n")
    reader.get("/o")
    reader.close()

    assert [b"Bearer first" in r for r in peer.requests] == [True, False]
    assert b"Bearer second" in peer.requests[1]


def test_a_token_that_would_break_the_request_is_refused(peer: Peer) -> None:
    reader = reader_for(peer, token="abc\r\nX-Evil: 1")

    with pytest.raises(KubeConfigError, match=r"^bearer token holds spaces or control"):
        reader.get("/o")

    assert peer.requests == []


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("o", r"^path must start with '/': 'o'$"),
        ("/o HTTP/1.1\r\nX: y", r"^path must not hold spaces or control characters: "),
    ],
    ids=["relative", "injected"],
)
def test_paths_that_would_break_the_request_are_refused(
    peer: Peer, path: str, message: str
) -> None:
    reader = reader_for(peer)

    with pytest.raises(ValueError, match=message):
        reader.get(path)


@pytest.mark.parametrize(
    "server",
    ["unix:///run/kube.sock", "https://", "ftp://host"],
    ids=["unix", "no-host", "ftp"],
)
def test_a_server_that_is_not_an_http_url_is_a_config_error(server: str) -> None:
    with pytest.raises(KubeConfigError, match=r"^src: server .* is not an http\(s\) URL with a"):
        ObjectReader(
            KubeConfig(server=server, source="src"),
            tokens=TokenSource(),
            tls_context=None,
            connect_timeout_s=1,
            read_timeout_s=1,
            user_agent="t",
        )


def test_concurrent_reads_use_one_connection_each_and_all_get_their_answer(peer: Peer) -> None:
    """The daemon's gRPC workers read claims at once; each must get its own answer whole."""
    threads, reads = 8, 25
    peer.answers.extend(ok({"pad": "x" * 5000}) for _ in range(threads * reads))
    reader = reader_for(peer)
    results: list[dict[str, object]] = []
    failures: list[BaseException] = []

    def read_many() -> None:
        try:
            for _ in range(reads):
                results.append(reader.get("/o"))
        except BaseException as exc:
            failures.append(exc)

    workers = [threading.Thread(target=read_many) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    reader.close()

    assert failures == []
    assert results == [{"pad": "x" * 5000}] * (threads * reads)
    assert peer.connections <= threads


def test_what_orjson_refuses_decodes_as_the_standard_library_decodes_it(peer: Peer) -> None:
    """orjson stops at 64-bit integers; the API server's JSON has no such limit."""
    body = b'{"big": 123456789012345678901234567890, "nan": NaN}'
    peer.answers.append(
        Answer(f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
    )
    reader = reader_for(peer)

    obj = reader.get("/o")
    reader.close()

    assert obj["big"] == 123456789012345678901234567890
    assert obj["nan"] != obj["nan"]  # NaN, as json.loads reads it


def test_a_read_imports_neither_urllib3_nor_http_client() -> None:
    """The point of the reader: none of urllib3's or http.client's layers on the claim read."""
    code = """
import socket, sys, threading
from dra_driver.cluster.kube import KubeConfig, ObjectReader, TokenSource
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(1)
def answer():
    conn, _ = listener.accept()
    with conn, conn.makefile("rb") as file:
        while file.readline() not in (b"\\r\\n", b""):
            pass
        conn.sendall(b'HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\n{}')
threading.Thread(target=answer, daemon=True).start()
host, port = listener.getsockname()
reader = ObjectReader(
    KubeConfig(server=f"http://{host}:{port}"), tokens=TokenSource(), tls_context=None,
    connect_timeout_s=5, read_timeout_s=5, user_agent="t",
)
assert reader.get("/o") == {}
reader.close()
print(sorted(m for m in ("urllib3", "http.client", "email") if m in sys.modules))
"""

    result = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=60
    )

    assert result.stdout.strip() == "[]"
