"""One workload -> its claim templates and the workload rewritten to use them.

Owns finding the pod template of each supported kind, the namespace, naming templates and pod
claims, and rewriting a copy of the workload: HAMi resources out, claims in, consumed
annotations and ``schedulerName: hami-scheduler`` removed (``volcano`` and Volcano's annotations
are kept; a Volcano Job is converted task by task). Delegates reading requests,
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
    VOLCANO_SCHEDULER_NAME,
    ResourceNames,
)
from dra_driver.tools.convert.notices import (
    annotation_warnings,
    best_effort_warning,
    foreign_hygon_resources,
    memory_unit_warning,
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


#: A Volcano Job (vcjob) keeps one pod template per task, at ``spec.tasks[i].template``.
VOLCANO_JOB: Final = ("batch.volcano.sh/v1alpha1", "Job")
#: Every kind that is converted: the kinds with one pod template and the vcjob.
WORKLOAD_KINDS: Final = frozenset({*POD_TEMPLATE_PATHS, VOLCANO_JOB})


@dataclass(frozen=True, slots=True)
class Conversion:
    """The documents to apply, in order, and what could not be carried over (one line each)."""

    documents: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _PodTemplate:
    """One pod template of a workload, where it lives, and how its objects are named."""

    pod: dict[str, Any]
    path: tuple[str | int, ...]
    subject: str
    """``Pod p``, ``Job ns/j`` or, for a vcjob task, ``Job (batch.volcano.sh) ns/j, task t``."""
    prefix: str
    """What template names start with: ``<workload>`` or ``<vcjob>-<task>``."""


def convert_manifest(manifest: Mapping[str, Any], options: ConvertOptions) -> Conversion:
    """Convert one workload: its claim templates (one per DCU container), then the workload.

    Deterministic and free of side effects; ``manifest`` is never modified. Raises
    ConvertError for an unsupported kind, a workload without HAMi DCU resources and any value
    that cannot be converted as it is. A vcjob's tasks are converted one by one (a task
    without DCUs is left as it is); its scheduler and Volcano's annotations are kept.
    """
    key = kind_key(manifest)
    if key not in WORKLOAD_KINDS:
        raise ConvertError(unsupported_kind(manifest))
    workload: dict[str, Any] = copy.deepcopy(dict(manifest))
    kind = key[1] if key != VOLCANO_JOB else "Job (batch.volcano.sh)"
    metadata = _mapping_at(workload, ("metadata",), f"{kind} without metadata", create=True)
    name = metadata.get("name")
    if not isinstance(name, str) or not name:
        raise ConvertError(
            f"{kind} without metadata.name: its ResourceClaimTemplates are named after it, so "
            "set metadata.name (generateName is not enough)"
        )
    namespace = _resolve_namespace(metadata, options, f"{kind} {name}")
    subject = f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"
    templates: list[dict[str, Any]] = []
    warnings: list[str] = []
    is_vcjob = key == VOLCANO_JOB
    with_dcus: list[_PodTemplate] = []
    for pod_template in _pod_templates(workload, key, subject, name):
        # The workload's own annotations are checked with its template, a vcjob's once below.
        own_path = () if is_vcjob else pod_template.path
        converted = _convert_pod_template(
            pod_template, workload, own_path, namespace, options, warnings
        )
        if converted:
            with_dcus.append(pod_template)
        templates.extend(converted)
    if is_vcjob:
        warnings.extend(annotation_warnings(workload, {}, ("spec", "tasks"), subject))
    if not templates:
        raise ConvertError(
            f"{subject}: no container asks for {DCU_NAMES.count} (or {HCU_NAMES.count}): "
            "nothing to convert"
        )
    if is_vcjob or _uses_volcano(workload, key):
        warnings.append(
            f"{subject}: schedulerName {VOLCANO_SCHEDULER_NAME} kept: Volcano allocates the "
            "claims only with its DRA support on (scheduler feature gate "
            "DynamicResourceAllocation=true, predicates argument "
            "predicate.DynamicResourceAllocationEnable: true; README, With Volcano)"
        )
        for pod_template in with_dcus:
            warnings.extend(best_effort_warning(pod_template.pod, pod_template.subject))
    return Conversion(documents=[*templates, workload], warnings=warnings)


def _pod_templates(
    workload: dict[str, Any], key: tuple[str, str], subject: str, name: str
) -> list[_PodTemplate]:
    """The pod templates of ``workload``: one, or one per task of a vcjob."""
    if key != VOLCANO_JOB:
        path = POD_TEMPLATE_PATHS[key]
        pod = _mapping_at(workload, path, f"{subject} has no pod template at {'.'.join(path)}")
        return [_PodTemplate(pod=pod, path=path, subject=subject, prefix=name)]
    tasks = (workload.get("spec") or {}).get("tasks")
    if not isinstance(tasks, list) or not tasks:
        raise ConvertError(f"{subject} has no spec.tasks: a Volcano Job needs at least one task")
    found = []
    for number, task in enumerate(tasks):
        task_name = task.get("name") if isinstance(task, dict) else None
        if not isinstance(task_name, str) or not DNS_LABEL.match(task_name):
            raise ConvertError(
                f"{subject}: spec.tasks[{number}] has no valid name ({task_name!r}): its "
                "ResourceClaimTemplates are named after it, so name each task (a DNS label)"
            )
        where = f"{subject}, task {task_name}"
        pod = _mapping_at(task, ("template",), f"{where} has no pod template at template")
        found.append(
            _PodTemplate(
                pod=pod,
                path=("spec", "tasks", number, "template"),
                subject=where,
                prefix=f"{name}-{task_name}",
            )
        )
    return found


def _convert_pod_template(
    template: _PodTemplate,
    workload: Mapping[str, Any],
    own_path: Sequence[str | int],
    namespace: str | None,
    options: ConvertOptions,
    warnings: list[str],
) -> list[dict[str, Any]]:
    """Rewrite one pod template in place; its claim templates (none when it asks for no DCU).

    Appends what cannot be carried over to ``warnings``.
    """
    pod, subject = template.pod, template.subject
    pod_spec = _mapping_at(pod, ("spec",), f"{subject} has no pod spec")
    raw_pod_metadata = pod.get("metadata")
    pod_metadata: dict[str, Any] = raw_pod_metadata if isinstance(raw_pod_metadata, dict) else {}
    annotations: dict[str, Any] = pod_metadata.get("annotations") or {}

    asks: list[tuple[dict[str, Any], DcuRequest]] = []
    for list_name in ("containers", "initContainers"):
        for container in pod_spec.get(list_name) or []:
            where = f"{subject}, container {container.get('name')}"
            warnings.extend(foreign_hygon_resources(container, where))
            request = read_request(container, where=where)
            if request is not None:
                asks.append((container, request))
                warnings.extend(memory_unit_warning(request, where))
    if not asks:
        return []

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
    warnings.extend(annotation_warnings(workload, annotations, own_path, subject))

    claim_names = {entry.get("name") for entry in pod_spec.get("resourceClaims") or []}
    templates: list[dict[str, Any]] = []
    for index, (container, request) in enumerate(asks):
        where = f"{subject}, container {request.container}"
        template_name = f"{template.prefix}-{request.container}-dcu"
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
        if not pod_metadata and template.path:
            del pod["metadata"]
    if pod_spec.get("schedulerName") in HAMI_SCHEDULER_NAMES:
        warnings.append(
            f"{subject}: spec.schedulerName {pod_spec['schedulerName']} removed: DRA claims are "
            "allocated by the default kube-scheduler"
        )
        del pod_spec["schedulerName"]
    return templates


def _uses_volcano(workload: Mapping[str, Any], key: tuple[str, str]) -> bool:
    """Whether a workload of one pod template asks for Volcano's scheduler."""
    pod: Any = workload
    for part in POD_TEMPLATE_PATHS[key]:
        pod = pod.get(part) if isinstance(pod, dict) else None
    spec = pod.get("spec") if isinstance(pod, dict) else None
    return isinstance(spec, dict) and spec.get("schedulerName") == VOLCANO_SCHEDULER_NAME


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
    supported = ", ".join(f"{k} ({v})" for v, k in [*POD_TEMPLATE_PATHS, VOLCANO_JOB])
    return f"{subject} is not a supported kind: convert one of {supported}"


def _mapping_at(
    root: dict[str, Any], path: Sequence[str | int], message: str, *, create: bool = False
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
