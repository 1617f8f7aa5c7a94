"""The daemon's own helpers (its wiring is covered end to end in tests/e2e)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dra_driver import __version__
from dra_driver.daemon import remembering, sweep_on_reregistration, user_agent


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


class RecordingCleaner:
    def __init__(self) -> None:
        self.sweeps = 0

    def sweep_soon(self) -> None:
        self.sweeps += 1


def test_orphans_are_swept_when_the_kubelet_registers_again_not_at_first() -> None:
    cleaner = RecordingCleaner()
    on_registered = sweep_on_reregistration(cleaner)  # type: ignore[arg-type]
    on_registered()  # the registration after start: the cleaner's first round covers it
    assert cleaner.sweeps == 0
    on_registered()
    on_registered()
    assert cleaner.sweeps == 2
