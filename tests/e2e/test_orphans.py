"""Orphan cleanup: a prepared claim whose ResourceClaim is gone gets unprepared by the daemon.

The real daemon runs against the real API server; claims carry the allocation the scheduler
would write, and the test calls the daemon's DRA socket as the kubelet does.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bench.scale_audit import daemon_node as node_of_agent
from bench.scale_audit import parse_requests
from dra_driver.cluster.kube import Conflict, KubeClient, NotFound, paths
from dra_driver.testing.cluster import (
    ControlPlane,
    create_namespace,
    unique_name,
)
from dra_driver.testing.identity import ensure_plugin_account
from dra_driver.testing.plugin_process import PluginProcess
from dra_driver.testing.waiting import wait_for
from tests.e2e.conftest import (
    K100,
    Z100_A,
    Z100_B,
    DaemonNode,
    DaemonNodeFactory,
    allocated_claim,
    prepare,
    share,
)

pytestmark = pytest.mark.e2e

#: "Within a few seconds" of the plugin's start, as the issue asks.
CLEANUP_TIMEOUT_S = 5.0
#: The finalizer the scheduler puts on a claim it allocates (resource-api.md §6.3).
DELETE_PROTECTION = "resource.kubernetes.io/delete-protection"


def is_clean(plugin: PluginProcess, uid: str) -> bool:
    """Whether the claim's checkpoint entry, CDI spec and vdev files are all gone."""
    return (
        uid not in plugin.checkpoint_claims()
        and not plugin.spec_file(uid).exists()
        and not plugin.vdev_dir(uid).exists()
    )


def update_claim(
    kube: KubeClient,
    namespace: str,
    name: str,
    change: Callable[[dict[str, Any]], None],
    *,
    subresource: str | None = None,
) -> dict[str, Any]:
    """Read the claim, ``change`` it and write it back; again after a conflict.

    The resourceclaim controller writes the claim too once a pod names it.
    """

    def attempt() -> dict[str, Any] | None:
        claim = kube.get(paths.resource_claims(namespace, name))
        change(claim)
        try:
            return kube.replace(
                paths.resource_claims(namespace, name, subresource=subresource), claim
            )
        except Conflict:
            return None

    return wait_for(attempt, timeout_s=10, description=f"an update of claim {namespace}/{name}")


def full_card_share() -> dict[str, Any]:
    """Every CU of the first Z100: while it is prepared, no other share fits."""
    return share("dcu", Z100_A, 60, "8Gi")


def test_claim_deleted_while_the_plugin_was_down_is_cleaned_up_after_restart(
    daemon_node: DaemonNodeFactory, kube: KubeClient, namespace: str
) -> None:
    node = daemon_node()
    claim = allocated_claim(kube, namespace, node.name, [full_card_share()])
    uid = claim["metadata"]["uid"]
    assert prepare(node.plugin.dra_socket, claim)[uid].error == ""
    waiting = allocated_claim(kube, namespace, node.name, [share("dcu", Z100_A, 10, "1Gi")])
    refused = prepare(node.plugin.dra_socket, waiting)[waiting["metadata"]["uid"]].error
    assert "CUs" in refused, refused  # the card's CUs are all taken

    node.plugin.stop()
    kube.delete(paths.resource_claims(namespace, claim["metadata"]["name"]))
    with pytest.raises(NotFound):
        kube.get(paths.resource_claims(namespace, claim["metadata"]["name"]))
    started = time.monotonic()
    node.plugin.restart().wait_for_registration_socket()

    wait_for(
        lambda: is_clean(node.plugin, uid),
        timeout_s=CLEANUP_TIMEOUT_S,
        description="the orphaned claim's files and checkpoint entry to go",
        details=lambda: node.plugin.log_tail(),
    )
    print(f"orphan cleaned {time.monotonic() - started:.2f} s after the restart began")
    assert prepare(node.plugin.dra_socket, waiting)[waiting["metadata"]["uid"]].error == ""
    log = node.plugin.output()
    assert (
        f"unprepared orphaned claim {namespace}/{claim['metadata']['name']} (uid {uid}): "
        "its ResourceClaim was deleted"
    ) in log
    assert "Traceback" not in log


def test_deleted_and_replaced_claims_are_cleaned_up_periodically_and_live_ones_kept(
    daemon_node: DaemonNodeFactory, kube: KubeClient, namespace: str
) -> None:
    node = daemon_node("--orphan-interval", "0.5")
    deleted, replaced, live = (
        allocated_claim(kube, namespace, node.name, [share("dcu", Z100_A, 10, "1Gi")])
        for _ in range(3)
    )
    claims = [deleted, replaced, live]
    answers = prepare(node.plugin.dra_socket, *claims)
    assert {c["metadata"]["uid"]: answers[c["metadata"]["uid"]].error for c in claims} == {
        c["metadata"]["uid"]: "" for c in claims
    }
    kube.delete(paths.resource_claims(namespace, deleted["metadata"]["name"]))
    name = replaced["metadata"]["name"]
    kube.delete(paths.resource_claims(namespace, name))
    kube.create(
        paths.resource_claims(namespace),
        {**{k: replaced[k] for k in ("apiVersion", "kind", "spec")}, "metadata": {"name": name}},
    )

    for gone in (deleted, replaced):
        gone_uid = str(gone["metadata"]["uid"])
        wait_for(
            lambda: is_clean(node.plugin, gone_uid),  # noqa: B023 - called before the loop moves on
            timeout_s=CLEANUP_TIMEOUT_S,
            description=f"claim {gone['metadata']['name']} to be cleaned up",
            details=lambda: node.plugin.log_tail(),
        )
    time.sleep(1.5)  # three more rounds: the live claim stays
    assert set(node.plugin.checkpoint_claims()) == {live["metadata"]["uid"]}
    assert node.plugin.spec_file(live["metadata"]["uid"]).is_file()
    log = node.plugin.output()
    assert f"(uid {replaced['metadata']['uid']}): its ResourceClaim was replaced by uid" in log
    assert log.count("unprepared orphaned claim") == 2


def test_orphan_interval_zero_turns_cleanup_off(
    daemon_node: DaemonNodeFactory, kube: KubeClient, namespace: str
) -> None:
    node = daemon_node("--orphan-interval", "0")
    claim = allocated_claim(kube, namespace, node.name, [share("dcu", Z100_A, 10, "1Gi")])
    uid = claim["metadata"]["uid"]
    assert prepare(node.plugin.dra_socket, claim)[uid].error == ""
    node.plugin.stop()
    kube.delete(paths.resource_claims(namespace, claim["metadata"]["name"]))
    node.plugin.restart().wait_for_registration_socket()
    time.sleep(1.0)
    assert uid in node.plugin.checkpoint_claims()


def test_a_deleted_claim_stays_prepared_while_its_pod_holds_it(
    daemon_node: DaemonNodeFactory, kube: KubeClient, namespace: str
) -> None:
    """Why "claim gone" is enough (orphans.py): a reserved claim outlives its deletion.

    The claim carries the finalizer the scheduler adds when it allocates and is reserved for a
    pod, as the scheduler leaves it. Deleted, it stays (with a deletionTimestamp) while the pod
    exists, so the cleaner keeps it prepared; once the pod is gone, the real resourceclaim
    controller drops the reservation and the finalizer, the claim disappears and the cleaner
    unprepares it.
    """
    node = daemon_node("--orphan-interval", "0.5")
    claim = allocated_claim(kube, namespace, node.name, [share("dcu", Z100_A, 10, "1Gi")])
    name, uid = claim["metadata"]["name"], claim["metadata"]["uid"]
    # The pod names the claim, as a real one does: the controller looks at a pod's claims
    # when the pod changes or goes.
    pod = kube.create(
        paths.pods(namespace),
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": unique_name("holder"), "namespace": namespace},
            "spec": {
                "nodeName": node.name,
                "resourceClaims": [{"name": "dcu", "resourceClaimName": name}],
                "containers": [
                    {
                        "name": "ctr",
                        "image": "registry.k8s.io/pause:3.10",
                        "resources": {"claims": [{"name": "dcu"}]},
                    }
                ],
            },
        },
    )
    reservation = {
        "resource": "pods",
        "name": pod["metadata"]["name"],
        "uid": pod["metadata"]["uid"],
    }
    update_claim(
        kube, namespace, name, lambda c: c["metadata"].update(finalizers=[DELETE_PROTECTION])
    )
    claim = update_claim(
        kube,
        namespace,
        name,
        lambda c: c["status"].update(reservedFor=[reservation]),
        subresource="status",
    )
    assert prepare(node.plugin.dra_socket, claim)[uid].error == ""

    kube.delete(paths.resource_claims(namespace, name))
    time.sleep(1.5)  # three cleanup rounds
    held = kube.get(paths.resource_claims(namespace, name))
    assert held["metadata"]["deletionTimestamp"]
    assert held["metadata"]["uid"] == uid
    assert not is_clean(node.plugin, uid), "a claim its pod still holds was unprepared"

    kube.delete(paths.pods(namespace, pod["metadata"]["name"]), grace_period_s=0)
    wait_for(
        lambda: is_clean(node.plugin, uid),
        timeout_s=60,
        description="the claim to go with its pod and be unprepared",
        details=lambda: node.plugin.log_tail(),
    )
    with pytest.raises(NotFound):
        kube.get(paths.resource_claims(namespace, name))


def test_an_idle_sweep_over_many_claims_is_one_list_at_the_api_server(
    audited_plane: ControlPlane, short_sock_dir: Path
) -> None:
    """Issue 18: with claims prepared and none gone, a sweep is one request, not one per claim.

    Counted at the API server (its audit log, by the daemon's user agent): over a window of
    sweeps every 0.5 s, the daemon's only ResourceClaim requests are LISTs, one per sweep,
    which deploy/rbac.yaml allows (the daemon runs as the plugin's ServiceAccount).
    """
    kube = audited_plane.client
    ensure_plugin_account(kube)
    namespace = unique_name("orphans")
    create_namespace(kube, namespace)
    node = DaemonNode(
        audited_plane,
        short_sock_dir / "node",
        devices=None,
        extra_args=("--orphan-interval", "0.5"),
        plugin_identity=True,
    )
    try:
        node.plugin.start().wait_for_registration_socket()
        cards = (Z100_A, Z100_B, K100)
        claims = [
            allocated_claim(kube, namespace, node.name, [share("dcu", cards[n % 3], 5, "1Gi")])
            for n in range(8)
        ]
        answers = prepare(node.plugin.dra_socket, *claims)
        assert {uid: answer.error for uid, answer in answers.items()} == dict.fromkeys(
            (c["metadata"]["uid"] for c in claims), ""
        )
        time.sleep(1.0)  # the sweeps that overlapped the prepares are over
        start = time.time()
        time.sleep(3.0)
        end = time.time()
        assert len(node.plugin.checkpoint_claims()) == 8  # no live claim was unprepared
    finally:
        node.close()

    assert audited_plane.audit_log is not None
    requests = [
        r
        for r in parse_requests(audited_plane.audit_log.read_text().splitlines())
        if node_of_agent(r.user_agent) == node.name
        and start <= r.received < end
        and r.resource.startswith("resourceclaims")
    ]
    verbs = Counter(r.key for r in requests)
    assert set(verbs) == {"list resourceclaims"}, verbs
    assert {r.code for r in requests} == {200}
    # Six sweeps in 3 s at 0.5 s apart (each takes a little time): one request each.
    assert 4 <= verbs["list resourceclaims"] <= 7, verbs
