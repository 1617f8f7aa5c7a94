"""The daemon's own helpers (its wiring is covered end to end in tests/e2e)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dra_driver import __version__
from dra_driver.daemon import remembering, user_agent


def test_user_agent_names_program_version_and_node() -> None:
    """Every node's plugin shares one credential: the user agent tells them apart."""
    assert user_agent("node-a") == f"dcu-dra-kubelet-plugin/{__version__} (node node-a)"


class Remembers:
    def __init__(self) -> None:
        self.claims: list[Mapping[str, Any]] = []

    def remember(self, claim: Mapping[str, Any]) -> None:
        self.claims.append(claim)


def test_claims_the_prepare_reads_go_to_the_status_reporter() -> None:
    def get_claim(namespace: str, name: str) -> Mapping[str, Any]:
        return {"metadata": {"namespace": namespace, "name": name}}

    reporter = Remembers()
    get = remembering(get_claim, reporter)  # type: ignore[arg-type]
    assert get("ns", "c") == {"metadata": {"namespace": "ns", "name": "c"}}
    assert reporter.claims == [{"metadata": {"namespace": "ns", "name": "c"}}]
    # Without claim status the getter is the plain one.
    assert remembering(get_claim, None) is get_claim
