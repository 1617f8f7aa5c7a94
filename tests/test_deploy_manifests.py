"""The manifests under deploy/: schema-valid for every supported Kubernetes, and consistent.

Schema validation uses kubernetes-validate's OpenAPI schemas in strict mode (unknown fields are
errors), for each minor version the driver supports. The structural tests pin what a schema
cannot: examples use only our classes and capacity keys, and nothing grants more RBAC than the
kubelet plugin needs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate import utils as kubernetes_validate_utils

REPO_ROOT = Path(__file__).resolve().parents[1]
DEPLOY_DIR = REPO_ROOT / "deploy"
EXAMPLES_DIR = DEPLOY_DIR / "examples"
#: The Helm chart: Go templates, not plain manifests (tests/deploy/test_helm_chart.py renders it).
HELM_DIR = DEPLOY_DIR / "helm"

#: The Kubernetes versions the driver supports (resource.k8s.io/v1 is GA from 1.34).
KUBERNETES_VERSIONS = ("1.34.0", "1.35.0", "1.36.0", "1.37.0")

DRIVER = "dcu.hygon.com"
OUR_CLASSES = frozenset({"dcu.hygon.com", "vdcu.dcu.hygon.com"})
#: The only capacity keys a claim may request: the slice's keys, matched literally.
SHARE_CAPACITY_KEYS = frozenset({"cores", "memory"})
NAMESPACE = "dcu-dra"
SERVICE_ACCOUNT = "dcu-dra-kubelet-plugin"
CLUSTER_ROLE = "dcu-dra-kubelet-plugin"

#: Every permission the kubelet plugin gets: (apiGroup, resource, verb, resourceName or None).
ALLOWED_PERMISSIONS = frozenset(
    {("resource.k8s.io", "resourceclaims", verb, None) for verb in ("get", "list", "watch")}
    | {("resource.k8s.io", "resourceclaims/status", "update", None)}
    | {
        ("resource.k8s.io", "resourceclaims/driver", verb, DRIVER)
        for verb in ("associated-node:update", "associated-node:patch")
    }
    | {
        ("resource.k8s.io", "resourceslices", verb, None)
        for verb in ("get", "list", "watch", "create", "update", "patch", "delete")
    }
    | {("", "nodes", "get", None)}
)


@dataclass(frozen=True, slots=True)
class Document:
    """One YAML document of a file under deploy/."""

    path: Path
    index: int
    body: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.body["kind"])

    @property
    def name(self) -> str:
        return str(self.body["metadata"]["name"])

    @property
    def id(self) -> str:
        """``examples/shared-claim.yaml#1:ResourceClaim/shared-dcu``."""
        return f"{self.path.relative_to(DEPLOY_DIR)}#{self.index}:{self.kind}/{self.name}"


def plain_yaml_files(directory: Path) -> list[Path]:
    """The ``*.yaml`` files under ``directory``, except the Helm chart's."""
    return [path for path in directory.rglob("*.yaml") if not path.is_relative_to(HELM_DIR)]


def load_documents(directory: Path) -> list[Document]:
    """Every non-empty YAML document under ``directory``, in file order."""
    documents = []
    for path in sorted(plain_yaml_files(directory)):
        for index, body in enumerate(yaml.safe_load_all(path.read_text())):
            if body is not None:
                documents.append(Document(path, index, body))
    return documents


DOCUMENTS = load_documents(DEPLOY_DIR)
EXAMPLES = [doc for doc in DOCUMENTS if doc.path.is_relative_to(EXAMPLES_DIR)]
OBJECTS = [doc for doc in DOCUMENTS if not doc.path.is_relative_to(EXAMPLES_DIR)]


def of_kind(documents: list[Document], kind: str) -> list[Document]:
    return [doc for doc in documents if doc.kind == kind]


def one(documents: list[Document], kind: str, name: str) -> dict[str, Any]:
    [found] = [doc.body for doc in of_kind(documents, kind) if doc.name == name]
    return found


def minor(version: str) -> str:
    """``1.34.0`` -> ``1.34``."""
    return ".".join(version.split(".")[:2])


# --- schema -------------------------------------------------------------------------------


def test_deploy_has_the_expected_files() -> None:
    files = {str(path.relative_to(DEPLOY_DIR)) for path in plain_yaml_files(DEPLOY_DIR)}
    assert files == {
        "admission-claims.yaml",
        "admission-slices.yaml",
        "deviceclass.yaml",
        "rbac.yaml",
        "examples/cel-model.yaml",
        "examples/extended-resource.yaml",
        "examples/quarter-card.yaml",
        "examples/shared-claim.yaml",
        "examples/whole-card.yaml",
    }


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_validator_has_schemas_of_each_supported_version(version: str) -> None:
    """kubernetes-validate silently falls back to an older schema for an unknown version."""
    assert version in kubernetes_validate_utils.all_versions()


@pytest.mark.parametrize(
    ("document", "version"),
    [(doc, version) for doc in DOCUMENTS for version in KUBERNETES_VERSIONS],
    ids=[f"{doc.id}@{minor(version)}" for doc in DOCUMENTS for version in KUBERNETES_VERSIONS],
)
def test_document_is_valid_in_strict_mode(document: Document, version: str) -> None:
    validated_with = kubernetes_validate.validate(document.body, version, strict=True)
    assert validated_with == minor(version)


def test_strict_validation_rejects_unknown_fields() -> None:
    """Guards the check above: strict mode must flag a field the API does not have."""
    body = {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "DeviceClass",
        "metadata": {"name": "x"},
        "spec": {"extendedResourceNames": ["hygon.com/dcu"]},
    }
    with pytest.raises(kubernetes_validate.ValidationError) as caught:
        kubernetes_validate.validate(body, KUBERNETES_VERSIONS[0], strict=True)
    # str() of the error is the whole schema dump; its message is the one-line reason.
    assert caught.value.message == (
        "Additional properties are not allowed ('extendedResourceNames' was unexpected)"
    )


# --- the objects --------------------------------------------------------------------------


def test_deploy_objects_live_in_the_driver_namespace() -> None:
    for doc in OBJECTS:
        namespace = doc.body["metadata"].get("namespace")
        assert namespace in (None, NAMESPACE), doc.id


def test_device_classes_select_only_our_driver() -> None:
    classes = of_kind(OBJECTS, "DeviceClass")
    assert {doc.name for doc in classes} == OUR_CLASSES
    for doc in classes:
        [selector] = doc.body["spec"]["selectors"]
        assert selector["cel"]["expression"].startswith(f'device.driver == "{DRIVER}"'), doc.id


def test_whole_card_class_is_the_extended_resource() -> None:
    assert one(OBJECTS, "DeviceClass", "dcu.hygon.com")["spec"]["extendedResourceName"] == (
        "hygon.com/dcu"
    )
    assert "extendedResourceName" not in one(OBJECTS, "DeviceClass", "vdcu.dcu.hygon.com")["spec"]


def test_shares_class_selects_only_shareable_devices() -> None:
    [selector] = one(OBJECTS, "DeviceClass", "vdcu.dcu.hygon.com")["spec"]["selectors"]
    assert "device.allowMultipleAllocations == true" in selector["cel"]["expression"]


def test_claims_policy_checks_exactly_our_classes() -> None:
    policy = one(OBJECTS, "ValidatingAdmissionPolicy", "resourceclaims.dcu.hygon.com")
    [classes] = [v for v in policy["spec"]["variables"] if v["name"] == "classes"]
    assert set(json.loads(classes["expression"])) == OUR_CLASSES


def test_slices_policy_matches_the_plugin_service_account() -> None:
    policy = one(OBJECTS, "ValidatingAdmissionPolicy", "resourceslices.dcu.hygon.com")
    [condition] = policy["spec"]["matchConditions"]
    assert condition["expression"] == (
        f'request.userInfo.username == "system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}"'
    )


@pytest.mark.parametrize(
    "policy",
    [doc.body for doc in of_kind(OBJECTS, "ValidatingAdmissionPolicy")],
    ids=[doc.name for doc in of_kind(OBJECTS, "ValidatingAdmissionPolicy")],
)
def test_policy_fails_closed_and_is_bound_to_deny(policy: Mapping[str, Any]) -> None:
    assert policy["spec"]["failurePolicy"] == "Fail"
    bindings = [
        doc.body
        for doc in of_kind(OBJECTS, "ValidatingAdmissionPolicyBinding")
        if doc.body["spec"]["policyName"] == policy["metadata"]["name"]
    ]
    assert [binding["spec"]["validationActions"] for binding in bindings] == [["Deny"]]


# --- RBAC ---------------------------------------------------------------------------------


def granted_permissions(rules: list[Mapping[str, Any]]) -> Iterator[tuple[str, str, str, Any]]:
    """Expand RBAC rules into (apiGroup, resource, verb, resourceName or None) tuples."""
    for rule in rules:
        assert not rule.get("nonResourceURLs"), rule
        names = rule.get("resourceNames") or [None]
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    for name in names:
                        yield group, resource, verb, name


def test_rbac_grants_exactly_what_the_kubelet_plugin_needs() -> None:
    roles = of_kind(DOCUMENTS, "ClusterRole") + of_kind(DOCUMENTS, "Role")
    assert [doc.name for doc in roles] == [CLUSTER_ROLE]
    assert set(granted_permissions(roles[0].body["rules"])) == ALLOWED_PERMISSIONS


def test_no_document_grants_anything_else() -> None:
    for doc in DOCUMENTS:
        if doc.kind in ("RoleBinding", "ClusterRoleBinding"):
            assert doc.body["roleRef"] == {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": CLUSTER_ROLE,
            }, doc.id
            assert doc.body["subjects"] == [
                {"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": NAMESPACE}
            ], doc.id
        if doc.kind == "Pod":
            assert "serviceAccountName" not in doc.body["spec"], doc.id


def test_permission_table_has_no_wildcards() -> None:
    for permission in ALLOWED_PERMISSIONS:
        assert "*" not in permission


# --- examples -----------------------------------------------------------------------------


def device_requests(claim_spec: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(name, request) of each `exactly` request and each `firstAvailable` sub-request."""
    for request in (claim_spec.get("devices") or {}).get("requests") or []:
        if "exactly" in request:
            yield request["name"], request["exactly"]
        for sub in request.get("firstAvailable") or []:
            yield f"{request['name']}/{sub['name']}", sub


def example_claim_specs() -> Iterator[tuple[str, Mapping[str, Any]]]:
    for doc in EXAMPLES:
        if doc.kind == "ResourceClaim":
            yield doc.id, doc.body["spec"]
        elif doc.kind == "ResourceClaimTemplate":
            yield doc.id, doc.body["spec"]["spec"]


def test_examples_request_only_our_classes_and_capacity_keys() -> None:
    specs = list(example_claim_specs())
    assert len(specs) == 4
    for doc_id, spec in specs:
        requests = list(device_requests(spec))
        assert requests, doc_id
        for name, request in requests:
            assert request["deviceClassName"] in OUR_CLASSES, (doc_id, name)
            keys = set((request.get("capacity") or {}).get("requests") or {})
            # Both or neither: one alone would take the whole of the other.
            assert keys in (set(), SHARE_CAPACITY_KEYS), (doc_id, name)


def test_examples_share_only_through_the_shares_class() -> None:
    for doc_id, spec in example_claim_specs():
        for name, request in device_requests(spec):
            if request.get("capacity"):
                assert request["deviceClassName"] == "vdcu.dcu.hygon.com", (doc_id, name)


def test_extended_resource_example_uses_the_class_extended_resource() -> None:
    extended = one(OBJECTS, "DeviceClass", "dcu.hygon.com")["spec"]["extendedResourceName"]
    pod = one(EXAMPLES, "Pod", "extended")
    [container] = pod["spec"]["containers"]
    assert container["resources"]["limits"] == {extended: 1}


@pytest.mark.parametrize(
    "path",
    sorted(EXAMPLES_DIR.glob("*.yaml")),
    ids=[path.name for path in sorted(EXAMPLES_DIR.glob("*.yaml"))],
)
def test_example_lives_in_its_own_namespace_with_its_claims(path: Path) -> None:
    documents = [doc for doc in EXAMPLES if doc.path == path]
    [namespace] = [doc.name for doc in documents if doc.kind == "Namespace"]
    assert namespace.startswith("dcu-")
    others = {doc.path for doc in EXAMPLES if doc.path != path and doc.name == namespace}
    assert not others, f"namespace {namespace} is used by {others}"
    for doc in documents:
        if doc.kind != "Namespace":
            assert doc.body["metadata"]["namespace"] == namespace, doc.id
    names = {(doc.kind, doc.name) for doc in documents}
    pods = [doc for doc in documents if doc.kind == "Pod"]
    assert pods
    for pod in pods:
        for entry in pod.body["spec"].get("resourceClaims") or []:
            if "resourceClaimName" in entry:
                assert ("ResourceClaim", entry["resourceClaimName"]) in names, pod.id
            else:
                template = entry["resourceClaimTemplateName"]
                assert ("ResourceClaimTemplate", template) in names, pod.id


def test_examples_readme_describes_every_example() -> None:
    readme = (EXAMPLES_DIR / "README.md").read_text()
    for path in EXAMPLES_DIR.glob("*.yaml"):
        assert f"`{path.name}`" in readme
