"""API error statuses map to the most specific exception, with the server's message."""

from __future__ import annotations

import json

import pytest

from dra_driver.cluster.kube.errors import (
    AlreadyExists,
    ApiError,
    BadRequest,
    Conflict,
    ConnectionFailed,
    Forbidden,
    Gone,
    Invalid,
    KubeError,
    NotFound,
    ServerError,
    Unauthorized,
    api_error,
    is_unreachable,
)


def status_body(code: int, reason: str, message: str) -> bytes:
    return json.dumps(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        }
    ).encode()


@pytest.mark.parametrize(
    ("status", "reason", "expected"),
    [
        (400, "BadRequest", BadRequest),
        (401, "Unauthorized", Unauthorized),
        (403, "Forbidden", Forbidden),
        (404, "NotFound", NotFound),
        (409, "Conflict", Conflict),
        (409, "AlreadyExists", AlreadyExists),
        (410, "Expired", Gone),
        (422, "Invalid", Invalid),
        (500, "InternalError", ServerError),
        (503, "ServiceUnavailable", ServerError),
        (429, "TooManyRequests", ApiError),
    ],
    ids=lambda value: str(value) if not isinstance(value, type) else value.__name__,
)
def test_status_maps_to_exception_class(status: int, reason: str, expected: type[ApiError]) -> None:
    error = api_error(status, status_body(status, reason, "boom"), method="GET", path="/x")

    assert type(error) is expected
    assert (error.status, error.reason, error.message) == (status, reason, "boom")


def test_already_exists_is_a_conflict() -> None:
    assert isinstance(api_error(409, status_body(409, "AlreadyExists", "")), Conflict)


def test_str_names_method_path_and_server_message() -> None:
    error = api_error(
        404,
        status_body(404, "NotFound", 'pods "p" not found'),
        method="GET",
        path="/api/v1/namespaces/ns/pods/p",
    )

    assert str(error) == 'GET /api/v1/namespaces/ns/pods/p: 404 NotFound: pods "p" not found'


def test_non_json_body_becomes_the_message() -> None:
    error = api_error(502, b"bad gateway\n", method="PUT", path="/x")

    assert str(error) == "PUT /x: 502 HTTP502: bad gateway"


def test_long_messages_are_cut() -> None:
    error = api_error(422, status_body(422, "Invalid", "x" * 5000))

    assert len(error.message) == 1024


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (ConnectionFailed("GET", "/api", "ConnectionRefusedError: refused"), True),
        (ServerError(503, "ServiceUnavailable", "etcd is down"), True),
        (ServerError(500, "InternalError", "oops"), True),
        (Forbidden(403, "Forbidden", "RBAC"), False),
        (Conflict(409, "Conflict", "stale"), False),
        (ApiError(429, "TooManyRequests", "slow down"), False),
        (KubeError("GET /api: answer is not JSON"), False),
    ],
    ids=["refused", "503", "500", "403", "409", "429", "not-json"],
)
def test_unreachable_means_no_answer_or_a_5xx(error: KubeError, expected: bool) -> None:
    assert is_unreachable(error) is expected
