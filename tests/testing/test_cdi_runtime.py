"""dra_driver/testing/cdi_runtime.py: the CDI Go library (cdi-inject) on hand-written spec dirs.

Device nodes are real character devices made with mknod, with major numbers from Linux's
"local/experimental use" range (240-254), so nothing real is ever opened. Making them needs
root; CI runs as root, so no test here is skipped there.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from dra_driver.testing import cdi_runtime
from dra_driver.testing.cdi_runtime import (
    CdiRuntimeError,
    Conflict,
    ConflictKind,
    ConflictValue,
    DeviceNode,
    DeviceRule,
    Hook,
    Mount,
    inject,
)

KIND = "example.com/dcu"
OTHER = "example.com/other"
needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="mknod of a character device needs root (CI runs as root)"
)


def char_device(path: Path, major: int, minor: int) -> Path:
    """A character device node (mode 0o660) for a spec's hostPath."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mknod(path, 0o660 | stat.S_IFCHR, os.makedev(major, minor))
    os.chmod(path, 0o660)  # whatever the umask
    return path


def write_spec(
    spec_dir: Path, name: str, kind: str, devices: dict[str, dict[str, Any]], **edits: Any
) -> Path:
    """A spec file: ``devices`` maps names to their containerEdits; ``edits`` spec-level."""
    document: dict[str, Any] = {
        "cdiVersion": "0.5.0",
        "kind": kind,
        "devices": [{"name": n, "containerEdits": e} for n, e in devices.items()],
    }
    if edits:
        document["containerEdits"] = edits
    spec_dir.mkdir(parents=True, exist_ok=True)
    path = spec_dir / name
    path.write_text(json.dumps(document))
    return path


def node(path: str, host: Path, **fields: Any) -> dict[str, Any]:
    return {"path": path, "hostPath": str(host), **fields}


def bind(container: str, host: Path, *options: str) -> dict[str, Any]:
    return {"containerPath": container, "hostPath": str(host), "options": list(options)}


@pytest.fixture
def host(tmp_path: Path) -> Path:
    """The node's files: /dev/kfd (240:0), two render nodes (241:128, 241:129), hyhal, vdevs."""
    root = tmp_path / "host"
    if os.geteuid() == 0:
        char_device(root / "dev/kfd", 240, 0)
        char_device(root / "dev/dri/renderD128", 241, 128)
        char_device(root / "dev/dri/renderD129", 241, 129)
    for claim in ("claim-a", "claim-b"):
        (root / "vdev" / claim).mkdir(parents=True)
    (root / "vdev/claim-a/vdev3.conf").write_text("cu_count: 15\n")
    (root / "vdev/claim-b/vdev0.conf").write_text("cu_count: 30\n")
    (root / "opt/hyhal/lib").mkdir(parents=True)
    (root / "opt/hyhal/lib/libhyhal.so").write_text("elf")
    return root


def claim_spec(spec_dir: Path, host: Path, claim: str, *, render: int) -> str:
    """A per-claim spec as the plugin writes one: shared nodes and mounts, one device; its ID."""
    write_spec(
        spec_dir,
        f"example.com-dcu_{claim}.json",
        KIND,
        {
            f"{claim}-dcu0": {
                "deviceNodes": [
                    node(
                        f"/dev/dri/renderD{render}",
                        host / f"dev/dri/renderD{render}",
                        permissions="rw",
                    )
                ],
                "env": [f"DCU_0_UUID={claim}-uuid"],
            }
        },
        deviceNodes=[node("/dev/kfd", host / "dev/kfd", permissions="rw")],
        mounts=[
            bind("/opt/hyhal", host / "opt/hyhal", "ro", "nosuid", "nodev", "bind"),
            bind("/etc/vdev/docker", host / "vdev" / claim, "ro", "bind"),
        ],
        env=[f"DCU_DRA_CLAIM={claim}"],
    )
    return f"{KIND}={claim}-dcu0"


# --- what the library gives -------------------------------------------------------------


@needs_root
def test_a_spec_loads_and_an_id_injects_as_the_library_gives_it(tmp_path: Path, host: Path) -> None:
    cdi_id = claim_spec(tmp_path / "cdi", host, "claim-a", render=128)
    container = inject([tmp_path / "cdi"], [cdi_id])
    assert container.device_nodes == (
        DeviceNode(
            path="/dev/kfd",
            type="c",
            major=240,  # read from the host node: the spec names no type or numbers
            minor=0,
            file_mode=0o660,
            uid=None,  # the empty OCI spec has no user; a real one's uid > 0 would be set
            gid=None,
            host_path=str(host / "dev/kfd"),
            cdi_id=cdi_id,
        ),
        DeviceNode(
            path="/dev/dri/renderD128",
            type="c",
            major=241,
            minor=128,
            file_mode=0o660,
            uid=None,
            gid=None,
            host_path=str(host / "dev/dri/renderD128"),
            cdi_id=cdi_id,
        ),
    )
    assert container.device_rules == (
        DeviceRule(allow=True, type="c", major=240, minor=0, access="rw"),
        DeviceRule(allow=True, type="c", major=241, minor=128, access="rw"),
    )
    # Sorted by depth (stable), as the library sorts mounts: /opt/hyhal before /etc/vdev/docker.
    assert container.mounts == (
        Mount(
            destination="/opt/hyhal",
            source=str(host / "opt/hyhal"),
            type="",
            options=("ro", "nosuid", "nodev", "bind"),
            cdi_id=cdi_id,
        ),
        Mount(
            destination="/etc/vdev/docker",
            source=str(host / "vdev/claim-a"),
            type="",
            options=("ro", "bind"),
            cdi_id=cdi_id,
        ),
    )
    assert dict(container.env) == {"DCU_DRA_CLAIM": "claim-a", "DCU_0_UUID": "claim-a-uuid"}
    assert (container.hooks, container.conflicts) == ({}, ())
    files = container.files()
    assert files["/etc/vdev/docker/vdev3.conf"].read_text() == "cu_count: 15\n"
    assert files["/opt/hyhal/lib/libhyhal.so"] == host / "opt/hyhal/lib/libhyhal.so"
    assert sorted(files) == ["/etc/vdev/docker/vdev3.conf", "/opt/hyhal/lib/libhyhal.so"]


def test_a_spec_that_fails_to_load_fails_with_the_librarys_message(
    tmp_path: Path, host: Path
) -> None:
    """Even when the ID asked for is in another, valid spec: containerd would only log it."""
    good = write_spec(tmp_path / "cdi", "good.json", KIND, {"a": {"env": ["A=1"]}})
    bad = write_spec(tmp_path / "cdi", "bad.json", OTHER, {"b": {"env": ["NO_EQUALS_SIGN"]}})
    with pytest.raises(CdiRuntimeError) as caught:
        inject([tmp_path / "cdi"], [f"{KIND}=a"])
    assert good.exists()
    assert caught.value.problems == (
        f'{bad}: failed to load CDI Spec invalid CDI Spec: failed add device "b": '
        'invalid device "b": invalid container edits: invalid environment variable '
        '"NO_EQUALS_SIGN"',
    )
    assert str(caught.value).startswith(
        f"the CDI library cannot inject {KIND}=a from {tmp_path / 'cdi'} (exit code 1)\n  "
    )


def test_a_spec_that_is_not_json_or_yaml_fails(tmp_path: Path) -> None:
    (tmp_path / "cdi").mkdir()
    (tmp_path / "cdi/broken.json").write_text("{")
    with pytest.raises(CdiRuntimeError) as caught:
        inject([tmp_path / "cdi"], [f"{KIND}=a"])
    (problem,) = caught.value.problems
    assert problem.startswith(
        f"{tmp_path / 'cdi/broken.json'}: failed to load CDI Spec failed to parse CDI Spec "
    )


def test_an_unknown_id_fails_naming_it(tmp_path: Path) -> None:
    write_spec(tmp_path / "cdi", "a.json", KIND, {"a": {"env": ["A=1"]}})
    with pytest.raises(CdiRuntimeError) as caught:
        inject([tmp_path / "cdi"], [f"{KIND}=a", f"{KIND}=gone", "not-an-id"])
    assert caught.value.problems == (
        f"unresolvable CDI device {KIND}=gone: no valid spec in {tmp_path / 'cdi'} defines it",
        f"unresolvable CDI device not-an-id: no valid spec in {tmp_path / 'cdi'} defines it",
    )


def test_a_device_node_that_is_a_plain_file_is_refused(tmp_path: Path) -> None:
    """Why container views fall back to our model without root: mock nodes are plain files."""
    (tmp_path / "kfd").write_text("")
    write_spec(
        tmp_path / "cdi",
        "a.json",
        KIND,
        {"a": {"deviceNodes": [node("/dev/kfd", tmp_path / "kfd")]}},
    )
    with pytest.raises(CdiRuntimeError) as caught:
        inject([tmp_path / "cdi"], [f"{KIND}=a"])
    assert caught.value.problems == (
        "CDI device injection failed: failed to inject devices: failed to stat CDI host device "
        f'"{tmp_path / "kfd"}": not a device node',
    )


def test_a_later_spec_dir_wins_for_a_device_both_define(tmp_path: Path) -> None:
    """The runtime's cdi_spec_dirs: /etc/cdi first, /var/run/cdi (higher priority) after."""
    write_spec(tmp_path / "etc", "a.json", KIND, {"a": {"env": ["FROM=etc"]}})
    write_spec(tmp_path / "run", "a.json", KIND, {"a": {"env": ["FROM=run"]}})
    container = inject([tmp_path / "etc", tmp_path / "run"], [f"{KIND}=a"])
    assert dict(container.env) == {"FROM": "run"}
    container = inject([tmp_path / "run", tmp_path / "etc"], [f"{KIND}=a"])
    assert dict(container.env) == {"FROM": "etc"}


# --- conflicts --------------------------------------------------------------------------


def test_two_ids_setting_one_env_var_differently_is_a_conflict_and_exit_3(
    tmp_path: Path,
) -> None:
    write_spec(tmp_path / "cdi", "a.json", KIND, {"a": {"env": ["DCU_X=0", "A=1"]}})
    write_spec(tmp_path / "cdi", "b.json", OTHER, {"b": {"env": ["DCU_X=1"]}})
    ids = [f"{KIND}=a", f"{OTHER}=b"]
    container = inject([tmp_path / "cdi"], ids)
    assert container.conflicts == (
        Conflict(
            what=ConflictKind.ENV,
            key="DCU_X",
            values=(
                ConflictValue(cdi_id=f"{KIND}=a", value="0"),
                ConflictValue(cdi_id=f"{OTHER}=b", value="1"),
            ),
        ),
    )
    assert dict(container.env) == {"DCU_X": "1", "A": "1"}  # the later one, in its old place
    done = subprocess.run(
        [str(cdi_runtime.default_binary()), "--spec-dir", str(tmp_path / "cdi"), *ids],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (done.returncode, done.stderr) == (3, "")
    assert json.loads(done.stdout)["conflicts"][0]["key"] == "DCU_X"


@needs_root
def test_two_claim_specs_share_kfd_and_hyhal_but_conflict_on_their_own_keys(
    tmp_path: Path, host: Path
) -> None:
    """Every claim spec names /dev/kfd and /opt/hyhal alike: no conflict there. Each mounts its
    own vdev directory at /etc/vdev/docker: the later claim's hides the earlier one's."""
    ids = [
        claim_spec(tmp_path / "cdi", host, "claim-a", render=128),
        claim_spec(tmp_path / "cdi", host, "claim-b", render=129),
    ]
    container = inject([tmp_path / "cdi"], ids)
    # In the order first set: spec-level env, mounts, nodes; then the device's own.
    assert [(c.what, c.key) for c in container.conflicts] == [
        (ConflictKind.ENV, "DCU_DRA_CLAIM"),
        (ConflictKind.MOUNT, "/etc/vdev/docker"),
        (ConflictKind.ENV, "DCU_0_UUID"),
    ]
    assert [n.path for n in container.device_nodes] == [
        "/dev/dri/renderD128",
        "/dev/kfd",  # injected again by claim-b's spec: removed and appended
        "/dev/dri/renderD129",
    ]
    # The library appends a cgroup rule per injection: /dev/kfd's twice.
    assert [(r.major, r.minor) for r in container.device_rules] == [
        (240, 0),
        (241, 128),
        (240, 0),
        (241, 129),
    ]
    assert [m.destination for m in container.mounts] == ["/opt/hyhal", "/etc/vdev/docker"]
    assert container.mount("/etc/vdev/docker").source == str(host / "vdev/claim-b")
    assert container.files()["/etc/vdev/docker/vdev0.conf"] == host / "vdev/claim-b/vdev0.conf"
    assert "/etc/vdev/docker/vdev3.conf" not in container.files()  # hidden by claim-b's mount


@needs_root
def test_the_same_device_node_from_two_specs_is_no_conflict(tmp_path: Path, host: Path) -> None:
    kfd = node("/dev/kfd", host / "dev/kfd", permissions="rw")
    hyhal = bind("/opt/hyhal", host / "opt/hyhal", "ro", "bind")
    write_spec(
        tmp_path / "cdi", "a.json", KIND, {"a": {"env": ["A=1"]}}, deviceNodes=[kfd], mounts=[hyhal]
    )
    write_spec(
        tmp_path / "cdi",
        "b.json",
        OTHER,
        {"b": {"env": ["B=1"]}},
        deviceNodes=[kfd],
        mounts=[hyhal],
    )
    container = inject([tmp_path / "cdi"], [f"{KIND}=a", f"{OTHER}=b"])
    assert container.conflicts == ()
    assert [n.path for n in container.device_nodes] == ["/dev/kfd"]
    assert [m.destination for m in container.mounts] == ["/opt/hyhal"]


def test_two_mounts_on_one_container_path_from_two_ids_is_a_conflict(tmp_path: Path) -> None:
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    write_spec(
        tmp_path / "cdi",
        "a.json",
        KIND,
        {"a": {"mounts": [bind("/etc/vdev/docker", tmp_path / "one", "ro", "bind")]}},
    )
    write_spec(
        tmp_path / "cdi",
        "b.json",
        KIND,
        {"b": {"mounts": [bind("/etc/vdev/docker", tmp_path / "two", "ro", "bind")]}},
    )
    container = inject([tmp_path / "cdi"], [f"{KIND}=a", f"{KIND}=b"])
    assert container.conflicts == (
        Conflict(
            what=ConflictKind.MOUNT,
            key="/etc/vdev/docker",
            values=(
                ConflictValue(
                    cdi_id=f"{KIND}=a", value=f"source={tmp_path / 'one'} type= options=ro,bind"
                ),
                ConflictValue(
                    cdi_id=f"{KIND}=b", value=f"source={tmp_path / 'two'} type= options=ro,bind"
                ),
            ),
        ),
    )
    assert [(m.destination, m.source, m.cdi_id) for m in container.mounts] == [
        ("/etc/vdev/docker", str(tmp_path / "two"), f"{KIND}=b")
    ]


@needs_root
def test_two_ids_naming_one_device_path_with_different_nodes_is_a_conflict(
    tmp_path: Path, host: Path
) -> None:
    write_spec(
        tmp_path / "cdi",
        "a.json",
        KIND,
        {"a": {"deviceNodes": [node("/dev/dri/renderD128", host / "dev/dri/renderD128")]}},
    )
    write_spec(
        tmp_path / "cdi",
        "b.json",
        OTHER,
        {"b": {"deviceNodes": [node("/dev/dri/renderD128", host / "dev/dri/renderD129")]}},
    )
    container = inject([tmp_path / "cdi"], [f"{KIND}=a", f"{OTHER}=b"])
    (conflict,) = container.conflicts
    assert (conflict.what, conflict.key) == (ConflictKind.DEVICE_NODE, "/dev/dri/renderD128")
    assert [v.value.split()[0] for v in conflict.values] == [
        f"hostPath={host / 'dev/dri/renderD128'}",
        f"hostPath={host / 'dev/dri/renderD129'}",
    ]
    # The container gets the later node: 241:129 at /dev/dri/renderD128.
    assert container.device_node("/dev/dri/renderD128").minor == 129


# --- the library's order ------------------------------------------------------------------


@needs_root
def test_spec_level_edits_come_once_per_spec_before_its_first_devices_own(
    tmp_path: Path, host: Path
) -> None:
    write_spec(
        tmp_path / "cdi",
        "one.json",
        KIND,
        {
            "a": {
                "deviceNodes": [node("/dev/dri/renderD128", host / "dev/dri/renderD128")],
                "env": ["A=a"],
            },
            "c": {"env": ["C=c", "ONE=from-c"]},
        },
        deviceNodes=[node("/dev/kfd", host / "dev/kfd")],
        env=["ONE=spec"],
    )
    write_spec(
        tmp_path / "cdi",
        "two.json",
        OTHER,
        {"b": {"deviceNodes": [node("/dev/dri/renderD129", host / "dev/dri/renderD129")]}},
        env=["TWO=spec"],
    )
    container = inject([tmp_path / "cdi"], [f"{KIND}=a", f"{OTHER}=b", f"{KIND}=c", f"{KIND}=a"])
    assert [(n.path, n.cdi_id) for n in container.device_nodes] == [
        ("/dev/kfd", f"{KIND}=a"),
        ("/dev/dri/renderD128", f"{KIND}=a"),
        ("/dev/dri/renderD129", f"{OTHER}=b"),
    ]
    # ONE is replaced in place by c's own value; the repeated ID is injected once (containerd).
    assert list(container.env.items()) == [
        ("ONE", "from-c"),
        ("A", "a"),
        ("TWO", "spec"),
        ("C", "c"),
    ]
    # c's own ONE overrides the spec-level ONE that a gets too.
    assert container.conflicts == (
        Conflict(
            what=ConflictKind.ENV,
            key="ONE",
            values=(
                ConflictValue(cdi_id=f"{KIND}=a", value="spec"),
                ConflictValue(cdi_id=f"{KIND}=c", value="from-c"),
            ),
        ),
    )
    assert [(r.major, r.minor, r.access) for r in container.device_rules] == [
        (240, 0, "rwm"),  # no permissions in the spec: the library's default
        (241, 128, "rwm"),
        (241, 129, "rwm"),
    ]


# --- hooks --------------------------------------------------------------------------------


HOOK_SCRIPT = """
import json, os, sys
state = json.load(sys.stdin)
config = json.load(open(os.path.join(state["bundle"], "config.json")))
out = os.path.join(config["root"]["path"], "hook.json")
report = {"status": state["status"], "argv": sys.argv[1:], "env": dict(os.environ)}
json.dump(report, open(out, "w"))
"""


def test_create_container_hooks_are_reported_and_run_with_run_hooks(tmp_path: Path) -> None:
    args = ["python3", "-I", "-c", HOOK_SCRIPT, "x"]
    hook = {
        "hookName": "createContainer",
        "path": sys.executable,
        "args": args,
        "env": ["HOOK=1"],
        "timeout": 30,
    }
    write_spec(tmp_path / "cdi", "a.json", KIND, {"a": {"hooks": [hook]}})
    container = inject([tmp_path / "cdi"], [f"{KIND}=a"])
    assert container.hooks == {
        "createContainer": (
            Hook(path=sys.executable, args=tuple(args), env=("HOOK=1",), timeout_s=30),
        )
    }
    assert not (tmp_path / "hook.json").exists()  # reported, not run

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    inject([tmp_path / "cdi"], [f"{KIND}=a"], run_hooks_root=scratch)
    ran = json.loads((scratch / "hook.json").read_text())
    assert ran["status"] == "creating"
    assert ran["argv"] == ["x"]
    assert ran["env"].get("HOOK") == "1" and "PATH" not in ran["env"]  # only the hook's env


def test_a_failing_hook_fails_with_its_output(tmp_path: Path) -> None:
    hook = {
        "hookName": "createContainer",
        "path": sys.executable,
        "args": ["python3", "-c", "import sys; sys.exit('no DCU here')"],
    }
    write_spec(tmp_path / "cdi", "a.json", KIND, {"a": {"hooks": [hook]}})
    with pytest.raises(CdiRuntimeError) as caught:
        inject([tmp_path / "cdi"], [f"{KIND}=a"], run_hooks_root=tmp_path)
    assert caught.value.problems == (
        f"createContainer hook #0 ({sys.executable}): exit status 1: no DCU here",
    )


# --- the wrapper --------------------------------------------------------------------------


def test_no_ids_give_an_empty_container_without_running_anything(tmp_path: Path) -> None:
    container = inject([tmp_path / "missing"], [], binary=tmp_path / "no-such-binary")
    assert (container.device_nodes, container.mounts, dict(container.env)) == ((), (), {})


def test_a_missing_binary_names_the_make_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(cdi_runtime.BINARY_ENV, str(tmp_path / "cdi-inject"))
    with pytest.raises(
        CdiRuntimeError, match=r"^.*/cdi-inject does not exist: run `make cdiruntime` first"
    ):
        inject([tmp_path], [f"{KIND}=a"])


def test_a_usage_error_is_an_error(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(cdi_runtime.default_binary()), f"{KIND}=a"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("usage: cdi-inject [--run-hooks SCRATCH_ROOT] --spec-dir DIR")


def test_files_of_a_later_deeper_mount_hide_the_earlier_ones(tmp_path: Path) -> None:
    (tmp_path / "etc/vdev/docker").mkdir(parents=True)
    (tmp_path / "etc/vdev/docker/old.conf").write_text("")
    (tmp_path / "etc/hosts").write_text("")
    (tmp_path / "vdev").mkdir()
    (tmp_path / "vdev/vdev0.conf").write_text("")
    (tmp_path / "single").write_text("")
    container = cdi_runtime.RuntimeContainer(
        device_nodes=(),
        device_rules=(),
        mounts=tuple(
            Mount(destination=d, source=str(s), type="", options=("bind",), cdi_id="x/y=z")
            for d, s in [
                ("/etc", tmp_path / "etc"),
                ("/proc", tmp_path / "no-such-source"),
                ("/etc/vdev/docker", tmp_path / "vdev"),
                ("/etc/one.conf", tmp_path / "single"),
            ]
        ),
    )
    assert container.files() == {
        "/etc/hosts": tmp_path / "etc/hosts",
        "/etc/vdev/docker/vdev0.conf": tmp_path / "vdev/vdev0.conf",
        "/etc/one.conf": tmp_path / "single",
    }
