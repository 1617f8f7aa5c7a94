"""Shared by the real-node tests: pods that run ``dcu-dra verify``, and reading its result.

Every test container runs ``dcu-dra verify`` (the one-file build of ``make pyz``, mounted with
a hostPath volume) once into its log, then sleeps; the tests read that log from the kubelet's
pod log directory and run verify (``--json``) and :data:`PROBE` again with ``ctr tasks exec``
(there is no kubectl exec without a CRI client).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from dra_driver.cluster.kube import KubeClient, paths
from dra_driver.testing.cluster import REPO_ROOT
from dra_driver.testing.plugin_process import dcu_dra_command
from dra_driver.testing.realnode.node import (
    TEST_IMAGE,
    RealNode,
    runtime_container_id,
    unavailable_reason,
)
from dra_driver.testing.waiting import wait_for

PYZ = REPO_ROOT / "build" / "dist" / "dcu-dra.pyz"
REASON = unavailable_reason() or (None if PYZ.is_file() else f"missing {PYZ}: run `make pyz`")
#: Every real-node test module's ``pytestmark``.
MARKS = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.skipif(REASON is not None, reason=REASON or ""),
]

VERIFY = "python3 -I -S /opt/dcu-dra/dcu-dra.pyz verify"
#: Where :func:`verify_pod` mounts the mock node's sysfs (``mock_sys``), read-only.
MOCK_SYS = "/opt/mock-sys"
#: verify reading the mock node's sysfs (what a real host's /sys would show of its DCUs).
VERIFY_MOCK_SYS = f"{VERIFY} --sys-dir {MOCK_SYS}"
#: Run in the container: its DRM/KFD device nodes with their numbers, vdev files, DCU_* vars.
PROBE = """
import json, os
def numbers(path):
    st = os.stat(path)
    return [os.major(st.st_rdev), os.minor(st.st_rdev)]
dev = {}
for root, _, files in os.walk('/dev/dri'):
    for f in files:
        dev[os.path.join(root, f)] = numbers(os.path.join(root, f))
for p in ('/dev/kfd', '/dev/mkfd'):
    if os.path.exists(p):
        dev[p] = numbers(p)
env = {k: v for k, v in os.environ.items() if k.startswith('DCU_')}
d = '/etc/vdev/docker'
names = sorted(os.listdir(d)) if os.path.isdir(d) else []
vdev = {f: open(os.path.join(d, f)).read() for f in names}
print(json.dumps({'dev': dev, 'vdev': vdev, 'env': env}))
"""

#: Vendor attribute of the slices' devices (as ``device.attributes["dcu.hygon.com"].index``).
INDEX_ATTRIBUTE = "index"
PCI_BUS_ID_ATTRIBUTE = "resource.kubernetes.io/pciBusID"


def verify_container(
    name: str, claims: Sequence[dict[str, str]], *, mock_sys: bool = False
) -> dict[str, Any]:
    """A container that runs verify into its log, then sleeps; ``claims`` as in its spec.

    With ``mock_sys`` verify reads the mock node's sysfs (the pod needs ``mock_sys`` too):
    the container's own ``/sys`` is the host's, which has no DCUs.
    """
    verify = VERIFY_MOCK_SYS if mock_sys else VERIFY
    mounts = [{"name": "pyz", "mountPath": "/opt/dcu-dra", "readOnly": True}]
    if mock_sys:
        mounts.append({"name": "mock-sys", "mountPath": MOCK_SYS, "readOnly": True})
    return {
        "name": name,
        "image": TEST_IMAGE,
        "imagePullPolicy": "Never",
        "command": ["sh", "-c", f'{verify}; echo "verify-exit=$?"; exec sleep 3600'],
        "resources": {"claims": list(claims)},
        "volumeMounts": mounts,
    }


def verify_pod(
    name: str,
    node: str,
    containers: Sequence[dict[str, Any]],
    resource_claims: Sequence[dict[str, str]],
    *,
    mock_sys: Path | None = None,
) -> dict[str, Any]:
    """A pod pinned to ``node`` with ``containers`` (:func:`verify_container`) and claims.

    ``mock_sys``: the mock node's sysfs directory, for containers made with ``mock_sys``.
    """
    volumes: list[dict[str, Any]] = [
        {"name": "pyz", "hostPath": {"path": str(PYZ.parent), "type": "Directory"}}
    ]
    if mock_sys is not None:
        volumes.append(
            {"name": "mock-sys", "hostPath": {"path": str(mock_sys), "type": "Directory"}}
        )
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": node},
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 1,
            "containers": list(containers),
            "volumes": volumes,
            "resourceClaims": list(resource_claims),
        },
    }


def share_request(
    name: str, *, cores: str = "10", memory: str = "4Gi", index: int | None = None
) -> dict[str, Any]:
    """A request for a vDCU share, pinned to the card ``index`` when given."""
    exactly: dict[str, Any] = {
        "deviceClassName": "vdcu.dcu.hygon.com",
        "capacity": {"requests": {"cores": cores, "memory": memory}},
    }
    if index is not None:
        exactly["selectors"] = [{"cel": {"expression": index_expression(index)}}]
    return {"name": name, "exactly": exactly}


def whole_request(name: str, *, index: int) -> dict[str, Any]:
    """A request for the whole card ``index``."""
    return {
        "name": name,
        "exactly": {
            "deviceClassName": "dcu.hygon.com",
            "selectors": [{"cel": {"expression": index_expression(index)}}],
        },
    }


def index_expression(index: int) -> str:
    return f'device.attributes["dcu.hygon.com"].{INDEX_ATTRIBUTE} == {index}'


def claim_spec(
    requests: Sequence[dict[str, Any]], constraints: Sequence[dict[str, Any]] = ()
) -> dict[str, Any]:
    devices: dict[str, Any] = {"requests": list(requests)}
    if constraints:
        devices["constraints"] = list(constraints)
    return {"devices": devices}


def resource_claim(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name},
        "spec": spec,
    }


def claim_template(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaimTemplate",
        "metadata": {"name": name},
        "spec": {"spec": spec},
    }


# --- the node's cards and the claims' allocations ----------------------------------------


def mock_sys(node: RealNode) -> Path:
    """The mock node's sysfs directory."""
    return node.mock_root / "sys"


def node_cards(node: RealNode) -> dict[str, dict[str, Any]]:
    """The mock node's DCUs (``dcu-dra devices --json``) by PCI bus id."""
    done = subprocess.run(
        [*dcu_dra_command(), "devices", "--root", str(node.mock_root), "--json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return {card["pciBusID"]: card for card in json.loads(done.stdout)}


def card_token(pci_bus_id: str) -> str:
    """``0000:3b:00.0`` -> ``0000_3B_00_0`` (as in ``DCU_<card>_UUID``)."""
    return pci_bus_id.upper().replace(":", "_").replace(".", "_")


def allocated_cards(kube: KubeClient, node: RealNode, claim: dict[str, Any]) -> dict[str, str]:
    """Request name -> PCI bus id of the card allocated to it (one device per request)."""
    slices = kube.list(paths.resource_slices(), field_selector=f"spec.nodeName={node.name}")
    pci = {
        device["name"]: device["attributes"][PCI_BUS_ID_ATTRIBUTE]["string"]
        for s in slices.get("items") or []
        for device in s["spec"].get("devices") or []
    }
    results = claim["status"]["allocation"]["devices"]["results"]
    assert len({r["request"] for r in results}) == len(results), results
    return {r["request"]: pci[r["device"]] for r in results}


def pod_claim(kube: KubeClient, pod: dict[str, Any], name: str) -> dict[str, Any]:
    """The ResourceClaim behind the pod's claim ``name`` (template-made or named)."""
    namespace = pod["metadata"]["namespace"]
    for status in pod["status"].get("resourceClaimStatuses") or []:
        if status["name"] == name:
            return kube.get(paths.resource_claims(namespace, status["resourceClaimName"]))
    for entry in pod["spec"]["resourceClaims"]:
        if entry["name"] == name and entry.get("resourceClaimName"):
            return kube.get(paths.resource_claims(namespace, entry["resourceClaimName"]))
    raise AssertionError(f"pod has no claim {name}: {pod['status']}")


# --- inside the containers ---------------------------------------------------------------


def container_id(pod: dict[str, Any], container: str) -> str:
    for status in pod["status"]["containerStatuses"]:
        if status["name"] == container:
            return runtime_container_id(status)
    raise AssertionError(f"no status of container {container}: {pod['status']}")


def container_log(node: RealNode, pod: dict[str, Any], container: str = "ctr") -> str:
    meta = pod["metadata"]
    directory = node.kubelet.pod_logs_dir / f"{meta['namespace']}_{meta['name']}_{meta['uid']}"
    files = sorted(directory.glob(f"{container}/*.log"))
    return files[-1].read_text(errors="replace") if files else ""


def logged_verify(node: RealNode, pod: dict[str, Any], container: str = "ctr") -> str:
    """The container's own run of verify (its log), asserted to have passed."""

    def logged() -> str | None:
        text = container_log(node, pod, container)
        return text if "verify-exit=" in text else None

    log = wait_for(logged, timeout_s=30, description=f"verify's output in the log of {container}")
    assert "verify-exit=0" in log, f"verify failed in {container}:\n{log}"
    return log


def exec_in(
    node: RealNode, pod: dict[str, Any], container: str, *argv: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``ctr tasks exec`` ``argv`` in the pod's running ``container`` (``stdin``: fed to it)."""
    return node.exec_in(container_id(pod, container), *argv, stdin=stdin)


def copy_into(node: RealNode, pod: dict[str, Any], container: str, source: Path, dest: str) -> None:
    """Copy a host file into the pod's running ``container`` (as ``kubectl cp`` would)."""
    node.copy_into(container_id(pod, container), source, dest)


def exec_verify(
    node: RealNode, pod: dict[str, Any], container: str = "ctr", *, mock_sys: bool = False
) -> dict[str, Any]:
    """Run ``verify --json`` in the container; asserts it passed; returns its report."""
    verify = VERIFY_MOCK_SYS if mock_sys else VERIFY
    done = exec_in(node, pod, container, "sh", "-c", f"{verify} --json")
    assert done.returncode == 0, f"verify failed in {container}:\n{done.stdout}\n{done.stderr}"
    report: dict[str, Any] = json.loads(done.stdout)
    assert report["ok"] is True, report
    return report


def probe(node: RealNode, pod: dict[str, Any], container: str = "ctr") -> dict[str, Any]:
    """The container's view (:data:`PROBE`): ``dev`` numbers, ``vdev`` file texts, ``env``."""
    done = exec_in(node, pod, container, "python3", "-I", "-S", "-c", PROBE)
    assert done.returncode == 0, done.stderr
    seen: dict[str, Any] = json.loads(done.stdout)
    return seen


def vdev_fields(text: str) -> dict[str, str]:
    """``key: value`` lines of a vdev file."""
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def dri_nodes(cards: Sequence[dict[str, Any]]) -> set[str]:
    """The /dev/dri paths of ``cards`` (entries of :func:`node_cards`)."""
    return {f"/dev/dri/{c[kind]}" for c in cards for kind in ("card", "render")}


def uuid_vars(env: dict[str, str]) -> dict[str, str]:
    """The container's ``DCU_<card>_UUID`` variables."""
    return {k: v for k, v in env.items() if k.endswith("_UUID")}
