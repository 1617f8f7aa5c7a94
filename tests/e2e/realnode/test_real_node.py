"""End to end on a real node (issue 14 prototype): a quarter-card pod runs in a real container.

The real kubelet calls our plugin, containerd injects the claim's CDI devices into a runc
container, and ``dcu-dra verify`` (the one-file build of ``make pyz``, mounted with a hostPath
volume) passes inside it: the container's command runs it once into the container log, and the
test runs it again with ``ctr tasks exec`` (there is no kubectl exec without a CRI client).
Deleting the pod makes the kubelet unprepare the claim: no CDI spec or vdev file is left.

Runs only as root on Linux with cgroups, with ``make node-binaries``, ``make images`` and
``make pyz`` done; skips naming what is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from typing import Any

from dra_driver.cluster.kube import KubeClient, paths
from dra_driver.testing.cluster import (
    QUARTER_CARD,
    dcu_claim_template,
    wait_for_pod_gone,
    wait_for_pod_running,
)
from dra_driver.testing.realnode.node import TEST_IMAGE, RealNode, runtime_container_id
from dra_driver.testing.waiting import wait_for
from tests.e2e.realnode.helpers import MARKS, PROBE, PYZ, VERIFY, container_log

pytestmark = MARKS


def verify_pod(node: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "quarter"},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": node},
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "ctr",
                    "image": TEST_IMAGE,
                    "imagePullPolicy": "Never",
                    "command": [
                        "sh",
                        "-c",
                        f'{VERIFY}; echo "verify-exit=$?"; exec sleep 3600',
                    ],
                    "resources": {"claims": [{"name": "dcu"}]},
                    "volumeMounts": [
                        {"name": "pyz", "mountPath": "/opt/dcu-dra", "readOnly": True}
                    ],
                }
            ],
            "volumes": [
                {"name": "pyz", "hostPath": {"path": str(PYZ.parent), "type": "Directory"}}
            ],
            "resourceClaims": [{"name": "dcu", "resourceClaimTemplateName": "quarter-dcu"}],
        },
    }


def test_quarter_card_pod_verifies_in_a_real_container(
    real_node: RealNode, kube: KubeClient, namespace: str
) -> None:
    kubeconfig = real_node.kubeconfig
    started = time.monotonic()
    kube.create(
        paths.resource_claim_templates(namespace),
        dcu_claim_template("quarter-dcu", namespace=namespace, capacity=QUARTER_CARD),
    )
    kube.create(paths.pods(namespace), verify_pod(real_node.name))
    pod = wait_for_pod_running(kube, namespace, "quarter", timeout_s=120)
    running_s = time.monotonic() - started

    claim_name = pod["status"]["resourceClaimStatuses"][0]["resourceClaimName"]
    claim = kube.get(paths.resource_claims(namespace, claim_name))
    uid = claim["metadata"]["uid"]
    spec_file = real_node.plugin.spec_file(uid)
    assert spec_file.is_file(), f"no CDI spec {spec_file} in {real_node.plugin.spec_files()}"
    spec = json.loads(spec_file.read_text())
    vdev_files = sorted(real_node.plugin.vdev_dir(uid).glob("vdev*.conf"))
    assert len(vdev_files) == 1, vdev_files

    # 1. The container's own run of verify, from the container log the kubelet keeps.
    def logged() -> str | None:
        text = container_log(real_node, pod)
        return text if "verify-exit=" in text else None

    log = wait_for(logged, timeout_s=30, description="the container's verify output in its log")
    assert "verify-exit=0" in log, log

    # 2. exec-like: run verify again in the running container through containerd.
    container_id = runtime_container_id(pod["status"]["containerStatuses"][0])
    ctr = real_node.containerd
    done = ctr.ctr(
        "tasks",
        "exec",
        "--exec-id",
        "verify1",
        container_id,
        "sh",
        "-c",
        f"{VERIFY} --json",
        check=False,
    )
    assert done.returncode == 0, f"verify failed in the container:\n{done.stdout}\n{done.stderr}"
    report = json.loads(done.stdout)
    print(f"\nverify --json inside the real container: {json.dumps(report)[:1500]}")

    # The container's view: its vdev file, device nodes with the host's numbers, DCU_* vars.
    probe = PROBE
    done = ctr.ctr(
        "tasks",
        "exec",
        "--exec-id",
        "probe1",
        container_id,
        "python3",
        "-I",
        "-S",
        "-c",
        probe,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    print(f"container view: {seen}")
    assert list(seen["vdev"]) == [vdev_files[0].name]
    # Device nodes: the same numbers as the mock node's character devices on the host.
    for device in spec["devices"]:
        for dn in device.get("containerEdits", {}).get("deviceNodes", []):
            host = os.stat(dn.get("hostPath", dn["path"]))
            assert seen["dev"].get(dn["path"]) == [
                os.major(host.st_rdev),
                os.minor(host.st_rdev),
            ], dn
    for dn in spec.get("containerEdits", {}).get("deviceNodes", []):
        host = os.stat(dn.get("hostPath", dn["path"]))
        assert seen["dev"].get(dn["path"]) == [os.major(host.st_rdev), os.minor(host.st_rdev)], dn
    majors = {m for m, _ in seen["dev"].values()}
    print(f"device majors in the container: {sorted(majors)}")
    spec_env = {
        e.split("=", 1)[0]: e.split("=", 1)[1]
        for device in spec["devices"]
        for e in device.get("containerEdits", {}).get("env", [])
    }
    assert spec_env and all(seen["env"].get(k) == v for k, v in spec_env.items()), (
        spec_env,
        seen["env"],
    )

    # 3. With kubectl: logs and exec through the API server, which reaches the kubelet at the
    # node's name (127.0.0.2) on its port with anonymous auth.
    if shutil.which("kubectl"):
        kubectl = ["kubectl", "--kubeconfig", str(kubeconfig), "-n", namespace]
        logs = subprocess.run(
            [*kubectl, "logs", "quarter"], capture_output=True, text=True, timeout=60, check=False
        )
        assert logs.returncode == 0 and "verify-exit=0" in logs.stdout, logs.stderr
        execd = subprocess.run(
            [*kubectl, "exec", "quarter", "--", *VERIFY.split()],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert execd.returncode == 0, f"kubectl exec verify: {execd.stdout}\n{execd.stderr}"
        print(f"kubectl exec verify: {execd.stdout.strip().splitlines()[-1]}")

    # 4. Delete the pod: the real kubelet unprepares the claim, the plugin removes its files.
    kube.delete(paths.pods(namespace, "quarter"))
    wait_for_pod_gone(kube, namespace, "quarter", timeout_s=90)
    wait_for(
        lambda: not spec_file.exists() and not real_node.plugin.vdev_dir(uid).exists(),
        timeout_s=60,
        description="the plugin's unprepare (CDI spec and vdev dir removed)",
    )
    log_text = real_node.plugin.output()
    assert f"NodePrepareResources] prepared claim {namespace}/{claim_name} (uid {uid})" in log_text
    assert (
        f"NodeUnprepareResources] unprepared claim {namespace}/{claim_name} (uid {uid})" in log_text
    )
    assert real_node.plugin.spec_files() == [] and real_node.plugin.vdev_files() == []
    body_s = time.monotonic() - started
    print(f"\ntest: pod Running after {running_s:.1f} s; whole test body {body_s:.1f} s")
