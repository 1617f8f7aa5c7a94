"""What a container gets, checked with the container runtime's own CDI code.

Claims of every shape the e2e tests prepare are prepared by the real core on a mock node, and
the CDI IDs a kubelet would pass for a container are injected by the CDI Go library as
containerd calls it (``cdi-inject``, built by ``make cdiruntime``): the whole claim, one
request of it, two claims in one container, every device of the node at once, and the static
node spec. The container views are then checked with ``dcu-dra verify``, given the
environment the runtime produced.

The regression tests of the containers issue are marked in their docstrings (defects 1, 2, 3
and 5); each failed against the code before it.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from dra_driver.cdi import container_env
from dra_driver.cdi.build import build_node_spec
from dra_driver.cdi.files import write_spec
from dra_driver.node.devices import Inventory, discover
from dra_driver.prepare.model import Claim, PrepareResult
from dra_driver.prepare.plugin import DcuPlugin
from dra_driver.testing.cdi_runtime import RuntimeContainer, inject
from dra_driver.testing.container import ContainerView, build_container_view
from dra_driver.testing.core import allocated_share, local_plugin, prepare_claim
from dra_driver.tools.verify import CheckKind, Report, format_report, verify
from dra_driver.vdcu.vdev import parse_vdev

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0,
    reason="the CDI library accepts only real device nodes, which only root can create on the "
    "mock node (CI runs as root)",
)

Z100_A, Z100_B, K100 = "0000:3b:00.0", "0000:5e:00.0", "0000:af:00.0"
DEV_A, DEV_B, DEV_K = "dcu-0000-3b-00-0", "dcu-0000-5e-00-0", "dcu-0000-af-00-0"


@dataclass
class Prepared:
    claim: Claim
    result: PrepareResult

    def ids(self, *requests: str) -> list[str]:
        """The CDI IDs the kubelet passes for a container naming ``requests`` (none: all)."""
        return [
            cdi_id
            for device in self.result.devices
            if not requests or set(device.requests) & set(requests)
            for cdi_id in device.cdi_ids
        ]


@dataclass
class Node:
    root: Path
    base: Path
    plugin: DcuPlugin
    inventory: Inventory
    claims: dict[str, Prepared]

    @property
    def cdi_dir(self) -> Path:
        return self.base / "cdi"

    def container(self, name: str, cdi_ids: Sequence[str]) -> ContainerView:
        return build_container_view(self.base / "ctr" / name, [self.cdi_dir], cdi_ids)

    def verify(self, view: ContainerView) -> Report:
        assert view.container is not None  # laid out by the runtime, not our model
        return verify(
            view.at("/etc/vdev/docker"),
            view.at("/dev"),
            self.root / "sys",
            environ=view.container.env,
        )


@pytest.fixture
def node(mock_root: Path, tmp_path: Path) -> Node:
    """One node with a claim of every shape the e2e tests prepare."""
    plugin = local_plugin(mock_root, tmp_path)
    shapes = {
        "whole": [allocated_share(DEV_K, cores=None, memory_mib=None)],
        "share": [allocated_share(DEV_A, cores=15, memory_mib=4096)],
        "multi": [
            allocated_share(DEV_A, cores=10, memory_mib=2048),
            allocated_share(DEV_B, cores=10, memory_mib=2048),
        ],
        "reqs": [
            allocated_share(DEV_A, cores=5, memory_mib=1024, request="a"),
            allocated_share(DEV_B, cores=5, memory_mib=1024, request="b"),
        ],
    }
    claims = {
        name: Prepared(*prepare_claim(plugin, *shares, name=name))
        for name, shares in shapes.items()
    }
    return Node(mock_root, tmp_path, plugin, discover(mock_root), claims)


def vdev_files(container: RuntimeContainer) -> dict[str, str]:
    """Container path -> content of every vdev file the container sees."""
    return {
        path: host.read_text()
        for path, host in container.files().items()
        if path.startswith("/etc/vdev/docker/")
    }


def cards_of(container: RuntimeContainer, inventory: Inventory) -> list[str]:
    """PCI bus ids of the cards whose render node the container got, checked by number."""
    found = []
    for dcu in inventory.devices:
        host = os.stat(inventory.dev_path(f"dri/{dcu.render}"))
        paths = {n.path: n for n in container.device_nodes}
        node = paths.get(f"/dev/dri/{dcu.render}")
        if node is not None:
            assert (node.type, node.major, node.minor) == (
                "c",
                os.major(host.st_rdev),
                os.minor(host.st_rdev),
            )
            found.append(dcu.pci_bus_id)
    return found


@pytest.mark.parametrize("shape", ["whole", "share", "multi", "reqs"])
def test_a_container_holding_one_whole_claim_gets_exactly_it(node: Node, shape: str) -> None:
    prepared = node.claims[shape]
    view = node.container(shape, prepared.ids())
    assert view.container is not None
    assert view.container.conflicts == ()
    shares = [s for s in node.plugin.prepared_claims()[prepared.claim.ref.uid].shares]
    expected_cards = sorted(
        {d.pci_bus_id for d in node.inventory.devices if d.name in {s.device for s in shares}}
    )
    assert cards_of(view.container, node.inventory) == expected_cards
    files = vdev_files(view.container)
    assert sorted(files) == sorted(
        f"/etc/vdev/docker/vdev{s.vdev_id}.conf" for s in shares if s.vdev_id is not None
    )
    for path, text in files.items():
        parse_vdev(text, file_name=path.rsplit("/", 1)[1])  # rules 1 and 2 hold
    report = node.verify(view)
    if shape == "reqs":
        # Both requests in one container: each request numbers its cards from 0, so Z100_B's
        # share says device_id 0 where the container sees it as its second DCU.
        assert {c.kind for c in report.problems} == {CheckKind.DEVICE_ID}
        (problem,) = report.problems
        assert problem.message.startswith(
            f"vdev4.conf: device_id 0, but {Z100_B} is DCU 1 of the container's 2 "
            f"({Z100_A}, {Z100_B}) (claim ns/reqs)"
        )
    else:
        assert report.ok, format_report(report)


def test_a_container_naming_one_request_gets_only_that_requests_card(node: Node) -> None:
    """Regression, defects 2 and 3: the vdev mount and DCU_VISIBLE_DEVICES were spec-level,
    so request "b" alone got request "a"'s vdev file and card list, and its own file said
    device_id 1 although the container holds one DCU."""
    reqs = node.claims["reqs"]
    view = node.container("b-only", reqs.ids("b"))
    assert view.container is not None and view.container.conflicts == ()
    assert cards_of(view.container, node.inventory) == [Z100_B]
    (text,) = vdev_files(view.container).values()
    assert text.startswith(f"PciBusId: {Z100_B}\n")
    assert "\ndevice_id: 0\n" in text
    assert "DCU_VISIBLE_DEVICES" not in view.container.env
    variables = container_env.parse(view.container.env)
    assert set(variables.uuids) == {Z100_B}
    assert [v.values["PCI_BUS_ID"] for v in variables.vdcus.values()] == [Z100_B]
    report = node.verify(view)
    assert report.ok, format_report(report)


def test_two_claims_in_one_container_keep_each_others_variables_and_files(node: Node) -> None:
    """Regression, defects 1 and 3: a whole-card claim and a two-card share claim in one
    container; the variables were keyed by place in the claim (DCU_0_UUID, ...) and the second
    spec overwrote the first's, and the vdev directories of two share claims met on one path."""
    whole, multi = node.claims["whole"], node.claims["multi"]
    view = node.container("whole+multi", whole.ids() + multi.ids())
    assert view.container is not None
    assert view.container.conflicts == ()
    assert cards_of(view.container, node.inventory) == [Z100_A, Z100_B, K100]
    variables = container_env.parse(view.container.env)
    uuids = {d.pci_bus_id: d.uuid for d in node.inventory.devices}
    assert dict(variables.uuids) == uuids
    assert dict(variables.whole_claims) == {K100: "ns/whole"}
    assert sorted(v.values["CLAIM"] for v in variables.vdcus.values()) == ["ns/multi"] * 2
    assert len(vdev_files(view.container)) == 2
    report = node.verify(view)
    assert report.ok, format_report(report)  # multi's cards are DCUs 0 and 1, K100 is 2

    share, multi = node.claims["share"], node.claims["multi"]
    view = node.container("share+multi", share.ids() + multi.ids())
    assert view.container is not None and view.container.conflicts == ()
    assert len(vdev_files(view.container)) == 3  # no file lost on a shared path
    report = node.verify(view)
    assert CheckKind.ONE_PER_CARD in {c.kind for c in report.problems}
    assert any(
        f"configure {Z100_A} (claims ns/multi, ns/share): a container takes one vDCU per card"
        in c.message
        for c in report.problems
    ), format_report(report)


def test_every_device_prepared_on_the_node_injects_without_a_conflict(node: Node) -> None:
    """Regression, defect 1: injecting every device prepared on one node at once set 10 keys
    to different values."""
    ids = [cdi_id for prepared in node.claims.values() for cdi_id in prepared.ids()]
    container = inject([node.cdi_dir], ids)
    assert container.conflicts == ()
    destinations = [m.destination for m in container.mounts]
    assert len(destinations) == len(set(destinations))
    assert len([d for d in destinations if d.startswith("/etc/vdev/docker/")]) == 5


def test_every_device_of_the_node_spec_carries_its_own_cards_numbers(
    node: Node, tmp_path: Path
) -> None:
    """Regression, defect 5: every node of the mock had /dev/null's numbers, so nothing checked
    that each card's CDI device names that card's nodes."""
    spec_dir = tmp_path / "static"
    write_spec(build_node_spec(node.inventory), spec_dir, "hygon.com-dcu.json")
    numbers: set[tuple[int, int]] = set()
    for dcu in node.inventory.devices:
        container = inject([spec_dir], [f"hygon.com/dcu={dcu.index}"])
        assert container.conflicts == ()
        assert cards_of(container, node.inventory) == [dcu.pci_bus_id]
        for path in (f"/dev/dri/{dcu.card}", f"/dev/dri/{dcu.render}"):
            got = container.device_node(path)
            host = os.stat(node.inventory.dev_path(path.removeprefix("/dev/")))
            assert stat.S_ISCHR(host.st_mode)
            assert (got.major, got.minor) == (os.major(host.st_rdev), os.minor(host.st_rdev))
            numbers.add((got.major, got.minor))
        assert container.env == {f"DCU_{container_env.card_token(dcu.pci_bus_id)}_UUID": dcu.uuid}
    assert len(numbers) == 2 * len(node.inventory.devices)  # no two nodes share numbers
    everything = inject([spec_dir], ["hygon.com/dcu=all"])
    assert cards_of(everything, node.inventory) == [d.pci_bus_id for d in node.inventory.devices]
    # A device of the node spec and a claim's device of the same card agree on every key.
    both = inject([spec_dir, node.cdi_dir], ["hygon.com/dcu=0", *node.claims["share"].ids()])
    assert both.conflicts == ()


def test_every_path_the_runtime_gets_is_absolute(node: Node) -> None:
    ids = [cdi_id for prepared in node.claims.values() for cdi_id in prepared.ids()]
    container = inject([node.cdi_dir], ids)
    assert all(Path(m.source).is_absolute() for m in container.mounts)
    assert all(Path(n.host_path).is_absolute() for n in container.device_nodes)
