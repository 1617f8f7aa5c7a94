"""The daemon's own helpers (its wiring is covered end to end in tests/e2e)."""

from __future__ import annotations

from dra_driver import __version__
from dra_driver.daemon import user_agent


def test_user_agent_names_program_version_and_node() -> None:
    """Every node's plugin shares one credential: the user agent tells them apart."""
    assert user_agent("node-a") == f"dcu-dra-kubelet-plugin/{__version__} (node node-a)"
