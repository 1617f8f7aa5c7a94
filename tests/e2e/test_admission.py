"""The admission policies of deploy/, enforced by the real kube-apiserver.

deploy/'s cluster objects (RBAC, DeviceClasses, both ValidatingAdmissionPolicies) are created
once for this module and removed afterwards. Then:

- claims and claim templates on our classes that name only one of cores/memory, or ask for
  zero or less, are rejected with the policy's message; everything else, every example under
  deploy/examples/, and claims on other drivers' classes are admitted (failurePolicy is Fail,
  so a CEL error would show up here as a rejection);
- the kubelet plugin's ServiceAccount, with a token bound to a Pod on one node, may write only
  that node's ResourceSlices of our driver.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from dra_driver.cluster.kube import (
    ApiError,
    Forbidden,
    Invalid,
    KubeClient,
    paths,
)
from dra_driver.testing.cluster import (
    ControlPlane,
    create_namespace,
    create_object,
    delete_namespace,
    load_yaml,
    resource_slice,
    temporary_objects,
    unique_name,
)
from dra_driver.testing.identity import (
    PLUGIN_ACCOUNT,
    PLUGIN_NAMESPACE,
    create_plugin_pod,
    request_plugin_token,
)
from dra_driver.testing.waiting import wait_for
from tests.e2e.conftest import DEPLOY_DIR, PAUSE, create_node, delete_quietly

pytestmark = pytest.mark.e2e

EXAMPLES = sorted((DEPLOY_DIR / "examples").glob("*.yaml"))
#: Created in this order: the namespace and account before anything refers to them.
DEPLOY_FILES = ("rbac.yaml", "deviceclass.yaml", "admission-claims.yaml", "admission-slices.yaml")

DRIVER = "dcu.hygon.com"
CLAIMS_POLICY = "resourceclaims.dcu.hygon.com"
SLICES_POLICY = "resourceslices.dcu.hygon.com"
#: Policies and RBAC bindings are picked up by informers, a moment after they are created.
EFFECTIVE_TIMEOUT_S = 10.0

HALF_SHARE = (
    "device request {names} names only one of cores and memory in capacity.requests: "
    "request both cores and memory for a DCU share, or neither for a whole DCU"
)
EMPTY_SHARE = (
    "device request {names} asks for a zero or negative amount of cores or memory: "
    "a DCU share needs at least 1 core and 1Mi of memory"
)


def denied(obj: Mapping[str, Any], policy: str, message: str) -> str:
    """The message kube-apiserver returns when ``policy`` denies a write of ``obj``.

    The same text whatever the policy's reason (Invalid: 422, Forbidden: 403).
    """
    rtype = paths.resource_type(obj)
    group = rtype.api_version.rpartition("/")[0]
    return (
        f'{rtype.plural}.{group} "{obj["metadata"]["name"]}" is forbidden: '
        f"ValidatingAdmissionPolicy '{policy}' with binding '{policy}' denied request: {message}"
    )


def dry_run_create(client: KubeClient, obj: Mapping[str, Any]) -> dict[str, Any]:
    """Create ``obj`` with ``dryRun=All``: admission runs, nothing is stored."""
    return client.request(
        "POST", paths.collection_path(obj), query={"dryRun": "All"}, body=dict(obj)
    )


def rejection(create: Callable[[], object]) -> ApiError | None:
    """The ApiError ``create()`` raises, or None when it succeeds."""
    try:
        create()
    except ApiError as exc:
        return exc
    return None


# --- objects ------------------------------------------------------------------------------

#: Builds a claim or claim template in the given namespace.
ObjectFactory = Callable[[str], dict[str, Any]]


def exactly(device_class: str, capacity: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """An ``exactly`` request body; ``capacity`` becomes capacity.requests."""
    request: dict[str, Any] = {"deviceClassName": device_class}
    if capacity is not None:
        request["capacity"] = {"requests": dict(capacity)}
    return request


def sub_request(
    name: str, device_class: str, capacity: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    return {"name": name, **exactly(device_class, capacity)}


def claim(namespace: str, *requests: Mapping[str, Any], name: str = "") -> dict[str, Any]:
    """A ResourceClaim with the given device requests (none: no ``devices`` at all)."""
    spec: dict[str, Any] = {"devices": {"requests": list(requests)}} if requests else {}
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name or unique_name("claim"), "namespace": namespace},
        "spec": spec,
    }


def template(namespace: str, *requests: Mapping[str, Any]) -> dict[str, Any]:
    """A ResourceClaimTemplate with the given device requests."""
    body = claim(namespace, *requests)
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaimTemplate",
        "metadata": {"name": unique_name("template"), "namespace": namespace},
        "spec": {"spec": body["spec"]},
    }


def request(name: str, **body: Any) -> dict[str, Any]:
    """A device request: ``request(name, exactly=...)`` or ``request(name, firstAvailable=...)``."""
    return {"name": name, **body}


def slice_for(node: str, *, driver: str = DRIVER) -> dict[str, Any]:
    """A one-device node-local ResourceSlice (no owner: the tests delete it)."""
    device = {"name": "dcu-0000-3b-00-0", "attributes": {"model": {"string": "Z100"}}}
    body = resource_slice(node_name=node, node_uid=None, driver=driver, devices=[device])
    # A fixed name instead of generateName: the API server's messages name the object.
    body["metadata"] = {"name": unique_name("slice")}
    return body


# --- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def deployed(control_plane: ControlPlane) -> Iterator[KubeClient]:
    """deploy/'s cluster objects, created for this module (objects already there are kept)."""
    kube = control_plane.client
    documents = [doc for name in DEPLOY_FILES for doc in load_yaml((DEPLOY_DIR / name).read_text())]
    with temporary_objects(kube, documents):
        yield kube


@pytest.fixture(scope="module")
def claims_namespace(deployed: KubeClient) -> Iterator[str]:
    """A namespace for claims, once the claims policy rejects a known-bad claim."""
    name = unique_name("admission")
    create_namespace(deployed, name)
    bad = claim(name, request("dcu", exactly=exactly(DRIVER, {"cores": "1"})))

    def policy_rejects() -> bool:
        exc = rejection(lambda: dry_run_create(deployed, bad))
        return exc is not None and CLAIMS_POLICY in exc.message

    try:
        wait_for(
            policy_rejects, timeout_s=EFFECTIVE_TIMEOUT_S, description=f"{CLAIMS_POLICY} to apply"
        )
        yield name
    finally:
        delete_namespace(deployed, name)


@dataclasses.dataclass(frozen=True, slots=True)
class PluginIdentity:
    """The kubelet plugin's ServiceAccount as seen from a Pod on ``node``."""

    client: KubeClient
    token: str
    node: str
    other_node: str


def client_with_token(kube: KubeClient, token: str) -> KubeClient:
    """A client for the same API server that authenticates with ``token`` only."""
    config = dataclasses.replace(
        kube.config, token=token, token_file=None, client_cert_pem=None, client_key_pem=None
    )
    return KubeClient(config, user_agent="dcu-dra-tests-plugin")


@pytest.fixture(scope="module")
def plugin(deployed: KubeClient) -> Iterator[PluginIdentity]:
    """A Node, a Pod of the plugin's ServiceAccount on it, and a client with the Pod's token."""
    kube = deployed
    node = unique_name("node-a")
    other_node = unique_name("node-b")
    # The Node first: the token records the node of the Pod it is bound to.
    create_node(kube, node)
    pod_name: str | None = None
    try:
        pod = create_plugin_pod(kube, node, image=PAUSE)
        pod_name = pod["metadata"]["name"]
        token = request_plugin_token(kube, bound_pod=pod)
        with client_with_token(kube, token) as client:

            def policy_rejects() -> bool:
                # Until the RBAC binding is seen, RBAC answers (without the policy's name).
                exc = rejection(lambda: dry_run_create(client, slice_for(other_node)))
                return exc is not None and SLICES_POLICY in exc.message

            wait_for(
                policy_rejects,
                timeout_s=EFFECTIVE_TIMEOUT_S,
                description=f"{SLICES_POLICY} to apply",
            )
            yield PluginIdentity(client=client, token=token, node=node, other_node=other_node)
    finally:
        if pod_name is not None:
            delete_quietly(kube, paths.pods(PLUGIN_NAMESPACE, pod_name))
        delete_quietly(kube, paths.nodes(node))


@pytest.fixture
def admin_slice(deployed: KubeClient, plugin: PluginIdentity) -> Iterator[dict[str, Any]]:
    """A ResourceSlice of our driver for the other node, written by an admin."""
    created = deployed.create(paths.resource_slices(), slice_for(plugin.other_node))
    try:
        yield created
    finally:
        deployed.delete(paths.resource_slices(created["metadata"]["name"]))


# --- the claims policy --------------------------------------------------------------------


def test_policies_type_check_without_warnings(deployed: KubeClient) -> None:
    """Every expression compiles against the real schemas (the status controller says so)."""
    for name in (CLAIMS_POLICY, SLICES_POLICY):
        path = f"/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies/{name}"

        def checked(path: str = path) -> dict[str, Any] | None:
            policy = deployed.get(path)
            status = policy.get("status") or {}
            observed = status.get("observedGeneration")
            return status if observed == policy["metadata"]["generation"] else None

        status = wait_for(checked, timeout_s=30.0, description=f"type checking of {name}")
        assert (status.get("typeChecking") or {}).get("expressionWarnings") is None, name


REJECTED_CLAIMS = [
    pytest.param(
        lambda ns: claim(ns, request("dcu", exactly=exactly(DRIVER, {"cores": "15"}))),
        HALF_SHARE.format(names="'dcu'"),
        id="only-cores",
    ),
    pytest.param(
        lambda ns: claim(
            ns, request("share", exactly=exactly("vdcu.dcu.hygon.com", {"memory": "8Gi"}))
        ),
        HALF_SHARE.format(names="'share'"),
        id="only-memory",
    ),
    pytest.param(
        lambda ns: claim(
            ns,
            request("dcu", exactly=exactly("vdcu.dcu.hygon.com", {"cores": "0", "memory": "8Gi"})),
        ),
        EMPTY_SHARE.format(names="'dcu'"),
        id="zero-cores",
    ),
    pytest.param(
        lambda ns: claim(
            ns, request("dcu", exactly=exactly("vdcu.dcu.hygon.com", {"cores": 15, "memory": 0}))
        ),
        EMPTY_SHARE.format(names="'dcu'"),
        id="zero-memory",
    ),
    pytest.param(
        lambda ns: claim(
            ns, request("dcu", exactly=exactly(DRIVER, {"cores": "-1", "memory": "1Gi"}))
        ),
        EMPTY_SHARE.format(names="'dcu'"),
        id="negative-cores",
    ),
    pytest.param(
        lambda ns: claim(
            ns,
            request(
                "dcu",
                firstAvailable=[
                    sub_request("big", "vdcu.dcu.hygon.com", {"cores": "30", "memory": "16Gi"}),
                    sub_request("small", "vdcu.dcu.hygon.com", {"cores": "15"}),
                ],
            ),
        ),
        HALF_SHARE.format(names="'dcu/small'"),
        id="first-available-sub-request-only-cores",
    ),
    pytest.param(
        lambda ns: template(ns, request("dcu", exactly=exactly(DRIVER, {"memory": "8Gi"}))),
        HALF_SHARE.format(names="'dcu'"),
        id="template-only-memory",
    ),
    pytest.param(
        lambda ns: claim(
            ns,
            request("ok", exactly=exactly(DRIVER, {"cores": "15", "memory": "8Gi"})),
            request("a", exactly=exactly(DRIVER, {"cores": "15"})),
            request("gpu", exactly=exactly("gpu.example.com", {"cores": "15"})),
            request("b", firstAvailable=[sub_request("x", DRIVER, {"memory": "1Gi"})]),
        ),
        HALF_SHARE.format(names="'a', 'b/x'"),
        id="names-every-offending-request",
    ),
]


@pytest.mark.parametrize(("make", "message"), REJECTED_CLAIMS)
def test_claims_policy_rejects_half_or_empty_shares(
    deployed: KubeClient, claims_namespace: str, make: ObjectFactory, message: str
) -> None:
    obj = make(claims_namespace)
    with pytest.raises(Invalid) as caught:
        create_object(deployed, obj)
    assert caught.value.message == denied(obj, CLAIMS_POLICY, message)


ADMITTED_CLAIMS = [
    pytest.param(
        lambda ns: claim(ns, request("gpu", exactly=exactly("gpu.example.com", {"cores": "1"}))),
        id="other-driver-only-cores",
    ),
    pytest.param(
        lambda ns: claim(
            ns,
            request(
                "gpu",
                firstAvailable=[
                    sub_request("a", "gpu.example.com", {"memory": "1Gi"}),
                    sub_request("b", DRIVER),
                ],
            ),
        ),
        id="first-available-other-driver-only-memory",
    ),
    pytest.param(lambda ns: claim(ns), id="no-devices"),
    pytest.param(lambda ns: {**claim(ns), "spec": {"devices": {}}}, id="no-requests"),
    pytest.param(
        lambda ns: {**claim(ns), "spec": {"devices": {"requests": []}}}, id="empty-requests"
    ),
    pytest.param(lambda ns: template(ns), id="template-without-devices"),
    pytest.param(lambda ns: claim(ns, request("dcu", exactly=exactly(DRIVER))), id="whole-card"),
    pytest.param(
        lambda ns: claim(ns, request("dcu", exactly={"deviceClassName": DRIVER, "capacity": {}})),
        id="capacity-without-requests",
    ),
    pytest.param(
        lambda ns: claim(
            ns,
            request("dcu", exactly=exactly("vdcu.dcu.hygon.com", {"cores": 15, "memory": 1 << 33})),
        ),
        id="share-with-numbers",
    ),
    pytest.param(
        lambda ns: claim(
            ns,
            request(
                "dcu",
                firstAvailable=[
                    sub_request("share", "vdcu.dcu.hygon.com", {"cores": "1", "memory": "1Mi"}),
                    sub_request("whole", DRIVER),
                ],
            ),
        ),
        id="first-available-share-or-whole",
    ),
    pytest.param(
        lambda ns: template(
            ns, request("dcu", exactly=exactly(DRIVER, {"cores": "15", "memory": "8Gi"}))
        ),
        id="template-share",
    ),
]


@pytest.mark.parametrize("make", ADMITTED_CLAIMS)
def test_claims_policy_admits_whole_cards_full_shares_and_other_drivers(
    deployed: KubeClient, claims_namespace: str, make: ObjectFactory
) -> None:
    obj = make(claims_namespace)
    created = create_object(deployed, obj)
    deployed.delete(paths.object_path(created))


def test_claims_policy_admits_updates_that_keep_the_spec(
    deployed: KubeClient, claims_namespace: str
) -> None:
    """Finalizer and label changes on claims must never be blocked."""
    created = create_object(
        deployed, claim(claims_namespace, request("dcu", exactly=exactly(DRIVER)))
    )
    path = paths.object_path(created)
    patched = deployed.patch(path, {"metadata": {"labels": {"touched": "yes"}}})
    assert patched["metadata"]["labels"] == {"touched": "yes"}
    deployed.delete(path)


@pytest.mark.parametrize("example", EXAMPLES, ids=[path.name for path in EXAMPLES])
def test_example_is_admitted(deployed: KubeClient, claims_namespace: str, example: Path) -> None:
    """claims_namespace: only to wait until the claims policy applies."""
    documents = load_yaml(example.read_text())
    [namespace] = [doc["metadata"]["name"] for doc in documents if doc["kind"] == "Namespace"]
    create_namespace(deployed, namespace)  # waits for the default ServiceAccount pods need
    try:
        for doc in documents:
            if doc["kind"] != "Namespace":
                create_object(deployed, doc)
    finally:
        delete_namespace(deployed, namespace)


# --- the slices policy --------------------------------------------------------------------


def jwt_claims(token: str) -> dict[str, Any]:
    """The (unverified) payload of a JWT."""
    payload = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return decoded


def test_plugin_token_carries_its_node(plugin: PluginIdentity) -> None:
    assert jwt_claims(plugin.token)["kubernetes.io"]["node"]["name"] == plugin.node
    review = plugin.client.create(
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
    )
    user = review["status"]["userInfo"]
    assert user["username"] == f"system:serviceaccount:{PLUGIN_NAMESPACE}:{PLUGIN_ACCOUNT}"
    assert user["extra"]["authentication.kubernetes.io/node-name"] == [plugin.node]


def test_plugin_writes_the_slices_of_its_own_node(plugin: PluginIdentity) -> None:
    client = plugin.client
    created = client.create(paths.resource_slices(), slice_for(plugin.node))
    path = paths.resource_slices(created["metadata"]["name"])
    created["spec"]["pool"]["generation"] = 2
    updated = client.replace(path, created)
    assert updated["spec"]["pool"]["generation"] == 2
    client.delete(path)


def other_node_message(plugin: PluginIdentity) -> str:
    return (
        f"the dcu.hygon.com kubelet plugin on node '{plugin.node}' may not write "
        f"ResourceSlices of node '{plugin.other_node}'"
    )


def test_plugin_may_not_create_slices_of_another_node(plugin: PluginIdentity) -> None:
    body = slice_for(plugin.other_node)
    with pytest.raises(Forbidden) as caught:
        plugin.client.create(paths.resource_slices(), body)
    assert caught.value.message == denied(body, SLICES_POLICY, other_node_message(plugin))


def test_plugin_may_not_update_slices_of_another_node(
    plugin: PluginIdentity, admin_slice: dict[str, Any]
) -> None:
    changed = {**admin_slice, "metadata": {**admin_slice["metadata"], "labels": {"x": "y"}}}
    with pytest.raises(Forbidden) as caught:
        plugin.client.replace(paths.resource_slices(admin_slice["metadata"]["name"]), changed)
    assert caught.value.message == denied(admin_slice, SLICES_POLICY, other_node_message(plugin))


def test_plugin_may_not_delete_slices_of_another_node(
    plugin: PluginIdentity, admin_slice: dict[str, Any]
) -> None:
    with pytest.raises(Forbidden) as caught:
        plugin.client.delete(paths.resource_slices(admin_slice["metadata"]["name"]))
    assert caught.value.message == denied(admin_slice, SLICES_POLICY, other_node_message(plugin))


def test_plugin_may_not_write_cluster_wide_slices(plugin: PluginIdentity) -> None:
    body = slice_for(plugin.node)
    del body["spec"]["nodeName"]
    body["spec"]["allNodes"] = True
    with pytest.raises(Forbidden) as caught:
        plugin.client.create(paths.resource_slices(), body)
    assert caught.value.message == denied(
        body,
        SLICES_POLICY,
        f"the dcu.hygon.com kubelet plugin on node '{plugin.node}' may not write "
        "ResourceSlices without spec.nodeName",
    )


def test_plugin_may_not_write_slices_of_another_driver(plugin: PluginIdentity) -> None:
    body = slice_for(plugin.node, driver="gpu.example.com")
    with pytest.raises(Forbidden) as caught:
        plugin.client.create(paths.resource_slices(), body)
    assert caught.value.message == denied(
        body,
        SLICES_POLICY,
        "the dcu.hygon.com kubelet plugin may not write ResourceSlices of driver 'gpu.example.com'",
    )


def test_plugin_token_without_a_pod_may_not_write_slices(
    deployed: KubeClient, plugin: PluginIdentity
) -> None:
    """plugin: only to wait until the slices policy applies."""
    body = slice_for(plugin.node)
    with client_with_token(deployed, request_plugin_token(deployed, bound_pod=None)) as client:
        with pytest.raises(Forbidden) as caught:
            client.create(paths.resource_slices(), body)
    assert caught.value.message == denied(
        body,
        SLICES_POLICY,
        "the dcu.hygon.com kubelet plugin may write ResourceSlices only with a token bound to "
        "a Pod on a node (found no authentication.kubernetes.io/node-name in the token; is "
        "ServiceAccountTokenPodNodeInfo enabled?)",
    )


def test_other_users_write_any_node_slices(
    deployed: KubeClient, plugin: PluginIdentity, admin_slice: dict[str, Any]
) -> None:
    """The policy narrows only the plugin: the admin's slice (other node) was created."""
    assert admin_slice["spec"]["nodeName"] == plugin.other_node
