"""``make volcano``: Volcano's scheduler allocating DCU shares through DRA, checked for real.

The local control plane, Volcano's vc-scheduler and vc-controller-manager
(:mod:`dra_driver.testing.volcano`: binaries given by VOLCANO_BIN, CRDs by VOLCANO_CRDS) and
mock DCU nodes: fake kubelets with the real ``dcu-dra kubelet-plugin``
(:func:`bench.placement.placement_node`, the one place to swap for real nodes). Each check
prints one line with its time, and the run goes on after a failure; it exits 1 when one
failed. Checks, in order (each leaves its nodes for the next and deletes its namespace):

- ``gang-of-four``: a Volcano Job of 4 quarter-card tasks, ``minAvailable: 4``, on a node of one
  card: all four bound in one scheduling cycle, prepared by the plugin, CU masks disjoint.
- ``gang-waits``: 5 quarter-card tasks, ``minAvailable: 5``, on that card (4 slots): for a while
  no task is bound, no claim allocated, nothing prepared (the plugin's checkpoint, the fake
  kubelet's calls); a second one-card node appears and all five start.
- ``whole-and-shares``: a job with a whole-card task and two quarter-card tasks (two cards).
- ``queue-capability``: a queue capped at 2 CPUs holds back a job whose tasks need 3, with
  nothing allocated; a job of 2 in the same queue runs.
- ``placement``: 16 quarter-card pods with ``schedulerName: volcano`` on 2 nodes x 4 DCUs; where
  they land (``bench.placement``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.node import BenchNode
from bench.placement import format_summary, measure, placement_node
from dra_driver import DRIVER_NAME
from dra_driver.cluster.kube import KubeClient, paths
from dra_driver.errors import DriverError
from dra_driver.testing.cluster import (
    QUARTER_CARD,
    REPO_ROOT,
    ControlPlane,
    allocation_results,
    create_namespace,
    dcu_claim_template,
    delete_namespace,
    ensure_object,
    is_pod_running,
    load_yaml,
    unique_name,
)
from dra_driver.testing.fakekubelet import PREPARE
from dra_driver.testing.volcano import (
    JOBS_V1ALPHA1,
    Volcano,
    VolcanoError,
    VolcanoInstall,
    best_effort,
    jobs_path,
    podgroups_path,
    queue,
)
from dra_driver.testing.waiting import wait_for

#: All pods of a job bound, allocated and prepared: seconds; a loaded machine needs more.
RUN_TIMEOUT_S = 120.0
#: How long the waiting gang is watched: many of Volcano's scheduling periods (200 ms).
GANG_WAIT_S = 15.0
#: A gang's pods are bound in one cycle; PodScheduled times have a resolution of 1 s.
TOGETHER_S = 2.0
NODE_LABEL = "volcano.dcu.hygon.com/suite"


class CheckError(AssertionError):
    """A check found what it must not (one line: what)."""


@dataclass
class Suite:
    """What the checks share: the cluster, Volcano, the nodes started so far."""

    plane: ControlPlane
    volcano: Volcano
    work: Path
    run: str
    nodes: list[BenchNode] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def client(self) -> KubeClient:
        return self.plane.client

    def add_node(self, dcus: int) -> BenchNode:
        """A new node of ``dcus`` Z100s, registered and published, labelled for this run."""
        index = len(self.nodes)
        node = placement_node(
            self.plane,
            self.work / f"n{index}",
            f"{self.run}-node-{index + 1}",
            {NODE_LABEL: self.run},
            dcus=dcus,
        )
        self.nodes.append(node)
        node.start()
        node.wait_ready()
        return node

    def stop_nodes(self) -> None:
        for node in reversed(self.nodes):
            node.close()
        self.nodes.clear()


# --- objects -------------------------------------------------------------------------------


def share_template(namespace: str, name: str = "quarter-dcu") -> dict[str, Any]:
    return dcu_claim_template(name, namespace=namespace, capacity=QUARTER_CARD)


def whole_card_template(namespace: str, name: str = "whole-dcu") -> dict[str, Any]:
    return dcu_claim_template(name, namespace=namespace)


#: Each task's cpu request unless a check sets its own. A real job's pods request cpu; a task
#: without any cpu/memory request is BestEffort to Volcano, which binds such tasks one by one
#: outside the gang (README, With Volcano), as deploy/examples/volcano shows how to avoid.
TASK_CPU = "100m"


def task(
    name: str, replicas: int, template: str, run: str, cpu: str | None = TASK_CPU
) -> dict[str, Any]:
    """A task of ``replicas`` pods, each with its own claim from ``template``."""
    container: dict[str, Any] = {
        "name": "ctr",
        "image": "registry.k8s.io/pause:3.10",
        "resources": {"claims": [{"name": "dcu"}]},
    }
    if cpu:
        container["resources"]["requests"] = {"cpu": cpu}
        container["resources"]["limits"] = {"cpu": cpu}
    return {
        "name": name,
        "replicas": replicas,
        "template": {
            "spec": {
                "restartPolicy": "Never",
                "nodeSelector": {NODE_LABEL: run},
                "containers": [container],
                "resourceClaims": [{"name": "dcu", "resourceClaimTemplateName": template}],
            }
        },
    }


def volcano_job(
    name: str, namespace: str, tasks: list[dict[str, Any]], *, queue_name: str = "default"
) -> dict[str, Any]:
    """A Volcano Job with every field the (skipped) admission webhook would default."""
    return {
        "apiVersion": JOBS_V1ALPHA1,
        "kind": "Job",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "schedulerName": "volcano",
            "queue": queue_name,
            "minAvailable": sum(t["replicas"] for t in tasks),
            "tasks": tasks,
        },
    }


# --- reading the cluster -------------------------------------------------------------------


def pods_of(client: KubeClient, namespace: str) -> list[dict[str, Any]]:
    return list(client.list(paths.pods(namespace))["items"])


def claims_of(client: KubeClient, namespace: str) -> list[dict[str, Any]]:
    return list(client.list(paths.resource_claims(namespace))["items"])


def wait_all_running(client: KubeClient, namespace: str, count: int) -> list[dict[str, Any]]:
    def running() -> list[dict[str, Any]] | None:
        pods = [pod for pod in pods_of(client, namespace) if is_pod_running(pod)]
        return pods if len(pods) == count else None

    result: list[dict[str, Any]] = wait_for(
        running, timeout_s=RUN_TIMEOUT_S, description=f"{count} pods of {namespace} to run"
    )
    return result


def scheduled_at(pod: Mapping[str, Any]) -> float:
    """When the pod was bound (its PodScheduled condition), in epoch seconds."""
    for condition in pod["status"].get("conditions") or []:
        if condition["type"] == "PodScheduled" and condition["status"] == "True":
            return time.mktime(time.strptime(condition["lastTransitionTime"], "%Y-%m-%dT%H:%M:%SZ"))
    raise CheckError(f"pod {pod['metadata']['name']} has no PodScheduled=True condition")


def check_nodes(suite: Suite) -> None:
    """Every node's plugin files are consistent: CU masks and pipes disjoint, nothing extra."""
    problems = [problem for node in suite.nodes for problem in node.problems()]
    if problems:
        raise CheckError("; ".join(problems))


def prepared_claims(suite: Suite) -> int:
    return sum(len(node.plugin.checkpoint_claims()) for node in suite.nodes)


def prepare_calls(suite: Suite) -> int:
    return sum(len(node.kubelet.calls(method=PREPARE)) for node in suite.nodes)


@dataclass
class Namespace:
    """A namespace for one check, deleted (and its claims unprepared) afterwards."""

    suite: Suite
    name: str = ""

    def __enter__(self) -> str:
        self.name = unique_name("vc")
        create_namespace(self.suite.client, self.name)
        return self.name

    def __exit__(self, *exc: object) -> None:
        client = self.suite.client
        for job in client.list(jobs_path(self.name))["items"]:
            client.delete(jobs_path(self.name, job["metadata"]["name"]))
        delete_namespace(client, self.name)
        wait_for(
            lambda: not pods_of(client, self.name),
            timeout_s=RUN_TIMEOUT_S,
            description=f"the pods of {self.name} to go",
        )
        wait_for(
            lambda: prepared_claims(self.suite) == 0,
            timeout_s=RUN_TIMEOUT_S,
            description="every claim to be unprepared",
        )


# --- the checks ----------------------------------------------------------------------------


def gang_of_four(suite: Suite) -> str:
    client = suite.client
    suite.add_node(dcus=1)
    with Namespace(suite) as ns:
        client.create(paths.resource_claim_templates(ns), share_template(ns))
        job = volcano_job("gang", ns, [task("worker", 4, "quarter-dcu", suite.run)])
        client.create(jobs_path(ns), job)
        pods = wait_all_running(client, ns, 4)
        times = sorted(scheduled_at(pod) for pod in pods)
        if times[-1] - times[0] > TOGETHER_S:
            raise CheckError(f"the four tasks were bound {times[-1] - times[0]:.0f} s apart")
        cards = {allocation_results(c)[0]["device"] for c in claims_of(client, ns)}
        if prepared_claims(suite) != 4 or len(cards) != 1:
            raise CheckError(f"{prepared_claims(suite)} claims prepared on cards {cards}")
        check_nodes(suite)
    return "4 tasks bound together on one card, 4 shares prepared, CU masks disjoint"


def best_effort_cause(pods: list[dict[str, Any]]) -> str:
    """Why Volcano bound part of a gang, when the cause is that its tasks are BestEffort."""
    if not pods or not all(best_effort(pod) for pod in pods):
        return ""
    return (
        "; cause: the tasks request no cpu/memory, so Volcano takes them for BestEffort: "
        "its gang counts them ready while pending and its backfill action binds each that fits "
        "(README, With Volcano)"
    )


def gang_waits(suite: Suite) -> str:
    client = suite.client
    with Namespace(suite) as ns:
        client.create(paths.resource_claim_templates(ns), share_template(ns))
        calls_before = prepare_calls(suite)
        client.create(
            jobs_path(ns), volcano_job("gang5", ns, [task("w", 5, "quarter-dcu", suite.run)])
        )
        wait_for(
            lambda: len(claims_of(client, ns)) == 5 or None,
            timeout_s=RUN_TIMEOUT_S,
            description="the job controller to create five pods and their claims",
        )
        deadline = time.monotonic() + GANG_WAIT_S
        while time.monotonic() < deadline:
            pods = pods_of(client, ns)
            bound = [p["metadata"]["name"] for p in pods if p["spec"].get("nodeName")]
            allocated = [
                c["metadata"]["name"] for c in claims_of(client, ns) if allocation_results(c)
            ]
            if bound or allocated or prepared_claims(suite) or prepare_calls(suite) != calls_before:
                raise CheckError(
                    f"while the gang waited: bound {bound}, allocated {allocated}, "
                    f"{prepared_claims(suite)} prepared, "
                    f"{prepare_calls(suite) - calls_before} prepare calls"
                    f"{best_effort_cause(pods)}"
                )
            time.sleep(0.5)
        [group] = client.list(podgroups_path(ns))["items"]
        phase = (group.get("status") or {}).get("phase")
        suite.add_node(dcus=1)
        started = time.monotonic()
        wait_all_running(client, ns, 5)
        after = time.monotonic() - started
        check_nodes(suite)
    return (
        f"{GANG_WAIT_S:.0f} s with none bound, allocated or prepared (PodGroup {phase}); "
        f"all 5 running {after:.1f} s after a second card appeared"
    )


def whole_and_shares(suite: Suite) -> str:
    client = suite.client
    while len(suite.nodes) < 2:  # two cards: gang-waits adds the second unless it failed early
        suite.add_node(dcus=1)
    with Namespace(suite) as ns:
        client.create(paths.resource_claim_templates(ns), share_template(ns))
        client.create(paths.resource_claim_templates(ns), whole_card_template(ns))
        tasks = [
            task("master", 1, "whole-dcu", suite.run),
            task("worker", 2, "quarter-dcu", suite.run),
        ]
        client.create(jobs_path(ns), volcano_job("mixed", ns, tasks))
        wait_all_running(client, ns, 3)
        whole: list[tuple[str, str]] = []
        shares: list[tuple[str, str]] = []
        for claim in claims_of(client, ns):
            [result] = allocation_results(claim)
            card = (result["pool"], result["device"])
            [request] = claim["spec"]["devices"]["requests"]
            is_whole = request["exactly"]["deviceClassName"] == DRIVER_NAME
            (whole if is_whole else shares).append(card)
        if len(whole) != 1 or len(shares) != 2 or whole[0] in shares:
            raise CheckError(f"whole card {whole}, shares {shares}")
        check_nodes(suite)
    return "the whole card and the two shares on different cards, all prepared"


def queue_capability(suite: Suite) -> str:
    client = suite.client
    capped = f"{suite.run}-capped"
    suite.volcano.create_queue(queue(capped, capability={"cpu": "2"}))
    with Namespace(suite) as ns:
        client.create(paths.resource_claim_templates(ns), share_template(ns))
        big = volcano_job(
            "big", ns, [task("w", 3, "quarter-dcu", suite.run, cpu="1")], queue_name=capped
        )
        client.create(jobs_path(ns), big)
        time.sleep(GANG_WAIT_S)
        bound = [p for p in pods_of(client, ns) if p["spec"].get("nodeName")]
        allocated = [c for c in claims_of(client, ns) if allocation_results(c)]
        if bound or allocated:
            raise CheckError(f"{len(bound)} pods bound, {len(allocated)} claims allocated")
        client.delete(jobs_path(ns, "big"))
        wait_for(lambda: not pods_of(client, ns), timeout_s=RUN_TIMEOUT_S, description="big gone")
        small = volcano_job(
            "small", ns, [task("w", 2, "quarter-dcu", suite.run, cpu="1")], queue_name=capped
        )
        client.create(jobs_path(ns), small)
        wait_all_running(client, ns, 2)
        check_nodes(suite)
    return (
        f"3 x 1 CPU held back by a 2-CPU queue for {GANG_WAIT_S:.0f} s, nothing allocated; "
        "2 x 1 CPU ran"
    )


def placement(suite: Suite) -> str:
    suite.stop_nodes()
    result = measure(suite.plane, suite.work / "placement", pods=16, scheduler="volcano")
    suite.figures["placement"] = {
        "summary": [line.strip() for line in format_summary(result.summary)],
        "all_running_s": result.all_running_s,
        "load_before": result.load_before,
    }
    return "; ".join(line.strip() for line in format_summary(result.summary)[1:])


CHECKS: list[tuple[str, Callable[[Suite], str]]] = [
    ("gang-of-four", gang_of_four),
    ("gang-waits", gang_waits),
    ("whole-and-shares", whole_and_shares),
    ("queue-capability", queue_capability),
    ("placement", placement),
]


def run_checks(suite: Suite, say: Callable[[str], None]) -> list[dict[str, Any]]:
    """Run every check in order; one line each. A failed check does not stop the others."""
    results = []
    for name, check in CHECKS:
        started = time.monotonic()
        try:
            suite.volcano.check_running()
            detail = check(suite)
            ok = True
        except (AssertionError, DriverError) as exc:
            detail = str(exc).splitlines()[0]
            ok = False
        elapsed = time.monotonic() - started
        say(f"{'PASS' if ok else 'FAIL'} {name:<17} {elapsed:6.1f} s  {detail}")
        results.append({"check": name, "ok": ok, "seconds": round(elapsed, 1), "detail": detail})
    return results


def keep_logs(volcano: Volcano, into: Path) -> None:
    """Copy Volcano's logs out of the run's temporary directory, which is removed at the end."""
    into.mkdir(parents=True, exist_ok=True)
    for log in (volcano.scheduler_log, volcano.controller_manager_log):
        if log.exists():
            shutil.copyfile(log, into / log.name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.volcano.suite", description=__doc__)
    parser.add_argument("--volcano-bin", type=Path, required=True)
    parser.add_argument("--volcano-crds", type=Path, required=True)
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--logs", type=Path, help="copy vc-scheduler's and vc-controller-manager's logs here"
    )
    parser.add_argument(
        "--scheduler-v", type=int, default=2, help="vc-scheduler's -v (3: backfill binds)"
    )
    args = parser.parse_args(argv)
    try:
        install = VolcanoInstall.from_dirs(args.volcano_bin, args.volcano_crds)
    except VolcanoError as exc:
        print(f"volcano: {exc}", file=sys.stderr)
        return 2
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="vc-", dir="/tmp") as tmp:
        work = Path(tmp)
        plane = ControlPlane(data_dir=work / "plane")
        volcano: Volcano | None = None
        suite: Suite | None = None
        try:
            plane.start()
            for obj in load_yaml((REPO_ROOT / "deploy" / "deviceclass.yaml").read_text()):
                ensure_object(plane.client, obj)
            volcano = Volcano(
                install, plane.client, plane.kubeconfig, work / "volcano", args.scheduler_v
            ).start()
            print(f"control plane and Volcano up in {time.monotonic() - started:.1f} s")
            suite = Suite(plane, volcano, work, unique_name("vc"))
            results = run_checks(suite, print)
        except (AssertionError, DriverError) as exc:
            print(f"volcano: {str(exc).splitlines()[0]}", file=sys.stderr)
            return 1
        finally:
            if suite is not None:
                suite.stop_nodes()
            if volcano is not None:
                volcano.stop()
                if args.logs is not None:
                    keep_logs(volcano, args.logs)
            plane.stop()
    total = time.monotonic() - started
    passed = sum(result["ok"] for result in results)
    print(f"{passed} passed, {len(CHECKS) - passed} failed in {total:.0f} s")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        figures = suite.figures if suite is not None else {}
        args.json.write_text(json.dumps({"checks": results, **figures}, indent=2) + "\n")
    return 0 if passed == len(CHECKS) else 1


if __name__ == "__main__":
    sys.exit(main())
