"""dra_driver/tools/pyz.py: the one-file dcu-dra, run the way a container runs it.

Every run is ``python -I -S dcu-dra.pyz ...``: ``-S`` leaves site-packages out, so a pass proves
the commands it serves need nothing but the standard library (the example pods'
``python:3.12-slim`` has nothing else).
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from dra_driver import __version__
from dra_driver.testing.container import ContainerView, build_container_view
from dra_driver.testing.core import allocated_share, cdi_ids, local_plugin, prepare_claim
from dra_driver.tools.pyz import SHEBANG, build_pyz, main, package_files

MIB = 2**20
#: Without root the mock node's device nodes are plain files; verify must be told to accept them.
PLAIN = ["--allow-plain-files"] if os.geteuid() != 0 else []


@pytest.fixture(scope="module")
def pyz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_pyz(tmp_path_factory.mktemp("dist") / "dcu-dra.pyz")


def run(
    pyz: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-I", "-S", str(pyz), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env=env,
    )


def share_container(mock_root: Path, base: Path) -> ContainerView:
    """A container with a 15-CU share of a Z100, laid out from the plugin's own CDI spec."""
    share = allocated_share("dcu-0000-3b-00-0", cores=15, memory_mib=8188)
    _, result = prepare_claim(local_plugin(mock_root, base), share)
    return build_container_view(base / "ctr", [base / "cdi"], cdi_ids(result))


def verify_args(view: ContainerView, mock_root: Path) -> list[str]:
    return [
        "verify",
        "--vdev-dir",
        str(view.at("/etc/vdev/docker")),
        "--dev-dir",
        str(view.at("/dev")),
        "--sys-dir",
        str(mock_root / "sys"),
        *PLAIN,
        # Our model's view (not root) has no container environment to check.
        *(["--no-env"] if view.container is None else []),
    ]


def container_env(view: ContainerView) -> dict[str, str] | None:
    """Exactly the environment the CDI library gave the container (None: the model's view)."""
    return None if view.container is None else dict(view.container.env)


def test_site_packages_are_really_out_of_reach() -> None:
    """Guards the premise of this file: with -I -S the venv's PyYAML cannot be imported."""
    done = subprocess.run([sys.executable, "-I", "-S", "-c", "import yaml"], check=False)
    assert done.returncode == 1


def test_verify_passes_in_a_good_container(pyz: Path, mock_root: Path, tmp_path: Path) -> None:
    view = share_container(mock_root, tmp_path)
    done = run(pyz, *verify_args(view, mock_root), env=container_env(view))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stderr == ""
    lines = done.stdout.splitlines()
    assert lines[0] == f"vDCU container: 1 vdev file(s) in {view.at('/etc/vdev/docker')}"
    assert lines[-1].startswith("verify: all ") and lines[-1].endswith(" checks passed")


def test_verify_fails_in_a_broken_container(pyz: Path, mock_root: Path, tmp_path: Path) -> None:
    """The share's vdev file claims one CU more than its mask holds (runtime rule 1)."""
    view = share_container(mock_root, tmp_path)
    vdev = view.at("/etc/vdev/docker") / "vdev0.conf"
    vdev.write_text(vdev.read_text().replace("cu_count: 15", "cu_count: 16"))
    done = run(pyz, *verify_args(view, mock_root), env=container_env(view))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert "FAIL: vdev0.conf: " in done.stdout and "(rule 1:" in done.stdout
    if view.container is None:  # our model's view: no environment, checked with --no-env
        assert done.stdout.splitlines()[-1] == "verify: 1 problem(s)"
    else:  # the runtime's environment names a share whose vdev file the parser now rejects
        assert "FAIL: DCU_VDEV0_* describe a share whose vdev0.conf" in done.stdout
        assert done.stdout.splitlines()[-1] == "verify: 2 problem(s)"


def test_version_and_help_run_from_the_pyz(pyz: Path) -> None:
    version = run(pyz, "--version")
    assert (version.returncode, version.stdout) == (0, f"dcu-dra {__version__}\n")
    helped = run(pyz, "verify", "--help")
    assert helped.returncode == 0 and "--allow-plain-files" in helped.stdout


@pytest.mark.parametrize(
    ("args", "package"),
    [(["devices", "--root", "/nonexistent"], "yaml"), (["convert", "-"], "yaml")],
    ids=["devices", "convert"],
)
def test_a_command_needing_a_third_party_package_says_so_in_one_line(
    pyz: Path, args: list[str], package: str
) -> None:
    done = run(pyz, *args)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        f"dcu-dra: error: this command needs the Python package {package!r}, which the one-file "
        "dcu-dra.pyz does not carry (it runs verify, --help and --version on the standard "
        "library alone); install dcu-dra with pip for the other commands"
    ]


def test_pyz_is_a_0644_zipapp_with_a_shebang_and_no_test_tools(pyz: Path) -> None:
    assert stat.S_IMODE(pyz.stat().st_mode) == 0o644
    assert pyz.read_bytes().startswith(SHEBANG)
    with zipfile.ZipFile(pyz) as archive:
        names = archive.namelist()
    assert names[0] == "__main__.py"
    assert "dra_driver/tools/verify/__init__.py" in names and "dra_driver/cli.py" in names
    assert not [n for n in names if n.startswith(("dra_driver/testing/", "dra_driver/tools/demo/"))]
    assert all(n.endswith(".py") for n in names)
    assert len(names) == len(package_files()) + 1


def test_build_is_reproducible(pyz: Path, tmp_path: Path) -> None:
    """Fixed entry times: the same sources give the same bytes."""
    assert build_pyz(tmp_path / "again.pyz").read_bytes() == pyz.read_bytes()


def test_build_replaces_an_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "out" / "dcu-dra.pyz"
    target.parent.mkdir()
    target.write_text("old")
    assert build_pyz(target) == target
    assert zipfile.is_zipfile(target)
    assert [p.name for p in target.parent.iterdir()] == ["dcu-dra.pyz"]  # no temp file left


def test_module_main_writes_the_file_and_says_how_to_run_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(tmp_path / "d.pyz")]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"==> {tmp_path / 'd.pyz'} (") and "python3 d.pyz verify" in out


def test_module_main_fails_with_one_line_when_it_cannot_write(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    done = subprocess.run(
        [sys.executable, "-m", "dra_driver.tools.pyz", str(blocker / "d.pyz")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"python -m dra_driver.tools.pyz: error: cannot write {blocker / 'd.pyz'}: {blocker} "
        "is not a directory"
    ]


def test_bytecode_build_carries_pyc_beside_each_module_and_runs(tmp_path: Path) -> None:
    pyz = build_pyz(tmp_path / "fast.pyz", include_bytecode=True)
    with zipfile.ZipFile(pyz) as archive:
        names = set(archive.namelist())
    modules = {n for n in names if n.endswith(".py") and n != "__main__.py"}
    assert {n for n in names if n.endswith(".pyc")} == {m + "c" for m in modules}
    assert run(pyz, "--version").returncode == 0


def test_bytecode_of_another_python_version_is_ignored(tmp_path: Path) -> None:
    """What a container with another Python sees: a magic number it does not know."""
    built = build_pyz(tmp_path / "fast.pyz", include_bytecode=True)
    other = tmp_path / "other.pyz"
    with zipfile.ZipFile(built) as source, zipfile.ZipFile(other, "w") as target:
        for entry in source.infolist():
            data = source.read(entry)
            target.writestr(
                entry, b"\0\0\r\n" + data[4:] if entry.filename.endswith(".pyc") else data
            )
    done = run(other, "--version")
    assert (done.returncode, done.stdout) == (0, f"dcu-dra {__version__}\n")
