"""Many documents: YAML text in, converted documents out, and YAML text again.

Owns parsing multi-document YAML (errors naming the line), passing documents without HAMi DCU
resources through unchanged, the checks across documents (something to convert, unique
template names) and printing. Must not read files or stdin, nor write anywhere: the CLI reads
the input and prints what this returns.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import yaml

from dra_driver.errors import ConvertError
from dra_driver.tools.convert.names import DCU_NAMES, HAMI_RESOURCES, HCU_NAMES
from dra_driver.tools.convert.options import ConvertOptions
from dra_driver.tools.convert.workload import (
    WORKLOAD_KINDS,
    Conversion,
    convert_manifest,
    kind_key,
    unsupported_kind,
)


def convert_documents(documents: Iterable[Any], options: ConvertOptions) -> Conversion:
    """Convert every workload that asks for HAMi DCUs; pass every other document through.

    Empty documents are dropped. A document of an unsupported kind that mentions HAMi DCU
    resources is an error, and so is input in which nothing asks for a DCU.
    """
    output: list[dict[str, Any]] = []
    warnings: list[str] = []
    converted = 0
    for number, document in enumerate(documents, start=1):
        if document is None:
            continue
        if not isinstance(document, dict):
            raise ConvertError(
                f"document {number} is not a Kubernetes object (a mapping with apiVersion and kind)"
            )
        is_workload = kind_key(document) in WORKLOAD_KINDS
        if not _mentions_hami_resources(document):
            output.append(document)
            continue
        if not is_workload:
            raise ConvertError(unsupported_kind(document))
        result = convert_manifest(document, options)
        output.extend(result.documents)
        warnings.extend(result.warnings)
        converted += 1
    if converted == 0:
        raise ConvertError(
            f"no workload in the input asks for {DCU_NAMES.count} (or {HCU_NAMES.count}): "
            "nothing to convert"
        )
    _check_unique_templates(output)
    return Conversion(documents=output, warnings=warnings)


def convert_text(text: str, options: ConvertOptions, *, source: str = "input") -> Conversion:
    """Parse multi-document YAML and convert it (see :func:`convert_documents`)."""
    return convert_documents(load_documents(text, source=source), options)


def load_documents(text: str, *, source: str = "input") -> list[Any]:
    """The documents of a multi-document YAML text; ConvertError naming the spot if invalid."""
    try:
        return list(yaml.safe_load_all(text))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        raise ConvertError(f"{source}: not valid YAML: {at}{exc.problem}") from exc
    except yaml.YAMLError as exc:
        raise ConvertError(f"{source}: not valid YAML: {exc}") from exc


def dump_documents(documents: Sequence[Mapping[str, Any]]) -> str:
    """Multi-document YAML, keys in their original order, each document after ``---``."""
    return yaml.safe_dump_all(
        [dict(document) for document in documents],
        sort_keys=False,
        explicit_start=True,
        default_flow_style=False,
        allow_unicode=True,
        width=4096,  # long CEL expressions stay on one line
    )


def _mentions_hami_resources(node: Any) -> bool:
    """Whether any mapping under ``node`` has a HAMi DCU resource name as a key."""
    if isinstance(node, dict):
        return any(
            (isinstance(key, str) and key in HAMI_RESOURCES) or _mentions_hami_resources(value)
            for key, value in node.items()
        )
    if isinstance(node, list):
        return any(_mentions_hami_resources(item) for item in node)
    return False


def _check_unique_templates(documents: Sequence[Mapping[str, Any]]) -> None:
    seen: set[tuple[str, str]] = set()
    for document in documents:
        if document.get("kind") != "ResourceClaimTemplate":
            continue
        metadata = document.get("metadata") or {}
        key = (str(metadata.get("namespace") or ""), str(metadata.get("name")))
        if key in seen:
            where = f"{key[0]}/{key[1]}" if key[0] else key[1]
            raise ConvertError(
                f"two documents would create ResourceClaimTemplate {where}: rename one of the "
                "workloads or containers"
            )
        seen.add(key)
