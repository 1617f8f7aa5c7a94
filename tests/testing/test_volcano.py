"""dra_driver.testing.volcano: what Volcano is given (no Volcano runs here; make volcano runs it).

The scheduler configuration and flags are what the README's "With Volcano" section tells
operators to set, so they are pinned here; a missing binary or CRD is one clear error.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dra_driver.testing.volcano import (
    CONTROLLER_MANAGER_BINARY,
    FEATURE_GATES,
    REQUIRED_CRDS,
    SCHEDULER_BINARY,
    SCHEDULER_CONF,
    VolcanoError,
    VolcanoInstall,
    best_effort,
    controller_manager_command,
    jobs_path,
    podgroups_path,
    queue,
    queues_path,
    scheduler_command,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


def fake_install(root: Path) -> tuple[Path, Path]:
    bin_dir, crd_dir = root / "bin", root / "crd"
    bin_dir.mkdir()
    crd_dir.mkdir()
    for name in (SCHEDULER_BINARY, CONTROLLER_MANAGER_BINARY):
        (bin_dir / name).write_text("")
    for name in REQUIRED_CRDS:
        (crd_dir / name).write_text("")
    return bin_dir, crd_dir


def test_install_is_found_with_both_binaries_and_the_crds(tmp_path: Path) -> None:
    bin_dir, crd_dir = fake_install(tmp_path)
    (crd_dir / "extra.yaml").write_text("")
    install = VolcanoInstall.from_dirs(bin_dir, crd_dir)
    assert install.scheduler == bin_dir / SCHEDULER_BINARY
    assert [path.name for path in install.crd_files()] == sorted([*REQUIRED_CRDS, "extra.yaml"])


def test_missing_parts_are_named_in_one_error(tmp_path: Path) -> None:
    bin_dir, crd_dir = fake_install(tmp_path)
    (bin_dir / SCHEDULER_BINARY).unlink()
    (crd_dir / REQUIRED_CRDS[0]).unlink()
    with pytest.raises(VolcanoError) as caught:
        VolcanoInstall.from_dirs(bin_dir, crd_dir)
    message = str(caught.value)
    assert message.startswith(
        f"Volcano is not there: missing {bin_dir / SCHEDULER_BINARY}, {crd_dir / REQUIRED_CRDS[0]}."
    )
    assert "VOLCANO_BIN" in message
    assert "VOLCANO_CRDS" in message


def test_scheduler_config_turns_on_gang_and_dra_predicates() -> None:
    conf = yaml.safe_load(SCHEDULER_CONF)
    first, second = conf["tiers"]
    assert "gang" in [plugin["name"] for plugin in first["plugins"]]
    [predicates] = [plugin for plugin in second["plugins"] if plugin["name"] == "predicates"]
    assert predicates["arguments"] == {"predicate.DynamicResourceAllocationEnable": True}
    assert conf["actions"] == "enqueue, allocate, backfill"


def test_scheduler_runs_with_the_dra_gates_and_its_config(tmp_path: Path) -> None:
    install = VolcanoInstall.from_dirs(*fake_install(tmp_path))
    command = scheduler_command(install, tmp_path / "kubeconfig", tmp_path / "conf")
    assert command[0] == str(install.scheduler)
    assert f"--feature-gates={FEATURE_GATES}" in command
    assert set(FEATURE_GATES.split(",")) == {
        "DynamicResourceAllocation=true",
        "DRAConsumableCapacity=true",
    }
    assert f"--scheduler-conf={tmp_path / 'conf'}" in command
    assert "--leader-elect=false" in command
    manager = controller_manager_command(install, tmp_path / "kubeconfig")
    assert manager[:2] == [
        str(install.controller_manager),
        f"--kubeconfig={tmp_path / 'kubeconfig'}",
    ]
    assert "--leader-elect=false" in manager
    # Not "*": the jobflow controllers would wait forever for CRDs the suite does not install.
    assert "--controllers=job-controller,pg-controller,queue-controller,gc-controller" in manager


def test_queue_and_paths() -> None:
    assert queue("q", capability={"cpu": "2"}) == {
        "apiVersion": "scheduling.volcano.sh/v1beta1",
        "kind": "Queue",
        "metadata": {"name": "q"},
        "spec": {"weight": 1, "reclaimable": False, "capability": {"cpu": "2"}},
    }
    assert "capability" not in queue("default")["spec"]
    assert queues_path("q") == "/apis/scheduling.volcano.sh/v1beta1/queues/q"
    assert jobs_path("ns") == "/apis/batch.volcano.sh/v1alpha1/namespaces/ns/jobs"
    assert podgroups_path("ns", "g") == (
        "/apis/scheduling.volcano.sh/v1beta1/namespaces/ns/podgroups/g"
    )


def test_suite_without_volcano_says_what_to_set_and_exits_2(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.volcano.suite",
            "--volcano-bin",
            str(tmp_path / "bin"),
            "--volcano-crds",
            str(tmp_path / "crd"),
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO_ROOT,
    )
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    assert line.startswith(
        f"volcano: Volcano is not there: missing {tmp_path / 'bin'}/vc-scheduler"
    )
    assert done.stdout == ""


def test_scheduler_verbosity_defaults_to_2_and_can_be_raised(tmp_path: Path) -> None:
    install = VolcanoInstall.from_dirs(*fake_install(tmp_path))
    assert "--v=2" in scheduler_command(install, tmp_path / "kubeconfig", tmp_path / "conf")
    raised = scheduler_command(install, tmp_path / "kubeconfig", tmp_path / "conf", verbosity=3)
    assert "--v=3" in raised
    assert "--v=2" not in raised


def _pod(*requests: dict[str, str], init: dict[str, str] | None = None) -> dict[str, object]:
    containers = [{"name": f"c{i}", "resources": {"requests": r}} for i, r in enumerate(requests)]
    spec: dict[str, object] = {"containers": containers}
    if init is not None:
        spec["initContainers"] = [{"name": "init", "resources": {"requests": init}}]
    return {"spec": spec}


def test_a_pod_asking_only_for_claims_is_best_effort_to_volcano() -> None:
    assert best_effort({"spec": {"containers": [{"name": "c", "resources": {"claims": []}}]}})
    assert best_effort(_pod({}, {"cpu": "0", "memory": "0Gi"}, init={"cpu": "0m"}))


def test_any_request_makes_a_pod_not_best_effort() -> None:
    assert not best_effort(_pod({"cpu": "100m"}))
    assert not best_effort(_pod({}, {"memory": "1Gi"}))
    assert not best_effort(_pod({}, init={"cpu": "1"}))
