"""One workload -> its claim templates and the workload rewritten to use them.

Owns finding the pod template of each supported kind, the namespace, naming templates and pod
claims, and rewriting a copy of the workload: HAMi resources out, claims in, consumed
annotations and ``schedulerName: hami-scheduler`` removed. Delegates reading requests,
selectors, claim specs and warnings to their modules. Must not parse YAML or look at other
documents; the input is never modified.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from dra_driver.errors import ConvertError
from dra_driver.tools.convert.claims import build_claim_spec
from dra_driver.tools.convert.names import (
    DCU_NAMES,
    HAMI_SCHEDULER_NAMES,
    HCU_NAMES,
    NOUSE_UUID,
    SELECTION_ANNOTATIONS,
    USE_UUID,
    ResourceNames,
)
from dra_driver.tools.convert.notices import (
    annotation_warnings,
    foreign_hygon_resources,
    model_conflicts,
)
from dra_driver.tools.convert.options import DNS_LABEL, ConvertOptions
from dra_driver.tools.convert.request import DcuRequest, read_request
from dra_driver.tools.convert.selectors import annotation_selectors

#: Where each supported kind keeps its pod template (the object itself for a Pod).
POD_TEMPLATE_PATHS: Final[Mapping[tuple[str, str], tuple[str, ...]]] = {
    ("v1", "Pod"): (),
    ("apps/v1", "Deployment"): ("spec", "template"),
    ("apps/v1", "StatefulSet"): ("spec", "template"),
    ("apps/v1", "DaemonSet"): ("spec", "template"),
    ("apps/v1", "ReplicaSet"): ("spec", "template"),
    ("batch/v1", "Job"): ("spec", "template"),
    ("batch/v1", "CronJob"): ("spec", "jobTemplate", "spec", "template"),
}


@dataclass(frozen=True, slots=True)
class Conversion:
    """The documents to apply, in order, and what could not be carried over (one line each)."""

    documents: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def convert_manifest(manifest: Mapping[str, Any], options: ConvertOptions) -> Conversion:
    """Convert one workload: its claim templates (one per DCU container), then the workload.

    Deterministic and free of side effects; ``manifest`` is never modified. Raises
    ConvertError for an unsupported kind, a workload without HAMi DCU resources and any value
    that cannot be converted as it is.
    """
    key = kind_key(manifest)
    path = POD_TEMPLATE_PATHS.get(key)
    if path is None:
        raise ConvertError(unsupported_kind(manifest))
    workload: dict[str, Any] = copy.deepcopy(dict(manifest))
    kind = key[1]
    metadata = _mapping_at(workload, ("metadata",), f"{kind} without metadata", create=True)
    name = metadata.get("name")
    if not isinstance(name, str) or not name:
        raise ConvertError(
            f"{kind} without metadata.name: its ResourceClaimTemplates are named after it, so "
            "set metadata.name (generateName is not enough)"
        )
    namespace = _resolve_namespace(metadata, options, f"{kind} {name}")
    subject = f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"
    pod = _mapping_at(workload, path, f"{subject} has no pod template at {'.'.join(path)}")
    pod_spec = _mapping_at(pod, ("spec",), f"{subject} has no pod spec")
    raw_pod_metadata = pod.get("metadata")
    pod_metadata: dict[str, Any] = raw_pod_metadata if isinstance(raw_pod_metadata, dict) else {}
    annotations: dict[str, Any] = pod_metadata.get("annotations") or {}
    warnings: list[str] = []

    asks: list[tuple[dict[str, Any], DcuRequest]] = []
    for list_name in ("containers", "initContainers"):
        for container in pod_spec.get(list_name) or []:
            where = f"{subject}, container {container.get('name')}"
            warnings.extend(foreign_hygon_resources(container, where))
            request = read_request(container, where=where)
            if request is not None:
                asks.append((container, request))
    if not asks:
        raise ConvertError(
            f"{subject}: no container asks for {DCU_NAMES.count} (or {HCU_NAMES.count}): "
            "nothing to convert"
        )

    selectors = annotation_selectors(annotations, where=subject)
    if annotations.keys() & {USE_UUID, NOUSE_UUID}:
        warnings.append(
            f"{subject}: card ids are matched against the uuid attribute this driver publishes "
            "(DCU-<unique_id> of each card); check them with `dcu-dra devices` or the "
            "ResourceSlice before relying on the ones HAMi showed"
        )
    has_shares = any(not request.is_whole_card for _, request in asks)
    if has_shares:
        warnings.extend(model_conflicts(annotations, options, subject))
    warnings.extend(annotation_warnings(workload, annotations, path, subject))

    claim_names = {entry.get("name") for entry in pod_spec.get("resourceClaims") or []}
    templates: list[dict[str, Any]] = []
    for index, (container, request) in enumerate(asks):
        where = f"{subject}, container {request.container}"
        template_name = f"{name}-{request.container}-dcu"
        if len(template_name) > 253:
            raise ConvertError(
                f"{where}: the ResourceClaimTemplate name {template_name[:40]}... would be "
                "longer than 253 characters: shorten the workload or container name"
            )
        claim_spec = build_claim_spec(request, selectors=selectors, options=options, where=where)
        template_meta: dict[str, Any] = {"name": template_name}
        if namespace:
            template_meta["namespace"] = namespace
        templates.append(
            {
                "apiVersion": "resource.k8s.io/v1",
                "kind": "ResourceClaimTemplate",
                "metadata": template_meta,
                "spec": {"spec": claim_spec},
            }
        )
        claim_name = _pod_claim_name(request.container, index)
        if claim_name in claim_names:
            raise ConvertError(
                f"{where}: the pod already has a resource claim named {claim_name!r}; rename it"
            )
        claim_names.add(claim_name)
        _remove_hami_resources(container, request.names)
        resources = _list_parent(container, "resources")
        _list_at(resources, "claims").append({"name": claim_name})
        _list_at(pod_spec, "resourceClaims").append(
            {"name": claim_name, "resourceClaimTemplateName": template_name}
        )

    for key_name in SELECTION_ANNOTATIONS & annotations.keys():
        del annotations[key_name]
    if not annotations and "annotations" in pod_metadata:
        del pod_metadata["annotations"]
        if not pod_metadata and path:
            del pod["metadata"]
    if pod_spec.get("schedulerName") in HAMI_SCHEDULER_NAMES:
        warnings.append(
            f"{subject}: spec.schedulerName {pod_spec['schedulerName']} removed: DRA claims are "
            "allocated by the default kube-scheduler"
        )
        del pod_spec["schedulerName"]
    return Conversion(documents=[*templates, workload], warnings=warnings)


def kind_key(manifest: Mapping[str, Any]) -> tuple[str, str]:
    """``(apiVersion, kind)`` of a document, the key of :data:`POD_TEMPLATE_PATHS`."""
    return (str(manifest.get("apiVersion", "")), str(manifest.get("kind", "")))


def unsupported_kind(manifest: Mapping[str, Any]) -> str:
    """The error for a document that is not a supported workload, listing the kinds."""
    api_version, kind = kind_key(manifest)
    name = (manifest.get("metadata") or {}).get("name")
    subject = f"{kind or '(no kind)'} ({api_version or 'no apiVersion'})"
    if name:
        subject += f" {name}"
    supported = ", ".join(f"{k} ({v})" for v, k in POD_TEMPLATE_PATHS)
    return f"{subject} is not a supported kind: convert one of {supported}"


def _mapping_at(
    root: dict[str, Any], path: Sequence[str], message: str, *, create: bool = False
) -> dict[str, Any]:
    """The mapping at ``path`` under ``root``; ConvertError(``message``) when it is not one."""
    node: Any = root
    for part in path:
        if create and isinstance(node, dict) and node.get(part) is None:
            node[part] = {}
        node = node.get(part) if isinstance(node, dict) else None
    if not isinstance(node, dict):
        raise ConvertError(message)
    return node


def _resolve_namespace(
    metadata: dict[str, Any], options: ConvertOptions, subject: str
) -> str | None:
    namespace = metadata.get("namespace")
    if options.namespace is None:
        return str(namespace) if namespace else None
    if not namespace:
        metadata["namespace"] = options.namespace
        return options.namespace
    if namespace != options.namespace:
        raise ConvertError(
            f"{subject} is in namespace {namespace}, not {options.namespace} (--namespace): "
            "drop --namespace or change the object's namespace"
        )
    return options.namespace


def _remove_hami_resources(container: dict[str, Any], names: ResourceNames) -> None:
    resources = container.get("resources") or {}
    for section in ("limits", "requests"):
        values = resources.get(section)
        if not isinstance(values, dict):
            continue
        for name in names.resources:
            values.pop(name, None)
        if not values:
            del resources[section]


def _list_parent(node: dict[str, Any], key: str) -> dict[str, Any]:
    """``node[key]`` as a mapping, created when missing or null (``resources:`` left empty)."""
    if node.get(key) is None:
        node[key] = {}
    value: dict[str, Any] = node[key]
    return value


def _list_at(node: dict[str, Any], key: str) -> list[Any]:
    """``node[key]`` as a list, created when missing or null."""
    if node.get(key) is None:
        node[key] = []
    value: list[Any] = node[key]
    return value


def _pod_claim_name(container: str, index: int) -> str:
    """``<container>-dcu``, or ``dcu-<index>`` when that would not be a DNS label."""
    name = f"{container}-dcu"
    return name if DNS_LABEL.match(name) else f"dcu-{index}"
