"""Opaque configuration of this driver (``DcuConfig``): strict decoding and precedence.

A DeviceClass or a ResourceClaim may carry ``config[].opaque`` entries for our driver; the
scheduler copies them into ``status.allocation.devices.config[]`` with ``source: FromClass``
or ``FromClaim``. This module turns those entries into the effective ``model.DcuConfig`` of
each request. Pure: reads only its own JSON schema (package data), never the API.

Decoding is strict (unknown fields, versions and kinds are errors) because people write these
by hand and a silently ignored typo (``cuLayot``) would give them a layout they did not ask
for. Precedence follows the Go helper and dra-example-driver: class configs first, then claim
configs, each in list order; an entry applies to the requests it lists (none = every request)
and a later entry overrides an earlier one field by field.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from typing import TYPE_CHECKING, Any

from dra_driver.errors import ClaimConfigError, quoted
from dra_driver.vdcu.allocator import Layout

if TYPE_CHECKING:
    # Imported where a config is validated: most claims carry none, and jsonschema takes
    # longer to import than the daemon takes to open its socket.
    import jsonschema

API_VERSION = "dcu.hygon.com/v1alpha1"
KIND = "DcuConfig"
#: The API server's own limit on ``opaque.parameters``; checked again before we decode, so a
#: huge value (from a server without the limit, or a test) is never parsed or validated.
MAX_PARAMETERS_BYTES = 10 * 1024
#: A DcuConfig is flat (depth 1); 10 KiB of ``[`` nest 5000 deep, which would exhaust Python's
#: recursion limit in any code that walks the value (repr, the schema check). Deeper
#: parameters are refused before anything walks them.
MAX_PARAMETERS_DEPTH = 32
#: Unknown fields listed by name in one message; the rest are counted.
_MAX_LISTED_FIELDS = 5
#: (package, path) of the JSON schema of each supported (apiVersion, kind).
_SCHEMAS: Mapping[tuple[str, str], tuple[str, ...]] = {
    (API_VERSION, KIND): ("vdcu", "schemas", "dcuconfig.v1alpha1.json"),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class DcuConfig:
    """The effective opaque configuration of one request (class config, then claim config)."""

    cu_layout: Layout = Layout.PACKED
    """How the share's CUs are chosen on the card (``packed`` or ``spread``)."""


class ConfigSource(StrEnum):
    """Where an allocation's config entry came from (``DeviceAllocationConfiguration.source``)."""

    FROM_CLASS = "FromClass"
    FROM_CLAIM = "FromClaim"


#: Class configs apply first, so a claim can override what its class sets.
_SOURCE_ORDER = {ConfigSource.FROM_CLASS: 0, ConfigSource.FROM_CLAIM: 1}


@dataclass(frozen=True, slots=True, kw_only=True)
class OpaqueConfig:
    """One decoded config entry for this driver: its scope and the fields it sets."""

    source: ConfigSource
    requests: tuple[str, ...]
    """Requests (``req`` or ``req/sub``) it applies to; empty = every request of the claim."""
    cu_layout: Layout | None = None
    """None: the entry does not set ``cuLayout`` (an earlier entry's value stays)."""

    def applies_to(self, request: str) -> bool:
        """Whether this entry configures the allocation result of ``request``.

        ``request`` is a result's full name: naming the main request (``dcu``) also covers its
        subrequests (``dcu/small``), as the API documents for ``config[].requests``.
        """
        if not self.requests:
            return True
        return request in self.requests or request.split("/", 1)[0] in self.requests


def decode_configs(entries: object, *, driver: str) -> list[OpaqueConfig]:
    """Decode ``status.allocation.devices.config`` for ``driver``, in precedence order.

    Entries of other drivers are skipped. Every entry of ours is decoded, even one naming
    requests without results here, so a broken config is reported at once. Raises
    ``ClaimConfigError`` naming the entry and the field.
    """
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise ClaimConfigError("allocation config must be a list")
    decoded: list[OpaqueConfig] = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            raise ClaimConfigError(f"allocation config #{index} is not an object")
        opaque = entry.get("opaque")
        if opaque is None:
            continue  # a future non-opaque kind of config: not ours to judge
        if not isinstance(opaque, Mapping):
            raise ClaimConfigError(f"allocation config #{index}: opaque is not an object")
        if opaque.get("driver") != driver:
            continue
        source = _source(entry.get("source"), index)
        requests = _requests(entry.get("requests"), index)
        subject = f"opaque config for {_describe_requests(requests)} from {_describe(source)}"
        decoded.append(
            decode_parameters(
                opaque.get("parameters"), source=source, requests=requests, subject=subject
            )
        )
    # Stable: list order is kept within each source.
    return sorted(decoded, key=lambda config: _SOURCE_ORDER[config.source])


def effective_config(configs: Iterable[OpaqueConfig], request: str) -> DcuConfig:
    """The config of one allocation result: defaults, then each applicable entry in order."""
    cu_layout = DcuConfig().cu_layout
    for config in configs:
        if config.applies_to(request) and config.cu_layout is not None:
            cu_layout = config.cu_layout
    return DcuConfig(cu_layout=cu_layout)


def decode_parameters(
    parameters: object,
    *,
    source: ConfigSource = ConfigSource.FROM_CLAIM,
    requests: Sequence[str] = (),
    subject: str = "opaque config",
) -> OpaqueConfig:
    """Decode one ``opaque.parameters`` value (a JSON object, or its raw text) strictly.

    Size first, then apiVersion and kind, then the schema; ``ClaimConfigError`` messages
    start with ``subject``.
    """
    document = _load_parameters(parameters, subject)
    api_version = document.get("apiVersion")
    kind = document.get("kind")
    supported = sorted({version for version, _ in _SCHEMAS})
    if api_version is None:
        raise ClaimConfigError(
            f"{subject}: field 'apiVersion' is required (supported: {', '.join(supported)})"
        )
    if not any(api_version == version for version, _ in _SCHEMAS):
        raise ClaimConfigError(
            f"{subject}: apiVersion {quoted(api_version)} is not supported "
            f"(supported: {', '.join(supported)})"
        )
    kinds = sorted(k for version, k in _SCHEMAS if version == api_version)
    if kind is None:
        raise ClaimConfigError(f"{subject}: field 'kind' is required (supported: {kinds[0]})")
    if not any(kind == k for k in kinds):
        raise ClaimConfigError(
            f"{subject}: kind {quoted(kind)} is not supported for apiVersion {api_version} "
            f"(supported: {', '.join(kinds)})"
        )
    validator = _validator(api_version, kind)
    problems = [_describe_error(error) for error in _sorted_errors(validator, document)]
    if problems:
        raise ClaimConfigError(f"{subject}: " + "; ".join(problems))
    layout = document.get("cuLayout")
    return OpaqueConfig(
        source=source,
        requests=tuple(requests),
        cu_layout=Layout(layout) if layout is not None else None,
    )


def schema(api_version: str = API_VERSION, kind: str = KIND) -> dict[str, Any]:
    """The JSON schema of a supported (apiVersion, kind), as shipped in the package."""
    package_path = _SCHEMAS[(api_version, kind)]
    text = resources.files("dra_driver").joinpath(*package_path).read_text(encoding="utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


@functools.cache
def _validator(api_version: str, kind: str) -> jsonschema.protocols.Validator:
    import jsonschema

    document = schema(api_version, kind)
    validator_class = jsonschema.validators.validator_for(document)
    validator: jsonschema.protocols.Validator = validator_class(document)
    return validator


def _load_parameters(parameters: object, subject: str) -> dict[str, Any]:
    """The parameters as a dict, after the size and depth checks."""
    if isinstance(parameters, (str, bytes)):
        raw = parameters.encode() if isinstance(parameters, str) else parameters
        _check_size(len(raw), subject)
        try:
            parameters = json.loads(raw)
        except ValueError as exc:
            raise ClaimConfigError(f"{subject}: parameters are not valid JSON: {exc}") from None
        except RecursionError:
            raise _depth_error(subject) from None
        _check_depth(parameters, subject)
    elif parameters is None:
        raise ClaimConfigError(f"{subject}: parameters are missing")
    else:
        _check_depth(parameters, subject)  # before json.dumps walks it
        try:
            size = len(json.dumps(parameters, separators=(",", ":"), ensure_ascii=False).encode())
        except (TypeError, ValueError, RecursionError) as exc:
            raise ClaimConfigError(f"{subject}: parameters are not JSON: {exc}") from None
        _check_size(size, subject)
    if not isinstance(parameters, dict):
        raise ClaimConfigError(
            f"{subject}: parameters must be a JSON object, got {_json_type(parameters)}"
        )
    return parameters


def _check_depth(value: object, subject: str) -> None:
    if _nesting_depth(value) > MAX_PARAMETERS_DEPTH:
        raise _depth_error(subject)


def _depth_error(subject: str) -> ClaimConfigError:
    return ClaimConfigError(
        f"{subject}: parameters are nested more than {MAX_PARAMETERS_DEPTH} levels deep"
    )


def _nesting_depth(value: object) -> int:
    """How deep objects and arrays nest in ``value`` (a scalar: 0); iterative, never recursive."""
    deepest = 0
    pending: list[tuple[object, int]] = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, Mapping):
            children: Iterable[object] = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth + 1)
        if deepest > MAX_PARAMETERS_DEPTH:
            return deepest  # deep enough to refuse; no need to walk the rest
        pending.extend((child, depth + 1) for child in children)
    return deepest


def _check_size(size: int, subject: str) -> None:
    if size > MAX_PARAMETERS_BYTES:
        raise ClaimConfigError(
            f"{subject}: parameters are {size} bytes, more than the {MAX_PARAMETERS_BYTES} allowed"
        )


def _sorted_errors(
    validator: jsonschema.protocols.Validator, document: dict[str, Any]
) -> list[jsonschema.ValidationError]:
    """Schema errors in field order; a wrong type hides the other errors of its field."""
    errors = list(validator.iter_errors(document))
    mistyped = {tuple(e.absolute_path) for e in errors if e.validator == "type"}
    errors = [e for e in errors if e.validator == "type" or tuple(e.absolute_path) not in mistyped]
    return sorted(errors, key=lambda e: ([str(p) for p in e.absolute_path], str(e.validator)))


def _describe_error(error: jsonschema.ValidationError) -> str:
    """One message per schema error, naming the field the user wrote."""
    path = ".".join(str(part) for part in error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        node = error.schema if isinstance(error.schema, Mapping) else {}
        allowed = list(node.get("properties", {}))
        extra = [key for key in error.instance if key not in allowed]
        noun = "field" if len(extra) == 1 else "fields"
        verb = "is" if len(extra) == 1 else "are"
        names = ", ".join(quoted(_join(path, key)) for key in extra[:_MAX_LISTED_FIELDS])
        if len(extra) > _MAX_LISTED_FIELDS:
            names += f" and {len(extra) - _MAX_LISTED_FIELDS} more"
        return f"{noun} {names} {verb} not allowed; allowed fields: {', '.join(allowed)}"
    if error.validator == "required" and isinstance(error.validator_value, list):
        present = error.instance if isinstance(error.instance, dict) else {}
        missing = [k for k in error.validator_value if k not in present]
        return "; ".join(f"field {_join(path, key)!r} is required" for key in missing)
    if error.validator == "enum" and isinstance(error.validator_value, list):
        choices = ", ".join(str(choice) for choice in error.validator_value)
        return f"field {path!r}: {quoted(error.instance)} is not one of: {choices}"
    if error.validator == "type":
        return f"field {path!r} must be a {error.validator_value}, got {_json_type(error.instance)}"
    if error.validator == "const":
        return f"field {path!r} must be {error.validator_value!r}, got {quoted(error.instance)}"
    return f"field {path!r}: {error.message}"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _source(value: object, index: int) -> ConfigSource:
    try:
        return ConfigSource(str(value))
    except ValueError:
        allowed = ", ".join(source.value for source in ConfigSource)
        raise ClaimConfigError(
            f"allocation config #{index}: source {quoted(value)} is not one of: {allowed}"
        ) from None


def _requests(value: object, index: int) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(r, str) for r in value):
        raise ClaimConfigError(f"allocation config #{index}: requests must be a list of names")
    return tuple(value)


def _describe(source: ConfigSource) -> str:
    return "class" if source is ConfigSource.FROM_CLASS else "claim"


def _describe_requests(requests: Sequence[str]) -> str:
    if not requests:
        return "all requests"
    if len(requests) == 1:
        return f"request {quoted(requests[0])}"
    listed = ", ".join(quoted(r) for r in requests[:_MAX_LISTED_FIELDS])
    more = len(requests) - _MAX_LISTED_FIELDS
    return f"requests {listed}" + (f" and {more} more" if more > 0 else "")
