"""Volcano's scheduler and controller manager against the local control plane (``make volcano``).

Volcano cannot be built from the Go module proxy here (it refuses ``volcano.sh/volcano``), so
this runs Volcano binaries it is given: a directory with ``vc-scheduler`` and
``vc-controller-manager``, and Volcano's CRD directory of the same version
(``config/crd/volcano/bases``). :class:`VolcanoInstall` checks them; :class:`Volcano` installs
the CRDs, creates the queue, starts both binaries as children that die with their parent and
stops them. Volcano's admission webhooks are not run: nothing defaults or validates Volcano's
objects, so the suite writes every field the webhooks would fill in (``schedulerName``,
``queue``, ``minAvailable``).

What Volcano needs from DRA is pinned here, where the suite checks it: the scheduler's feature
gates (:data:`FEATURE_GATES`) and its configuration (:data:`SCHEDULER_CONF`: ``gang`` and the
``predicates`` plugin with ``predicate.DynamicResourceAllocationEnable``).
"""

from __future__ import annotations

import functools
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml

from dra_driver.cluster.kube import AlreadyExists, KubeClient, paths
from dra_driver.errors import DriverError
from dra_driver.testing.processes import dies_with_parent, log_tail, terminate
from dra_driver.testing.waiting import wait_for

SCHEDULER_BINARY: Final = "vc-scheduler"
CONTROLLER_MANAGER_BINARY: Final = "vc-controller-manager"
#: The CRDs the suite uses; the directory may hold more, all of which are installed.
REQUIRED_CRDS: Final = (
    "batch.volcano.sh_jobs.yaml",
    "scheduling.volcano.sh_podgroups.yaml",
    "scheduling.volcano.sh_queues.yaml",
)
#: DRA is GA (always on) in Kubernetes 1.36, consumable capacity beta and on; both are set so
#: that a Volcano built on older Kubernetes libraries gets them too (the shares need the
#: second: without it the allocator ignores allowMultipleAllocations and capacity requests).
FEATURE_GATES: Final = "DynamicResourceAllocation=true,DRAConsumableCapacity=true"
#: Volcano's default actions and tiers with DRA turned on in ``predicates``.
SCHEDULER_CONF: Final = """\
actions: "enqueue, allocate, backfill"
tiers:
- plugins:
  - name: priority
  - name: gang
    enablePreemptable: false
  - name: conformance
- plugins:
  - name: drf
    enablePreemptable: false
  - name: predicates
    arguments:
      predicate.DynamicResourceAllocationEnable: true
  - name: proportion
  - name: nodeorder
  - name: binpack
"""
#: What the suite needs of vc-controller-manager. The default ("*") also starts the jobflow
#: controllers, whose CRDs (flow.volcano.sh) are not installed, and a controller manager waits
#: for every informer it starts: none would run.
CONTROLLERS: Final = "job-controller,pg-controller,queue-controller,gc-controller"
#: Volcano's scheduling period; its default of 1 s would add up to a second to every check.
SCHEDULE_PERIOD: Final = "200ms"
QUEUES_V1BETA1: Final = "scheduling.volcano.sh/v1beta1"
JOBS_V1ALPHA1: Final = "batch.volcano.sh/v1alpha1"
#: CRDs are Established within a second or two; a loaded machine needs more.
CRD_TIMEOUT_S: Final = 60.0
#: How long Volcano's binaries may take to create the default queue's status and sync.
READY_TIMEOUT_S: Final = 60.0


class VolcanoError(DriverError):
    """Volcano's binaries or CRDs are missing, or Volcano did not start (one line: what to do)."""


@dataclass(frozen=True, slots=True)
class VolcanoInstall:
    """Where Volcano's binaries and CRDs are."""

    scheduler: Path
    controller_manager: Path
    crd_dir: Path

    @classmethod
    def from_dirs(cls, bin_dir: Path, crd_dir: Path) -> VolcanoInstall:
        """Check that ``bin_dir`` has both binaries and ``crd_dir`` the CRDs the suite uses."""
        missing = [
            str(bin_dir / name)
            for name in (SCHEDULER_BINARY, CONTROLLER_MANAGER_BINARY)
            if not (bin_dir / name).is_file()
        ]
        missing += [str(crd_dir / name) for name in REQUIRED_CRDS if not (crd_dir / name).is_file()]
        if missing:
            raise VolcanoError(
                f"Volcano is not there: missing {', '.join(missing)}. Set VOLCANO_BIN to a "
                f"directory with {SCHEDULER_BINARY} and {CONTROLLER_MANAGER_BINARY} and "
                "VOLCANO_CRDS to Volcano's config/crd/volcano/bases of the same version "
                "(README, With Volcano)"
            )
        return cls(
            scheduler=bin_dir / SCHEDULER_BINARY,
            controller_manager=bin_dir / CONTROLLER_MANAGER_BINARY,
            crd_dir=crd_dir,
        )

    def crd_files(self) -> list[Path]:
        """Every CRD manifest of the directory, in name order."""
        return sorted(self.crd_dir.glob("*.yaml"))


def scheduler_command(
    install: VolcanoInstall, kubeconfig: Path, conf: Path, verbosity: int = 2
) -> list[str]:
    """vc-scheduler for the local control plane: no leader election, no extra listeners.

    ``verbosity`` 3 logs which action (allocate or backfill) binds each task.
    """
    return [
        str(install.scheduler),
        f"--kubeconfig={kubeconfig}",
        f"--scheduler-conf={conf}",
        f"--feature-gates={FEATURE_GATES}",
        f"--schedule-period={SCHEDULE_PERIOD}",
        "--leader-elect=false",
        # Its cache dumper and metrics would listen on fixed ports; nothing here reads them.
        "--cache-dumper=false",
        "--enable-metrics=false",
        "--enable-healthz=false",
        "--listen-address=127.0.0.1:0",
        "--healthz-address=127.0.0.1:0",
        f"--v={verbosity}",
    ]


def controller_manager_command(install: VolcanoInstall, kubeconfig: Path) -> list[str]:
    """vc-controller-manager: the job, podgroup and queue controllers, no leader election."""
    return [
        str(install.controller_manager),
        f"--kubeconfig={kubeconfig}",
        f"--controllers={CONTROLLERS}",
        "--leader-elect=false",
        "--enable-metrics=false",
        "--enable-healthz=false",
        "--listen-address=127.0.0.1:0",
        "--healthz-address=127.0.0.1:0",
        "--v=2",
    ]


#: A quantity that asks for nothing: "0", "0.0", "0m", "0Gi".
_ZERO_QUANTITY: Final = re.compile(r"0*\.?0*[A-Za-z]*")


def best_effort(pod: dict[str, Any]) -> bool:
    """Whether Volcano takes the pod for BestEffort: no container asks for any resource.

    Volcano counts only requests (cpu, memory, extended resources) in a task's resources, not
    ResourceClaims. Its gang plugin counts pending BestEffort tasks as ready, its allocate action
    skips them and its backfill action binds them one by one as each fits: a job of such tasks
    gets no gang. (Volcano api.NewTaskInfo, JobInfo.IsReady, allocate.go, backfill.go.)
    """
    spec = pod.get("spec") or {}
    for container in [*spec.get("initContainers", []), *spec.get("containers", [])]:
        requests = (container.get("resources") or {}).get("requests") or {}
        if any(not _ZERO_QUANTITY.fullmatch(str(quantity)) for quantity in requests.values()):
            return False
    return True


def queue(name: str, *, capability: dict[str, str] | None = None) -> dict[str, Any]:
    """A Volcano Queue; ``capability`` caps what its jobs may hold (``nvidia.com/gpu: 2``...)."""
    spec: dict[str, Any] = {"weight": 1, "reclaimable": False}
    if capability:
        spec["capability"] = dict(capability)
    return {
        "apiVersion": QUEUES_V1BETA1,
        "kind": "Queue",
        "metadata": {"name": name},
        "spec": spec,
    }


def queues_path(name: str | None = None) -> str:
    """The path of Volcano's Queues (cluster-scoped), or of one."""
    return paths.resource_path(QUEUES_V1BETA1, "queues", name=name)


def jobs_path(namespace: str, name: str | None = None) -> str:
    """The path of a namespace's Volcano Jobs, or of one."""
    return paths.resource_path(JOBS_V1ALPHA1, "jobs", namespace=namespace, name=name)


def podgroups_path(namespace: str, name: str | None = None) -> str:
    """The path of a namespace's PodGroups, or of one."""
    return paths.resource_path(QUEUES_V1BETA1, "podgroups", namespace=namespace, name=name)


class Volcano:
    """Volcano's CRDs, the default queue, vc-scheduler and vc-controller-manager, running."""

    def __init__(
        self,
        install: VolcanoInstall,
        client: KubeClient,
        kubeconfig: Path,
        work: Path,
        scheduler_verbosity: int = 2,
    ):
        self.install = install
        self.scheduler_verbosity = scheduler_verbosity
        self.client = client
        self.kubeconfig = kubeconfig
        self.work = work
        self.scheduler_log = work / "vc-scheduler.log"
        self.controller_manager_log = work / "vc-controller-manager.log"
        self._processes: list[tuple[str, subprocess.Popen[bytes], Path]] = []

    def start(self) -> Volcano:
        """Install the CRDs, create the default queue, start both binaries."""
        self.work.mkdir(parents=True, exist_ok=True)
        self.install_crds()
        self.create_queue(queue("default"))
        conf = self.work / "volcano-scheduler.conf"
        conf.write_text(SCHEDULER_CONF)
        self._start(
            CONTROLLER_MANAGER_BINARY,
            controller_manager_command(self.install, self.kubeconfig),
            self.controller_manager_log,
        )
        self._start(
            SCHEDULER_BINARY,
            scheduler_command(self.install, self.kubeconfig, conf, self.scheduler_verbosity),
            self.scheduler_log,
        )
        return self

    def install_crds(self) -> None:
        """Create every CRD of the install (kept if it exists) and wait until each is served."""
        names = []
        for path in self.install.crd_files():
            for document in yaml.safe_load_all(path.read_text()):
                if not document:
                    continue
                names.append(document["metadata"]["name"])
                try:
                    self.client.create(_CRDS, document)
                except AlreadyExists:
                    pass
        for name in names:
            wait_for(
                functools.partial(self._established, name),
                timeout_s=CRD_TIMEOUT_S,
                description=f"CRD {name} to be established",
            )

    def _established(self, name: str) -> bool:
        crd = self.client.get(f"{_CRDS}/{name}")
        conditions = (crd.get("status") or {}).get("conditions") or []
        return any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)

    def create_queue(self, body: dict[str, Any]) -> None:
        """Create a queue (kept if it exists)."""
        try:
            self.client.create(queues_path(), body)
        except AlreadyExists:
            pass

    def check_running(self) -> None:
        """VolcanoError naming the binary and its log when one of them has exited."""
        for name, process, log in self._processes:
            if process.poll() is not None:
                raise VolcanoError(
                    f"{name} exited with {process.returncode} (log {log}):\n{log_tail(log, 20)}"
                )

    def stop(self) -> None:
        """SIGTERM, then SIGKILL both binaries (the scheduler first)."""
        for _, process, _ in reversed(self._processes):
            terminate(process)
        self._processes.clear()

    def _start(self, name: str, command: Sequence[str], log: Path) -> None:
        with log.open("ab") as output:
            process = subprocess.Popen(
                dies_with_parent(command),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._processes.append((name, process, log))


_CRDS: Final = paths.resource_path("apiextensions.k8s.io/v1", "customresourcedefinitions")
