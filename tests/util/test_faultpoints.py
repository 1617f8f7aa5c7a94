"""Fault points: parsing DCU_DRA_FAULTPOINT, killing on the n-th hit, and where each one is.

Arming kills the process, so everything armed runs in a child Python; the last test arms each
point of state.py in a child that prepares or unprepares a real claim on a mock node, checks
that the files on disk are exactly what the point's description says, then recovers in this
process and checks that the claim is all there or all gone.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from dra_driver import DRIVER_NAME
from dra_driver.cdi.model import spec_file_name
from dra_driver.node.devices import discover
from dra_driver.node.mock import DEFAULT_CONFIG, create_mock_node
from dra_driver.prepare.checkpoint import CHECKPOINT_FILE
from dra_driver.prepare.plugin import VDEV_SUBDIR, DcuPlugin, claim_kind
from dra_driver.util import faultpoints
from dra_driver.util.faultpoints import FAULTPOINT_ENV, POINTS, Armed, parse_spec

PACKAGE_DIR = Path(faultpoints.__file__).parents[1]
NODE = "node-a"
#: The first Z100 of the default mock node.
DEVICE = "dcu-0000-3b-00-0"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("prepare.planned", Armed("prepare.planned", 1)),
        ("prepare.planned:1", Armed("prepare.planned", 1)),
        ("unprepare.completed:12", Armed("unprepare.completed", 12)),
        (" recover.rolled_back:2\n", Armed("recover.rolled_back", 2)),
    ],
    ids=["name", "first-hit", "twelfth-hit", "whitespace"],
)
def test_parse_spec_reads_name_and_hit(value: str, expected: Armed) -> None:
    assert parse_spec(value) == expected


UNKNOWN = "unknown fault point 'prepare.plan'; known: prepare.planned, prepare.vdev_written, "
BAD_COUNT = "the hit count '0' is not a whole number >= 1; write <name> or <name>:<n>$"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("prepare.plan", rf"^DCU_DRA_FAULTPOINT='prepare.plan': {UNKNOWN}"),
        ("", r"^DCU_DRA_FAULTPOINT='': unknown fault point ''; "),
        ("prepare.planned:0", rf"^DCU_DRA_FAULTPOINT='prepare.planned:0': {BAD_COUNT}"),
        ("prepare.planned:", r"^DCU_DRA_FAULTPOINT='prepare.planned:': the hit count '' is "),
        ("prepare.planned:x", r"^DCU_DRA_FAULTPOINT='prepare.planned:x': the hit count 'x' "),
        ("prepare.planned:-1", r"^DCU_DRA_FAULTPOINT='prepare.planned:-1': the hit count '-1' "),
    ],
    ids=["unknown", "empty", "zero", "no-count", "not-a-number", "negative"],
)
def test_parse_spec_rejects_malformed_values_in_one_line(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_spec(value)


def test_reached_does_nothing_when_unarmed() -> None:
    assert FAULTPOINT_ENV not in os.environ  # this process: nothing armed
    for name in [*POINTS, "not.a.point"]:
        faultpoints.reached(name)


def run_child(code: str, spec: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a child Python with ``DCU_DRA_FAULTPOINT=spec``."""
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        env={**os.environ, FAULTPOINT_ENV: spec},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


HITS = """\
from dra_driver.util import faultpoints
for i in range(1, 6):
    faultpoints.reached("prepare.planned")  # another point: never counts
    faultpoints.reached("prepare.completed")
    print("survived hit", i, flush=True)
"""


def test_armed_point_kills_the_process_on_its_nth_hit_only() -> None:
    done = run_child(HITS, "prepare.completed:3")
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert done.stdout.splitlines() == ["survived hit 1", "survived hit 2"]
    assert done.stderr.splitlines() == [
        "fault point prepare.completed reached (hit 3): killing the process with SIGKILL "
        "(DCU_DRA_FAULTPOINT is set)"
    ]


def test_a_malformed_value_arms_nothing_and_says_so_in_one_line() -> None:
    done = run_child(HITS, "prepare.completed:zero")
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 5
    assert done.stderr.splitlines() == [
        "DCU_DRA_FAULTPOINT='prepare.completed:zero': the hit count 'zero' is not a whole "
        "number >= 1; write <name> or <name>:<n>; no fault point is armed"
    ]


def test_every_point_is_called_from_exactly_one_place() -> None:
    calls = re.compile(r"faultpoints\.reached\(\s*\"([^\"]*)\"\s*\)")
    found: dict[str, list[str]] = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        for name in calls.findall(path.read_text()):
            found.setdefault(name, []).append(path.name)
    assert sorted(found) == sorted(POINTS)
    assert {name: places for name, places in found.items() if len(places) != 1} == {}


# --- each point of state.py, in a real prepare or unprepare -----------------------------------

CHILD = """\
import json, sys
from pathlib import Path
from dra_driver.node.devices import DeviceName, discover
from dra_driver.prepare.model import AllocatedShare, Claim, ClaimRef, ClaimUID
from dra_driver.prepare.plugin import DcuPlugin

args = json.loads(sys.argv[1])
plugin = DcuPlugin(
    discover(Path(args["root"])), driver_name="dcu.hygon.com", node_name=args["node"],
    data_dir=Path(args["data"]), cdi_dir=Path(args["cdi"]), boot_id="boot-1",
)
plugin.recover()
share = AllocatedShare(
    request="dcu", pool=args["node"], device=DeviceName(args["device"]),
    share_id=args["share_id"], cores=15, memory_bytes=4096 * 2**20, vdevices=1,
)
claim = Claim(ref=ClaimRef(uid=ClaimUID(args["uid"]), namespace="ns", name="c"), shares=(share,))
for op in args["ops"]:
    if op == "prepare":
        answers = list(plugin.prepare_claims([claim]).values())
    else:
        answers = list(plugin.unprepare_claims([claim.ref]).values())
    failed = [a for a in answers if isinstance(a, Exception)]
    if failed:
        sys.exit(f"{op} failed: {failed[0]}")
print("survived", flush=True)
"""

#: Per point: the calls the child makes (it dies in the last one) and what is on disk then:
#: the claim's checkpoint state (None: absent), whether its vdev file and its CDI spec exist.
PLACES: dict[str, tuple[list[str], str | None, bool, bool]] = {
    "prepare.planned": (["prepare"], "PrepareStarted", False, False),
    "prepare.vdev_written": (["prepare"], "PrepareStarted", True, False),
    "prepare.spec_written": (["prepare"], "PrepareStarted", True, True),
    "prepare.completed": (["prepare"], "PrepareCompleted", True, True),
    "remove.spec_removed": (["prepare", "unprepare"], "PrepareCompleted", True, False),
    "unprepare.files_removed": (["prepare", "unprepare"], "PrepareCompleted", False, False),
    "unprepare.completed": (["prepare", "unprepare"], None, False, False),
    # Two children: one dies with the files written, the next in its start-up roll-back.
    "recover.rolled_back": ([], "PrepareStarted", False, False),
}


def test_places_cover_every_point() -> None:
    assert sorted(PLACES) == sorted(POINTS)


@pytest.mark.parametrize("point", list(PLACES))
def test_each_point_kills_where_it_says_and_recovery_is_all_or_nothing(
    tmp_path: Path, point: str
) -> None:
    root = tmp_path / "node"
    create_mock_node(root, DEFAULT_CONFIG)
    data_dir, cdi_dir = tmp_path / "data", tmp_path / "cdi"
    data_dir.mkdir()
    uid = str(uuid.uuid4())
    ops, state, has_vdev, has_spec = PLACES[point]
    args = {
        "root": str(root),
        "data": str(data_dir),
        "cdi": str(cdi_dir),
        "node": NODE,
        "device": DEVICE,
        "uid": uid,
        "share_id": str(uuid.uuid4()),
        "ops": ops,
    }
    if point == "recover.rolled_back":
        first = run_child(CHILD, "prepare.spec_written", json.dumps({**args, "ops": ["prepare"]}))
        assert first.returncode == -signal.SIGKILL, first.stderr
    done = run_child(CHILD, point, json.dumps(args))
    assert done.returncode == -signal.SIGKILL, done.stdout + done.stderr
    assert f"fault point {point} reached (hit 1)" in done.stderr

    vdev_file = data_dir / VDEV_SUBDIR / uid / "vdev0.conf"
    spec_file = cdi_dir / spec_file_name(claim_kind(DRIVER_NAME), uid)
    claims = json.loads((data_dir / CHECKPOINT_FILE).read_text())["claims"]
    on_disk = (
        claims[uid]["state"] if uid in claims else None,
        vdev_file.exists(),
        spec_file.exists(),
    )
    assert on_disk == (state, has_vdev, has_spec)

    # A restart: the kubelet may believe the claim prepared only if the checkpoint completed it.
    plugin = DcuPlugin(
        discover(root),
        driver_name=DRIVER_NAME,
        node_name=NODE,
        data_dir=data_dir,
        cdi_dir=cdi_dir,
        boot_id="boot-1",
    )
    plugin.recover()
    kept = state == "PrepareCompleted"
    assert (uid in plugin.prepared_claims(), vdev_file.exists(), spec_file.exists()) == (
        kept,
        kept,
        kept,
    )
    leftovers = [p.name for p in [*data_dir.rglob("*"), *cdi_dir.rglob("*")] if ".tmp" in p.name]
    assert leftovers == []
