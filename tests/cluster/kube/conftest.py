"""Fixtures of the API client's tests against the real control plane."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dra_driver.testing.cluster import (
    ControlPlane,
    create_namespace,
    delete_namespace,
    unique_name,
)


@pytest.fixture(scope="module")
def ns(control_plane: ControlPlane, request: pytest.FixtureRequest) -> Iterator[str]:
    """A namespace for one test module, named after it (``kube-client-…``, ``kube-reader-…``)."""
    module = request.module.__name__.rsplit(".", 1)[-1]
    prefix = module.removeprefix("test_").removesuffix("_e2e").replace("_", "-")
    name = unique_name(f"kube-{prefix}")
    create_namespace(control_plane.client, name)
    try:
        yield name
    finally:
        delete_namespace(control_plane.client, name)
