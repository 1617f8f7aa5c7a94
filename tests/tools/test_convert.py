"""dcu-dra convert: HAMi DCU manifests -> ResourceClaimTemplates and workloads using them.

The inputs are realistic HAMi manifests under tests/data/hami/ (bad ones under bad/). Each
conversion is checked for its structure and numbers; every output document must be valid in
strict mode for every supported Kubernetes; the CLI is run in-process and once as a
subprocess. The e2e test creates converted objects in the real API server (with the
DeviceClasses and the claims admission policy of deploy/), which compiles the CEL selectors.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import io
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from dra_driver import DRIVER_NAME, cli
from dra_driver.cluster.kube import ApiError, KubeClient, paths
from dra_driver.errors import ConvertError
from dra_driver.node.mock import create_mock_node, parse_config
from dra_driver.testing.cluster import (
    ControlPlane,
    allocation_results,
    create_namespace,
    delete_namespace,
    is_pod_running,
    load_yaml,
    pod_claims,
    temporary_objects,
    unique_name,
    wait_for_pod_running,
)
from dra_driver.testing.fakekubelet import FakeKubelet
from dra_driver.testing.plugin_process import PluginProcess
from dra_driver.testing.waiting import wait_for
from dra_driver.tools.convert import (
    COMPUTE_UNITS_BY_MODEL,
    Conversion,
    ConvertOptions,
    canonical_model,
    convert_documents,
    convert_manifest,
    convert_text,
    dump_documents,
    share_compute_units,
)
from dra_driver.util.quantity import parse_integral_quantity
from dra_driver.vdcu.vdev import read_vdev_dir

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA = REPO_ROOT / "tests" / "data" / "hami"
BAD = DATA / "bad"
DEPLOY_DIR = REPO_ROOT / "deploy"
KUBERNETES_VERSIONS = ("1.34.0", "1.35.0", "1.36.0", "1.37.0")

MODEL = 'device.attributes["dcu.hygon.com"].model'
UUID = 'device.attributes["dcu.hygon.com"].uuid'
CUS = 'device.attributes["dcu.hygon.com"].computeUnits'

#: Every good input file and the options it needs.
GOOD_FILES: dict[str, ConvertOptions] = {
    "quarter-card-pod.yaml": ConvertOptions(model="Z100"),
    "deployment-two-cards.yaml": ConvertOptions(model="K100_AI"),
    "job-whole-card.yaml": ConvertOptions(),
    "pod-type-and-uuid.yaml": ConvertOptions(),
    "multi-container-pod.yaml": ConvertOptions(model="Z100"),
    "cronjob-hcu.yaml": ConvertOptions(compute_units=60),
    "app-bundle.yaml": ConvertOptions(model="K100_AI"),
}


def convert_file(path: Path, options: ConvertOptions | None = None) -> Conversion:
    return convert_text(path.read_text(), options or ConvertOptions(), source=path.name)


def of_kind(result: Conversion, kind: str) -> list[dict[str, Any]]:
    return [doc for doc in result.documents if doc["kind"] == kind]


def one_of_kind(result: Conversion, kind: str) -> dict[str, Any]:
    [doc] = of_kind(result, kind)
    return doc


def device_requests(template: dict[str, Any]) -> list[dict[str, Any]]:
    return list(template["spec"]["spec"]["devices"]["requests"])


def expressions(request: dict[str, Any]) -> list[str]:
    return [s["cel"]["expression"] for s in request["exactly"].get("selectors", [])]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    if workload["kind"] == "Pod":
        return dict(workload["spec"])
    if workload["kind"] == "CronJob":
        return dict(workload["spec"]["jobTemplate"]["spec"]["template"]["spec"])
    return dict(workload["spec"]["template"]["spec"])


def container(workload: dict[str, Any], name: str) -> dict[str, Any]:
    [found] = [c for c in pod_spec(workload)["containers"] if c["name"] == name]
    return dict(found)


def pod_with(resources: dict[str, Any], **metadata: Any) -> dict[str, Any]:
    """A one-container HAMi Pod with the given ``resources`` and extra metadata."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", **metadata},
        "spec": {"containers": [{"name": "c", "image": "busybox", "resources": resources}]},
    }


# --- Volcano ------------------------------------------------------------------------------

VOLCANO_DRA_NOTE = (
    "schedulerName volcano kept: Volcano allocates the claims only with its DRA support on "
    "(scheduler feature gate DynamicResourceAllocation=true, predicates argument "
    "predicate.DynamicResourceAllocationEnable: true; README, With Volcano)"
)
BEST_EFFORT_NOTE = (
    "no container requests cpu or memory, so Volcano takes the pods for BestEffort and does "
    "not hold them as a gang (its backfill binds each that fits, and part of the job holds DCU "
    "shares while the rest waits): give each container a cpu or memory request (README, With "
    "Volcano)"
)


def test_volcano_pod_keeps_its_scheduler_and_queue_and_is_told_to_turn_dra_on() -> None:
    """Volcano's documented vDCU pod: schedulerName and Volcano's annotations survive."""
    result = convert_file(DATA / "volcano-vdcu-pod.yaml", ConvertOptions(model="Z100"))
    template, pod = result.documents
    assert template["metadata"] == {"name": "vdcu-demo-dcu-app-dcu", "namespace": "volcano-demo"}
    [request] = device_requests(template)
    # 50 % of 60 CUs; dcumem 2 is 2 MiB as HAMi reads it (the warning says how to get GiB).
    assert request["exactly"]["capacity"]["requests"] == {"cores": "30", "memory": "2Mi"}
    assert pod["spec"]["schedulerName"] == "volcano"
    assert pod["metadata"]["annotations"] == {"scheduling.volcano.sh/queue-name": "research"}
    assert container(pod, "dcu-app")["resources"] == {"claims": [{"name": "dcu-app-dcu"}]}
    assert result.warnings == [
        "Pod volcano-demo/vdcu-demo, container dcu-app: hygon.com/dcumem 2 is 2 MiB (HAMi "
        "reads MiB), converted as 2Mi; if 2 GiB was meant, write 2048",
        f"Pod volcano-demo/vdcu-demo: {VOLCANO_DRA_NOTE}",
        f"Pod volcano-demo/vdcu-demo: {BEST_EFFORT_NOTE}",
    ]


def test_volcano_job_is_converted_task_by_task() -> None:
    source = yaml.safe_load((DATA / "volcano-job.yaml").read_text())
    result = convert_file(DATA / "volcano-job.yaml", ConvertOptions(model="Z100"))
    master, worker, job = result.documents
    assert [master["metadata"]["name"], worker["metadata"]["name"]] == [
        "train-master-trainer-dcu",
        "train-worker-trainer-dcu",
    ]
    assert device_requests(master) == [
        {"name": "dcu", "exactly": {"deviceClassName": "dcu.hygon.com", "count": 1}}
    ]
    [request] = device_requests(worker)
    assert request["exactly"]["capacity"]["requests"] == {"cores": "15", "memory": "8188Mi"}
    assert len(expressions(request)) == 2  # the use-dcutype annotation and --model
    launcher, master_task, worker_task = job["spec"]["tasks"]
    # The task without DCUs, the gang size, the queue and Volcano's annotations are untouched.
    assert launcher == source["spec"]["tasks"][0]
    for key in ("schedulerName", "queue", "minAvailable", "plugins", "policies"):
        assert job["spec"][key] == source["spec"][key]
    assert job["metadata"]["annotations"] == {"volcano.sh/preemptable": "false"}
    # The selection annotation moved into the claim; Volcano's stays on the pod template.
    assert worker_task["template"]["metadata"] == {
        "annotations": {"volcano.sh/preemptable": "true"}
    }
    assert [task["replicas"] for task in job["spec"]["tasks"]] == [1, 1, 4]
    for task in (master_task, worker_task):
        assert task["template"]["spec"]["resourceClaims"] == [
            {
                "name": "trainer-dcu",
                "resourceClaimTemplateName": f"train-{task['name']}-trainer-dcu",
            }
        ]
        [ctr] = task["template"]["spec"]["containers"]
        assert ctr["resources"] == {"claims": [{"name": "trainer-dcu"}]}
    # The launcher asks for no DCU, so only the two DCU tasks are warned about as BestEffort.
    assert result.warnings == [
        f"Job (batch.volcano.sh) volcano-demo/train: {VOLCANO_DRA_NOTE}",
        f"Job (batch.volcano.sh) volcano-demo/train, task master: {BEST_EFFORT_NOTE}",
        f"Job (batch.volcano.sh) volcano-demo/train, task worker: {BEST_EFFORT_NOTE}",
    ]


@pytest.mark.parametrize(
    ("resources", "warned"),
    [
        ({"requests": {"cpu": "500m"}}, False),
        ({"limits": {"memory": "1Gi"}}, False),  # the API server copies a limit to the request
        ({"requests": {"cpu": "0"}}, True),
        ({"requests": {"ephemeral-storage": "1Gi"}}, True),  # Volcano counts cpu and memory
        ({}, True),
    ],
)
def test_volcano_pod_without_cpu_or_memory_request_is_warned_it_gets_no_gang(
    resources: dict[str, Any], warned: bool
) -> None:
    """Volcano takes a pod without cpu/memory requests for BestEffort: its gang does not hold."""
    limits = {**resources.get("limits", {}), "hygon.com/dcunum": 1}
    pod = pod_with({**resources, "limits": limits})
    pod["spec"]["schedulerName"] = "volcano"
    result = convert_manifest(pod, ConvertOptions())
    assert (f"Pod p: {BEST_EFFORT_NOTE}" in result.warnings) is warned


def test_pod_for_another_scheduler_is_not_warned_about_best_effort() -> None:
    result = convert_manifest(pod_with({"limits": {"hygon.com/dcunum": 1}}), ConvertOptions())
    assert not any("BestEffort" in warning for warning in result.warnings)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_volcano_job_output_is_valid_kubernetes_in_each_task(version: str) -> None:
    """The vcjob is a CRD: its claim templates and each task's pod template are validated."""
    result = convert_file(DATA / "volcano-job.yaml", ConvertOptions(model="Z100"))
    *templates, job = result.documents
    pods = [
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": task["name"]}, **task["template"]}
        for task in job["spec"]["tasks"]
    ]
    for document in [*templates, *pods]:
        validated_with = kubernetes_validate.validate(document, version, strict=True)
        assert validated_with == ".".join(version.split(".")[:2])


def test_volcano_job_selection_annotations_on_the_job_itself_are_warned_about_once() -> None:
    job = yaml.safe_load((DATA / "volcano-job.yaml").read_text())
    job["metadata"]["annotations"]["hygon.com/use-dcutype"] = "K100"
    result = convert_manifest(job, ConvertOptions(model="Z100"))
    assert [w for w in result.warnings if BEST_EFFORT_NOTE not in w] == [
        "Job (batch.volcano.sh) volcano-demo/train: annotation hygon.com/use-dcutype is on the "
        "Job itself, where HAMi does not read it (it reads the pod template's); not converted",
        f"Job (batch.volcano.sh) volcano-demo/train: {VOLCANO_DRA_NOTE}",
    ]


@pytest.mark.parametrize(
    ("tasks", "message"),
    [
        (None, r"^Job \(batch.volcano.sh\) j has no spec.tasks: a Volcano Job needs at least"),
        ([], r"^Job \(batch.volcano.sh\) j has no spec.tasks"),
        (
            [{"template": {"spec": {}}}],
            r"^Job \(batch.volcano.sh\) j: spec.tasks\[0\] has no valid name \(None\)",
        ),
        ([{"name": "w"}], r"^Job \(batch.volcano.sh\) j, task w has no pod template at template$"),
        (
            [{"name": "w", "template": {"spec": {"containers": [{"name": "c"}]}}}],
            r"^Job \(batch.volcano.sh\) j: no container asks for hygon.com/dcunum",
        ),
    ],
    ids=["no-tasks", "empty-tasks", "unnamed-task", "no-template", "no-dcu"],
)
def test_bad_volcano_job_gets_one_clear_error(tasks: Any, message: str) -> None:
    job: dict[str, Any] = {
        "apiVersion": "batch.volcano.sh/v1alpha1",
        "kind": "Job",
        "metadata": {"name": "j"},
        "spec": {"tasks": tasks, "minAvailable": 1},
    }
    with pytest.raises(ConvertError, match=message):
        convert_manifest(job, ConvertOptions())


def test_volcano_job_in_a_bundle_is_converted_not_rejected() -> None:
    text = (
        (DATA / "volcano-job.yaml").read_text()
        + "\n---\n"
        + (DATA / "volcano-vdcu-pod.yaml").read_text()
    )
    result = convert_text(text, ConvertOptions(model="Z100"))
    assert [d["kind"] for d in result.documents] == [
        "ResourceClaimTemplate",
        "ResourceClaimTemplate",
        "Job",
        "ResourceClaimTemplate",
        "Pod",
    ]


def test_small_dcumem_is_converted_as_mib_with_a_warning() -> None:
    pod = pod_with(
        {"limits": {"hygon.com/dcunum": 1, "hygon.com/dcumem": 63, "hygon.com/dcucores": 25}}
    )
    result = convert_manifest(pod, ConvertOptions(model="Z100"))
    assert result.warnings == [
        "Pod p, container c: hygon.com/dcumem 63 is 63 MiB (HAMi reads MiB), converted as 63Mi; "
        "if 63 GiB was meant, write 64512"
    ]
    pod["spec"]["containers"][0]["resources"]["limits"]["hygon.com/dcumem"] = 64
    assert convert_manifest(pod, ConvertOptions(model="Z100")).warnings == []


# --- the example manifests ----------------------------------------------------------------


def test_quarter_card_pod_becomes_a_share_of_15_cus_on_a_z100() -> None:
    result = convert_file(DATA / "quarter-card-pod.yaml", ConvertOptions(model="Z100"))
    template, pod = result.documents
    assert template["kind"] == "ResourceClaimTemplate"
    assert template["metadata"] == {"name": "quarter-ctr-dcu", "namespace": "hami-demo"}
    assert device_requests(template) == [
        {
            "name": "dcu",
            "exactly": {
                "deviceClassName": "vdcu.dcu.hygon.com",
                "selectors": [{"cel": {"expression": f'{MODEL} == "Z100"'}}],
                "capacity": {"requests": {"cores": "15", "memory": "8188Mi"}},
            },
        }
    ]
    assert "constraints" not in template["spec"]["spec"]["devices"]
    # The HAMi limits are gone (and with them the empty limits map); the claim is wired in.
    assert container(pod, "ctr")["resources"] == {"claims": [{"name": "ctr-dcu"}]}
    assert pod["spec"]["resourceClaims"] == [
        {"name": "ctr-dcu", "resourceClaimTemplateName": "quarter-ctr-dcu"}
    ]
    assert result.warnings == []


def test_compute_units_flag_selects_cards_of_that_size() -> None:
    result = convert_file(DATA / "quarter-card-pod.yaml", ConvertOptions(compute_units=120))
    [request] = device_requests(one_of_kind(result, "ResourceClaimTemplate"))
    assert request["exactly"]["capacity"]["requests"] == {"cores": "30", "memory": "8188Mi"}
    assert expressions(request) == [f"{CUS} == 120"]


def test_deployment_with_two_half_cards_gets_two_distinct_cards() -> None:
    result = convert_file(DATA / "deployment-two-cards.yaml", ConvertOptions(model="K100_AI"))
    template, deployment = result.documents
    assert template["metadata"] == {"name": "trainer-trainer-dcu", "namespace": "hami-demo"}
    selectors = [
        f'["K100_AI", "K100"].exists(t, {MODEL}.upperAscii().contains(t))',
        f'!({UUID} in ["DCU-2b6a2f0c1d9e8f70"])',
        f'{MODEL} == "K100_AI"',
    ]
    share = {
        "deviceClassName": "vdcu.dcu.hygon.com",
        "selectors": [{"cel": {"expression": e}} for e in selectors],
        # 50 % of a 120-CU K100_AI, 8192 MiB, on each of the two cards.
        "capacity": {"requests": {"cores": "60", "memory": "8192Mi"}},
    }
    devices = template["spec"]["spec"]["devices"]
    assert devices["requests"] == [
        {"name": "dcu-0", "exactly": share},
        {"name": "dcu-1", "exactly": share},
    ]
    assert devices["constraints"] == [
        {"requests": ["dcu-0", "dcu-1"], "distinctAttribute": "resource.kubernetes.io/pciBusID"}
    ]
    ctr = container(deployment, "trainer")
    assert ctr["resources"] == {
        "requests": {"cpu": "2", "memory": "8Gi"},
        "limits": {"memory": "8Gi"},
        "claims": [{"name": "trainer-dcu"}],
    }
    assert ctr["env"] == [{"name": "HIP_VISIBLE_DEVICES", "value": "0,1"}]
    spec = pod_spec(deployment)
    assert "schedulerName" not in spec
    assert spec["resourceClaims"] == [
        {"name": "trainer-dcu", "resourceClaimTemplateName": "trainer-trainer-dcu"}
    ]
    # The selection annotations moved into the claim; the scheduler policy stays, with a warning.
    assert deployment["spec"]["template"]["metadata"]["annotations"] == {
        "hami.io/gpu-scheduler-policy": "spread"
    }
    assert deployment["spec"]["replicas"] == 2
    assert len(result.warnings) == 3
    uuid_warning, policy_warning, scheduler_warning = result.warnings
    assert uuid_warning.startswith(
        "Deployment hami-demo/trainer: card ids are matched against the uuid attribute"
    )
    assert policy_warning.startswith(
        "Deployment hami-demo/trainer: annotation hami.io/gpu-scheduler-policy: spread "
        "(a HAMi scheduler policy) has no DRA equivalent"
    )
    assert scheduler_warning == (
        "Deployment hami-demo/trainer: spec.schedulerName hami-scheduler removed: DRA claims "
        "are allocated by the default kube-scheduler"
    )


def test_job_with_dcunum_alone_gets_a_whole_card_without_any_flag() -> None:
    result = convert_file(DATA / "job-whole-card.yaml")
    template, job = result.documents
    assert template["metadata"] == {"name": "benchmark-bench-dcu"}
    assert device_requests(template) == [
        {"name": "dcu", "exactly": {"deviceClassName": "dcu.hygon.com", "count": 1}}
    ]
    assert container(job, "bench")["resources"] == {"claims": [{"name": "bench-dcu"}]}
    assert job["spec"]["template"]["spec"]["resourceClaims"] == [
        {"name": "bench-dcu", "resourceClaimTemplateName": "benchmark-bench-dcu"}
    ]
    assert "namespace" not in job["metadata"]
    assert result.warnings == []


def test_type_and_uuid_annotations_become_cel_selectors() -> None:
    result = convert_file(DATA / "pod-type-and-uuid.yaml")
    template, pod = result.documents
    [request] = device_requests(template)
    assert request["exactly"]["deviceClassName"] == "dcu.hygon.com"
    assert request["exactly"]["count"] == 2
    assert "capacity" not in request["exactly"]
    assert expressions(request) == [
        f'{MODEL}.upperAscii().contains("K100")',
        f'!{MODEL}.upperAscii().contains("K100_LC_AI")',
        f'{UUID} in ["DCU-25656d36896d7389", "DCU-d37812a73a1a7cde"]',
    ]
    assert "annotations" not in pod["metadata"]
    assert pod["metadata"] == {"name": "pinned", "namespace": "hami-demo"}
    [warning] = result.warnings
    assert "card ids are matched against the uuid attribute" in warning


def test_multi_container_pod_gets_a_template_per_dcu_container() -> None:
    result = convert_file(DATA / "multi-container-pod.yaml", ConvertOptions(model="Z100"))
    server, worker, pod = result.documents
    assert server["metadata"]["name"] == "serving-server-dcu"
    assert worker["metadata"]["name"] == "serving-worker-dcu"
    [share] = device_requests(server)
    # floor(30 % x 60 CUs) = 18.
    assert share["exactly"]["capacity"]["requests"] == {"cores": "18", "memory": "4096Mi"}
    # dcucores 100 without dcumem is an exclusive card in HAMi: a whole DCU, no model selector.
    assert device_requests(worker) == [
        {"name": "dcu", "exactly": {"deviceClassName": "dcu.hygon.com", "count": 1}}
    ]
    assert container(pod, "server")["resources"] == {"claims": [{"name": "server-dcu"}]}
    assert container(pod, "worker")["resources"] == {"claims": [{"name": "worker-dcu"}]}
    assert container(pod, "logs")["resources"] == {"limits": {"cpu": "100m"}}
    assert pod["spec"]["resourceClaims"] == [
        {"name": "server-dcu", "resourceClaimTemplateName": "serving-server-dcu"},
        {"name": "worker-dcu", "resourceClaimTemplateName": "serving-worker-dcu"},
    ]


def test_cronjob_with_the_hcu_spelling_and_memory_only_takes_all_cus() -> None:
    result = convert_file(DATA / "cronjob-hcu.yaml", ConvertOptions(compute_units=60))
    template, cronjob = result.documents
    [request] = device_requests(template)
    # hcumem without hcucores: HAMi's default is 100 % of the cores.
    assert request["exactly"]["capacity"]["requests"] == {"cores": "60", "memory": "16376Mi"}
    assert expressions(request) == [
        f'{MODEL}.upperAscii().contains("Z100")',
        f"{CUS} == 60",
    ]
    template_spec = cronjob["spec"]["jobTemplate"]["spec"]["template"]
    assert "metadata" not in template_spec  # it held only the consumed annotation
    assert template_spec["spec"]["resourceClaims"] == [
        {"name": "report-dcu", "resourceClaimTemplateName": "nightly-report-dcu"}
    ]


def test_bundle_passes_documents_without_dcus_through_unchanged() -> None:
    path = DATA / "app-bundle.yaml"
    inputs = list(yaml.safe_load_all(path.read_text()))
    result = convert_file(path, ConvertOptions(model="K100_AI"))
    assert [(d["kind"], d["metadata"]["name"]) for d in result.documents] == [
        ("Namespace", "hami-demo"),
        ("ConfigMap", "model-config"),
        ("Service", "infer"),
        ("ResourceClaimTemplate", "infer-model-dcu"),
        ("StatefulSet", "infer"),
        ("Deployment", "frontend"),
    ]
    untouched = [d for d in result.documents if d["kind"] not in {"ResourceClaimTemplate"}]
    assert [d for d in untouched if d["kind"] != "StatefulSet"] == [
        d for d in inputs if d["kind"] != "StatefulSet"
    ]
    [request] = device_requests(one_of_kind(result, "ResourceClaimTemplate"))
    assert request["exactly"]["capacity"]["requests"] == {"cores": "48", "memory": "16384Mi"}


@pytest.mark.parametrize(
    ("api_version", "kind"),
    [("apps/v1", "DaemonSet"), ("apps/v1", "ReplicaSet"), ("apps/v1", "StatefulSet")],
    ids=["DaemonSet", "ReplicaSet", "StatefulSet"],
)
def test_pod_template_kinds_are_converted_in_their_template(api_version: str, kind: str) -> None:
    pod = pod_with({"limits": {"hygon.com/dcunum": 1}})
    workload = {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {"name": "w", "namespace": "ns"},
        "spec": {"template": {"metadata": {"labels": {"a": "b"}}, "spec": pod["spec"]}},
    }
    result = convert_manifest(workload, ConvertOptions())
    template, converted = result.documents
    assert template["metadata"] == {"name": "w-c-dcu", "namespace": "ns"}
    assert converted["spec"]["template"]["spec"]["resourceClaims"] == [
        {"name": "c-dcu", "resourceClaimTemplateName": "w-c-dcu"}
    ]
    assert converted["spec"]["template"]["metadata"] == {"labels": {"a": "b"}}


def test_init_containers_are_converted_after_the_containers() -> None:
    pod = pod_with({"limits": {"hygon.com/dcunum": 1}})
    pod["spec"]["initContainers"] = [
        {"name": "warmup", "image": "busybox", "resources": {"limits": {"hygon.com/dcunum": 1}}}
    ]
    result = convert_manifest(pod, ConvertOptions())
    assert [d["metadata"]["name"] for d in of_kind(result, "ResourceClaimTemplate")] == [
        "p-c-dcu",
        "p-warmup-dcu",
    ]
    [init] = result.documents[-1]["spec"]["initContainers"]
    assert init["resources"] == {"claims": [{"name": "warmup-dcu"}]}


@pytest.mark.parametrize(("name", "options"), list(GOOD_FILES.items()), ids=list(GOOD_FILES))
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_output_document_is_valid_kubernetes(
    name: str, options: ConvertOptions, version: str
) -> None:
    result = convert_file(DATA / name, options)
    assert of_kind(result, "ResourceClaimTemplate")
    for document in result.documents:
        validated_with = kubernetes_validate.validate(document, version, strict=True)
        assert validated_with == ".".join(version.split(".")[:2])


@pytest.mark.parametrize(("name", "options"), list(GOOD_FILES.items()), ids=list(GOOD_FILES))
def test_printed_yaml_reads_back_as_the_same_documents(name: str, options: ConvertOptions) -> None:
    result = convert_file(DATA / name, options)
    text = dump_documents(result.documents)
    assert list(yaml.safe_load_all(text)) == result.documents
    assert text.startswith("---\n")


def test_conversion_never_modifies_its_input_and_is_deterministic() -> None:
    [manifest] = yaml.safe_load_all((DATA / "deployment-two-cards.yaml").read_text())
    before = copy.deepcopy(manifest)
    first = convert_manifest(manifest, ConvertOptions(model="K100_AI"))
    second = convert_manifest(manifest, ConvertOptions(model="K100_AI"))
    assert manifest == before
    assert first == second


# --- semantics ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("percent", "cus", "expected"),
    [(25, 60, 15), (33, 60, 19), (50, 120, 60), (34, 60, 20), (1, 60, 1), (100, 128, 128)],
    ids=["quarter", "third-rounds-down", "half", "34-rounds-down", "at-least-one", "all"],
)
def test_percent_becomes_cus_rounded_down_but_never_zero(
    percent: int, cus: int, expected: int
) -> None:
    assert share_compute_units(percent, cus) == expected


@given(data=st.data())
def test_shares_that_fit_a_card_in_hami_fit_it_after_conversion(data: st.DataObject) -> None:
    """The reason for rounding down: HAMi-packable shares (sum <= 100 %) stay packable.

    Drawn so that every share is at least one CU (below that, the minimum of 1 CU adds
    compute HAMi did not count) and the percentages sum to at most 100, up to 4 shares (the
    card's vDCU slots).
    """
    cus = data.draw(st.integers(min_value=1, max_value=128), label="cus")
    smallest = -(-100 // cus)  # the lowest percent that is still one whole CU
    percents = [data.draw(st.integers(min_value=smallest, max_value=100), label="first")]
    while len(percents) < 4 and sum(percents) + smallest <= 100 and data.draw(st.booleans()):
        percents.append(data.draw(st.integers(min_value=smallest, max_value=100 - sum(percents))))
    assert sum(share_compute_units(p, cus) for p in percents) <= cus


def test_model_table_matches_the_reference_and_is_case_insensitive() -> None:
    assert COMPUTE_UNITS_BY_MODEL == {
        "K100": 120,
        "K100_AI": 120,
        "K100_LC_AI": 120,
        "K100_LC_E_AI": 128,
        "Z100": 60,
        "Z100L": 60,
    }
    assert canonical_model("k100_ai") == "K100_AI"
    assert ConvertOptions(model="z100l").card_compute_units == 60


def test_both_use_and_nouse_annotations_apply() -> None:
    pod = pod_with(
        {"limits": {"hygon.com/dcunum": 1}},
        annotations={
            "hygon.com/use-gpuuuid": "DCU-a,DCU-b",
            "hygon.com/nouse-gpuuuid": "DCU-b",
            "hygon.com/use-dcutype": "HCU-K100",
            "hygon.com/nouse-dcutype": "ai, lc",
        },
    )
    [request] = device_requests(convert_manifest(pod, ConvertOptions()).documents[0])
    assert expressions(request) == [
        f'{MODEL}.upperAscii().contains("K100")',
        f'!{MODEL}.upperAscii().contains("AI")',
        f'!{MODEL}.upperAscii().contains("LC")',
        f'{UUID} in ["DCU-a", "DCU-b"]',
        f'!({UUID} in ["DCU-b"])',
    ]


def test_model_that_contradicts_the_type_annotation_is_warned_about() -> None:
    result = convert_file(DATA / "deployment-two-cards.yaml", ConvertOptions(model="Z100"))
    assert (
        "Deployment hami-demo/trainer: --model Z100 is not among hygon.com/use-dcutype "
        "K100_AI,K100: no DCU matches both, so the shares can never be allocated"
    ) in result.warnings


def test_model_excluded_by_nouse_type_is_warned_about() -> None:
    pod = pod_with(
        {"limits": {"hygon.com/dcunum": 1, "hygon.com/dcumem": 1024}},
        annotations={"hygon.com/nouse-dcutype": "Z100"},
    )
    result = convert_manifest(pod, ConvertOptions(model="Z100L"))
    assert result.warnings == [
        "Pod p: --model Z100L is excluded by hygon.com/nouse-dcutype Z100: no DCU matches "
        "both, so the shares can never be allocated"
    ]


def test_unconverted_hami_annotations_and_resources_are_warned_about() -> None:
    pod = pod_with(
        {"limits": {"hygon.com/dcunum": 1, "hygon.com/dcu": 1, "hygon.com/vram": 3}},
        annotations={"hami.io/resource-pool": "a", "example.com/keep": "x"},
    )
    result = convert_manifest(pod, ConvertOptions())
    assert result.warnings == [
        "Pod p, container c: hygon.com/dcu left as is: the dcu.hygon.com DeviceClass serves it "
        "as an extended resource (whole DCUs; needs DRAExtendedResource, on from 1.36)",
        "Pod p, container c: hygon.com/vram is not a HAMi DCU resource; left as is",
        "Pod p: annotation hami.io/resource-pool has no equivalent with the dcu.hygon.com "
        "driver; left in place, it does nothing without HAMi",
    ]
    converted = result.documents[-1]
    assert converted["metadata"]["annotations"] == {
        "hami.io/resource-pool": "a",
        "example.com/keep": "x",
    }
    assert converted["spec"]["containers"][0]["resources"]["limits"] == {
        "hygon.com/dcu": 1,
        "hygon.com/vram": 3,
    }


def test_selection_annotations_on_the_workload_itself_are_warned_about() -> None:
    [manifest] = yaml.safe_load_all((DATA / "job-whole-card.yaml").read_text())
    manifest["metadata"]["annotations"] = {"hygon.com/use-dcutype": "K100"}
    result = convert_manifest(manifest, ConvertOptions())
    assert result.warnings == [
        "Job benchmark: annotation hygon.com/use-dcutype is on the Job itself, where HAMi does "
        "not read it (it reads the pod template's); not converted"
    ]
    [request] = device_requests(result.documents[0])
    assert expressions(request) == []


def test_namespace_option_fills_in_objects_without_one() -> None:
    result = convert_file(DATA / "job-whole-card.yaml", ConvertOptions(namespace="team-a"))
    assert [d["metadata"]["namespace"] for d in result.documents] == ["team-a", "team-a"]


def test_empty_lists_left_as_null_in_yaml_are_filled_in() -> None:
    pod = pod_with({"limits": {"hygon.com/dcunum": 1}, "claims": None})
    pod["spec"]["resourceClaims"] = None
    converted = convert_manifest(pod, ConvertOptions()).documents[-1]
    assert converted["spec"]["containers"][0]["resources"] == {"claims": [{"name": "c-dcu"}]}
    assert converted["spec"]["resourceClaims"] == [
        {"name": "c-dcu", "resourceClaimTemplateName": "p-c-dcu"}
    ]


def test_pod_claim_name_falls_back_when_the_container_name_is_too_long() -> None:
    pod = pod_with({"limits": {"hygon.com/dcunum": 1}})
    pod["spec"]["containers"][0]["name"] = "c" * 63
    result = convert_manifest(pod, ConvertOptions())
    assert result.documents[-1]["spec"]["resourceClaims"][0]["name"] == "dcu-0"


# --- errors -------------------------------------------------------------------------------

CTR = r"^Pod {name}, container ctr: "


@pytest.mark.parametrize(
    ("name", "message"),
    [
        (
            "mem-without-num",
            CTR + r"hygon\.com/dcumem without hygon\.com/dcunum: HAMi gives a container no DCU "
            r"unless it sets hygon\.com/dcunum \(it does not default to 1\); add "
            r"hygon\.com/dcunum: 1$",
        ),
        (
            "cores-over-100",
            CTR + r"hygon\.com/dcucores is 150; it is a percentage of one DCU \(1 to 100\)$",
        ),
        (
            "cores-zero",
            CTR + r"hygon\.com/dcucores is 0: in HAMi that shares the compute without "
            r"reserving any, but a vDCU always owns at least one CU; ask for 1 to 100 percent$",
        ),
        (
            "count-negative",
            CTR + r"hygon\.com/dcunum is -1; ask for 1 to 32 DCUs \(a claim holds at most 32 "
            r"devices\)$",
        ),
        (
            "mem-with-unit",
            CTR + r"hygon\.com/dcumem '8Gi' is not a whole number \(HAMi reads it as a plain "
            r"number of MiB: 8192 for 8 GiB\)$",
        ),
        ("cores-fraction", CTR + r"hygon\.com/dcucores 12\.5 is not a whole number$"),
        (
            "limits-requests-disagree",
            CTR + r"hygon\.com/dcunum is 2 in limits but 1 in requests; make them equal "
            r"\(Kubernetes requires it for extended resources, and HAMi reads limits first\)$",
        ),
        (
            "cores-without-mem",
            CTR + r"hygon\.com/dcucores 50 without hygon\.com/dcumem: HAMi then gives the "
            r"container all of the card's memory, and a DCU share must state its memory; add "
            r"hygon\.com/dcumem \(MiB per DCU\), or remove hygon\.com/dcucores for whole DCUs$",
        ),
        (
            "unsupported-kind",
            r"^ReplicationController \(v1\) legacy is not a supported kind: convert one of Pod "
            r"\(v1\), Deployment \(apps/v1\), StatefulSet \(apps/v1\), DaemonSet \(apps/v1\), "
            r"ReplicaSet \(apps/v1\), Job \(batch/v1\), CronJob \(batch/v1\), "
            r"Job \(batch.volcano.sh/v1alpha1\)$",
        ),
        (
            "no-dcu",
            r"^no workload in the input asks for hygon\.com/dcunum \(or hygon\.com/hcunum\): "
            r"nothing to convert$",
        ),
        ("not-yaml", r"^not-yaml\.yaml: not valid YAML: line 6, column 1: .+$"),
    ],
    ids=lambda value: value if isinstance(value, str) and not value.startswith("^") else "",
)
def test_bad_manifest_gets_one_clear_error(name: str, message: str) -> None:
    with pytest.raises(ConvertError, match=message.format(name=name)) as caught:
        convert_file(BAD / f"{name}.yaml", ConvertOptions(model="Z100"))
    assert "\n" not in str(caught.value)


def test_share_without_a_cu_count_names_both_flags() -> None:
    with pytest.raises(
        ConvertError,
        match=r"^Pod hami-demo/quarter, container ctr: hygon\.com/dcucores: 25; turning a "
        r"percentage of a DCU into compute units needs the card's CU count: add "
        r"--compute-units N \(the computeUnits of your DCUs, see `dcu-dra devices`\) or "
        r"--model NAME \(K100, K100_AI, K100_LC_AI, K100_LC_E_AI, Z100, Z100L\)$",
    ):
        convert_file(DATA / "quarter-card-pod.yaml")


def test_memory_only_share_without_a_cu_count_says_it_means_all_cores() -> None:
    with pytest.raises(
        ConvertError,
        match=r"^CronJob hami-demo/nightly, container report: hygon\.com/hcumem without "
        r"hygon\.com/hcucores = 100 % of the cores; turning a percentage",
    ):
        convert_file(DATA / "cronjob-hcu.yaml")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"compute_units": 60, "model": "Z100"},
            r"^--compute-units and --model both say how many CUs a card has: give only one$",
        ),
        ({"compute_units": 0}, r"^--compute-units 0 is out of range: a DCU has 1 to 128 "),
        ({"compute_units": 129}, r"^--compute-units 129 is out of range"),
        (
            {"model": "BW100"},
            r"^unknown DCU model 'BW100': known models are K100 \(120 CUs\), K100_AI \(120 CUs\),"
            r" K100_LC_AI \(120 CUs\), K100_LC_E_AI \(128 CUs\), Z100 \(60 CUs\), Z100L "
            r"\(60 CUs\); for another card give --compute-units N",
        ),
        ({"namespace": "Team_A"}, r"^--namespace 'Team_A' is not a valid namespace name$"),
    ],
    ids=["both", "zero-cus", "too-many-cus", "unknown-model", "bad-namespace"],
)
def test_bad_options_get_one_clear_error(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConvertError, match=message):
        ConvertOptions(**options)


@pytest.mark.parametrize(
    ("annotations", "message"),
    [
        (
            {"hygon.com/use-dcutype": "DCU"},
            r"^Pod p: annotation hygon\.com/use-dcutype value 'DCU' is not \(part of\) a DCU "
            r"model name such as K100_AI or Z100$",
        ),
        (
            {"hygon.com/nouse-dcutype": 'K100") || true || ("'},
            r"^Pod p: annotation hygon\.com/nouse-dcutype value 'K100\"\) \|\| true \|\| \(\"' "
            r"is not \(part of\) a DCU model name",
        ),
        (
            {"hygon.com/use-gpuuuid": "DCU-1 DCU-2"},
            r"^Pod p: annotation hygon\.com/use-gpuuuid value 'DCU-1 DCU-2' is not a card id",
        ),
        (
            {"hygon.com/use-gpuuuid": " , "},
            r"^Pod p: annotation hygon\.com/use-gpuuuid is empty; remove it or list values$",
        ),
    ],
    ids=["prefix-only", "cel-injection", "space-separated", "empty"],
)
def test_bad_selection_annotation_gets_one_clear_error(
    annotations: dict[str, str], message: str
) -> None:
    pod = pod_with({"limits": {"hygon.com/dcunum": 1}}, annotations=annotations)
    with pytest.raises(ConvertError, match=message):
        convert_manifest(pod, ConvertOptions())


def test_mixed_spellings_in_one_container_are_rejected() -> None:
    pod = pod_with({"limits": {"hygon.com/dcunum": 1, "hygon.com/hcumem": 1024}})
    with pytest.raises(ConvertError, match=r"^Pod p, container c: mixes hygon\.com/dcunum-style"):
        convert_manifest(pod, ConvertOptions())


def test_object_in_another_namespace_than_the_option_is_rejected() -> None:
    with pytest.raises(
        ConvertError,
        match=r"^Pod quarter is in namespace hami-demo, not other \(--namespace\): drop "
        r"--namespace or change the object's namespace$",
    ):
        convert_file(
            DATA / "quarter-card-pod.yaml", ConvertOptions(model="Z100", namespace="other")
        )


def test_two_workloads_that_would_share_a_template_are_rejected() -> None:
    pod = pod_with({"limits": {"hygon.com/dcunum": 1}})
    with pytest.raises(
        ConvertError, match=r"^two documents would create ResourceClaimTemplate p-c-dcu: rename"
    ):
        convert_documents([pod, copy.deepcopy(pod)], ConvertOptions())


def test_existing_pod_claim_of_the_same_name_is_rejected() -> None:
    pod = pod_with({"limits": {"hygon.com/dcunum": 1}})
    pod["spec"]["resourceClaims"] = [{"name": "c-dcu", "resourceClaimName": "mine"}]
    with pytest.raises(
        ConvertError, match=r"^Pod p, container c: the pod already has a resource claim named"
    ):
        convert_manifest(pod, ConvertOptions())


def test_workload_without_a_name_is_rejected() -> None:
    pod = pod_with({"limits": {"hygon.com/dcunum": 1}})
    pod["metadata"] = {"generateName": "p-"}
    with pytest.raises(ConvertError, match=r"^Pod without metadata\.name: its ResourceClaim"):
        convert_manifest(pod, ConvertOptions())


def test_non_object_document_is_rejected() -> None:
    with pytest.raises(ConvertError, match=r"^document 2 is not a Kubernetes object"):
        convert_text("kind: Pod\n---\n- a list\n", ConvertOptions())


# --- the command line ---------------------------------------------------------------------


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(["convert", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_prints_the_converted_documents(capsys: pytest.CaptureFixture[str]) -> None:
    path = DATA / "quarter-card-pod.yaml"
    code, out, err = run_cli(capsys, str(path), "--model", "Z100")
    assert (code, err) == (0, "")
    assert (
        list(yaml.safe_load_all(out)) == convert_file(path, ConvertOptions(model="Z100")).documents
    )


def test_cli_reads_stdin_and_takes_the_namespace_flag(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO((DATA / "job-whole-card.yaml").read_text()))
    code, out, err = run_cli(capsys, "-", "--namespace", "team-a", "--compute-units", "64")
    assert (code, err) == (0, "")
    documents = list(yaml.safe_load_all(out))
    assert [(d["kind"], d["metadata"]["namespace"]) for d in documents] == [
        ("ResourceClaimTemplate", "team-a"),
        ("Job", "team-a"),
    ]


def test_cli_writes_warnings_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, str(DATA / "deployment-two-cards.yaml"), "--model", "K100_AI")
    assert code == 0
    lines = err.splitlines()
    assert len(lines) == 3
    assert all(line.startswith("dcu-dra convert: warning: Deployment hami-demo/") for line in lines)
    assert len(list(yaml.safe_load_all(out))) == 2


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            [str(BAD / "cores-over-100.yaml"), "--model", "Z100"],
            "dcu-dra: error: Pod cores-over-100, container ctr: hygon.com/dcucores is 150; it "
            "is a percentage of one DCU (1 to 100)\n",
        ),
        (
            [str(DATA / "quarter-card-pod.yaml")],
            "dcu-dra: error: Pod hami-demo/quarter, container ctr: hygon.com/dcucores: 25; ",
        ),
        (
            ["/nonexistent/hami.yaml"],
            "dcu-dra: error: /nonexistent/hami.yaml: No such file or directory\n",
        ),
    ],
    ids=["bad-value", "missing-flag", "missing-file"],
)
def test_cli_bad_input_is_one_line_and_exit_1(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, out, err = run_cli(capsys, *argv)
    assert (code, out) == (1, "")
    assert err.startswith(message)
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--model", "Z100", "--compute-units", "60"],
            "dcu-dra convert: error: argument --compute-units: not allowed with argument "
            "--model (see 'dcu-dra convert --help')\n",
        ),
        (
            ["--compute-units", "sixty"],
            "dcu-dra convert: error: argument --compute-units: invalid int value: 'sixty' "
            "(see 'dcu-dra convert --help')\n",
        ),
    ],
    ids=["both-flags", "not-a-number"],
)
def test_cli_flag_errors_are_usage_errors(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as caught:
        cli.main(["convert", str(DATA / "job-whole-card.yaml"), *argv])
    assert caught.value.code == 2
    assert capsys.readouterr().err == message


def test_cli_unknown_model_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, str(DATA / "job-whole-card.yaml"), "--model", "Z999")
    assert (code, out) == (2, "")
    assert err.startswith("dcu-dra convert: error: unknown DCU model 'Z999': known models are ")
    assert err.endswith(" (see 'dcu-dra convert --help')\n")
    assert err.count("\n") == 1


def test_cli_runs_as_a_program() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "dra_driver", "convert", "-", "--model", "z100"],
        input=(DATA / "multi-container-pod.yaml").read_text(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stderr) == (0, "")
    kinds = [d["kind"] for d in yaml.safe_load_all(done.stdout)]
    assert kinds == ["ResourceClaimTemplate", "ResourceClaimTemplate", "Pod"]


# --- against the real API server ----------------------------------------------------------

#: Workload kinds apply_yaml's path table does not know, and where to create them.
WORKLOAD_PATHS = {
    "Deployment": ("apps/v1", "deployments"),
    "Job": ("batch/v1", "jobs"),
    "CronJob": ("batch/v1", "cronjobs"),
}


def create(kube: KubeClient, document: dict[str, Any], namespace: str) -> dict[str, Any]:
    if document["kind"] in WORKLOAD_PATHS:
        api_version, plural = WORKLOAD_PATHS[document["kind"]]
        return kube.create(paths.resource_path(api_version, plural, namespace=namespace), document)
    return kube.create(paths.collection_path(document), document)


def converted_into(name: str, options: dict[str, Any], namespace: str) -> Conversion:
    """Convert a tests/data/hami file as if it had no namespace, into ``namespace``."""
    documents = list(yaml.safe_load_all((DATA / name).read_text()))
    for document in documents:
        document["metadata"].pop("namespace", None)
    return convert_documents(documents, ConvertOptions(namespace=namespace, **options))


@pytest.fixture
def cluster_objects(control_plane: ControlPlane) -> Iterator[KubeClient]:
    """deploy/'s DeviceClasses and claims admission policy, effective; removed if we made them."""
    kube = control_plane.client
    documents = [
        document
        for name in ("deviceclass.yaml", "admission-claims.yaml")
        for document in load_yaml((DEPLOY_DIR / name).read_text())
    ]
    with temporary_objects(kube, documents):
        yield kube


def policy_is_effective(kube: KubeClient, namespace: str) -> bool:
    """Whether the claims policy already rejects a share naming only cores (dry run)."""
    claim = {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": "half-share", "namespace": namespace},
        "spec": {
            "devices": {
                "requests": [
                    {
                        "name": "dcu",
                        "exactly": {
                            "deviceClassName": "vdcu.dcu.hygon.com",
                            "capacity": {"requests": {"cores": "1"}},
                        },
                    }
                ]
            }
        },
    }
    try:
        kube.request("POST", paths.collection_path(claim), query={"dryRun": "All"}, body=claim)
    except ApiError as exc:
        return "resourceclaims.dcu.hygon.com" in exc.message
    return False


@pytest.mark.e2e
def test_converted_manifests_are_accepted_and_claimed_by_the_control_plane(
    cluster_objects: KubeClient,
) -> None:
    """The API server compiles every CEL selector, the admission policy admits every template,
    and the resource claim controller makes each pod's claims from the converted templates."""
    kube = cluster_objects
    namespace = unique_name("convert")
    create_namespace(kube, namespace)
    try:
        wait_for(
            lambda: policy_is_effective(kube, namespace),
            timeout_s=10,
            description="the claims admission policy to apply",
        )
        results = [
            converted_into("deployment-two-cards.yaml", {"model": "K100_AI"}, namespace),
            converted_into("pod-type-and-uuid.yaml", {}, namespace),
            converted_into("multi-container-pod.yaml", {"model": "Z100"}, namespace),
            converted_into("cronjob-hcu.yaml", {"compute_units": 60}, namespace),
            converted_into("job-whole-card.yaml", {}, namespace),
        ]
        templates: dict[str, dict[str, Any]] = {}
        for result in results:
            for document in result.documents:
                created = create(kube, document, namespace)
                if document["kind"] == "ResourceClaimTemplate":
                    templates[document["metadata"]["name"]] = created
        assert len(templates) == 6

        # Pods made by the Deployment and Job controllers and the two bare pods all get their
        # claims from the converted templates.
        for selector, wanted in {
            "app=trainer": {"trainer-dcu": "trainer-trainer-dcu"},
            "job-name=benchmark": {"bench-dcu": "benchmark-bench-dcu"},
        }.items():
            pod = wait_for(
                functools.partial(first_pod, kube, namespace, selector),
                timeout_s=30,
                description=f"a pod with {selector} in {namespace}",
            )
            check_pod_claims(kube, pod, wanted, templates)
        for name, wanted in {
            "pinned": {"ctr-dcu": "pinned-ctr-dcu"},
            "serving": {"server-dcu": "serving-server-dcu", "worker-dcu": "serving-worker-dcu"},
        }.items():
            check_pod_claims(kube, kube.get(paths.pods(namespace, name)), wanted, templates)
    finally:
        delete_namespace(kube, namespace)


def first_pod(kube: KubeClient, namespace: str, selector: str) -> dict[str, Any] | None:
    items = kube.list(paths.pods(namespace), label_selector=selector).get("items") or []
    return dict(items[0]) if items else None


def check_pod_claims(
    kube: KubeClient,
    pod: dict[str, Any],
    wanted: dict[str, str],
    templates: dict[str, dict[str, Any]],
) -> None:
    """Each pod claim exists and asks for exactly what its template says."""
    name = pod["metadata"]["name"]
    namespace = pod["metadata"]["namespace"]
    claims = wait_for(
        lambda: (
            found
            if set(found := pod_claims(kube, kube.get(paths.pods(namespace, name)))) == set(wanted)
            else None
        ),
        timeout_s=30,
        description=f"the ResourceClaims of pod {namespace}/{name}",
    )
    for pod_claim, template_name in wanted.items():
        template_devices = templates[template_name]["spec"]["spec"]["devices"]
        claim_devices = claims[pod_claim]["spec"]["devices"]
        assert summary(claim_devices) == summary(template_devices), pod_claim


def summary(devices: dict[str, Any]) -> list[Any]:
    """Requests and constraints with quantities as numbers (the server may reformat them)."""
    requests = [
        (
            request["name"],
            request["exactly"]["deviceClassName"],
            request["exactly"].get("count", 1),
            [s["cel"]["expression"] for s in request["exactly"].get("selectors") or []],
            {
                key: parse_integral_quantity(str(value))
                for key, value in (
                    (request["exactly"].get("capacity") or {}).get("requests") or {}
                ).items()
            },
        )
        for request in devices["requests"]
    ]
    return [requests, devices.get("constraints") or []]


# --- the whole path: convert, schedule, prepare -------------------------------------------

#: A node where only the right conversion works out: two Z100s and three K100_AIs, the first
#: K100_AI (first in PCI order, so first-fit would pick it) being the card the trainer's
#: hygon.com/nouse-gpuuuid excludes.
RUN_NODE: list[dict[str, object]] = [
    {"model": "Z100", "computeUnits": 60, "memory": "32752Mi", "pciBusID": "0000:3b:00.0"},
    {"model": "Z100", "computeUnits": 60, "memory": "32752Mi", "pciBusID": "0000:5e:00.0"},
    {
        "model": "K100_AI",
        "computeUnits": 120,
        "memory": "64Gi",
        "pciBusID": "0000:86:00.0",
        "serial": "2b6a2f0c1d9e8f70",
    },
    {"model": "K100_AI", "computeUnits": 120, "memory": "64Gi", "pciBusID": "0000:af:00.0"},
    {"model": "K100_AI", "computeUnits": 120, "memory": "64Gi", "pciBusID": "0000:d8:00.0"},
]
EXCLUDED_K100 = "dcu-0000-86-00-0"
K100S = {"dcu-0000-af-00-0", "dcu-0000-d8-00-0"}
Z100S = {"dcu-0000-3b-00-0", "dcu-0000-5e-00-0"}


@dataclasses.dataclass
class RunNode:
    """A fake kubelet with the real daemon on a mock node of :data:`RUN_NODE`."""

    kubelet: FakeKubelet
    plugin: PluginProcess


@pytest.fixture
def run_node(cluster_objects: KubeClient, control_plane: ControlPlane) -> Iterator[RunNode]:
    kube = cluster_objects
    base = Path(tempfile.mkdtemp(prefix="cv-", dir="/tmp"))
    root = base / "node"
    create_mock_node(root, parse_config({"devices": RUN_NODE}))
    kubelet = FakeKubelet(
        client=kube,
        node_name=unique_name("convert"),
        registry_dir=base / "registry",
        plugins_dir=base / "plugins",
    ).start()
    plugin = PluginProcess.for_kubelet(
        kubelet, base, root=root, kubeconfig=control_plane.kubeconfig
    )
    try:
        plugin.start().wait_for_registration_socket()
        kubelet.wait_for_plugin(DRIVER_NAME, timeout_s=30)
        plugin.wait_for_slices(kube)
        yield RunNode(kubelet=kubelet, plugin=plugin)
    finally:
        if plugin.process is not None:
            plugin.stop()
        kubelet.stop()
        try:
            kube.delete_collection(
                paths.resource_slices(), field_selector=f"spec.nodeName={kubelet.node_name}"
            )
            kube.delete(paths.nodes(kubelet.node_name))
        except ApiError as exc:  # cleanup must not hide the test's own result
            print(f"cleanup of node {kubelet.node_name} failed: {exc}")
        shutil.rmtree(base, ignore_errors=True)


def pinned_to(result: Conversion, node: str) -> Conversion:
    """The conversion with every pod pinned to ``node`` (other tests' nodes stay out of it)."""
    for document in result.documents:
        if document["kind"] != "ResourceClaimTemplate":
            spec = (
                document["spec"]
                if document["kind"] == "Pod"
                else document["spec"]["template"]["spec"]
            )
            spec["nodeSelector"] = {"kubernetes.io/hostname": node}
    return result


def running_pods(
    kube: KubeClient, namespace: str, selector: str, count: int
) -> list[dict[str, Any]]:
    def ready() -> list[dict[str, Any]] | None:
        items = kube.list(paths.pods(namespace), label_selector=selector).get("items") or []
        running = [pod for pod in items if is_pod_running(pod)]
        return running if len(running) == count else None

    return wait_for(ready, timeout_s=60, description=f"{count} running pods with {selector}")


def only_claim(kube: KubeClient, pod: dict[str, Any]) -> dict[str, Any]:
    [claim] = pod_claims(kube, pod).values()
    return claim


@pytest.mark.e2e
def test_converted_workloads_run_on_the_dcus_hami_would_have_given_them(
    run_node: RunNode, cluster_objects: KubeClient
) -> None:
    """Through the real scheduler and the real daemon: the trainer's two half cards are two
    different K100_AIs, never the excluded one; the quarter card is 15 CUs of a Z100; the job's
    whole card is one nobody else uses."""
    kube = cluster_objects
    node = run_node.kubelet.node_name
    namespace = unique_name("convert")
    create_namespace(kube, namespace)
    try:
        for name, options in (
            ("deployment-two-cards.yaml", {"model": "K100_AI"}),
            ("quarter-card-pod.yaml", {"model": "Z100"}),
        ):
            for document in pinned_to(converted_into(name, options, namespace), node).documents:
                create(kube, document, namespace)
        trainers = running_pods(kube, namespace, "app=trainer", 2)
        quarter = wait_for_pod_running(kube, namespace, "quarter", timeout_s=60)

        used: set[str] = set()
        for pod in trainers:
            claim = only_claim(kube, pod)
            results = allocation_results(claim)
            assert {r["device"] for r in results} == K100S  # two cards, neither one excluded
            assert [parse_integral_quantity(r["consumedCapacity"]["cores"]) for r in results] == [
                60,
                60,
            ]
            vdevs = read_vdev_dir(run_node.plugin.vdev_dir(claim["metadata"]["uid"]))
            assert sorted((v.pci_bus_id, v.cu_count, v.memory_mib) for v in vdevs) == [
                ("0000:af:00.0", 60, 8192),
                ("0000:d8:00.0", 60, 8192),
            ]
            used |= {r["device"] for r in results}
        claim = only_claim(kube, quarter)
        [result] = allocation_results(claim)
        assert result["device"] in Z100S
        used.add(result["device"])
        [vdev] = read_vdev_dir(run_node.plugin.vdev_dir(claim["metadata"]["uid"]))
        assert (vdev.cu_count, vdev.memory_mib) == (15, 8188)

        # The whole card goes to a card without shares: the other Z100 or the excluded K100_AI.
        job = converted_into("job-whole-card.yaml", {}, namespace)
        for document in pinned_to(job, node).documents:
            create(kube, document, namespace)
        [bench] = running_pods(kube, namespace, "job-name=benchmark", 1)
        [result] = allocation_results(only_claim(kube, bench))
        assert result["device"] in (Z100S | {EXCLUDED_K100}) - used
    finally:
        delete_namespace(kube, namespace)
