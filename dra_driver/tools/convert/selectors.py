"""A pod's HAMi card annotations (and the card size) -> CEL selectors on our attributes.

Owns turning ``use-dcutype``/``nouse-dcutype`` and ``use-gpuuuid``/``nouse-gpuuuid`` into CEL
expressions, checking their values so that no quote or space reaches CEL, and the selector
that keeps a share on cards of the size its CUs were computed for. Must not modify the
annotations (the workload module removes them) nor decide what to warn about.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from dra_driver import DRIVER_NAME
from dra_driver.errors import ConvertError
from dra_driver.tools.convert.names import NAME_SETS, NOUSE_UUID, USE_UUID
from dra_driver.tools.convert.options import ConvertOptions

# What a card type or id in an annotation may look like: no quotes or spaces reach CEL.
_TYPE_VALUE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_UUID_VALUE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
# The prefixes HAMi's card types carry ("DCU-Z100"); values are matched against the model.
_TYPE_PREFIXES = ("DCU-", "HCU-")


def annotation_selectors(annotations: Mapping[str, Any], *, where: str) -> list[str]:
    """CEL expressions for HAMi's card type and card id annotations of a pod (ANDed)."""
    expressions: list[str] = []
    model = _attribute("model")
    for names in NAME_SETS:
        if names.use_type in annotations:
            types = card_types(annotations[names.use_type], names.use_type, where)
            if len(types) == 1:
                expressions.append(f"{model}.upperAscii().contains({json.dumps(types[0])})")
            else:
                expressions.append(
                    f"{json.dumps(types)}.exists(t, {model}.upperAscii().contains(t))"
                )
        if names.nouse_type in annotations:
            types = card_types(annotations[names.nouse_type], names.nouse_type, where)
            expressions.extend(f"!{model}.upperAscii().contains({json.dumps(t)})" for t in types)
    uuid = _attribute("uuid")
    if USE_UUID in annotations:
        ids = _card_ids(annotations[USE_UUID], USE_UUID, where)
        expressions.append(f"{uuid} in {json.dumps(ids)}")
    if NOUSE_UUID in annotations:
        ids = _card_ids(annotations[NOUSE_UUID], NOUSE_UUID, where)
        expressions.append(f"!({uuid} in {json.dumps(ids)})")
    return expressions


def card_types(value: Any, key: str, where: str) -> list[str]:
    """Upper-case model substrings from a type annotation, without HAMi's DCU-/HCU- prefix."""
    types: list[str] = []
    for item in _comma_list(value, key, where):
        upper = item.upper()
        if not _TYPE_VALUE.match(item) or any(upper in prefix for prefix in _TYPE_PREFIXES):
            raise ConvertError(
                f"{where}: annotation {key} value {item!r} is not (part of) a DCU model name "
                "such as K100_AI or Z100"
            )
        for prefix in _TYPE_PREFIXES:
            upper = upper.removeprefix(prefix)
        if upper not in types:
            types.append(upper)
    return types


def _card_ids(value: Any, key: str, where: str) -> list[str]:
    ids: list[str] = []
    for item in _comma_list(value, key, where):
        if not _UUID_VALUE.match(item):
            raise ConvertError(
                f"{where}: annotation {key} value {item!r} is not a card id such as DCU-<serial>"
            )
        if item not in ids:
            ids.append(item)
    return ids


def _comma_list(value: Any, key: str, where: str) -> list[str]:
    """HAMi's comma-separated annotation values, trimmed (as HAMi does since #1965)."""
    if not isinstance(value, str):
        raise ConvertError(f"{where}: annotation {key} must be a string, not {value!r}")
    items = [item.strip() for item in value.split(",") if item.strip()]
    if not items:
        raise ConvertError(f"{where}: annotation {key} is empty; remove it or list values")
    return items


def _attribute(name: str) -> str:
    return f"device.attributes[{json.dumps(DRIVER_NAME)}].{name}"


def cel(expression: str) -> dict[str, Any]:
    """A CEL device selector as a claim request carries it."""
    return {"cel": {"expression": expression}}


def card_size_selector(options: ConvertOptions) -> str:
    """The selector that keeps a converted share on cards its CU count was computed for."""
    if options.model is not None:
        return f"{_attribute('model')} == {json.dumps(options.model)}"
    return f"{_attribute('computeUnits')} == {options.compute_units}"
