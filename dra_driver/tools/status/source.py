"""Reading the cluster for ``dcu-dra status``: the official ``kubernetes`` client, list and watch.

The daemon has its own small client (``cluster.kube``); this command runs on a workstation
against managed clusters, so it uses the official client for what ours does not do: every
kubeconfig form (contexts, merged ``KUBECONFIG`` lists, exec credential plugins, OIDC,
client certificates) and in-cluster config. Objects are kept as their JSON wire form (lists
are read with ``_preload_content=False``, watch events as ``raw_object``), which is what the
pure ``model`` takes.

Every failure becomes one :class:`StatusError` line: no cluster, no permission (naming the
verb and the resource), unknown node, an API server that does not serve DRA.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from dra_driver.errors import DriverError

logger = logging.getLogger(__name__)

#: Connect and read timeout of one list or get: a workstation on a VPN may be slow to
#: connect, but a list that takes longer than this means something is wrong.
REQUEST_TIMEOUT_S = 30.0
#: How long one watch request lasts before it is renewed from the last resource version. A
#: watch that sees no event for this long is re-established, so a silently dropped connection
#: (laptop asleep, VPN gone) is noticed within this time.
WATCH_WINDOW_S = 240
#: Wait before retrying a watch whose connection failed.
WATCH_RETRY_S = 2.0
#: urllib3 retries of one request: none, so an unreachable server is reported at once (a watch
#: retries on its own, every WATCH_RETRY_S).
HTTP_RETRIES = 0
#: A burst of events is folded into one redraw, for at most this many settle times.
MAX_BATCH_SETTLES = 10


class StatusError(DriverError):
    """``dcu-dra status`` cannot show the cluster; the message is one line saying why."""


class Kind(StrEnum):
    """The resources ``status`` reads."""

    SLICES = "resourceslices.resource.k8s.io"
    CLAIMS = "resourceclaims.resource.k8s.io"
    PODS = "pods"
    CLASSES = "deviceclasses.resource.k8s.io"


Obj = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The objects ``model.build_status`` needs, as wire-form dicts."""

    slices: list[Obj]
    claims: list[Obj]
    pods: list[Obj]
    classes: list[Obj]


def connect(kubeconfig: Path | None, context: str | None) -> client.ApiClient:
    """An API client from ``kubeconfig`` (else ``KUBECONFIG``, else ``~/.kube/config``).

    Without any kubeconfig file, and inside a pod, the pod's service account is used. Exec
    credential plugins and OIDC are the ``kubernetes`` client's; they run here, at load time.
    """
    path = str(kubeconfig) if kubeconfig else os.environ.get("KUBECONFIG") or "~/.kube/config"
    existing = [p for p in path.split(os.pathsep) if p and Path(p).expanduser().exists()]
    configuration = client.Configuration()
    if not existing:
        if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            try:
                config.load_incluster_config(client_configuration=configuration)
            except ConfigException as exc:
                raise StatusError(f"no cluster: in-cluster config: {exc}") from exc
            return _client(configuration)
        raise StatusError(
            f"no cluster: no kubeconfig at {path} (give --kubeconfig, set KUBECONFIG, or run "
            "inside a pod)"
        )
    try:
        config.load_kube_config(
            config_file=os.pathsep.join(existing),
            context=context,
            client_configuration=configuration,
            persist_config=False,
        )
    except ConfigException as exc:
        raise StatusError(f"no cluster: kubeconfig {path}: {_one_line(str(exc))}") from exc
    except (OSError, ValueError) as exc:  # unreadable file, YAML that is not a kubeconfig
        raise StatusError(f"no cluster: kubeconfig {path}: {_one_line(str(exc))}") from exc
    return _client(configuration)


def _client(configuration: client.Configuration) -> client.ApiClient:
    configuration.retries = HTTP_RETRIES
    api = client.ApiClient(configuration)
    api.user_agent = "dcu-dra-status"
    return api


@dataclass
class ClusterReader:
    """Lists and watches what ``status`` shows, for the cluster or one node."""

    api: client.ApiClient
    driver: str
    node: str | None = None
    _resource: client.ResourceV1Api = field(init=False)
    _core: client.CoreV1Api = field(init=False)

    def __post_init__(self) -> None:
        self._resource = client.ResourceV1Api(self.api)
        self._core = client.CoreV1Api(self.api)

    @property
    def server(self) -> str:
        """The API server's URL."""
        return str(self.api.configuration.host)

    def check_node(self) -> None:
        """Raise ``StatusError`` when ``node`` is set but no such Node exists."""
        if self.node is None:
            return
        try:
            self._core.read_node(self.node, _request_timeout=REQUEST_TIMEOUT_S)
        except ApiException as exc:
            if exc.status == 404:
                raise StatusError(
                    f"unknown node {self.node!r}: no such Node in {self.server}"
                ) from exc
            raise self.api_error(exc, "get", "nodes", f"node {self.node}") from exc
        except urllib3.exceptions.HTTPError as exc:
            raise self.unreachable(exc) from exc

    def snapshot(self) -> Snapshot:
        """List everything once."""
        return Snapshot(
            slices=self.list(Kind.SLICES)[0],
            claims=self.list(Kind.CLAIMS)[0],
            pods=self.list(Kind.PODS)[0],
            classes=self.list(Kind.CLASSES)[0],
        )

    def list(self, kind: Kind) -> tuple[list[Obj], str]:
        """The items of ``kind`` and the list's resource version. Raises ``StatusError``."""
        try:
            response = self._list_function(kind)(
                **self._selectors(kind), _preload_content=False, _request_timeout=REQUEST_TIMEOUT_S
            )
            document = json.loads(response.data)
        except ApiException as exc:
            raise self.api_error(exc, "list", kind.value, "at the cluster scope") from exc
        except urllib3.exceptions.HTTPError as exc:
            raise self.unreachable(exc) from exc
        return list(document.get("items") or []), str(document["metadata"]["resourceVersion"])

    def follow(self, kind: Kind, events: queue.Queue[Event], stop: threading.Event) -> None:
        """List then watch ``kind`` until ``stop``, putting :class:`Event`s on ``events``.

        Runs on its own thread. A list is sent as one ``RESET`` event; a watch that expired
        (410 Gone) is replaced by a new list. A lost connection is retried every
        ``WATCH_RETRY_S``; any other failure is put as an ``ERROR`` event and ends the thread.
        """
        while not stop.is_set():
            try:
                items, version = self.list(kind)
                events.put(Event(kind, EventType.RESET, items=items))
                for event in self._watch(kind, version, stop):
                    events.put(event)
            except StatusError as exc:
                if not isinstance(exc.__cause__, urllib3.exceptions.HTTPError):
                    events.put(Event(kind, EventType.ERROR, error=exc))
                    return
                logger.info("watch of %s: %s; retrying", kind.value, exc)
                stop.wait(WATCH_RETRY_S)
            except Exception as exc:  # a client bug must end the command, not freeze the screen
                events.put(
                    Event(
                        kind,
                        EventType.ERROR,
                        error=StatusError(f"watch {kind.value}: {type(exc).__name__}: {exc}"),
                    )
                )
                return

    def _watch(self, kind: Kind, version: str, stop: threading.Event) -> Iterator[Event]:
        """Watch from ``version`` in ``WATCH_WINDOW_S`` windows until ``stop`` or 410 Gone."""
        while not stop.is_set():
            # "object": events stay dicts. Without it the client derives the item model from
            # the list's name, and V1ResourceClaim does not exist (it is
            # ResourceV1ResourceClaim), so watching claims fails with AttributeError.
            watcher = watch.Watch(return_type="object")
            try:
                for raw in watcher.stream(
                    self._list_function(kind),
                    **self._selectors(kind),
                    resource_version=version,
                    allow_watch_bookmarks=True,
                    timeout_seconds=WATCH_WINDOW_S,
                    _request_timeout=(REQUEST_TIMEOUT_S, WATCH_WINDOW_S + REQUEST_TIMEOUT_S),
                ):
                    obj = raw["raw_object"]
                    version = str((obj.get("metadata") or {}).get("resourceVersion", version))
                    if raw["type"] in ("ADDED", "MODIFIED", "DELETED"):
                        yield Event(kind, EventType(raw["type"]), items=[obj])
                    if stop.is_set():
                        watcher.stop()
                        return
            except ApiException as exc:
                if exc.status == 410:
                    return  # expired: the caller lists again
                raise self.api_error(exc, "watch", kind.value, "at the cluster scope") from exc
            except urllib3.exceptions.HTTPError as exc:
                raise self.unreachable(exc) from exc

    def _list_function(self, kind: Kind) -> Callable[..., Any]:
        functions: dict[Kind, Callable[..., Any]] = {
            Kind.SLICES: self._resource.list_resource_slice,
            Kind.CLAIMS: self._resource.list_resource_claim_for_all_namespaces,
            Kind.PODS: self._core.list_pod_for_all_namespaces,
            Kind.CLASSES: self._resource.list_device_class,
        }
        return functions[kind]

    def _selectors(self, kind: Kind) -> dict[str, str]:
        if kind is Kind.SLICES:
            selector = f"spec.driver={self.driver}"
            if self.node is not None:
                selector += f",spec.nodeName={self.node}"
            return {"field_selector": selector}
        return {}

    def api_error(self, exc: ApiException, verb: str, resource: str, scope: str) -> StatusError:
        """One line for an error answer of the API server."""
        message = _server_message(exc)
        if exc.status == 403:
            user = re.search(r'User "([^"]*)"', message)
            who = f" as {user.group(1)}" if user else ""
            return StatusError(
                f"no permission to {verb} {resource} {scope}{who}: RBAC must allow verb "
                f"{verb!r} on {resource!r} (the API server said: {message})"
            )
        if exc.status == 401:
            return StatusError(
                f"{self.server} rejected the credentials (401 Unauthorized): log in again or "
                "check the kubeconfig's user"
            )
        if exc.status == 404:
            return StatusError(
                f"{self.server} does not serve {resource}: dcu-dra needs resource.k8s.io/v1 "
                "(Kubernetes 1.34 or later)"
            )
        if exc.status == 0:  # TLS failures, which the client reports as status 0
            return StatusError(f"cannot reach the API server at {self.server}: {exc.reason}")
        return StatusError(f"{verb} {resource}: {exc.status} {exc.reason}: {message}")

    def unreachable(self, exc: urllib3.exceptions.HTTPError) -> StatusError:
        """One line for a connection that failed."""
        reason = getattr(exc, "reason", None) or exc
        return StatusError(
            f"cannot reach the API server at {self.server}: {_one_line(str(reason))}"
        )


class EventType(StrEnum):
    """What happened to the objects of one kind."""

    RESET = "RESET"
    """A fresh list: ``items`` replace everything known of the kind."""
    ADDED = "ADDED"
    MODIFIED = "MODIFIED"
    DELETED = "DELETED"
    ERROR = "ERROR"
    """The kind can no longer be followed: ``error`` says why."""


@dataclass(frozen=True, slots=True)
class Event:
    """One change seen by :meth:`ClusterReader.follow`."""

    kind: Kind
    type: EventType
    items: list[Obj] = field(default_factory=list)
    error: StatusError | None = None


class Store:
    """What the watches have seen so far, by kind and UID. Used from one thread."""

    def __init__(self) -> None:
        self.objects: dict[Kind, dict[str, Obj]] = {}

    @property
    def is_complete(self) -> bool:
        """Every kind has been listed at least once."""
        return len(self.objects) == len(Kind)

    def apply(self, event: Event) -> None:
        """Fold one event in; raises its error for an ``ERROR`` event."""
        if event.type is EventType.ERROR:
            assert event.error is not None
            raise event.error
        if event.type is EventType.RESET:
            self.objects[event.kind] = {_uid(o): o for o in event.items}
            return
        known = self.objects.setdefault(event.kind, {})
        for obj in event.items:
            if event.type is EventType.DELETED:
                known.pop(_uid(obj), None)
            else:
                known[_uid(obj)] = obj

    def snapshot(self) -> Snapshot:
        """The objects known now."""

        def items(kind: Kind) -> list[Obj]:
            return list(self.objects.get(kind, {}).values())

        return Snapshot(
            slices=items(Kind.SLICES),
            claims=items(Kind.CLAIMS),
            pods=items(Kind.PODS),
            classes=items(Kind.CLASSES),
        )


def _uid(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return str(meta.get("uid") or f"{meta.get('namespace', '')}/{meta.get('name', '')}")


def _server_message(exc: ApiException) -> str:
    try:
        body = json.loads(exc.body or "")
    except ValueError:
        return _one_line(str(exc.body or exc.reason or ""))
    return _one_line(str(body.get("message") if isinstance(body, dict) else body))


def _one_line(text: str) -> str:
    return " ".join(text.split())


def wait_quiet(events: queue.Queue[Event], first: Event, settle_s: float) -> list[Event]:
    """``first`` and every event that follows within ``settle_s`` of the previous one.

    A burst (a list of 100 pods, a scheduler writing a claim and then the pod) becomes one
    redraw instead of many. A steady stream is cut after ``MAX_BATCH_SETTLES`` settle times,
    so the screen still follows a busy cluster.
    """
    batch = [first]
    started = time.monotonic()
    deadline = started + settle_s
    while deadline < started + MAX_BATCH_SETTLES * settle_s:
        try:
            batch.append(events.get(timeout=max(deadline - time.monotonic(), 0)))
        except queue.Empty:
            return batch
        deadline = time.monotonic() + settle_s
    return batch
