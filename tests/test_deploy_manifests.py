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
#: Examples for Volcano: not applied by the demos (they need Volcano's CRDs and scheduler).
VOLCANO_EXAMPLES_DIR = EXAMPLES_DIR / "volcano"
#: Volcano's Job, a CRD the schemas do not know: validated through its tasks' pod templates.
VOLCANO_JOB = ("batch.volcano.sh/v1alpha1", "Job")
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
    def is_volcano_job(self) -> bool:
        return (self.body.get("apiVersion"), self.kind) == VOLCANO_JOB

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
    return [doc for doc in documents if doc.kind == kind and not doc.is_volcano_job]


def task_pods(job: Document) -> list[dict[str, Any]]:
    """Each task's pod template of a Volcano Job, as the Pod its controller creates from it."""
    namespace = job.body["metadata"]["namespace"]
    return [
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"{job.name}-{task['name']}-0", "namespace": namespace},
            "spec": task["template"]["spec"],
        }
        for task in job.body["spec"]["tasks"]
    ]


#: What the schemas check: every document, and a Volcano Job's task pods instead of the Job.
SCHEMA_DOCUMENTS = [
    (f"{doc.id}/{pod['metadata']['name']}", pod)
    for doc in DOCUMENTS
    for pod in (task_pods(doc) if doc.is_volcano_job else [doc.body])
]


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
        "examples/volcano/vdcu-job.yaml",
        "examples/volcano/vdcu-pod.yaml",
    }


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_validator_has_schemas_of_each_supported_version(version: str) -> None:
    """kubernetes-validate silently falls back to an older schema for an unknown version."""
    assert version in kubernetes_validate_utils.all_versions()


@pytest.mark.parametrize(
    ("document", "version"),
    [(body, version) for _, body in SCHEMA_DOCUMENTS for version in KUBERNETES_VERSIONS],
    ids=[f"{id_}@{minor(v)}" for id_, _ in SCHEMA_DOCUMENTS for v in KUBERNETES_VERSIONS],
)
def test_document_is_valid_in_strict_mode(document: dict[str, Any], version: str) -> None:
    validated_with = kubernetes_validate.validate(document, version, strict=True)
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
    assert len(specs) == 6
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
    sorted(EXAMPLES_DIR.rglob("*.yaml")),
    ids=[str(path.relative_to(EXAMPLES_DIR)) for path in sorted(EXAMPLES_DIR.rglob("*.yaml"))],
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
    pods = [(doc.id, doc.body) for doc in documents if doc.kind == "Pod"]
    pods += [(doc.id, pod) for doc in documents if doc.is_volcano_job for pod in task_pods(doc)]
    assert pods
    for pod_id, pod in pods:
        for entry in pod["spec"].get("resourceClaims") or []:
            if "resourceClaimName" in entry:
                assert ("ResourceClaim", entry["resourceClaimName"]) in names, pod_id
            else:
                template = entry["resourceClaimTemplateName"]
                assert ("ResourceClaimTemplate", template) in names, pod_id


def test_examples_readme_describes_every_example() -> None:
    for directory in (EXAMPLES_DIR, VOLCANO_EXAMPLES_DIR):
        readme = (directory / "README.md").read_text()
        for path in directory.glob("*.yaml"):
            assert f"`{path.name}`" in readme, path


# --- Volcano examples ---------------------------------------------------------------------

VOLCANO_EXAMPLES = [doc for doc in EXAMPLES if doc.path.is_relative_to(VOLCANO_EXAMPLES_DIR)]


def test_volcano_examples_are_scheduled_by_volcano() -> None:
    pods = [doc.body for doc in VOLCANO_EXAMPLES if doc.kind == "Pod"]
    jobs = [doc for doc in VOLCANO_EXAMPLES if doc.is_volcano_job]
    assert len(pods) == 1
    assert len(jobs) == 1
    for pod in [*pods, *(pod for job in jobs for pod in task_pods(job))]:
        assert pod["spec"].get("schedulerName", "volcano") == "volcano"
        assert pod["spec"]["resourceClaims"], pod["metadata"]["name"]
    for job in jobs:
        assert job.body["spec"]["schedulerName"] == "volcano"


def test_volcano_job_example_is_one_gang_of_quarter_cards() -> None:
    """minAvailable equals the replicas: all four quarter-card tasks start together or none."""
    [job] = [doc for doc in VOLCANO_EXAMPLES if doc.is_volcano_job]
    spec = job.body["spec"]
    assert spec["minAvailable"] == sum(task["replicas"] for task in spec["tasks"]) == 4
    template = one(VOLCANO_EXAMPLES, "ResourceClaimTemplate", "quarter-dcu")
    [request] = template["spec"]["spec"]["devices"]["requests"]
    assert request["exactly"]["capacity"]["requests"] == {"cores": "15", "memory": "8188Mi"}


def test_volcano_job_example_has_the_fields_volcano_requires() -> None:
    """What Volcano's Job CRD requires of each task (no schema here: it is Volcano's)."""
    for job in (doc for doc in VOLCANO_EXAMPLES if doc.is_volcano_job):
        assert set(job.body) == {"apiVersion", "kind", "metadata", "spec"}
        names = [task["name"] for task in job.body["spec"]["tasks"]]
        assert len(set(names)) == len(names), job.id
        for task in job.body["spec"]["tasks"]:
            assert isinstance(task["replicas"], int), job.id
            assert task["replicas"] >= 1, job.id
            assert set(task) <= {"name", "replicas", "template", "minAvailable", "policies"}


def test_demos_do_not_apply_the_volcano_examples() -> None:
    """The demos apply deploy/examples/*.yaml (no subfolders): they run no Volcano."""
    assert not list(EXAMPLES_DIR.glob("vdcu-*.yaml"))
    assert all(doc.path.parent == VOLCANO_EXAMPLES_DIR for doc in VOLCANO_EXAMPLES)
