"""The demo's steps against a real control plane: start, apply, wait, show, tear down.

:class:`DemoSession` owns everything it starts and :meth:`DemoSession.teardown` stops it in
reverse order, whatever step failed. Every step that can fail runs inside
:func:`~dra_driver.tools.demo.console.step`, so a failure is one line naming the step and its log.
"""

from __future__ import annotations

import json
import logging
import signal
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from dra_driver import DRIVER_NAME
from dra_driver.cluster.kube import NotFound, paths
from dra_driver.prepare.plugin import VDEV_SUBDIR
from dra_driver.testing.cluster import (
    REPO_ROOT,
    ControlPlane,
    create_namespace,
    create_object,
    is_pod_running,
    load_yaml,
)
from dra_driver.testing.container import runtime_unavailable_reason
from dra_driver.testing.fakekubelet import UNPREPARE
from dra_driver.testing.plugin_process import PluginProcess
from dra_driver.testing.waiting import wait_for
from dra_driver.tools.demo.console import DemoError, say, shown, step
from dra_driver.tools.demo.containers import (
    ContainerTarget,
    VerifyOutcome,
    failure_message,
    format_outcomes,
    lay_out,
    run_verify,
)
from dra_driver.tools.demo.nodes import DemoNode, describe_inventory
from dra_driver.tools.demo.realnodes import IN_CONTAINER_PYZ, RealDemoNodes
from dra_driver.tools.demo.table import ShareRow, build_rows, format_json, format_table
from dra_driver.tools.pyz import build_pyz
from dra_driver.vdcu.vdev import VdevConfig, read_vdev_dir, vdev_file_name

logger = logging.getLogger(__name__)

DEPLOY_DIR = REPO_ROOT / "deploy"
#: ``make kubectl``'s build, the cluster's own version (else the one on PATH).
KUBECTL = REPO_ROOT / "build" / "bin" / "kubectl"
#: Cluster objects, in dependency order (the namespace and account before their users).
DEPLOY_FILES = ("rbac.yaml", "deviceclass.yaml", "admission-claims.yaml", "admission-slices.yaml")
NODE_NAMES = ("dcu-node-1", "dcu-node-2")
#: The share whose vdev file and CDI spec the demo prints (deploy/examples/quarter-card.yaml).
SHOWCASE_POD = "dcu-quarter/quarter"
#: Scheduling, allocation and prepare of all example pods take ~1 s; a loaded machine more.
PODS_TIMEOUT_S = 60.0
#: Deleting the pods makes the fake kubelets unprepare their claims: well under a second each.
TEARDOWN_TIMEOUT_S = 30.0


class DemoSession:
    """The control plane, two demo nodes and the examples, started step by step.

    With ``real_nodes`` the nodes are real (:mod:`.realnodes`: containerd, runc, the real
    kubelet); otherwise each is a fake kubelet (:mod:`.nodes`).
    """

    def __init__(self, build_dir: Path, *, real_nodes: bool = False) -> None:
        self.build_dir = build_dir
        self.log = build_dir / "demo.log"
        self.pyz = build_dir / "dcu-dra.pyz"
        self.containers_dir = build_dir / "containers"
        self.plane = ControlPlane(data_dir=build_dir)
        self.nodes: list[DemoNode] = []
        self.real: RealDemoNodes | None = None
        self.real_nodes = real_nodes
        self.example_pods: list[tuple[str, str]] = []
        self._plane_started = False

    # --- start ----------------------------------------------------------------------------

    def build_pyz(self) -> None:
        """Build the one-file dcu-dra that runs ``verify`` in each example pod's container."""
        say(f"building {shown(self.pyz)}: the one-file dcu-dra the example pods run verify from")
        started = time.monotonic()
        with step("building the one-file dcu-dra", log=self.log):
            # Bytecode for this Python: each of the verify runs starts in half the time.
            build_pyz(self.pyz, include_bytecode=True)
        logger.info("built %s in %.2f s", self.pyz, time.monotonic() - started)

    def start_control_plane(self) -> None:
        """Start etcd, kube-apiserver, scheduler and controller manager; ~3 s."""
        say(f"starting the local control plane (log: {shown(self.plane.log_file)})")
        started = time.monotonic()
        self._plane_started = True
        with step("starting the control plane", log=self.plane.log_file):
            self.plane.start()
        say(f"control plane ready in {time.monotonic() - started:.1f} s")

    def apply_deploy(self) -> None:
        """Create the driver's cluster objects from deploy/."""
        say("applying " + ", ".join(f"deploy/{name}" for name in DEPLOY_FILES))
        for name in DEPLOY_FILES:
            with step(f"applying deploy/{name}", log=self.log):
                self._apply(DEPLOY_DIR / name)

    def start_nodes(self) -> None:
        """Per node: mock DCU node, kubelet (real or fake), the real plugin; wait for the slices."""
        if self.real_nodes:
            self._start_real_nodes()
            return
        for name in NODE_NAMES:
            node = DemoNode(
                name=name,
                base=self.build_dir / name,
                client=self.plane.client,
                kubeconfig=self.plane.kubeconfig,
            )
            self.nodes.append(node)
            with step(f"{name}: creating the mock DCU node", log=self.log):
                inventory = node.create_mock_node()
            with step(f"{name}: starting the fake kubelet", log=self.log):
                node.start_kubelet()
            with step(f"{name}: starting dcu-dra kubelet-plugin", log=node.plugin.log_file):
                node.start_plugin()
            say(
                f"{name}: mock node with {describe_inventory(inventory)}, fake kubelet, "
                f"dcu-dra kubelet-plugin (log: {shown(node.plugin.log_file)})"
            )
        for node in self.nodes:
            with step(f"{node.name}: waiting for the plugin", log=node.plugin.log_file):
                node.wait_ready()
        self._say_published("kubelets")

    def _start_real_nodes(self) -> None:
        """Two real nodes, one after the other (:class:`RealDemoNodes`)."""
        say(
            "starting 2 real nodes: containerd, runc and CNI, the real kubelet, a mock DCU node "
            "and dcu-dra kubelet-plugin as the chart's ServiceAccount (~5 s each)"
        )
        self.real = RealDemoNodes(self.plane.client, self.plane.kubeconfig)
        with step("starting the real nodes", log=self.log):
            try:
                nodes = self.real.start()
            except Exception as exc:
                started = self.real.started
                log = started[-1].plugin.log_file if started else self.log
                raise DemoError(f"starting the real nodes: {exc}", log) from exc
        if self.real.nodes.swept:
            say(f"first restored the host after a killed run: {'; '.join(self.real.nodes.swept)}")
        for node in nodes:
            say(
                f"{node.name}: kubelet {shown(node.kubelet.log_file)}, containerd "
                f"{shown(node.containerd.log_file)}, plugin {shown(node.plugin.log_file)}; "
                f"Ready in {sum(node.timings.steps.values()):.1f} s"
            )
        self._say_published("real kubelets")

    def _say_published(self, kubelets: str) -> None:
        """One line: how many DCUs the plugins published, in how many slices."""
        with step("reading the ResourceSlices", log=self.log):
            slices = self.plane.client.list(paths.resource_slices())["items"]
        devices = sum(len(s["spec"].get("devices") or []) for s in slices)
        say(
            f"both plugins registered with their {kubelets} and published {devices} DCUs "
            f"in {len(slices)} ResourceSlices"
        )

    def _plugins(self) -> dict[str, PluginProcess]:
        """Each node's plugin, by node name."""
        if self.real is not None:
            return self.real.plugins()
        return {node.name: node.plugin for node in self.nodes}

    def apply_examples(self) -> None:
        """Create every deploy/examples/*.yaml and wait until all their pods are Running."""
        examples = sorted((DEPLOY_DIR / "examples").glob("*.yaml"))
        say("applying " + ", ".join(f"deploy/examples/{p.name}" for p in examples))
        started = time.monotonic()
        for path in examples:
            with step(f"applying deploy/examples/{path.name}", log=self.log):
                for obj in self._apply(path):
                    if obj["kind"] == "Pod":
                        meta = obj["metadata"]
                        self.example_pods.append((meta["namespace"], meta["name"]))
        self._wait_for_pods(
            self._all_pods_running,
            what="waiting for the example pods to be Running",
            details=lambda: self._stuck_pods(gone=False),
            timeout_s=PODS_TIMEOUT_S,
        )
        say(
            f"{len(self.example_pods)} example pods Running {time.monotonic() - started:.1f} s "
            "after they were applied (scheduled, claims allocated and prepared)"
        )

    def _apply(self, path: Path) -> list[dict[str, Any]]:
        created = []
        for obj in load_yaml(path.read_text()):
            if obj["kind"] == "Namespace":
                # Pods are admitted only once the namespace's default ServiceAccount exists.
                created.append(create_namespace(self.plane.client, obj["metadata"]["name"]))
            else:
                created.append(create_object(self.plane.client, obj))
        return created

    def _wait_for_pods(
        self,
        done: Callable[[], bool],
        *,
        what: str,
        details: Callable[[], str],
        timeout_s: float,
    ) -> None:
        """Wait for ``done``; on timeout, fail with what each pod is stuck on (in one line)."""
        with step(what, log=self.log):
            try:
                wait_for(done, timeout_s=timeout_s, description=what)
            except AssertionError:
                raise DemoError(
                    f"{what}: timed out after {timeout_s:g} s; {details()}", self.log
                ) from None

    def _pod_states(self) -> dict[tuple[str, str], Mapping[str, Any] | None]:
        pods = self.plane.client.list(paths.pods())["items"]
        by_key = {(p["metadata"]["namespace"], p["metadata"]["name"]): p for p in pods}
        return {key: by_key.get(key) for key in self.example_pods}

    def _all_pods_running(self) -> bool:
        return all(pod and is_pod_running(pod) for pod in self._pod_states().values())

    def _stuck_pods(self, *, gone: bool) -> str:
        """The example pods not yet Running (or, with ``gone``, not yet deleted), and why."""
        errors: dict[str, str] = {}
        for node in self.nodes:
            errors.update(node.kubelet.pod_errors())
        stuck = []
        for (namespace, name), pod in self._pod_states().items():
            if (pod is not None) if gone else (pod is None or not is_pod_running(pod)):
                key = f"{namespace}/{name}"
                status = (pod or {}).get("status") or {}
                why = errors.get(key) or "; ".join(
                    str(c["message"]) for c in status.get("conditions") or [] if c.get("message")
                )
                stuck.append(f"{key} ({status.get('phase', 'missing')}: {why or 'no reason'})")
        return ("still there: " if gone else "not Running: ") + ", ".join(stuck)

    # --- show -----------------------------------------------------------------------------

    def rows(self) -> list[ShareRow]:
        """The table rows, from the API server, the vdev files and the fake kubelets."""
        with step("reading claims, vdev files and CDI IDs", log=self.log):
            client = self.plane.client
            prepared = {}
            vdevs: dict[str, list[VdevConfig]] = {}
            if self.real is not None:
                prepared.update(self.real.prepared_claims())
            for node in self.nodes:
                prepared.update(node.kubelet.prepared_claims())
            for plugin in self._plugins().values():
                vdev_root = plugin.data_dir / VDEV_SUBDIR
                for directory in sorted(vdev_root.iterdir()) if vdev_root.is_dir() else []:
                    vdevs[directory.name] = read_vdev_dir(directory)
            return build_rows(
                claims=client.list(paths.resource_claims())["items"],
                pods=client.list(paths.pods())["items"],
                slices=client.list(paths.resource_slices())["items"],
                vdevs=vdevs,
                prepared=prepared,
            )

    def show(self) -> None:
        """Print the table and verify's verdict on every example pod's container.

        Then, for the quarter-card share: its vdev file, its CDI spec and verify's full report
        from inside its container. Fails when verify found a problem in any container.
        """
        rows = self.rows()
        claims = len({row.claim_uid for row in rows})
        say(f"{len(rows)} prepared devices and shares of {claims} claims")
        print(format_table(rows), end="", flush=True)
        shares = [row for row in rows if row.vdev is not None]
        showcase = next(
            (r for r in shares if SHOWCASE_POD in r.pods), shares[0] if shares else None
        )
        started = time.monotonic()
        if self.real is not None:
            outcomes, report, showcase_label, where = self._verify_real(showcase)
        else:
            outcomes, report, showcase_label, where = self._verify_laid_out(showcase)
        logger.info(
            "verify ran in %d containers in %.2f s", len(outcomes), time.monotonic() - started
        )
        print(format_outcomes(outcomes), end="", flush=True)
        if showcase is not None and showcase.vdev is not None:
            self._show_share_files(showcase, showcase.vdev)
        if showcase_label is not None and report is not None:
            say(f"what dcu-dra verify reports inside {showcase_label} ({where}):")
            print(report, end="", flush=True)
        self._fail_on_problems(outcomes)

    def _verify_laid_out(
        self, showcase: ShareRow | None
    ) -> tuple[list[VerifyOutcome], str | None, str | None, str]:
        """Run verify in each container as laid out from its CDI devices (fake kubelets)."""
        targets = self._container_targets()
        showcase_target = next(
            (t for t in targets if showcase is not None and t.label in showcase.pods), None
        )
        with step("running dcu-dra verify in the containers", log=self.log):
            outcomes, report = run_verify(self.pyz, targets, text_of=showcase_target)
        say(
            "dcu-dra verify inside each example pod's container (laid out from its CDI devices "
            f"under {shown(self.containers_dir)}/; run as python -I -S {shown(self.pyz)} verify):"
        )
        where = "" if showcase_target is None else f"run in {shown(showcase_target.view.root)}"
        return outcomes, report, None if showcase_target is None else showcase_target.label, where

    def _verify_real(
        self, showcase: ShareRow | None
    ) -> tuple[list[VerifyOutcome], str | None, str | None, str]:
        """Run verify inside each example pod's real containers (copied in, ctr exec)."""
        assert self.real is not None
        with step("running dcu-dra verify in the real containers", log=self.log):
            pods = [pod for pod in self._pod_states().values() if pod is not None]
            containers = self.real.containers(pods)
            showcase_container = next(
                (c for c in containers if showcase is not None and c.label in showcase.pods),
                None,
            )
            outcomes, report = self.real.verify(self.pyz, containers, text_of=showcase_container)
        say(
            "dcu-dra verify inside each example pod's container (a runc container; copied to "
            f"{IN_CONTAINER_PYZ}, run with ctr tasks exec as python3 -I -S {IN_CONTAINER_PYZ} "
            "verify):"
        )
        label = None if showcase_container is None else showcase_container.label
        return outcomes, report, label, "its real container"

    def _show_share_files(self, share: ShareRow, vdev: VdevConfig) -> None:
        plugin = self._plugins()[share.node]
        vdev_file = plugin.vdev_dir(share.claim_uid) / vdev_file_name(vdev.vdev_id)
        spec_file = plugin.spec_file(share.claim_uid)
        with step("reading the showcase share's files", log=plugin.log_file):
            vdev_text, spec_text = vdev_file.read_text(), spec_file.read_text()
        say(f"the vdev file of {', '.join(share.pods)} ({shown(vdev_file)}):")
        print(vdev_text, end="", flush=True)
        say(f"its per-claim CDI spec ({shown(spec_file)}):")
        print(format_json(json.loads(spec_text)), flush=True)

    def _container_targets(self) -> list[ContainerTarget]:
        """Lay out every example pod's containers from the CDI IDs its kubelet passed them.

        The CDI library (``build/bin/cdi-inject``) resolves the IDs against the node's CDI
        spec directory; without root our model does, and one line says why.
        """
        reason = runtime_unavailable_reason()
        if reason is not None:
            say(reason)
        with step("laying out the example pods' containers from their CDI specs", log=self.log):
            targets: list[ContainerTarget] = []
            for (namespace, name), pod in sorted(self._pod_states().items()):
                node_name = ((pod or {}).get("spec") or {}).get("nodeName")
                node = next((n for n in self.nodes if n.name == node_name), None)
                if node is None:
                    raise ValueError(f"{namespace}/{name} is on no demo node ({node_name})")
                try:
                    containers = node.kubelet.container_cdi_ids((namespace, name))
                except KeyError as exc:
                    raise ValueError(f"{node.name}: {exc.args[0]}") from exc
                targets.extend(
                    lay_out(
                        self.containers_dir,
                        pod=f"{namespace}/{name}",
                        containers=containers,
                        spec_dirs=[node.plugin.cdi_dir],
                        sys_dir=node.root / "sys",
                        allow_plain_files=node.has_plain_device_nodes,
                    )
                )
            return targets

    def _fail_on_problems(self, outcomes: list[VerifyOutcome]) -> None:
        for outcome in outcomes:
            if not outcome.ok:
                logger.error(
                    "verify in %s: %s: %s", outcome.label, outcome.verdict, outcome.problem
                )
        message = failure_message(outcomes)
        if message is not None:
            raise DemoError(message, self.log)

    def print_try_lines(self) -> None:
        """What to run while ``--keep`` holds the cluster."""
        kubeconfig = shown(self.plane.kubeconfig)
        say(f"the cluster keeps running; kubeconfig: {kubeconfig}; try:")
        kubectl = shown(KUBECTL) if KUBECTL.is_file() else "kubectl"
        for what in ("resourceslices", "resourceclaims", "pods -o wide"):
            print(f"    {kubectl} --kubeconfig {kubeconfig} get {what} -A", flush=True)
        if self.real is not None:
            # The API server reaches each real kubelet (named by its loopback address).
            for what in (
                "exec -n dcu-quarter quarter -- sh -c 'ls -l /dev/dri; cat /etc/vdev/docker/*'",
                "logs -n dcu-shared producer",
                "describe node 127.0.0.2",
            ):
                print(f"    {kubectl} --kubeconfig {kubeconfig} {what}", flush=True)
        say("press Ctrl-C to tear everything down")

    # --- teardown -------------------------------------------------------------------------

    def teardown(self, *, failed: bool) -> list[str]:
        """Delete the pods, check the plugins cleaned up, stop everything in reverse order.

        Never raises for a failed step: it goes on and returns one line per failure. After a
        failed run (``failed``), a plugin that had already exited is not reported again: its
        exit is what the run failed on.
        """
        failures: list[str] = []
        if self.real is not None:
            return self._teardown_real(failures)
        if self.example_pods and self.nodes:
            try:
                self._delete_pods_and_check_files()
            except DemoError as exc:
                failures.append(str(exc))
        for node in reversed(self.nodes):
            was_running = node.plugin.process is not None and node.plugin.returncode is None
            code = node.stop_plugin()
            # -SIGTERM: stopped by us before it installed its handler (still importing).
            if code not in (None, 0, -signal.SIGTERM) and (was_running or not failed):
                failures.append(
                    f"{node.name}: dcu-dra kubelet-plugin exited with code {code} "
                    f"(see {shown(node.plugin.log_file)})"
                )
            node.stop_kubelet()
        self.plane.stop()
        if self.nodes:
            say("stopped the plugins, the fake kubelets and the control plane")
        elif self._plane_started:
            say("stopped the control plane")
        return failures

    def _teardown_real(self, failures: list[str]) -> list[str]:
        """Delete the pods, check the plugins cleaned up, stop the nodes and restore the host."""
        assert self.real is not None
        if self.example_pods and self.real.started:
            try:
                self._delete_pods_and_check_files()
            except DemoError as exc:
                failures.append(str(exc))
        for name, plugin in self._plugins().items():
            if plugin.process is not None and plugin.returncode is not None:
                failures.append(
                    f"{name}: dcu-dra kubelet-plugin exited with code {plugin.returncode} "
                    f"(see {shown(plugin.log_file)})"
                )
        restored = self.real.stop()
        self.plane.stop()
        say(
            "stopped the plugins, kubelets, containerd and the control plane; host restored "
            f"({len(restored)} changes undone: cgroups, bridges, mounts, sysctls; see "
            f"{shown(self.log)})"
        )
        logger.info("host restore: %s", restored)
        return failures

    def kill(self) -> None:
        """Stop everything at once (a second Ctrl-C during teardown)."""
        if self.real is not None:
            self.real.stop()  # the host must be restored even now
        for node in reversed(self.nodes):
            if node.plugin.process is not None:
                node.plugin.stop(timeout_s=0.1)
        self.plane.stop(timeout_s=0.1)

    def _delete_pods_and_check_files(self) -> None:
        say("tearing down: deleting the example pods, so the plugins unprepare their claims")
        client = self.plane.client
        # A real kubelet honours the grace period, and the examples' `sleep infinity` ignores
        # SIGTERM: without 0 each pod would take its 30 s.
        grace = 0 if self.real is not None else None
        with step("deleting the example pods", log=self.log):
            for namespace, name in self.example_pods:
                try:
                    client.delete(paths.pods(namespace, name), grace_period_s=grace)
                except NotFound:
                    pass
        self._wait_for_pods(
            lambda: not any(self._pod_states().values()),
            what="waiting for the example pods to be gone",
            details=lambda: self._stuck_pods(gone=True),
            timeout_s=TEARDOWN_TIMEOUT_S,
        )
        if self.real is not None:
            real = self.real
            # The real kubelet unprepares after the pod is gone from the API.
            try:
                wait_for(
                    lambda: (
                        not real.leftover_files()
                        and real.logged_claims("prepared") <= real.logged_claims("unprepared")
                    ),
                    timeout_s=TEARDOWN_TIMEOUT_S,
                    description="the unprepare of every claim",
                )
            except AssertionError:
                pass  # reported below, with the files
            count = len(real.logged_claims("unprepared"))
            left = real.leftover_files()
            plugin_log = real.started[0].plugin.log_file
        else:
            count = len(
                {
                    uid
                    for node in self.nodes
                    for call in node.kubelet.calls(method=UNPREPARE, driver=DRIVER_NAME)
                    if call.error is None
                    for uid in call.claim_uids
                }
            )
            left = [path for node in self.nodes for path in node.leftover_files()]
            plugin_log = self.nodes[0].plugin.log_file
        if left:
            raise DemoError(
                f"unprepare left {len(left)} files behind: "
                + ", ".join(shown(path) for path in left[:3]),
                plugin_log,
            )
        say(f"unprepared {count} claim{'' if count == 1 else 's'}; no vdev or CDI files left")
