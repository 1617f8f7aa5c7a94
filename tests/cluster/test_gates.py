from __future__ import annotations

import pytest

from dra_driver.cluster.gates import (
    CONSUMABLE_CAPACITY,
    DEVICE_TAINTS,
    dropped_message,
    gate_stage,
    server_minor,
)


@pytest.mark.parametrize(
    ("git_version", "minor"),
    [("v1.35.4", 35), ("v1.37.2-gke.100", 37), ("1.34", 34), ("", None), ("v2.0.0", None)],
)
def test_server_minor(git_version: str, minor: int | None) -> None:
    assert server_minor(git_version) == minor


def test_the_stage_of_a_gate_depends_on_the_version() -> None:
    assert gate_stage(CONSUMABLE_CAPACITY, 34) == "alpha and off by default in 1.34"
    assert gate_stage(CONSUMABLE_CAPACITY, 35) == "alpha and off by default in 1.35"
    assert gate_stage(CONSUMABLE_CAPACITY, 37) == "on by default in 1.37, so it was turned off"
    assert "from 1.36" in gate_stage(CONSUMABLE_CAPACITY, None)


def test_the_message_names_the_gate_the_version_and_where_to_turn_it_on() -> None:
    message = dropped_message(CONSUMABLE_CAPACITY, "node-a-dcu.hygon.com-x", "v1.35.4")
    assert message == (
        "the API server (Kubernetes v1.35.4) dropped allowMultipleAllocations/requestPolicy from "
        "ResourceSlice node-a-dcu.hygon.com-x: its DRAConsumableCapacity feature gate is off "
        "(alpha and off by default in 1.35), so DCUs cannot be shared. Turn it on with "
        "--feature-gates=DRAConsumableCapacity=true on kube-apiserver, kube-scheduler, "
        "kube-controller-manager and every kubelet, or run the plugin with --sharing=exclusive "
        "to publish whole DCUs only."
    )


def test_an_unknown_server_version_still_gives_the_gate_and_both_stages() -> None:
    message = dropped_message(DEVICE_TAINTS, "s", "")
    assert "(Kubernetes of unknown version)" in message
    assert "DRADeviceTaints feature gate is off (alpha and off by default before 1.36" in message
    assert message.endswith("on kube-apiserver and kube-scheduler.")
