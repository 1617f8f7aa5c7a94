"""Errors of the Kubernetes REST client.

The client has its own hierarchy instead of leaking urllib3's exceptions or raw HTTP status
codes, so callers write ``except NotFound`` and messages always name the request and the server's
own explanation.

    KubeError
     ├── KubeConfigError        a kubeconfig or in-cluster environment we cannot use
     ├── ConnectionFailed       transport failure: refused, TLS, timeout, broken stream
     └── ApiError               the API server answered with an error status
          ├── BadRequest        400
          ├── Unauthorized      401
          ├── Forbidden         403
          ├── NotFound          404
          ├── Conflict          409 (a stale resourceVersion, failed precondition, ...)
          │    └── AlreadyExists   409 with reason AlreadyExists
          ├── Gone              410 (resourceVersion too old: relist)
          ├── Invalid           422
          └── ServerError       5xx
"""

from __future__ import annotations

import json
from typing import Any, TypedDict, cast

from dra_driver.errors import DriverError

#: Longest server message kept in an exception. Admission webhooks and validation errors can
#: return whole objects; a log line stays readable with the first few hundred characters.
MAX_MESSAGE_CHARS = 1024


class RawStatus(TypedDict, total=False):
    """The ``metav1.Status`` object the API server returns with an error."""

    kind: str
    apiVersion: str
    status: str
    message: str
    reason: str
    code: int
    details: dict[str, Any]


class KubeError(DriverError):
    """Base class of every error raised by :mod:`dra_driver.cluster.kube`."""


class KubeConfigError(KubeError):
    """A kubeconfig file or the in-cluster environment cannot be used."""


class AnswerTooDeepError(KubeError):
    """The API server's answer nests deeper than Python's JSON decoder follows.

    The API server stores opaque claim parameters nested ~5000 levels deep (10 KiB of ``[``);
    ``json.loads`` stops near 1000. Asking again gets the same answer: not worth a retry.
    """


class ConnectionFailed(KubeError):  # noqa: N818 - named after the API's reason
    """The request did not get an HTTP answer (connection, TLS, timeout or stream error)."""

    def __init__(self, method: str, path: str, cause: str) -> None:
        self.method = method
        self.path = path
        self.cause = cause
        super().__init__(method, path, cause)

    def __str__(self) -> str:
        return f"{self.method} {self.path}: connection failed: {self.cause}"


class ApiError(KubeError):
    """The API server answered with an error status."""

    def __init__(
        self,
        status: int,
        reason: str,
        message: str,
        *,
        method: str = "",
        path: str = "",
        details: dict[str, Any] | None = None,
    ) -> None:
        self.status = status
        self.reason = reason
        self.message = message
        self.method = method
        self.path = path
        self.details = details or {}
        super().__init__(status, reason, message)

    def __str__(self) -> str:
        where = f"{self.method} {self.path}: " if self.method else ""
        return f"{where}{self.status} {self.reason}: {self.message}"


class BadRequest(ApiError):  # noqa: N818 - named after the API's reason
    """400: the request itself is malformed."""


class Unauthorized(ApiError):  # noqa: N818 - named after the API's reason
    """401: no or invalid credentials."""


class Forbidden(ApiError):  # noqa: N818 - named after the API's reason
    """403: authenticated but not allowed (RBAC, admission, terminating namespace)."""


class NotFound(ApiError):  # noqa: N818 - named after the API's reason
    """404: the object or resource type does not exist."""


class Conflict(ApiError):  # noqa: N818 - named after the API's reason
    """409: stale resourceVersion, failed precondition or a concurrent change."""


class AlreadyExists(Conflict):
    """409 with reason ``AlreadyExists``: create of an existing name."""


class Gone(ApiError):  # noqa: N818 - named after the API's reason
    """410: the requested resourceVersion is too old; list again."""


class Invalid(ApiError):  # noqa: N818 - named after the API's reason
    """422: the object fails validation."""


class ServerError(ApiError):
    """5xx: the API server (or something behind it) failed."""


def is_unreachable(error: KubeError) -> bool:
    """Whether ``error`` means the API server is not there to answer, rather than a refusal.

    No HTTP answer at all, or a 5xx (an API server that is starting, stopping or cannot reach
    etcd): callers treat these as an outage, retry and log it once, not once per attempt.
    """
    return isinstance(error, ConnectionFailed) or (
        isinstance(error, ApiError) and error.status >= 500
    )


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    410: Gone,
    422: Invalid,
}


def _decode_status(body: bytes | str | dict[str, Any]) -> RawStatus:
    """Parse a Status object; anything else becomes a Status with the text as message."""
    if isinstance(body, dict):
        return cast(RawStatus, body)
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    try:
        decoded = json.loads(text)
    except ValueError:
        return RawStatus(message=text.strip())
    if not isinstance(decoded, dict):
        return RawStatus(message=text.strip())
    return cast(RawStatus, decoded)


def api_error(
    status: int, body: bytes | str | dict[str, Any], *, method: str = "", path: str = ""
) -> ApiError:
    """Build the most specific :class:`ApiError` for an HTTP status and a Status body.

    ``status`` is the HTTP status; for errors inside a watch stream (where the HTTP status is
    200) pass the Status object's ``code``.
    """
    raw = _decode_status(body)
    reason = str(raw.get("reason") or "")
    message = str(raw.get("message") or "")[:MAX_MESSAGE_CHARS]
    details = raw.get("details") or {}
    cls: type[ApiError]
    if status == 409 and reason == "AlreadyExists":
        cls = AlreadyExists
    elif status >= 500:
        cls = ServerError
    else:
        cls = _BY_STATUS.get(status, ApiError)
    return cls(
        status,
        reason or f"HTTP{status}",
        message,
        method=method,
        path=path,
        details=details,
    )
