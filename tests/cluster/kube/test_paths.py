"""Resource paths follow the Kubernetes REST layout."""

from __future__ import annotations

import pytest

from dra_driver.cluster.kube import paths


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (paths.nodes("n1"), "/api/v1/nodes/n1"),
        (paths.nodes("n1", subresource="status"), "/api/v1/nodes/n1/status"),
        (paths.pods(), "/api/v1/pods"),
        (paths.pods("ns"), "/api/v1/namespaces/ns/pods"),
        (paths.pods("ns", "p", subresource="status"), "/api/v1/namespaces/ns/pods/p/status"),
        (paths.resource_slices(), "/apis/resource.k8s.io/v1/resourceslices"),
        (
            paths.resource_claims("ns", "c"),
            "/apis/resource.k8s.io/v1/namespaces/ns/resourceclaims/c",
        ),
        (paths.device_classes("d"), "/apis/resource.k8s.io/v1/deviceclasses/d"),
        (
            paths.leases("kube-node-lease", "n1"),
            "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n1",
        ),
    ],
)
def test_named_helpers_build_rest_paths(path: str, expected: str) -> None:
    assert path == expected


def test_names_are_url_quoted() -> None:
    assert paths.nodes("a/b c") == "/api/v1/nodes/a%2Fb%20c"


def test_subresource_needs_a_name() -> None:
    with pytest.raises(ValueError, match=r"^subresource 'status' needs an object name$"):
        paths.resource_path("v1", "pods", subresource="status")


def test_object_paths_come_from_kind_and_namespace() -> None:
    template = {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaimTemplate",
        "metadata": {"name": "t"},
    }
    clusterrole = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "r", "namespace": "ignored"},
    }

    assert paths.collection_path(template, default_namespace="team") == (
        "/apis/resource.k8s.io/v1/namespaces/team/resourceclaimtemplates"
    )
    assert paths.object_path(template) == (
        "/apis/resource.k8s.io/v1/namespaces/default/resourceclaimtemplates/t"
    )
    assert paths.object_path(clusterrole) == "/apis/rbac.authorization.k8s.io/v1/clusterroles/r"


def test_unknown_kind_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"^no REST path known for Widget v9; known: ClusterRole"):
        paths.collection_path({"apiVersion": "v9", "kind": "Widget"})
