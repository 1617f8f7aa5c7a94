"""How the slice publisher logs failed syncs: once per kind of failure, never per retry.

The publisher's behaviour against an API server is tested against the real one
(tests/e2e/test_publisher.py, tests/reliability/test_outage.py); here a client that fails on
cue drives the sync loop with an injected sleep, so dozens of backoff steps take no time.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import pytest

from dra_driver import DRIVER_NAME
from dra_driver.cluster.kube import ConnectionFailed, Forbidden, KubeError, ServerError
from dra_driver.cluster.publisher import (
    BACKOFF_INITIAL_S,
    BACKOFF_JITTER,
    BACKOFF_MAX_S,
    EVENT_DEBOUNCE_S,
    SlicePublisher,
)
from dra_driver.cluster.slices import Sharing, build_pool
from dra_driver.node.devices import discover

NODE = "node-a"
REFUSED = ConnectionFailed("GET", "/apis/resource.k8s.io/v1/resourceslices", "refused")
UNAVAILABLE = ServerError(503, "ServiceUnavailable", "etcd is not reachable")
FORBIDDEN = Forbidden(403, "Forbidden", "resourceslices is forbidden")


class FlakyClient:
    """Lists fail with the queued errors, one per sync, then everything succeeds."""

    def __init__(self, errors: list[KubeError]) -> None:
        self.errors = list(errors)
        self.created: list[dict[str, Any]] = []

    def get(self, path: str) -> dict[str, Any]:
        return {"metadata": {"name": NODE, "uid": "node-uid"}}

    def list(self, path: str, **_selectors: Any) -> dict[str, Any]:
        if self.errors:
            raise self.errors.pop(0)
        return {"items": [], "metadata": {"resourceVersion": "1"}}

    def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        stored = copy.deepcopy(body)
        stored["metadata"]["name"] = stored["metadata"].pop("generateName") + "x"
        self.created.append(stored)
        return stored


def run_until_synced(mock_root: Path, errors: list[KubeError]) -> tuple[FlakyClient, list[float]]:
    """Run the sync loop until the first successful sync; return the client and the waits."""
    pool = build_pool(
        discover(mock_root), driver=DRIVER_NAME, node_name=NODE, sharing=Sharing.CONSUMABLE
    )
    client = FlakyClient(errors)
    waits: list[float] = []
    publisher: SlicePublisher

    def stop() -> None:
        publisher._stopping.set()

    publisher = SlicePublisher(client, pool, sleep=waits.append, on_synced=stop)  # type: ignore[arg-type]
    publisher._dirty.set()
    publisher._sync_loop()
    return client, waits


def messages(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level]


def test_an_outage_is_one_warning_and_one_recovery_line_whatever_the_retries(
    mock_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="dra_driver.cluster.publisher")
    client, waits = run_until_synced(mock_root, [REFUSED] * 12 + [UNAVAILABLE] * 3)

    assert len(client.created) == 1
    backoffs = [w for w in waits if w != EVENT_DEBOUNCE_S]
    assert len(backoffs) == 15
    # Jittered: each wait lies between half the backoff step and all of it, capped at 30 s.
    for step, waited in enumerate(backoffs):
        full = min(BACKOFF_INITIAL_S * 2**step, BACKOFF_MAX_S)
        assert BACKOFF_JITTER * full <= waited <= full
    (warning,) = messages(caplog, logging.WARNING)
    assert warning.startswith("cannot reach the API server to publish ResourceSlices (GET ")
    assert messages(caplog, logging.ERROR) == []
    recovered = [m for m in messages(caplog, logging.INFO) if "reachable again" in m]
    assert len(recovered) == 1
    assert recovered[0].endswith("; ResourceSlices are published")
    assert len([m for m in messages(caplog, logging.DEBUG) if "failed again" in m]) == 14


def test_a_new_kind_of_failure_is_logged_again(
    mock_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="dra_driver.cluster.publisher")
    run_until_synced(mock_root, [FORBIDDEN, FORBIDDEN, REFUSED, REFUSED, FORBIDDEN])

    errors = messages(caplog, logging.ERROR)
    assert len(errors) == 2
    assert all(e.startswith("publishing ResourceSlices failed: 403 Forbidden: ") for e in errors)
    assert len(messages(caplog, logging.WARNING)) == 1
    (recovered,) = [m for m in messages(caplog, logging.INFO) if "after" in m]
    assert recovered.startswith("ResourceSlices published after ")


def test_a_sync_that_never_failed_logs_no_recovery(
    mock_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="dra_driver.cluster.publisher")
    run_until_synced(mock_root, [])
    assert messages(caplog, logging.WARNING) == messages(caplog, logging.ERROR) == []
    assert not [m for m in messages(caplog, logging.INFO) if "after" in m]


class DroppingClient(FlakyClient):
    """An API server of ``version`` without DRAConsumableCapacity: it drops the sharing fields."""

    def __init__(self, version: str) -> None:
        super().__init__([])
        self.version = version

    def get(self, path: str) -> dict[str, Any]:
        if path == "/version":
            return {"gitVersion": self.version}
        return super().get(path)

    def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        stored = super().create(path, body)
        for device in stored["spec"]["devices"]:
            device.pop("allowMultipleAllocations", None)
            for capacity in (device.get("capacity") or {}).values():
                capacity.pop("requestPolicy", None)
        return stored


def test_dropped_sharing_fields_are_one_error_naming_the_gate_and_the_version(
    mock_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pool = build_pool(
        discover(mock_root), driver=DRIVER_NAME, node_name=NODE, sharing=Sharing.CONSUMABLE
    )
    client = DroppingClient("v1.34.4")
    publisher: SlicePublisher

    def stop() -> None:
        publisher._stopping.set()

    publisher = SlicePublisher(client, pool, sleep=lambda _s: None, on_synced=stop)  # type: ignore[arg-type]
    publisher._dirty.set()
    with caplog.at_level(logging.ERROR):
        publisher._sync_loop()
    (error,) = messages(caplog, logging.ERROR)
    assert error.startswith("the API server (Kubernetes v1.34.4) dropped allowMultipleAllocations")
    assert "DRAConsumableCapacity feature gate is off (alpha and off by default in 1.34)" in error
    assert publisher.consumable_capacity_dropped
