"""dra_driver/testing/cluster.py: how ControlPlane talks to the binary about an outage.

A shell script plays the binary's side of the contract (tests/controlplane/README.md): READY on
stdout, then one answer line per SIGUSR1/SIGUSR2. The real binary is exercised by
tests/reliability/test_outage.py.
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from dra_driver.testing.cluster import ControlPlane, ControlPlaneError, parse_feature_gates

FAKE_BINARY = """\
#!/bin/bash
# ControlPlane runs: <binary> --data-dir DIR --kubeconfig FILE
cat > "$4" <<EOF
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "http://127.0.0.1:1"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
EOF
trap 'echo "%(stopped)s"' USR1
trap 'echo "%(ready)s"' USR2
trap 'exit 0' TERM
echo "READY kubeconfig=$4"
while true; do sleep 0.05; done
"""


def fake_plane(tmp_path: Path, *, stopped: str, ready: str) -> ControlPlane:
    binary = tmp_path / "controlplane"
    binary.write_text(FAKE_BINARY % {"stopped": stopped, "ready": ready})
    binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
    return ControlPlane(binary=binary, data_dir=tmp_path / "data")


def test_outage_signals_wait_for_the_binarys_answer(tmp_path: Path) -> None:
    plane = fake_plane(tmp_path, stopped="APISERVER STOPPED", ready="APISERVER READY").start()
    try:
        for _ in range(2):  # each call waits for an answer of its own, not an earlier one
            plane.stop_apiserver(timeout_s=10)
            plane.start_apiserver(timeout_s=10)
    finally:
        plane.stop()
    assert plane._lines[1:] == ["APISERVER STOPPED", "APISERVER READY"] * 2


def test_a_binary_that_does_not_answer_is_a_clear_error(tmp_path: Path) -> None:
    plane = fake_plane(tmp_path, stopped="something else", ready="APISERVER READY").start()
    try:
        with pytest.raises(
            ControlPlaneError,
            match=r"^control plane did not answer SIGUSR1 with 'APISERVER STOPPED' "
            r"\(no answer after 0\.3 s\); last log lines:",
        ):
            plane.stop_apiserver(timeout_s=0.3)
    finally:
        plane.stop()


def test_outage_signals_need_a_running_control_plane(tmp_path: Path) -> None:
    plane = ControlPlane(binary=tmp_path / "missing", data_dir=tmp_path)
    with pytest.raises(
        ControlPlaneError, match=r"^control plane not running; cannot send SIGUSR2$"
    ):
        plane.start_apiserver()


def test_feature_gates_are_read_from_the_first_line_and_comments_are_skipped() -> None:
    text = "A=true,B=false\n# C: unknown in this version\n"
    assert parse_feature_gates(text) == {"A": True, "B": False}
    assert parse_feature_gates("\n") == {}


def test_a_malformed_feature_gate_says_to_rebuild() -> None:
    with pytest.raises(ControlPlaneError, match=r"printed 'A=yes'.*make controlplane"):
        parse_feature_gates("A=yes")
