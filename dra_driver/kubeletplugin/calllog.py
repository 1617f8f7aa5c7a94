"""Which DRA call a log line belongs to: request ids and the ``[call 7 Prepare]`` prefix.

Owns the per-call context: ``CallContextInterceptor`` numbers every unary call and keeps the id
and method in a context variable for the call's thread, ``CallLogger`` prefixes log lines with
it, and requests that do not decode are refused with one log line. Must not look inside
requests beyond logging them, nor answer them: the servicers do that.
"""

from __future__ import annotations

import contextvars
import itertools
import logging
from collections.abc import Callable, MutableMapping
from typing import Any

import grpc
from google.protobuf.message import DecodeError

#: ``<id> <method>`` of the gRPC call this thread is serving, for log lines.
_CALL: contextvars.ContextVar[str] = contextvars.ContextVar("dra_call", default="")


class CallLogger(logging.LoggerAdapter[logging.Logger]):
    """Prefixes messages with the current call's request id and method (``[call 7 Prepare]``)."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        """Add the prefix and the ``request`` extra."""
        call = _CALL.get()
        if not call:
            return msg, kwargs
        kwargs.setdefault("extra", {})["request"] = call
        return f"[call {call}] {msg}", kwargs


log = CallLogger(logging.getLogger(__name__))


# grpc ships no type information, so its base class is Any to mypy.
class CallContextInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """Gives every unary call an increasing request id, visible in every log line it causes.

    The handler is wrapped (rather than setting the context variable here) because gRPC runs
    interceptors on its polling thread and the handler on a worker thread. Its request
    deserializer is wrapped too: a message that does not decode is refused with one log line
    (gRPC would log a traceback per message) and gRPC's own INTERNAL "Exception deserializing
    request!".
    """

    def __init__(self) -> None:
        # next() of an itertools.count is one C call under the GIL: atomic without a lock.
        self._ids = itertools.count(1)
        # The wrapped handler of each method, built at its first call: the registered
        # handlers never change while serving, and building one per call (closures, a new
        # RpcMethodHandler) was work on every call's path.
        self._wrapped: dict[str, grpc.RpcMethodHandler | None] = {}

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        """Wrap unary-unary handlers; leave anything else alone."""
        full_method = str(handler_call_details.method)
        try:
            return self._wrapped[full_method]
        except KeyError:
            pass
        handler = continuation(handler_call_details)
        if handler is None:
            return None  # an unknown method: not cached, gRPC answers UNIMPLEMENTED
        wrapped = handler if handler.unary_unary is None else self._wrap(full_method, handler)
        # Two threads may build the same entry at once; either result is equivalent.
        self._wrapped[full_method] = wrapped
        return wrapped

    def _wrap(self, full_method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """The handler with the call context set around it."""
        method = full_method.rsplit("/", 1)[-1]
        inner = handler.unary_unary
        ids = self._ids

        def with_call_context(request: Any, context: grpc.ServicerContext) -> Any:
            token = _CALL.set(f"{next(ids)} {method}")
            try:
                log.debug("request: %s", request)
                response = inner(request, context)
                log.debug("response: %s", response)
                return response
            finally:
                _CALL.reset(token)

        return grpc.unary_unary_rpc_method_handler(
            with_call_context,
            request_deserializer=_refusing_undecodable(method, handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )


def _refusing_undecodable(
    method: str, deserialize: Callable[[bytes], Any] | None
) -> Callable[[bytes], Any] | None:
    """``deserialize``, answering None (gRPC then refuses the call) for undecodable bytes."""
    if deserialize is None:
        return None

    def decode(data: bytes) -> Any:
        try:
            return deserialize(data)
        except DecodeError as exc:
            log.error("refused an undecodable %s request (%d bytes): %s", method, len(data), exc)
            return None

    return decode
