"""``make demo`` end to end: ``python -m dra_driver.tools.demo`` as a subprocess, as make runs it.

The demo starts its own control plane (it cannot share the session's), two nodes with the real
plugin, and every pod of deploy/examples/. What its table must show is derived from the example
files themselves (capacity requests, CEL model selectors), never written down here.

Each test runs in both modes: ``fake`` (``--fake-nodes``: fake kubelets, containers laid out
by the CDI library) and ``real`` (containerd, runc and the real kubelet; root only, as on CI),
which must also leave the host as it found it.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dra_driver import DRIVER_NAME
from dra_driver.cdi import validate as cdi_validate
from dra_driver.cluster.kube import KubeClient, paths
from dra_driver.node.devices import DcuDevice, discover
from dra_driver.node.mock import create_mock_node
from dra_driver.testing.cluster import CONTROLPLANE_BINARY, REPO_ROOT, is_pod_running, load_yaml
from dra_driver.testing.identity import PLUGIN_NAMESPACE
from dra_driver.testing.realnode.hoststate import HostView
from dra_driver.testing.waiting import wait_for
from dra_driver.tools.demo.session import KUBECTL
from dra_driver.tools.demo.table import HEADER
from dra_driver.util.quantity import parse_integral_quantity
from dra_driver.vdcu.vdev import parse_vdev
from tests.conftest import CDI_SCHEMA_DIR

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

EXAMPLES = sorted((REPO_ROOT / "deploy" / "examples").glob("*.yaml"))
DEMO = [sys.executable, "-m", "dra_driver.tools.demo"]
UUID = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
#: The whole run takes ~15 s (fake nodes) or ~50 s (real ones) on a 2-core machine.
DEMO_BUDGET_S = {"fake": 60.0, "real": 120.0}
FAKE_NODES = ("dcu-node-1", "dcu-node-2")
REAL_NODES = ("127.0.0.2", "127.0.0.3")
MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Expected:
    """What one example claim asks for."""

    cores: int | None
    """None: no capacity requests, so the whole card."""
    memory_bytes: int | None
    model: str | None
    """The model a CEL selector pins the request to, if any."""


def example_objects(kind: str) -> list[dict[str, Any]]:
    return [obj for path in EXAMPLES for obj in load_yaml(path.read_text()) if obj["kind"] == kind]


def expected_rows() -> dict[str, Expected]:
    """By table POD cell (``ns/pod`` or ``ns/a,b`` for a shared claim): what the claim asks for."""

    def key(obj: dict[str, Any]) -> str:
        return f"{obj['metadata']['namespace']}/{obj['metadata']['name']}"

    templates = {
        key(t): t["spec"]["spec"]["devices"]["requests"]
        for t in example_objects("ResourceClaimTemplate")
    }
    claims = {key(c): c["spec"]["devices"]["requests"] for c in example_objects("ResourceClaim")}
    claim_pods: dict[str, list[str]] = {}
    expected: dict[str, Expected] = {}
    for pod in example_objects("Pod"):
        namespace = pod["metadata"]["namespace"]
        for entry in pod["spec"].get("resourceClaims") or []:
            if "resourceClaimName" in entry:  # shared: one row for all its pods
                claim_pods.setdefault(f"{namespace}/{entry['resourceClaimName']}", []).append(
                    key(pod)
                )
            else:  # a claim of its own, from the template
                (request,) = templates[f"{namespace}/{entry['resourceClaimTemplateName']}"]
                expected[key(pod)] = describe(request)
        limits = pod["spec"]["containers"][0].get("resources", {}).get("limits") or {}
        if "hygon.com/dcu" in limits:  # the scheduler's claim for the extended resource
            expected[key(pod)] = Expected(None, None, None)
    for claim, pods in claim_pods.items():
        (request,) = claims[claim]
        expected[cell(pods)] = describe(request)
    return expected


def describe(request: dict[str, Any]) -> Expected:
    exactly = request["exactly"]
    capacity = (exactly.get("capacity") or {}).get("requests") or {}
    model = None
    for selector in exactly.get("selectors") or []:
        found = re.search(r'\.model == "([^"]+)"', selector["cel"]["expression"])
        model = found[1] if found else model
    if not capacity:
        return Expected(None, None, model)
    return Expected(int(capacity["cores"]), parse_integral_quantity(str(capacity["memory"])), model)


def cell(pods: list[str]) -> str:
    namespace = pods[0].partition("/")[0]
    return f"{namespace}/" + ",".join(sorted(p.partition("/")[2] for p in pods))


def parse_table(lines: list[str]) -> list[dict[str, str]]:
    """The rows of the result table, by header title, split at the header's column starts."""
    start = next(i for i, line in enumerate(lines) if line.startswith("POD ") and "CDI IDS" in line)
    header = lines[start]
    starts = [header.index(title) for title in HEADER]
    rows = []
    for line in lines[start + 1 :]:
        if line.startswith("==>"):
            break
        cells = [line[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
        rows.append(dict(zip(HEADER, cells, strict=True)))
    return rows


def parse_cus(text: str) -> set[int]:
    cus: set[int] = set()
    for part in text.split(","):
        first, _, last = part.partition("-")
        cus.update(range(int(first), int(last or first) + 1))
    return cus


def section(lines: list[str], title: str) -> tuple[str, list[str]]:
    """The path in a ``==> <title> (<path>):`` line and the lines up to the next ``==>``."""
    index = next(i for i, line in enumerate(lines) if line.startswith(f"==> {title}"))
    path = re.fullmatch(r".*\((.+)\):", lines[index])
    assert path is not None, lines[index]
    body = []
    for line in lines[index + 1 :]:
        if line.startswith("==>"):
            break
        body.append(line)
    return path[1], body


def verify_rows(lines: list[str]) -> dict[str, tuple[str, str]]:
    """The verify table after the result table: ``POD -> (VERIFY, WHAT VERIFY FOUND)``."""
    _, body = section(lines, "dcu-dra verify inside each example pod's container")
    header, *rows = body
    found_at = header.index("WHAT VERIFY FOUND")
    assert header.split() == ["POD", "VERIFY", "WHAT", "VERIFY", "FOUND"], header
    return {
        row.split()[0]: (row[len(row.split()[0]) : found_at].strip(), row[found_at:])
        for row in rows
    }


@pytest.fixture(params=["fake", "real"])
def mode(request: pytest.FixtureRequest) -> str:
    """``fake`` or ``real`` nodes; ``real`` only where the machine can run them."""
    if request.param == "real":
        from dra_driver.testing.realnode import unavailable_reason

        reason = unavailable_reason()
        if reason is not None:
            pytest.skip(reason)
    return str(request.param)


def mode_args(mode: str) -> list[str]:
    return ["--fake-nodes"] if mode == "fake" else []


@pytest.fixture
def host_state(mode: str) -> Iterator[None]:
    """A real-node demo must leave the host exactly as it found it."""
    if mode != "real":
        yield
        return
    before = HostView.now()
    yield
    assert before.differences(HostView.now()) == []


@pytest.fixture
def build_dir() -> Iterator[Path]:
    """Short (the plugins' sockets live under it) and apart from a developer's build/demo."""
    if not CONTROLPLANE_BINARY.exists():
        pytest.fail(f"{CONTROLPLANE_BINARY} does not exist: run `make controlplane`", pytrace=False)
    path = Path(tempfile.mkdtemp(prefix="demo-", dir="/tmp"))
    yield path / "build"
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def mock_devices(tmp_path_factory: pytest.TempPathFactory) -> dict[str, DcuDevice]:
    """The demo nodes' DCUs by device name (the default mock node, discovered)."""
    root = tmp_path_factory.mktemp("mock") / "node"
    create_mock_node(root)
    return {device.name: device for device in discover(root).devices}


def assert_no_files_left(build_dir: Path) -> None:
    """No CDI spec or vdev file left (the real nodes' directories are removed entirely)."""
    assert sorted(build_dir.glob("dcu-node-*/cdi/*")) == []
    assert sorted(build_dir.glob(f"dcu-node-*/plugins/{DRIVER_NAME}/vdev/*")) == []
    for log in build_dir.glob("dcu-node-*/plugin.log"):
        assert "Traceback" not in log.read_text(), log


def test_demo_prepares_every_example_and_cleans_up(
    mode: str, host_state: None, build_dir: Path, mock_devices: dict[str, DcuDevice]
) -> None:
    real = mode == "real"
    done = subprocess.run(
        [*DEMO, *mode_args(mode), "--build-dir", str(build_dir)],
        capture_output=True,
        text=True,
        check=False,
        timeout=180,
        cwd=REPO_ROOT,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert done.stderr == "" and "Traceback" not in output
    lines = done.stdout.splitlines()
    assert lines[0] == (
        "==> real nodes: containerd, runc and the real kubelet (no Docker needed)"
        if real
        else "==> fake kubelets instead of real nodes: asked for with --fake-nodes"
    )
    rows = parse_table(lines)

    expected = expected_rows()
    assert sorted(row["POD"] for row in rows) == sorted(expected)
    claim_uids = set()
    for row in rows:
        want, device = expected[row["POD"]], mock_devices[row["DEVICE"]]
        assert row["NODE"] in (REAL_NODES if real else FAKE_NODES)
        if want.model is not None:
            assert device.model == want.model, row
        cdi_id = re.fullmatch(
            rf"k8s\.dcu\.hygon\.com/dcu=({UUID})-{re.escape(row['DEVICE'])}-{UUID}", row["CDI IDS"]
        )
        assert cdi_id is not None, row
        claim_uids.add(cdi_id[1])
        if want.cores is None:
            assert (row["CU MASK"], row["PIPE"], row["VDEV"]) == ("whole card", "-", "-"), row
            assert int(row["CUS"]) == device.compute_units, row
            assert parse_integral_quantity(row["MEMORY"]) == device.memory_mib * MIB, row
        else:
            assert int(row["CUS"]) == want.cores, row
            assert parse_integral_quantity(row["MEMORY"]) == want.memory_bytes, row
            assert len(parse_cus(row["CU MASK"])) == want.cores, row
            assert re.fullmatch(r"vdev[0-9]+\.conf", row["VDEV"]), row
    assert len(claim_uids) == len(rows)

    by_card: dict[tuple[str, str], list[dict[str, str]]] = {}
    for row in rows:
        by_card.setdefault((row["NODE"], row["DEVICE"]), []).append(row)
    for card, shares in by_card.items():
        if any(row["CU MASK"] == "whole card" for row in shares):
            assert len(shares) == 1, (card, shares)
            continue
        masks = [parse_cus(row["CU MASK"]) for row in shares]
        assert sum(len(m) for m in masks) == len(set().union(*masks)), (card, shares)
        pipes = [row["PIPE"] for row in shares]
        assert len(set(pipes)) == len(pipes), (card, shares)

    quarter = next(row for row in rows if row["POD"] == "dcu-quarter/quarter")
    quarter_uid = re.sub(r"^.*=", "", quarter["CDI IDS"])[:36]
    vdev_path, vdev_lines = section(lines, "the vdev file of dcu-quarter/quarter")
    assert quarter_uid in vdev_path
    config = parse_vdev("\n".join(vdev_lines) + "\n", file_name=Path(vdev_path).name)
    assert config.cu_count == int(quarter["CUS"])
    assert config.memory_mib * MIB == parse_integral_quantity(quarter["MEMORY"])

    spec_path, spec_lines = section(lines, "its per-claim CDI spec")
    assert quarter_uid in spec_path
    printed = build_dir.parent / "printed-spec.json"
    printed.write_text("\n".join(spec_lines))
    assert cdi_validate.validate_file(printed, schema_dir=CDI_SCHEMA_DIR) == []
    assert quarter["CDI IDS"].partition("=")[2] in printed.read_text()

    # verify ran from the one-file pyz inside every example pod's container, and passed.
    assert f"==> building {build_dir / 'dcu-dra.pyz'}: " in done.stdout  # outside cwd: absolute
    verdicts = verify_rows(lines)
    pods = sorted(
        f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in example_objects("Pod")
    )
    assert sorted(verdicts) == pods
    assert {verdict for verdict, _ in verdicts.values()} == {"ok"}, verdicts
    # A real container's /sys is the host's, which lists no DCU: card sizes and PCI addresses
    # of whole cards are unknown there (the render nodes are counted instead).
    of_card = "" if real else f"/{mock_devices[quarter['DEVICE']].compute_units}"
    assert verdicts["dcu-quarter/quarter"][1] == (
        f"vDCU {quarter['CUS']}{of_card} CUs ({quarter['CU MASK']}), "
        f"{parse_integral_quantity(quarter['MEMORY']) // MIB} MiB of {config.pci_bus_id}"
    )
    whole = [row for row in rows if row["CU MASK"] == "whole card"]
    whole_found = "whole card renderD" if real else "whole card 0000:"
    assert whole and all(verdicts[row["POD"]][1].startswith(whole_found) for row in whole)
    report_dir, report = section(lines, "what dcu-dra verify reports inside dcu-quarter/quarter")
    if real:
        assert report_dir == "its real container", report_dir
        assert report[0] == "vDCU container: 1 vdev file(s) in /etc/vdev/docker"
    else:
        assert report_dir.startswith("run in ") and report_dir.endswith("/dcu-quarter/quarter/ctr")
        assert report[0] == "vDCU container: 1 vdev file(s) in etc/vdev/docker"
    assert not [line for line in report if line.startswith("FAIL")]
    assert re.fullmatch(r"verify: all \d+ checks passed", report[-1]), report[-1]

    assert f"==> unprepared {len(claim_uids)} claims; no vdev or CDI files left" in lines
    assert_no_files_left(build_dir)
    if real:
        assert "; host restored (" in lines[-2], lines[-2]
    took = re.fullmatch(r"==> done in ([0-9.]+) s", lines[-1])
    assert took is not None and float(took[1]) < DEMO_BUDGET_S[mode], lines[-1]


def test_keep_leaves_the_cluster_up_until_ctrl_c(
    mode: str, host_state: None, build_dir: Path
) -> None:
    lines: list[str] = []
    with subprocess.Popen(
        [*DEMO, *mode_args(mode), "--keep", "--build-dir", str(build_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO_ROOT,
    ) as demo:
        assert demo.stdout is not None
        stdout = demo.stdout
        reader = threading.Thread(target=lambda: lines.extend(line.rstrip("\n") for line in stdout))
        reader.start()
        try:
            wait_for(
                lambda: any("press Ctrl-C" in line for line in lines) or demo.poll() is not None,
                timeout_s=120,
                description="the demo to be up and waiting",
                details=lambda: lines[-5:],
            )
            assert demo.poll() is None, lines
            kubeconfig = next(
                re.sub(r".*kubeconfig: (\S+); try:$", r"\1", line)
                for line in lines
                if "kubeconfig:" in line
            )
            kubectl = "build/bin/kubectl" if KUBECTL.is_file() else "kubectl"
            assert f"    {kubectl} --kubeconfig {kubeconfig} get resourceslices -A" in lines
            with KubeClient.from_kubeconfig(REPO_ROOT / kubeconfig) as kube:  # relative to cwd
                assert len(kube.list(paths.resource_slices())["items"]) == 2
                pods = kube.list(paths.pods())["items"]
                examples = [p for p in pods if p["metadata"]["namespace"] != PLUGIN_NAMESPACE]
                assert len(examples) == len(example_objects("Pod"))
                assert all(is_pod_running(pod) for pod in pods)
            if mode == "real":
                # The printed kubectl exec works: the API server reaches the real kubelet.
                line = next(line for line in lines if " exec -n dcu-quarter quarter " in line)
                shown = subprocess.run(
                    line.strip(),
                    shell=True,
                    cwd=REPO_ROOT,
                    capture_output=True,
                    text=True,
                    timeout=60,
                    check=False,
                )
                assert shown.returncode == 0, shown.stderr
                assert "renderD" in shown.stdout and "cu_count: 15" in shown.stdout, shown.stdout
            demo.send_signal(signal.SIGINT)  # what Ctrl-C sends to the foreground process
            code = demo.wait(timeout=60)
        finally:
            if demo.poll() is None:
                demo.kill()
                demo.wait()
            reader.join()
    output = "\n".join(lines)
    assert code == 0, output
    assert "Traceback" not in output and "demo failed" not in output
    assert "==> interrupted" in lines
    assert any(
        re.fullmatch(r"==> unprepared \d+ claims?; no vdev or CDI files left", line)
        for line in lines
    )
    assert_no_files_left(build_dir)
