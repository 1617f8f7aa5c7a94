"""``dcu-dra status`` against the local control plane, with claims the real scheduler allocated.

The real daemon publishes a default mock node (2x Z100, 1x K100_AI) through a fake kubelet;
the real scheduler allocates a whole card, shares on one card, a claim shared by two pods, and
leaves one claim pending; ``dcu-dra mock fault`` makes a card lost, so the daemon taints it.
``status`` runs as the installed console scripts (``dcu-dra``, ``kubectl-dcu``), as a user
would run them, and once through a kubeconfig whose user is an exec credential plugin.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from dra_driver.cluster.kube import KubeClient, paths
from dra_driver.testing.cluster import (
    ControlPlane,
    apply_yaml,
    load_yaml,
    temporary_objects,
    unique_name,
)
from dra_driver.testing.plugin_process import dcu_dra_command
from dra_driver.testing.waiting import wait_for
from tests.e2e.conftest import K100, Z100_A, Z100_B, DcuNode, DcuNodeFactory, mock_fault, pinned_pod

pytestmark = pytest.mark.e2e

GIB = 2**30
#: Z100 memory as published: 32 GiB rounded down to whole MiB by the mock (32752 MiB).
Z100_MEMORY = 32752 * 2**20


def by_bus(bus: str) -> str:
    return f'device.attributes["resource.kubernetes.io"].pciBusID == "{bus}"'


#: A whole K100 (no capacity requests), 4-CU shares and a shared claim on the first Z100, and
#: a claim no DCU can hold (200 CUs, more than any card).
SCENARIO = f"""\
apiVersion: resource.k8s.io/v1
kind: ResourceClaim
metadata: {{name: whole}}
spec:
  devices:
    requests:
    - name: dcu
      exactly:
        deviceClassName: dcu.hygon.com
        selectors: [{{cel: {{expression: '{by_bus("0000:af:00.0")}'}}}}]
---
apiVersion: resource.k8s.io/v1
kind: ResourceClaimTemplate
metadata: {{name: share}}
spec:
  spec:
    devices:
      requests:
      - name: dcu
        exactly:
          deviceClassName: vdcu.dcu.hygon.com
          selectors: [{{cel: {{expression: '{by_bus("0000:3b:00.0")}'}}}}]
          capacity: {{requests: {{cores: "10", memory: 4Gi}}}}
---
apiVersion: resource.k8s.io/v1
kind: ResourceClaim
metadata: {{name: team}}
spec:
  devices:
    requests:
    - name: dcu
      exactly:
        deviceClassName: vdcu.dcu.hygon.com
        selectors: [{{cel: {{expression: '{by_bus("0000:3b:00.0")}'}}}}]
        capacity: {{requests: {{cores: "20", memory: 8Gi}}}}
---
apiVersion: resource.k8s.io/v1
kind: ResourceClaim
metadata: {{name: huge}}
spec:
  devices:
    requests:
    - name: dcu
      exactly:
        deviceClassName: vdcu.dcu.hygon.com
        capacity: {{requests: {{cores: "200", memory: 4Gi}}}}
"""


def run_status(
    *args: str, kubeconfig: Path, command: Sequence[str] | None = None, timeout_s: float = 60
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    return subprocess.run(
        [*(command or dcu_dra_command()), "status", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout_s,
        check=False,
    )


def kubectl_dcu() -> list[str]:
    script = Path(sys.executable).parent / "kubectl-dcu"
    assert script.is_file(), "the kubectl-dcu console script is not installed: run make venv"
    return [str(script)]


def claim_allocated(kube: KubeClient, namespace: str, name: str) -> Callable[[], object]:
    def check() -> object:
        status = kube.get(paths.resource_claims(namespace, name)).get("status", {})
        return status.get("allocation") and status.get("reservedFor")

    return check


def generated_claims_allocated(kube: KubeClient, namespace: str, count: int) -> Callable[[], bool]:
    def check() -> bool:
        claims = kube.list(paths.resource_claims(namespace))["items"]
        generated = [c for c in claims if c["metadata"]["name"].startswith("s")]
        return sum(bool(c.get("status", {}).get("reservedFor")) for c in generated) == count

    return check


def unschedulable(kube: KubeClient, namespace: str, pod: str) -> Callable[[], str | None]:
    def check() -> str | None:
        for cond in kube.get(paths.pods(namespace, pod)).get("status", {}).get("conditions", []):
            if cond["type"] == "PodScheduled" and cond.get("reason") == "Unschedulable":
                return str(cond.get("message"))
        return None

    return check


def lost_taint(kube: KubeClient, node: str) -> Callable[[], bool]:
    def check() -> bool:
        items = kube.list(paths.resource_slices(), field_selector=f"spec.nodeName={node}")["items"]
        return any(
            d["name"] == Z100_B and d.get("taints")
            for s in items
            for d in s["spec"].get("devices") or []
        )

    return check


@pytest.fixture
def scenario(
    kube: KubeClient, dcu_node: DcuNodeFactory, device_classes: None, namespace: str
) -> DcuNode:
    """The node with every kind of holder, a pending claim and a lost (tainted) Z100."""
    node = dcu_node("--health-interval", "1")
    apply_yaml(kube, SCENARIO, namespace=namespace)
    # One pod after the other: pods created at once race in the scheduler (test_publisher).
    steps: list[tuple[dict[str, Any], Callable[[], object], str]] = [
        (
            pinned_pod("whole", node.name, claim="whole"),
            claim_allocated(kube, namespace, "whole"),
            "the whole K100",
        ),
        (
            pinned_pod("s0", node.name, template="share"),
            generated_claims_allocated(kube, namespace, 1),
            "share 1",
        ),
        (
            pinned_pod("s1", node.name, template="share"),
            generated_claims_allocated(kube, namespace, 2),
            "share 2",
        ),
        (
            pinned_pod("team-a", node.name, claim="team"),
            claim_allocated(kube, namespace, "team"),
            "the shared claim",
        ),
    ]
    for pod, done, what in steps:
        kube.create(paths.pods(namespace), pod)
        wait_for(done, timeout_s=30, description=f"{what} to be allocated")
    kube.create(paths.pods(namespace), pinned_pod("team-b", node.name, claim="team"))
    wait_for(
        lambda: (
            len(kube.get(paths.resource_claims(namespace, "team"))["status"]["reservedFor"]) == 2
        ),
        timeout_s=30,
        description="the shared claim to be reserved for both pods",
    )
    kube.create(paths.pods(namespace), pinned_pod("huge", node.name, claim="huge"))
    wait_for(unschedulable(kube, namespace, "huge"), timeout_s=30, description="huge pending")
    assert "is now lost" in mock_fault(node.root, 1, "lost")
    wait_for(lost_taint(kube, node.name), timeout_s=15, description="the lost Z100's taint")
    return node


def test_status_shows_what_the_scheduler_allocated(
    control_plane: ControlPlane, scenario: DcuNode, namespace: str
) -> None:
    node = scenario
    done = run_status("--node", node.name, "-o", "json", kubeconfig=control_plane.kubeconfig)
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    devices = {d["device"]: d for d in document["devices"]}
    assert list(devices) == [Z100_A, Z100_B, K100]

    shares = devices[Z100_A]
    assert (shares["model"], shares["health"]) == ("Z100", "Healthy")
    assert shares["cores"] == {"allocated": 40, "total": 60}
    assert shares["memory"] == {"allocatedBytes": 16 * GIB, "totalBytes": Z100_MEMORY}
    assert shares["vdevices"] == {"used": 3, "total": 4}
    claims = {c["name"]: c for c in shares["claims"]}
    assert claims["team"]["pods"] == ["team-a", "team-b"]
    assert (claims["team"]["cores"], claims["team"]["memoryBytes"]) == (20, 8 * GIB)
    assert sorted(c["pods"][0] for n, c in claims.items() if n != "team") == ["s0", "s1"]
    assert all(c["shareID"] for c in claims.values())
    assert sorted(shares["pods"]) == sorted(
        f"{namespace}/{p}" for p in ("s0", "s1", "team-a", "team-b")
    )

    lost = devices[Z100_B]
    assert lost["health"] == "Unhealthy (NotResponding)"
    assert lost["taints"] == ["dcu.hygon.com/unhealthy=NotResponding:NoSchedule"]
    assert (lost["cores"]["allocated"], lost["claims"]) == (0, [])

    # A claim without capacity requests consumes the defaults: every CU and all memory.
    whole = devices[K100]
    assert whole["cores"] == {"allocated": 120, "total": 120}
    assert whole["memory"] == {"allocatedBytes": 64 * GIB, "totalBytes": 64 * GIB}
    assert whole["vdevices"]["used"] == 1
    assert [(c["name"], c["pods"]) for c in whole["claims"]] == [("whole", ["whole"])]

    (pending,) = [p for p in document["pendingClaims"] if p["namespace"] == namespace]
    assert (pending["name"], pending["pods"]) == ("huge", ["huge"])
    assert "cannot allocate all claims" in pending["reason"]
    summary = document["summary"]
    assert (summary["devices"], summary["unhealthy"], summary["freeCores"]) == (3, 1, 20)
    assert summary["freeMemoryBytes"] == Z100_MEMORY - 16 * GIB

    # The table, through kubectl's plugin executable; printed for the README (pytest -s).
    table = run_status(
        "--node", node.name, kubeconfig=control_plane.kubeconfig, command=kubectl_dcu()
    )
    assert table.returncode == 0, table.stderr
    print(f"\n$ kubectl dcu status --node {node.name}\n{table.stdout}")
    lines = table.stdout.splitlines()
    assert lines[0].split() == [
        "NODE",
        "DEVICE",
        "MODEL",
        "HEALTH",
        "CUS",
        "MEMORY",
        "VDCUS",
        "CLAIMS",
        "PODS",
    ]
    rows = {line.split()[1]: line.split() for line in lines[1:] if line.startswith(node.name)}
    assert rows[Z100_A][2:8] == ["Z100", "Healthy", "40/60", "16.0/32.0", "GiB", "3/4"]
    assert " ".join(rows[Z100_B][2:5]) == "Z100 Unhealthy (NotResponding)"
    assert rows[K100][4:] == [
        "120/120",
        "64.0/64.0",
        "GiB",
        "1/4",
        f"{namespace}/whole",
        f"{namespace}/whole",
    ]
    # The further claims on the shared Z100: one continuation line each, with their pods.
    continued = [line.split() for line in lines[1:] if line.startswith(" ")]
    assert [f"{namespace}/team", f"{namespace}/team-a,{namespace}/team-b"] in continued
    assert len(continued) == 2
    summary = next(line for line in lines if line.startswith("3 DCUs"))
    assert summary.startswith("3 DCUs on 1 node (1 unhealthy); free on healthy DCUs: 20 CUs,")
    assert f"pending {namespace}/huge (pod {namespace}/huge): " in table.stdout

    wide = run_status("--node", node.name, "-o", "wide", kubeconfig=control_plane.kubeconfig)
    assert wide.returncode == 0, wide.stderr
    print(f"$ dcu-dra status --node {node.name} -o wide\n{wide.stdout}")
    team_share = claims["team"]["shareID"]
    assert f"{team_share}  20 CUs, 8.0 GiB" in wide.stdout
    assert whole["claims"][0]["shareID"] in wide.stdout  # consumable: a share of everything

    as_yaml = run_status("--node", node.name, "-o", "yaml", kubeconfig=control_plane.kubeconfig)
    assert yaml.safe_load(as_yaml.stdout)["devices"] == document["devices"]


def test_an_unknown_node_is_one_line(control_plane: ControlPlane) -> None:
    done = run_status("--node", "no-such-node", kubeconfig=control_plane.kubeconfig)
    print(f"\n$ dcu-dra status --node no-such-node\n{done.stderr}")
    assert done.returncode == 1
    assert done.stderr.startswith("dcu-dra status: error: unknown node 'no-such-node': ")
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


EXEC_PLUGIN = """\
#!/bin/sh
# A credential plugin as managed clusters use (aws eks get-token, gke-gcloud-auth-plugin, ...).
touch "{ran}"
cat <<EOF
{{"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
 "status": {{"token": "{token}"}}}}
EOF
"""


def exec_kubeconfig(admin: Path, directory: Path, token: str) -> tuple[Path, Path]:
    """The admin kubeconfig's cluster with an exec credential plugin printing ``token``."""
    ran = directory / "plugin-ran"
    plugin = directory / "credential-plugin.sh"
    plugin.write_text(EXEC_PLUGIN.format(ran=ran, token=token))
    plugin.chmod(0o755)
    document = yaml.safe_load(admin.read_text())
    document["users"] = [
        {
            "name": "exec",
            "user": {
                "exec": {
                    "apiVersion": "client.authentication.k8s.io/v1",
                    "command": str(plugin),
                    "interactiveMode": "Never",
                }
            },
        }
    ]
    for context in document["contexts"]:
        context["context"]["user"] = "exec"
    path = directory / "exec.kubeconfig"
    path.write_text(yaml.safe_dump(document))
    return path, ran


VIEWER_RBAC = """\
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: NAME}
rules:
- apiGroups: [resource.k8s.io]
  resources: [resourceslices, resourceclaims, deviceclasses]
  verbs: [list, watch]
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch]
- apiGroups: [""]
  resources: [nodes]
  verbs: [get]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: NAME}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: NAME}
subjects:
- {kind: ServiceAccount, name: viewer, namespace: NS}
"""


@pytest.fixture
def viewer_token(kube: KubeClient, namespace: str) -> str:
    """A token of ServiceAccount ``viewer`` in ``namespace``, which has no permissions yet."""
    kube.create(
        paths.service_accounts(namespace),
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "viewer"}},
    )
    answer = kube.create(
        paths.service_accounts(namespace, "viewer") + "/token",
        {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": 3600},
        },
    )
    return str(answer["status"]["token"])


def test_an_exec_credential_plugin_logs_in_and_missing_rbac_is_named(
    control_plane: ControlPlane, kube: KubeClient, namespace: str, viewer_token: str, tmp_path: Path
) -> None:
    kubeconfig, ran = exec_kubeconfig(control_plane.kubeconfig, tmp_path, viewer_token)
    denied = run_status(kubeconfig=kubeconfig, command=kubectl_dcu())
    assert ran.exists(), "the exec credential plugin did not run"
    print(f"\n$ kubectl dcu status  # as a ServiceAccount without RBAC\n{denied.stderr}")
    assert denied.returncode == 1
    assert denied.stderr.startswith(
        "kubectl dcu status: error: no permission to list resourceslices.resource.k8s.io at the "
        f"cluster scope as system:serviceaccount:{namespace}:viewer: RBAC must allow verb 'list' "
        "on 'resourceslices.resource.k8s.io' (the API server said: "
    )
    assert denied.stderr.count("\n") == 1

    name = unique_name("dcu-status-viewer")
    rbac = load_yaml(VIEWER_RBAC.replace("NAME", name).replace("NS", namespace))
    with temporary_objects(kube, rbac):

        def status_once() -> subprocess.CompletedProcess[str] | None:
            done = run_status("-o", "json", kubeconfig=kubeconfig)
            return done if done.returncode == 0 else None

        allowed = wait_for(
            status_once,
            timeout_s=20,
            interval_s=0.5,
            description="the viewer's RBAC to take effect",
            details=lambda: run_status(kubeconfig=kubeconfig).stderr,
        )
    assert "summary" in json.loads(allowed.stdout)


class Lines:
    """The stdout lines of a process, read on a thread."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.errors: list[str] = []
        assert process.stdout is not None and process.stderr is not None
        self.process = process
        stdout, stderr = process.stdout, process.stderr

        def read_stdout() -> None:
            for line in stdout:
                self.lines.put(line)

        self.readers = [
            threading.Thread(target=read_stdout, daemon=True),
            threading.Thread(target=lambda: self.errors.extend(stderr), daemon=True),
        ]
        for reader in self.readers:
            reader.start()

    def close(self) -> int:
        """Interrupt the process as Ctrl-C does; its exit code."""
        self.process.send_signal(signal.SIGINT)
        try:
            code = self.process.wait(timeout=10)
        finally:
            self.process.kill()
            self.process.wait()
            for reader in self.readers:  # they end at EOF
                reader.join(timeout=5)
            for stream in (self.process.stdout, self.process.stderr):
                if stream is not None:
                    stream.close()
        return code

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        seen: list[str] = []
        while True:
            try:
                line = self.lines.get(timeout=30)
            except queue.Empty:
                raise AssertionError(
                    f"no frame with {what} in 30 s; frames: {seen}; stderr: {self.errors}"
                ) from None
            seen.append(line)
            document: dict[str, Any] = json.loads(line)
            if predicate(document):
                return document


@pytest.fixture
def watching(control_plane: ControlPlane) -> Iterator[Callable[..., Lines]]:
    started: list[Lines] = []

    def start(*args: str) -> Lines:
        process = subprocess.Popen(
            [*dcu_dra_command(), "status", "--watch", "-o", "json", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "KUBECONFIG": str(control_plane.kubeconfig)},
        )
        started.append(Lines(process))
        return started[-1]

    yield start
    codes = [lines.close() for lines in started]
    assert codes == [130] * len(codes), "Ctrl-C ends --watch with 130"


def test_watch_redraws_on_each_change(
    kube: KubeClient,
    dcu_node: DcuNodeFactory,
    device_classes: None,
    namespace: str,
    watching: Callable[..., Lines],
) -> None:
    node = dcu_node("--health-interval", "1")
    frames = watching("--node", node.name)

    def device(document: dict[str, Any], name: str) -> dict[str, Any]:
        return next(d for d in document["devices"] if d["device"] == name)

    first = frames.wait_for(lambda d: len(d["devices"]) == 3, "the node's three DCUs")
    assert device(first, Z100_A)["claims"] == []
    apply_yaml(kube, SCENARIO, namespace=namespace)
    kube.create(paths.pods(namespace), pinned_pod("s0", node.name, template="share"))
    shared = frames.wait_for(lambda d: bool(device(d, Z100_A)["claims"]), "the share")
    assert device(shared, Z100_A)["cores"]["allocated"] == 10
    mock_fault(node.root, 1, "lost")
    frames.wait_for(lambda d: device(d, Z100_B)["health"] != "Healthy", "the lost DCU")
