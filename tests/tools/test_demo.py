"""``make demo`` (python -m dra_driver.tools.demo): the result table, verify in the containers, its
rendering, and failing well.

The table rows join three real sources; here they are built from the real slice builder, real
vdev configs and the fake kubelet's own records. Verify runs from a real pyz in containers laid
out from claims the real plugin prepared. The whole demo runs in tests/e2e/test_demo_e2e.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from dra_driver import DRIVER_NAME
from dra_driver.cluster.slices import Sharing, build_pool
from dra_driver.node.devices import discover
from dra_driver.testing.fakekubelet import PreparedClaim, PreparedDevice
from dra_driver.tools.demo.console import MARKER, DemoError, prepare_build_dir
from dra_driver.tools.demo.containers import (
    ContainerTarget,
    VerifyOutcome,
    failure_message,
    format_outcomes,
    lay_out,
    outcome_of,
    run_verify,
    summarize,
)
from dra_driver.tools.demo.table import (
    HEADER,
    ShareRow,
    build_rows,
    format_cus,
    format_json,
    format_memory,
    format_pods,
    format_table,
)
from dra_driver.tools.pyz import build_pyz
from dra_driver.vdcu.allocator import CuMask
from dra_driver.vdcu.vdev import VdevConfig
from tests.testing.test_container import PLAIN, prepare_claim

NODE = "dcu-node-1"
Z100_A = "dcu-0000-3b-00-0"
Z100_B = "dcu-0000-5e-00-0"
K100 = "dcu-0000-af-00-0"
MIB = 1024 * 1024
KIND = f"k8s.{DRIVER_NAME}/dcu"


def uid() -> str:
    return str(uuid.uuid4())


def node_slice(mock_root: Path, sharing: Sharing = Sharing.CONSUMABLE) -> dict[str, Any]:
    """The ResourceSlice the plugin publishes for the default mock node, built by its code."""
    pool = build_pool(discover(mock_root), driver=DRIVER_NAME, node_name=NODE, sharing=sharing)
    return {
        "spec": {
            "driver": DRIVER_NAME,
            "nodeName": NODE,
            "pool": {"name": NODE, "generation": 1, "resourceSliceCount": 1},
            "devices": list(pool.slices[0]),
        }
    }


def result(device: str, *, consumed: dict[str, str] | None, share_id: str | None) -> dict[str, Any]:
    entry: dict[str, Any] = {"request": "dcu", "driver": DRIVER_NAME, "pool": NODE}
    entry["device"] = device
    if share_id is not None:
        entry["shareID"] = share_id
    if consumed is not None:
        entry["consumedCapacity"] = consumed
    return entry


def claim(
    name: str, claim_uid: str, results: list[dict[str, Any]], pods: list[tuple[str, str]]
) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "ns", "name": name, "uid": claim_uid},
        "status": {
            "allocation": {"devices": {"results": results}},
            "reservedFor": [{"resource": "pods", "name": n, "uid": u} for n, u in pods],
        },
    }


def pod(name: str, pod_uid: str, node: str = NODE) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "ns", "name": name, "uid": pod_uid},
        "spec": {"nodeName": node},
    }


def vdev(pci_bus_id: str, cus: range, *, vdev_id: int = 0, pipe_id: int = 0) -> VdevConfig:
    return VdevConfig(
        pci_bus_id=pci_bus_id,
        mask=CuMask.from_cus(cus),
        memory_mib=8188,
        device_id=0,
        vdev_id=vdev_id,
        pipe_id=pipe_id,
    )


def prepared(claim_uid: str, *devices: tuple[str, str | None]) -> PreparedClaim:
    """What the fake kubelet records after the plugin prepared ``devices`` (device, shareID)."""
    return PreparedClaim(
        namespace="ns",
        name="c",
        uid=claim_uid,
        drivers=(DRIVER_NAME,),
        devices=tuple(
            PreparedDevice(
                driver=DRIVER_NAME,
                pool=NODE,
                device=device,
                request_names=("dcu",),
                cdi_device_ids=(cdi_id(claim_uid, device, share_id),),
                share_id=share_id,
            )
            for device, share_id in devices
        ),
        pod_uids=frozenset(),
    )


def cdi_id(claim_uid: str, device: str, share_id: str | None) -> str:
    return f"{KIND}={claim_uid}-{device}" + (f"-{share_id}" if share_id else "")


# --- build_rows ---------------------------------------------------------------------------


def test_rows_join_allocation_vdev_file_and_cdi_ids(mock_root: Path) -> None:
    quarter, shared, whole = uid(), uid(), uid()
    s_quarter, s_shared, s_whole = uid(), uid(), uid()
    p_quarter, p_a, p_b, p_whole = uid(), uid(), uid(), uid()
    share = {"cores": "15", "memory": "8188Mi", "vdevices": "1"}
    rows = build_rows(
        claims=[
            claim(
                "quarter",
                quarter,
                [result(Z100_A, consumed=share, share_id=s_quarter)],
                [("q", p_quarter)],
            ),
            claim(
                "shared",
                shared,
                [result(Z100_A, consumed={"cores": "30", "memory": "16Gi"}, share_id=s_shared)],
                [("b", p_b), ("a", p_a)],
            ),
            claim(
                "whole",
                whole,
                [result(K100, consumed={"cores": "120", "memory": "64Gi"}, share_id=s_whole)],
                [("w", p_whole)],
            ),
        ],
        pods=[pod("q", p_quarter), pod("a", p_a), pod("b", p_b), pod("w", p_whole)],
        slices=[node_slice(mock_root)],
        vdevs={
            quarter: [vdev("0000:3b:00.0", range(0, 15))],
            shared: [vdev("0000:3b:00.0", range(15, 45), pipe_id=1)],
        },
        prepared={
            quarter: prepared(quarter, (Z100_A, s_quarter)),
            # The real kubelet's checkpoint lists a shared claim's device once per pod.
            shared: prepared(shared, (Z100_A, s_shared), (Z100_A, s_shared)),
            whole: prepared(whole, (K100, s_whole)),
        },
    )
    assert [(r.pods, r.device, r.cu_count, r.memory_bytes) for r in rows] == [
        (("ns/q",), Z100_A, 15, 8188 * MIB),
        (("ns/a", "ns/b"), Z100_A, 30, 16384 * MIB),
        (("ns/w",), K100, 120, 65536 * MIB),
    ]
    assert [r.vdev.mask.cus()[0] if r.vdev else None for r in rows] == [0, 15, None]
    assert [r.cdi_ids for r in rows] == [
        (cdi_id(quarter, Z100_A, s_quarter),),
        (cdi_id(shared, Z100_A, s_shared),),
        (cdi_id(whole, K100, s_whole),),
    ]
    assert {r.node for r in rows} == {NODE}
    assert [r.is_whole_card for r in rows] == [False, False, True]
    assert [r.claim for r in rows] == ["ns/quarter", "ns/shared", "ns/whole"]


def test_exclusive_allocation_takes_the_whole_cards_size_from_the_slice(mock_root: Path) -> None:
    """Without consumable capacity the allocation has no consumedCapacity and no shareID."""
    whole = uid()
    (row,) = build_rows(
        claims=[claim("w", whole, [result(Z100_B, consumed=None, share_id=None)], [])],
        pods=[],
        slices=[node_slice(mock_root, Sharing.EXCLUSIVE)],
        vdevs={},
        prepared={whole: prepared(whole, (Z100_B, None))},
    )
    assert (row.cu_count, row.memory_bytes, row.vdev) == (60, 32752 * MIB, None)
    assert row.cdi_ids == (cdi_id(whole, Z100_B, None),)
    assert row.pods == () and row.node == NODE  # no pod: the pool names the node


def test_two_shares_of_one_claim_pair_with_vdev_files_by_card_then_order(
    mock_root: Path,
) -> None:
    two = uid()
    ids = [uid(), uid(), uid()]
    consumed = {"cores": "10", "memory": "4Gi"}
    rows = build_rows(
        claims=[
            claim(
                "two",
                two,
                [
                    result(K100, consumed=consumed, share_id=ids[0]),
                    result(Z100_A, consumed=consumed, share_id=ids[1]),
                    result(Z100_A, consumed=consumed, share_id=ids[2]),
                ],
                [],
            )
        ],
        pods=[],
        slices=[node_slice(mock_root)],
        vdevs={
            two: [
                vdev("0000:af:00.0", range(0, 10), vdev_id=2),
                vdev("0000:3b:00.0", range(10, 20), vdev_id=1, pipe_id=1),
                vdev("0000:3b:00.0", range(0, 10), vdev_id=0),
            ]
        },
        prepared={two: prepared(two, (K100, ids[0]), (Z100_A, ids[1]), (Z100_A, ids[2]))},
    )
    vdev_of_share = {
        share_id: row.vdev.vdev_id if row.vdev else None
        for row in rows
        for share_id in ids
        if row.cdi_ids and row.cdi_ids[0].endswith(share_id)
    }
    assert vdev_of_share == {ids[0]: 2, ids[1]: 0, ids[2]: 1}
    assert [r.device for r in rows] == [Z100_A, Z100_A, K100]


def test_unallocated_claims_and_other_drivers_are_skipped_and_unprepared_has_no_cdi_ids(
    mock_root: Path,
) -> None:
    pending, other, fresh = uid(), uid(), uid()
    foreign = result(Z100_A, consumed=None, share_id=None) | {"driver": "gpu.example.com"}
    rows = build_rows(
        claims=[
            {"metadata": {"namespace": "ns", "name": "p", "uid": pending}, "status": {}},
            claim("other", other, [foreign], []),
            claim("fresh", fresh, [result(K100, consumed=None, share_id=None)], []),
        ],
        pods=[],
        slices=[node_slice(mock_root)],
        vdevs={},
        prepared={},
    )
    assert [(r.claim_uid, r.cdi_ids) for r in rows] == [(fresh, ())]


# --- rendering ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cus", "text"),
    [
        (range(0, 15), "0-14"),
        ([3], "3"),
        ([0, 1, 2, 8, 10, 11], "0-2,8,10-11"),
        (range(60, 120), "60-119"),
    ],
    ids=["one-range", "one-cu", "gaps", "second-word"],
)
def test_cu_masks_render_as_ranges(cus: list[int] | range, text: str) -> None:
    assert format_cus(CuMask.from_cus(cus)) == text


def test_memory_renders_in_mib_the_unit_of_vdev_files() -> None:
    assert format_memory(8188 * MIB) == "8188Mi"
    assert format_memory(16 * 1024 * MIB) == "16384Mi"
    assert format_memory(1000) == "1000"


def test_pods_of_a_shared_claim_render_in_one_cell() -> None:
    assert format_pods(("ns/a", "ns/b")) == "ns/a,b"
    assert format_pods(("ns/a",)) == "ns/a"
    assert format_pods(()) == "-"


def test_table_aligns_columns_and_marks_whole_cards() -> None:
    share = ShareRow(
        claim="ns/q",
        claim_uid="u1",
        pods=("ns/q",),
        node=NODE,
        device=Z100_A,
        cu_count=15,
        memory_bytes=8188 * MIB,
        vdev=vdev("0000:3b:00.0", range(0, 15), pipe_id=3),
        cdi_ids=("k=a", "k=b"),
    )
    whole = ShareRow(
        claim="ns/w",
        claim_uid="u2",
        pods=("ns/w",),
        node=NODE,
        device=K100,
        cu_count=120,
        memory_bytes=65536 * MIB,
        vdev=None,
        cdi_ids=(),
    )
    header, first, second = format_table([share, whole]).splitlines()
    starts = [header.index(title) for title in HEADER]
    assert starts == sorted(starts)

    def cells(line: str) -> list[str]:
        return [line[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]

    assert cells(first) == [
        "ns/q",
        NODE,
        Z100_A,
        "15",
        "8188Mi",
        "0-14",
        "3",
        "vdev0.conf",
        "k=a,k=b",
    ]
    assert cells(second) == ["ns/w", NODE, K100, "120", "65536Mi", "whole card", "-", "-", "-"]


def test_json_keeps_flat_objects_on_one_line_and_reads_back_unchanged() -> None:
    spec = {
        "cdiVersion": "0.5.0",
        "devices": [{"name": "d", "containerEdits": {"env": ["A=1", "B=2"]}}],
        "containerEdits": {
            "mounts": [{"hostPath": "/h", "containerPath": "/c", "options": ["ro"]}],
        },
        "empty": {},
    }
    text = format_json(spec)
    assert json.loads(text) == spec
    assert '      "containerEdits": {"env": ["A=1", "B=2"]}' in text.splitlines()
    assert '      {"hostPath": "/h", "containerPath": "/c", "options": ["ro"]}' in text.splitlines()
    assert format_json([1, "x"]) == '[1, "x"]'


# --- verify in the containers ---------------------------------------------------------


@pytest.fixture(scope="module")
def pyz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_pyz(tmp_path_factory.mktemp("dist") / "dcu-dra.pyz", include_bytecode=True)


def containers_of(
    mock_root: Path, base: Path, pods: dict[str, int | None]
) -> list[ContainerTarget]:
    """One prepared claim per pod (``cores`` CUs of a Z100, or a whole K100), laid out."""
    targets = []
    for pod, cores in pods.items():
        device = "dcu-0000-af-00-0" if cores is None else "dcu-0000-3b-00-0"
        cdi_ids = prepare_claim(mock_root, base, device, cores=cores)
        targets += lay_out(
            base / "containers",
            pod=pod,
            containers={"ctr": cdi_ids},
            spec_dirs=[base / "cdi"],
            sys_dir=mock_root / "sys",
            allow_plain_files=PLAIN,
        )
    return targets


def test_verify_runs_in_every_container_and_reports_what_each_got(
    pyz: Path, mock_root: Path, tmp_path: Path
) -> None:
    share, whole = containers_of(mock_root, tmp_path, {"ns/share": 15, "ns/whole": None})
    outcomes, report = run_verify(pyz, [share, whole], text_of=share)
    assert outcomes == [
        VerifyOutcome(
            label="ns/share", verdict="ok", found="vDCU 15/60 CUs (0-14), 4096 MiB of 0000:3b:00.0"
        ),
        VerifyOutcome(label="ns/whole", verdict="ok", found="whole card 0000:af:00.0 (120 CUs)"),
    ]
    assert failure_message(outcomes) is None
    assert report is not None
    # Run inside the view with relative paths: it reads like a report from the container.
    assert report.splitlines()[0] == "vDCU container: 1 vdev file(s) in etc/vdev/docker"
    assert "OK: dev/kfd present (" in report
    assert report.splitlines()[-1].endswith(" checks passed")


def test_a_broken_container_fails_with_its_first_failing_check(
    pyz: Path, mock_root: Path, tmp_path: Path
) -> None:
    (share,) = containers_of(mock_root, tmp_path, {"ns/share": 15})
    share.view.at("/dev/kfd").unlink()  # the runtime did not inject it
    (outcome,), report = run_verify(pyz, [share])
    assert report is None
    assert (outcome.verdict, outcome.ok) == ("failed: device-node", False)
    assert outcome.found == "vDCU 15/60 CUs (0-14), 4096 MiB of 0000:3b:00.0"
    assert outcome.problem is not None and outcome.problem.startswith(
        "dev/kfd (the compute interface) is missing"
    )
    message = failure_message([outcome])
    assert message is not None
    assert message.startswith(
        "dcu-dra verify found problems in 1 of 1 containers: ns/share; first, in ns/share: "
        "device-node: dev/kfd (the compute interface) is missing"
    )


def test_pods_with_several_dcu_containers_get_one_line_each(
    mock_root: Path, tmp_path: Path
) -> None:
    cdi_ids = prepare_claim(mock_root, tmp_path, "dcu-0000-3b-00-0", cores=10)
    targets = lay_out(
        tmp_path / "containers",
        pod="ns/p",
        containers={"b": cdi_ids, "a": cdi_ids, "sidecar": []},
        spec_dirs=[tmp_path / "cdi"],
        sys_dir=mock_root / "sys",
        allow_plain_files=PLAIN,
    )
    assert [t.label for t in targets] == ["ns/p/a", "ns/p/b"]  # no DCU, nothing to verify
    assert targets[0].view.root == tmp_path / "containers" / "ns/p" / "a"


@pytest.mark.parametrize(
    ("returncode", "stdout", "stderr", "found"),
    [
        (None, "", "", "verify did not finish in 30 s"),
        (
            1,
            "",
            "Traceback...\nImportError: boom\n",
            "verify exited with code 1: ImportError: boom",
        ),
        (2, "", "", "verify exited with code 2: (no output)"),
    ],
    ids=["timeout", "crash", "silent"],
)
def test_a_run_without_a_report_fails(
    returncode: int | None, stdout: str, stderr: str, found: str
) -> None:
    outcome = outcome_of("ns/p", returncode, stdout, stderr)
    assert (outcome.verdict, outcome.found, outcome.ok) == ("failed: no report", found, False)


def test_a_report_without_failures_but_a_failing_exit_code_is_not_ok() -> None:
    document = {"mode": "whole-card", "cards": [], "deviceNodes": [], "checks": []}
    outcome = outcome_of("ns/p", 1, json.dumps(document), "")
    assert (outcome.verdict, outcome.problem) == ("failed: exit code", "1")


@pytest.mark.parametrize(
    ("document", "summary"),
    [
        (
            {
                "mode": "vdcu",
                "cards": [{"pciBusID": "0000:3b:00.0", "computeUnits": None}],
                "vdevFiles": [
                    {
                        "file": "vdev0.conf",
                        "parsed": True,
                        "pciBusID": "0000:3b:00.0",
                        "computeUnits": 10,
                        "cus": "0-9",
                        "memoryMiB": 1024,
                    },
                    {"file": "vdev1.conf", "parsed": False, "pciBusID": None},
                ],
            },
            "vDCU 10 CUs (0-9), 1024 MiB of 0000:3b:00.0; vdev1.conf rejected by the parser",
        ),
        (
            {
                "mode": "whole-card",
                "cards": [],
                "deviceNodes": [
                    {"path": "dev/kfd", "type": "char"},
                    {"path": "dev/dri/renderD129", "type": "char"},
                    {"path": "dev/dri/renderD130", "type": "missing"},
                ],
            },
            "whole card renderD129",
        ),
        ({"mode": "whole-card", "cards": [], "deviceNodes": []}, "no DCU"),
    ],
    ids=["card-size-unknown-and-a-rejected-file", "whole-card-without-sysfs", "nothing"],
)
def test_summary_says_what_the_container_got(document: dict[str, Any], summary: str) -> None:
    assert summarize(document) == summary


def test_outcomes_align_and_a_failure_ends_with_its_problem() -> None:
    text = format_outcomes(
        [
            VerifyOutcome(label="ns/long-name", verdict="ok", found="whole card x"),
            VerifyOutcome(
                label="ns/b", verdict="failed: overlap", found="vDCU y", problem="masks overlap"
            ),
        ]
    )
    assert text.splitlines() == [
        "POD           VERIFY           WHAT VERIFY FOUND",
        "ns/long-name  ok               whole card x",
        "ns/b          failed: overlap  vDCU y; masks overlap",
    ]


# --- the build dir ------------------------------------------------------------------------


def test_build_dir_of_an_earlier_run_is_wiped(tmp_path: Path) -> None:
    build = tmp_path / "demo"
    prepare_build_dir(build, is_default=False)
    (build / "left-over").write_text("x")
    prepare_build_dir(build, is_default=False)
    assert sorted(p.name for p in build.iterdir()) == [MARKER]


def test_build_dir_not_made_by_the_demo_is_never_wiped(tmp_path: Path) -> None:
    (tmp_path / "precious").write_text("x")
    with pytest.raises(DemoError, match=r"^refusing to wipe .*: it is not empty and was not made"):
        prepare_build_dir(tmp_path, is_default=False)
    assert (tmp_path / "precious").read_text() == "x"


# --- failing well -------------------------------------------------------------------------


def test_missing_control_plane_is_one_line_and_exit_1(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "dra_driver.tools.demo", "--build-dir", str(tmp_path / "b")],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env={"DCU_DRA_CONTROLPLANE": str(tmp_path / "no-such-binary"), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"demo failed: starting the control plane: {tmp_path}/no-such-binary does not exist: "
        "run `make controlplane` first (builds the local etcd/kube-apiserver/scheduler/"
        "controller-manager)"
    ]
    assert "Traceback" not in done.stdout + done.stderr
    assert "Traceback" in (tmp_path / "b" / "demo.log").read_text()  # the details go to the log
