"""The local control plane for tests and demos, and helpers to drive it.

:class:`ControlPlane` runs ``build/bin/controlplane`` (built by ``make controlplane``): it waits
for its ``READY kubeconfig=FILE`` line and on :meth:`ControlPlane.stop` sends SIGTERM, then
SIGKILL to the whole process group, so nothing is left behind. :meth:`ControlPlane.stop_apiserver`
and :meth:`ControlPlane.start_apiserver` play an API server outage: only kube-apiserver goes
away, etcd keeps its data and the scheduler and controller manager keep running (the binary's
SIGUSR1/SIGUSR2, see tests/controlplane/README.md). The helpers create objects from
YAML (for good, or for a while with :func:`temporary_objects`), manage per-test namespaces and
read pod and claim state.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from dra_driver import DRIVER_NAME
from dra_driver.cluster.kube import AlreadyExists, ApiError, KubeClient, NotFound, paths
from dra_driver.errors import DriverError
from dra_driver.testing.fakekubelet import objects
from dra_driver.testing.processes import dies_with_parent
from dra_driver.testing.waiting import wait_for

REPO_ROOT = Path(__file__).resolve().parents[2]
#: Where ``make controlplane`` puts the binary; ``DCU_DRA_CONTROLPLANE`` overrides it (e.g. a
#: binary built elsewhere in CI).
CONTROLPLANE_BINARY = Path(
    os.environ.get("DCU_DRA_CONTROLPLANE") or REPO_ROOT / "build" / "bin" / "controlplane"
)
#: Cold start of etcd + apiserver + scheduler + controller-manager takes 10-30 s.
DEFAULT_START_TIMEOUT_S = 120.0
#: The supervisor stops its children with its own 10 s grace each.
DEFAULT_STOP_TIMEOUT_S = 30.0
#: The supervisor gives kube-apiserver 20 s after SIGTERM before it kills it.
APISERVER_STOP_TIMEOUT_S = 30.0
#: kube-apiserver on an existing etcd is ready in 2-4 s; a loaded CI machine needs far more.
APISERVER_START_TIMEOUT_S = 120.0
#: What the binary prints on stdout once SIGUSR1/SIGUSR2 are done (tests/controlplane/README.md).
APISERVER_STOPPED = "APISERVER STOPPED"
APISERVER_READY = "APISERVER READY"


class ControlPlaneError(DriverError):
    """The control plane binary is missing, failed to start or died."""


def parse_feature_gates(text: str) -> dict[str, bool]:
    """The gates of ``controlplane feature-gates``'s first line, ``A=true,B=false``.

    The lines after it (``# Gate: why it is left out``) are comments. A malformed pair raises
    :class:`ControlPlaneError` naming it.
    """
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    gates: dict[str, bool] = {}
    for pair in lines[0].split(",") if lines else []:
        name, sep, value = pair.partition("=")
        if not sep or not name or value not in ("true", "false"):
            raise ControlPlaneError(
                f"controlplane feature-gates printed {pair!r}: expected Name=true or Name=false; "
                "rebuild the control plane (make controlplane)"
            )
        gates[name] = value == "true"
    return gates


def feature_gates(binary: Path = CONTROLPLANE_BINARY) -> dict[str, bool]:
    """The feature gates ``binary`` turns on: its components' and its version's kubelet's."""
    done = subprocess.run(
        [str(binary), "feature-gates"], capture_output=True, text=True, check=False, timeout=60
    )
    if done.returncode != 0:
        raise ControlPlaneError(
            f"{binary} feature-gates failed ({done.returncode}): {done.stderr.strip()[-500:]}; "
            "rebuild it (make controlplane, with K8S= for another version)"
        )
    return parse_feature_gates(done.stdout)


class ControlPlane:
    """One ``controlplane`` process: an API server, scheduler and controller manager."""

    def __init__(
        self,
        *,
        binary: Path = CONTROLPLANE_BINARY,
        data_dir: Path,
        audit_log: Path | None = None,
        gates_off: Sequence[str] = (),
    ) -> None:
        """Describe the control plane; nothing runs until :meth:`start`.

        ``audit_log``: where kube-apiserver writes its audit log (the binary's ``--audit-log``:
        every request at Metadata level, as JSON lines); None: no audit log.
        """
        self.binary = binary
        self.data_dir = data_dir
        self.audit_log = audit_log
        #: Feature gates of the control plane's list to turn off (``--feature-gates-off``).
        self.gates_off = tuple(gates_off)
        self.kubeconfig = data_dir / "admin.kubeconfig"
        self.log_file = data_dir / "controlplane.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._client: KubeClient | None = None
        # The binary's stdout lines, appended by the reader thread; _lines_changed is notified
        # on each new line and when stdout ends.
        self._lines: list[str] = []
        self._lines_changed = threading.Condition()
        self._stdout_closed = False

    @property
    def client(self) -> KubeClient:
        """An admin client (available after :meth:`start`)."""
        if self._client is None:
            raise ControlPlaneError("control plane not started")
        return self._client

    def start(self, *, timeout_s: float = DEFAULT_START_TIMEOUT_S) -> ControlPlane:
        """Start the binary and wait for its READY line.

        The binary picks free ports by binding and closing them before its servers bind
        again; another process may take one in between. A start that failed that way
        ("address already in use" in its log) is tried again, up to three times.
        """
        for attempt in range(3):
            try:
                return self._start_once(timeout_s=timeout_s)
            except ControlPlaneError as exc:
                if attempt == 2 or "address already in use" not in str(exc):
                    raise
        raise AssertionError("unreachable")

    def _start_once(self, *, timeout_s: float) -> ControlPlane:
        if not self.binary.exists():
            raise ControlPlaneError(
                f"{self.binary} does not exist: run `make controlplane` first "
                "(builds the local etcd/kube-apiserver/scheduler/controller-manager)"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            self._process = subprocess.Popen(
                dies_with_parent(
                    [
                        str(self.binary),
                        "--data-dir",
                        str(self.data_dir / "state"),
                        "--kubeconfig",
                        str(self.kubeconfig),
                        *([] if self.audit_log is None else ["--audit-log", str(self.audit_log)]),
                        *(
                            [f"--feature-gates-off={','.join(self.gates_off)}"]
                            if self.gates_off
                            else []
                        ),
                    ]
                ),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                # Own process group: stop() can signal everything the binary started.
                start_new_session=True,
            )
        assert self._process.stdout is not None
        stdout = self._process.stdout
        with self._lines_changed:
            self._lines.clear()
            self._stdout_closed = False

        def read_stdout() -> None:
            # Keep draining after READY so the child never blocks on a full pipe.
            for raw in stdout:
                with self._lines_changed:
                    self._lines.append(raw.decode(errors="replace").rstrip("\n"))
                    self._lines_changed.notify_all()
            with self._lines_changed:
                self._stdout_closed = True
                self._lines_changed.notify_all()

        threading.Thread(target=read_stdout, name="controlplane-stdout", daemon=True).start()
        if not self._wait_for_line(lambda line: line.startswith("READY "), 0, timeout_s):
            code = self._process.poll()
            self.stop()
            state = f"exited with {code}" if code is not None else f"not ready after {timeout_s} s"
            raise ControlPlaneError(
                f"control plane {state}; stdout: {self._lines!r}; last log lines:\n"
                f"{self.log_tail()}"
            )
        self._client = KubeClient.from_kubeconfig(self.kubeconfig, user_agent="dcu-dra-tests")
        return self

    def stop_apiserver(self, *, timeout_s: float = APISERVER_STOP_TIMEOUT_S) -> None:
        """Stop kube-apiserver alone and wait until it has exited (the start of an outage).

        etcd keeps its data, the scheduler and the controller manager keep running, and every
        client sees what it sees when a real cluster's API server goes away: refused
        connections. Idempotent.
        """
        self._signal_and_wait(signal.SIGUSR1, APISERVER_STOPPED, timeout_s=timeout_s)

    def start_apiserver(self, *, timeout_s: float = APISERVER_START_TIMEOUT_S) -> None:
        """Start kube-apiserver again (same port, certificates and etcd) and wait for /readyz.

        Idempotent: a running API server is left alone.
        """
        self._signal_and_wait(signal.SIGUSR2, APISERVER_READY, timeout_s=timeout_s)

    def _signal_and_wait(self, sig: signal.Signals, answer: str, *, timeout_s: float) -> None:
        """Send ``sig`` to the binary and wait for ``answer`` on its stdout."""
        process = self._process
        if process is None or process.poll() is not None:
            raise ControlPlaneError(f"control plane not running; cannot send {sig.name}")
        with self._lines_changed:
            seen = len(self._lines)
        process.send_signal(sig)
        if not self._wait_for_line(lambda line: line == answer, seen, timeout_s):
            code = process.poll()
            state = f"exited with {code}" if code is not None else f"no answer after {timeout_s} s"
            raise ControlPlaneError(
                f"control plane did not answer {sig.name} with {answer!r} ({state}); "
                f"last log lines:\n{self.log_tail()}"
            )

    def _wait_for_line(self, matches: Callable[[str], bool], start: int, timeout_s: float) -> bool:
        """Whether a stdout line from index ``start`` on matches, within ``timeout_s``."""
        with self._lines_changed:
            return self._lines_changed.wait_for(
                lambda: any(matches(line) for line in self._lines[start:]) or self._stdout_closed,
                timeout=timeout_s,
            ) and any(matches(line) for line in self._lines[start:])

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the supervisor's log (component logs are under the data dir)."""
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, *, timeout_s: float = DEFAULT_STOP_TIMEOUT_S) -> None:
        """SIGTERM, wait, then SIGKILL the process group; idempotent."""
        if self._client is not None:
            self._client.close()
            self._client = None
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(process.pid, signal.SIGKILL)  # stragglers of the group, if any
        except ProcessLookupError:
            pass
        process.wait()
        if process.stdout is not None:
            process.stdout.close()


# --- objects ------------------------------------------------------------------------------


def unique_name(prefix: str) -> str:
    """``<prefix>-<8 hex digits>``: a DNS label unique enough for one test session."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def load_yaml(text: str) -> list[dict[str, Any]]:
    """The non-empty documents of a multi-document YAML string."""
    return [doc for doc in yaml.safe_load_all(text) if doc]


def create_object(
    client: KubeClient, obj: Mapping[str, Any], *, namespace: str | None = None
) -> dict[str, Any]:
    """Create one object; ``namespace`` fills in a missing ``metadata.namespace``."""
    body = dict(obj)
    if namespace is not None and paths.resource_type(body).namespaced:
        body["metadata"] = {"namespace": namespace, **body.get("metadata", {})}
    return client.create(
        paths.collection_path(body, default_namespace=namespace or "default"), body
    )


def apply_yaml(
    client: KubeClient, text: str, *, namespace: str | None = None
) -> list[dict[str, Any]]:
    """Create every object of a multi-document YAML string, in order; returns what was created.

    Supports the kinds in :data:`dra_driver.cluster.kube.paths.KINDS` (Namespace, Node, Pod,
    DeviceClass, ResourceClaim(Template), ResourceSlice, ValidatingAdmissionPolicy(+Binding),
    ServiceAccount, ClusterRole(+Binding), DaemonSet, ...).
    """
    return [create_object(client, doc, namespace=namespace) for doc in load_yaml(text)]


# --- nodes --------------------------------------------------------------------------------


def create_ready_node(client: KubeClient, name: str, *, timeout_s: float = 30.0) -> dict[str, Any]:
    """Create a Node that reports Ready but has no kubelet; return it once it is schedulable.

    For tests that make the kubelet's DRA calls themselves: the scheduler allocates claims and
    binds pods to the node, and nothing starts them. The Ready condition is never renewed,
    which the control plane tolerates (its node grace periods are ten years). Returns after
    the node lifecycle controller removed the ``not-ready`` taint every new Node gets.
    """
    client.create(paths.nodes(), objects.node_object(name, objects.node_labels(name)))
    client.patch(
        paths.nodes(name, subresource="status"),
        {"status": objects.node_status(name, dt.datetime.now(dt.UTC))},
    )

    def schedulable() -> dict[str, Any] | None:
        node = client.get(paths.nodes(name))
        return None if (node.get("spec") or {}).get("taints") else node

    return wait_for(
        schedulable,
        timeout_s=timeout_s,
        description=f"node {name} to lose the not-ready taint of a new Node",
    )


# --- namespaces ---------------------------------------------------------------------------


def create_namespace(client: KubeClient, name: str, *, timeout_s: float = 30.0) -> dict[str, Any]:
    """Create a namespace and wait for its ``default`` ServiceAccount (pods need it)."""
    namespace = client.create(
        paths.namespaces(),
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
    )

    def has_default_service_account() -> bool:
        try:
            client.get(paths.service_accounts(name, "default"))
        except NotFound:
            return False
        return True

    wait_for(
        has_default_service_account,
        timeout_s=timeout_s,
        description=f"ServiceAccount {name}/default (created by the controller manager)",
    )
    return namespace


def delete_namespace(client: KubeClient, name: str) -> None:
    """Force-delete the namespace's pods (no kubelet may be left to do it), then the namespace."""
    try:
        for pod in client.list(paths.pods(name)).get("items") or []:
            try:
                client.delete(paths.pods(name, pod["metadata"]["name"]), grace_period_s=0)
            except NotFound:
                pass
        client.delete(paths.namespaces(name))
    except NotFound:
        pass


def ensure_object(client: KubeClient, obj: Mapping[str, Any]) -> dict[str, Any]:
    """Create ``obj`` unless an object of that name exists; return the server's object."""
    try:
        return client.create(paths.collection_path(obj), obj)
    except AlreadyExists:
        return client.get(paths.object_path(obj))


@contextlib.contextmanager
def temporary_objects(
    client: KubeClient, objects: Iterable[Mapping[str, Any]], *, timeout_s: float = 120.0
) -> Iterator[list[dict[str, Any]]]:
    """Create each object unless one of its name exists; on exit delete the ones created here.

    For cluster objects that several test modules need (RBAC, DeviceClasses, admission
    policies): objects already there belong to someone else and are kept. Ours are deleted
    newest first, and a failed delete is printed, not raised, so that cleanup never hides the
    test's own result. A Namespace that an earlier user deleted may still be terminating;
    nothing can be created in it until it is gone, so that is waited for (``timeout_s``).
    Yields the objects created, as the server returned them.
    """
    created: list[dict[str, Any]] = []
    try:
        for obj in objects:
            if obj["kind"] == "Namespace":
                _wait_until_not_terminating(client, obj["metadata"]["name"], timeout_s=timeout_s)
            try:
                created.append(client.create(paths.collection_path(obj), obj))
            except AlreadyExists:
                pass
        yield created
    finally:
        for obj in reversed(created):
            try:
                client.delete(paths.object_path(obj))
            except NotFound:
                pass
            except ApiError as exc:
                print(f"cleanup of {obj['kind']} {obj['metadata']['name']} failed: {exc}")


def _wait_until_not_terminating(client: KubeClient, name: str, *, timeout_s: float) -> None:
    """Wait until namespace ``name`` is Active or gone."""

    def settled() -> bool:
        try:
            namespace = client.get(paths.namespaces(name))
        except NotFound:
            return True
        return bool((namespace.get("status") or {}).get("phase") != "Terminating")

    wait_for(settled, timeout_s=timeout_s, description=f"namespace {name} to finish terminating")


# --- reading state ------------------------------------------------------------------------


def pod_condition(pod: Mapping[str, Any], kind: str) -> dict[str, Any] | None:
    """The pod condition of type ``kind``, if present."""
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind:
            return dict(condition)
    return None


def is_pod_running(pod: Mapping[str, Any]) -> bool:
    """Phase Running and Ready."""
    ready = pod_condition(pod, "Ready")
    return (pod.get("status") or {}).get("phase") == "Running" and bool(
        ready and ready.get("status") == "True"
    )


def wait_for_pod_running(
    client: KubeClient, namespace: str, name: str, *, timeout_s: float = 30.0
) -> dict[str, Any]:
    """Wait until a pod is Running and Ready; return it."""

    def running() -> dict[str, Any] | None:
        pod = client.get(paths.pods(namespace, name))
        return pod if is_pod_running(pod) else None

    return wait_for(
        running,
        timeout_s=timeout_s,
        description=f"pod {namespace}/{name} to be Running",
        details=lambda: _pod_summary(client, namespace, name),
    )


def wait_for_pod_gone(
    client: KubeClient, namespace: str, name: str, *, timeout_s: float = 30.0
) -> None:
    """Wait until a pod no longer exists."""

    def gone() -> bool:
        try:
            client.get(paths.pods(namespace, name))
        except NotFound:
            return True
        return False

    wait_for(
        gone,
        timeout_s=timeout_s,
        description=f"pod {namespace}/{name} to disappear",
        details=lambda: _pod_summary(client, namespace, name),
    )


def pod_claims(client: KubeClient, pod: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The ResourceClaims of a pod by pod claim name (template claims via the pod status)."""
    namespace = pod["metadata"]["namespace"]
    names = {
        entry["name"]: entry.get("resourceClaimName")
        for entry in (pod.get("status") or {}).get("resourceClaimStatuses") or []
    }
    for entry in (pod.get("spec") or {}).get("resourceClaims") or []:
        if entry.get("resourceClaimName"):
            names[entry["name"]] = entry["resourceClaimName"]
    return {
        pod_claim: client.get(paths.resource_claims(namespace, claim_name))
        for pod_claim, claim_name in names.items()
        if claim_name
    }


def allocation_results(claim: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``status.allocation.devices.results`` of a claim (empty when not allocated)."""
    allocation = (claim.get("status") or {}).get("allocation") or {}
    return list((allocation.get("devices") or {}).get("results") or [])


def node_allocation(node: str, devices: Mapping[str, Any]) -> dict[str, Any]:
    """A claim's ``status.allocation`` as the scheduler writes it for a node-local device.

    ``devices``: the allocation's ``devices`` (its ``results``, and ``config`` if any); the node
    selector pins the claim to ``node`` by name.
    """
    return {
        "devices": dict(devices),
        "nodeSelector": {
            "nodeSelectorTerms": [
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}
            ]
        },
    }


def create_allocated_claim(
    client: KubeClient,
    *,
    namespace: str,
    name: str,
    requests: Iterable[Mapping[str, Any]],
    allocation: Mapping[str, Any],
) -> dict[str, Any]:
    """Create a ResourceClaim of ``requests`` and write ``allocation`` as its status.

    What the scheduler would have done for it, without a pod: the claim as the API server
    stores it after the status write.
    """
    created = client.create(
        paths.resource_claims(namespace),
        {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceClaim",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"devices": {"requests": [dict(request) for request in requests]}},
        },
    )
    created["status"] = {"allocation": dict(allocation)}
    return client.replace(paths.resource_claims(namespace, name, subresource="status"), created)


def slice_devices(
    slices: Iterable[Mapping[str, Any]], *, driver: str
) -> Iterator[tuple[tuple[str, str], Mapping[str, Any]]]:
    """``((pool, device name), device)`` for every device that ``driver``'s slices offer."""
    for slice_ in slices:
        spec = slice_.get("spec") or {}
        if spec.get("driver") != driver:
            continue
        pool = str((spec.get("pool") or {}).get("name"))
        for device in spec.get("devices") or []:
            yield (pool, str(device["name"])), device


#: A quarter of a Z100 (15 of its 60 CUs, 8188 MiB), as deploy/examples/quarter-card.yaml asks.
QUARTER_CARD: Mapping[str, str] = {"cores": "15", "memory": "8188Mi"}


def dcu_claim_template(
    name: str, *, namespace: str | None = None, capacity: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """A ResourceClaimTemplate of one request ``dcu``: a share of a card, or a whole one.

    ``capacity``: what the share asks for (``cores``, ``memory``) on the vDCU class; None: a
    whole card of the driver's own class. ``namespace`` None leaves it to the create call.
    """
    exactly: dict[str, Any] = {"deviceClassName": DRIVER_NAME}
    if capacity is not None:
        exactly = {
            "deviceClassName": f"vdcu.{DRIVER_NAME}",
            "capacity": {"requests": dict(capacity)},
        }
    metadata = {"name": name} if namespace is None else {"name": name, "namespace": namespace}
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaimTemplate",
        "metadata": metadata,
        "spec": {"spec": {"devices": {"requests": [{"name": "dcu", "exactly": exactly}]}}},
    }


def _pod_summary(client: KubeClient, namespace: str, name: str) -> object:
    """Phase, conditions and node of a pod, for timeout messages."""
    try:
        pod = client.get(paths.pods(namespace, name))
    except NotFound:
        return "pod not found"
    status = pod.get("status") or {}
    return {
        "node": (pod.get("spec") or {}).get("nodeName"),
        "phase": status.get("phase"),
        "conditions": [
            {k: c.get(k) for k in ("type", "status", "reason", "message")}
            for c in status.get("conditions") or []
        ],
        "deletionTimestamp": pod["metadata"].get("deletionTimestamp"),
    }


def resource_slice(
    *,
    node_name: str,
    node_uid: str | None,
    driver: str,
    devices: Sequence[Mapping[str, Any]],
    pool: str | None = None,
) -> dict[str, Any]:
    """A node-local ResourceSlice as the Go publisher writes it (resource-api.md §2.1)."""
    metadata: dict[str, Any] = {"generateName": f"{node_name}-{driver}-"}
    if node_uid:
        metadata["ownerReferences"] = [
            {
                "apiVersion": "v1",
                "kind": "Node",
                "name": node_name,
                "uid": node_uid,
                "controller": True,
            }
        ]
    return {
        "apiVersion": paths.RESOURCE_V1,
        "kind": "ResourceSlice",
        "metadata": metadata,
        "spec": {
            "driver": driver,
            "nodeName": node_name,
            "pool": {"name": pool or node_name, "generation": 1, "resourceSliceCount": 1},
            "devices": [dict(device) for device in devices],
        },
    }
