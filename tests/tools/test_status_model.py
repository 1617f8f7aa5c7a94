"""``dcu-dra status``'s pure core: the scheduler's accounting rules and the rendering."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from dra_driver import DRIVER_NAME
from dra_driver.tools.status import (
    ClusterStatus,
    Output,
    build_status,
    driver_classes,
    render,
    status_document,
)
from dra_driver.tools.status.model import parse_amount

GIB = 2**30
Z100, K100 = "dcu-0000-3b-00-0", "dcu-0000-af-00-0"


def device(
    name: str,
    *,
    cores: int = 60,
    memory: str = "32752Mi",
    slots: int = 4,
    model: str = "Z100",
    shareable: bool = True,
    taints: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": name,
        "attributes": {
            "model": {"string": model},
            "resource.kubernetes.io/pciBusID": {"string": f"0000:{name[9:11]}:00.0"},
        },
        "capacity": {
            "cores": {"value": str(cores)},
            "memory": {"value": memory},
            "vdevices": {"value": str(slots)},
        },
    }
    if shareable:
        entry["allowMultipleAllocations"] = True
    if taints:
        entry["taints"] = taints
    return entry


def slice_of(
    node: str, *devices: dict[str, Any], generation: int = 1, driver: str = DRIVER_NAME
) -> dict[str, Any]:
    return {
        "metadata": {"name": f"{node}-slice-{generation}"},
        "spec": {
            "driver": driver,
            "nodeName": node,
            "pool": {"name": node, "generation": generation, "resourceSliceCount": 1},
            "devices": list(devices),
        },
    }


def result(
    node: str,
    device_name: str,
    *,
    consumed: dict[str, str] | None = None,
    share_id: str | None = None,
    admin: bool = False,
    driver: str = DRIVER_NAME,
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "request": "dcu",
        "driver": driver,
        "pool": node,
        "device": device_name,
    }
    if consumed is not None:
        entry["consumedCapacity"] = consumed
        entry["shareID"] = share_id or f"share-{device_name}"
    if admin:
        entry["adminAccess"] = True
    return entry


def claim(
    name: str,
    *results: dict[str, Any],
    namespace: str = "ns",
    pods: tuple[str, ...] = (),
    device_class: str = "vdcu.dcu.hygon.com",
    owner_uid: str | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "uid": f"uid-{name}"}
    if owner_uid:
        meta["ownerReferences"] = [{"kind": "Pod", "uid": owner_uid, "name": "owner"}]
    status: dict[str, Any] = {}
    if results:
        status["allocation"] = {"devices": {"results": list(results)}}
        status["reservedFor"] = [{"resource": "pods", "name": p, "uid": f"p-{p}"} for p in pods]
    return {
        "metadata": meta,
        "spec": {
            "devices": {"requests": [{"name": "dcu", "exactly": {"deviceClassName": device_class}}]}
        },
        "status": status,
    }


def pod(
    name: str,
    *,
    claim_name: str | None = None,
    unschedulable: str | None = None,
    namespace: str = "ns",
) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if claim_name:
        spec["resourceClaims"] = [{"name": "dcu", "resourceClaimName": claim_name}]
    status: dict[str, Any] = {}
    if unschedulable:
        status["conditions"] = [
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": unschedulable,
            }
        ]
    return {
        "metadata": {"name": name, "namespace": namespace, "uid": f"pod-{name}"},
        "spec": spec,
        "status": status,
    }


CLASSES = frozenset({"dcu.hygon.com", "vdcu.dcu.hygon.com"})
SHARE = {"cores": "10", "memory": "4Gi", "vdevices": "1"}


def status_of(
    slices: list[dict[str, Any]],
    claims: list[dict[str, Any]],
    pods: list[dict[str, Any]] | None = None,
    node: str | None = None,
) -> ClusterStatus:
    return build_status(
        slices=slices,
        claims=claims,
        pods=pods or [],
        driver=DRIVER_NAME,
        classes=CLASSES,
        node=node,
    )


def test_shares_consume_their_consumed_capacity() -> None:
    status = status_of(
        [slice_of("n1", device(Z100))],
        [
            claim("a", result("n1", Z100, consumed=SHARE, share_id="s1"), pods=("pa",)),
            claim("b", result("n1", Z100, consumed=SHARE, share_id="s2"), pods=("pb",)),
        ],
    )
    (row,) = status.devices
    assert (row.cores_allocated, row.memory_allocated_bytes, row.vdevices_used) == (20, 8 * GIB, 2)
    assert row.claims == ("ns/a", "ns/b")
    assert row.pods == ("ns/pa", "ns/pb")
    assert status.free_cores == 40


def test_a_result_without_consumed_capacity_takes_the_whole_device() -> None:
    """An exclusive-mode device (no allowMultipleAllocations): every slot too."""
    status = status_of(
        [slice_of("n1", device(K100, cores=120, memory="64Gi", shareable=False))],
        [claim("whole", result("n1", K100))],
    )
    (row,) = status.devices
    assert (row.cores_allocated, row.memory_allocated_bytes, row.vdevices_used) == (
        120,
        64 * GIB,
        4,
    )
    assert row.holders[0].is_whole_device
    assert status.free_cores == 0


def test_admin_access_is_listed_but_consumes_nothing() -> None:
    status = status_of(
        [slice_of("n1", device(Z100))], [claim("admin", result("n1", Z100, admin=True))]
    )
    (row,) = status.devices
    assert row.claims == ("ns/admin",)
    assert row.cores_allocated == 0


def test_a_shared_claim_lists_every_pod_it_is_reserved_for() -> None:
    status = status_of(
        [slice_of("n1", device(Z100))],
        [claim("team", result("n1", Z100, consumed=SHARE), pods=("p1", "p2"))],
    )
    (row,) = status.devices
    assert row.pods == ("ns/p1", "ns/p2")
    assert row.vdevices_used == 1


def test_only_the_newest_generation_of_a_pool_counts() -> None:
    status = status_of(
        [
            slice_of("n1", device(Z100), device(K100), generation=1),
            slice_of("n1", device(Z100), generation=2),
        ],
        [],
    )
    assert [d.device for d in status.devices] == [Z100]


def test_other_drivers_and_other_nodes_are_left_out() -> None:
    status = status_of(
        [
            slice_of("n1", device(Z100)),
            slice_of("n2", device(Z100)),
            slice_of("n1", device("gpu-0"), driver="gpu.example.com"),
        ],
        [claim("other", result("n1", "gpu-0", driver="gpu.example.com"))],
        node="n2",
    )
    assert [(d.node, d.device) for d in status.devices] == [("n2", Z100)]
    assert status.devices[0].holders == ()


def test_a_tainted_device_is_unhealthy_and_not_counted_as_free() -> None:
    taint = {"key": "dcu.hygon.com/unhealthy", "value": "NotResponding", "effect": "NoSchedule"}
    status = status_of([slice_of("n1", device(Z100, taints=[taint]), device(K100))], [])
    assert [d.health for d in status.devices] == ["Unhealthy (NotResponding)", "Healthy"]
    assert status.unhealthy == 1
    assert status.free_cores == 60  # only the healthy one


def test_pending_claims_of_the_driver_classes_say_why() -> None:
    message = "0/3 nodes are available: 3 cannot allocate all claims."
    status = status_of(
        [slice_of("n1", device(Z100))],
        [
            claim("huge"),
            claim("lonely"),
            claim("foreign", device_class="gpu.example.com"),
            claim("generated", owner_uid="pod-owner-pod"),
        ],
        [
            pod("huge-pod", claim_name="huge", unschedulable=message),
            pod("owner-pod", unschedulable="0/3 nodes: no room"),
        ],
    )
    pending = {p.name: (p.pods, p.reason) for p in status.pending}
    assert pending == {
        "huge": (("huge-pod",), message),
        "lonely": ((), None),
        "generated": (("owner-pod",), "0/3 nodes: no room"),
    }


def test_an_extended_resource_claim_finds_its_pod() -> None:
    """The scheduler's claim for `resources.limits: {hygon.com/dcu: 1}` is named in the pod's
    status.extendedResourceClaimStatus, not in its spec."""
    waiting = pod("plain", unschedulable="0/1 nodes are available.")
    waiting["status"]["extendedResourceClaimStatus"] = {"resourceClaimName": "plain-extended"}
    status = status_of([], [claim("plain-extended", device_class="dcu.hygon.com")], [waiting])
    (pending,) = status.pending
    assert (pending.pods, pending.reason) == (("plain",), "0/1 nodes are available.")


def test_driver_classes_are_recognised_by_their_selector() -> None:
    classes: list[dict[str, Any]] = [
        {
            "metadata": {"name": "mine"},
            "spec": {"selectors": [{"cel": {"expression": 'device.driver == "dcu.hygon.com"'}}]},
        },
        {
            "metadata": {"name": "theirs"},
            "spec": {"selectors": [{"cel": {"expression": 'device.driver == "gpu.example"'}}]},
        },
        {"metadata": {"name": "none"}, "spec": {}},
    ]
    assert driver_classes(classes, DRIVER_NAME) == {"mine"}


@pytest.mark.parametrize(
    ("text", "value"),
    [("60", 60), ("4Gi", 4 * GIB), ("1500M", 1_500_000_000), ("1500m", 2), ("bogus", 0)],
    ids=["plain", "binary", "decimal", "milli-rounded-up", "malformed"],
)
def test_parse_amount(text: str, value: int) -> None:
    assert parse_amount(text) == value


def sample() -> ClusterStatus:
    taint = {"key": "dcu.hygon.com/unhealthy", "value": "NotResponding", "effect": "NoSchedule"}
    return status_of(
        [
            slice_of(
                "node-a",
                device(Z100),
                device(K100, cores=120, memory="64Gi", model="K100_AI", taints=[taint]),
            )
        ],
        [
            claim("a", result("node-a", Z100, consumed=SHARE, share_id="s1"), pods=("pa",)),
            claim("big"),
        ],
        [pod("big-pod", claim_name="big", unschedulable="0/1 nodes are available.")],
    )


def test_table_has_a_row_per_dcu_and_the_summary() -> None:
    assert render(sample(), Output.TABLE) == (
        "NODE    DEVICE            MODEL    HEALTH                     CUS    MEMORY        "
        "VDCUS  CLAIMS  PODS\n"
        "node-a  dcu-0000-3b-00-0  Z100     Healthy                    10/60  4.0/32.0 GiB  "
        "1/4    ns/a    ns/pa\n"
        "node-a  dcu-0000-af-00-0  K100_AI  Unhealthy (NotResponding)  0/120  0.0/64.0 GiB  "
        "0/4    -       -\n"
        "2 DCUs on 1 node (1 unhealthy); free on healthy DCUs: 50 CUs, 28.0 GiB;"
        " 1 pending claim\n"
        "pending ns/big (pod ns/big-pod): 0/1 nodes are available.\n"
    )


def test_wide_adds_the_bus_id_and_what_each_claim_holds() -> None:
    lines = render(sample(), Output.WIDE).splitlines()
    assert lines[0].split()[3:6] == ["PCI", "BUS", "ID"]
    assert lines[0].split()[-2:] == ["SHARE", "HELD"]
    assert lines[1].split()[-7:] == ["ns/a", "ns/pa", "s1", "10", "CUs,", "4.0", "GiB"]


def test_each_further_claim_is_a_continuation_line_with_its_pods() -> None:
    status = status_of(
        [slice_of("n1", device(Z100))],
        [
            claim("a", result("n1", Z100, consumed=SHARE, share_id="s1"), pods=("pa",)),
            claim("team", result("n1", Z100, consumed=SHARE, share_id="s2"), pods=("t1", "t2")),
        ],
    )
    lines = render(status, Output.TABLE).splitlines()
    assert lines[1].split()[-2:] == ["ns/a", "ns/pa"]
    assert lines[2].split() == ["ns/team", "ns/t1,ns/t2"]
    assert lines[2].index("ns/team") == lines[1].index("ns/a")


@pytest.mark.parametrize("output", [Output.JSON, Output.YAML], ids=["json", "yaml"])
def test_documents_carry_exact_numbers(output: Output) -> None:
    text = render(sample(), output)
    document = json.loads(text) if output is Output.JSON else yaml.safe_load(text)
    assert document == status_document(sample())
    first = document["devices"][0]
    assert first["memory"] == {"allocatedBytes": 4 * GIB, "totalBytes": 32752 * 2**20}
    assert first["claims"][0]["shareID"] == "s1"
    assert document["summary"] == {
        "devices": 2,
        "unhealthy": 1,
        "freeCores": 50,
        "freeMemoryBytes": 32752 * 2**20 - 4 * GIB,
        "pendingClaims": 1,
    }


def test_an_empty_node_says_so() -> None:
    text = render(status_of([], [], node="n9"), Output.TABLE)
    assert text.startswith("No DCUs published in node n9.\n0 DCUs on 0 nodes;")
