"""ResourceClaim JSON -> model.Claim: every accepted shape and every per-claim error."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dra_driver.errors import ClaimConfigError, ClaimError, DriverError
from dra_driver.kubeletplugin.claims import check_claim_uid, claim_from_json
from dra_driver.node.devices import DeviceName
from dra_driver.prepare.model import AllocatedShare, Claim, ClaimRef, ClaimUID
from dra_driver.vdcu.allocator import Layout
from dra_driver.vdcu.opaque import API_VERSION, KIND, DcuConfig

DRIVER = "dcu.hygon.com"
NODE = "node-a"
UID = "1b0e6a0c-6c2f-4f0e-9d57-2a1d3c4b5e6f"
OTHER_UID = "2c1f7b1d-7d30-4a1f-8e68-3b2e4d5c6f70"
SHARE = "5b0e6a0c-6c2f-4f0e-9d57-2a1d3c4b5e6f"
SHARE_2 = "6c1f7b1d-7d30-4a1f-8e68-3b2e4d5c6f70"
DEVICE = "dcu-0000-3b-00-0"
REF = ClaimRef(uid=ClaimUID(UID), namespace="ns", name="c")
WHERE = r"claim ns/c \(uid 1b0e6a0c-6c2f-4f0e-9d57-2a1d3c4b5e6f\)"


def shared_result(**overrides: Any) -> dict[str, Any]:
    result: dict[str, Any] = {
        "request": "dcu",
        "driver": DRIVER,
        "pool": NODE,
        "device": DEVICE,
        "shareID": SHARE,
        "consumedCapacity": {"cores": "30", "memory": "16Gi", "vdevices": "1"},
    }
    result.update(overrides)
    return {k: v for k, v in result.items() if v is not None}


def whole_result(**overrides: Any) -> dict[str, Any]:
    return shared_result(shareID=None, consumedCapacity=None, **overrides)


def claim_json(*results: dict[str, Any], config: list[Any] | None = None) -> dict[str, Any]:
    devices: dict[str, Any] = {"results": list(results) or [shared_result()]}
    if config is not None:
        devices["config"] = config
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"namespace": "ns", "name": "c", "uid": UID},
        "spec": {"devices": {"requests": [{"name": "dcu"}]}},
        "status": {"allocation": {"devices": devices}},
    }


def convert(obj: Any, requested: ClaimRef = REF) -> Claim:
    return claim_from_json(obj, requested=requested, driver=DRIVER, node_name=NODE)


def share(**overrides: Any) -> AllocatedShare:
    fields: dict[str, Any] = {
        "request": "dcu",
        "pool": NODE,
        "device": DeviceName(DEVICE),
        "share_id": SHARE,
        "cores": 30,
        "memory_bytes": 16 * 2**30,
        "vdevices": 1,
    }
    fields.update(overrides)
    return AllocatedShare(**fields)


def opaque(source: str, layout: str, requests: list[str] | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "source": source,
        "opaque": {
            "driver": DRIVER,
            "parameters": {"apiVersion": API_VERSION, "kind": KIND, "cuLayout": layout},
        },
    }
    if requests is not None:
        entry["requests"] = requests
    return entry


# --- accepted claims ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("obj", "shares"),
    [
        (claim_json(), (share(),)),
        (
            claim_json(whole_result()),
            (share(share_id=None, cores=None, memory_bytes=None, vdevices=None),),
        ),
        (claim_json(shared_result(adminAccess=True)), (share(admin_access=True),)),
        (claim_json(shared_result(adminAccess=False)), (share(),)),
        (claim_json(shared_result(request="dcu/small")), (share(),)),
        (
            claim_json(
                shared_result(driver="gpu.example.com", pool="elsewhere", device="gpu-0"),
                shared_result(request="b", shareID=SHARE_2),
            ),
            (share(request="b", share_id=SHARE_2),),
        ),
        (
            claim_json(
                shared_result(request="a"),
                shared_result(request="b/small", shareID=SHARE_2),
                config=[
                    opaque("FromClaim", "packed", ["a"]),
                    opaque("FromClass", "spread"),
                ],
            ),
            (
                share(request="a", config=DcuConfig(cu_layout=Layout.PACKED)),
                share(request="b", share_id=SHARE_2, config=DcuConfig(cu_layout=Layout.SPREAD)),
            ),
        ),
        (
            claim_json(
                shared_result(consumedCapacity={"cores": 4, "memory": "1Gi", "vdevices": "1"})
            ),
            (share(cores=4, memory_bytes=2**30),),
        ),
        (
            # Capacities we do not publish are ignored (a newer slice, a vendor extra).
            claim_json(
                shared_result(
                    consumedCapacity={
                        "cores": "30",
                        "memory": "16Gi",
                        "vdevices": "1",
                        "bandwidth": "7",
                    }
                )
            ),
            (share(),),
        ),
    ],
    ids=[
        "shared",
        "whole-device",
        "admin-access",
        "admin-access-false",
        "subrequest-stripped",
        "other-driver-ignored",
        "config-per-request",
        "integer-capacity",
        "unknown-capacity-ignored",
    ],
)
def test_accepted_claims(obj: dict[str, Any], shares: tuple[AllocatedShare, ...]) -> None:
    assert convert(obj) == Claim(ref=REF, shares=shares)


@pytest.mark.parametrize(
    ("memory", "memory_bytes"),
    [
        ("8Gi", 8 * 2**30),
        ("1431Mi", 1431 * 2**20),
        ("1500M", 1_500_000_000),
        ("2e9", 2_000_000_000),
        ("1.5Gi", 1536 * 2**20),
    ],
)
def test_memory_quantity_forms(memory: str, memory_bytes: int) -> None:
    capacity = {"cores": "30", "memory": memory, "vdevices": "1"}
    (converted,) = convert(claim_json(shared_result(consumedCapacity=capacity))).shares
    assert converted.memory_bytes == memory_bytes


def test_config_errors_name_the_claim() -> None:
    bad = opaque("FromClaim", "packed", ["dcu"])
    bad["opaque"]["parameters"]["cuLayot"] = "spread"
    with pytest.raises(
        ClaimConfigError,
        match=rf"^{WHERE}: opaque config for request 'dcu' from claim: field 'cuLayot' is not "
        r"allowed; allowed fields: apiVersion, kind, cuLayout$",
    ):
        convert(claim_json(config=[bad]))


# --- per-claim errors -----------------------------------------------------------------------

Mutation = Callable[[dict[str, Any]], object]


def set_path(*path: str | int, value: Any) -> Mutation:
    def mutate(obj: dict[str, Any]) -> None:
        target: Any = obj
        for key in path[:-1]:
            target = target[key]
        if value is ...:
            del target[path[-1]]
        else:
            target[path[-1]] = value

    return mutate


def with_result(**overrides: Any) -> Mutation:
    return set_path(
        "status", "allocation", "devices", "results", value=[shared_result(**overrides)]
    )


def with_capacity(**capacity: Any) -> Mutation:
    return with_result(consumedCapacity=capacity)


RESULT = rf"{WHERE}: allocation result #0 \(request 'dcu'\)"

ERROR_CASES: list[tuple[str, Mutation, type[DriverError], str]] = [
    (
        "not-allocated-no-status",
        set_path("status", value=...),
        ClaimError,
        rf"^{WHERE}: not allocated \(status\.allocation is empty\)$",
    ),
    (
        "not-allocated-null",
        set_path("status", "allocation", value=None),
        ClaimError,
        rf"^{WHERE}: not allocated",
    ),
    (
        "replaced",
        set_path("metadata", "uid", value=OTHER_UID),
        ClaimError,
        rf"^{WHERE}: got replaced: the API server now has uid {OTHER_UID} under this name$",
    ),
    (
        "other-node",
        with_result(pool="node-b"),
        ClaimError,
        rf"^{WHERE}: allocated on another node: result #0 of driver dcu\.hygon\.com is in pool "
        r"'node-b', but this is node 'node-a' \(pool 'node-a'\)$",
    ),
    (
        "no-results-for-driver",
        with_result(driver="gpu.example.com"),
        ClaimError,
        rf"^{WHERE}: has no allocation results for driver dcu\.hygon\.com$",
    ),
    (
        "no-results-at-all",
        set_path("status", "allocation", "devices", "results", value=[]),
        ClaimError,
        rf"^{WHERE}: has no allocation results for driver dcu\.hygon\.com$",
    ),
    (
        "capacity-missing-memory",
        with_capacity(cores="30", vdevices="1"),
        ClaimError,
        rf"^{RESULT}: inconsistent consumedCapacity: has cores, vdevices but not memory; a share "
        rf"of {DEVICE} consumes all of cores, memory, vdevices",
    ),
    (
        "capacity-cores-only",
        with_capacity(cores="30"),
        ClaimError,
        rf"^{RESULT}: inconsistent consumedCapacity: has cores but not memory, vdevices;",
    ),
    (
        "cores-zero",
        with_capacity(cores="0", memory="1Gi", vdevices="1"),
        ClaimError,
        rf"^{RESULT}: malformed consumedCapacity cores: '0' is not a positive number$",
    ),
    (
        "cores-negative",
        with_capacity(cores="-2", memory="1Gi", vdevices="1"),
        ClaimError,
        rf"^{RESULT}: malformed consumedCapacity cores: '-2' is not a positive number$",
    ),
    (
        "cores-fractional",
        with_capacity(cores="1.5", memory="1Gi", vdevices="1"),
        ClaimError,
        rf"^{RESULT}: malformed consumedCapacity cores: not an integral quantity: '1\.5' is "
        r"fractional$",
    ),
    (
        "memory-fractional-bytes",
        with_capacity(cores="3", memory="1500m", vdevices="1"),
        ClaimError,
        rf"^{RESULT}: malformed consumedCapacity memory: not an integral quantity: '1500m' is "
        r"fractional$",
    ),
    (
        "memory-not-a-quantity",
        with_capacity(cores="3", memory="lots", vdevices="1"),
        ClaimError,
        rf"^{RESULT}: malformed consumedCapacity memory: not an integral quantity: not a "
        r"quantity: 'lots'$",
    ),
    (
        "memory-float",
        with_capacity(cores="3", memory=1.5, vdevices="1"),
        ClaimError,
        rf"^{RESULT}: malformed consumedCapacity memory: 1\.5 is not a quantity$",
    ),
    (
        "vdevices-zero",
        with_capacity(cores="3", memory="1Gi", vdevices="0"),
        ClaimError,
        rf"^{RESULT}: malformed consumedCapacity vdevices: '0' is not a positive number$",
    ),
    (
        "vdevices-boolean",
        with_capacity(cores="3", memory="1Gi", vdevices=True),
        ClaimError,
        rf"^{RESULT}: malformed consumedCapacity vdevices: True is not a quantity$",
    ),
    (
        "capacity-not-object",
        with_result(consumedCapacity=["cores"]),
        ClaimError,
        rf"^{RESULT}: malformed: consumedCapacity is not an object$",
    ),
    (
        "share-id-without-capacity",
        with_result(consumedCapacity=None),
        ClaimError,
        rf"^{RESULT}: inconsistent allocation: shareID {SHARE} without consumedCapacity "
        r"\(cores, memory, vdevices\)$",
    ),
    (
        "share-id-with-empty-capacity",
        with_result(consumedCapacity={}),
        ClaimError,
        rf"^{RESULT}: inconsistent allocation: shareID {SHARE} without consumedCapacity",
    ),
    (
        "capacity-without-share-id",
        with_result(shareID=None),
        ClaimError,
        rf"^{RESULT}: inconsistent allocation: consumedCapacity without a shareID$",
    ),
    (
        "share-id-not-uuid",
        with_result(shareID="../../etc"),
        ClaimError,
        rf"^{RESULT}: malformed: shareID '\.\./\.\./etc' is not a UUID$",
    ),
    (
        "admin-access-not-bool",
        with_result(adminAccess="yes"),
        ClaimError,
        rf"^{RESULT}: malformed: adminAccess 'yes' is not a boolean$",
    ),
    (
        "request-missing",
        set_path("status", "allocation", "devices", "results", 0, "request", value=...),
        ClaimError,
        rf"^{WHERE}: allocation result #0: malformed: request name None is not a name$",
    ),
    (
        "request-empty-main",
        with_result(request="/small"),
        ClaimError,
        rf"^{WHERE}: allocation result #0: malformed: request name '/small' is not a name$",
    ),
    (
        "device-not-dns-label",
        with_result(device="../dcu"),
        ClaimError,
        rf"^{RESULT}: malformed: device '\.\./dcu' is not a device name$",
    ),
    (
        "claim-not-object",
        lambda obj: obj.clear(),
        ClaimError,
        rf"^{WHERE}: malformed claim: metadata is not an object$",
    ),
    (
        "metadata-uid-missing",
        set_path("metadata", "uid", value=...),
        ClaimError,
        rf"^{WHERE}: malformed claim: metadata\.uid is missing$",
    ),
    (
        "results-not-list",
        set_path("status", "allocation", "devices", "results", value={"a": 1}),
        ClaimError,
        rf"^{WHERE}: malformed claim: status\.allocation\.devices\.results is not a list$",
    ),
    (
        "result-not-object",
        set_path("status", "allocation", "devices", "results", value=["x"]),
        ClaimError,
        rf"^{WHERE}: malformed claim: allocation result #0 is not an object$",
    ),
    (
        "allocation-not-object",
        set_path("status", "allocation", value="yes"),
        ClaimError,
        rf"^{WHERE}: malformed claim: status\.allocation is not an object$",
    ),
    (
        "config-not-list",
        set_path("status", "allocation", "devices", "config", value="x"),
        ClaimConfigError,
        rf"^{WHERE}: allocation config must be a list$",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "error", "message"),
    [case[1:] for case in ERROR_CASES],
    ids=[case[0] for case in ERROR_CASES],
)
def test_per_claim_errors(mutate: Mutation, error: type[DriverError], message: str) -> None:
    obj = claim_json()
    mutate(obj)
    with pytest.raises(error, match=message) as caught:
        convert(obj)
    assert type(caught.value) is error


@pytest.mark.parametrize(
    "uid",
    ["", "../../etc/passwd", UID.upper(), "{" + UID + "}", UID.replace("-", ""), UID + "\n"],
    ids=["empty", "path", "uppercase", "braces", "no-dashes", "newline"],
)
def test_uid_must_be_a_canonical_uuid_before_anything_else(uid: str) -> None:
    # The claim JSON agrees with the bad UID and is otherwise broken too: the UID check wins.
    obj = claim_json()
    obj["metadata"]["uid"] = uid
    del obj["status"]
    with pytest.raises(ClaimError, match=r"^claim ns/c: uid .* is not a UUID; refusing to"):
        convert(obj, ClaimRef(uid=ClaimUID(uid), namespace="ns", name="c"))
    with pytest.raises(ClaimError, match=r"^claim ns/c: uid .* is not a UUID"):
        check_claim_uid(uid, namespace="ns", name="c")


def test_check_claim_uid_returns_the_uid() -> None:
    assert check_claim_uid(UID, namespace="ns", name="c") == UID


def test_conversion_does_not_modify_its_input() -> None:
    obj = claim_json(config=[opaque("FromClass", "spread")])
    before = copy.deepcopy(obj)
    convert(obj)
    assert obj == before


# --- random input ---------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A plausible value, or any JSON at all."""
    return st.one_of(strategy, JSON)


QUANTITY = st.sampled_from(["1", "0", "-1", "30", "1.5", "16Gi", "2e9", "1e999", "x", ""])
RESULTS = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "request": maybe(st.sampled_from(["dcu", "dcu/small", "/x", ""])),
            "driver": maybe(st.sampled_from([DRIVER, "gpu.example.com"])),
            "pool": maybe(st.sampled_from([NODE, "node-b"])),
            "device": maybe(st.sampled_from([DEVICE, "../x", ""])),
            "shareID": maybe(st.sampled_from([SHARE, "not-a-uuid"])),
            "adminAccess": maybe(st.booleans()),
            "consumedCapacity": maybe(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "cores": maybe(QUANTITY),
                        "memory": maybe(QUANTITY),
                        "vdevices": maybe(QUANTITY),
                    },
                )
            ),
        },
    ),
    max_size=3,
)
PARAMETERS = maybe(
    st.fixed_dictionaries(
        {},
        optional={
            "apiVersion": maybe(st.just(API_VERSION)),
            "kind": maybe(st.just(KIND)),
            "cuLayout": maybe(st.sampled_from(["packed", "spread", "up"])),
        },
    )
)
CONFIG = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "source": maybe(st.sampled_from(["FromClass", "FromClaim"])),
            "requests": maybe(st.lists(st.sampled_from(["dcu", "other"]), max_size=2)),
            "opaque": maybe(
                st.fixed_dictionaries(
                    {"driver": maybe(st.just(DRIVER))}, optional={"parameters": PARAMETERS}
                )
            ),
        },
    ),
    max_size=3,
)
CLAIMS = st.one_of(
    JSON,
    st.fixed_dictionaries(
        {
            "metadata": maybe(st.fixed_dictionaries({"uid": maybe(st.just(UID))})),
            "status": maybe(
                st.fixed_dictionaries(
                    {
                        "allocation": maybe(
                            st.fixed_dictionaries(
                                {
                                    "devices": maybe(
                                        st.fixed_dictionaries(
                                            {"results": maybe(RESULTS)},
                                            optional={"config": maybe(CONFIG)},
                                        )
                                    )
                                }
                            )
                        )
                    }
                )
            ),
        }
    ),
)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(obj=CLAIMS, uid=maybe(st.just(UID)))
def test_random_claims_convert_or_raise_a_driver_error(obj: Any, uid: Any) -> None:
    requested = ClaimRef(uid=uid, namespace="ns", name="c")
    try:
        claim = convert(obj, requested)
    except DriverError:
        return
    assert claim.ref == REF
    assert claim.shares
    for converted in claim.shares:
        assert converted.pool == NODE
        assert "/" not in converted.request
