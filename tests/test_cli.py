"""Every CLI command end to end in a subprocess (the installed console script), plus in-process
checks of options and their environment twins."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from dra_driver import cli
from dra_driver.config import PluginConfig

DCU_DRA = str(Path(sys.executable).parent / "dcu-dra")


def run(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    unset = {cli.ENV_ROOT, cli.ENV_HOST_ROOT, cli.ENV_CDI_SCHEMA_DIR}
    merged = {k: v for k, v in os.environ.items() if k not in unset}
    merged.update(env or {})
    return subprocess.run(
        [DCU_DRA, *args],
        capture_output=True,
        text=True,
        env=merged,
        cwd=cwd,
        check=False,
        timeout=60,
    )


def assert_clean_error(done: subprocess.CompletedProcess[str], code: int, pattern: str) -> None:
    assert done.returncode == code, done
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    import re

    assert re.search(pattern, lines[0]), lines[0]


def test_mock_create_then_devices_table(tmp_path: Path) -> None:
    root = tmp_path / "node"
    created = run("mock", "create", "--root", str(root))
    assert created.returncode == 0, created.stderr
    assert created.stdout == f"mock DCU node written to {root}: 3 DCU(s)\n"
    table = run("devices", "--root", str(root))
    assert table.returncode == 0, table.stderr
    assert table.stderr == ""  # the mock hy-smi agrees with sysfs
    lines = table.stdout.splitlines()
    assert lines[0].split()[:4] == ["INDEX", "NAME", "MODEL", "DEVICE"]
    assert lines[1].split()[:8] == [
        "0",
        "dcu-0000-3b-00-0",
        "Z100",
        "0x54b7",
        "0000:3b:00.0",
        "60",
        "32752",
        "MiB",
    ]
    assert lines[3].split()[:8] == [
        "2",
        "dcu-0000-af-00-0",
        "K100_AI",
        "0x6210",
        "0000:af:00.0",
        "120",
        "65536",
        "MiB",
    ]


def test_devices_json_has_the_documented_keys(mock_root: Path) -> None:
    done = run("devices", "--root", str(mock_root), "--json")
    assert done.returncode == 0, done.stderr
    records = json.loads(done.stdout)
    assert len(records) == 3
    required = {
        "index",
        "name",
        "model",
        "deviceID",
        "pciBusID",
        "uuid",
        "computeUnits",
        "memoryBytes",
        "numaNode",
        "card",
        "render",
    }
    assert required <= set(records[0])
    assert {
        k: records[2][k]
        for k in (
            "index",
            "name",
            "model",
            "deviceID",
            "computeUnits",
            "memoryBytes",
            "numaNode",
            "card",
            "render",
        )
    } == {
        "index": 2,
        "name": "dcu-0000-af-00-0",
        "model": "K100_AI",
        "deviceID": "0x6210",
        "computeUnits": 120,
        "memoryBytes": 68719476736,
        "numaNode": 1,
        "card": "card3",
        "render": "renderD131",
    }


def test_devices_root_from_the_environment(mock_root: Path) -> None:
    done = run("devices", "--json", env={cli.ENV_ROOT: str(mock_root)})
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)) == 3


def test_devices_warns_when_hy_smi_disagrees(mock_root: Path) -> None:
    props = mock_root / "sys/class/kfd/kfd/topology/nodes/1/properties"
    props.write_text(
        props.read_text()
        .replace("simd_count 240", "simd_count 224")
        .replace("cu_per_simd_array 15", "cu_per_simd_array 14")
    )
    done = run("devices", "--root", str(mock_root))
    assert done.returncode == 0
    assert done.stderr == (
        "dcu-dra: warning: DCU 0 (0000:3b:00.0): hy-smi says 60 compute units,"
        " KFD topology says 56\n"
    )


def test_devices_on_a_node_without_dcus(tmp_path: Path) -> None:
    done = run("devices", "--root", str(tmp_path))
    assert done.returncode == 0
    assert done.stderr == f"no DCUs found under {tmp_path}\n"
    assert json.loads(run("devices", "--root", str(tmp_path), "--json").stdout) == []


def test_cdi_generate_to_stdout_is_valid(mock_root: Path, tmp_path: Path) -> None:
    done = run("cdi", "generate", "--root", str(mock_root), "--stdout")
    assert done.returncode == 0, done.stderr
    spec = json.loads(done.stdout)
    assert spec["kind"] == "hygon.com/dcu"
    names = [d["name"] for d in spec["devices"]]
    assert names[:3] == ["0", "1", "2"] and "all" in names
    path = tmp_path / "spec.json"
    path.write_text(done.stdout)
    checked = run("cdi", "validate", str(path))
    assert checked.returncode == 0, checked.stdout
    assert checked.stdout == "1 CDI spec(s) valid\n"


def test_cdi_generate_writes_a_0644_file(mock_root: Path, tmp_path: Path) -> None:
    out_dir = tmp_path / "cdi"
    done = run("cdi", "generate", "--root", str(mock_root), "--output-dir", str(out_dir))
    assert done.returncode == 0, done.stderr
    files = list(out_dir.iterdir())
    assert [f.name for f in files] == ["hygon.com-dcu.json"]
    assert files[0].stat().st_mode & 0o777 == 0o644
    assert f"wrote {files[0]}" in done.stdout
    assert "hygon.com/dcu=all" in done.stdout


def test_cdi_generate_host_root_rewrites_host_paths(mock_root: Path) -> None:
    done = run(
        "cdi", "generate", "--root", str(mock_root), "--host-root", "/var/lib/mock", "--stdout"
    )
    assert done.returncode == 0, done.stderr
    host_paths = [n["hostPath"] for n in json.loads(done.stdout)["containerEdits"]["deviceNodes"]]
    assert host_paths == ["/var/lib/mock/dev/kfd", "/var/lib/mock/dev/mkfd"]


def spec_host_paths(spec: dict[str, Any]) -> list[str]:
    """Every hostPath of a spec's device nodes and mounts, spec-level and per device."""
    edits = [spec.get("containerEdits", {})] + [d["containerEdits"] for d in spec["devices"]]
    return [
        entry["hostPath"]
        for edit in edits
        for entry in [*edit.get("deviceNodes", []), *edit.get("mounts", [])]
        if "hostPath" in entry
    ]


@pytest.mark.parametrize("how", ["flag", "env"])
def test_cdi_generate_makes_a_relative_root_absolute(mock_root: Path, how: str) -> None:
    """Regression: a relative --root gave relative hostPaths (node/dev/dri/card1), which runc
    resolves against its own working directory."""
    relative = mock_root.name
    args, env = (["--root", relative], None) if how == "flag" else ([], {cli.ENV_ROOT: relative})
    done = run("cdi", "generate", *args, "--stdout", env=env, cwd=mock_root.parent)
    assert done.returncode == 0, done.stderr
    host_paths = spec_host_paths(json.loads(done.stdout))
    assert f"{mock_root}/dev/dri/card1" in host_paths
    assert f"{mock_root}/opt/hyhal" in host_paths
    assert all(path.startswith(f"{mock_root}/") for path in host_paths), host_paths


@pytest.mark.parametrize(
    ("args", "env"),
    [(["--host-root", "hostnode"], None), ([], {"DCU_DRA_HOST_ROOT": "hostnode"})],
    ids=["flag", "env"],
)
def test_cdi_generate_refuses_a_relative_host_root(
    mock_root: Path, args: list[str], env: dict[str, str] | None
) -> None:
    """Regression: a relative --host-root went into the spec as is (hostnode/opt/hyhal); where
    the runtime would resolve it cannot be known, so it is a usage error that says what to do."""
    done = run("cdi", "generate", "--root", str(mock_root), *args, "--stdout", env=env)
    assert_clean_error(
        done,
        2,
        r"^dcu-dra cdi generate: error: --host-root hostnode \(flag or DCU_DRA_HOST_ROOT\) is "
        r"a relative path: give the absolute path at which the container runtime sees the node",
    )
    assert done.stdout == ""


def test_cdi_validate_checks_the_official_schema_by_default(tmp_path: Path) -> None:
    """Regression: without --schema-dir (which needed a schema beside the checkout) only the
    Go library's rules ran; the schema the package ships is now always applied."""
    path = tmp_path / "spec.json"
    hook = {"hookName": "prestart", "path": "/bin/true", "timeout": 2**40}
    path.write_text(
        json.dumps(
            {
                "cdiVersion": "0.5.0",
                "kind": "hygon.com/dcu",
                "containerEdits": {"hooks": [hook]},
                "devices": [{"name": "dcu0", "containerEdits": {"env": ["A=1"]}}],
            }
        )
    )
    done = run("cdi", "validate", str(path))
    assert (done.returncode, done.stderr) == (1, "")
    assert done.stdout == (
        f"{path}: $.containerEdits.hooks[0].timeout: 1099511627776 is greater than the maximum "
        "of 4294967295 (official schema)\n"
    )


def test_cdi_validate_schema_dir_replaces_the_shipped_schema(tmp_path: Path) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"cdiVersion": "0.3.0", "kind": "a.com/b", "devices": []}))
    empty = tmp_path / "schemas"
    empty.mkdir()
    for args, env in (
        (["--schema-dir", str(empty)], None),
        ([], {cli.ENV_CDI_SCHEMA_DIR: str(empty)}),
    ):
        assert_clean_error(
            run("cdi", "validate", *args, str(spec), env=env),
            1,
            rf"^dcu-dra: error: cannot load the official CDI schema from {empty} ",
        )


def test_cdi_generate_and_stdout_are_exclusive(mock_root: Path) -> None:
    done = run("cdi", "generate", "--root", str(mock_root), "--stdout", "--output-dir", "/x")
    assert_clean_error(done, 2, r"not allowed with argument")


def test_cdi_generate_without_dcus_fails_clearly(tmp_path: Path) -> None:
    assert_clean_error(
        run("cdi", "generate", "--root", str(tmp_path), "--stdout"),
        1,
        r"^dcu-dra: error: no DCUs found under .*: nothing to put in a CDI spec$",
    )


def test_cdi_validate_reports_each_problem_and_exits_1(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            {
                "cdiVersion": "0.3.0",
                "kind": "hygon.com/dcu",
                "bogus": 1,
                "devices": [{"name": "-x", "containerEdits": {}}],
            }
        )
    )
    done = run("cdi", "validate", str(bad))
    assert done.returncode == 1
    lines = done.stdout.strip().splitlines()
    assert len(lines) >= 3
    assert all(line.startswith(f"{bad}: ") for line in lines)
    text = done.stdout
    assert "bogus" in text and "-x" in text and "containerEdits" in text


def test_cdi_validate_corrupt_and_missing_files(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text("{not json")
    done = run("cdi", "validate", str(corrupt), str(tmp_path / "missing.json"))
    assert done.returncode == 1
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"{corrupt}: ")
    assert lines[1].startswith(f"{tmp_path / 'missing.json'}: ")
    assert "Traceback" not in done.stderr


def test_mock_create_with_config_and_bad_config(tmp_path: Path) -> None:
    config = tmp_path / "node.yaml"
    config.write_text(
        "devices:\n- {deviceID: 0x7777, computeUnits: 77, memory: 48Gi, pciBusID: '0000:01:00.0'}\n"
    )
    done = run("mock", "create", "--root", str(tmp_path / "n"), "--config", str(config))
    assert done.returncode == 0, done.stderr
    listed = json.loads(run("devices", "--root", str(tmp_path / "n"), "--json").stdout)
    assert [(d["model"], d["computeUnits"]) for d in listed] == [("DCU-0x7777", 77)]
    config.write_text("devices: {}\n")
    assert_clean_error(
        run("mock", "create", "--root", str(tmp_path / "m"), "--config", str(config)),
        1,
        r"^dcu-dra: error: .*node\.yaml: 'devices' must be a non-empty list$",
    )


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (
            ("devices", "--root", "/nonexistent/root"),
            r"^dcu-dra: error: root /nonexistent/root does not exist or is not a directory",
        ),
        (
            ("cdi", "generate", "--root", "/nonexistent/root", "--stdout"),
            r"^dcu-dra: error: root /nonexistent/root does not exist",
        ),
    ],
    ids=["devices", "cdi-generate"],
)
def test_missing_root_is_one_clear_line(args: tuple[str, ...], pattern: str) -> None:
    assert_clean_error(run(*args), 1, pattern)


def test_corrupt_topology_is_one_clear_line(mock_root: Path) -> None:
    (mock_root / "sys/class/kfd/kfd/topology/nodes/2/properties").write_text("simd_count x\n")
    assert_clean_error(
        run("devices", "--root", str(mock_root)),
        1,
        r"^dcu-dra: error: .*/nodes/2/properties:1: expected '<key> <decimal",
    )


def test_missing_render_node_is_one_clear_line(mock_root: Path) -> None:
    (mock_root / "sys/bus/pci/devices/0000:3b:00.0/drm/renderD129").rmdir()
    assert_clean_error(
        run("devices", "--root", str(mock_root)),
        1,
        r"^dcu-dra: error: DCU 0000:3b:00\.0 has no DRM render node",
    )


def test_unwritable_output_dir_is_one_clear_line(mock_root: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert_clean_error(
        run("cdi", "generate", "--root", str(mock_root), "--output-dir", str(blocker / "sub")),
        1,
        r"^dcu-dra: error:",
    )


def test_usage_errors_exit_2() -> None:
    for args in (
        ("bogus",),
        ("devices", "--nope"),
        ("cdi",),
        ("mock", "create"),
        ("kubelet-plugin",),
        ("kubelet-plugin", "--node-name", "n", "--sharing", "x"),
    ):
        assert_clean_error(run(*args), 2, r"^dcu-dra.*: error: .* \(see 'dcu-dra.*--help'\)$")


def test_module_entry_point_runs() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "dra_driver", "--version"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0
    assert done.stdout.startswith("dcu-dra ")


@pytest.mark.parametrize("how", ["flag", "env"])
def test_kubelet_plugin_makes_relative_paths_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """Regression: relative --root, --cdi-dir, --plugin-data-dir and --registrar-dir were
    refused; like ``cdi generate --root`` they are this process's view, so they are resolved
    (and a relative path never reaches a CDI spec or the kubelet)."""
    from dra_driver import daemon
    from dra_driver.util import logs

    ran: list[PluginConfig] = []

    def run_daemon(config: PluginConfig, **_: object) -> int:
        ran.append(config)
        return 0

    monkeypatch.setattr(daemon, "run", run_daemon)
    monkeypatch.setattr(logs, "configure", lambda **_: None)
    monkeypatch.chdir(tmp_path)
    paths = {"--root": "node", "--cdi-dir": "cdi", "--plugin-data-dir": "data"}
    paths["--registrar-dir"] = "registry"
    envs = {"--root": cli.ENV_ROOT, "--cdi-dir": "CDI_DIR", "--plugin-data-dir": "PLUGIN_DATA_DIR"}
    envs["--registrar-dir"] = "REGISTRAR_DIR"
    argv = ["kubelet-plugin", "--node-name", "n"]
    for flag, value in paths.items():
        if how == "flag":
            argv += [flag, value]
        else:
            monkeypatch.setenv(envs[flag], value)
    assert cli.main(argv) == 0
    [config] = ran
    assert (config.root, config.cdi_dir, config.data_dir, config.registrar_dir) == (
        tmp_path / "node",
        tmp_path / "cdi",
        tmp_path / "data",
        tmp_path / "registry",
    )


def test_in_process_options_and_env_twins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cli.ENV_ROOT, "/from/env")
    monkeypatch.setenv(cli.ENV_HOST_ROOT, "/host/env")
    args = cli.build_parser().parse_args(["cdi", "generate", "--stdout"])
    assert (args.root, args.host_root, args.stdout) == (Path("/from/env"), Path("/host/env"), True)
    args = cli.build_parser().parse_args(["cdi", "generate", "--root", "/flag"])
    assert args.root == Path("/flag")
    assert args.output_dir == cli.DEFAULT_STATIC_CDI_DIR
    monkeypatch.delenv(cli.ENV_ROOT)
    assert cli.build_parser().parse_args(["devices"]).root == Path("/")
