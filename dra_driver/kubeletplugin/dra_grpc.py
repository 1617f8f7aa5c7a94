"""The v1 and v1beta1 ``DRAPlugin`` gRPC services: protobuf in, ``DraService`` call, protobuf out.

Owns ``DraServicer`` (one per API version; v1beta1 has no ``Device.share_id``) and
``add_dra_services``, and turning ``AbortCallError`` or an unexpected exception into a gRPC
status. Must not decide anything about claims: every call goes to the version-neutral
``DraService`` (``servicer``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any

import grpc

from dra_driver.errors import DriverError
from dra_driver.kubeletplugin._pb import (
    dra_v1_pb2,
    dra_v1_pb2_grpc,
    dra_v1beta1_pb2,
    dra_v1beta1_pb2_grpc,
)
from dra_driver.kubeletplugin.calllog import CallLogger
from dra_driver.kubeletplugin.outcomes import AbortCallError, RequestedClaim

if TYPE_CHECKING:
    # Only for annotations: servicer re-exports add_dra_services, so a runtime import would
    # be circular.
    from dra_driver.kubeletplugin.servicer import DraService

logger = logging.getLogger(__name__)
log = CallLogger(logger)


class DraServicer:
    """``NodePrepareResources``/``NodeUnprepareResources`` of one API version.

    ``has_share_id``: v1 carries ``Device.share_id``; v1beta1 has no such field, and the Go
    helper's v1beta1 wrapper drops it, so we do too.
    """

    def __init__(
        self, service: DraService, *, pb2: ModuleType, has_share_id: bool, version: str = ""
    ) -> None:
        self.service = service
        self.pb2 = pb2
        self.has_share_id = has_share_id
        self.version = version
        self._called = False

    def NodePrepareResources(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        """Prepare the requested claims."""
        self._first_call("NodePrepareResources")
        return _answer(context, lambda: self._prepare(request, context))

    def NodeUnprepareResources(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        """Unprepare the requested claims."""
        self._first_call("NodeUnprepareResources")
        return _answer(context, lambda: self._unprepare(request, context))

    def _first_call(self, method: str) -> None:
        """Log once which DRA API version the kubelet speaks (it picks one at registration)."""
        if not self._called:
            self._called = True
            logger.info("the kubelet's first DRA %s call: %s", self.version, method)

    def _prepare(self, request: Any, context: grpc.ServicerContext) -> Any:
        outcomes = self.service.prepare(_requested(request), timeout_s=context.time_remaining())
        pb2 = self.pb2
        claims = {}
        for uid, outcome in outcomes.items():
            if isinstance(outcome, DriverError):
                claims[uid] = pb2.NodePrepareResourceResponse(error=str(outcome))
                continue
            devices = []
            for device in outcome.devices:
                fields: dict[str, Any] = {
                    # Base names only, as the Go helper sends them.
                    "request_names": [name.split("/", 1)[0] for name in device.requests],
                    "pool_name": device.pool,
                    "device_name": device.device,
                    "cdi_device_ids": list(device.cdi_ids),
                }
                if self.has_share_id and device.share_id is not None:
                    fields["share_id"] = device.share_id
                devices.append(pb2.Device(**fields))
            claims[uid] = pb2.NodePrepareResourceResponse(devices=devices)
        return pb2.NodePrepareResourcesResponse(claims=claims)

    def _unprepare(self, request: Any, context: grpc.ServicerContext) -> Any:
        outcomes = self.service.unprepare(_requested(request), timeout_s=context.time_remaining())
        pb2 = self.pb2
        return pb2.NodeUnprepareResourcesResponse(
            claims={
                uid: pb2.NodeUnprepareResourceResponse(error="" if error is None else str(error))
                for uid, error in outcomes.items()
            }
        )


def _requested(request: Any) -> list[RequestedClaim]:
    return [
        RequestedClaim(namespace=claim.namespace, name=claim.name, uid=claim.uid)
        for claim in request.claims
    ]


def _answer(context: grpc.ServicerContext, build: Callable[[], Any]) -> Any:
    """Run ``build``; turn our aborts and any unexpected exception into a gRPC status."""
    try:
        return build()
    except AbortCallError as exc:
        code, message = exc.code, exc.message
    except Exception as exc:
        log.exception("unexpected error")
        code, message = grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}"
    # Outside the except blocks: abort() raises to end the call.
    context.abort(code, message)


def add_dra_services(server: grpc.Server, service: DraService) -> None:
    """Serve ``service`` as v1 and v1beta1 ``DRAPlugin`` on ``server``."""
    dra_v1_pb2_grpc.add_DRAPluginServicer_to_server(
        DraServicer(service, pb2=dra_v1_pb2, has_share_id=True, version="v1"), server
    )
    dra_v1beta1_pb2_grpc.add_DRAPluginServicer_to_server(
        DraServicer(service, pb2=dra_v1beta1_pb2, has_share_id=False, version="v1beta1"), server
    )
