"""dra_driver/testing/container.py: a container's files laid out from real and hand-made CDI specs.

The real specs come from claims the plugin prepared on a mock node; the CDI library
(cdi-inject) resolves them as root, our model without; ``verify`` run on the view is the proof
that the layout is what a runtime would show. The layout's safety checks run on both paths.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from dra_driver.testing import core
from dra_driver.testing.container import (
    ContainerViewError,
    EditKind,
    InjectedPath,
    build_container_view,
    build_model_view,
    parse_cdi_id,
    read_spec_dir,
    resolve_paths,
    runtime_unavailable_reason,
)
from dra_driver.testing.core import allocated_share, cdi_ids, local_plugin
from dra_driver.tools.verify import format_report, verify

KIND = "k8s.dcu.hygon.com/dcu"
MIB = 2**20
#: Without root the mock node's device nodes are plain files; verify must be told to accept them.
PLAIN = os.geteuid() != 0
needs_root = pytest.mark.skipif(
    PLAIN, reason="views come from the CDI library only as root, which mknod needs (CI is root)"
)


def prepare_claim(mock_root: Path, base: Path, device: str, *, cores: int | None) -> list[str]:
    """Prepare one claim (a share, or the whole card when ``cores`` is None); its CDI IDs."""
    memory_mib = None if cores is None else 4096
    share = allocated_share(device, cores=cores, memory_mib=memory_mib)
    _, result = core.prepare_claim(local_plugin(mock_root, base), share)
    return cdi_ids(result)


def spec(kind: str, devices: dict[str, dict[str, Any]], **edits: Any) -> dict[str, Any]:
    """A hand-made spec: ``devices`` maps names to their containerEdits."""
    document: dict[str, Any] = {
        "cdiVersion": "0.5.0",
        "kind": kind,
        "devices": [{"name": name, "containerEdits": e} for name, e in devices.items()],
    }
    if edits:
        document["containerEdits"] = edits
    return document


def node(path: str, host: str | None = None) -> dict[str, str]:
    return {"path": path} if host is None else {"path": path, "hostPath": host}


def mount(container: str, host: str) -> dict[str, Any]:
    return {"containerPath": container, "hostPath": host, "options": ["ro", "bind"]}


# --- real specs ---------------------------------------------------------------------------


def test_a_vdcu_claims_view_passes_verify(mock_root: Path, tmp_path: Path) -> None:
    cdi_ids = prepare_claim(mock_root, tmp_path, "dcu-0000-3b-00-0", cores=15)
    view = build_container_view(tmp_path / "ctr", [tmp_path / "cdi"], cdi_ids)
    kfd = view.at("/dev/kfd")
    if PLAIN:  # our model: a link to the mock node's plain file
        assert os.readlink(kfd) == str(mock_root / "dev/kfd")
    else:  # the CDI library's node, with the numbers of the mock node's
        assert stat.S_ISCHR(kfd.lstat().st_mode)
        assert kfd.lstat().st_rdev == (mock_root / "dev/kfd").stat().st_rdev
    assert sorted(p.name for p in view.at("/etc/vdev/docker").iterdir()) == ["vdev0.conf"]
    report = verify(
        view.at("/etc/vdev/docker"), view.at("/dev"), mock_root / "sys", allow_plain_files=PLAIN
    )
    assert report.ok, format_report(report)
    assert [f.config.cu_count for f in report.vdev_files if f.config] == [15]


def test_a_whole_card_claims_view_has_no_vdev_dir_and_passes_verify(
    mock_root: Path, tmp_path: Path
) -> None:
    cdi_ids = prepare_claim(mock_root, tmp_path, "dcu-0000-af-00-0", cores=None)
    view = build_container_view(tmp_path / "ctr", [tmp_path / "cdi"], cdi_ids)
    assert not view.at("/etc/vdev/docker").exists()
    assert {p.kind for p in view.paths} == {EditKind.DEVICE_NODE, EditKind.MOUNT}  # + hyhal
    report = verify(
        view.at("/etc/vdev/docker"), view.at("/dev"), mock_root / "sys", allow_plain_files=PLAIN
    )
    assert report.ok and report.whole_card, format_report(report)


@needs_root
def test_as_root_the_view_is_what_the_cdi_library_injects(mock_root: Path, tmp_path: Path) -> None:
    cdi_ids = prepare_claim(mock_root, tmp_path, "dcu-0000-3b-00-0", cores=15)
    view = build_container_view(tmp_path / "ctr", [tmp_path / "cdi"], cdi_ids)
    assert runtime_unavailable_reason() is None
    assert view.container is not None
    assert view.container.conflicts == ()
    for node in view.container.device_nodes:
        made = view.at(node.path).lstat()
        assert stat.S_ISCHR(made.st_mode), node.path
        assert (os.major(made.st_rdev), os.minor(made.st_rdev)) == (node.major, node.minor)
        assert stat.S_IMODE(made.st_mode) == 0o600
        assert node.host_path.startswith(str(mock_root))
    assert view.container.device_node("/dev/kfd").host_path == str(mock_root / "dev/kfd")
    vdev = view.container.files()["/etc/vdev/docker/vdev0.conf"]
    assert (view.at("/etc/vdev/docker") / "vdev0.conf").read_text() == vdev.read_text()
    assert "cu_count: 15" in vdev.read_text()


def test_without_root_the_reason_names_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    reason = runtime_unavailable_reason()
    assert reason is not None and reason.startswith("not root: container views use dcu-dra's own")


def test_a_spec_the_library_refuses_fails_the_view_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "cdi").mkdir()
    (tmp_path / "cdi/broken.json").write_text("{")
    if PLAIN:
        with pytest.raises(ContainerViewError, match=r"^cannot read CDI spec .*broken\.json"):
            build_container_view(tmp_path / "ctr", [tmp_path / "cdi"], [f"{KIND}=a"])
        return
    with pytest.raises(ContainerViewError) as caught:
        build_container_view(tmp_path / "ctr", [tmp_path / "cdi"], [f"{KIND}=a"])
    assert "\n" not in str(caught.value)
    assert str(caught.value).startswith(f"the CDI library cannot inject {KIND}=a from ")
    assert f"; {tmp_path / 'cdi/broken.json'}: failed to load CDI Spec" in str(caught.value)


# --- resolution rules (our model) ---------------------------------------------------------


def test_spec_edits_come_once_before_the_first_device_of_the_spec() -> None:
    specs = [
        spec(
            KIND,
            {
                "a": {"deviceNodes": [node("/dev/dri/card1")]},
                "b": {"deviceNodes": [node("/dev/b")]},
            },
            deviceNodes=[node("/dev/kfd", "/host/dev/kfd")],
            mounts=[mount("/etc/vdev/docker", "/host/vdev")],
        )
    ]
    paths = resolve_paths(specs, [f"{KIND}=a", f"{KIND}=b"])
    assert paths == [
        InjectedPath(
            container_path="/dev/kfd",
            host_path="/host/dev/kfd",
            kind=EditKind.DEVICE_NODE,
            cdi_id=f"{KIND}=a",
        ),
        InjectedPath(
            container_path="/etc/vdev/docker",
            host_path="/host/vdev",
            kind=EditKind.MOUNT,
            cdi_id=f"{KIND}=a",
        ),
        InjectedPath(
            container_path="/dev/dri/card1",
            host_path="/dev/dri/card1",  # no hostPath: the same path on the host
            kind=EditKind.DEVICE_NODE,
            cdi_id=f"{KIND}=a",
        ),
        InjectedPath(
            container_path="/dev/b",
            host_path="/dev/b",
            kind=EditKind.DEVICE_NODE,
            cdi_id=f"{KIND}=b",
        ),
    ]


def test_a_later_entry_for_the_same_container_path_replaces_the_earlier_one() -> None:
    """Two claims' specs both inject /dev/kfd: one node in the container, the last one's."""
    specs = [
        spec(KIND, {"a": {"deviceNodes": [node("/dev/a")]}}, deviceNodes=[node("/dev/kfd", "/1")]),
        spec(
            "x.com/y",
            {"b": {"deviceNodes": [node("/dev/b")]}},
            deviceNodes=[node("/dev/kfd", "/2")],
        ),
    ]
    paths = resolve_paths(specs, [f"{KIND}=a", "x.com/y=b"])
    assert [(p.container_path, p.host_path) for p in paths] == [
        ("/dev/a", "/dev/a"),
        ("/dev/kfd", "/2"),
        ("/dev/b", "/dev/b"),
    ]


def test_read_spec_dir_reads_every_json_spec_and_skips_temp_files(tmp_path: Path) -> None:
    (tmp_path / "b.json").write_text(json.dumps(spec(KIND, {"b": {}})))
    (tmp_path / "a.json").write_text(json.dumps(spec(KIND, {"a": {}})))
    (tmp_path / ".c.json.x.tmp").write_text("{")
    (tmp_path / ".d.json").write_text("{")
    assert [s["devices"][0]["name"] for s in read_spec_dir(tmp_path)] == ["a", "b"]


# --- what no runtime could inject ---------------------------------------------------------


@pytest.mark.parametrize(
    ("cdi_id", "message"),
    [
        ("dcu", r"^CDI device ID 'dcu' is not of the form <vendor>/<class>=<name>$"),
        ("k8s.dcu.hygon.com/dcu=", r"^CDI device ID .* is not of the form"),
        (
            "other.com/gpu=0",
            r"^CDI device other\.com/gpu=0: no CDI spec has kind other\.com/gpu "
            r"\(kinds: k8s\.dcu\.hygon\.com/dcu\)$",
        ),
        (
            f"{KIND}=gone",
            r"^CDI device k8s\.dcu\.hygon\.com/dcu=gone: no spec of kind .* defines a device "
            r"named 'gone'; the claim was not prepared",
        ),
    ],
    ids=["no-kind", "no-name", "unknown-kind", "unknown-device"],
)
def test_an_id_no_spec_resolves_is_an_error_naming_it(cdi_id: str, message: str) -> None:
    with pytest.raises(ContainerViewError, match=message):
        resolve_paths([spec(KIND, {"a": {"deviceNodes": [node("/dev/a")]}})], [cdi_id])


def test_without_specs_the_error_says_there_are_none() -> None:
    with pytest.raises(ContainerViewError, match=r"\(kinds: none: no specs were given\)$"):
        resolve_paths([], [f"{KIND}=a"])


def test_parse_cdi_id_splits_kind_and_name() -> None:
    assert parse_cdi_id(f"{KIND}=uid-dcu-0000-3b-00-0") == (KIND, "uid-dcu-0000-3b-00-0")


def test_a_device_two_specs_define_is_an_error() -> None:
    specs = [spec(KIND, {"a": {}}), spec(KIND, {"a": {}})]
    with pytest.raises(ContainerViewError, match=r"^CDI device .*=a is defined by two specs"):
        resolve_paths(specs, [f"{KIND}=a"])


@pytest.mark.parametrize(
    ("edits", "message"),
    [
        ({"deviceNodes": [{"hostPath": "/x"}]}, r"a deviceNodes entry has container path None"),
        ({"mounts": [{"containerPath": "/c"}]}, r"a mounts entry has host path None"),
        ({"mounts": [mount("c", "/h")]}, r"a mounts entry has container path 'c'; an absolute"),
        ({"deviceNodes": [node("/dev/../etc/x")]}, r"container path '/dev/\.\./etc/x' contains"),
    ],
    ids=["node-without-path", "mount-without-host-path", "relative", "dot-dot"],
)
def test_an_entry_without_a_usable_path_is_an_error(edits: dict[str, Any], message: str) -> None:
    with pytest.raises(ContainerViewError, match=rf"^CDI device {KIND}=a: {message}"):
        resolve_paths([spec(KIND, {"a": edits})], [f"{KIND}=a"])


# --- laying it out ------------------------------------------------------------------------


def write_specs(spec_dir: Path, *specs: dict[str, Any]) -> Path:
    """The specs as files in ``spec_dir``, for the CDI library."""
    spec_dir.mkdir(parents=True)
    for index, document in enumerate(specs):
        (spec_dir / f"{index}.json").write_text(json.dumps(document))
    return spec_dir


def char_device(path: Path, major: int, minor: int) -> Path:
    """A character device from the local/experimental range (240-254): nothing real."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(major, minor))
    return path


def test_model_view_links_every_path_to_its_host_path(tmp_path: Path) -> None:
    host = tmp_path / "host"
    (host / "vdev").mkdir(parents=True)
    (host / "vdev/vdev0.conf").write_text("x")
    specs = [
        spec(
            KIND,
            {"a": {"deviceNodes": [node("/dev/dri/renderD129", str(host / "r"))]}},
            mounts=[mount("/etc/vdev/docker", str(host / "vdev"))],
        )
    ]
    view = build_model_view(tmp_path / "ctr", specs, [f"{KIND}=a"])
    assert (view.root, view.container) == (tmp_path / "ctr", None)
    assert os.readlink(view.at("/dev/dri/renderD129")) == str(host / "r")
    assert (view.at("/etc/vdev/docker") / "vdev0.conf").read_text() == "x"


@needs_root
def test_runtime_view_makes_device_nodes_and_links_mounts(tmp_path: Path) -> None:
    host = tmp_path / "host"
    (host / "vdev").mkdir(parents=True)
    (host / "vdev/vdev0.conf").write_text("x")
    render = char_device(host / "renderD129", 241, 129)
    specs = write_specs(
        tmp_path / "cdi",
        spec(
            KIND,
            {"a": {"deviceNodes": [node("/dev/dri/renderD129", str(render))]}},
            mounts=[mount("/etc/vdev/docker", str(host / "vdev"))],
        ),
    )
    view = build_container_view(tmp_path / "ctr", [specs], [f"{KIND}=a"])
    made = view.at("/dev/dri/renderD129").lstat()
    assert stat.S_ISCHR(made.st_mode) and made.st_rdev == os.makedev(241, 129)
    assert [(p.container_path, p.kind) for p in view.paths] == [
        ("/dev/dri/renderD129", EditKind.DEVICE_NODE),
        ("/etc/vdev/docker", EditKind.MOUNT),
    ]
    assert os.readlink(view.at("/etc/vdev/docker")) == str(host / "vdev")
    assert (view.at("/etc/vdev/docker") / "vdev0.conf").read_text() == "x"


def test_view_refuses_a_directory_that_is_not_empty(tmp_path: Path) -> None:
    (tmp_path / "ctr").mkdir()
    (tmp_path / "ctr/left-over").write_text("")
    specs = write_specs(tmp_path / "cdi", spec(KIND, {"a": {"env": ["A=1"]}}))
    with pytest.raises(ContainerViewError, match=r"^.*/ctr is not empty: a container view needs"):
        build_container_view(tmp_path / "ctr", [specs], [f"{KIND}=a"])


@pytest.mark.parametrize("runtime", [True, False], ids=["cdi-library", "model"])
def test_view_never_writes_through_a_mount_onto_the_host(tmp_path: Path, runtime: bool) -> None:
    """/dev/dri mounted from the host, then /dev/dri/card1: the node would land on the host."""
    if runtime and PLAIN:
        pytest.skip("the CDI library path needs root for its device node (CI is root)")
    host_dri = tmp_path / "host-dri"
    host_dri.mkdir()
    card = str(char_device(tmp_path / "card1", 242, 1)) if runtime else None
    document = spec(
        KIND,
        {"a": {"deviceNodes": [node("/dev/dri/card1", card)]}},
        mounts=[mount("/dev/dri", str(host_dri))],
    )
    with pytest.raises(ContainerViewError, match=r"^/dev/dri/card1 \(from .*=a\) lies inside"):
        if runtime:
            build_container_view(
                tmp_path / "ctr", [write_specs(tmp_path / "cdi", document)], [f"{KIND}=a"]
            )
        else:
            build_model_view(tmp_path / "ctr", [document], [f"{KIND}=a"])
    assert list(host_dri.iterdir()) == []


@pytest.mark.parametrize("runtime", [True, False], ids=["cdi-library", "model"])
def test_view_refuses_a_path_below_a_device_node(tmp_path: Path, runtime: bool) -> None:
    """Sorted shallow-first, /dev/dri/card1 comes first; nothing can lie below a node."""
    if runtime and PLAIN:
        pytest.skip("the CDI library path needs root for its device nodes (CI is root)")
    hosts = (
        [str(char_device(tmp_path / n, 242, i)) for i, n in enumerate(["c1", "x"])]
        if runtime
        else [None, None]
    )
    document = spec(
        KIND,
        {
            "a": {"deviceNodes": [node("/dev/dri/card1", hosts[0])]},
            "b": {"deviceNodes": [node("/dev/dri/card1/x", hosts[1])]},
        },
    )
    ids = [f"{KIND}=a", f"{KIND}=b"]
    with pytest.raises(ContainerViewError, match=r"^/dev/dri/card1/x \(from .*=b\) lies inside"):
        if runtime:
            build_container_view(tmp_path / "ctr", [write_specs(tmp_path / "cdi", document)], ids)
        else:
            build_model_view(tmp_path / "ctr", [document], ids)
