"""GETs of single objects over kept-open HTTP/1.1 connections, on the standard library only.

Why this exists beside :class:`~dra_driver.cluster.kube.client.KubeClient`: the node daemon
reads the ResourceClaim on every NodePrepareResources, and the profile of a prepare put that
one GET through urllib3 and ``http.client`` at 17-24 % of the daemon's CPU per cycle (their
header parsing goes through ``email``, their pool through several layers per request). This
module speaks just enough HTTP/1.1 for one JSON answer: a request written in one ``sendall``,
a status line, headers, and a body framed by ``Content-Length`` or chunked encoding, read
through the C-buffered socket file.

Owns :class:`ObjectReader` and :func:`decode_object`. Must not grow other verbs, watches or
retries of its own beyond the one below: the client keeps those.

Connections are pooled (at most ``max_idle`` kept open, the most recently used first) and
each is used by one thread at a time, so a reader is thread-safe. A kept-open connection the
server has closed meanwhile (idle timeout, API server restart) fails on the next request
before any answer arrives; such a request is sent once more on a new connection. That is the
only repetition, and it is safe because a GET changes nothing. Errors are the client's
(:mod:`dra_driver.cluster.kube.errors`): an error status becomes the matching
:class:`~dra_driver.cluster.kube.errors.ApiError`, anything without an HTTP answer (refused,
TLS, timeout, a malformed answer) :class:`~dra_driver.cluster.kube.errors.ConnectionFailed`.
"""

from __future__ import annotations

import json
import socket
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import urlsplit

from dra_driver.cluster.kube.config import KubeConfig, TokenSource
from dra_driver.cluster.kube.errors import (
    AnswerTooDeepError,
    ConnectionFailed,
    KubeConfigError,
    KubeError,
    api_error,
)

if TYPE_CHECKING:
    import ssl

#: Longest status or header line accepted. The API server's lines are well under 1 KiB; a
#: limit keeps a broken peer from making us buffer without end.
MAX_LINE_BYTES = 64 * 1024
#: Most header lines accepted in one answer (the API server sends fewer than ten).
MAX_HEADERS = 100
#: Idle connections kept open by default: the daemon reads claims from at most its gRPC worker
#: threads (8) at once; more would only hold sockets on the API server.
DEFAULT_MAX_IDLE = 8


class _MalformedAnswer(Exception):  # noqa: N818 - internal signal, mapped to ConnectionFailed
    """The peer's bytes are not an HTTP/1.x answer we can frame."""


class _ClosedBeforeAnswer(Exception):  # noqa: N818 - internal signal
    """The connection ended before the first byte of an answer (a stale kept-open one?)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    body: bytes
    keeps_open: bool
    """Whether the connection may carry another request."""


class _Connection:
    """One TCP (or TLS) connection and the buffered reader of its answers."""

    __slots__ = ("file", "sock", "used")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.file: BinaryIO = sock.makefile("rb")
        self.used = False
        """Whether a request was sent on it before (a reused connection may be stale)."""

    def close(self) -> None:
        self.file.close()
        self.sock.close()


class ObjectReader:
    """GET of one JSON object per call over pooled kept-open connections; thread-safe."""

    def __init__(
        self,
        config: KubeConfig,
        *,
        tokens: TokenSource,
        tls_context: ssl.SSLContext | None,
        connect_timeout_s: float,
        read_timeout_s: float,
        user_agent: str,
        max_idle: int = DEFAULT_MAX_IDLE,
    ) -> None:
        """Check the server URL now; no connection is opened before the first ``get``.

        ``tls_context`` is required for an ``https`` server (the client's, so a bad
        certificate fails once, at the client's start) and ignored for ``http``.
        """
        url = urlsplit(config.server)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise KubeConfigError(
                f"{config.source or 'kube config'}: server {config.server!r} is not an "
                "http(s) URL with a host"
            )
        if url.scheme == "https" and tls_context is None:
            raise ValueError(f"server {config.server!r} is https but no TLS context was given")
        self._host = url.hostname
        self._port = url.port or (443 if url.scheme == "https" else 80)
        self._tls_context = tls_context if url.scheme == "https" else None
        self._tls_server_name = config.tls_server_name or url.hostname
        # A server URL may carry a path prefix (an API server behind a proxy).
        self._path_prefix = url.path.rstrip("/")
        self._fixed_headers = (
            f"Host: {url.netloc}\r\nUser-Agent: {user_agent}\r\nAccept: application/json\r\n"
        )
        self._tokens = tokens
        self._connect_timeout_s = connect_timeout_s
        self._read_timeout_s = read_timeout_s
        self._max_idle = max_idle
        self._idle: list[_Connection] = []
        self._lock = threading.Lock()
        self._closed = False

    def get(self, path: str) -> dict[str, Any]:
        """GET ``path`` and decode the JSON object; raise :class:`KubeError` on any failure."""
        answer = self._send(self._request_bytes(path), path)
        if answer.status >= 400:
            raise api_error(answer.status, answer.body, method="GET", path=path)
        return decode_object(answer.body, method="GET", path=path)

    def close(self) -> None:
        """Close the idle connections; connections in use close when their call ends."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    # --- plumbing -------------------------------------------------------------------------

    def _request_bytes(self, path: str) -> bytes:
        """The whole request; refuses what would break the request's framing."""
        if not path.startswith("/"):
            raise ValueError(f"path must start with '/': {path!r}")
        if not path.isprintable() or " " in path:
            raise ValueError(f"path must not hold spaces or control characters: {path!r}")
        token = self._tokens.current()
        authorization = ""
        if token:
            if not token.isprintable() or " " in token:
                raise KubeConfigError(
                    "bearer token holds spaces or control characters: check the token or "
                    "token file of the kubeconfig"
                )
            authorization = f"Authorization: Bearer {token}\r\n"
        head = f"GET {self._path_prefix}{path} HTTP/1.1\r\n{self._fixed_headers}{authorization}\r\n"
        return head.encode("latin-1")

    def _send(self, request: bytes, path: str) -> _Answer:
        """The answer to ``request``, on a kept-open connection when one is idle."""
        with self._lock:
            connection = self._idle.pop() if self._idle else None
        if connection is None:
            connection = self._connect(path)
        try:
            return self._exchange(connection, request, path)
        except _ClosedBeforeAnswer as stale:
            if not connection.used:
                raise ConnectionFailed("GET", path, stale.reason) from stale
        # The server closed this kept-open connection while it was idle, which every pool
        # must expect. It did not see the request, so the request goes once more, on a new
        # connection.
        try:
            return self._exchange(self._connect(path), request, path)
        except _ClosedBeforeAnswer as again:
            raise ConnectionFailed("GET", path, again.reason) from again

    def _connect(self, path: str) -> _Connection:
        try:
            sock = socket.create_connection(
                (self._host, self._port), timeout=self._connect_timeout_s
            )
        except OSError as exc:
            raise ConnectionFailed("GET", path, _describe(exc)) from exc
        try:
            # The request goes in one write; nothing is gained by waiting to coalesce it.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._tls_context is not None:
                # The handshake runs under the connect timeout, still set on the socket.
                sock = self._tls_context.wrap_socket(sock, server_hostname=self._tls_server_name)
            sock.settimeout(self._read_timeout_s)
        except OSError as exc:
            sock.close()
            raise ConnectionFailed("GET", path, _describe(exc)) from exc
        return _Connection(sock)

    def _exchange(self, connection: _Connection, request: bytes, path: str) -> _Answer:
        """Send the request and read the answer; then keep the connection or close it.

        Raises ``_ClosedBeforeAnswer`` when the connection failed before any byte of an
        answer arrived, ``ConnectionFailed`` for any other transport failure.
        """
        try:
            try:
                connection.sock.sendall(request)
                first_line = connection.file.readline(MAX_LINE_BYTES + 1)
            except TimeoutError:
                raise  # a slow server, not a stale connection: never sent twice
            except OSError as exc:
                raise _ClosedBeforeAnswer(_describe(exc)) from exc
            if not first_line:
                raise _ClosedBeforeAnswer("the server closed the connection")
            answer = _read_answer(connection.file, first_line)
        except _MalformedAnswer as exc:
            connection.close()
            raise ConnectionFailed("GET", path, f"malformed HTTP answer: {exc}") from exc
        except OSError as exc:
            connection.close()
            raise ConnectionFailed("GET", path, _describe(exc)) from exc
        except BaseException:
            connection.close()
            raise
        if answer.keeps_open:
            connection.used = True
            with self._lock:
                if not self._closed and len(self._idle) < self._max_idle:
                    self._idle.append(connection)
                    return answer
        connection.close()
        return answer


def _read_answer(file: BinaryIO, status_line: bytes) -> _Answer:
    """One HTTP/1.x answer after its status line (informational 1xx answers skipped)."""
    line = status_line
    while True:
        version, status = _parse_status_line(line)
        headers = _read_headers(file)
        if status >= 200:
            break
        line = file.readline(MAX_LINE_BYTES + 1)
    keeps_open = version == b"HTTP/1.1" and "close" not in headers.get("connection", "").lower()
    if status in (204, 304):
        return _Answer(status=status, body=b"", keeps_open=keeps_open)
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return _Answer(status=status, body=_read_chunked(file), keeps_open=keeps_open)
    length_text = headers.get("content-length")
    if length_text is not None:
        if not length_text.isdigit():
            raise _MalformedAnswer(f"Content-Length {length_text!r} is not a number")
        return _Answer(
            status=status, body=_read_exactly(file, int(length_text)), keeps_open=keeps_open
        )
    # Neither framing: the body runs to the end of the connection.
    return _Answer(status=status, body=file.read(), keeps_open=False)


def _parse_status_line(line: bytes) -> tuple[bytes, int]:
    """``(version, status)`` of ``HTTP/1.1 200 OK``."""
    parts = line.split(None, 2)
    if len(line) > MAX_LINE_BYTES or len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
        raise _MalformedAnswer(f"bad status line {line[:100]!r}")
    if len(parts[1]) != 3 or not parts[1].isdigit():
        raise _MalformedAnswer(f"bad status code in {line[:100]!r}")
    return parts[0], int(parts[1])


def _read_headers(file: BinaryIO) -> dict[str, str]:
    """Header lines up to the blank line, names lower-cased (a repeated name: the last)."""
    headers: dict[str, str] = {}
    for _ in range(MAX_HEADERS + 1):
        line = file.readline(MAX_LINE_BYTES + 1)
        if line in (b"\r\n", b"\n"):
            return headers
        if not line.endswith(b"\n"):
            raise _MalformedAnswer("answer ended or overflowed inside its headers")
        name, colon, value = line.partition(b":")
        if not colon:
            raise _MalformedAnswer(f"bad header line {line[:100]!r}")
        headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    raise _MalformedAnswer(f"more than {MAX_HEADERS} header lines")


def _read_chunked(file: BinaryIO) -> bytes:
    """A chunked body, trailers skipped."""
    chunks: list[bytes] = []
    while True:
        line = file.readline(MAX_LINE_BYTES + 1)
        if not line.endswith(b"\n"):
            raise _MalformedAnswer("answer ended or overflowed inside a chunk size")
        size_text = line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise _MalformedAnswer(f"bad chunk size {size_text[:40]!r}") from None
        if size < 0:
            raise _MalformedAnswer(f"bad chunk size {size_text[:40]!r}")
        if size == 0:
            _read_headers(file)  # trailers, up to the final blank line
            return b"".join(chunks)
        chunks.append(_read_exactly(file, size))
        if file.readline(3) not in (b"\r\n", b"\n"):
            raise _MalformedAnswer("a chunk does not end with CRLF")


def _read_exactly(file: BinaryIO, size: int) -> bytes:
    data = file.read(size)
    if len(data) != size:
        raise _MalformedAnswer(f"answer ended after {len(data)} of {size} body bytes")
    return data


def decode_object(data: bytes, *, method: str, path: str) -> dict[str, Any]:
    """The JSON object of an answer's body (an empty body is ``{}``); raise ``KubeError``."""
    if not data:
        return {}
    import orjson  # a C module, loaded once; not before the daemon's sockets exist

    try:
        # orjson decodes an object in about half the time of ``json``.
        decoded = orjson.loads(data)
    except orjson.JSONDecodeError:
        # Whatever orjson refuses (nesting past 1024 levels, integers past 64 bits, lone
        # surrogates), ``json`` decides, so answers decode or fail exactly as they always did.
        decoded = _decode_with_json(data, method=method, path=path)
    if not isinstance(decoded, dict):
        raise KubeError(f"{method} {path}: answer is not a JSON object")
    return decoded


def _decode_with_json(data: bytes, *, method: str, path: str) -> Any:
    try:
        return json.loads(data)
    except ValueError as exc:
        raise KubeError(f"{method} {path}: answer is not JSON: {data[:200]!r}") from exc
    except RecursionError as exc:
        # The API server stores JSON nested deeper than Python's decoder goes (opaque
        # claim parameters may nest ~5000 levels in 10 KiB).
        raise AnswerTooDeepError(
            f"{method} {path}: answer nests too deeply to decode ({len(data)} bytes)"
        ) from exc


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
