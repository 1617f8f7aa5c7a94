"""Shared fixtures: mock DCU nodes built by the real mock library."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dra_driver.cdi.validate import BUNDLED_SCHEMA_DIR
from dra_driver.node.mock import DEFAULT_CONFIG, MockConfig, create_mock_node, parse_config
from dra_driver.testing.cluster import CONTROLPLANE_BINARY, ControlPlane, ControlPlaneError

REPO_ROOT = Path(__file__).resolve().parents[1]
#: The official CDI schema, as the package ships it (dra_driver/cdi/schema).
CDI_SCHEMA_DIR = BUNDLED_SCHEMA_DIR


@pytest.fixture
def mock_root(tmp_path: Path) -> Path:
    """A default mock node (2x Z100, 1x K100_AI) under a temp dir."""
    root = tmp_path / "node"
    create_mock_node(root, DEFAULT_CONFIG)
    return root


MockNodeFactory = Callable[[list[dict[str, object]]], Path]


@pytest.fixture
def make_mock_node(tmp_path: Path) -> MockNodeFactory:
    """Build a mock node from a list of device entries in mock-config form."""
    counter = iter(range(1000))

    def make(devices: list[dict[str, object]]) -> Path:
        config: MockConfig = parse_config({"devices": devices})
        root = tmp_path / f"node{next(counter)}"
        create_mock_node(root, config)
        return root

    return make


@pytest.fixture
def short_sock_dir() -> Iterator[Path]:
    """A short temporary directory under /tmp, so socket paths fit in AF_UNIX's 108 bytes."""
    directory = Path(tempfile.mkdtemp(prefix="dcu-", dir="/tmp"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def audited_plane(short_sock_dir: Path) -> Iterator[ControlPlane]:
    """A control plane of its own whose API server writes an audit log (the session's has none).

    For tests that count requests where they arrive (``bench.scale_audit`` reads the log).
    """
    if not CONTROLPLANE_BINARY.exists():
        pytest.fail(f"{CONTROLPLANE_BINARY} does not exist: run `make controlplane`", pytrace=False)
    plane = ControlPlane(data_dir=short_sock_dir / "cp", audit_log=short_sock_dir / "audit.log")
    plane.start()
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """The local control plane (build/bin/controlplane), one per test session.

    Fails (never skips) when the binary is missing: run ``make controlplane``.
    """
    if not CONTROLPLANE_BINARY.exists():
        pytest.fail(
            f"{CONTROLPLANE_BINARY} does not exist: run `make controlplane` to build the local "
            "control plane the e2e tests need",
            pytrace=False,
        )
    plane = ControlPlane(binary=CONTROLPLANE_BINARY, data_dir=tmp_path_factory.mktemp("cp"))
    try:
        plane.start()
    except ControlPlaneError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield plane
    finally:
        plane.stop()
