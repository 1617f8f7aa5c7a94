"""The container image without a container engine: its Dockerfile's shape, and its wheel.

No Docker runs here, so the image's contents are checked the way the Dockerfile makes them:
the wheel is built by the build stage's own ``pip wheel`` command (read from the Dockerfile)
from the files its ``COPY`` lines name, installed with ``pip install --no-cache-dir`` into a
fresh virtual environment, and the entrypoint runs the commands the Helm chart and the kind demo
use.

The Dockerfile's ``pip install`` takes the dependencies from the package index. Here they come
from a local wheelhouse instead (``--no-index --find-links``), repacked from the distributions
installed in the dev venv, so the test needs no network and installs exactly the dependency
versions the rest of the suite runs against; pip still resolves the wheel's declared
requirements, so a dependency missing from ``pyproject.toml`` fails here.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import REPO_ROOT

DOCKERFILE = REPO_ROOT / "deploy/container/Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
PROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
VERSION: str = PROJECT["version"]


# --- the Dockerfile, parsed -----------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction with its continuation lines joined."""

    keyword: str
    args: str


def parse_dockerfile(text: str) -> list[list[Instruction]]:
    """Split a Dockerfile into stages (each starting at FROM); instructions before the first
    FROM (global ARGs) form stage 0."""
    stages: list[list[Instruction]] = [[]]
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        pending = ""
        if keyword.upper() == "FROM":
            stages.append([])
        stages[-1].append(Instruction(keyword.upper(), " ".join(args.split())))
    return stages


STAGES = parse_dockerfile(DOCKERFILE.read_text())
GLOBAL, BUILD_STAGE, FINAL_STAGE = STAGES[0], STAGES[1], STAGES[-1]


def instructions(stage: list[Instruction], keyword: str) -> list[str]:
    return [i.args for i in stage if i.keyword == keyword]


def wheel_command(stage: list[Instruction]) -> list[str]:
    """The build stage's ``pip wheel ...`` command, as argv."""
    commands = [shlex.split(args) for args in instructions(stage, "RUN")]
    found = [argv for argv in commands if argv[:2] == ["pip", "wheel"]]
    assert len(found) == 1, f"expected one 'RUN pip wheel' in the build stage, got {commands}"
    return found[0]


def test_dockerfile_has_a_build_stage_and_a_final_stage_on_a_pinned_slim_python() -> None:
    assert len(STAGES) == 3, "expected exactly two stages: build and final"
    assert BUILD_STAGE[0].args.endswith(" AS build")
    base_arg = [a for a in instructions(GLOBAL, "ARG") if a.startswith("PYTHON_IMAGE=")]
    assert len(base_arg) == 1
    assert re.fullmatch(r"PYTHON_IMAGE=python:3\.1[1-9](\.\d+)?-slim-[a-z]+", base_arg[0])
    assert BUILD_STAGE[0].args.startswith("${PYTHON_IMAGE}")
    assert FINAL_STAGE[0].args == "${PYTHON_IMAGE}"


def test_dockerfile_builds_the_wheel_with_the_make_wheel_recipe() -> None:
    """Both recipes: pip wheel --no-deps --no-build-isolation of the repo root."""
    docker = wheel_command(BUILD_STAGE)
    makefile = (REPO_ROOT / "Makefile").read_text()
    recipe = re.search(r"^wheel:.*\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    assert recipe is not None, "the Makefile has no wheel target"
    make_lines = [line for line in recipe.group(1).splitlines() if " wheel " in line]
    assert len(make_lines) == 1
    make = shlex.split(make_lines[0].strip().lstrip("@"))
    assert make[0].endswith("/pip") and make[1] == "wheel"
    for argv in (docker, make):
        assert {"--no-deps", "--no-build-isolation"} <= set(argv)
        assert argv[-1] == "."
        assert "-w" in argv


def test_dockerfile_final_stage_installs_only_the_wheel_and_runs_as_non_root() -> None:
    runs = instructions(FINAL_STAGE, "RUN")
    installs = [r for r in runs if "pip install" in r]
    assert len(installs) == 1
    assert "--mount=type=bind,from=build" in installs[0]
    assert re.search(r"pip install --no-cache-dir \S+\.whl$", installs[0])
    assert not instructions(FINAL_STAGE, "COPY"), "the final stage copies nothing but the wheel"
    users = instructions(FINAL_STAGE, "USER")
    assert users, "the image needs a default non-root USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "numeric, so runAsNonRoot can check it"
    # USER must come after every RUN that needs root.
    last_user = max(i for i, ins in enumerate(FINAL_STAGE) if ins.keyword == "USER")
    assert all(ins.keyword != "RUN" for ins in FINAL_STAGE[last_user:])
    assert [json.loads(a) for a in instructions(FINAL_STAGE, "ENTRYPOINT")] == [["dcu-dra"]]
    assert [json.loads(a) for a in instructions(FINAL_STAGE, "CMD")] == [["--help"]]
    labels = " ".join(instructions(FINAL_STAGE, "LABEL"))
    for key in ("title", "description", "version", "licenses"):
        assert f"org.opencontainers.image.{key}=" in labels


def copied_sources() -> list[str]:
    """What the build stage copies from the context (COPY without --from)."""
    sources: list[str] = []
    for args in instructions(BUILD_STAGE, "COPY"):
        argv = shlex.split(args)
        assert not argv[0].startswith("--from"), "the build stage copies only from the context"
        sources.extend(argv[:-1])
    return sources


def test_dockerignore_lets_in_what_the_build_stage_copies() -> None:
    lines = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()]
    rules = [line for line in lines if line and not line.startswith("#")]
    assert rules[0] == "*", "allow-list: everything out, then what the build needs back in"
    allowed = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    assert set(copied_sources()) == allowed


# --- the wheel, built and installed as the Dockerfile does --------------------------------


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return "sha256=" + digest.decode()


def _compressed_tags(wheel_metadata: str) -> str:
    """The file-name tag triple (``py3-none-any``, ``cp311-cp311-manylinux_...``) from WHEEL."""
    tags = [t.split("-") for t in Parser().parsestr(wheel_metadata).get_all("Tag") or []]
    assert tags, "installed distribution has no Tag in its WHEEL file"
    parts = [list(dict.fromkeys(tag[i] for tag in tags)) for i in range(3)]
    return "-".join(".".join(p) for p in parts)


def repack(dist: importlib.metadata.Distribution, out_dir: Path) -> Path:
    """Zip an installed distribution back into a wheel, from the files its RECORD lists.

    Files outside site-packages (console scripts in bin/) are left out: pip writes those again
    from entry_points.txt. Installer bookkeeping (INSTALLER, REQUESTED, direct_url.json) and
    bytecode are left out too.
    """
    wheel_metadata = dist.read_text("WHEEL")
    assert wheel_metadata is not None, f"{dist.metadata['Name']} was not installed from a wheel"
    name = re.sub(r"[-_.]+", "_", dist.metadata["Name"]).lower()
    path = out_dir / f"{name}-{dist.version}-{_compressed_tags(wheel_metadata)}.whl"
    skip = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}
    records: list[str] = []
    record_name = ""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as wheel:
        for file in dist.files or []:
            posix = file.as_posix()
            if posix.startswith("..") or "__pycache__" in file.parts:
                continue
            if file.parent.name.endswith(".dist-info") and file.name in skip:
                record_name = posix if file.name == "RECORD" else record_name
                continue
            data = Path(str(dist.locate_file(file))).read_bytes()
            wheel.writestr(posix, data)
            records.append(f"{posix},{_record_hash(data)},{len(data)}")
        assert record_name, f"{dist.metadata['Name']} has no RECORD"
        records.append(f"{record_name},,")
        wheel.writestr(record_name, "\n".join(records) + "\n")
    return path


def dependency_closure(requirements: list[str]) -> list[importlib.metadata.Distribution]:
    """The installed distributions that ``requirements`` pull in, with extras and markers."""
    found: dict[str, importlib.metadata.Distribution] = {}
    seen: set[tuple[str, str]] = set()
    todo = [(Requirement(r), "") for r in requirements]
    while todo:
        requirement, extra = todo.pop()
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": extra}):
            continue
        name = canonicalize_name(requirement.name)
        try:
            dist = found.get(name) or importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            pytest.fail(f"the dev venv lacks {name} ({requirement}): run `make venv`")
        assert requirement.specifier.contains(dist.version, prereleases=True), (
            f"the dev venv's {name} {dist.version} does not satisfy {requirement}"
        )
        found[name] = dist
        for wanted in {"", *requirement.extras}:
            if (name, wanted) not in seen:
                seen.add((name, wanted))
                todo.extend((Requirement(r), wanted) for r in dist.requires or [])
    return list(found.values())


@dataclass(frozen=True)
class InstalledImage:
    """The wheel as the image has it: the file, and a clean venv it is installed in."""

    wheel: Path
    venv: Path

    def run(self, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        """Run the entrypoint (``dcu-dra``) the way ``docker run IMAGE ARGS`` would."""
        return subprocess.run(
            [str(self.venv / "bin/dcu-dra"), *args],
            capture_output=True,
            text=True,
            env=clean_env(),
            cwd=cwd,
            check=False,
            timeout=60,
        )


def clean_env() -> dict[str, str]:
    """The environment without anything that could point Python or pip back at the repo."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYTHON", "PIP_", "VIRTUAL_ENV", "DCU_DRA_"))
    }
    env["PIP_CONFIG_FILE"] = os.devnull
    return env


def checked(argv: list[str], cwd: Path) -> None:
    done = subprocess.run(
        argv, capture_output=True, text=True, env=clean_env(), cwd=cwd, check=False, timeout=300
    )
    assert done.returncode == 0, f"{shlex.join(argv)} failed:\n{done.stdout}\n{done.stderr}"


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InstalledImage]:
    """Build the wheel from the Dockerfile's recipe and install it into a fresh venv."""
    work = tmp_path_factory.mktemp("image")
    # The build stage's context: exactly what its COPY lines take, in a tree of its own (as
    # /src is in the image), so nothing else in the checkout can leak into the wheel.
    src = work / "src"
    src.mkdir()
    for source in copied_sources():
        origin = REPO_ROOT / source
        if origin.is_dir():
            shutil.copytree(origin, src / source, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(origin, src / source)
    argv = wheel_command(BUILD_STAGE)
    dist = work / "dist"
    argv[argv.index("-w") + 1] = str(dist)
    checked([sys.executable, "-m", *argv, "--disable-pip-version-check"], cwd=src)
    (wheel,) = dist.glob("*.whl")

    wheelhouse = work / "wheelhouse"
    wheelhouse.mkdir()
    with zipfile.ZipFile(wheel) as archive:
        metadata = archive.read(f"dcu_dra-{VERSION}.dist-info/METADATA").decode()
    requires = Parser().parsestr(metadata).get_all("Requires-Dist") or []
    for dependency in dependency_closure(requires):
        repack(dependency, wheelhouse)

    # A venv with nothing but the standard library; the dev venv's pip installs into it
    # (--python), which saves the ~10 s ensurepip takes. --no-compile skips writing bytecode for
    # some 2,600 modules (the image keeps it for start-up time; behaviour is the same).
    venv = work / "venv"
    checked([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=work)
    pip = [sys.executable, "-m", "pip", "--python", str(venv / "bin/python")]
    offline = ["--no-index", "--find-links", str(wheelhouse), "--no-compile"]
    install = [*pip, "install", "--no-cache-dir", "--disable-pip-version-check", *offline]
    checked([*install, str(wheel)], cwd=work)
    shutil.rmtree(wheelhouse)  # ~120 MB of repacked wheels, no longer needed
    yield InstalledImage(wheel=wheel, venv=venv)


@pytest.mark.slow
def test_wheel_is_named_for_the_project_version_and_holds_the_package_data(
    image: InstalledImage,
) -> None:
    assert image.wheel.name == f"dcu_dra-{VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(image.wheel) as archive:
        names = set(archive.namelist())
        entry_points = archive.read(f"dcu_dra-{VERSION}.dist-info/entry_points.txt").decode()
    # Every file of the package, not only the patterns pyproject.toml lists today: a data file
    # added without a matching package-data pattern would be missing from the image.
    package = REPO_ROOT / "dra_driver"
    files = [p for p in package.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    wanted = {p.relative_to(REPO_ROOT).as_posix() for p in files}
    for data in (
        "dra_driver/vdcu/schemas/dcuconfig.v1alpha1.json",
        "dra_driver/cdi/schema/schema.json",
        "dra_driver/cdi/schema/defs.json",
        "dra_driver/cdi/schema/README.md",
        "dra_driver/node/mock/hy_smi_template.py",
    ):
        assert data in wanted, f"{data} moved: update this test"
    assert wanted <= names, sorted(wanted - names)
    assert re.search(r"^dcu-dra = dra_driver\.cli:main$", entry_points, re.MULTILINE)


@pytest.mark.slow
def test_installed_package_is_the_wheel_not_the_checkout(
    image: InstalledImage, tmp_path: Path
) -> None:
    done = subprocess.run(
        [str(image.venv / "bin/python"), "-c", "import dra_driver; print(dra_driver.__file__)"],
        capture_output=True,
        text=True,
        env=clean_env(),
        cwd=tmp_path,
        check=True,
    )
    assert Path(done.stdout.strip()).is_relative_to(image.venv)


@pytest.mark.slow
def test_entrypoint_version_and_help(image: InstalledImage, tmp_path: Path) -> None:
    version = image.run("--version", cwd=tmp_path)
    assert (version.returncode, version.stdout) == (0, f"dcu-dra {VERSION}\n"), version
    usage = image.run("--help", cwd=tmp_path)
    assert usage.returncode == 0, usage
    for command in ("devices", "cdi", "mock", "kubelet-plugin"):
        assert command in usage.stdout
    plugin = image.run("kubelet-plugin", "--help", cwd=tmp_path)
    assert plugin.returncode == 0, plugin
    assert "--node-name" in plugin.stdout


@pytest.mark.slow
def test_entrypoint_mock_node_devices_and_cdi_spec(image: InstalledImage, tmp_path: Path) -> None:
    root = tmp_path / "node"
    created = image.run(
        "mock", "create", "--root", str(root), "--device-nodes", "file", cwd=tmp_path
    )
    assert created.returncode == 0, created
    table = image.run("devices", "--root", str(root), cwd=tmp_path)
    assert table.returncode == 0, table
    assert table.stderr == "", "the mock hy-smi from the installed template agrees with sysfs"
    rows = table.stdout.strip().splitlines()[1:]
    assert [row.split()[0] for row in rows] == ["0", "1", "2"]
    listed = image.run("devices", "--root", str(root), "--json", cwd=tmp_path)
    assert len(json.loads(listed.stdout)) == 3

    spec = image.run("cdi", "generate", "--root", str(root), "--stdout", cwd=tmp_path)
    assert spec.returncode == 0, spec
    document = json.loads(spec.stdout)
    assert document["kind"] == "hygon.com/dcu"
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(spec.stdout)
    validated = image.run("cdi", "validate", str(spec_file), cwd=tmp_path)
    assert validated.returncode == 0, validated


@pytest.mark.slow
def test_installed_cdi_validate_checks_the_schema_the_wheel_ships(
    image: InstalledImage, tmp_path: Path
) -> None:
    """The image's ``cdi validate`` applies the official schema with nothing beside it: a hook
    timeout beyond uint32 passes the Go library's rules and only the schema catches it."""
    spec = tmp_path / "spec.json"
    hook = {"hookName": "prestart", "path": "/bin/true", "timeout": 2**40}
    edits = {"env": ["A=1"], "hooks": [hook]}
    spec.write_text(
        json.dumps(
            {
                "cdiVersion": "0.3.0",
                "kind": "a.com/b",
                "devices": [{"name": "x", "containerEdits": edits}],
            }
        )
    )
    done = image.run("cdi", "validate", str(spec), cwd=tmp_path)
    assert done.returncode == 1, done
    assert done.stdout.endswith("is greater than the maximum of 4294967295 (official schema)\n")


@pytest.mark.slow
def test_installed_mock_hy_smi_reports_the_node(image: InstalledImage, tmp_path: Path) -> None:
    """What the kind demo runs inside a pod: the mock node's hy-smi (a python3 script)."""
    root = tmp_path / "node"
    assert image.run("mock", "create", "--root", str(root), cwd=tmp_path).returncode == 0
    env = clean_env() | {"HY_SMI_VDEV_DIR": str(tmp_path / "no-vdev")}
    done = subprocess.run(
        [str(root / "opt/hyhal/bin/hy-smi"), "virtual", "-show-device-info"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done
    assert re.findall(r"^Device (\d+):$", done.stdout, re.MULTILINE) == ["0", "1", "2"]


@pytest.mark.slow
def test_installed_package_loads_its_opaque_config_schema(
    image: InstalledImage, tmp_path: Path
) -> None:
    code = "import json; from dra_driver.vdcu import opaque; print(json.dumps(opaque.schema()))"
    done = subprocess.run(
        [str(image.venv / "bin/python"), "-c", code],
        capture_output=True,
        text=True,
        env=clean_env(),
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done
    shipped = REPO_ROOT / "dra_driver/vdcu/schemas/dcuconfig.v1alpha1.json"
    assert json.loads(done.stdout) == json.loads(shipped.read_text())
