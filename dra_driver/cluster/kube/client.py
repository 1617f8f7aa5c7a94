"""A small synchronous Kubernetes REST client on urllib3.

Why not the ``kubernetes`` package: importing it loads every typed model (about 1.6 s and
70 MB), which the node daemon and the fake kubelet cannot afford at start-up, and they only need
a handful of verbs on plain JSON. Objects go in and come out as ``dict``; paths come from
:mod:`dra_driver.cluster.kube.paths`.

Every call has a timeout (connect 5 s, read 30 s by default; watches read for longer). urllib3's
``PoolManager`` is thread-safe, so one :class:`KubeClient` is shared by all threads. Nothing is
retried here: callers decide what is safe to repeat.

urllib3 (with ``http.client`` and ``email`` behind it) is imported at the first request, not
when a client is made: the node daemon opens its kubelet sockets first and lets its first API
call (the slice publisher's, on its own thread) pay for it.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import warnings
from collections.abc import Iterator, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlencode

from dra_driver.cluster.kube.config import (
    KubeConfig,
    load_incluster_config,
    load_kubeconfig,
    ssl_context,
    token_source,
)
from dra_driver.cluster.kube.errors import (
    ApiError,
    ConnectionFailed,
    KubeError,
    api_error,
)
from dra_driver.cluster.kube.reader import ObjectReader, decode_object

if TYPE_CHECKING:
    import urllib3

logger = logging.getLogger(__name__)

PatchType = Literal["merge", "strategic", "json", "apply"]

_PATCH_CONTENT_TYPES: dict[str, str] = {
    "merge": "application/merge-patch+json",
    "strategic": "application/strategic-merge-patch+json",
    "json": "application/json-patch+json",
    # JSON is YAML, so the body is still sent as JSON.
    "apply": "application/apply-patch+yaml",
}

#: Defaults of every call. Reads of single objects answer in milliseconds; 30 s leaves room for
#: a busy API server without hanging a worker thread for minutes.
DEFAULT_CONNECT_TIMEOUT_S = 5.0
DEFAULT_READ_TIMEOUT_S = 30.0
#: The server ends a watch after this many seconds; the caller then re-watches from the last
#: resourceVersion it saw. Five minutes matches client-go's reflector (which picks 5-10 min).
DEFAULT_WATCH_TIMEOUT_S = 300.0
#: A watch read times out this long after the server should have ended the stream.
_WATCH_READ_MARGIN_S = 30.0

WatchEvent = tuple[str, dict[str, Any]]


class KubeClient:
    """Synchronous verbs on plain-dict objects; thread-safe."""

    def __init__(
        self,
        config: KubeConfig,
        *,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        read_timeout_s: float = DEFAULT_READ_TIMEOUT_S,
        user_agent: str = "dcu-dra",
        field_manager: str = "dcu-dra",
        max_connections: int = 10,
    ) -> None:
        self.config = config
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.field_manager = field_manager
        self._user_agent = user_agent
        self._tokens = token_source(config)
        self._max_connections = max_connections
        # Made now, so a bad certificate or key fails the start, not the first request.
        self._pool_kwargs: dict[str, Any] = {}
        if config.server.startswith("https:"):
            self._pool_kwargs["ssl_context"] = ssl_context(config)
            if config.tls_server_name:
                self._pool_kwargs["server_hostname"] = config.tls_server_name
        self._pool_lock = threading.Lock()
        self._made_pool: urllib3.PoolManager | None = None
        self.reader = ObjectReader(
            config,
            tokens=self._tokens,
            tls_context=self._pool_kwargs.get("ssl_context"),
            connect_timeout_s=connect_timeout_s,
            read_timeout_s=read_timeout_s,
            user_agent=user_agent,
        )
        """GETs of single objects without urllib3, for the node daemon's per-call reads."""
        self._closed = threading.Event()

    @property
    def _pool(self) -> urllib3.PoolManager:
        """The connection pool, made (and urllib3 imported) at the first request."""
        pool = self._made_pool
        if pool is not None:
            return pool
        with self._pool_lock:
            if self._made_pool is None:
                self._made_pool = self._make_pool()
            return self._made_pool

    def _make_pool(self) -> urllib3.PoolManager:
        import urllib3
        from urllib3.exceptions import InsecureRequestWarning

        if self.config.insecure_skip_tls_verify:
            # The user asked for it in the kubeconfig; one warning per request would drown logs.
            warnings.filterwarnings("ignore", category=InsecureRequestWarning)
        # block=False: a pool that is full (many watches) opens extra short-lived connections.
        return urllib3.PoolManager(num_pools=4, maxsize=self._max_connections, **self._pool_kwargs)

    @classmethod
    def from_kubeconfig(
        cls, path: str | os.PathLike[str], *, context: str | None = None, **kwargs: Any
    ) -> KubeClient:
        """A client for a kubeconfig file's current (or given) context."""
        return cls(load_kubeconfig(path, context=context), **kwargs)

    @classmethod
    def in_cluster(cls, **kwargs: Any) -> KubeClient:
        """A client for the pod's own service account."""
        return cls(load_incluster_config(), **kwargs)

    @property
    def namespace(self) -> str:
        """The default namespace of the configuration."""
        return self.config.namespace

    def close(self) -> None:
        """Close pooled connections; open watch streams must be closed by their owners."""
        self._closed.set()
        self.reader.close()
        if self._made_pool is not None:
            self._made_pool.clear()

    def __enter__(self) -> KubeClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- verbs ----------------------------------------------------------------------------

    def get(self, path: str) -> dict[str, Any]:
        """GET one object (or any JSON endpoint)."""
        return self.request("GET", path)

    def list(
        self,
        path: str,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> dict[str, Any]:
        """GET a collection; returns the List object (``items``, ``metadata.resourceVersion``)."""
        return self.request(
            "GET", path, query={"labelSelector": label_selector, "fieldSelector": field_selector}
        )

    def create(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST ``body`` to a collection path; returns the created object."""
        return self.request("POST", path, body=body)

    def replace(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """PUT ``body`` (with ``metadata.resourceVersion`` for optimistic concurrency)."""
        return self.request("PUT", path, body=body)

    def patch(
        self,
        path: str,
        body: Any,
        *,
        patch_type: PatchType = "merge",
        force: bool = False,
        field_manager: str | None = None,
    ) -> dict[str, Any]:
        """PATCH an object; ``apply`` is server-side apply (``force`` takes over conflicts)."""
        query: dict[str, str | None] = {}
        if patch_type == "apply":
            query["fieldManager"] = field_manager or self.field_manager
            if force:
                query["force"] = "true"
        elif field_manager:
            query["fieldManager"] = field_manager
        return self.request(
            "PATCH", path, query=query, body=body, content_type=_PATCH_CONTENT_TYPES[patch_type]
        )

    def delete(
        self,
        path: str,
        *,
        preconditions: Mapping[str, str] | None = None,
        grace_period_s: int | None = None,
        propagation_policy: str | None = None,
    ) -> dict[str, Any]:
        """DELETE an object; ``preconditions`` may hold ``uid`` and ``resourceVersion``."""
        return self.request(
            "DELETE", path, body=_delete_options(preconditions, grace_period_s, propagation_policy)
        )

    def delete_collection(
        self,
        path: str,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> dict[str, Any]:
        """DELETE every object of a collection matching the selectors."""
        return self.request(
            "DELETE",
            path,
            query={"labelSelector": label_selector, "fieldSelector": field_selector},
        )

    def watch(
        self,
        path: str,
        *,
        resource_version: str | None,
        field_selector: str | None = None,
        label_selector: str | None = None,
        timeout_s: float = DEFAULT_WATCH_TIMEOUT_S,
    ) -> WatchStream:
        """Start a watch (with bookmarks) on a collection path; iterate the stream for events.

        Each event is ``(type, object)`` with type ``ADDED``, ``MODIFIED``, ``DELETED`` or
        ``BOOKMARK`` (only ``metadata.resourceVersion`` is meaningful in a bookmark). An
        ``ERROR`` event is raised as the matching :class:`ApiError` (:class:`Gone` when the
        resourceVersion is too old: list again). The stream ends after ``timeout_s``.
        """
        query = {
            "watch": "1",
            "allowWatchBookmarks": "true",
            "resourceVersion": resource_version,
            "fieldSelector": field_selector,
            "labelSelector": label_selector,
            "timeoutSeconds": str(max(1, int(timeout_s))),
        }
        response = self._send(
            "GET",
            path,
            query=query,
            body=None,
            content_type=None,
            read_timeout_s=timeout_s + _WATCH_READ_MARGIN_S,
            stream=True,
        )
        return WatchStream(response, method="WATCH", path=path)

    # --- plumbing -------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str | None] | None = None,
        body: Any = None,
        content_type: str | None = "application/json",
    ) -> dict[str, Any]:
        """Send one request and decode the JSON answer; raise :class:`KubeError` on failure."""
        response = self._send(
            method,
            path,
            query=query,
            body=body,
            content_type=content_type,
            read_timeout_s=self.read_timeout_s,
            stream=False,
        )
        return decode_object(response.data, method=method, path=path)

    def _send(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str | None] | None,
        body: Any,
        content_type: str | None,
        read_timeout_s: float,
        stream: bool,
    ) -> urllib3.BaseHTTPResponse:
        """Send a request; map transport failures and error statuses to exceptions."""
        if not path.startswith("/"):
            raise ValueError(f"path must start with '/': {path!r}")
        url = self.config.server + path
        params = {key: value for key, value in (query or {}).items() if value is not None}
        if params:
            url += "?" + urlencode(params)
        headers = {"Accept": "application/json", "User-Agent": self._user_agent}
        token = self._tokens.current()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        payload: bytes | None = None
        if body is not None:
            payload = json.dumps(body).encode()
            if content_type:
                headers["Content-Type"] = content_type
        logger.debug("%s %s", method, url)
        pool = self._pool
        import urllib3  # loaded by ``_pool`` by now: a dictionary lookup
        from urllib3.exceptions import HTTPError

        try:
            response = pool.request(
                "GET" if method == "WATCH" else method,
                url,
                body=payload,
                headers=headers,
                timeout=urllib3.Timeout(connect=self.connect_timeout_s, read=read_timeout_s),
                retries=False,
                redirect=False,
                preload_content=not stream,
            )
        except HTTPError as exc:
            raise ConnectionFailed(method, path, _describe(exc)) from exc
        if response.status >= 400:
            try:
                data = response.data if not stream else response.read()
            except HTTPError as exc:
                raise ConnectionFailed(method, path, _describe(exc)) from exc
            finally:
                if stream:
                    response.release_conn()
            raise api_error(response.status, data, method=method, path=path)
        return response


def _delete_options(
    preconditions: Mapping[str, str] | None,
    grace_period_s: int | None,
    propagation_policy: str | None,
) -> dict[str, Any] | None:
    """A ``DeleteOptions`` body, or None when no option is set."""
    options: dict[str, Any] = {}
    if preconditions:
        options["preconditions"] = dict(preconditions)
    if grace_period_s is not None:
        options["gracePeriodSeconds"] = grace_period_s
    if propagation_policy is not None:
        options["propagationPolicy"] = propagation_policy
    if not options:
        return None
    return {"kind": "DeleteOptions", "apiVersion": "v1", **options}


def _describe(exc: BaseException) -> str:
    """The innermost useful reason of a urllib3 error (MaxRetryError wraps the real one)."""
    reason = getattr(exc, "reason", None)
    if isinstance(reason, BaseException):
        return f"{type(reason).__name__}: {reason}"
    return f"{type(exc).__name__}: {exc}"


class WatchStream(Iterator[WatchEvent]):
    """The events of one watch request.

    Iterate it from one thread; :meth:`close` may be called from any thread and makes a blocked
    iteration end promptly (it shuts the socket down). Iteration stops when the server ends the
    stream or after :meth:`close`.
    """

    def __init__(self, response: urllib3.BaseHTTPResponse, *, method: str, path: str) -> None:
        self._response = response
        self._lines: Iterator[bytes] = iter(response)
        self._method = method
        self._path = path
        self._closed = threading.Event()
        self._finished = False

    def __iter__(self) -> WatchStream:
        return self

    def __next__(self) -> WatchEvent:
        while True:
            if self._finished or self._closed.is_set():
                self._finish()
                raise StopIteration
            try:
                line = next(self._lines)
            except StopIteration:
                self._finish()
                raise
            except Exception as exc:
                self._finish()
                if self._closed.is_set():
                    # close() from another thread tears the socket down under the reader.
                    raise StopIteration from None
                from urllib3.exceptions import HTTPError

                if isinstance(exc, HTTPError | OSError):
                    raise ConnectionFailed(self._method, self._path, _describe(exc)) from exc
                raise
            line = line.strip()
            if line:
                return self._decode(line)

    def _decode(self, line: bytes) -> WatchEvent:
        """One JSON watch event; ERROR events are raised."""
        try:
            event = json.loads(line)
            event_type = str(event["type"])
            obj = event["object"]
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            self.close()
            raise KubeError(f"{self._method} {self._path}: bad watch event {line[:200]!r}") from exc
        if event_type == "ERROR":
            self.close()
            code = obj.get("code") if isinstance(obj, dict) else None
            error: ApiError = api_error(
                int(code) if isinstance(code, int) else 500,
                obj if isinstance(obj, dict) else str(obj),
                method=self._method,
                path=self._path,
            )
            raise error
        return event_type, obj

    def close(self) -> None:
        """Stop the stream; safe to call from another thread and more than once."""
        if self._closed.is_set():
            return
        self._closed.set()
        try:
            self._response.shutdown()
        except (OSError, ValueError, RuntimeError):
            pass  # not connected (any more): nothing is blocked on the socket

    def _finish(self) -> None:
        """Release the connection once iteration is over."""
        if self._finished:
            return
        self._finished = True
        self._response.close()
        self._response.release_conn()

    def __enter__(self) -> WatchStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
        self._finish()
