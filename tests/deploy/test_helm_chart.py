"""The Helm chart deploy/helm/dcu-dra-driver, rendered by the pinned helm (``make helm``).

- ``helm lint --strict`` passes for the default, the mock and the ci/ values;
- every rendered object is valid in strict mode for each supported Kubernetes version;
- RBAC, DeviceClasses and admission policies equal the plain manifests in deploy/ when installed
  as release dcu-dra in namespace dcu-dra, and follow the release, namespace and driver name
  otherwise (so chart and manifests cannot drift);
- the DaemonSet passes settings only as the flags' environment twins, mounts host paths at the
  same paths with the least privileges, and in mock mode writes a mock node with the real CLI;
- values.schema.json and templates/validation.yaml reject bad values with a clear message;
- the real API server accepts every rendered object as written (e2e).
"""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from dra_driver import cli
from dra_driver.cluster.kube import ApiError, KubeClient, paths
from dra_driver.kubeletplugin.liveness import CHECKED_SERVICES, PROBE_TIMEOUT_S
from dra_driver.node.devices import HYGON_VENDOR_ID, discover
from dra_driver.node.mock import DEFAULT_CONFIG, MockConfig, parse_config
from dra_driver.testing.cluster import (
    ControlPlane,
    create_namespace,
    delete_namespace,
    unique_name,
)
from dra_driver.testing.waiting import wait_for
from tests.deploy.conftest import REPO_ROOT
from tests.test_deploy_manifests import (
    ALLOWED_PERMISSIONS,
    KUBERNETES_VERSIONS,
    OBJECTS,
    Document,
    granted_permissions,
    minor,
)

CHART_DIR = REPO_ROOT / "deploy" / "helm" / "dcu-dra-driver"
CI_VALUES = CHART_DIR / "ci" / "mock-values.yaml"
VALUES = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
SCHEMA = json.loads((CHART_DIR / "values.schema.json").read_text())

#: The release and namespace the docs use: names then match deploy/'s manifests.
RELEASE = "dcu-dra"
NAMESPACE = "dcu-dra"
DRIVER = "dcu.hygon.com"
PLUGIN = "dcu-dra-kubelet-plugin"
MOCK_ROOT = "/var/lib/dcu-dra/mock"

#: The value sets the chart is rendered with (extra `helm template` arguments).
RENDERS: dict[str, tuple[str, ...]] = {
    "default": (),
    "mock": ("--set", "mock.enabled=true"),
    "ci": ("-f", str(CI_VALUES)),
    "dashboards": ("--set", "dashboards.enabled=true"),
}

#: The env of the plugin container: the kubelet-plugin flags' environment twins, plus the pod
#: UID (the downward API gives the plugin its pod's identity).
PLUGIN_ENV = frozenset(
    {
        "NODE_NAME",
        "POD_UID",
        "DRIVER_NAME",
        "DCU_DRA_ROOT",
        "REGISTRAR_DIR",
        "PLUGIN_DATA_DIR",
        "CDI_DIR",
        "SHARING",
        "MAX_VDEVICES",
        "LOG_FORMAT",
        "ROLLING_UPDATE",
        "CLAIM_STATUS",
        "ORPHAN_INTERVAL",
        "HEALTH_INTERVAL",
        "METRICS_ADDR",
        "HEALTHCHECK_PORT",
    }
)

#: The plugin's container security context: uid 0 for the root-owned host dirs, nothing more.
PLUGIN_SECURITY_CONTEXT = {
    "runAsUser": 0,
    "runAsGroup": 0,
    "privileged": False,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}

#: Volumes of the plugin on a real node: name -> (host path, hostPath type, read-only).
REAL_NODE_VOLUMES = {
    "plugins-registry": ("/var/lib/kubelet/plugins_registry", "DirectoryOrCreate", False),
    "plugin-data": (f"/var/lib/kubelet/plugins/{DRIVER}", "DirectoryOrCreate", False),
    "cdi": ("/var/run/cdi", "DirectoryOrCreate", False),
    "dev": ("/dev", "Directory", True),
    "sys": ("/sys", "Directory", True),
    "hyhal": ("/opt/hyhal", "Directory", True),
    "machine-id": ("/etc/machine-id", "File", True),
}


# --- running helm -------------------------------------------------------------------------


class Chart:
    """Runs the pinned helm on the chart; renders are cached (each run takes ~0.1 s)."""

    def __init__(self, helm: Path, home: Path) -> None:
        self.helm = helm
        # Helm keeps config, cache and repositories under these; keep the user's untouched.
        self.env = {
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
            "PATH": "/usr/bin:/bin",
        }
        self._renders: dict[tuple[str, ...], list[dict[str, Any]]] = {}

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.helm), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env=self.env,
        )

    def template_args(
        self, args: Sequence[str], release: str, namespace: str, kube_version: str | None
    ) -> list[str]:
        command = ["template", release, str(CHART_DIR), "--namespace", namespace, *args]
        if kube_version is not None:
            command += ["--kube-version", kube_version]
        return command

    def template(
        self,
        *args: str,
        release: str = RELEASE,
        namespace: str = NAMESPACE,
        kube_version: str | None = None,
    ) -> list[dict[str, Any]]:
        """The objects `helm template` renders; fails the test with helm's stderr."""
        command = self.template_args(args, release, namespace, kube_version)
        key = tuple(command)
        if key not in self._renders:
            done = self.run(*command)
            assert done.returncode == 0, f"helm {' '.join(command)} failed:\n{done.stderr}"
            self._renders[key] = [doc for doc in yaml.safe_load_all(done.stdout) if doc]
        return self._renders[key]

    def template_error(self, *args: str, kube_version: str | None = None) -> str:
        """The stderr of a `helm template` that must fail."""
        command = self.template_args(args, RELEASE, NAMESPACE, kube_version)
        done = self.run(*command)
        assert done.returncode != 0, f"helm {' '.join(command)} rendered:\n{done.stdout}"
        return done.stderr


@pytest.fixture(scope="session")
def chart(helm_binary: Path, tmp_path_factory: pytest.TempPathFactory) -> Chart:
    return Chart(helm_binary, tmp_path_factory.mktemp("helm-home"))


def render(chart: Chart, name: str, *args: str) -> list[dict[str, Any]]:
    return chart.template(*RENDERS[name], *args)


def find(objects: Sequence[Mapping[str, Any]], kind: str, name: str | None = None) -> Any:
    """The one object of ``kind`` (and ``name``)."""
    found = [
        obj
        for obj in objects
        if obj["kind"] == kind and (name is None or obj["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"{len(found)} {kind} objects named {name}"
    return found[0]


def kinds_and_names(objects: Sequence[Mapping[str, Any]]) -> set[tuple[str, str]]:
    return {(obj["kind"], obj["metadata"]["name"]) for obj in objects}


def pod_spec(objects: Sequence[Mapping[str, Any]]) -> Any:
    return find(objects, "DaemonSet")["spec"]["template"]["spec"]


def plugin_container(objects: Sequence[Mapping[str, Any]]) -> Any:
    [container] = pod_spec(objects)["containers"]
    assert container["name"] == "kubelet-plugin"
    return container


def env_of(container: Mapping[str, Any]) -> dict[str, Any]:
    """name -> value, or name -> valueFrom for downward-API variables."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env") or []}


def mounts_of(container: Mapping[str, Any]) -> dict[str, tuple[str, bool]]:
    """volume name -> (mount path, read-only)."""
    return {
        m["name"]: (m["mountPath"], bool(m.get("readOnly", False)))
        for m in container.get("volumeMounts") or []
    }


def host_paths(objects: Sequence[Mapping[str, Any]]) -> dict[str, tuple[str, str]]:
    """hostPath volume name -> (path, type)."""
    return {
        v["name"]: (v["hostPath"]["path"], v["hostPath"]["type"])
        for v in pod_spec(objects)["volumes"]
        if "hostPath" in v
    }


def mock_config_of(objects: Sequence[Mapping[str, Any]]) -> Any:
    """The mock node config document the ConfigMap hands to `dcu-dra mock create`."""
    config_map = find(objects, "ConfigMap")
    return yaml.safe_load(config_map["data"]["config.yaml"])


def without_labels(obj: Mapping[str, Any]) -> dict[str, Any]:
    """``obj`` without metadata.labels/annotations (the chart adds Helm's labels)."""
    body = dict(obj)
    body["metadata"] = {
        key: value for key, value in obj["metadata"].items() if key not in ("labels", "annotations")
    }
    return body


# --- helm and the chart's metadata --------------------------------------------------------


def test_helm_is_the_version_the_makefile_pins(chart: Chart) -> None:
    makefile = (REPO_ROOT / "Makefile").read_text()
    [pinned] = re.findall(r"^HELM_VERSION := (\S+)$", makefile, flags=re.MULTILINE)
    done = chart.run("version", "--template", "{{.Version}}")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == pinned


def test_chart_metadata_matches_the_project() -> None:
    meta = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert meta["apiVersion"] == "v2"
    assert meta["name"] == "dcu-dra-driver"
    assert meta["appVersion"] == project["version"]
    assert meta["kubeVersion"] == ">=1.34.0-0"


@pytest.mark.parametrize("strict", [False, True], ids=["lint", "lint-strict"])
@pytest.mark.parametrize("name", list(RENDERS))
def test_helm_lint_passes(chart: Chart, name: str, strict: bool) -> None:
    done = chart.run("lint", str(CHART_DIR), *RENDERS[name], *(["--strict"] if strict else []))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in done.stdout
    assert "[WARNING]" not in done.stdout and "[ERROR]" not in done.stdout, done.stdout


def test_chart_refuses_kubernetes_before_1_34(chart: Chart) -> None:
    expected = (
        "chart requires kubeVersion: >=1.34.0-0 which is incompatible with Kubernetes v1.33.5"
    )
    assert expected in chart.template_error(kube_version="1.33.5")


# --- schema validity ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "version", KUBERNETES_VERSIONS, ids=[minor(v) for v in KUBERNETES_VERSIONS]
)
@pytest.mark.parametrize("name", list(RENDERS))
def test_rendered_objects_are_valid_in_strict_mode(chart: Chart, name: str, version: str) -> None:
    objects = chart.template(*RENDERS[name], kube_version=version)
    assert len(objects) >= 9
    for obj in objects:
        validated_with = kubernetes_validate.validate(obj, version, strict=True)
        assert validated_with == minor(version), (obj["kind"], obj["metadata"]["name"])


# --- the same objects as deploy/ ----------------------------------------------------------

#: deploy/'s objects the chart renders too (Helm's --create-namespace makes the Namespace).
DEPLOY_OBJECTS = [doc for doc in OBJECTS if doc.kind != "Namespace"]


def test_default_render_has_deploy_objects_and_the_daemon_set(chart: Chart) -> None:
    objects = render(chart, "default")
    assert kinds_and_names(objects) == {(doc.kind, doc.name) for doc in DEPLOY_OBJECTS} | {
        ("DaemonSet", PLUGIN)
    }
    assert "Namespace" not in {obj["kind"] for obj in objects}


@pytest.mark.parametrize("document", DEPLOY_OBJECTS, ids=[doc.id for doc in DEPLOY_OBJECTS])
def test_chart_renders_the_deploy_object(chart: Chart, document: Document) -> None:
    rendered = find(render(chart, "default"), document.kind, document.name)
    assert without_labels(rendered) == without_labels(document.body)


def test_chart_objects_carry_helm_labels(chart: Chart) -> None:
    for obj in render(chart, "mock"):
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == RELEASE, obj["metadata"]["name"]
        assert labels["app.kubernetes.io/managed-by"] == "Helm", obj["metadata"]["name"]


RENAMED = (
    "--set",
    "driverName=dcu.example.com",
    "--set",
    "deviceClasses.extendedResourceName=example.com/dcu",
)


def test_names_follow_release_namespace_and_driver(chart: Chart) -> None:
    objects = chart.template(*RENAMED, release="accel", namespace="gpu-system")
    text = json.dumps(objects)
    assert "dcu.hygon.com" not in text and "dcu-dra-kubelet-plugin" not in text
    assert kinds_and_names(objects) == {
        ("ServiceAccount", "accel-kubelet-plugin"),
        ("ClusterRole", "accel-kubelet-plugin"),
        ("ClusterRoleBinding", "accel-kubelet-plugin"),
        ("DeviceClass", "dcu.example.com"),
        ("DeviceClass", "vdcu.dcu.example.com"),
        ("ValidatingAdmissionPolicy", "resourceclaims.dcu.example.com"),
        ("ValidatingAdmissionPolicyBinding", "resourceclaims.dcu.example.com"),
        ("ValidatingAdmissionPolicy", "resourceslices.dcu.example.com"),
        ("ValidatingAdmissionPolicyBinding", "resourceslices.dcu.example.com"),
        ("DaemonSet", "accel-kubelet-plugin"),
    }
    for obj in objects:
        if obj["kind"] in ("ServiceAccount", "DaemonSet"):
            assert obj["metadata"]["namespace"] == "gpu-system"
    binding = find(objects, "ClusterRoleBinding")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "accel-kubelet-plugin", "namespace": "gpu-system"}
    ]
    assert binding["roleRef"]["name"] == "accel-kubelet-plugin"
    expected = {
        (group, resource, verb, "dcu.example.com" if name == DRIVER else name)
        for group, resource, verb, name in ALLOWED_PERMISSIONS
    }
    assert set(granted_permissions(find(objects, "ClusterRole")["rules"])) == expected

    whole = find(objects, "DeviceClass", "dcu.example.com")["spec"]
    assert whole["selectors"] == [{"cel": {"expression": 'device.driver == "dcu.example.com"'}}]
    assert whole["extendedResourceName"] == "example.com/dcu"
    claims = find(objects, "ValidatingAdmissionPolicy", "resourceclaims.dcu.example.com")
    [classes] = [v for v in claims["spec"]["variables"] if v["name"] == "classes"]
    assert json.loads(classes["expression"]) == ["dcu.example.com", "vdcu.dcu.example.com"]
    slices = find(objects, "ValidatingAdmissionPolicy", "resourceslices.dcu.example.com")
    [condition] = slices["spec"]["matchConditions"]
    assert condition["expression"] == (
        'request.userInfo.username == "system:serviceaccount:gpu-system:accel-kubelet-plugin"'
    )
    assert slices["spec"]["validations"][2]["expression"] == (
        'variables.slice.spec.driver == "dcu.example.com"'
    )
    for binding in (obj for obj in objects if obj["kind"] == "ValidatingAdmissionPolicyBinding"):
        assert binding["spec"]["policyName"] == binding["metadata"]["name"]

    env = env_of(plugin_container(objects))
    assert env["DRIVER_NAME"] == "dcu.example.com"
    assert env["PLUGIN_DATA_DIR"] == "/var/lib/kubelet/plugins/dcu.example.com"
    assert host_paths(objects)["plugin-data"][0] == "/var/lib/kubelet/plugins/dcu.example.com"


@pytest.mark.parametrize(
    ("args", "absent"),
    [
        (("--set", "rbac.create=false"), {"ClusterRole", "ClusterRoleBinding"}),
        (("--set", "deviceClasses.create=false"), {"DeviceClass"}),
        (
            ("--set", "admissionPolicies.create=false"),
            {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"},
        ),
    ],
    ids=["rbac", "device-classes", "admission-policies"],
)
def test_toggles_leave_out_their_objects(
    chart: Chart, args: tuple[str, ...], absent: set[str]
) -> None:
    everything = {obj["kind"] for obj in render(chart, "default")}
    assert {obj["kind"] for obj in chart.template(*args)} == everything - absent


def test_existing_service_account_is_used_everywhere(chart: Chart) -> None:
    objects = chart.template(
        "--set", "serviceAccount.create=false", "--set", "serviceAccount.name=dcu-plugin"
    )
    assert "ServiceAccount" not in {obj["kind"] for obj in objects}
    assert pod_spec(objects)["serviceAccountName"] == "dcu-plugin"
    assert find(objects, "ClusterRoleBinding")["subjects"][0]["name"] == "dcu-plugin"
    slices = find(objects, "ValidatingAdmissionPolicy", f"resourceslices.{DRIVER}")
    assert slices["spec"]["matchConditions"][0]["expression"] == (
        f'request.userInfo.username == "system:serviceaccount:{NAMESPACE}:dcu-plugin"'
    )


def test_empty_extended_resource_name_is_left_out(chart: Chart) -> None:
    objects = chart.template("--set", "deviceClasses.extendedResourceName=")
    assert "extendedResourceName" not in find(objects, "DeviceClass", DRIVER)["spec"]


# --- the DaemonSet ------------------------------------------------------------------------


def test_daemon_set_runs_the_kubelet_plugin(chart: Chart) -> None:
    objects = render(chart, "default")
    container = plugin_container(objects)
    assert "command" not in container  # the image's entrypoint is dcu-dra
    assert container["args"] == ["kubelet-plugin"]
    assert container["image"] == "dcu-dra:0.1.0"
    assert "initContainers" not in pod_spec(objects)
    assert pod_spec(objects)["serviceAccountName"] == PLUGIN


def test_plugin_env_comes_from_the_downward_api(chart: Chart) -> None:
    env = env_of(plugin_container(render(chart, "default")))
    assert set(env) == PLUGIN_ENV
    assert env["NODE_NAME"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert env["POD_UID"] == {"fieldRef": {"fieldPath": "metadata.uid"}}


@pytest.mark.parametrize("name", list(RENDERS))
def test_plugin_env_is_what_the_cli_reads(
    chart: Chart, name: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each variable is a flag's environment twin: the parser turns them into those flags."""
    objects = render(chart, name)
    env = env_of(plugin_container(objects))
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["kubelet-plugin", "--help"])
    documented = re.sub(r"\s+", " ", capsys.readouterr().out)
    for variable in PLUGIN_ENV:
        if variable != "POD_UID":  # the pod's identity, not a setting
            assert f"env {variable}" in documented, variable
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("NODE_NAME", "node-a")
    monkeypatch.setenv("POD_UID", "4a3c9e5e-2f4b-4c55-9a43-5d2b4d0a8b11")
    for variable, value in env.items():
        if isinstance(value, str):
            monkeypatch.setenv(variable, value)
    args = cli.build_parser().parse_args(plugin_container(objects)["args"])
    assert args.node_name == "node-a"
    assert args.driver_name == env["DRIVER_NAME"]
    assert args.root == Path(env["DCU_DRA_ROOT"])
    assert args.registrar_dir == Path(env["REGISTRAR_DIR"])
    assert args.plugin_data_dir == Path(env["PLUGIN_DATA_DIR"])
    assert args.cdi_dir == Path(env["CDI_DIR"])
    assert args.sharing == env["SHARING"]
    assert args.max_vdevices == int(env["MAX_VDEVICES"])
    assert args.log_format == env["LOG_FORMAT"]
    # The operations the chart turns on (the CLI's defaults are all off, for tests).
    assert args.rolling_update is True
    assert args.claim_status is True
    assert args.orphan_interval == 120
    assert args.health_interval == 5
    assert args.metrics_addr == ":8080"
    assert args.healthcheck_port == 51515


def test_operations_can_be_turned_off(chart: Chart) -> None:
    objects = chart.template(
        "--set",
        "rollingUpdate=false",
        "--set",
        "claimStatus=false",
        "--set",
        "metrics.enabled=false",
        "--set",
        "livenessProbe.enabled=false",
    )
    container = plugin_container(objects)
    env = env_of(container)
    assert env["ROLLING_UPDATE"] == "false"
    assert env["CLAIM_STATUS"] == "false"
    assert "METRICS_ADDR" not in env
    assert "HEALTHCHECK_PORT" not in env
    assert "livenessProbe" not in container
    assert "ports" not in container
    assert "prometheus.io/scrape" not in (
        find(objects, "DaemonSet")["spec"]["template"]["metadata"].get("annotations") or {}
    )


def test_liveness_probe_asks_the_plugins_grpc_health_endpoint(chart: Chart) -> None:
    objects = render(chart, "default")
    container = plugin_container(objects)
    probe = container["livenessProbe"]
    # The service name the liveness endpoint answers for (the others get NOT_FOUND).
    assert probe["grpc"] == {"port": 51515, "service": "liveness"}
    assert "liveness" in CHECKED_SERVICES
    assert probe["timeoutSeconds"] > 2 * PROBE_TIMEOUT_S  # both socket checks fit
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": 8080, "healthz": 51515}
    annotations = find(objects, "DaemonSet")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == "8080"
    assert annotations["prometheus.io/scrape"] == "true"


def test_plugin_mounts_host_paths_at_the_same_paths(chart: Chart) -> None:
    objects = render(chart, "default")
    mounts = mounts_of(plugin_container(objects))
    volumes = host_paths(objects)
    assert {
        name: (path, kind, mounts[name][1]) for name, (path, kind) in volumes.items()
    } == REAL_NODE_VOLUMES
    assert set(mounts) == set(volumes)
    for name, (path, _) in volumes.items():
        # CDI specs and the kubelet name these by host path: the plugin must see the same path.
        assert mounts[name][0] == path, name


def test_plugin_writes_only_where_its_env_points(chart: Chart) -> None:
    objects = render(chart, "default")
    container = plugin_container(objects)
    env = env_of(container)
    writable = {path for path, read_only in mounts_of(container).values() if not read_only}
    assert writable == {env["REGISTRAR_DIR"], env["PLUGIN_DATA_DIR"], env["CDI_DIR"]}
    assert env["DCU_DRA_ROOT"] == "/"


def test_plugin_has_only_the_privileges_it_needs(chart: Chart) -> None:
    objects = render(chart, "default")
    assert plugin_container(objects)["securityContext"] == PLUGIN_SECURITY_CONTEXT
    spec = pod_spec(objects)
    assert spec["securityContext"] == {"seccompProfile": {"type": "RuntimeDefault"}}
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        assert field not in spec


def test_termination_message_is_written_outside_the_read_only_dev(chart: Chart) -> None:
    container = plugin_container(render(chart, "default"))
    assert mounts_of(container)["dev"] == ("/dev", True)
    assert not container["terminationMessagePath"].startswith("/dev/")
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"


def test_daemon_set_scheduling_and_rollout(chart: Chart) -> None:
    objects = render(chart, "default")
    daemon_set = find(objects, "DaemonSet")
    spec = pod_spec(objects)
    assert spec["priorityClassName"] == "system-node-critical"
    assert spec["nodeSelector"] == {"hygon.com/dcu.present": "true"}
    assert spec["terminationGracePeriodSeconds"] == 30
    assert "tolerations" not in spec
    assert daemon_set["spec"]["updateStrategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    resources = plugin_container(objects)["resources"]
    assert resources["requests"] == {"cpu": "10m", "memory": "64Mi"}
    assert resources["limits"] == {"memory": "256Mi"}
    selector = daemon_set["spec"]["selector"]["matchLabels"]
    assert selector.items() <= daemon_set["spec"]["template"]["metadata"]["labels"].items()


def test_scheduling_values_reach_the_pods(chart: Chart) -> None:
    objects = render(chart, "ci")
    spec = pod_spec(objects)
    assert spec["tolerations"] == [
        {"key": "hygon.com/dcu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert plugin_container(objects)["imagePullPolicy"] == "Never"
    assert plugin_container(objects)["image"] == "dcu-dra:dev"


# --- mock mode ----------------------------------------------------------------------------


def mock_init_container(objects: Sequence[Mapping[str, Any]]) -> Any:
    [init] = pod_spec(objects)["initContainers"]
    assert init["name"] == "mock-node"
    return init


@pytest.mark.parametrize(("name", "root"), [("mock", MOCK_ROOT), ("ci", MOCK_ROOT + "-ci")])
def test_mock_plugin_runs_on_the_mock_node(chart: Chart, name: str, root: str) -> None:
    objects = render(chart, name)
    container = plugin_container(objects)
    assert env_of(container)["DCU_DRA_ROOT"] == root
    volumes = host_paths(objects)
    assert volumes["mock-root"] == (root, "DirectoryOrCreate")
    # The mock node at its host path (the CDI specs name host paths), never the node's own.
    mounts = mounts_of(container)
    assert mounts["mock-root"] == (root, True)
    assert not {"dev", "sys", "hyhal", "machine-id"} & (set(volumes) | set(mounts))
    assert container["securityContext"] == PLUGIN_SECURITY_CONTEXT


def test_mock_init_container_writes_the_mock_node(chart: Chart) -> None:
    objects = render(chart, "mock")
    init = mock_init_container(objects)
    assert init["args"] == [
        "mock",
        "create",
        "--root",
        MOCK_ROOT,
        "--config",
        "/etc/dcu-dra-mock/config.yaml",
        "--device-nodes",
        "char",
    ]
    assert init["image"] == plugin_container(objects)["image"]
    # mknod of the mock's character devices (majors 120 and 121) is all it needs beyond uid 0.
    assert init["securityContext"] == {
        **PLUGIN_SECURITY_CONTEXT,
        "capabilities": {"drop": ["ALL"], "add": ["MKNOD"]},
    }
    assert mounts_of(init) == {
        "mock-root": (MOCK_ROOT, False),
        "mock-config": ("/etc/dcu-dra-mock", True),
    }
    [config_volume] = [v for v in pod_spec(objects)["volumes"] if v["name"] == "mock-config"]
    assert config_volume["configMap"]["name"] == find(objects, "ConfigMap")["metadata"]["name"]


def hygon_devices(config: MockConfig) -> int:
    return sum(1 for device in config.devices if device.vendor_id == HYGON_VENDOR_ID)


@pytest.mark.parametrize("name", ["mock", "ci"])
def test_mock_init_command_builds_a_node_the_plugin_discovers(
    chart: Chart, name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Run the init container's own command line through the real CLI, on a temp root."""
    objects = render(chart, name)
    args = list(mock_init_container(objects)["args"])
    config_file = tmp_path / "config.yaml"
    config_file.write_text(find(objects, "ConfigMap")["data"]["config.yaml"])
    root = tmp_path / "node"
    args[args.index("--root") + 1] = str(root)
    args[args.index("--config") + 1] = str(config_file)
    # Character devices need root; plain files make the same tree for discovery.
    args[args.index("--device-nodes") + 1] = "file"
    assert cli.main(args) == 0, capsys.readouterr().err
    config = parse_config(mock_config_of(objects))
    inventory = discover(root)
    assert len(inventory.devices) == hygon_devices(config) > 0
    assert {d.pci_bus_id for d in inventory.devices} == {
        d.pci_bus_id for d in config.devices if d.vendor_id == HYGON_VENDOR_ID
    }


def test_default_mock_node_is_the_cli_default(chart: Chart) -> None:
    assert parse_config(mock_config_of(render(chart, "mock"))) == DEFAULT_CONFIG
    assert parse_config(VALUES["mock"]["config"]) == DEFAULT_CONFIG


def test_mock_config_round_trips_through_parse_config(chart: Chart) -> None:
    values = yaml.safe_load(CI_VALUES.read_text())
    rendered = mock_config_of(render(chart, "ci"))
    assert parse_config(rendered, source="rendered") == parse_config(values["mock"]["config"])
    # 0000:00:02.0 would be a YAML 1.1 sexagesimal float if the ConfigMap held plain YAML.
    assert rendered["devices"][0]["pciBusID"] == "0000:00:02.0"
    assert not isinstance(yaml.safe_load("id: 0000:00:02.0")["id"], str)


def test_mock_pods_roll_when_the_mock_config_changes(chart: Chart) -> None:
    def checksum(objects: list[dict[str, Any]]) -> str:
        annotations = find(objects, "DaemonSet")["spec"]["template"]["metadata"]["annotations"]
        return str(annotations["checksum/mock-config"])

    one_card = {
        "devices": [
            {"model": "Z100", "computeUnits": 30, "memory": "16Gi", "pciBusID": "0000:3b:00.0"}
        ]
    }
    changed = chart.template(
        "--set", "mock.enabled=true", "--set-json", "mock.config=" + json.dumps(one_card)
    )
    assert checksum(render(chart, "mock")) != checksum(changed)
    default_metadata = find(render(chart, "default"), "DaemonSet")["spec"]["template"]["metadata"]
    assert "checksum/mock-config" not in default_metadata.get("annotations", {})


# --- bad values ---------------------------------------------------------------------------

SCHEMA_ERROR = "values don't meet the specifications of the schema(s)"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("--set", "sharing=bogus"),
            "at '/sharing': value must be one of 'consumable', 'exclusive'",
        ),
        (("--set", "maxVDevices=-1"), "at '/maxVDevices': minimum: got -1, want 1"),
        (("--set", "maxVDevices=65"), "at '/maxVDevices': maximum: got 65, want 64"),
        (("--set", "logFormat=xml"), "at '/logFormat': value must be one of 'text', 'json'"),
        (("--set", "driverName=Dcu_Hygon"), "at '/driverName': 'Dcu_Hygon' does not match"),
        (("--set", "mock.root=var/mock"), "at '/mock/root': 'var/mock' does not match"),
        (("--set", "mock.root=/"), "at '/mock/root': '/' does not match"),
        (("--set", "image.pullPolicy=Sometimes"), "at '/image/pullPolicy': value must be one of"),
        (("--set", "terminationGracePeriodSeconds=-1"), "at '/terminationGracePeriodSeconds'"),
        (("--set", "bogus=1"), "at '': additional properties 'bogus' not allowed"),
        (("--set", "healthIntervalSeconds=30"), "at '/healthIntervalSeconds': maximum"),
        (("--set", "orphanIntervalSeconds=-1"), "at '/orphanIntervalSeconds': minimum"),
        (("--set", "metrics.port=0"), "at '/metrics/port': minimum"),
        (("--set-json", 'mock.config={"devices":[]}'), "at '/mock/config/devices': minItems"),
        (
            (
                "--set-json",
                'mock.config={"devices":[{"model":"Z100","computeUnits":60,'
                '"memory":"32Gi","pciBusID":"3b:00.0"}]}',
            ),
            "at '/mock/config/devices/0/pciBusID': '3b:00.0' does not match",
        ),
        (
            (
                "--set-json",
                'mock.config={"devices":[{"computeUnits":1,"memory":"1Gi",'
                '"pciBusID":"0000:01:00.0"}]}',
            ),
            "at '/mock/config/devices/0': 'anyOf' failed",
        ),
    ],
    ids=[
        "sharing",
        "negative-max-vdevices",
        "too-many-vdevices",
        "log-format",
        "driver-name",
        "relative-mock-root",
        "mock-root-slash",
        "pull-policy",
        "negative-grace-period",
        "unknown-key",
        "slow-health-checks",
        "negative-orphan-interval",
        "metrics-port-zero",
        "no-mock-devices",
        "mock-bus-id",
        "mock-device-without-model",
    ],
)
def test_schema_rejects_bad_values(chart: Chart, args: tuple[str, ...], message: str) -> None:
    stderr = chart.template_error(*args)
    assert SCHEMA_ERROR in stderr
    assert message in stderr, stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("--set", "serviceAccount.create=false"),
            "serviceAccount.create is false but serviceAccount.name is empty.\n",
        ),
        (
            ("--set", "terminationGracePeriodSeconds=20"),
            "terminationGracePeriodSeconds is 20, but on SIGTERM the plugin deregisters",
        ),
        (
            ("--set", "mock.enabled=true", "--set", "mock.root=/var/lib/kubelet/mock"),
            "mock.root is /var/lib/kubelet/mock, inside /var/lib/kubelet.\n",
        ),
        (
            ("--set", "mock.enabled=true", "--set", "mock.root=/dev/mock"),
            "mock.root is /dev/mock, inside /dev.\n",
        ),
        (
            ("--set", "metrics.port=51515"),
            "metrics.port and livenessProbe.port are both 51515",
        ),
    ],
    ids=[
        "service-account-without-name",
        "short-grace-period",
        "mock-in-kubelet-dir",
        "mock-in-dev",
        "port-clash",
    ],
)
def test_validation_fails_with_what_to_do(
    chart: Chart, args: tuple[str, ...], message: str
) -> None:
    stderr = chart.template_error(*args)
    assert "templates/validation.yaml" in stderr
    assert message in stderr, stderr
    assert "--set " in stderr  # every message says which value to set instead


def test_mock_root_only_needs_its_own_directory(chart: Chart) -> None:
    """/var/lib/kubelet-mock is not inside /var/lib/kubelet: prefixes match whole components."""
    objects = chart.template(
        "--set", "mock.enabled=true", "--set", "mock.root=/var/lib/kubelet-mock"
    )
    assert env_of(plugin_container(objects))["DCU_DRA_ROOT"] == "/var/lib/kubelet-mock"


# --- documentation ------------------------------------------------------------------------


def documented_keys(schema: Mapping[str, Any], prefix: str = "") -> Iterator[str]:
    """Dotted keys of the values: into objects with fixed keys, not into free-form blocks."""
    for key, sub in schema["properties"].items():
        path = f"{prefix}{key}"
        if key == "global":
            continue
        nested = sub.get("properties")
        if nested and sub.get("additionalProperties") is False and path not in FREE_FORM:
            yield from documented_keys(sub, f"{path}.")
        else:
            yield path


#: Values documented as one block: their inner keys are Kubernetes' or the mock config's.
FREE_FORM = frozenset({"mock.config", "resources", "updateStrategy"})


def test_values_yaml_comments_every_key() -> None:
    lines = (CHART_DIR / "values.yaml").read_text().splitlines()
    for dotted in documented_keys(SCHEMA):
        indent = 0
        start = 0
        for part in dotted.split("."):
            pattern = re.compile(rf"^{' ' * indent}{re.escape(part)}:")
            start = next(i for i in range(start, len(lines)) if pattern.match(lines[i]))
            indent += 2
        previous = lines[start - 1].strip()
        assert previous.startswith("#"), f"values.yaml: {dotted} has no comment above it"


def test_readme_documents_every_value() -> None:
    readme = (CHART_DIR / "README.md").read_text()
    rows = set(re.findall(r"^\| `([^`]+)` \|", readme, flags=re.MULTILINE))
    assert rows == set(documented_keys(SCHEMA))
    assert "helm upgrade --install dcu-dra deploy/helm/dcu-dra-driver" in readme
    assert "--set mock.enabled=true" in readme


def test_schema_is_draft_07_and_closed() -> None:
    assert SCHEMA["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert SCHEMA["additionalProperties"] is False
    assert set(SCHEMA["properties"]) - {"global"} == set(VALUES)


def test_install_notes_say_how_to_check_the_driver(chart: Chart) -> None:
    done = chart.run(
        "install", RELEASE, str(CHART_DIR), "--namespace", NAMESPACE, "--dry-run=client"
    )
    assert done.returncode == 0, done.stderr
    notes = done.stdout[done.stdout.index("NOTES:") :]
    assert f"kubectl get resourceslices --field-selector spec.driver={DRIVER}" in notes
    assert "kubectl label node <node> hygon.com/dcu.present=true" in notes


# --- the real API server ------------------------------------------------------------------


def assert_accepted_as_written(sent: Any, stored: Any, where: str) -> None:
    """Every field we sent comes back unchanged (the server may only add defaults)."""
    if isinstance(sent, Mapping):
        assert isinstance(stored, Mapping), where
        for key, value in sent.items():
            assert key in stored, f"{where}.{key} was dropped"
            assert_accepted_as_written(value, stored[key], f"{where}.{key}")
    elif isinstance(sent, list):
        assert isinstance(stored, list) and len(stored) == len(sent), where
        for index, (mine, theirs) in enumerate(zip(sent, stored, strict=True)):
            assert_accepted_as_written(mine, theirs, f"{where}[{index}]")
    else:
        assert stored == sent, f"{where}: sent {sent!r}, stored {stored!r}"


def without_volume(entries: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    """Volumes or volume mounts, without those of volume ``name``."""
    return [entry for entry in entries if entry["name"] != name]


#: The value of the built-in PriorityClass system-node-critical.
SYSTEM_NODE_CRITICAL = 2000001000


def wait_for_type_checking(kube: KubeClient, policy: Mapping[str, Any]) -> dict[str, Any]:
    path = paths.object_path(policy)

    def checked() -> dict[str, Any] | None:
        stored = kube.get(path)
        status = stored.get("status") or {}
        done = status.get("observedGeneration") == stored["metadata"]["generation"]
        return status if done else None

    return wait_for(checked, timeout_s=30.0, description=f"type checking of {path}")


def test_accepted_as_written_flags_dropped_and_changed_fields() -> None:
    """Guards the e2e check: a field the server drops or rewrites must fail it."""
    sent = {"spec": {"a": 1, "b": [{"c": "x"}]}}
    assert_accepted_as_written(sent, {"spec": {"a": 1, "b": [{"c": "x", "d": 2}], "e": 3}}, "o")
    with pytest.raises(AssertionError, match=r"^o\.spec\.a was dropped\n"):
        assert_accepted_as_written(sent, {"spec": {"b": [{"c": "x"}]}}, "o")
    with pytest.raises(AssertionError, match=r"^o\.spec\.b\[0\]\.c: sent 'x', stored 'y'\n"):
        assert_accepted_as_written(sent, {"spec": {"a": 1, "b": [{"c": "y"}]}}, "o")


@pytest.mark.e2e
@pytest.mark.parametrize("name", ["default", "mock"])
def test_control_plane_accepts_every_rendered_object(
    chart: Chart, control_plane: ControlPlane, name: str
) -> None:
    """Create the whole render in a fresh namespace, under names no other test uses.

    tests/e2e/ installs deploy/'s objects under their fixed names (and may keep them), so the
    release, the driver (hence the DeviceClasses and policies) and the extended resource are
    unique here, and the node selector is a label only this test's Node has. That Node is a
    bare API object (no kubelet runs its pods): it makes the DaemonSet controller create the
    plugin pod, which must pass admission as the DaemonSet describes it (priority class
    system-node-critical outside kube-system, hostPath volumes, capabilities).
    """
    kube = control_plane.client
    release = unique_name("helm")
    driver = f"{release}.dcu.example.com"
    node_label = f"e2e.dcu.example.com/{release}"
    objects = chart.template(
        *RENDERS[name],
        "--set",
        f"driverName={driver}",
        "--set",
        f"deviceClasses.extendedResourceName=example.com/{release}",
        # null drops the default label: only this test's Node may match.
        "--set-json",
        "nodeSelector=" + json.dumps({"hygon.com/dcu.present": None, node_label: "true"}),
        # The Node has no kubelet, so it gets the not-ready taints; tolerate them.
        "--set-json",
        'tolerations=[{"operator": "Exists"}]',
        release=release,
        namespace=release,
    )
    assert pod_spec(objects)["nodeSelector"] == {node_label: "true"}
    fixed_names = {doc.name for doc in DEPLOY_OBJECTS}
    assert not fixed_names & {obj["metadata"]["name"] for obj in objects}
    create_namespace(kube, release)
    created: list[dict[str, Any]] = []
    try:
        for obj in objects:
            created.append(kube.create(paths.collection_path(obj), obj))
        for obj in objects:
            where = f"{obj['kind']}/{obj['metadata']['name']}"
            assert_accepted_as_written(obj, kube.get(paths.object_path(obj)), where)
        for policy in (obj for obj in objects if obj["kind"] == "ValidatingAdmissionPolicy"):
            status = wait_for_type_checking(kube, policy)
            warnings = (status.get("typeChecking") or {}).get("expressionWarnings")
            assert warnings is None, (policy["metadata"]["name"], warnings)
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": release, "labels": {node_label: "true"}},
        }
        created.append(kube.create(paths.nodes(), node))
        pod = wait_for(
            lambda: next(iter(kube.list(paths.pods(release)).get("items") or []), None),
            timeout_s=30.0,
            description=f"the DaemonSet's pod for node {release}",
            details=lambda: [
                (e.get("reason"), e.get("message"))
                for e in kube.list(paths.resource_path("v1", "events", namespace=release)).get(
                    "items"
                )
                or []
            ],
        )
        assert pod["spec"]["priority"] == SYSTEM_NODE_CRITICAL
        # Admission adds the projected ServiceAccount token (bound to the pod and its node,
        # which the ResourceSlices policy relies on); everything else is the template's.
        [token] = [v for v in pod["spec"]["volumes"] if v["name"].startswith("kube-api-access-")]
        assert any("serviceAccountToken" in s for s in token["projected"]["sources"])
        template = find(objects, "DaemonSet")["spec"]["template"]["spec"]
        assert_accepted_as_written(
            template["volumes"], without_volume(pod["spec"]["volumes"], token["name"]), "pod"
        )
        for field in ("initContainers", "containers"):
            pairs = zip(template.get(field, []), pod["spec"].get(field, []), strict=True)
            for mine, theirs in pairs:
                mounts = without_volume(theirs["volumeMounts"], token["name"])
                where = f"pod {field} {mine['name']}"
                assert_accepted_as_written(mine, {**theirs, "volumeMounts": mounts}, where)
    finally:
        for obj in reversed(created):
            if not paths.resource_type(obj).namespaced:
                try:
                    kube.delete(paths.object_path(obj))
                except ApiError as exc:  # cleanup must not hide the test's own result
                    print(f"cleanup of {obj['kind']} {obj['metadata']['name']} failed: {exc}")
        delete_namespace(kube, release)
