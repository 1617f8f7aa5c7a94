"""Fuzzing the request path in-process: claim references, claims and opaque configs.

What the kubelet sends (namespace, name, UID) and what the API server holds (a claim's
allocation and its opaque config) are outside input. Here it goes, thousands of times, through
the pure checks (``claims.check_claim_ref``, ``claims.claim_from_json``,
``opaque.decode_parameters``) and, a few hundred times, through ``DraService`` and the real core
(``state.DcuPlugin``) on a mock node, with the claims served from memory. The properties:

- every failure is a ``DriverError`` whose message is one short printable line that starts
  with the claim and says what was wrong (each case knows the words to look for);
- good claims in the same request are prepared;
- nothing is written but the prepared claims' own files (vdev dir, CDI spec, checkpoint
  entry): none for a claim that failed, none outside the plugin data dir and the CDI dir.

The case model (:class:`ClaimCase`, :func:`fuzz_requests`) and the checks are shared with
tests/reliability/test_fuzz.py, which sends the same cases to the real daemon with the claims
in the real API server.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dra_driver import DRIVER_NAME
from dra_driver.cdi.model import spec_file_name
from dra_driver.cluster.kube.errors import NotFound
from dra_driver.errors import ClaimConfigError, ClaimError, DriverError, quoted
from dra_driver.kubeletplugin._pb import dra_v1_pb2, dra_v1_pb2_grpc
from dra_driver.kubeletplugin.claims import check_claim_ref, claim_from_json
from dra_driver.kubeletplugin.plugin_server import KubeletPluginServer
from dra_driver.kubeletplugin.servicer import (
    AbortCallError,
    CallSerializer,
    DraService,
    RequestedClaim,
)
from dra_driver.node.devices import discover
from dra_driver.node.mock import create_mock_node
from dra_driver.prepare.checkpoint import CHECKPOINT_FILE
from dra_driver.prepare.model import Claim, ClaimRef, ClaimUID, PrepareResult
from dra_driver.prepare.plugin import VDEV_SUBDIR, DcuPlugin, claim_kind
from dra_driver.vdcu.opaque import API_VERSION, KIND, MAX_PARAMETERS_BYTES, decode_parameters

#: The DCUs of the default mock node (2x Z100, 1x K100_AI), by device name.
Z100_A, Z100_B, K100 = "dcu-0000-3b-00-0", "dcu-0000-5e-00-0", "dcu-0000-af-00-0"
Z100_CUS = 60
Z100_MIB = 32752
MIB = 1024 * 1024
#: A claim's per-claim error in a response: one line, and short enough to read in an event.
MAX_ERROR_CHARS = 1024
#: In every path-like name, namespace and UID the fuzzers send, so a file written under such a
#: name is easy to find (``find_marked``).
MARKER = "fuzzmark"
#: Placeholders in allocation results, filled when a case becomes a claim: this node's pool,
#: and a fresh shareID per result (the scheduler never repeats one).
POOL = "<pool>"
SHARE_ID = "<shareID>"
#: A deep-nesting config (``ClaimCase.nest_depth``) at or beyond this depth cannot be read back
#: from the API server: the daemon decodes with orjson (at most 1024 levels, the claim's own
#: included), then with Python's json (its recursion limit, about 1000). Between the two limits
#: orjson reads it and the config check refuses it, so the fuzz's deep band starts past both.
UNREADABLE_DEPTH = 1100
#: What the daemon says about a config nested deeper than it allows, and about one nested too
#: deep for it to read the claim at all.
NESTED_TOO_DEEP = r"parameters are nested more than 32 levels deep"
UNDECODABLE = r"its JSON from the API server nests too deeply to decode"
SLOTS_TAKEN = r"cannot place the share: all 4 vDCU slots are taken by live shares"

# --- the cases ------------------------------------------------------------------------------


class Kind(StrEnum):
    """What is odd about a claim (or nothing: ``SHARE`` and ``WHOLE``)."""

    SHARE = "share"
    """Good: one or two small vDCU shares on the Z100s."""
    WHOLE = "whole"
    """Good: the K100 allocated whole (no shareID, no consumedCapacity)."""
    UNKNOWN_DEVICE = "unknown-device"
    FOREIGN_DRIVER = "foreign-driver"
    FOREIGN_POOL = "foreign-pool"
    NO_CAPACITY = "no-capacity"
    """A shareID without consumedCapacity."""
    PARTIAL_CAPACITY = "partial-capacity"
    CAPACITY_WITHOUT_SHARE = "capacity-without-share-id"
    OVERSIZE_CORES = "oversize-cores"
    OVERSIZE_MEMORY = "oversize-memory"
    ODD_MEMORY = "memory-not-whole-mib"
    NOT_POSITIVE = "capacity-not-positive"
    VDEVICES = "vdevices-not-1"
    BAD_CONFIG = "bad-opaque-config"
    NOT_ALLOCATED = "not-allocated"
    UID_MISMATCH = "uid-mismatch"
    MISSING = "missing"
    BAD_UID = "non-uuid-uid"
    BAD_NAME = "bad-name"
    BAD_NAMESPACE = "bad-namespace"


GOOD_KINDS = frozenset({Kind.SHARE, Kind.WHOLE})
#: Kinds whose claims are never read: the reference itself is refused.
REFUSED_REFERENCES = frozenset({Kind.BAD_UID, Kind.BAD_NAME, Kind.BAD_NAMESPACE})


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimCase:
    """One claim of a fuzzed request: what the API server holds and what the kubelet sends."""

    kind: Kind
    expect: str | None
    """A regex the claim's error must contain; None: the claim must be prepared."""
    in_api: bool = True
    """Whether the claim exists in the API server (under a fresh valid name)."""
    allocated: bool = True
    results: tuple[dict[str, Any], ...] = ()
    """Allocation results, with ``POOL`` and ``SHARE_ID`` placeholders."""
    config: tuple[dict[str, Any], ...] = ()
    """``status.allocation.devices.config`` entries."""
    nest_depth: int = 0
    """>0: one more config entry of ours whose ``cuLayout`` is a list nested this deep."""
    name: str | None = None
    """Sent instead of the claim's name; None: the claim's (or a fresh valid) name."""
    namespace: str | None = None
    """Sent instead of the claim's namespace."""
    uid: str | None = None
    """Sent instead of the claim's UID."""
    empty: str | None = None
    """``uid``, ``namespace`` or ``name``: sent empty, which aborts the whole call."""

    @property
    def shares(self) -> int:
        """vDCU share results (the node has room for a fixed number of good ones)."""
        return sum(1 for r in self.results if r.get("shareID") == SHARE_ID)

    def request_names(self) -> list[str]:
        """The claim's spec requests: one per result, ``r0`` if it has none."""
        return list(dict.fromkeys(r["request"] for r in self.results)) or ["r0"]

    def allocation(self, node: str) -> dict[str, Any]:
        """``status.allocation.devices`` for ``node``: placeholders filled, deep config built."""
        results = [
            {
                key: node if value == POOL else str(uuid.uuid4()) if value == SHARE_ID else value
                for key, value in result.items()
            }
            for result in self.results
        ]
        devices: dict[str, Any] = {"results": results}
        config = list(self.config)
        if self.nest_depth:
            config.append(
                opaque_entry(
                    {"apiVersion": API_VERSION, "kind": KIND, "cuLayout": nested(self.nest_depth)}
                )
            )
        if config:
            devices["config"] = config
        return devices


def nested(depth: int) -> list[Any]:
    """A list nested ``depth`` deep, built without recursion."""
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


def result(
    request: str,
    device: str,
    *,
    cores: object = None,
    memory: object = None,
    vdevices: object = "1",
    share_id: bool = True,
    driver: str = DRIVER_NAME,
    pool: str = POOL,
    capacity: Mapping[str, object] | None = None,
) -> dict[str, Any]:
    """An allocation result as the scheduler writes it (``capacity`` overrides the three)."""
    entry: dict[str, Any] = {"request": request, "driver": driver, "pool": pool, "device": device}
    if share_id:
        entry["shareID"] = SHARE_ID
    consumed = (
        dict(capacity)
        if capacity is not None
        else {"cores": cores, "memory": memory, "vdevices": vdevices}
        if cores is not None
        else None
    )
    if consumed is not None:
        entry["consumedCapacity"] = consumed
    return entry


def opaque_entry(
    parameters: object,
    *,
    driver: str = DRIVER_NAME,
    source: str = "FromClaim",
    requests: Sequence[str] | None = None,
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "source": source,
        "opaque": {"driver": driver, "parameters": parameters},
    }
    if requests is not None:
        entry["requests"] = list(requests)
    return entry


# Independent of the driver's own checks: the API server's rules, written again.
_TEST_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_TEST_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_TEST_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def valid_name(text: str) -> bool:
    return len(text) <= 253 and _TEST_SUBDOMAIN.fullmatch(text) is not None


def valid_namespace(text: str) -> bool:
    return _TEST_LABEL.fullmatch(text) is not None


UUIDS = st.uuids().map(str)
MEMORY_MIB = st.integers(1, 2048)


def memory_forms(mib: int) -> st.SearchStrategy[str]:
    """The same whole-MiB amount in the forms the API server may print."""
    forms = [f"{mib}Mi", str(mib * MIB)]
    if mib % 1024 == 0:
        forms.append(f"{mib // 1024}Gi")
    return st.sampled_from(forms)


@st.composite
def good_share(draw: st.DrawFn, request: str) -> dict[str, Any]:
    mib = draw(MEMORY_MIB)
    return result(
        request,
        draw(st.sampled_from([Z100_A, Z100_B])),
        cores=draw(st.sampled_from([str, int]))(draw(st.integers(1, 10))),
        memory=draw(memory_forms(mib)),
    )


@st.composite
def good_config(draw: st.DrawFn, requests: Sequence[str]) -> dict[str, Any]:
    """A config entry that must not fail the claim: a valid DcuConfig, or another driver's."""
    scope = draw(st.none() | st.lists(st.sampled_from(list(requests)), min_size=1, unique=True))
    source = draw(st.sampled_from(["FromClass", "FromClaim"]))
    if draw(st.booleans()):
        parameters: dict[str, Any] = {"apiVersion": API_VERSION, "kind": KIND}
        layout = draw(st.none() | st.sampled_from(["packed", "spread"]))
        if layout is not None:
            parameters["cuLayout"] = layout
        return opaque_entry(parameters, source=source, requests=scope)
    foreign = draw(st.dictionaries(st.text(max_size=8), st.integers() | st.text(max_size=8)))
    return opaque_entry(foreign, driver="gpu.example.com", source=source, requests=scope)


@st.composite
def share_case(draw: st.DrawFn) -> ClaimCase:
    count = draw(st.integers(1, 2))
    results = tuple(draw(good_share(f"r{i}")) for i in range(count))
    requests = [r["request"] for r in results]
    config = tuple(draw(st.lists(good_config(requests), max_size=2)))
    return ClaimCase(kind=Kind.SHARE, expect=None, results=results, config=config)


def whole_case() -> st.SearchStrategy[ClaimCase]:
    return st.just(
        ClaimCase(kind=Kind.WHOLE, expect=None, results=(result("r0", K100, share_id=False),))
    )


@st.composite
def bad_result_case(draw: st.DrawFn, kind: Kind) -> ClaimCase:
    """A claim with one bad allocation result, maybe after a good one (which must not stay)."""
    good_first = draw(st.booleans())
    request = "r1" if good_first else "r0"
    cores = draw(st.integers(1, 10))
    memory = f"{draw(MEMORY_MIB)}Mi"
    expect: str
    if kind is Kind.UNKNOWN_DEVICE:
        device = draw(
            st.sampled_from(["dcu-0000-99-00-0", "dcu-0000-3b-00-1", "gpu-0"])
            | st.from_regex(r"[a-z][a-z0-9-]{0,30}[a-z0-9]", fullmatch=True)
        )
        if device in (Z100_A, Z100_B, K100):
            device = "dcu-0000-99-00-0"
        bad = result(request, device, cores=cores, memory=memory)
        expect = rf"device {re.escape(device)} is not on node"
    elif kind is Kind.FOREIGN_POOL:
        pool = draw(
            st.sampled_from(["node-b", "other"]) | st.from_regex(r"[a-z]{1,20}", fullmatch=True)
        )
        bad = result(request, Z100_A, cores=cores, memory=memory, pool=f"{pool}-elsewhere")
        expect = r"allocated on another node"
    elif kind is Kind.NO_CAPACITY:
        bad = result(request, Z100_A)
        expect = r"shareID \S+ without consumedCapacity"
    elif kind is Kind.PARTIAL_CAPACITY:
        full = {"cores": str(cores), "memory": memory, "vdevices": "1"}
        keep = draw(st.lists(st.sampled_from(sorted(full)), min_size=1, max_size=2, unique=True))
        bad = result(request, Z100_A, capacity={k: full[k] for k in keep})
        expect = r"inconsistent consumedCapacity: has .* but not "
    elif kind is Kind.CAPACITY_WITHOUT_SHARE:
        bad = result(request, Z100_A, cores=cores, memory=memory, share_id=False)
        expect = r"consumedCapacity without a shareID"
    elif kind is Kind.OVERSIZE_CORES:
        many = draw(st.integers(Z100_CUS + 1, 10**6))
        bad = result(request, Z100_B, cores=str(many), memory=memory)
        expect = rf"the allocation consumed {many} CUs and .*, more than the DCU's {Z100_CUS} CUs"
    elif kind is Kind.OVERSIZE_MEMORY:
        mib = draw(st.integers(Z100_MIB + 1, 2**24))
        bad = result(request, Z100_B, cores=str(cores), memory=f"{mib}Mi")
        expect = rf"the allocation consumed {cores} CUs and {mib * MIB} bytes, more than the DCU's"
    elif kind is Kind.ODD_MEMORY:
        size = draw(st.integers(1, 2**35).filter(lambda n: n % MIB != 0))
        bad = result(request, Z100_A, cores=str(cores), memory=str(size))
        expect = r"is not a whole number of MiB"
    elif kind is Kind.NOT_POSITIVE:
        which = draw(st.sampled_from(["cores", "memory", "vdevices"]))
        full = {"cores": str(cores), "memory": memory, "vdevices": "1"}
        full[which] = draw(st.sampled_from(["0", "-1", "-4Gi"]))
        bad = result(request, Z100_A, capacity=full)
        expect = rf"consumedCapacity {which}: .* is not a positive number"
    elif kind is Kind.VDEVICES:
        slots = draw(st.integers(2, 64))
        bad = result(request, Z100_A, cores=str(cores), memory=memory, vdevices=str(slots))
        expect = rf"takes exactly 1 vdevices slot, the allocation consumed {slots}"
    else:
        raise AssertionError(kind)
    results = ((draw(good_share("r0")),) if good_first else ()) + (bad,)
    if good_first or kind in (Kind.OVERSIZE_CORES, Kind.OVERSIZE_MEMORY):
        # Planned before the bad result, a good share may find its card's slots all taken by
        # the request's good claims: an error as clear as the one the case is after.
        expect = f"{expect}|{SLOTS_TAKEN}"
    return ClaimCase(kind=kind, expect=expect, results=results)


@st.composite
def foreign_driver_case(draw: st.DrawFn) -> ClaimCase:
    driver = draw(st.sampled_from(["gpu.example.com", "dcu.hygon.com.evil", "hygon.com"]))
    return ClaimCase(
        kind=Kind.FOREIGN_DRIVER,
        expect=rf"has no allocation results for driver {re.escape(DRIVER_NAME)}",
        results=(result("r0", Z100_A, cores="4", memory="1Gi", driver=driver),),
    )


#: Parameters of our driver that must fail the claim, with what the error must say.
BAD_PARAMETERS: st.SearchStrategy[tuple[object, str]] = st.one_of(
    st.text(min_size=1, max_size=40)
    .filter(lambda k: k not in ("apiVersion", "kind", "cuLayout"))
    .map(lambda k: ({"apiVersion": API_VERSION, "kind": KIND, k: 1}, r"is not allowed")),
    st.integers(1, 500).map(
        lambda n: (
            {"apiVersion": API_VERSION, "kind": KIND, **{f"k{i}": i for i in range(n)}},
            r"(field|fields) .* not allowed",
        )
    ),
    st.one_of(st.text(max_size=30), st.integers(1, 9000).map(lambda n: "x" * n))
    .filter(lambda v: v not in ("packed", "spread"))
    .map(
        lambda v: (
            {"apiVersion": API_VERSION, "kind": KIND, "cuLayout": v},
            r"field 'cuLayout': .* is not one of: packed, spread",
        )
    ),
    st.one_of(st.integers(), st.booleans(), st.lists(st.integers(), max_size=3)).map(
        lambda v: (
            {"apiVersion": API_VERSION, "kind": KIND, "cuLayout": v},
            r"field 'cuLayout' must be a string",
        )
    ),
    st.text(max_size=30)
    .filter(lambda v: v != API_VERSION)
    .map(lambda v: ({"apiVersion": v, "kind": KIND}, r"apiVersion .* is not supported")),
    st.text(max_size=30)
    .filter(lambda v: v != KIND)
    .map(lambda v: ({"apiVersion": API_VERSION, "kind": v}, r"kind .* is not supported")),
    st.just(({"kind": KIND}, r"field 'apiVersion' is required")),
)


@st.composite
def bad_config_case(draw: st.DrawFn) -> ClaimCase:
    good = draw(good_share("r0"))
    scope = draw(st.none() | st.just(["r0"]))
    source = draw(st.sampled_from(["FromClass", "FromClaim"]))
    # 0 and 9 (which Hypothesis favours) for the two variants one_of would rarely reach.
    variant = draw(st.integers(0, 9))
    if variant == 0:
        depth = draw(st.integers(33, 200) | st.integers(UNREADABLE_DEPTH, 4000))
        return ClaimCase(
            kind=Kind.BAD_CONFIG,
            expect=f"{NESTED_TOO_DEEP}|{UNDECODABLE}",
            results=(good,),
            nest_depth=depth,
        )
    if variant == 9:  # more than the API server stores
        size = draw(st.integers(MAX_PARAMETERS_BYTES, 4 * MAX_PARAMETERS_BYTES))
        parameters: object = {"apiVersion": API_VERSION, "kind": KIND, "cuLayout": "y" * size}
        expect = rf"parameters are \d+ bytes, more than the {MAX_PARAMETERS_BYTES} allowed"
    else:
        parameters, expect = draw(BAD_PARAMETERS)
    entry = opaque_entry(parameters, source=source, requests=scope)
    where = "request 'r0'" if scope else "all requests"
    origin = "class" if source == "FromClass" else "claim"
    return ClaimCase(
        kind=Kind.BAD_CONFIG,
        expect=rf"opaque config for {where} from {origin}: .*{expect}",
        results=(good,),
        config=(entry,),
    )


#: Names the API server would never accept: path-like, control characters, upper case, long.
BAD_NAMES = st.one_of(
    st.sampled_from(
        [
            "..",
            ".",
            "../../etc/passwd",
            f"../../{MARKER}",
            f"../../../../../../tmp/{MARKER}",
            f"a/{MARKER}",
            f"/{MARKER}",
            f"{MARKER}\x00x",
            f"{MARKER}\nprepared claim ns/x",
            f"{MARKER}\r\n",
            f"{MARKER}\u2028x",
            "Claim",
            "-claim",
            "claim-",
            "a..b",
            "a_b",
            "\u0430bc",
            "%2e%2e",
            "a?watch=1",
            "a#b",
            " ",
        ]
    ),
    st.integers(254, 5000).map(lambda n: "a" * n),
    st.integers(64, 2000).map(lambda n: f"../{MARKER}/" + "b" * n),
    st.text(min_size=1, max_size=300),
).filter(lambda s: s != "" and not valid_name(s))

BAD_NAMESPACES = st.one_of(
    st.sampled_from(
        ["..", f"../{MARKER}", "a.b", "Default", f"{MARKER}\x00", "kube_system", "a/b", "-a"]
    ),
    st.integers(64, 300).map(lambda n: "n" * n),
    st.text(min_size=1, max_size=100),
).filter(lambda s: s != "" and not valid_namespace(s))

_SAMPLE_UUID = "1b0e6a0c-6c2f-4f0e-9d57-2a1d3c4b5e6f"
BAD_UIDS = st.one_of(
    st.sampled_from(
        [
            f"../../{MARKER}",
            f"x/{MARKER}",
            _SAMPLE_UUID.upper(),
            _SAMPLE_UUID.replace("-", ""),
            "{" + _SAMPLE_UUID + "}",
            _SAMPLE_UUID + "\n",
            " " + _SAMPLE_UUID,
            _SAMPLE_UUID + "\x00",
            _SAMPLE_UUID[:-1],
            "..",
        ]
    ),
    st.integers(37, 100_000).map(lambda n: "u" * n),
    st.text(min_size=1, max_size=100),
).filter(lambda s: s != "" and _TEST_UUID.fullmatch(s) is None)


@st.composite
def reference_case(draw: st.DrawFn, kind: Kind) -> ClaimCase:
    if kind is Kind.NOT_ALLOCATED:
        return ClaimCase(kind=kind, expect=r"not allocated", allocated=False)
    if kind is Kind.UID_MISMATCH:
        return ClaimCase(
            kind=kind,
            expect=r"got replaced: the API server now has uid \S+ under this name",
            results=(draw(good_share("r0")),),
            uid=draw(UUIDS),
        )
    if kind is Kind.MISSING:
        return ClaimCase(
            kind=kind, expect=r"not found in the API server", in_api=False, uid=draw(UUIDS)
        )
    if kind is Kind.BAD_UID:
        return ClaimCase(
            kind=kind, expect=r"uid .* is not a UUID", in_api=False, uid=draw(BAD_UIDS)
        )
    if kind is Kind.BAD_NAME:
        return ClaimCase(
            kind=kind,
            expect=r"name .* is not a ResourceClaim name",
            in_api=False,
            name=draw(BAD_NAMES),
            uid=draw(UUIDS),
        )
    if kind is Kind.BAD_NAMESPACE:
        return ClaimCase(
            kind=kind,
            expect=r"namespace .* is not a namespace name",
            in_api=False,
            namespace=draw(BAD_NAMESPACES),
            uid=draw(UUIDS | BAD_UIDS),
        )
    raise AssertionError(kind)


#: Kinds a bad allocation result makes (``bad_result_case``).
BAD_RESULT_KINDS = frozenset(
    {
        Kind.UNKNOWN_DEVICE,
        Kind.FOREIGN_POOL,
        Kind.NO_CAPACITY,
        Kind.PARTIAL_CAPACITY,
        Kind.CAPACITY_WITHOUT_SHARE,
        Kind.OVERSIZE_CORES,
        Kind.OVERSIZE_MEMORY,
        Kind.ODD_MEMORY,
        Kind.NOT_POSITIVE,
        Kind.VDEVICES,
    }
)


def claim_case(kind: Kind) -> st.SearchStrategy[ClaimCase]:
    """Claims of one kind."""
    if kind is Kind.SHARE:
        return share_case()
    if kind is Kind.WHOLE:
        return whole_case()
    if kind is Kind.FOREIGN_DRIVER:
        return foreign_driver_case()
    if kind is Kind.BAD_CONFIG:
        return bad_config_case()
    if kind in BAD_RESULT_KINDS:
        return bad_result_case(kind)
    return reference_case(kind)


#: A kind first, drawn evenly (``one_of`` over the strategies favours the first ones), with
#: good shares three times as likely, so most requests mix good claims and bad ones.
CLAIM_CASES: st.SearchStrategy[ClaimCase] = st.sampled_from(
    [Kind.SHARE, Kind.SHARE, *Kind]
).flatmap(claim_case)
#: The fields of a claim reference; one sent empty makes the call INVALID_ARGUMENT.
EMPTY_FIELDS = ("uid", "namespace", "name")
#: Good share results per request: the two Z100s hold 4 shares each, so 4 always fit, wherever
#: they land (4 x 10 CUs, 4 x 2 GiB at most).
MAX_GOOD_SHARES = 4


@dataclass(frozen=True, slots=True, kw_only=True)
class FuzzRequest:
    """One NodePrepareResources call: its claims, in which order, and over which API version."""

    cases: tuple[ClaimCase, ...]
    order: tuple[int, ...]
    """Indexes into ``cases``; an index may repeat (a claim listed twice)."""
    version: str
    empty: tuple[int, str] | None = None
    """(position in ``order``, field): that field is sent empty (the call is refused)."""


@st.composite
def fuzz_requests(draw: st.DrawFn, *, max_claims: int = 6) -> FuzzRequest:
    drawn = draw(st.lists(CLAIM_CASES, max_size=max_claims))
    cases: list[ClaimCase] = []
    shares = wholes = 0
    for case in drawn:  # keep what the node has room for
        if case.kind is Kind.SHARE:
            if shares + case.shares > MAX_GOOD_SHARES:
                continue
            shares += case.shares
        if case.kind is Kind.WHOLE:
            if wholes:
                continue
            wholes += 1
        cases.append(case)
    order = list(range(len(cases)))
    if cases:
        order += draw(st.lists(st.integers(0, len(cases) - 1), max_size=2))
    order = draw(st.permutations(order))
    empty = None
    # About one call in 20; 13 because Hypothesis favours the bounds of a range.
    if order and draw(st.integers(0, 19)) == 13:
        empty = (draw(st.integers(0, len(order) - 1)), draw(st.sampled_from(EMPTY_FIELDS)))
    return FuzzRequest(
        cases=tuple(cases),
        order=tuple(order),
        version=draw(st.sampled_from(["v1", "v1beta1"])),
        empty=empty,
    )


# --- the checks -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Sent:
    """A claim as the kubelet sent it, and what must become of it."""

    case: ClaimCase
    namespace: str
    name: str
    uid: str


def expected_outcomes(sent: Sequence[Sent]) -> dict[str, Sent]:
    """One expectation per distinct UID: the first claim that carried it (the rest are dropped)."""
    first: dict[str, Sent] = {}
    for claim in sent:
        first.setdefault(claim.uid, claim)
    return first


def check_error(claim: Sent, text: str, *, pattern: str | None = None) -> None:
    """A per-claim error: one short printable line, naming the claim, saying what was wrong."""
    what = f"{claim.case.kind}: {text[:300]!r}"
    assert text, f"{claim.case.kind}: empty error"
    assert text.isprintable(), f"not one printable line: {what}"
    assert len(text) <= MAX_ERROR_CHARS, f"{len(text)} characters: {what}"
    assert text.startswith("claim "), what
    if valid_name(claim.name):
        assert claim.name in text, what
    else:
        assert quoted(claim.name) in text or claim.case.empty, what
    expect = pattern if pattern is not None else claim.case.expect
    assert expect is not None
    assert re.search(expect, text), f"{what} does not match {expect!r}"


def claim_spec_files(cdi_dir: Path) -> dict[str, Path]:
    """The per-claim CDI specs in ``cdi_dir``, by claim UID."""
    prefix = spec_file_name(claim_kind(DRIVER_NAME)).removesuffix(".json") + "_"
    if not cdi_dir.is_dir():
        return {}
    return {
        p.name.removeprefix(prefix).removesuffix(".json"): p
        for p in cdi_dir.iterdir()
        if p.name.startswith(prefix)
    }


def check_claim_files(
    data_dir: Path, cdi_dir: Path, prepared: set[str], *, cdi_baseline: set[str] | None = None
) -> None:
    """Exactly the prepared claims have files: CDI specs, checkpoint entries, vdev dirs.

    ``cdi_baseline``: the CDI dir's other files, which must not change (default: none).
    """
    specs = claim_spec_files(cdi_dir)
    assert set(specs) == prepared, f"CDI specs {sorted(specs)} != prepared {sorted(prepared)}"
    others = {p.name for p in cdi_dir.iterdir()} - {s.name for s in specs.values()}
    assert others == (cdi_baseline or set()), f"unexpected files in the CDI dir: {others}"
    document = json.loads((data_dir / CHECKPOINT_FILE).read_text())
    assert set(document["claims"]) == prepared
    vdev_root = data_dir / VDEV_SUBDIR
    vdev_dirs = {p.name for p in vdev_root.iterdir()} if vdev_root.is_dir() else set()
    assert vdev_dirs <= prepared, f"vdev dirs of claims not prepared: {vdev_dirs - prepared}"
    temps = [p.name for p in data_dir.iterdir() if p.name.endswith(".tmp")]
    assert temps == [], f"temporary files left in the data dir: {temps}"


def tree(root: Path, *, skip: Sequence[Path] = ()) -> set[str]:
    """Every path under ``root`` (relative), except under the ``skip`` directories."""
    skipped = {str(p) for p in skip}
    found: set[str] = set()
    for directory, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if os.path.join(directory, d) not in skipped]
        for name in dirs + files:
            path = os.path.join(directory, name)
            if path not in skipped:
                found.add(os.path.relpath(path, root))
    return found


def find_marked(*roots: Path, depth: int) -> list[str]:
    """Paths containing ``MARKER`` under ``roots``, ``depth`` levels down (links not followed)."""
    found: list[str] = []
    pending = [(root, 0) for root in roots]
    while pending:
        directory, level = pending.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue  # gone meanwhile, or not ours to read
        for entry in entries:
            if MARKER in entry.name:
                found.append(entry.path)
            if level < depth and entry.is_dir(follow_symlinks=False):
                pending.append((Path(entry.path), level + 1))
    return found


@dataclass
class FuzzStats:
    """What a fuzz test tried, printed at its end (``pytest -s``) and checked for coverage."""

    requests: int = 0
    claims: int = 0
    refused_calls: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    notes: Counter[str] = field(default_factory=Counter)

    def add(self, request: FuzzRequest) -> None:
        self.requests += 1
        self.claims += len(request.order)
        self.kinds.update(request.cases[i].kind.value for i in request.order)
        self.notes[f"{request.version} requests"] += 1
        if request.empty is not None:
            self.refused_calls += 1
        if not request.order:
            self.notes["empty requests"] += 1
        if len(set(request.order)) < len(request.order):
            self.notes["requests naming a claim twice"] += 1

    def check_coverage(self, *, requests: int) -> None:
        """Every kind of claim and of request was tried; ``requests`` calls at least."""
        assert self.requests >= requests
        assert self.claims >= 2 * requests
        assert set(self.kinds) == {kind.value for kind in Kind}
        assert self.refused_calls >= 1
        for note in ("v1 requests", "v1beta1 requests", "empty requests"):
            assert self.notes[note] >= 1, note
        assert self.notes["requests naming a claim twice"] >= 1

    def summary(self, what: str) -> str:
        kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(self.kinds.items()))
        notes = "".join(f", {note}: {count}" for note, count in sorted(self.notes.items()))
        return (
            f"{what}: {self.requests} requests, {self.claims} claims "
            f"({self.refused_calls} calls refused for an empty field{notes}); by kind: {kinds}"
        )


# --- pure checks, thousands of times --------------------------------------------------------

REF_TEXT = st.one_of(
    st.text(max_size=80),
    st.from_regex(r"[a-z0-9][-a-z0-9.]{0,60}[a-z0-9]", fullmatch=True),
    BAD_NAMES,
    UUIDS,
    BAD_UIDS,
)


@pytest.mark.slow
@settings(max_examples=2000, derandomize=True, database=None, deadline=None)
@given(namespace=REF_TEXT, name=REF_TEXT, uid=REF_TEXT)
def test_any_claim_reference_is_accepted_only_when_the_api_server_could_have_sent_it(
    namespace: str, name: str, uid: str
) -> None:
    valid = valid_namespace(namespace) and valid_name(name) and _TEST_UUID.fullmatch(uid)
    try:
        ref = check_claim_ref(namespace=namespace, name=name, uid=uid)
    except ClaimError as exc:
        assert not valid
        text = str(exc)
        assert text.isprintable() and len(text) <= MAX_ERROR_CHARS, text[:300]
        assert text.startswith("claim ")
        return
    assert valid
    assert ref == ClaimRef(uid=ClaimUID(uid), namespace=namespace, name=name)


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.integers(0, 20_000).map(lambda n: "z" * n),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=20), children, max_size=6)
    ),
    max_leaves=30,
)
PARAMETERS = st.one_of(
    JSON_VALUES,
    st.dictionaries(
        st.sampled_from(["apiVersion", "kind", "cuLayout"]) | st.text(max_size=20),
        JSON_VALUES | st.just(API_VERSION) | st.just(KIND) | st.sampled_from(["packed", "spread"]),
        max_size=5,
    ),
    BAD_PARAMETERS.map(lambda pair: pair[0]),
    st.integers(1, 3000).map(nested),
    st.text(max_size=60),  # raw JSON text, as the API server's RawExtension holds it
)


@pytest.mark.slow
@settings(max_examples=1500, derandomize=True, database=None, deadline=None)
@given(parameters=PARAMETERS)
def test_any_opaque_parameters_decode_or_fail_in_one_short_line(parameters: object) -> None:
    try:
        decode_parameters(parameters, subject="opaque config for request 'r0' from claim")
    except ClaimConfigError as exc:
        text = str(exc)
        assert text.isprintable() and len(text) <= MAX_ERROR_CHARS, text[:300]
        assert text.startswith("opaque config for request 'r0' from claim: ")


@pytest.mark.slow
@settings(
    max_examples=2000,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(case=CLAIM_CASES.filter(lambda case: case.kind is not Kind.MISSING))
def test_any_case_converts_or_fails_as_the_case_expects(case: ClaimCase) -> None:
    """claim_from_json alone: everything but reading (``MISSING``) and the node-side checks."""
    uid = str(uuid.uuid4())
    claim: dict[str, Any] = {"metadata": {"namespace": "ns", "name": "c", "uid": uid}}
    if case.allocated:
        claim["status"] = {"allocation": {"devices": case.allocation("node-a")}}
    requested = ClaimRef(
        uid=ClaimUID(case.uid or uid), namespace=case.namespace or "ns", name=case.name or "c"
    )
    try:
        converted = claim_from_json(
            claim, requested=requested, driver=DRIVER_NAME, node_name="node-a"
        )
    except DriverError as exc:
        text = str(exc)
        assert case.expect is not None, f"{case.kind}: {text[:300]}"
        assert text.isprintable() and len(text) <= MAX_ERROR_CHARS, text[:300]
        if case.kind not in NODE_SIDE_KINDS:
            assert re.search(case.expect, text), f"{case.kind}: {text[:300]}"
        return
    assert case.kind in GOOD_KINDS | NODE_SIDE_KINDS, case.kind
    assert converted.shares


#: Kinds only the core can tell apart from a good claim: it knows the node's DCUs and room.
NODE_SIDE_KINDS = frozenset(
    {Kind.UNKNOWN_DEVICE, Kind.OVERSIZE_CORES, Kind.OVERSIZE_MEMORY, Kind.ODD_MEMORY, Kind.VDEVICES}
)

# --- DraService and the real core, a few hundred times ----------------------------------------


class MemoryApi:
    """The claims an API server would hold, by namespace and name."""

    def __init__(self) -> None:
        self.claims: dict[tuple[str, str], Mapping[str, Any]] = {}
        self.reads: list[tuple[str, str]] = []

    def get(self, namespace: str, name: str) -> Mapping[str, Any]:
        self.reads.append((namespace, name))
        try:
            return self.claims[(namespace, name)]
        except KeyError:
            raise NotFound(404, "NotFound", f"{name} not found") from None


@dataclass
class Core:
    service: DraService
    plugin: DcuPlugin
    api: MemoryApi
    sandbox: Path
    data_dir: Path
    cdi_dir: Path
    counter: Iterator[int]


@pytest.fixture(scope="module")
def core(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Core]:
    sandbox = tmp_path_factory.mktemp("fuzz")
    root = sandbox / "node"
    create_mock_node(root)
    data_dir, cdi_dir = sandbox / "data", sandbox / "cdi"
    data_dir.mkdir()
    plugin = DcuPlugin(
        discover(root),
        driver_name=DRIVER_NAME,
        node_name="node-a",
        data_dir=data_dir,
        cdi_dir=cdi_dir,
        boot_id="boot-1",
    )
    plugin.recover()
    api = MemoryApi()
    service = DraService(
        plugin=plugin,
        get_claim=api.get,
        driver=DRIVER_NAME,
        node_name="node-a",
        serializer=CallSerializer(data_dir / "serialize.lock", cross_process=False),
    )
    cdi_dir.mkdir(exist_ok=True)
    try:
        yield Core(service, plugin, api, sandbox, data_dir, cdi_dir, iter(range(10**9)))
    finally:
        service.close()


def materialise(core: Core, request: FuzzRequest) -> list[Sent]:
    """Put the request's claims into the memory API; the claims as the kubelet sends them."""
    made: dict[int, Sent] = {}
    for index, case in enumerate(request.cases):
        name = f"fz-{next(core.counter)}"
        uid = str(uuid.uuid4())
        if case.nest_depth:  # served as objects, never as JSON: the depth check refuses it
            case = dataclasses.replace(case, expect=f"opaque config for .*: {NESTED_TOO_DEEP}")
        if case.in_api:
            claim: dict[str, Any] = {"metadata": {"namespace": "ns", "name": name, "uid": uid}}
            if case.allocated:
                claim["status"] = {"allocation": {"devices": case.allocation("node-a")}}
            core.api.claims[("ns", name)] = claim
        made[index] = Sent(
            case=case,
            namespace=case.namespace if case.namespace is not None else "ns",
            name=case.name if case.name is not None else name,
            uid=case.uid if case.uid is not None else uid,
        )
    return [made[i] for i in request.order]


FUZZ_SETTINGS = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.mark.slow
def test_fuzzed_requests_through_the_service_and_the_real_core(core: Core) -> None:
    stats = FuzzStats()

    @settings(FUZZ_SETTINGS, max_examples=400)
    @given(request=fuzz_requests())
    def fuzz(request: FuzzRequest) -> None:
        stats.add(request)
        run_in_process(core, request)

    fuzz()
    print(stats.summary("in-process request fuzz"))
    stats.check_coverage(requests=400)
    assert find_marked(core.sandbox, Path.cwd(), depth=1) == []
    assert find_marked(Path("/tmp"), depth=3) == []


def run_in_process(core: Core, request: FuzzRequest) -> None:
    try:
        check_in_process(core, request)
    finally:  # a failed example must not leave claims behind for the next ones
        leftovers = core.plugin.prepared_claims()
        core.plugin.unprepare_claims(
            [ClaimRef(uid=uid, namespace=e.namespace, name=e.name) for uid, e in leftovers.items()]
        )


def check_in_process(core: Core, request: FuzzRequest) -> None:
    sent = materialise(core, request)
    before = tree(core.sandbox, skip=[core.data_dir, core.cdi_dir])
    requested = [RequestedClaim(namespace=s.namespace, name=s.name, uid=s.uid) for s in sent]
    if request.empty is not None:
        position, blank = request.empty
        fields = {"namespace": sent[position].namespace, "name": sent[position].name}
        fields["uid"] = sent[position].uid
        fields[blank] = ""
        requested[position] = RequestedClaim(**fields)
        with pytest.raises(AbortCallError, match=r"^claim #\d+ of the request has an empty "):
            core.service.prepare(requested)
        check_claim_files(core.data_dir, core.cdi_dir, set())
        return
    outcomes = core.service.prepare(requested)
    expected = expected_outcomes(sent)
    assert set(outcomes) == set(expected)
    prepared: set[str] = set()
    for uid, claim in expected.items():
        outcome = outcomes[uid]
        if claim.case.expect is None:
            assert isinstance(outcome, PrepareResult), f"{claim.case.kind}: {outcome}"
            assert len(outcome.devices) == len(claim.case.results)
            prepared.add(uid)
        else:
            assert isinstance(outcome, DriverError), f"{claim.case.kind} was prepared"
            check_error(claim, str(outcome))
    check_claim_files(core.data_dir, core.cdi_dir, prepared)
    answers = core.service.unprepare(requested)
    assert set(answers) == set(expected)
    for uid, claim in expected.items():
        if claim.case.kind in REFUSED_REFERENCES:
            error = answers[uid]
            assert error is not None
            check_error(claim, str(error))
        else:
            assert answers[uid] is None, f"{claim.case.kind}: {answers[uid]}"
    check_claim_files(core.data_dir, core.cdi_dir, set())
    assert tree(core.sandbox, skip=[core.data_dir, core.cdi_dir]) == before
    for claim in sent:
        if claim.case.kind in REFUSED_REFERENCES:
            assert (claim.namespace, claim.name) not in core.api.reads, "a refused claim was read"


# --- what the fuzzers found, pinned ----------------------------------------------------------


def prepare_one_by_one(core: Core, *claims: RequestedClaim) -> dict[str, Any]:
    """Prepare in one call, unprepare everything again; the outcomes as strings or devices."""
    outcomes = core.service.prepare(claims)
    core.service.unprepare([c for c in claims if c.uid in outcomes and _TEST_UUID.fullmatch(c.uid)])
    return {
        uid: str(outcome) if isinstance(outcome, DriverError) else outcome.devices
        for uid, outcome in outcomes.items()
    }


def good_claim(core: Core) -> RequestedClaim:
    """A claim in the memory API with one small share: prepared in every request below."""
    name, uid = f"good-{next(core.counter)}", str(uuid.uuid4())
    devices = ClaimCase(
        kind=Kind.SHARE, expect=None, results=(result("r0", Z100_A, cores="2", memory="1Gi"),)
    )
    core.api.claims[("ns", name)] = {
        "metadata": {"namespace": "ns", "name": name, "uid": uid},
        "status": {"allocation": {"devices": devices.allocation("node-a")}},
    }
    return RequestedClaim(namespace="ns", name=name, uid=uid)


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        (".", "'.'"),
        ("../../etc/passwd", "'../../etc/passwd'"),
        ("a/b", "'a/b'"),
        ("x\x00y", "'x\\x00y'"),
        ("x\nprepared claim ns/y", "'x\\nprepared claim ns/y'"),
        ("a" * 254, "'aaaaaaaaaaaaaaaaaaaaaaaaaaaaa...aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa'"),
        ("Claim", "'Claim'"),
    ],
    ids=["dot", "path", "slash", "nul", "newline", "254-characters", "upper-case"],
)
def test_a_name_the_api_server_never_gives_is_refused_without_reading_it(
    core: Core, name: str, shown: str
) -> None:
    """Such names went to the API server in the path (``.`` read the namespace's whole claim
    list) and into messages and log lines raw, a newline splitting them."""
    good = good_claim(core)
    bad = RequestedClaim(namespace="ns", name=name, uid=str(uuid.uuid4()))
    reads = len(core.api.reads)

    outcomes = prepare_one_by_one(core, bad, good)

    assert outcomes[bad.uid] == (
        f"claim ns/{shown} (uid {bad.uid}): name {shown} is not a ResourceClaim name (a DNS "
        "subdomain: at most 253 lowercase letters, digits, '-' and '.')"
    )
    assert core.api.reads[reads:] == [("ns", good.name)]
    assert len(outcomes[good.uid]) == 1


def test_a_namespace_that_is_not_a_dns_label_is_refused(core: Core) -> None:
    bad = RequestedClaim(namespace="a.b", name="c", uid=str(uuid.uuid4()))
    assert prepare_one_by_one(core, bad)[bad.uid] == (
        f"claim 'a.b'/c (uid {bad.uid}): namespace 'a.b' is not a namespace name (a DNS label: "
        "at most 63 lowercase letters, digits and '-')"
    )


def test_a_huge_uid_is_quoted_short(core: Core) -> None:
    """A 100 000-character UID came back whole in its error, and in the log line."""
    bad = RequestedClaim(namespace="ns", name="c", uid="u" * 100_000)
    text = prepare_one_by_one(core, bad)[bad.uid]
    assert re.fullmatch(
        r"claim ns/c: uid 'u+\.\.\.u+' is not a UUID; refusing to prepare it "
        r"\(claim UIDs name files on this node\)",
        text,
    ), text
    assert len(text) < 200


def test_a_claim_too_deep_for_the_json_decoder_fails_alone(core: Core) -> None:
    """The API server stores opaque parameters nested up to 10 KiB deep (5000 levels); reading
    such a claim raised RecursionError, which failed the whole call with a traceback."""
    good = good_claim(core)
    deep = RequestedClaim(namespace="ns", name="deep", uid=str(uuid.uuid4()))
    get = core.api.get

    def get_or_overflow(namespace: str, name: str) -> Mapping[str, Any]:
        if name == "deep":
            raise RecursionError("maximum recursion depth exceeded while decoding a JSON array")
        return get(namespace, name)

    core.service.get_claim = get_or_overflow
    try:
        outcomes = prepare_one_by_one(core, deep, good)
    finally:
        core.service.get_claim = get
    assert outcomes[deep.uid] == (
        f"claim ns/deep (uid {deep.uid}): its JSON from the API server nests too deeply to "
        "decode (opaque parameters nested hundreds of levels deep?)"
    )
    assert len(outcomes[good.uid]) == 1


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        (
            {"apiVersion": API_VERSION, "kind": KIND, "cuLayout": nested(5000)},
            "parameters are nested more than 32 levels deep",
        ),
        (
            json.dumps({"apiVersion": API_VERSION, "kind": KIND, "cuLayout": nested(900)}),
            "parameters are nested more than 32 levels deep",
        ),
        (
            "[" * 5000 + "]" * 5000,
            "parameters are nested more than 32 levels deep",
        ),
        (
            {"apiVersion": API_VERSION, "kind": KIND, "cuLayout": "x" * 9000},
            "field 'cuLayout': 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxx...xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx' is "
            "not one of: packed, spread",
        ),
        (
            {"apiVersion": API_VERSION, "kind": KIND, **{f"k{i}": i for i in range(400)}},
            "fields 'k0', 'k1', 'k2', 'k3', 'k4' and 395 more are not allowed; allowed fields: "
            "apiVersion, kind, cuLayout",
        ),
        (
            {"apiVersion": "v" * 9000, "kind": KIND},
            "apiVersion 'vvvvvvvvvvvvvvvvvvvvvvvvvvvvv...vvvvvvvvvvvvvvvvvvvvvvvvvvvvvv' is not "
            "supported (supported: dcu.hygon.com/v1alpha1)",
        ),
    ],
    ids=[
        "nested-5000",
        "nested-900-as-text",
        "text-nested-5000",
        "9000-characters",
        "400-unknown-fields",
        "huge-api-version",
    ],
)
def test_odd_opaque_parameters_fail_in_one_short_line(parameters: object, message: str) -> None:
    """Deep values made the checks recurse past Python's limit (a RecursionError, or a
    misleading 'not JSON'); huge ones came back whole in the message."""
    with pytest.raises(ClaimConfigError) as caught:
        decode_parameters(parameters, subject="opaque config")
    assert str(caught.value) == f"opaque config: {message}"


def test_an_undecodable_message_is_refused_with_one_log_line(
    short_sock_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """gRPC logged a traceback for every message that did not decode."""
    api = MemoryApi()
    server = KubeletPluginServer(
        driver_name=DRIVER_NAME,
        node_name="node-a",
        registrar_dir=short_sock_dir / "reg",
        data_dir=short_sock_dir / "data",
        plugin=NoClaimsPlugin(),
        get_claim=api.get,
    )
    server.start()
    caplog.set_level(logging.INFO)
    try:
        with grpc.insecure_channel(f"unix:{server.dra_socket}") as channel:
            send = channel.unary_unary(
                "/k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin/NodePrepareResources"
            )
            with pytest.raises(grpc.RpcError) as caught:
                send(b"\x0a\x03\x0a\x01\xff", timeout=10)
            assert caught.value.code() == grpc.StatusCode.INTERNAL
            assert caught.value.details() == "Exception deserializing request!"
            stub = dra_v1_pb2_grpc.DRAPluginStub(channel)
            empty = stub.NodePrepareResources(dra_v1_pb2.NodePrepareResourcesRequest(), timeout=10)
            assert dict(empty.claims) == {}
    finally:
        server.stop(1)
    assert [r.exc_info for r in caplog.records if r.exc_info] == []
    refused = [r.getMessage() for r in caplog.records if "undecodable" in r.getMessage()]
    assert len(refused) == 1
    assert re.fullmatch(
        r"refused an undecodable NodePrepareResources request \(5 bytes\): Error parsing message "
        r"with type 'k8s\.io\.kubelet\.pkg\.apis\.dra\.v1\.NodePrepareResourcesRequest': .*",
        refused[0],
    ), refused


class NoClaimsPlugin:
    """A Plugin for calls that never get as far as the driver."""

    def prepare_claims(
        self, claims: Sequence[Claim]
    ) -> dict[ClaimUID, PrepareResult | DriverError]:
        raise AssertionError("no claim should reach the driver")

    def unprepare_claims(self, refs: Sequence[ClaimRef]) -> dict[ClaimUID, DriverError | None]:
        raise AssertionError("no claim should reach the driver")
