"""Tests of dra_driver.cdi.validate: strict rules, official schema, files, conflicts."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dra_driver import cdi
from dra_driver.cdi.model import ContainerEdits, Device, Spec, device_name_problem, kind_problem
from dra_driver.cdi.validate import (
    BUNDLED_SCHEMA_DIR,
    find_conflicts,
    format_path,
    validate_document,
    validate_file,
    validate_spec,
)
from dra_driver.errors import CdiError, CdiValidationError

#: The Go parser's grammar written as regexes: an independent oracle for the hand-written checks.
GO_DEVICE_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9_.:-]*[A-Za-z0-9])?")
GO_KIND_PART = re.compile(r"[A-Za-z][A-Za-z0-9_.-]*[A-Za-z0-9]")

Doc = dict[str, Any]


def device(name: str = "dcu0", edits: Doc | None = None, **extra: object) -> Doc:
    return {"name": name, "containerEdits": {"env": ["A=1"]} if edits is None else edits, **extra}


def document(
    *devices: Doc, version: str = "0.3.0", kind: str = "example.com/dcu", **top: object
) -> Doc:
    return {"cdiVersion": version, "kind": kind, "devices": list(devices) or [device()], **top}


def edits_doc(version: str = "0.3.0", **edits: object) -> Doc:
    return document(device(edits=dict(edits)), version=version)


def test_a_minimal_spec_is_valid() -> None:
    assert validate_document(document(), schema_dir=BUNDLED_SCHEMA_DIR) == []


FULL_SPEC: Doc = {
    "cdiVersion": "1.1.0",
    "kind": "k8s.dcu.hygon.com/vdcu.v1",
    "annotations": {"dcu.hygon.com/claim": "uid-1", "note": ""},
    "containerEdits": {},
    "devices": [
        {
            "name": "0d3c9a6e-1b2f:share.1",
            "annotations": {"a": "b"},
            "containerEdits": {
                "env": ["A=", "B=x=y"],
                "deviceNodes": [
                    {
                        "path": "/dev/kfd",
                        "hostPath": "/mock/dev/kfd",
                        "type": "c",
                        "major": 235,
                        "minor": 0,
                        "fileMode": 0o666,
                        "permissions": "rw",
                        "uid": 0,
                        "gid": 44,
                    }
                ],
                "netDevices": [{"hostInterfaceName": "eth1", "name": "net0"}],
                "hooks": [
                    {
                        "hookName": "createContainer",
                        "path": "/usr/bin/hook",
                        "args": ["hook", "-v"],
                        "env": ["X=1"],
                        "timeout": 5,
                    }
                ],
                "mounts": [
                    {
                        "hostPath": "/opt/hyhal",
                        "containerPath": "/opt/hyhal",
                        "options": ["ro", "bind"],
                        "type": "bind",
                    }
                ],
                "intelRdt": {
                    "closID": "/",
                    "l3CacheSchema": "L3:0=f",
                    "memBwSchema": "MB:0=50",
                    "schemata": ["L3:0=f"],
                    "enableMonitoring": True,
                },
                "additionalGids": [44, 4294967295],
            },
        }
    ],
}


@pytest.mark.parametrize(
    "doc",
    [
        FULL_SPEC,
        document(version="0.6.0", kind="example.com/dcu.v2"),
        document(device("0"), version="0.5.0"),
        document(containerEdits={}),
        edits_doc("0.7.0", intelRdt={"enableCMT": True, "enableMBM": False}),
        edits_doc("0.7.0", intelRdt={}),
        document(version="1.0.0"),
    ],
    ids=[
        "every-field",
        "dot-in-class-at-0.6.0",
        "digit-name-at-0.5.0",
        "empty-spec-edits",
        "legacy-rdt-keys-before-1.1.0",
        "empty-intel-rdt-is-a-device-edit",
        "newer-than-needed",
    ],
)
def test_valid_documents_pass_both_checks(doc: Doc) -> None:
    assert validate_document(doc, schema_dir=BUNDLED_SCHEMA_DIR) == []


# One case per strict rule: the document, the JSON path of the single problem, and a regex
# the rest of the line must match in full.
STRICT_RULE_CASES: list[tuple[str, object, str, str]] = [
    ("top-level-not-object", [], "$", r"must be an object, not array"),
    (
        "unknown-top-level-key",
        {**document(), "devicez": []},
        "$",
        r"unknown key 'devicez' \(did you mean 'devices'\?\); the CDI library rejects the "
        r"whole file\. Allowed: annotations, cdiVersion, containerEdits, devices, kind",
    ),
    (
        "misspelled-additional-gids",
        edits_doc("0.7.0", additionalGIDs=[1], env=["A=1"]),
        "$.devices[0].containerEdits",
        r"unknown key 'additionalGIDs' \(did you mean 'additionalGids'\?\).*",
    ),
    (
        "misspelled-schemata",
        edits_doc("0.7.0", intelRdt={"schema": ["L3:0=f"]}),
        "$.devices[0].containerEdits.intelRdt",
        r"unknown key 'schema' \(did you mean 'schemata'\?\).*",
    ),
    (
        "unknown-device-node-key",
        edits_doc(deviceNodes=[{"path": "/dev/x", "hostpath": "/y"}]),
        "$.devices[0].containerEdits.deviceNodes[0]",
        r"unknown key 'hostpath' \(did you mean 'hostPath'\?\).*",
    ),
    (
        "legacy-rdt-key-at-1.1.0",
        edits_doc("1.1.0", intelRdt={"enableCMT": True}),
        "$.devices[0].containerEdits.intelRdt",
        r"unknown key 'enableCMT'.*",
    ),
    (
        "missing-cdi-version",
        {"kind": "example.com/dcu", "devices": [device()]},
        "$",
        r"missing required key 'cdiVersion'",
    ),
    ("version-not-string", document(version=5), "$.cdiVersion", r"must be a string, not integer"),  # type: ignore[arg-type]
    (
        "unknown-version",
        document(version="0.2.0"),
        "$.cdiVersion",
        r"unknown version '0\.2\.0' \(known: 0\.3\.0, .*, 1\.1\.0\)",
    ),
    (
        "version-with-v",
        document(version="v0.3.0"),
        "$.cdiVersion",
        r"unknown version 'v0\.3\.0'; write '0\.3\.0' without the 'v' \(known: .*\)",
    ),
    (
        "version-too-old-for-host-path",
        edits_doc(deviceNodes=[{"path": "/dev/x", "hostPath": "/y"}]),
        "$.cdiVersion",
        r"'0\.3\.0' is too old for the fields used \(device node hostPath at "
        r"\$\.devices\[0\]\.containerEdits\.deviceNodes\[0\]\.hostPath needs 0\.5\.0\); "
        r"use at least '0\.5\.0'",
    ),
    (
        "version-too-old-for-digit-name",
        document(device("0")),
        "$.cdiVersion",
        r"'0\.3\.0' is too old .*a device name starting with a digit .* use at least '0\.5\.0'",
    ),
    (
        "version-too-old-for-net-devices",
        edits_doc("0.8.0", netDevices=[{"hostInterfaceName": "eth1", "name": "n0"}]),
        "$.cdiVersion",
        r"'0\.8\.0' is too old .*netDevices.* use at least '1\.1\.0'",
    ),
    (
        "kind-without-slash",
        document(kind="dcu"),
        "$.kind",
        r"kind 'dcu' must have the form <vendor>/<class>",
    ),
    (
        "kind-vendor-starting-with-digit",
        document(kind="1vendor.com/dcu"),
        "$.kind",
        r"kind '1vendor\.com/dcu': vendor '1vendor\.com' must start with a letter",
    ),
    (
        "kind-class-with-slash",
        document(kind="example.com/dcu/x"),
        "$.kind",
        r"kind 'example\.com/dcu/x': class 'dcu/x' contains '/'; .*",
    ),
    (
        "device-name-bad-char",
        document(device("dcu 0")),
        "$.devices[0].name",
        r"device name 'dcu 0' contains ' '; only letters, digits, '_', '-', '\.' and ':' are "
        r"allowed",
    ),
    (
        "device-name-bad-end",
        document(device("dcu-")),
        "$.devices[0].name",
        r"device name 'dcu-' must end with a letter or digit",
    ),
    ("no-devices", {**document(), "devices": []}, "$.devices", r"a spec needs at least one device"),
    (
        "devices-not-array",
        {**document(), "devices": {}},
        "$.devices",
        r"must be an array, not object",
    ),
    (
        "empty-device-edits",
        document(device(edits={})),
        "$.devices[0].containerEdits",
        r"a device's containerEdits must not be empty \(Go: 'empty device edits'\)",
    ),
    (
        "device-edits-with-only-empty-lists",
        document(device(edits={"env": [], "mounts": []})),
        "$.devices[0].containerEdits",
        r"a device's containerEdits must not be empty.*",
    ),
    (
        "missing-device-edits",
        document({"name": "dcu0"}),
        "$.devices[0]",
        r"missing required key 'containerEdits'",
    ),
    (
        "duplicate-device-names",
        document(device("dcu0"), device("dcu0")),
        "$.devices[1].name",
        r"duplicate device name 'dcu0' \(also devices\[0\]\)",
    ),
    (
        "env-without-equals",
        edits_doc(env=["FOO"]),
        "$.devices[0].containerEdits.env[0]",
        r"'FOO' must have the form NAME=VALUE",
    ),
    (
        "env-starting-with-equals",
        edits_doc(env=["=x"]),
        "$.devices[0].containerEdits.env[0]",
        r"'=x' must not start with '=' \(empty NAME\)",
    ),
    (
        "env-not-string",
        edits_doc(env=[1]),
        "$.devices[0].containerEdits.env[0]",
        r"must be a string, not integer",
    ),
    (
        "device-node-bad-type",
        edits_doc(deviceNodes=[{"path": "/dev/x", "type": "x"}]),
        "$.devices[0].containerEdits.deviceNodes[0].type",
        r"'x' is not a device type \(one of b, c, u, p or empty\)",
    ),
    (
        "device-node-bad-permissions",
        edits_doc(deviceNodes=[{"path": "/dev/x", "permissions": "rwx"}]),
        "$.devices[0].containerEdits.deviceNodes[0].permissions",
        r"'rwx' must be a subset of 'rwm'",
    ),
    (
        "device-node-negative-major",
        edits_doc(deviceNodes=[{"path": "/dev/x", "major": -1}]),
        "$.devices[0].containerEdits.deviceNodes[0].major",
        r"-1 is out of range for a device number \(0\.\.9223372036854775807\)",
    ),
    (
        "device-node-boolean-minor",
        edits_doc(deviceNodes=[{"path": "/dev/x", "minor": True}]),
        "$.devices[0].containerEdits.deviceNodes[0].minor",
        r"must be an integer, not boolean",
    ),
    (
        "device-node-float-major",
        edits_doc(deviceNodes=[{"path": "/dev/x", "major": 1.0}]),
        "$.devices[0].containerEdits.deviceNodes[0].major",
        r"must be an integer, not number",
    ),
    (
        "device-node-uid-too-large",
        edits_doc(deviceNodes=[{"path": "/dev/x", "uid": 2**32}]),
        "$.devices[0].containerEdits.deviceNodes[0].uid",
        r"4294967296 is out of range for a uint32 id \(0\.\.4294967295\)",
    ),
    (
        "device-node-empty-path",
        edits_doc(deviceNodes=[{"path": ""}]),
        "$.devices[0].containerEdits.deviceNodes[0].path",
        r"must not be empty",
    ),
    (
        "hook-bad-name",
        edits_doc(hooks=[{"hookName": "preStart", "path": "/bin/true"}]),
        "$.devices[0].containerEdits.hooks[0].hookName",
        r"'preStart' is not a hook name \(one of createContainer, createRuntime, poststart, "
        r"poststop, prestart, startContainer\)",
    ),
    (
        "hook-relative-path",
        edits_doc(hooks=[{"hookName": "prestart", "path": "bin/true"}]),
        "$.devices[0].containerEdits.hooks[0].path",
        r"'bin/true' must be an absolute path",
    ),
    (
        "hook-zero-timeout",
        edits_doc(hooks=[{"hookName": "prestart", "path": "/bin/true", "timeout": 0}]),
        "$.devices[0].containerEdits.hooks[0].timeout",
        r"0 is out of range for a timeout in seconds \(1\.\..*\)",
    ),
    (
        "hook-env-without-equals",
        edits_doc(hooks=[{"hookName": "prestart", "path": "/bin/true", "env": ["X"]}]),
        "$.devices[0].containerEdits.hooks[0].env[0]",
        r"'X' must have the form NAME=VALUE",
    ),
    (
        "mount-missing-container-path",
        edits_doc(mounts=[{"hostPath": "/h"}]),
        "$.devices[0].containerEdits.mounts[0]",
        r"missing required key 'containerPath'",
    ),
    (
        "mount-empty-host-path",
        edits_doc(mounts=[{"hostPath": "", "containerPath": "/c"}]),
        "$.devices[0].containerEdits.mounts[0].hostPath",
        r"must not be empty",
    ),
    (
        "annotation-value-not-string",
        document(version="0.6.0", annotations={"a": 1}),
        "$.annotations.a",
        r"must be a string, not integer",
    ),
    (
        "annotation-key-invalid",
        document(version="0.6.0", annotations={"-bad": "x"}),
        '$.annotations["-bad"]',
        r"annotation key must be a qualified name: .*",
    ),
    (
        "additional-gid-negative",
        edits_doc("0.7.0", additionalGids=[-1]),
        "$.devices[0].containerEdits.additionalGids[0]",
        r"-1 must be a uint32 group id",
    ),
    (
        "net-device-duplicate-host-interface",
        edits_doc(
            "1.1.0",
            netDevices=[
                {"hostInterfaceName": "eth1", "name": "a"},
                {"hostInterfaceName": "eth1", "name": "b"},
            ],
        ),
        "$.devices[0].containerEdits.netDevices[1].hostInterfaceName",
        r"'eth1' repeats netDevices\[0\]",
    ),
    (
        "intel-rdt-bad-clos-id",
        edits_doc("0.7.0", intelRdt={"closID": "a/b"}),
        "$.devices[0].containerEdits.intelRdt.closID",
        r"'a/b' must be a valid file name or '/'",
    ),
    (
        "spec-edits-not-object",
        document(containerEdits=[]),
        "$.containerEdits",
        r"must be an object, not array",
    ),
]


@pytest.mark.parametrize(
    ("doc", "path", "message"),
    [case[1:] for case in STRICT_RULE_CASES],
    ids=[case[0] for case in STRICT_RULE_CASES],
)
def test_each_strict_rule_reports_one_line_saying_what_is_wrong(
    doc: object, path: str, message: str
) -> None:
    problems = validate_document(doc)
    assert len(problems) == 1, problems
    prefix = f"{path}: "
    assert problems[0].startswith(prefix), problems
    assert re.fullmatch(message, problems[0][len(prefix) :]), problems[0]


def test_the_official_schema_reports_type_errors_with_their_json_path() -> None:
    doc = edits_doc(deviceNodes=[{"path": "/dev/x", "major": "235"}])
    problems = validate_document(doc, schema_dir=BUNDLED_SCHEMA_DIR)
    assert problems == [
        "$.devices[0].containerEdits.deviceNodes[0].major: must be an integer, not string",
        "$.devices[0].containerEdits.deviceNodes[0].major: '235' is not of type 'integer' "
        "(official schema)",
    ]


def test_the_official_schema_is_used_only_when_asked() -> None:
    doc = edits_doc(deviceNodes=[{"path": 3}])
    assert not any(p.endswith("(official schema)") for p in validate_document(doc))
    assert any(
        p.startswith("$.devices[0].containerEdits.deviceNodes[0].path: 3 is not of type")
        for p in validate_document(doc, schema_dir=BUNDLED_SCHEMA_DIR)
    )


def git_blob_id(data: bytes) -> str:
    """The id git gives a file's content (``git hash-object``), as upstream's tree lists it."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def test_the_vendored_schema_is_upstreams_files_unchanged() -> None:
    """Regression: the schema was read from a folder beside the checkout, so a clone alone
    could not run the tests. The package carries it, byte for byte as its README records."""
    readme = (BUNDLED_SCHEMA_DIR / "README.md").read_text(encoding="utf-8")
    assert "cncf-tags/container-device-interface" in readme
    assert "Apache-2.0" in readme
    for name in ("schema.json", "defs.json"):
        blob = git_blob_id((BUNDLED_SCHEMA_DIR / name).read_bytes())
        assert f"| Git blob of `{name}` | `{blob}` |" in readme, f"{name} differs from upstream"
    assert BUNDLED_SCHEMA_DIR.is_relative_to(Path(cdi.__file__).resolve().parent)


def test_the_vendored_schema_checks_top_level_container_edits() -> None:
    """Upstream's main after v1.1.0 checks the spec-level containerEdits: we ship that one."""
    doc = document(
        containerEdits={"hooks": [{"hookName": "prestart", "path": "/bin/true", "timeout": 2**40}]}
    )
    assert validate_document(doc) == []  # the Go library's rules do not bound the timeout
    assert validate_document(doc, schema_dir=BUNDLED_SCHEMA_DIR) == [
        "$.containerEdits.hooks[0].timeout: 1099511627776 is greater than the maximum of "
        "4294967295 (official schema)"
    ]


def test_a_missing_schema_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(CdiError, match=r"^cannot load the official CDI schema from "):
        validate_document(document(), schema_dir=tmp_path)


def test_format_path_quotes_keys_that_are_not_identifiers() -> None:
    assert format_path(("annotations", "cdi.k8s.io/x", "devices", 2)) == (
        '$.annotations["cdi.k8s.io/x"].devices[2]'
    )


def test_validate_spec_raises_with_every_problem() -> None:
    spec = Spec(
        kind="example.com/dcu",
        devices=(
            Device(name="dcu0", container_edits=ContainerEdits(env=("NOPE",))),
            Device(name="dcu0", container_edits=ContainerEdits(env=("A=1",))),
        ),
    )
    with pytest.raises(
        CdiValidationError,
        match=r"^CDI spec of kind 'example\.com/dcu': "
        r"\$\.devices\[0\]\.containerEdits\.env\[0\]: 'NOPE' must have the form NAME=VALUE; "
        r"\$\.devices\[1\]\.name: duplicate device name 'dcu0' \(also devices\[0\]\)$",
    ) as raised:
        validate_spec(spec)
    assert len(raised.value.problems) == 2


# --- files -------------------------------------------------------------------------------------


def test_validate_file_reads_json_and_yaml(tmp_path: Path) -> None:
    json_file = tmp_path / "a.json"
    json_file.write_text(json.dumps(document()))
    yaml_file = tmp_path / "b.yaml"
    yaml_file.write_text(
        "cdiVersion: 0.3.0\nkind: example.com/dcu\ndevices:\n"
        "- name: dcu0\n  containerEdits:\n    env: [A=1]\n"
    )
    assert validate_file(json_file, schema_dir=BUNDLED_SCHEMA_DIR) == []
    assert validate_file(yaml_file, schema_dir=BUNDLED_SCHEMA_DIR) == []


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("a.json", b'{"cdiVersion": "0.3.0",', r"invalid JSON at line 1 column 24: .*"),
        ("a.json", b'{"kind": "a/b", "kind": "c/d"}', r"invalid JSON: duplicate key 'kind'"),
        ("a.json", b'{"major": NaN}', r"invalid JSON: NaN is not a JSON number"),
        ("a.yaml", b"kind: [a\n", r"invalid YAML at line 2 column 1: .*"),
        (
            "a.yaml",
            b"kind: a/b\nkind: c/d\n",
            r"invalid YAML at line 2 column 1: while constructing a mapping, "
            r"found duplicate key 'kind'",
        ),
        (
            "a.yaml",
            b"a: 1\n---\nb: 2\n",
            r"invalid YAML at line 2 column 1: expected a single document in the stream, but found "
            r"another document",
        ),
        ("a.yaml", b"", r".*/a\.yaml holds no document \(empty file or null\)"),
        ("a.json", b"\xff\xfe{}", r".*/a\.json is not UTF-8 text \(invalid start byte at byte 0\)"),
        (
            "a.yml",
            b"kind: a/b\n",
            r"a\.yml: not a CDI spec file name; runtimes read only \*\.json and \*\.yaml",
        ),
    ],
    ids=[
        "truncated-json",
        "duplicate-json-key",
        "json-nan",
        "corrupt-yaml",
        "duplicate-yaml-key",
        "two-yaml-documents",
        "empty-yaml",
        "not-utf8",
        "yml-extension",
    ],
)
def test_validate_file_reports_bad_content_as_one_line(
    tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    problems = validate_file(path)
    assert len(problems) == 1, problems
    assert re.fullmatch(message, problems[0]), problems[0]


def test_validate_file_reports_an_unreadable_file_as_one_line(tmp_path: Path) -> None:
    directory = tmp_path / "dir.json"
    directory.mkdir()
    assert validate_file(directory) == [f"cannot read {directory}: Is a directory"]
    missing = tmp_path / "missing.json"
    assert validate_file(missing) == [f"cannot read {missing}: No such file or directory"]


# --- conflicts ---------------------------------------------------------------------------------


def write_json(path: Path, doc: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


def test_find_conflicts_reports_a_device_defined_twice_in_one_directory(tmp_path: Path) -> None:
    a = write_json(tmp_path / "a.json", document(device("dcu0"), device("dcu1")))
    b = write_json(tmp_path / "b.json", document(device("dcu1")))
    assert find_conflicts([a, b]) == [
        f"example.com/dcu=dcu1 is defined in 2 files of {tmp_path} (a.json, b.json): "
        "runtimes ignore it in all of them"
    ]


def test_find_conflicts_ignores_other_directories_kinds_and_repeats(tmp_path: Path) -> None:
    a = write_json(tmp_path / "etc" / "a.json", document())
    b = write_json(tmp_path / "run" / "b.json", document())
    c = write_json(tmp_path / "etc" / "c.json", document(kind="example.com/other"))
    broken = tmp_path / "etc" / "d.json"
    broken.write_text("{")
    assert find_conflicts([a, b, c, broken, a]) == []


# --- grammar properties ------------------------------------------------------------------------


@given(name=st.from_regex(GO_DEVICE_NAME, fullmatch=True))
def test_device_names_generated_from_the_grammar_are_accepted(name: str) -> None:
    assert device_name_problem(name) is None
    assert validate_document(document(device(name), version="0.5.0")) == []


@given(name=st.text() | st.from_regex(r"[\w.:-]{0,6}", fullmatch=True))
def test_a_device_name_is_accepted_iff_it_matches_the_go_grammar(name: str) -> None:
    assert (device_name_problem(name) is None) == bool(GO_DEVICE_NAME.fullmatch(name))


@given(kind=st.text() | st.from_regex(r"[\w.-]{0,5}/[\w./-]{0,5}", fullmatch=True))
def test_a_kind_is_accepted_iff_vendor_and_class_match_the_go_grammar(kind: str) -> None:
    vendor, slash, class_ = kind.partition("/")
    expected = bool(slash and GO_KIND_PART.fullmatch(vendor) and GO_KIND_PART.fullmatch(class_))
    assert (kind_problem(kind) is None) == expected
