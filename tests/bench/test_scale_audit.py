"""Reading kube-apiserver's audit log into requests per node's daemon."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bench.scale_audit import (
    ApiRequest,
    AuditLogError,
    all_status_codes,
    daemon_load,
    daemon_node,
    parse_requests,
)
from dra_driver.daemon import user_agent


def event(
    audit_id: str,
    *,
    stage: str = "ResponseComplete",
    verb: str = "get",
    resource: str | None = "resourceclaims",
    subresource: str | None = None,
    agent: str = "dcu-dra-kubelet-plugin/0.1.0 (node n1)",
    at: str = "2026-12-07T21:00:00.000000Z",
    code: int | None = 200,
) -> str:
    obj: dict[str, Any] = {
        "kind": "Event",
        "level": "Metadata",
        "auditID": audit_id,
        "stage": stage,
        "requestURI": "/apis/resource.k8s.io/v1/resourceslices?watch=true",
        "verb": verb,
        "userAgent": agent,
        "requestReceivedTimestamp": at,
    }
    if resource is not None:
        obj["objectRef"] = {"resource": resource}
        if subresource:
            obj["objectRef"]["subresource"] = subresource
    if code is not None:
        obj["responseStatus"] = {"metadata": {}, "code": code}
    return json.dumps(obj)


def test_daemon_node_reads_back_the_daemons_user_agent() -> None:
    assert daemon_node(user_agent("scale-000")) == "scale-000"
    assert daemon_node("fakekubelet") is None
    assert daemon_node("kube-scheduler/v1.36.3 (linux/amd64) kubernetes/abc/scheduler") is None


def test_a_watch_is_one_request_timed_when_it_opened() -> None:
    lines = [
        event("w", stage="ResponseStarted", verb="watch", resource="resourceslices"),
        event("g", subresource="status", verb="update", at="2026-12-07T21:00:05.5Z", code=409),
        "",
        event(
            "w",
            stage="ResponseComplete",
            verb="watch",
            resource="resourceslices",
            at="2026-12-07T21:00:00.000000Z",
        ),
    ]
    requests = parse_requests(lines)
    assert [(r.verb, r.resource, r.code) for r in requests] == [
        ("watch", "resourceslices", 200),
        ("update", "resourceclaims/status", 409),
    ]
    assert requests[1].received - requests[0].received == pytest.approx(5.5)


def test_a_request_without_object_is_named_by_its_path() -> None:
    (request,) = parse_requests([event("h", resource=None, verb="get")])
    assert request.resource == "/apis/resource.k8s.io/v1/resourceslices"


def test_a_line_that_is_no_audit_event_is_named() -> None:
    with pytest.raises(AuditLogError, match="line 2 is not a kube-apiserver audit event"):
        parse_requests([event("a"), '{"hello": 1}'])


def request(
    at: float, *, node: str | None = "n1", verb: str = "get", code: int = 200
) -> ApiRequest:
    agent = user_agent(node) if node else "kube-scheduler/v1.36.3"
    return ApiRequest(at, agent, verb, "resourceclaims", code)


def test_daemon_load_counts_only_daemons_in_the_window_per_node_and_minute() -> None:
    requests = [
        request(0.0),
        request(10.0, node="n2", verb="watch"),
        request(59.9, node="n2", code=429),
        request(60.0),  # the window is half-open
        request(30.0, node=None),  # not a daemon
    ]
    load = daemon_load(requests, start=0.0, end=60.0, nodes=4)
    assert load.total == 3
    assert load.by_key == {"get resourceclaims": 2, "watch resourceclaims": 1}
    assert load.per_node == {"n1": 1, "n2": 2}
    assert load.status_codes == {200: 2, 429: 1}
    assert load.rates() == {"get resourceclaims": 0.5, "watch resourceclaims": 0.25}
    assert load.rate_without_watches() == 0.5
    assert all_status_codes(requests, start=0.0, end=60.0) == {200: 3, 429: 1}


def test_an_empty_window_has_no_rate_and_a_reversed_one_is_refused() -> None:
    assert daemon_load([], start=5.0, end=5.0, nodes=3).rates() == {}
    assert daemon_load([], start=5.0, end=5.0, nodes=3).per_node_minute(10) == 0.0
    with pytest.raises(ValueError, match="ends"):
        daemon_load([], start=5.0, end=4.0, nodes=1)
