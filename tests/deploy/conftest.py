"""Fixtures of the deploy/ tests: the pinned helm binary that ``make helm`` builds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
#: Where ``make helm`` installs the pinned helm; ``DCU_DRA_HELM`` points elsewhere.
DEFAULT_HELM = REPO_ROOT / "build" / "bin" / "helm"
ENV_HELM = "DCU_DRA_HELM"


@pytest.fixture(scope="session")
def helm_binary() -> Path:
    """The helm binary (``$DCU_DRA_HELM``, else build/bin/helm); fails, never skips, without it."""
    override = os.environ.get(ENV_HELM)
    path = Path(override) if override else DEFAULT_HELM
    if not (path.is_file() and os.access(path, os.X_OK)):
        where = f"{ENV_HELM}={override}" if override else str(path)
        pytest.fail(
            f"no helm executable at {where}: run `make helm` to build the pinned helm the chart "
            f"tests need (or point {ENV_HELM} at one)",
            pytrace=False,
        )
    return path
