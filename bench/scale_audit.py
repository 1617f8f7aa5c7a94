"""Requests counted at the API server: kube-apiserver's audit log, read per node's daemon.

``build/bin/controlplane --audit-log FILE`` logs every request at Metadata level as JSON lines,
without the RequestReceived stage: a request is one ResponseComplete event, and a watch also
has a ResponseStarted event when its stream opens. :func:`parse_requests` folds the events of
one ``auditID`` into one :class:`ApiRequest`, timed by when the server received it (so a watch
counts when it was opened, not while it stays open).

Each node's daemon says its node in its user agent (``dcu-dra-kubelet-plugin/<version> (node
NAME)``, :func:`dra_driver.daemon.user_agent`), which :func:`daemon_node` reads back: all daemons
use one credential, so the user agent is what tells them apart. Pure: no I/O but the lines
given.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from dra_driver.errors import DriverError

_DAEMON_AGENT = re.compile(r"^dcu-dra-kubelet-plugin/\S+ \(node ([^)]+)\)$")


class AuditLogError(DriverError):
    """An audit log line that is not an audit event (the log is not kube-apiserver's)."""


@dataclass(frozen=True, slots=True)
class ApiRequest:
    """One request as the API server saw it."""

    received: float
    """When the server received it, seconds since the epoch."""
    user_agent: str
    verb: str
    """The audit verb: get, list, watch, create, update, patch, delete, deletecollection."""
    resource: str
    """``resource`` or ``resource/subresource`` (``resourceclaims/status``); the path if none."""
    code: int | None
    """The response code (None: the log ends before the request did)."""

    @property
    def key(self) -> str:
        """``verb resource``, the row of a per-verb table."""
        return f"{self.verb} {self.resource}"


def daemon_node(user_agent: str) -> str | None:
    """The node whose daemon sent a request with this user agent; None for other clients."""
    match = _DAEMON_AGENT.match(user_agent)
    return match.group(1) if match else None


def parse_requests(lines: Iterable[str]) -> list[ApiRequest]:
    """One :class:`ApiRequest` per ``auditID``, in the order the requests first appear.

    Raises ``AuditLogError`` naming the line that is not a JSON audit event.
    """
    first: dict[str, ApiRequest] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
            audit_id = str(event["auditID"])
            received = _epoch(str(event["requestReceivedTimestamp"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise AuditLogError(
                f"audit log line {number} is not a kube-apiserver audit event ({exc}): start the "
                "control plane with --audit-log and read the file it names"
            ) from None
        code = (event.get("responseStatus") or {}).get("code")
        known = first.get(audit_id)
        if known is not None:
            if code is not None:
                first[audit_id] = ApiRequest(
                    known.received, known.user_agent, known.verb, known.resource, int(code)
                )
            continue
        first[audit_id] = ApiRequest(
            received=received,
            user_agent=str(event.get("userAgent") or ""),
            verb=str(event.get("verb") or ""),
            resource=_resource(event),
            code=None if code is None else int(code),
        )
    return list(first.values())


def _resource(event: dict[str, object]) -> str:
    ref = event.get("objectRef")
    if not isinstance(ref, dict) or not ref.get("resource"):
        return str(event.get("requestURI") or "").split("?", 1)[0]
    sub = ref.get("subresource")
    return f"{ref['resource']}/{sub}" if sub else str(ref["resource"])


def _epoch(timestamp: str) -> float:
    return dt.datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


@dataclass(frozen=True, slots=True)
class DaemonLoad:
    """What the daemons asked of the API server in one window."""

    seconds: float
    nodes: int
    by_key: dict[str, int]
    """Requests of all daemons by ``verb resource``."""
    per_node: dict[str, int]
    """Requests of each node's daemon (nodes that sent none are absent)."""
    status_codes: dict[int, int]
    """Answers by response code (requests the log has no answer for are not counted)."""

    @property
    def total(self) -> int:
        """Requests of all daemons in the window."""
        return sum(self.by_key.values())

    def per_node_minute(self, count: int | float) -> float:
        """``count`` requests of all daemons as requests per node per minute."""
        if self.seconds <= 0 or self.nodes <= 0:
            return 0.0
        return count / self.nodes / (self.seconds / 60.0)

    def rates(self) -> dict[str, float]:
        """Requests per node per minute by ``verb resource``, largest first."""
        ordered = sorted(self.by_key.items(), key=lambda item: (-item[1], item[0]))
        return {key: self.per_node_minute(count) for key, count in ordered}

    def rate_without_watches(self) -> float:
        """Requests per node per minute, watch (re)opens left out."""
        count = sum(n for key, n in self.by_key.items() if not key.startswith("watch "))
        return self.per_node_minute(count)


def daemon_load(
    requests: Iterable[ApiRequest], *, start: float, end: float, nodes: int
) -> DaemonLoad:
    """The daemons' requests received in ``[start, end)`` (epoch seconds) by ``nodes`` nodes."""
    if end < start:
        raise ValueError(f"window ends ({end}) before it starts ({start})")
    by_key: Counter[str] = Counter()
    per_node: Counter[str] = Counter()
    codes: Counter[int] = Counter()
    for request in requests:
        if not start <= request.received < end:
            continue
        node = daemon_node(request.user_agent)
        if node is None:
            continue
        by_key[request.key] += 1
        per_node[node] += 1
        if request.code is not None:
            codes[request.code] += 1
    return DaemonLoad(
        seconds=end - start,
        nodes=nodes,
        by_key=dict(by_key),
        per_node=dict(per_node),
        status_codes=dict(codes),
    )


def all_status_codes(requests: Iterable[ApiRequest], *, start: float, end: float) -> dict[int, int]:
    """Answers to every client in ``[start, end)`` by response code (429s of anyone show here)."""
    codes: Counter[int] = Counter(
        request.code
        for request in requests
        if start <= request.received < end and request.code is not None
    )
    return dict(codes)
