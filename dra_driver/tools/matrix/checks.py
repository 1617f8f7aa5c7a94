"""The smoke suite against one Kubernetes version: its control plane, its real kubelet, the plugin.

Each check is a function of a :class:`Bed` that returns a detail string (what it saw) or raises
:class:`CheckFailedError` (or anything else) with what went wrong; :func:`run_check` times it and
turns it into a :class:`~.model.CheckResult`. The chart check runs first, on the empty cluster (dry
runs of objects the node's set-up creates for real would only meet ``AlreadyExists``); the
others run on the started node in :data:`~.model.CHECKS` order.

The pods run the pause image: what a container sees of its devices is the real-node suites'
business (tests/e2e/realnode); here what counts is what the version's scheduler, kubelet and
API server do with the driver.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dra_driver import DRIVER_NAME
from dra_driver.cluster.kube import AlreadyExists, ApiError, KubeClient, paths
from dra_driver.testing.cluster import (
    QUARTER_CARD,
    REPO_ROOT,
    ControlPlane,
    allocation_results,
    create_namespace,
    create_ready_node,
    is_pod_running,
    load_yaml,
    pod_claims,
    pod_condition,
)
from dra_driver.testing.plugin_process import PluginProcess, dcu_dra_command
from dra_driver.testing.realnode.node import PAUSE_IMAGE, RealNode
from dra_driver.testing.waiting import wait_for
from dra_driver.tools.matrix.model import FAIL, PASS, CheckResult

CHART_DIR = REPO_ROOT / "deploy" / "helm" / "dcu-dra-driver"
DEVICE_CLASSES = REPO_ROOT / "deploy" / "deviceclass.yaml"
SHARE_PODS = 5
#: Pods start real (pause) containers on a loaded 2-core machine.
POD_TIMEOUT_S = 180.0
#: The kubelet opens the health stream right after registration; leave room for a slow start.
HEALTH_TIMEOUT_S = 60.0
NAMESPACE = "matrix"


class CheckFailedError(Exception):
    """A check saw something other than what passing needs."""


@dataclass
class Bed:
    """What the checks run against: one version's control plane and one real node."""

    client: KubeClient
    node: RealNode
    helm: Path
    #: The API server's gitVersion, e.g. "v1.37.2" (helm renders for it).
    server_version: str


def run_check(check: str, body: Callable[[], str]) -> CheckResult:
    """Run ``body``, timed; a raised exception fails the check with its message."""
    started = time.monotonic()
    try:
        detail = body()
        status = PASS
    except Exception as exc:  # every failure is the check's result, in its own words
        detail = f"{type(exc).__name__}: {exc}".strip()
        status = FAIL
    return CheckResult(
        check, status, seconds=round(time.monotonic() - started, 1), detail=detail[:2000]
    )


# --- chart ------------------------------------------------------------------------------------


def check_chart(client: KubeClient, helm: Path, server_version: str) -> str:
    """Every object ``helm template`` renders passes the API server's validation and admission.

    Dry-run creates (``dryRun=All``): nothing is stored. The release namespace is created for
    real, since a dry-run create in a missing namespace is refused before validation.
    """
    namespace = "dcu-dra-system"
    done = subprocess.run(
        [
            str(helm),
            "template",
            "dcu-dra",
            str(CHART_DIR),
            "--namespace",
            namespace,
            "--kube-version",
            server_version,
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if done.returncode != 0:
        raise CheckFailedError(f"helm template failed: {done.stderr.strip()[-500:]}")
    objects = load_yaml(done.stdout)
    create_namespace(client, namespace)
    kinds = []
    for obj in objects:
        try:
            client.request(
                "POST",
                paths.collection_path(obj, default_namespace=namespace),
                query={"dryRun": "All"},
                body=obj,
            )
        except ApiError as exc:
            raise CheckFailedError(
                f"{obj['kind']} {obj['metadata']['name']} refused: {exc}"
            ) from exc
        kinds.append(obj["kind"])
    return f"{len(objects)} objects"


# --- the slice --------------------------------------------------------------------------------


def node_slices(bed: Bed) -> list[dict[str, Any]]:
    """Our ResourceSlices of the node, as the API server stores them (resource.k8s.io/v1)."""
    return [
        s
        for s in bed.client.list(paths.resource_slices()).get("items") or []
        if s["spec"].get("driver") == DRIVER_NAME and s["spec"].get("nodeName") == bed.node.name
    ]


def check_slice(bed: Bed) -> str:
    """The stored slice keeps every device's allowMultipleAllocations and requestPolicy."""
    devices = [d for s in node_slices(bed) for d in s["spec"].get("devices") or []]
    if not devices:
        raise CheckFailedError(f"no device in {DRIVER_NAME}'s slices of node {bed.node.name}")
    for device in devices:
        if device.get("allowMultipleAllocations") is not True:
            raise CheckFailedError(f"device {device['name']} lost allowMultipleAllocations")
        policies = [c for c in (device.get("capacity") or {}).values() if c.get("requestPolicy")]
        if not policies:
            raise CheckFailedError(f"device {device['name']} has no capacity with a requestPolicy")
    served = bed.client.get("/apis/resource.k8s.io")
    versions = [v["version"] for v in served.get("versions") or []]
    return f"{len(devices)} devices; resource.k8s.io {','.join(versions)}"


# --- shares, whole card, prepare -----------------------------------------------------------------


def quarter_card(bed: Bed) -> tuple[str, str]:
    """Name and UUID of the first shareable device with 60 CUs: four quarters fill it exactly.

    CEL has no device name, so the shares are pinned to this device by its ``uuid`` attribute.
    """
    for device in sorted(
        (d for s in node_slices(bed) for d in s["spec"].get("devices") or []),
        key=lambda d: str(d["name"]),
    ):
        attributes = device.get("attributes") or {}
        cores = (attributes.get("computeUnits") or {}).get("int")
        if device.get("allowMultipleAllocations") and cores == 4 * int(QUARTER_CARD["cores"]):
            return str(device["name"]), str(attributes["uuid"]["string"])
    raise CheckFailedError("the node publishes no shareable device with 60 CUs (a Z100)")


def claim_pod(name: str, node: str, request: dict[str, Any]) -> tuple[dict[str, Any], ...]:
    """A ResourceClaim with one request and a pause pod that uses it, on ``node``."""
    claim = {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"devices": {"requests": [{"name": "dcu", "exactly": request}]}},
    }
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": node},
            "terminationGracePeriodSeconds": 0,
            "containers": [
                {"name": "ctr", "image": PAUSE_IMAGE, "resources": {"claims": [{"name": "dcu"}]}}
            ],
            "resourceClaims": [{"name": "dcu", "resourceClaimName": name}],
        },
    }
    return claim, pod


def create_all(client: KubeClient, objects: tuple[dict[str, Any], ...]) -> None:
    """Create ``objects`` in order."""
    for obj in objects:
        client.create(paths.collection_path(obj), obj)


def ensure_setup(bed: Bed) -> None:
    """The device classes and the test namespace, once."""
    for obj in load_yaml(DEVICE_CLASSES.read_text()):
        try:
            bed.client.create(paths.collection_path(obj), obj)
        except AlreadyExists:
            pass
    try:
        create_namespace(bed.client, NAMESPACE)
    except AlreadyExists:
        pass


def pods(bed: Bed) -> dict[str, dict[str, Any]]:
    """The test namespace's pods by name."""
    items = bed.client.list(paths.pods(NAMESPACE)).get("items") or []
    return {p["metadata"]["name"]: p for p in items}


def unschedulable(pod: dict[str, Any]) -> bool:
    """Whether the scheduler gave up on ``pod`` (PodScheduled=False, Unschedulable)."""
    condition = pod_condition(pod, "PodScheduled")
    return bool(
        condition
        and condition.get("status") == "False"
        and condition.get("reason") == "Unschedulable"
    )


def delete_pods(bed: Bed, names: list[str]) -> None:
    """Delete the pods and their claims; wait until the pods are gone (claims unprepared)."""
    for name in names:
        bed.client.delete(paths.pods(NAMESPACE, name), grace_period_s=0)
    wait_for(
        lambda: not (set(names) & set(pods(bed))) or None,
        timeout_s=POD_TIMEOUT_S,
        description=f"pods {names} gone",
        interval_s=0.5,
    )
    for name in names:
        bed.client.delete(paths.resource_claims(NAMESPACE, name))


def check_shares(bed: Bed) -> str:
    """Four quarter shares of one card run; a fifth pod is left Unschedulable."""
    ensure_setup(bed)
    device, uuid = quarter_card(bed)
    pinned = f'device.attributes["{DRIVER_NAME}"].uuid == "{uuid}"'
    request = {
        "deviceClassName": "vdcu.dcu.hygon.com",
        "selectors": [{"cel": {"expression": pinned}}],
        "capacity": {"requests": dict(QUARTER_CARD)},
    }
    names = [f"share-{i}" for i in range(SHARE_PODS)]
    for name in names:
        create_all(bed.client, claim_pod(name, bed.node.name, request))

    def four_running_one_waiting() -> tuple[list[str], str] | None:
        current = pods(bed)
        running = sorted(n for n, p in current.items() if n in names and is_pod_running(p))
        waiting = [n for n, p in current.items() if n in names and unschedulable(p)]
        return (running, waiting[0]) if len(running) == 4 and len(waiting) == 1 else None

    running, waiting = wait_for(
        four_running_one_waiting,
        timeout_s=POD_TIMEOUT_S,
        description="four share pods Running and the fifth Unschedulable",
        interval_s=0.5,
        details=lambda: {n: (p.get("status") or {}).get("phase") for n, p in pods(bed).items()},
    )
    share_ids = set()
    for name in running:
        (claim,) = pod_claims(bed.client, pods(bed)[name]).values()
        (result,) = allocation_results(claim)
        if result["device"] != device:
            raise CheckFailedError(f"{name} got device {result['device']}, not {device}")
        share_ids.add(result.get("shareID"))
    if len(share_ids) != 4 or None in share_ids:
        raise CheckFailedError(f"the four shares do not have four share IDs: {share_ids}")
    (waiting_claim,) = pod_claims(bed.client, pods(bed)[waiting]).values()
    if allocation_results(waiting_claim):
        raise CheckFailedError(f"the fifth claim ({waiting}) was allocated")
    return f"4 on {device}, {waiting} Unschedulable"


def claim_specs(bed: Bed, uids: set[str]) -> list[str]:
    """The node's CDI spec files of the claims ``uids`` (their names hold the claim UID)."""
    return sorted(p.name for p in bed.node.cdi_dir.iterdir() if any(u in p.name for u in uids))


def kubelet_prepared(bed: Bed) -> set[str] | None:
    """The claim UIDs the kubelet's DRA checkpoint holds; None when its format is not ours.

    The checkpoint's layout is the kubelet's own business and may change between versions, so
    it is evidence when readable, never a reason to fail on its own.
    """
    try:
        return set(bed.node.kubelet.prepared_claims())
    except (KeyError, ValueError, TypeError):
        return None


def check_prepare(bed: Bed) -> str:
    """The share pods' claims are prepared (CDI specs) and unprepared when the pods go."""
    running = sorted(
        n for n, p in pods(bed).items() if n.startswith("share-") and is_pod_running(p)
    )
    if not running:
        raise CheckFailedError("no running share pod to look at (the shares check failed)")
    uids = {pod_claims(bed.client, pods(bed)[n])["dcu"]["metadata"]["uid"] for n in running}
    specs = claim_specs(bed, uids)
    if len(specs) != len(uids):
        raise CheckFailedError(f"{len(uids)} prepared claims but CDI specs {specs}")
    prepared = kubelet_prepared(bed)
    if prepared is not None and not uids <= prepared:
        raise CheckFailedError(f"the kubelet's checkpoint lacks {sorted(uids - prepared)}")
    delete_pods(bed, [f"share-{i}" for i in range(SHARE_PODS)])
    wait_for(
        lambda: not claim_specs(bed, uids) or None,
        timeout_s=POD_TIMEOUT_S,
        description="the plugin removing the share claims' CDI specs (unprepare)",
        interval_s=0.5,
    )
    if prepared is not None:
        # The kubelet updates its checkpoint after the plugin answered NodeUnprepareResources.
        wait_for(
            lambda: not (uids & (kubelet_prepared(bed) or set())) or None,
            timeout_s=POD_TIMEOUT_S,
            description="the kubelet's checkpoint dropping the share claims",
            interval_s=0.5,
        )
    seen = "kubelet checkpoint read" if prepared is not None else "kubelet checkpoint not read"
    return f"{len(uids)} claims prepared and unprepared; {seen}"


def check_whole(bed: Bed) -> str:
    """A claim without capacity requests gets a whole card and its pod runs."""
    ensure_setup(bed)
    create_all(bed.client, claim_pod("whole", bed.node.name, {"deviceClassName": "dcu.hygon.com"}))
    pod = wait_for(
        lambda: (lambda p: p if p and is_pod_running(p) else None)(pods(bed).get("whole")),
        timeout_s=POD_TIMEOUT_S,
        description="the whole-card pod Running",
        interval_s=0.5,
    )
    (claim,) = pod_claims(bed.client, pod).values()
    (result,) = allocation_results(claim)
    consumed = result.get("consumedCapacity") or {}
    delete_pods(bed, ["whole"])
    return f"{result['device']}" + (f", cores {consumed['cores']}" if "cores" in consumed else "")


# --- the kubelet's side, read from the plugin's log -------------------------------------------

_DRA_CALL = re.compile(r"the kubelet's first DRA (\S+) call")
_HEALTH = re.compile(r"the kubelet opened a (\S+) health stream")


def plugin_log(bed: Bed) -> str:
    """The plugin's log so far."""
    return bed.node.plugin.log_file.read_text(errors="replace")


def dra_version(bed: Bed) -> str:
    """The DRA gRPC version the kubelet called, from the plugin's log ("" before any call)."""
    found = _DRA_CALL.search(plugin_log(bed))
    return found.group(1) if found else ""


def check_register(bed: Bed) -> str:
    """The plugin registered with the kubelet and the kubelet called its DRA service."""
    if "registered with the kubelet" not in plugin_log(bed):
        raise CheckFailedError(
            f"the plugin's log ({bed.node.plugin.log_file}) shows no registration"
        )
    version = dra_version(bed)
    if not version:
        raise CheckFailedError("registered, but the kubelet never called NodePrepareResources")
    return f"DRA {version}"


def check_health(bed: Bed) -> str:
    """The kubelet opened the plugin's health stream (ResourceHealthStatus)."""
    found = wait_for(
        lambda: _HEALTH.search(plugin_log(bed)),
        timeout_s=HEALTH_TIMEOUT_S,
        description="the kubelet opening a health stream",
        interval_s=0.5,
    )
    return f"health {found.group(1)}"


# --- a control plane without DRAConsumableCapacity ----------------------------------------------

GATE = "DRAConsumableCapacity"
GATE_NODE = "gate-off"


def check_gate_off(controlplane_binary: Path, work: Path) -> str:
    """On the version's control plane with the gate off, the plugin says so in one error line.

    A second control plane (``--feature-gates-off``), a Node object and the plugin on a mock
    node with no kubelet: it publishes, reads its slice back without the sharing fields and must
    log the one error of :func:`dra_driver.cluster.gates.dropped_message`.
    """
    control_plane = ControlPlane(binary=controlplane_binary, data_dir=work, gates_off=(GATE,))
    plugin: PluginProcess | None = None
    try:
        control_plane.start()
        client = control_plane.client
        version = str(client.get("/version").get("gitVersion") or "")
        create_ready_node(client, GATE_NODE)
        mock_root = work / "dcu"
        done = subprocess.run(
            [*dcu_dra_command(), "mock", "create", "--root", str(mock_root)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise CheckFailedError(f"dcu-dra mock create failed: {done.stderr.strip()}")
        plugin = PluginProcess.in_directory(
            work / "p", node_name=GATE_NODE, root=mock_root, kubeconfig=control_plane.kubeconfig
        ).start()
        wanted = f"the API server (Kubernetes {version}) dropped allowMultipleAllocations"
        log = plugin.log_file
        line = wait_for(
            lambda: next((x for x in log.read_text().splitlines() if wanted in x), None),
            timeout_s=HEALTH_TIMEOUT_S,
            description=f"the plugin's error about {GATE} on {version}",
            interval_s=0.5,
        )
        if f"its {GATE} feature gate is off" not in line:
            raise CheckFailedError(f"the error does not name {GATE}: {line}")
        count = log.read_text().count(wanted)
        if count != 1:
            raise CheckFailedError(f"the error was logged {count} times, not once")
        stage = line.split(f"its {GATE} feature gate is off (", 1)[1].split(")", 1)[0]
        return stage
    finally:
        if plugin is not None and plugin.process is not None:
            plugin.stop()
        control_plane.stop()
