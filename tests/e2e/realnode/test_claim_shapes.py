"""End to end on a real node: claims shaped as issue 14 lists, verified in real containers.

- a pod whose two containers each name a different request of one claim (shares on two cards);
- one container holding two claims (a share and a whole card);
- one ResourceClaim shared by two pods (prepared once, unprepared after the last pod);
- a prepare the plugin refuses, then the pod deleted: the real kubelet still unprepares it.

Each container runs ``dcu-dra verify`` into its log and the test runs it again (``--json``) and
a probe of the container's view with ``ctr tasks exec`` (:mod:`.helpers`).
"""

from __future__ import annotations

import time
from typing import Any

from dra_driver.cluster.kube import KubeClient, paths
from dra_driver.testing.cluster import wait_for_pod_gone, wait_for_pod_running
from dra_driver.testing.realnode.node import RealNode
from dra_driver.testing.waiting import wait_for
from tests.e2e.realnode.helpers import (
    MARKS,
    PCI_BUS_ID_ATTRIBUTE,
    allocated_cards,
    card_token,
    claim_spec,
    claim_template,
    dri_nodes,
    exec_verify,
    logged_verify,
    mock_sys,
    node_cards,
    pod_claim,
    probe,
    resource_claim,
    share_request,
    uuid_vars,
    vdev_fields,
    verify_container,
    verify_pod,
    whole_request,
)

pytestmark = MARKS


def assert_unprepared(node: RealNode, claim: dict[str, Any]) -> None:
    """Wait until the claim's CDI spec and vdev dir are gone; the plugin logged its unprepare."""
    meta = claim["metadata"]
    uid = meta["uid"]
    wait_for(
        lambda: not node.plugin.spec_file(uid).exists() and not node.plugin.vdev_dir(uid).exists(),
        timeout_s=60,
        description=f"the unprepare of {meta['name']} (CDI spec and vdev dir removed)",
    )
    line = f"unprepared claim {meta['namespace']}/{meta['name']} (uid {uid})"
    assert node.plugin.output().count(line) == 1, node.plugin.log_tail(40)


def check_status(report: dict[str, Any], kind: str) -> list[str]:
    """The statuses of verify's checks of ``kind`` (``--json`` report)."""
    return [c["status"] for c in report["checks"] if c["check"] == kind]


def delete_pod(kube: KubeClient, namespace: str, name: str) -> None:
    kube.delete(paths.pods(namespace, name))
    wait_for_pod_gone(kube, namespace, name, timeout_s=90)


def test_containers_naming_different_requests_of_one_claim(
    real_node: RealNode, kube: KubeClient, namespace: str
) -> None:
    started = time.monotonic()
    spec = claim_spec(
        [share_request("a"), share_request("b")],
        [{"requests": ["a", "b"], "distinctAttribute": PCI_BUS_ID_ATTRIBUTE}],
    )
    kube.create(paths.resource_claim_templates(namespace), claim_template("two-shares", spec))
    pod_body = verify_pod(
        "split",
        real_node.name,
        [
            verify_container("ca", [{"name": "dcu", "request": "a"}], mock_sys=True),
            verify_container("cb", [{"name": "dcu", "request": "b"}], mock_sys=True),
        ],
        [{"name": "dcu", "resourceClaimTemplateName": "two-shares"}],
        mock_sys=mock_sys(real_node),
    )
    kube.create(paths.pods(namespace), pod_body)
    pod = wait_for_pod_running(kube, namespace, "split", timeout_s=120)
    running_s = time.monotonic() - started

    claim = pod_claim(kube, pod, "dcu")
    uid = claim["metadata"]["uid"]
    by_request = allocated_cards(kube, real_node, claim)
    assert sorted(by_request) == ["a", "b"] and by_request["a"] != by_request["b"], by_request
    cards = node_cards(real_node)
    host_vdev = sorted(p.name for p in real_node.plugin.vdev_dir(uid).glob("vdev*.conf"))
    assert len(host_vdev) == 2, host_vdev

    seen_files: list[str] = []
    for container, request in (("ca", "a"), ("cb", "b")):
        mine, other = cards[by_request[request]], cards[by_request["b" if request == "a" else "a"]]
        logged_verify(real_node, pod, container)
        report = exec_verify(real_node, pod, container, mock_sys=True)
        assert check_status(report, "device-id") == ["ok"], report["checks"]
        view = probe(real_node, pod, container)
        print(f"\n{container} (request {request}, {mine['pciBusID']}): {view}")
        # Exactly one vdev file: its own card's, device_id 0.
        assert len(view["vdev"]) == 1, (container, view["vdev"])
        ((name, text),) = view["vdev"].items()
        fields = vdev_fields(text)
        assert fields["PciBusId"] == mine["pciBusID"], (container, text)
        assert fields["device_id"] == "0", (container, text)
        assert name in host_vdev
        assert [f["file"] for f in report["vdevFiles"]] == [name], report["vdevFiles"]
        seen_files.append(name)
        # Only its own card's DRM nodes (plus the shared KFD nodes).
        assert set(k for k in view["dev"] if k.startswith("/dev/dri/")) == dri_nodes([mine])
        assert {"/dev/kfd", "/dev/mkfd"} <= set(view["dev"])
        # Only its own card's uuid variable.
        assert uuid_vars(view["env"]) == {f"DCU_{card_token(mine['pciBusID'])}_UUID": mine["uuid"]}
        assert f"DCU_{card_token(other['pciBusID'])}_UUID" not in view["env"]
    assert sorted(seen_files) == host_vdev, (seen_files, host_vdev)

    delete_pod(kube, namespace, "split")
    assert_unprepared(real_node, claim)
    assert real_node.plugin.spec_files() == [] and real_node.plugin.vdev_files() == []
    print(f"\ntest: pod Running after {running_s:.1f} s; body {time.monotonic() - started:.1f} s")


def test_one_container_with_a_share_and_a_whole_card(
    real_node: RealNode, kube: KubeClient, namespace: str
) -> None:
    started = time.monotonic()
    # The share on index 0 (0000:3b:00.0), the whole card on index 2 (0000:af:00.0): the
    # share's card comes first in PCI order, so its device_id (its ordinal in its request, 0)
    # is also its ordinal in the container.
    kube.create(
        paths.resource_claims(namespace),
        resource_claim("share", claim_spec([share_request("dcu", index=0)])),
    )
    kube.create(
        paths.resource_claims(namespace),
        resource_claim("whole", claim_spec([whole_request("dcu", index=2)])),
    )
    pod_body = verify_pod(
        "both",
        real_node.name,
        [verify_container("ctr", [{"name": "share"}, {"name": "whole"}], mock_sys=True)],
        [
            {"name": "share", "resourceClaimName": "share"},
            {"name": "whole", "resourceClaimName": "whole"},
        ],
        mock_sys=mock_sys(real_node),
    )
    kube.create(paths.pods(namespace), pod_body)
    pod = wait_for_pod_running(kube, namespace, "both", timeout_s=120)
    running_s = time.monotonic() - started

    share = pod_claim(kube, pod, "share")
    whole = pod_claim(kube, pod, "whole")
    share_card = allocated_cards(kube, real_node, share)["dcu"]
    whole_card = allocated_cards(kube, real_node, whole)["dcu"]
    cards = node_cards(real_node)
    order = sorted([share_card, whole_card])
    assert share_card != whole_card and cards[share_card]["index"] == 0, (share_card, whole_card)
    assert cards[whole_card]["index"] == 2

    logged_verify(real_node, pod)
    report = exec_verify(real_node, pod, mock_sys=True)
    view = probe(real_node, pod)
    print(f"\ncontainer view: {view}\nverify checks: {report['checks']}")
    # verify mapped both render nodes to their cards and checked the ordinal.
    assert check_status(report, "device-id") == ["ok"], report["checks"]
    # Both cards' DRM nodes.
    dri = set(k for k in view["dev"] if k.startswith("/dev/dri/"))
    assert dri == dri_nodes([cards[share_card], cards[whole_card]]), dri
    # The share's vdev file, its device_id = its card's ordinal among the container's cards.
    assert len(view["vdev"]) == 1, view["vdev"]
    ((name, text),) = view["vdev"].items()
    fields = vdev_fields(text)
    assert fields["PciBusId"] == share_card
    assert fields["device_id"] == str(order.index(share_card)), text
    host_vdev = [p.name for p in real_node.plugin.vdev_dir(share["metadata"]["uid"]).iterdir()]
    assert host_vdev == [name]
    assert not real_node.plugin.vdev_dir(whole["metadata"]["uid"]).exists()
    # Both uuid variables, and the whole card's claim variable.
    assert uuid_vars(view["env"]) == {
        f"DCU_{card_token(c)}_UUID": cards[c]["uuid"] for c in (share_card, whole_card)
    }
    whole_ref = f"{namespace}/whole"
    assert view["env"].get(f"DCU_{card_token(whole_card)}_CLAIM") == whole_ref, view["env"]
    vdev_n = name.removeprefix("vdev").removesuffix(".conf")
    assert view["env"].get(f"DCU_VDEV{vdev_n}_CLAIM") == f"{namespace}/share", view["env"]
    assert view["env"].get(f"DCU_VDEV{vdev_n}_PCI_BUS_ID") == share_card

    delete_pod(kube, namespace, "both")
    assert_unprepared(real_node, share)
    assert_unprepared(real_node, whole)
    assert real_node.plugin.spec_files() == [] and real_node.plugin.vdev_files() == []
    print(f"\ntest: pod Running after {running_s:.1f} s; body {time.monotonic() - started:.1f} s")


def test_a_claim_shared_by_two_pods(real_node: RealNode, kube: KubeClient, namespace: str) -> None:
    started = time.monotonic()
    kube.create(
        paths.resource_claims(namespace),
        resource_claim("shared", claim_spec([share_request("dcu")])),
    )
    # One after the other: the kubelet prepares the claim for the first pod and, finding it
    # prepared, does not call the plugin for the second.
    pods = {}
    for name in ("first", "second"):
        kube.create(
            paths.pods(namespace),
            verify_pod(
                name,
                real_node.name,
                [verify_container("ctr", [{"name": "dcu"}])],
                [{"name": "dcu", "resourceClaimName": "shared"}],
            ),
        )
        pods[name] = wait_for_pod_running(kube, namespace, name, timeout_s=120)
    running_s = time.monotonic() - started

    claim = kube.get(paths.resource_claims(namespace, "shared"))
    uid = claim["metadata"]["uid"]
    reserved = {r["name"] for r in claim["status"].get("reservedFor") or []}
    assert reserved == {"first", "second"}, claim["status"]
    spec_file = real_node.plugin.spec_file(uid)
    assert real_node.plugin.spec_files() == [spec_file]
    host_vdev = real_node.plugin.vdev_files()
    assert len(host_vdev) == 1, host_vdev
    prepared = f"prepared claim {namespace}/shared (uid {uid})"
    assert real_node.plugin.output().count(f"] {prepared}") == 1, real_node.plugin.log_tail(40)

    views = {}
    for name, pod in pods.items():
        logged_verify(real_node, pod)
        exec_verify(real_node, pod)
        views[name] = probe(real_node, pod)
    print(f"\ncontainer views: {views}")
    # The same vdev file (name and content, the host's own) in both containers.
    assert (
        views["first"]["vdev"]
        == views["second"]["vdev"]
        == {host_vdev[0].name: host_vdev[0].read_text()}
    )
    assert views["first"]["env"] == views["second"]["env"]

    # Deleting the first pod leaves the claim prepared for the second.
    delete_pod(kube, namespace, "first")
    wait_for(
        lambda: (
            {
                r["name"]
                for r in kube.get(paths.resource_claims(namespace, "shared"))["status"].get(
                    "reservedFor"
                )
                or []
            }
            == {"second"}
        ),
        timeout_s=30,
        description="the claim reserved for the second pod only",
    )
    time.sleep(1.0)  # give a wrong unprepare time to land
    assert "unprepared claim" not in real_node.plugin.output(), real_node.plugin.log_tail(40)
    assert spec_file.is_file() and real_node.plugin.vdev_files() == host_vdev
    exec_verify(real_node, pods["second"])

    delete_pod(kube, namespace, "second")
    assert_unprepared(real_node, claim)
    assert real_node.plugin.output().count(f"] {prepared}") == 1
    assert real_node.plugin.spec_files() == [] and real_node.plugin.vdev_files() == []
    print(f"\ntest: pods Running after {running_s:.1f} s; body {time.monotonic() - started:.1f} s")


def test_a_failed_prepare_is_unprepared_when_the_pod_goes_and_leaves_nothing(
    real_node: RealNode, kube: KubeClient, namespace: str
) -> None:
    """The real kubelet unprepares a claim whose prepare failed once its pod is deleted (its
    claim cache is filled from the allocation before it calls): the plugin answers, and no
    CDI spec, vdev file or checkpoint entry is left behind."""
    spec = claim_spec([share_request("dcu", index=0)])
    # An opaque config the plugin refuses at prepare (no admission policy checks it).
    spec["devices"]["config"] = [
        {
            "requests": ["dcu"],
            "opaque": {
                "driver": "dcu.hygon.com",
                "parameters": {
                    "apiVersion": "dcu.hygon.com/v1alpha1",
                    "kind": "DcuConfig",
                    "cuLayout": "diagonal",
                },
            },
        }
    ]
    kube.create(paths.resource_claims(namespace), resource_claim("bad-config", spec))
    pod_body = verify_pod(
        "refused",
        real_node.name,
        [verify_container("ctr", [{"name": "dcu"}])],
        [{"name": "dcu", "resourceClaimName": "bad-config"}],
    )
    kube.create(paths.pods(namespace), pod_body)
    claim_name = f"{namespace}/bad-config"
    wait_for(
        lambda: f"prepare failed: claim {claim_name}" in real_node.plugin.output(),
        timeout_s=60,
        description="the plugin to refuse the prepare",
        details=lambda: real_node.plugin.log_tail(20),
    )
    assert "cuLayout" in real_node.plugin.output()
    pod = kube.get(paths.pods(namespace, "refused"))
    assert pod["status"]["phase"] == "Pending", pod["status"]
    claim = kube.get(paths.resource_claims(namespace, "bad-config"))
    uid = claim["metadata"]["uid"]
    assert not real_node.plugin.spec_file(uid).exists()

    delete_pod(kube, namespace, "refused")
    wait_for(
        lambda: f"unprepared claim {claim_name} (uid {uid})" in real_node.plugin.output(),
        timeout_s=60,
        description="the real kubelet's NodeUnprepareResources for the refused claim",
        details=lambda: real_node.plugin.log_tail(20),
    )
    assert real_node.plugin.spec_files() == [] and real_node.plugin.vdev_files() == []
    assert uid not in real_node.plugin.checkpoint_claims()
