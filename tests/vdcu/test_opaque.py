"""Opaque DcuConfig: strict decoding with per-field messages, and class-then-claim precedence."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest

from dra_driver.errors import ClaimConfigError
from dra_driver.vdcu.allocator import Layout
from dra_driver.vdcu.opaque import (
    API_VERSION,
    KIND,
    MAX_PARAMETERS_BYTES,
    ConfigSource,
    DcuConfig,
    OpaqueConfig,
    decode_configs,
    decode_parameters,
    effective_config,
    schema,
)

DRIVER = "dcu.hygon.com"


def params(**fields: Any) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": KIND, **fields}


def entry(
    source: str, parameters: Any, *, requests: list[Any] | None = None, driver: str = DRIVER
) -> dict[str, Any]:
    config: dict[str, Any] = {
        "source": source,
        "opaque": {"driver": driver, "parameters": parameters},
    }
    if requests is not None:
        config["requests"] = requests
    return config


def test_schema_is_valid_and_strict() -> None:
    document = schema()
    jsonschema.validators.validator_for(document).check_schema(document)
    assert document["additionalProperties"] is False
    assert list(document["properties"]) == ["apiVersion", "kind", "cuLayout"]
    assert document["properties"]["cuLayout"]["enum"] == [layout.value for layout in Layout]


@pytest.mark.parametrize(
    ("parameters", "layout"),
    [
        (params(), None),
        (params(cuLayout="packed"), Layout.PACKED),
        (params(cuLayout="spread"), Layout.SPREAD),
        (json.dumps(params(cuLayout="spread")), Layout.SPREAD),
        (json.dumps(params()).encode(), None),
    ],
    ids=["no-fields", "packed", "spread", "raw-text", "raw-bytes"],
)
def test_valid_parameters_decode(parameters: Any, layout: Layout | None) -> None:
    config = decode_parameters(parameters, requests=["dcu"])
    assert config == OpaqueConfig(
        source=ConfigSource.FROM_CLAIM, requests=("dcu",), cu_layout=layout
    )


SUBJECT = "opaque config for request 'dcu' from claim"


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        (
            params(cuLayot="spread"),
            r"^opaque config for request 'dcu' from claim: field 'cuLayot' is not allowed; "
            r"allowed fields: apiVersion, kind, cuLayout$",
        ),
        (
            params(a=1, b=2),
            r"^opaque config for request 'dcu' from claim: fields 'a', 'b' are not allowed; "
            r"allowed fields: apiVersion, kind, cuLayout$",
        ),
        (
            params(cuLayout="diagonal"),
            r"^opaque config for request 'dcu' from claim: field 'cuLayout': 'diagonal' is not "
            r"one of: packed, spread$",
        ),
        (
            params(cuLayout=3),
            r"^opaque config for request 'dcu' from claim: field 'cuLayout' must be a string, "
            r"got number$",
        ),
        (
            params(cuLayout="up", extra=True),
            r"^opaque config .*: field 'extra' is not allowed; allowed fields: apiVersion, kind, "
            r"cuLayout; field 'cuLayout': 'up' is not one of: packed, spread$",
        ),
        (
            {"apiVersion": "dcu.hygon.com/v1", "kind": KIND},
            r"^opaque config for request 'dcu' from claim: apiVersion 'dcu\.hygon\.com/v1' is "
            r"not supported \(supported: dcu\.hygon\.com/v1alpha1\)$",
        ),
        (
            {"apiVersion": API_VERSION, "kind": "GpuConfig"},
            r"^opaque config .*: kind 'GpuConfig' is not supported for apiVersion "
            r"dcu\.hygon\.com/v1alpha1 \(supported: DcuConfig\)$",
        ),
        ({"kind": KIND}, r"^opaque config .*: field 'apiVersion' is required"),
        ({"apiVersion": API_VERSION}, r"^opaque config .*: field 'kind' is required"),
        ([1, 2], r"^opaque config .*: parameters must be a JSON object, got array$"),
        ("{not json", r"^opaque config .*: parameters are not valid JSON: "),
        (None, r"^opaque config .*: parameters are missing$"),
        ({"x": {1, 2}}, r"^opaque config .*: parameters are not JSON: "),
    ],
    ids=[
        "typo",
        "two-unknown-fields",
        "bad-enum",
        "wrong-type",
        "several-problems",
        "unknown-api-version",
        "unknown-kind",
        "no-api-version",
        "no-kind",
        "not-an-object",
        "not-json",
        "missing",
        "not-serializable",
    ],
)
def test_invalid_parameters_name_the_field(parameters: Any, message: str) -> None:
    with pytest.raises(ClaimConfigError, match=message):
        decode_parameters(parameters, requests=["dcu"], subject=SUBJECT)


@pytest.mark.parametrize(
    "parameters",
    [
        params(cuLayout="packed", padding="x" * MAX_PARAMETERS_BYTES),
        json.dumps(params(padding="x" * MAX_PARAMETERS_BYTES)),
        # Far too big and not even JSON: refused on size alone, never parsed.
        "{" * (MAX_PARAMETERS_BYTES + 1),
    ],
    ids=["object", "raw-text", "raw-garbage"],
)
def test_parameters_over_10_kib_are_rejected_before_parsing(parameters: Any) -> None:
    with pytest.raises(
        ClaimConfigError, match=r"^opaque config: parameters are \d+ bytes, more than the 10240"
    ):
        decode_parameters(parameters)


def test_parameters_of_exactly_10_kib_are_accepted() -> None:
    base = json.dumps(params(cuLayout="packed"), separators=(",", ":"))
    padding = MAX_PARAMETERS_BYTES - len(base) - len(',"x":""')
    text = base[:-1] + ',"x":"' + "y" * padding + '"}'
    assert len(text.encode()) == MAX_PARAMETERS_BYTES
    # Size passes; the schema then rejects the unknown field, proving it was parsed.
    with pytest.raises(ClaimConfigError, match=r"field 'x' is not allowed"):
        decode_parameters(text)


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        ([], {"a": Layout.PACKED, "b": Layout.PACKED}),
        (
            [entry("FromClass", params(cuLayout="spread"))],
            {"a": Layout.SPREAD, "b": Layout.SPREAD},
        ),
        (
            # Claim config overrides class config even when listed first.
            [
                entry("FromClaim", params(cuLayout="packed")),
                entry("FromClass", params(cuLayout="spread")),
            ],
            {"a": Layout.PACKED, "b": Layout.PACKED},
        ),
        (
            [entry("FromClaim", params(cuLayout="spread"), requests=["b"])],
            {"a": Layout.PACKED, "b": Layout.SPREAD},
        ),
        (
            # A later entry that does not set the field keeps the earlier value (per field).
            [
                entry("FromClass", params(cuLayout="spread")),
                entry("FromClaim", params()),
            ],
            {"a": Layout.SPREAD, "b": Layout.SPREAD},
        ),
        (
            # Later claim entries win over earlier ones.
            [
                entry("FromClaim", params(cuLayout="spread")),
                entry("FromClaim", params(cuLayout="packed"), requests=["a"]),
            ],
            {"a": Layout.PACKED, "b": Layout.SPREAD},
        ),
        (
            # Other drivers' configs are ignored, even invalid ones.
            [entry("FromClaim", {"whatever": True}, driver="gpu.example.com")],
            {"a": Layout.PACKED, "b": Layout.PACKED},
        ),
        (
            # A config naming the main request covers its subrequests.
            [entry("FromClaim", params(cuLayout="spread"), requests=["b"])],
            {"b/small": Layout.SPREAD, "a/small": Layout.PACKED},
        ),
        (
            # A config naming one subrequest covers only that one.
            [entry("FromClaim", params(cuLayout="spread"), requests=["b/small"])],
            {"b/small": Layout.SPREAD, "b/big": Layout.PACKED},
        ),
    ],
    ids=[
        "defaults",
        "class-config",
        "claim-overrides-class",
        "per-request",
        "per-field-override",
        "later-claim-entry-wins",
        "other-driver-ignored",
        "main-request-covers-subrequests",
        "subrequest-only",
    ],
)
def test_precedence(entries: list[dict[str, Any]], expected: dict[str, Layout]) -> None:
    configs = decode_configs(entries, driver=DRIVER)
    for request, layout in expected.items():
        assert effective_config(configs, request) == DcuConfig(cu_layout=layout), request


def test_class_configs_come_first_in_list_order() -> None:
    configs = decode_configs(
        [
            entry("FromClaim", params(cuLayout="packed"), requests=["x"]),
            entry("FromClass", params(cuLayout="spread"), requests=["y"]),
            entry("FromClass", params(), requests=["z"]),
        ],
        driver=DRIVER,
    )
    assert [(c.source, c.requests) for c in configs] == [
        (ConfigSource.FROM_CLASS, ("y",)),
        (ConfigSource.FROM_CLASS, ("z",)),
        (ConfigSource.FROM_CLAIM, ("x",)),
    ]


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        (
            [entry("FromClass", params(cuLayot="spread"))],
            r"^opaque config for all requests from class: field 'cuLayot' is not allowed",
        ),
        (
            [entry("FromClaim", params(cuLayot="spread"), requests=["a", "b"])],
            r"^opaque config for requests 'a', 'b' from claim: field 'cuLayot'",
        ),
        (
            # Validated although it names a request without a result of ours.
            [entry("FromClaim", params(cuLayout="x"), requests=["nowhere"])],
            r"^opaque config for request 'nowhere' from claim: field 'cuLayout'",
        ),
        ([entry("FromSomewhere", params())], r"^allocation config #0: source 'FromSomewhere'"),
        ([entry("FromClaim", params(), requests=[1])], r"^allocation config #0: requests must"),
        ({"not": "a list"}, r"^allocation config must be a list$"),
        (["x"], r"^allocation config #0 is not an object$"),
        ([{"source": "FromClaim", "opaque": "x"}], r"^allocation config #0: opaque is not"),
    ],
    ids=[
        "class-all-requests",
        "claim-two-requests",
        "unused-request",
        "bad-source",
        "bad-requests",
        "not-a-list",
        "entry-not-object",
        "opaque-not-object",
    ],
)
def test_invalid_entries_are_reported(entries: Any, message: str) -> None:
    with pytest.raises(ClaimConfigError, match=message):
        decode_configs(entries, driver=DRIVER)


def test_entries_without_opaque_config_are_skipped() -> None:
    assert decode_configs([{"source": "FromClaim", "requests": ["a"]}], driver=DRIVER) == []
    assert decode_configs(None, driver=DRIVER) == []
