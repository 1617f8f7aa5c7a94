"""Fixtures of the e2e tests: namespaces, fake kubelets and stub DRA plugins.

``control_plane`` (session-scoped, tests/conftest.py) runs the real control plane once.

- ``kube``: its admin :class:`KubeClient`.
- ``namespace``: a fresh namespace (default ServiceAccount ready), deleted afterwards.
- ``fake_kubelet(node_name=None, *, dirs_of=None, **options)``: start a :class:`FakeKubelet`
  for a new node with its own short registry/plugins dirs (or those of ``dirs_of``, to model a
  kubelet restart); stopped, and its Node and slices deleted, afterwards.
- ``stub_plugin(kubelet, driver=..., **options)``: start a :class:`StubDraPlugin` registered
  with that kubelet; stopped afterwards.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dra_driver.kube import KubeClient, KubeError, NotFound, paths
from dra_driver.testing.cluster import (
    ControlPlane,
    create_namespace,
    delete_namespace,
    unique_name,
)
from dra_driver.testing.fakekubelet import FakeKubelet
from tests.e2e.stubplugin import StubDraPlugin

#: Tests use a short retry interval: a retried prepare should not cost 5 s.
TEST_RETRY_INTERVAL_S = 0.5


@pytest.fixture
def kube(control_plane: ControlPlane) -> KubeClient:
    return control_plane.client


@pytest.fixture
def namespace(kube: KubeClient) -> Iterator[str]:
    name = unique_name("e2e")
    create_namespace(kube, name)
    try:
        yield name
    finally:
        delete_namespace(kube, name)


class FakeKubeletFactory:
    """Starts fake kubelets, each with its own directories under one short temp dir."""

    def __init__(self, client: KubeClient, root: Path) -> None:
        self.client = client
        self.root = root
        self.kubelets: list[FakeKubelet] = []

    def __call__(
        self,
        node_name: str | None = None,
        *,
        dirs_of: FakeKubelet | None = None,
        **options: Any,
    ) -> FakeKubelet:
        """Start a kubelet; ``dirs_of`` reuses another's directories (a kubelet restart)."""
        base = self.root / f"n{len(self.kubelets)}"
        options.setdefault("retry_interval_s", TEST_RETRY_INTERVAL_S)
        kubelet = FakeKubelet(
            client=self.client,
            node_name=node_name or unique_name("node"),
            registry_dir=dirs_of.registry_dir if dirs_of else base / "registry",
            plugins_dir=dirs_of.plugins_dir if dirs_of else base / "plugins",
            **options,
        )
        self.kubelets.append(kubelet)
        return kubelet.start()

    def close(self) -> None:
        for kubelet in reversed(self.kubelets):
            kubelet.stop()
            name = kubelet.node_name
            try:
                self.client.delete_collection(
                    paths.resource_slices(), field_selector=f"spec.nodeName={name}"
                )
                self.client.delete(paths.nodes(name))
            except NotFound:
                pass
            except KubeError as exc:  # cleanup must not hide the test's own result
                print(f"cleanup of node {name} failed: {exc}")


@pytest.fixture
def fake_kubelet(kube: KubeClient) -> Iterator[FakeKubeletFactory]:
    root = Path(tempfile.mkdtemp(prefix="fk-", dir="/tmp"))
    factory = FakeKubeletFactory(kube, root)
    try:
        yield factory
    finally:
        factory.close()
        shutil.rmtree(root, ignore_errors=True)


StubPluginFactory = Callable[..., StubDraPlugin]


@pytest.fixture
def stub_plugin(kube: KubeClient, fake_kubelet: FakeKubeletFactory) -> Iterator[StubPluginFactory]:
    """Depends on ``fake_kubelet`` so plugins stop before their kubelets."""
    plugins: list[StubDraPlugin] = []

    def start(kubelet: FakeKubelet, *, driver: str, **options: Any) -> StubDraPlugin:
        assert kubelet.plugins_dir is not None
        plugin = StubDraPlugin(
            client=kube,
            driver=driver,
            registry_dir=kubelet.registry_dir,
            plugins_dir=kubelet.plugins_dir,
            **options,
        )
        plugins.append(plugin)
        return plugin.start()

    try:
        yield start
    finally:
        for plugin in reversed(plugins):
            plugin.stop()


@pytest.fixture
def driver_name(kube: KubeClient) -> Iterator[str]:
    """A driver name unique to the test, so devices of other tests never match its classes.

    A DeviceClass named like the driver is deleted afterwards.
    """
    name = f"{unique_name('t')}.test.example.com"
    yield name
    try:
        kube.delete(paths.device_classes(name))
    except NotFound:
        pass
