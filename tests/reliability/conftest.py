"""Fixtures of the reliability tests: the e2e ones (real control plane, real daemon), reused.

Importing a fixture here makes it visible to every test in this directory.
"""

from __future__ import annotations

from tests.e2e.conftest import (  # noqa: F401  (fixtures)
    daemon_node,
    device_classes,
    fake_kubelet,
    kube,
    namespace,
)
