"""KubeClient behaviour that needs no API server (the rest is in test_client_e2e.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any, cast

import pytest

from dra_driver.cluster.kube import Gone, KubeClient, KubeConfig, WatchStream


def test_importing_the_client_does_not_import_the_kubernetes_package() -> None:
    """The node daemon must start fast: the typed ``kubernetes`` client costs ~1.6 s."""
    code = "import sys, dra_driver.cluster.kube; print('kubernetes' in sys.modules)"

    result = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    )

    assert result.stdout.strip() == "False"


def test_paths_must_be_absolute() -> None:
    with KubeClient(KubeConfig(server="http://127.0.0.1:1")) as client:
        with pytest.raises(ValueError, match=r"^path must start with '/': 'api/v1'$"):
            client.get("api/v1")


class Lines:
    """Stands in for a streaming urllib3 response: yields prepared lines."""

    def __init__(self, *lines: bytes) -> None:
        self.lines = lines
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.lines)

    def shutdown(self) -> None:
        self.closed = True

    def close(self) -> None:
        self.closed = True

    def release_conn(self) -> None:
        pass


def event(event_type: str, obj: dict[str, Any]) -> bytes:
    return json.dumps({"type": event_type, "object": obj}).encode() + b"\n"


def test_watch_stream_yields_events_and_skips_blank_lines() -> None:
    response = Lines(
        event("ADDED", {"metadata": {"name": "a"}}),
        b"\n",
        event("BOOKMARK", {"metadata": {"resourceVersion": "7"}}),
    )

    events = list(WatchStream(cast(Any, response), method="WATCH", path="/p"))

    assert [event_type for event_type, _ in events] == ["ADDED", "BOOKMARK"]
    assert response.closed


def test_watch_error_event_is_raised_as_the_matching_api_error() -> None:
    status = {
        "kind": "Status",
        "status": "Failure",
        "reason": "Expired",
        "code": 410,
        "message": "too old resource version: 1 (42)",
    }
    stream = WatchStream(cast(Any, Lines(event("ERROR", status))), method="WATCH", path="/p")

    with pytest.raises(Gone, match=r"^WATCH /p: 410 Expired: too old resource version: 1 \(42\)$"):
        next(stream)
