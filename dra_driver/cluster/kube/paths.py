"""REST paths of the Kubernetes resources the driver and its tests use.

Pure string building; never performs I/O. Names and namespaces are URL-quoted, so a path is
always safe to append a query to.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

RESOURCE_V1 = "resource.k8s.io/v1"


@dataclass(frozen=True, slots=True)
class ResourceType:
    """Where a kind lives in the REST API."""

    api_version: str
    """``v1`` for the core group, else ``<group>/<version>``."""
    plural: str
    namespaced: bool


#: (apiVersion, kind) of every object the apply helper can create.
KINDS: Mapping[tuple[str, str], ResourceType] = {
    ("v1", "Namespace"): ResourceType("v1", "namespaces", namespaced=False),
    ("v1", "Node"): ResourceType("v1", "nodes", namespaced=False),
    ("v1", "Pod"): ResourceType("v1", "pods", namespaced=True),
    ("v1", "ConfigMap"): ResourceType("v1", "configmaps", namespaced=True),
    ("v1", "Secret"): ResourceType("v1", "secrets", namespaced=True),
    ("v1", "ServiceAccount"): ResourceType("v1", "serviceaccounts", namespaced=True),
    ("v1", "Event"): ResourceType("v1", "events", namespaced=True),
    ("apps/v1", "DaemonSet"): ResourceType("apps/v1", "daemonsets", namespaced=True),
    ("coordination.k8s.io/v1", "Lease"): ResourceType(
        "coordination.k8s.io/v1", "leases", namespaced=True
    ),
    (RESOURCE_V1, "DeviceClass"): ResourceType(RESOURCE_V1, "deviceclasses", namespaced=False),
    (RESOURCE_V1, "ResourceClaim"): ResourceType(RESOURCE_V1, "resourceclaims", namespaced=True),
    (RESOURCE_V1, "ResourceClaimTemplate"): ResourceType(
        RESOURCE_V1, "resourceclaimtemplates", namespaced=True
    ),
    (RESOURCE_V1, "ResourceSlice"): ResourceType(RESOURCE_V1, "resourceslices", namespaced=False),
    (RESOURCE_V1, "DeviceTaintRule"): ResourceType(
        RESOURCE_V1, "devicetaintrules", namespaced=False
    ),
    ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicy"): ResourceType(
        "admissionregistration.k8s.io/v1", "validatingadmissionpolicies", namespaced=False
    ),
    ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicyBinding"): ResourceType(
        "admissionregistration.k8s.io/v1", "validatingadmissionpolicybindings", namespaced=False
    ),
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): ResourceType(
        "rbac.authorization.k8s.io/v1", "clusterroles", namespaced=False
    ),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): ResourceType(
        "rbac.authorization.k8s.io/v1", "clusterrolebindings", namespaced=False
    ),
    ("rbac.authorization.k8s.io/v1", "Role"): ResourceType(
        "rbac.authorization.k8s.io/v1", "roles", namespaced=True
    ),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): ResourceType(
        "rbac.authorization.k8s.io/v1", "rolebindings", namespaced=True
    ),
}


def resource_path(
    api_version: str,
    plural: str,
    *,
    namespace: str | None = None,
    name: str | None = None,
    subresource: str | None = None,
) -> str:
    """The path of a collection, or of one object (and optionally its subresource)."""
    if subresource is not None and name is None:
        raise ValueError(f"subresource {subresource!r} needs an object name")
    root = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    parts = [root]
    if namespace is not None:
        parts.append(f"namespaces/{quote(namespace, safe='')}")
    parts.append(plural)
    if name is not None:
        parts.append(quote(name, safe=""))
    if subresource is not None:
        parts.append(subresource)
    return "/".join(parts)


def namespaces(name: str | None = None) -> str:
    """``/api/v1/namespaces[/{name}]``."""
    return resource_path("v1", "namespaces", name=name)


def nodes(name: str | None = None, *, subresource: str | None = None) -> str:
    """``/api/v1/nodes[/{name}[/{subresource}]]``."""
    return resource_path("v1", "nodes", name=name, subresource=subresource)


def pods(
    namespace: str | None = None, name: str | None = None, *, subresource: str | None = None
) -> str:
    """Pods of one namespace, or of all namespaces when ``namespace`` is None."""
    return resource_path("v1", "pods", namespace=namespace, name=name, subresource=subresource)


def configmaps(namespace: str | None = None, name: str | None = None) -> str:
    """ConfigMaps of one namespace, or of all namespaces."""
    return resource_path("v1", "configmaps", namespace=namespace, name=name)


def service_accounts(namespace: str, name: str | None = None) -> str:
    """ServiceAccounts of a namespace."""
    return resource_path("v1", "serviceaccounts", namespace=namespace, name=name)


def leases(namespace: str, name: str | None = None) -> str:
    """``coordination.k8s.io/v1`` Leases (node heartbeats live in ``kube-node-lease``)."""
    return resource_path("coordination.k8s.io/v1", "leases", namespace=namespace, name=name)


def resource_slices(name: str | None = None) -> str:
    """``/apis/resource.k8s.io/v1/resourceslices[/{name}]`` (cluster-scoped)."""
    return resource_path(RESOURCE_V1, "resourceslices", name=name)


def device_classes(name: str | None = None) -> str:
    """``/apis/resource.k8s.io/v1/deviceclasses[/{name}]`` (cluster-scoped)."""
    return resource_path(RESOURCE_V1, "deviceclasses", name=name)


def resource_claims(
    namespace: str | None = None, name: str | None = None, *, subresource: str | None = None
) -> str:
    """ResourceClaims of one namespace, or of all namespaces."""
    return resource_path(
        RESOURCE_V1, "resourceclaims", namespace=namespace, name=name, subresource=subresource
    )


def resource_claim_templates(namespace: str | None = None, name: str | None = None) -> str:
    """ResourceClaimTemplates of one namespace, or of all namespaces."""
    return resource_path(RESOURCE_V1, "resourceclaimtemplates", namespace=namespace, name=name)


def resource_type(obj: Mapping[str, Any]) -> ResourceType:
    """The REST location of an object's kind; ValueError for a kind not in :data:`KINDS`."""
    key = (str(obj.get("apiVersion", "")), str(obj.get("kind", "")))
    try:
        return KINDS[key]
    except KeyError:
        known = ", ".join(sorted(f"{kind} ({version})" for version, kind in KINDS))
        raise ValueError(f"no REST path known for {key[1]} {key[0]}; known: {known}") from None


def collection_path(obj: Mapping[str, Any], *, default_namespace: str = "default") -> str:
    """The path to POST ``obj`` to."""
    rtype = resource_type(obj)
    return resource_path(
        rtype.api_version, rtype.plural, namespace=_namespace_of(obj, rtype, default_namespace)
    )


def object_path(obj: Mapping[str, Any], *, default_namespace: str = "default") -> str:
    """The path of ``obj`` itself (it must have ``metadata.name``)."""
    rtype = resource_type(obj)
    name = obj.get("metadata", {}).get("name")
    if not name:
        raise ValueError(f"{obj.get('kind')} has no metadata.name")
    return resource_path(
        rtype.api_version,
        rtype.plural,
        namespace=_namespace_of(obj, rtype, default_namespace),
        name=str(name),
    )


def _namespace_of(obj: Mapping[str, Any], rtype: ResourceType, default: str) -> str | None:
    """The object's namespace for namespaced kinds, None for cluster-scoped ones."""
    if not rtype.namespaced:
        return None
    return str(obj.get("metadata", {}).get("namespace") or default)
