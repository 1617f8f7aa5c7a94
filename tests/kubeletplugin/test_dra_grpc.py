from __future__ import annotations

import logging
from typing import Any

import pytest

from dra_driver.kubeletplugin._pb import dra_v1_pb2
from dra_driver.kubeletplugin.dra_grpc import DraServicer


class NoClaims:
    """A DraService with nothing to do."""

    def prepare(self, claims: Any, *, timeout_s: float | None) -> dict[str, Any]:
        return {}

    def unprepare(self, claims: Any, *, timeout_s: float | None) -> dict[str, Any]:
        return {}


class Context:
    def time_remaining(self) -> float:
        return 10.0


def test_the_first_call_of_a_version_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    servicer = DraServicer(NoClaims(), pb2=dra_v1_pb2, has_share_id=True, version="v1")  # type: ignore[arg-type]
    with caplog.at_level(logging.INFO, logger="dra_driver.kubeletplugin.dra_grpc"):
        servicer.NodePrepareResources(dra_v1_pb2.NodePrepareResourcesRequest(), Context())
        servicer.NodeUnprepareResources(dra_v1_pb2.NodeUnprepareResourcesRequest(), Context())
    lines = [r.getMessage() for r in caplog.records if "first DRA" in r.getMessage()]
    assert lines == ["the kubelet's first DRA v1 call: NodePrepareResources"]
