"""Tests of dra_driver.config: what ``PluginConfig.validate`` refuses, and how it says so."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dra_driver.config import ConfigError, PluginConfig


@pytest.mark.parametrize(
    ("field", "flag"),
    [
        ("root", "--root"),
        ("registrar_dir", "--registrar-dir"),
        ("plugin_data_dir", "--plugin-data-dir"),
        ("cdi_dir", "--cdi-dir"),
    ],
    ids=["root", "registrar-dir", "plugin-data-dir", "cdi-dir"],
)
def test_a_relative_path_is_refused_with_what_to_do(field: str, flag: str) -> None:
    """Regression: the message said only "must be an absolute path". These paths reach CDI
    specs, the kubelet or the container runtime, which would resolve a relative path against
    their own working directory; the CLI resolves them, code that builds a config must too."""
    config = PluginConfig(node_name="n", **{field: Path("rel/dir")})  # type: ignore[arg-type]
    with pytest.raises(
        ConfigError,
        match=rf"^{re.escape(flag)} rel/dir is a relative path: give an absolute one \(the "
        r"kubelet and the container runtime would resolve it against their own working "
        r"directory; the command line resolves it against dcu-dra's\)$",
    ):
        config.validate()


def test_absolute_paths_are_accepted(tmp_path: Path) -> None:
    PluginConfig(
        node_name="n",
        root=tmp_path,
        registrar_dir=tmp_path / "registry",
        plugin_data_dir=tmp_path / "data",
        cdi_dir=tmp_path / "cdi",
    ).validate()
