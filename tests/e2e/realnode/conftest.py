"""The real-node suite as a whole leaves the host as it found it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.realnode.helpers import REASON


@pytest.fixture(scope="package", autouse=True)
def host_left_as_found() -> Iterator[None]:
    """Compare the host before the first real-node test and after the last one's teardown."""
    if REASON is not None:
        yield
        return
    from dra_driver.testing.realnode.hoststate import HostView

    before = HostView.now()
    yield
    assert before.differences(HostView.now()) == []
