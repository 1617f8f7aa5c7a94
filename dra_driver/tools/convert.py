"""HAMi DCU workloads -> DRA claims of this driver. Pure: dicts (or YAML text) in and out.

``dcu-dra convert`` is the migration path from HAMi. Owns the translation rules only: it never
reads files, talks to the API server or imports gRPC; the CLI reads the input and prints what
this module returns.

A HAMi container asks for DCUs with extended resources and the pod's annotations narrow the
choice (``Project-HAMi/HAMi: pkg/device/hygon/device.go``). Both spellings HAMi has used are
read: ``hygon.com/dcunum``/``dcumem``/``dcucores`` with ``use-dcutype``/``nouse-dcutype``, and
the later ``hcu`` names. Each container that asks becomes one ResourceClaimTemplate
``<workload>-<container>-dcu`` in the workload's namespace, and the container loses its
``hygon.com/*`` resources and gains a claim:

- ``dcunum: N`` alone, or with ``dcucores: 100`` and no ``dcumem``: N whole DCUs, a request on
  the ``dcu.hygon.com`` class with ``count: N`` and no capacity requests (the driver's defaults
  are the whole card). In HAMi, 100 % of the cores and (without ``dcumem``) 100 % of the memory
  is an exclusive card too.
- With ``dcumem`` and/or ``dcucores``: N shares on the ``vdcu.dcu.hygon.com`` class, each with
  ``capacity.requests`` ``cores`` and ``memory``. HAMi's defaults fill a missing one: cores
  missing = 100 %; memory missing = 100 % of the card, which a share must state as a number
  (the admission policy in deploy/ requires both), so ``dcucores`` below 100 without
  ``dcumem`` is an error that says what to add.
- Percent -> CUs: ``floor(percent x CUs per card / 100)``, at least 1. Rounding down gives the
  container the CUs HAMi's device plugin put in its CU mask (it rounds down too), and keeps
  every set of shares that fitted one card under HAMi (percentages summing to <= 100) fitting
  under DRA; rounding up, as HAMi-DRA does, can push three shares of 33+33+34 % of a 60-CU card
  to 61 CUs. A share never has 0 CUs, hence the minimum. The CU count comes from
  ``--compute-units`` or from ``--model`` through :data:`COMPUTE_UNITS_BY_MODEL`; it is right
  only for cards of that size, so every converted share also gets a selector for it
  (``computeUnits == N``, or ``model == NAME``). Whole cards need no conversion and get no
  such selector.
- N > 1 shares are N requests ``dcu-0`` ... ``dcu-<N-1>`` joined by a ``distinctAttribute``
  constraint on ``resource.kubernetes.io/pciBusID``. A device with allowMultipleAllocations can
  serve two requests of one claim, so without the constraint two "cards" could be two shares of
  the same card. One request with ``count: N`` is not used: the allocator's distinctAttribute
  bookkeeping keys devices by request name (k8s.io/dynamic-resource-allocation v0.36), so it
  cannot check N > 2 devices of one request against each other.
- ``use-dcutype``/``nouse-dcutype``: comma-separated, case-insensitive substrings of the card
  type (HAMi's type is ``DCU-<model>``; a leading ``DCU-``/``HCU-`` is dropped) -> CEL on the
  ``model`` attribute. ``use-gpuuuid``/``nouse-gpuuuid``: comma-separated exact ids -> CEL on
  the ``uuid`` attribute. A use and a no-use annotation both apply, as in current HAMi.
- Things without an equivalent (HAMi's scheduler policies, other ``hami.io/`` annotations,
  ``schedulerName: hami-scheduler``) come back as warnings, never silently dropped.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import yaml

from dra_driver import DRIVER_NAME
from dra_driver.cluster.slices import CORES, MEMORY, PCI_BUS_ID_ATTRIBUTE
from dra_driver.errors import ConvertError

#: DeviceClass of whole DCUs and of shares (deploy/deviceclass.yaml).
WHOLE_CARD_CLASS: Final = "dcu.hygon.com"
SHARE_CLASS: Final = "vdcu.dcu.hygon.com"
#: Compute units per card model (hygon-dcu.md §3.2, dcu-dcgm's table). Used only to turn HAMi's
#: percent into CUs; the driver itself never uses a table (it reads CUs from KFD topology).
COMPUTE_UNITS_BY_MODEL: Final[Mapping[str, int]] = {
    "K100": 120,
    "K100_AI": 120,
    "K100_LC_AI": 120,
    "K100_LC_E_AI": 128,
    "Z100": 60,
    "Z100L": 60,
}
#: A CU mask is two 64-bit words: the driver cannot slice a wider card.
MAX_COMPUTE_UNITS: Final = 128
#: A claim holds at most 32 requests and 32 allocated devices (resource.k8s.io/v1 limits).
MAX_DEVICES_PER_CLAIM: Final = 32
#: HAMi keeps dcumem in an int32 of MiB and rejects more.
MAX_MEMORY_MIB: Final = 2**31 - 1
#: The attribute that tells two DCUs of a node apart, for the distinct-cards constraint.
DISTINCT_CARD_ATTRIBUTE: Final = PCI_BUS_ID_ATTRIBUTE
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
#: HAMi's own scheduler; a pod left on it would wait for HAMi after the migration.
HAMI_SCHEDULER_NAMES: Final = frozenset({"hami-scheduler"})
#: HAMi's per-pod scheduling policies (binpack, spread, topology-aware, mutex, numa).
HAMI_POLICY_ANNOTATIONS: Final = frozenset(
    {"hami.io/node-scheduler-policy", "hami.io/gpu-scheduler-policy"}
)
#: Pod annotations selecting cards by id, shared by both spellings.
USE_UUID: Final = "hygon.com/use-gpuuuid"
NOUSE_UUID: Final = "hygon.com/nouse-gpuuuid"

# What a card type or id in an annotation may look like: no quotes or spaces reach CEL.
_TYPE_VALUE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_UUID_VALUE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
_INTEGER = re.compile(r"^[+-]?[0-9]+$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# The prefixes HAMi's card types carry ("DCU-Z100"); values are matched against the model.
_TYPE_PREFIXES = ("DCU-", "HCU-")


@dataclass(frozen=True, slots=True)
class ResourceNames:
    """One spelling of HAMi's Hygon resources and type annotations."""

    count: str
    memory: str
    cores: str
    use_type: str
    nouse_type: str

    @property
    def resources(self) -> tuple[str, str, str]:
        """The three extended resource names."""
        return (self.count, self.memory, self.cores)


#: The original spelling and the later "HCU" one (HAMi#2969); both are converted.
DCU_NAMES: Final = ResourceNames(
    count="hygon.com/dcunum",
    memory="hygon.com/dcumem",
    cores="hygon.com/dcucores",
    use_type="hygon.com/use-dcutype",
    nouse_type="hygon.com/nouse-dcutype",
)
HCU_NAMES: Final = ResourceNames(
    count="hygon.com/hcunum",
    memory="hygon.com/hcumem",
    cores="hygon.com/hcucores",
    use_type="hygon.com/use-hcutype",
    nouse_type="hygon.com/nouse-hcutype",
)
NAME_SETS: Final = (DCU_NAMES, HCU_NAMES)
#: Every HAMi resource name we convert.
HAMI_RESOURCES: Final = frozenset(name for names in NAME_SETS for name in names.resources)
#: Every pod annotation the conversion consumes (they move into the claim's selectors).
SELECTION_ANNOTATIONS: Final = frozenset(
    {USE_UUID, NOUSE_UUID}
    | {key for names in NAME_SETS for key in (names.use_type, names.nouse_type)}
)


@dataclass(frozen=True, slots=True)
class ConvertOptions:
    """How to convert; validated on construction.

    ``compute_units`` (``--compute-units``) or ``model`` (``--model``, canonicalised to the
    table's spelling) give the CUs of one card, needed only for shares. ``namespace``
    (``--namespace``) fills in converted workloads without one (their templates follow); a
    workload in another namespace is an error.
    """

    compute_units: int | None = None
    model: str | None = None
    namespace: str | None = None

    def __post_init__(self) -> None:
        if self.compute_units is not None and self.model is not None:
            raise ConvertError(
                "--compute-units and --model both say how many CUs a card has: give only one"
            )
        if self.compute_units is not None and not 1 <= self.compute_units <= MAX_COMPUTE_UNITS:
            raise ConvertError(
                f"--compute-units {self.compute_units} is out of range: a DCU has 1 to "
                f"{MAX_COMPUTE_UNITS} compute units (see the computeUnits column of "
                "`dcu-dra devices`)"
            )
        if self.model is not None:
            object.__setattr__(self, "model", canonical_model(self.model))
        if self.namespace is not None and not _DNS_LABEL.match(self.namespace):
            raise ConvertError(f"--namespace {self.namespace!r} is not a valid namespace name")

    @property
    def card_compute_units(self) -> int | None:
        """CUs of one card, from ``compute_units`` or the model table; None when neither."""
        if self.model is not None:
            return COMPUTE_UNITS_BY_MODEL[self.model]
        return self.compute_units


@dataclass(frozen=True, slots=True)
class DcuRequest:
    """What one container asks HAMi for, as written (HAMi's defaults not yet applied)."""

    container: str
    names: ResourceNames
    count: int
    memory_mib: int | None
    """``dcumem``; None when absent (HAMi: all of the card's memory)."""
    cores_percent: int | None
    """``dcucores``; None when absent (HAMi: 100)."""

    @property
    def is_whole_card(self) -> bool:
        """Whether HAMi gives each DCU whole: no memory limit and all of the cores."""
        return self.memory_mib is None and self.cores_percent in (None, 100)


@dataclass(frozen=True, slots=True)
class Conversion:
    """The documents to apply, in order, and what could not be carried over (one line each)."""

    documents: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def canonical_model(name: str) -> str:
    """The table's spelling of a model name (case-insensitive); ConvertError if unknown."""
    for model in COMPUTE_UNITS_BY_MODEL:
        if model.upper() == name.strip().upper():
            return model
    known = ", ".join(f"{m} ({n} CUs)" for m, n in COMPUTE_UNITS_BY_MODEL.items())
    raise ConvertError(
        f"unknown DCU model {name!r}: known models are {known}; for another card give "
        "--compute-units N (its computeUnits attribute, see `dcu-dra devices`)"
    )


def share_compute_units(percent: int, card_compute_units: int) -> int:
    """CUs for ``percent`` of a card: rounded down (as HAMi's device plugin does), at least 1."""
    return max(1, percent * card_compute_units // 100)


# --- one workload -------------------------------------------------------------------------


def convert_manifest(manifest: Mapping[str, Any], options: ConvertOptions) -> Conversion:
    """Convert one workload: its claim templates (one per DCU container), then the workload.

    Deterministic and free of side effects; ``manifest`` is never modified. Raises
    ConvertError for an unsupported kind, a workload without HAMi DCU resources and any value
    that cannot be converted as it is.
    """
    key = _kind_key(manifest)
    path = POD_TEMPLATE_PATHS.get(key)
    if path is None:
        raise ConvertError(_unsupported_kind(manifest))
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
            warnings.extend(_foreign_hygon_resources(container, where))
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
        warnings.extend(_model_conflicts(annotations, options, subject))
    warnings.extend(_annotation_warnings(workload, annotations, path, subject))

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


def read_request(container: Mapping[str, Any], *, where: str) -> DcuRequest | None:
    """The HAMi DCU request of one container, or None when it asks for none.

    Reads limits, then requests (as HAMi does); the two must agree. Values are whole numbers:
    ``dcunum`` 1-32, ``dcumem`` MiB >= 1, ``dcucores`` percent 1-100.
    """
    resources = container.get("resources") or {}
    limits = resources.get("limits") or {}
    requests = resources.get("requests") or {}
    spellings = [
        names for names in NAME_SETS if any(n in limits or n in requests for n in names.resources)
    ]
    if not spellings:
        return None
    if len(spellings) > 1:
        raise ConvertError(
            f"{where}: mixes {DCU_NAMES.count}-style and {HCU_NAMES.count}-style resources; "
            "HAMi reads one spelling: use one"
        )
    names = spellings[0]
    count = _whole_number_of(names.count, limits, requests, where)
    memory = _whole_number_of(names.memory, limits, requests, where)
    cores = _whole_number_of(names.cores, limits, requests, where)
    if count is None:
        given = names.memory if memory is not None else names.cores
        raise ConvertError(
            f"{where}: {given} without {names.count}: HAMi gives a container no DCU unless it "
            f"sets {names.count} (it does not default to 1); add {names.count}: 1"
        )
    if not 1 <= count <= MAX_DEVICES_PER_CLAIM:
        raise ConvertError(
            f"{where}: {names.count} is {count}; ask for 1 to {MAX_DEVICES_PER_CLAIM} DCUs "
            "(a claim holds at most 32 devices)"
        )
    if memory is not None and memory == 0:
        raise ConvertError(
            f"{where}: {names.memory} is 0, which HAMi reads as all of the card's memory; "
            f"remove {names.memory} for that, or give the MiB each DCU share needs"
        )
    if memory is not None and not 1 <= memory <= MAX_MEMORY_MIB:
        raise ConvertError(
            f"{where}: {names.memory} is {memory}; give the MiB of device memory per DCU "
            f"(1 to {MAX_MEMORY_MIB})"
        )
    if cores is not None and cores == 0:
        raise ConvertError(
            f"{where}: {names.cores} is 0: in HAMi that shares the compute without reserving "
            "any, but a vDCU always owns at least one CU; ask for 1 to 100 percent"
        )
    if cores is not None and not 1 <= cores <= 100:
        raise ConvertError(
            f"{where}: {names.cores} is {cores}; it is a percentage of one DCU (1 to 100)"
        )
    return DcuRequest(
        container=str(container.get("name")),
        names=names,
        count=count,
        memory_mib=memory,
        cores_percent=cores,
    )


def build_claim_spec(
    request: DcuRequest, *, selectors: Sequence[str], options: ConvertOptions, where: str
) -> dict[str, Any]:
    """The ResourceClaim spec for one container's request, with the pod's CEL ``selectors``."""
    if request.is_whole_card:
        exactly: dict[str, Any] = {"deviceClassName": WHOLE_CARD_CLASS, "count": request.count}
        if selectors:
            exactly["selectors"] = [_cel(expression) for expression in selectors]
        return {"devices": {"requests": [{"name": "dcu", "exactly": exactly}]}}
    names = request.names
    percent = 100 if request.cores_percent is None else request.cores_percent
    if request.memory_mib is None:
        raise ConvertError(
            f"{where}: {names.cores} {percent} without {names.memory}: HAMi then gives the "
            "container all of the card's memory, and a DCU share must state its memory; add "
            f"{names.memory} (MiB per DCU), or remove {names.cores} for whole DCUs"
        )
    card_cus = options.card_compute_units
    if card_cus is None:
        asked = (
            f"{names.cores}: {percent}"
            if request.cores_percent is not None
            else f"{names.memory} without {names.cores} = 100 % of the cores"
        )
        known = ", ".join(COMPUTE_UNITS_BY_MODEL)
        raise ConvertError(
            f"{where}: {asked}; turning a percentage of a DCU into compute units needs the "
            "card's CU count: add --compute-units N (the computeUnits of your DCUs, see "
            f"`dcu-dra devices`) or --model NAME ({known})"
        )
    share_selectors = [*selectors, _card_size_selector(options)]
    exactly = {
        "deviceClassName": SHARE_CLASS,
        "selectors": [_cel(expression) for expression in share_selectors],
        "capacity": {
            "requests": {
                CORES: str(share_compute_units(percent, card_cus)),
                MEMORY: f"{request.memory_mib}Mi",
            }
        },
    }
    if request.count == 1:
        return {"devices": {"requests": [{"name": "dcu", "exactly": exactly}]}}
    request_names = [f"dcu-{i}" for i in range(request.count)]
    return {
        "devices": {
            "requests": [
                {"name": request_name, "exactly": copy.deepcopy(exactly)}
                for request_name in request_names
            ],
            # N cards, not N shares that might sit on one card (see the module docstring).
            "constraints": [
                {"requests": request_names, "distinctAttribute": DISTINCT_CARD_ATTRIBUTE}
            ],
        }
    }


def annotation_selectors(annotations: Mapping[str, Any], *, where: str) -> list[str]:
    """CEL expressions for HAMi's card type and card id annotations of a pod (ANDed)."""
    expressions: list[str] = []
    model = _attribute("model")
    for names in NAME_SETS:
        if names.use_type in annotations:
            types = _card_types(annotations[names.use_type], names.use_type, where)
            if len(types) == 1:
                expressions.append(f"{model}.upperAscii().contains({json.dumps(types[0])})")
            else:
                expressions.append(
                    f"{json.dumps(types)}.exists(t, {model}.upperAscii().contains(t))"
                )
        if names.nouse_type in annotations:
            types = _card_types(annotations[names.nouse_type], names.nouse_type, where)
            expressions.extend(f"!{model}.upperAscii().contains({json.dumps(t)})" for t in types)
    uuid = _attribute("uuid")
    if USE_UUID in annotations:
        ids = _card_ids(annotations[USE_UUID], USE_UUID, where)
        expressions.append(f"{uuid} in {json.dumps(ids)}")
    if NOUSE_UUID in annotations:
        ids = _card_ids(annotations[NOUSE_UUID], NOUSE_UUID, where)
        expressions.append(f"!({uuid} in {json.dumps(ids)})")
    return expressions


# --- many documents, YAML -----------------------------------------------------------------


def convert_documents(documents: Iterable[Any], options: ConvertOptions) -> Conversion:
    """Convert every workload that asks for HAMi DCUs; pass every other document through.

    Empty documents are dropped. A document of an unsupported kind that mentions HAMi DCU
    resources is an error, and so is input in which nothing asks for a DCU.
    """
    output: list[dict[str, Any]] = []
    warnings: list[str] = []
    converted = 0
    for number, document in enumerate(documents, start=1):
        if document is None:
            continue
        if not isinstance(document, dict):
            raise ConvertError(
                f"document {number} is not a Kubernetes object (a mapping with apiVersion and kind)"
            )
        is_workload = _kind_key(document) in POD_TEMPLATE_PATHS
        if not _mentions_hami_resources(document):
            output.append(document)
            continue
        if not is_workload:
            raise ConvertError(_unsupported_kind(document))
        result = convert_manifest(document, options)
        output.extend(result.documents)
        warnings.extend(result.warnings)
        converted += 1
    if converted == 0:
        raise ConvertError(
            f"no workload in the input asks for {DCU_NAMES.count} (or {HCU_NAMES.count}): "
            "nothing to convert"
        )
    _check_unique_templates(output)
    return Conversion(documents=output, warnings=warnings)


def convert_text(text: str, options: ConvertOptions, *, source: str = "input") -> Conversion:
    """Parse multi-document YAML and convert it (see :func:`convert_documents`)."""
    return convert_documents(load_documents(text, source=source), options)


def load_documents(text: str, *, source: str = "input") -> list[Any]:
    """The documents of a multi-document YAML text; ConvertError naming the spot if invalid."""
    try:
        return list(yaml.safe_load_all(text))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        raise ConvertError(f"{source}: not valid YAML: {at}{exc.problem}") from exc
    except yaml.YAMLError as exc:
        raise ConvertError(f"{source}: not valid YAML: {exc}") from exc


def dump_documents(documents: Sequence[Mapping[str, Any]]) -> str:
    """Multi-document YAML, keys in their original order, each document after ``---``."""
    return yaml.safe_dump_all(
        [dict(document) for document in documents],
        sort_keys=False,
        explicit_start=True,
        default_flow_style=False,
        allow_unicode=True,
        width=4096,  # long CEL expressions stay on one line
    )


# --- helpers ------------------------------------------------------------------------------


def _kind_key(manifest: Mapping[str, Any]) -> tuple[str, str]:
    return (str(manifest.get("apiVersion", "")), str(manifest.get("kind", "")))


def _unsupported_kind(manifest: Mapping[str, Any]) -> str:
    api_version, kind = _kind_key(manifest)
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


def _whole_number_of(
    name: str, limits: Mapping[str, Any], requests: Mapping[str, Any], where: str
) -> int | None:
    """``name`` from limits and requests (which must agree), or None when in neither."""
    values = {
        section: _whole_number(mapping[name], name=name, where=where)
        for section, mapping in (("limits", limits), ("requests", requests))
        if name in mapping
    }
    if len(set(values.values())) > 1:
        raise ConvertError(
            f"{where}: {name} is {values['limits']} in limits but {values['requests']} in "
            "requests; make them equal (Kubernetes requires it for extended resources, and "
            "HAMi reads limits first)"
        )
    return next(iter(values.values()), None)


def _whole_number(value: Any, *, name: str, where: str) -> int:
    # bool is an int in Python; `true` in a resource list is a typo, never a count.
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and _INTEGER.match(value.strip()):
        return int(value.strip())
    hint = ""
    if name.endswith("mem"):
        hint = " (HAMi reads it as a plain number of MiB: 8192 for 8 GiB)"
    raise ConvertError(f"{where}: {name} {value!r} is not a whole number{hint}")


def _card_types(value: Any, key: str, where: str) -> list[str]:
    """Upper-case model substrings from a type annotation, without HAMi's DCU-/HCU- prefix."""
    types: list[str] = []
    for item in _comma_list(value, key, where):
        upper = item.upper()
        if not _TYPE_VALUE.match(item) or any(upper in prefix for prefix in _TYPE_PREFIXES):
            raise ConvertError(
                f"{where}: annotation {key} value {item!r} is not (part of) a DCU model name "
                "such as K100_AI or Z100"
            )
        for prefix in _TYPE_PREFIXES:
            upper = upper.removeprefix(prefix)
        if upper not in types:
            types.append(upper)
    return types


def _card_ids(value: Any, key: str, where: str) -> list[str]:
    ids: list[str] = []
    for item in _comma_list(value, key, where):
        if not _UUID_VALUE.match(item):
            raise ConvertError(
                f"{where}: annotation {key} value {item!r} is not a card id such as DCU-<serial>"
            )
        if item not in ids:
            ids.append(item)
    return ids


def _comma_list(value: Any, key: str, where: str) -> list[str]:
    """HAMi's comma-separated annotation values, trimmed (as HAMi does since #1965)."""
    if not isinstance(value, str):
        raise ConvertError(f"{where}: annotation {key} must be a string, not {value!r}")
    items = [item.strip() for item in value.split(",") if item.strip()]
    if not items:
        raise ConvertError(f"{where}: annotation {key} is empty; remove it or list values")
    return items


def _attribute(name: str) -> str:
    return f"device.attributes[{json.dumps(DRIVER_NAME)}].{name}"


def _cel(expression: str) -> dict[str, Any]:
    return {"cel": {"expression": expression}}


def _card_size_selector(options: ConvertOptions) -> str:
    """The selector that keeps a converted share on cards its CU count was computed for."""
    if options.model is not None:
        return f"{_attribute('model')} == {json.dumps(options.model)}"
    return f"{_attribute('computeUnits')} == {options.compute_units}"


def _model_conflicts(
    annotations: Mapping[str, Any], options: ConvertOptions, subject: str
) -> list[str]:
    """Warnings when --model can never satisfy the pod's type annotations."""
    if options.model is None:
        return []
    warnings: list[str] = []
    model = options.model.upper()
    for names in NAME_SETS:
        if names.use_type in annotations:
            types = _card_types(annotations[names.use_type], names.use_type, subject)
            if not any(t in model for t in types):
                warnings.append(
                    f"{subject}: --model {options.model} is not among {names.use_type} "
                    f"{annotations[names.use_type]}: no DCU matches both, so the shares can "
                    "never be allocated"
                )
        if names.nouse_type in annotations:
            types = _card_types(annotations[names.nouse_type], names.nouse_type, subject)
            if any(t in model for t in types):
                warnings.append(
                    f"{subject}: --model {options.model} is excluded by {names.nouse_type} "
                    f"{annotations[names.nouse_type]}: no DCU matches both, so the shares can "
                    "never be allocated"
                )
    return warnings


def _annotation_warnings(
    workload: Mapping[str, Any],
    annotations: Mapping[str, Any],
    path: Sequence[str],
    subject: str,
) -> list[str]:
    """Warnings for HAMi annotations the conversion cannot carry over."""
    warnings: list[str] = []
    for key in annotations:
        if key in SELECTION_ANNOTATIONS:
            continue
        if key in HAMI_POLICY_ANNOTATIONS:
            warnings.append(
                f"{subject}: annotation {key}: {annotations[key]} (a HAMi scheduler policy) has "
                "no DRA equivalent: kube-scheduler picks among the DCUs that fit by itself; "
                "left in place, it does nothing without HAMi"
            )
        elif key.startswith(("hami.io/", "hygon.com/")):
            warnings.append(
                f"{subject}: annotation {key} has no equivalent with the {DRIVER_NAME} driver; "
                "left in place, it does nothing without HAMi"
            )
    if path:
        # HAMi reads the pod's annotations; on the workload itself they never did anything.
        own = (workload.get("metadata") or {}).get("annotations") or {}
        for key in sorted(SELECTION_ANNOTATIONS & own.keys()):
            warnings.append(
                f"{subject}: annotation {key} is on the {workload.get('kind')} itself, where "
                "HAMi does not read it (it reads the pod template's); not converted"
            )
    return warnings


def _foreign_hygon_resources(container: Mapping[str, Any], where: str) -> list[str]:
    """Warnings for hygon.com resources that are not HAMi's (left as they are)."""
    resources = container.get("resources") or {}
    found: list[str] = []
    for section in ("limits", "requests"):
        for key in resources.get(section) or {}:
            if key.startswith("hygon.com/") and key not in HAMI_RESOURCES and key not in found:
                found.append(key)
    warnings = []
    for key in found:
        if key == "hygon.com/dcu":
            warnings.append(
                f"{where}: {key} left as is: the {WHOLE_CARD_CLASS} DeviceClass serves it as "
                "an extended resource (whole DCUs; needs DRAExtendedResource, on from 1.36)"
            )
        else:
            warnings.append(f"{where}: {key} is not a HAMi DCU resource; left as is")
    return warnings


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
    return name if _DNS_LABEL.match(name) else f"dcu-{index}"


def _mentions_hami_resources(node: Any) -> bool:
    """Whether any mapping under ``node`` has a HAMi DCU resource name as a key."""
    if isinstance(node, dict):
        return any(
            (isinstance(key, str) and key in HAMI_RESOURCES) or _mentions_hami_resources(value)
            for key, value in node.items()
        )
    if isinstance(node, list):
        return any(_mentions_hami_resources(item) for item in node)
    return False


def _check_unique_templates(documents: Sequence[Mapping[str, Any]]) -> None:
    seen: set[tuple[str, str]] = set()
    for document in documents:
        if document.get("kind") != "ResourceClaimTemplate":
            continue
        metadata = document.get("metadata") or {}
        key = (str(metadata.get("namespace") or ""), str(metadata.get("name")))
        if key in seen:
            where = f"{key[0]}/{key[1]}" if key[0] else key[1]
            raise ConvertError(
                f"two documents would create ResourceClaimTemplate {where}: rename one of the "
                "workloads or containers"
            )
        seen.add(key)
