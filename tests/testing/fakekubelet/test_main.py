"""The fake kubelet's command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from dra_driver.testing.fakekubelet.__main__ import parse_args


def test_required_flags_and_defaults() -> None:
    args = parse_args(["--kubeconfig", "k", "--node-name", "n", "--registry-dir", "r"])

    assert (args.kubeconfig, args.node_name, args.registry_dir) == (Path("k"), "n", Path("r"))
    assert (args.call_timeout_s, args.retry_interval_s, args.wiping_delay_s) == (45.0, 5.0, 30.0)
    assert (args.plugins_dir, args.state_file) == (None, None)


def test_missing_node_name_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_args(["--kubeconfig", "k", "--registry-dir", "r"])

    assert exited.value.code == 2
    assert "the following arguments are required: --node-name" in capsys.readouterr().err
