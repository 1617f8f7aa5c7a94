"""CU-mask allocator: worked examples, HAMi's defects, the fit guard and a stateful model."""

from __future__ import annotations

import re
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    rule,
)

from dra_driver.errors import AllocationError
from dra_driver.node.devices import DcuDevice, DeviceName, device_name_for
from dra_driver.vdcu.allocator import (
    EMPTY_MASK,
    PIPE_IDS_PER_CARD,
    CardLedger,
    CuMask,
    InsufficientComputeUnitsError,
    Layout,
    Share,
    ShareKey,
    allocate_cus,
    allocate_pipe_id,
)
from dra_driver.vdcu.vdev import VdevConfig, parse_vdev, render_vdev

DEVICE = DeviceName("dcu-0000-3b-00-0")
PCI_BUS_ID = "0000:3b:00.0"


def make_card(
    *, compute_units: int, simd_arrays: int = 1, memory_mib: int = 32768, max_vdevices: int = 4
) -> DcuDevice:
    return DcuDevice(
        index=0,
        name=device_name_for(PCI_BUS_ID),
        model="Z100",
        device_id=0x54B7,
        pci_bus_id=PCI_BUS_ID,
        uuid="DCU-test",
        compute_units=compute_units,
        memory_bytes=memory_mib * 1024 * 1024,
        numa_node=0,
        card="card1",
        render="renderD129",
        max_vdevices=max_vdevices,
        kfd_node=1,
        gpu_id=1234,
        simd_arrays=simd_arrays,
    )


def cu_range(start: int, stop: int) -> CuMask:
    return CuMask.from_cus(range(start, stop))


# --- CuMask ----------------------------------------------------------------------------------


def test_mask_words_split_at_cu_64() -> None:
    mask = CuMask.from_cus([0, 63, 64, 127])
    assert (mask.word0, mask.word1) == (1 | 1 << 63, 1 | 1 << 63)
    assert mask.cus() == (0, 63, 64, 127)
    assert mask.cu_count == 4
    assert mask.hex_words() == ("0x8000000000000001", "0x8000000000000001")


def test_mask_from_words_round_trips_through_cus() -> None:
    mask = CuMask.from_words(0xF000000000000000, 0xFF)
    assert mask.cus() == tuple(range(60, 72))
    assert CuMask.from_cus(mask.cus()) == mask


def test_empty_mask_formats_both_words_with_16_digits() -> None:
    assert EMPTY_MASK.hex_words() == ("0x0000000000000000", "0x0000000000000000")
    assert EMPTY_MASK.is_empty
    assert EMPTY_MASK.cu_count == 0


def test_hex_words_are_lowercase() -> None:
    assert CuMask.from_words(0xABCDEF, 0).hex_words()[0] == "0x0000000000abcdef"


@pytest.mark.parametrize(
    ("cus", "message"),
    [
        ([128], r"^CU 128 is outside the maskable range 0-127$"),
        ([-1], r"^CU -1 is outside the maskable range 0-127$"),
    ],
    ids=["cu-128", "negative-cu"],
)
def test_mask_from_cus_rejects_cus_outside_two_words(cus: list[int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CuMask.from_cus(cus)


@pytest.mark.parametrize(
    ("word0", "word1", "message"),
    [
        (1 << 64, 0, r"^cu_mask word0 0x10000000000000000 does not fit in 64 bits$"),
        (0, -1, r"^cu_mask word1 -0x1 does not fit in 64 bits$"),
    ],
    ids=["word0-too-wide", "word1-negative"],
)
def test_mask_from_words_rejects_words_outside_64_bits(
    word0: int, word1: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        CuMask.from_words(word0, word1)


def test_overlaps_and_union() -> None:
    a, b, c = cu_range(0, 2), cu_range(2, 4), cu_range(1, 3)
    assert not a.overlaps(b)
    assert a.overlaps(c)
    assert b.overlaps(c)
    assert a.union(b) == cu_range(0, 4)
    assert a.union(EMPTY_MASK) == a


def test_is_within_checks_the_card_size() -> None:
    assert cu_range(0, 60).is_within(60)
    assert not cu_range(0, 61).is_within(60)
    assert EMPTY_MASK.is_within(1)


# --- allocate_cus: worked examples ----------------------------------------------------------


@pytest.mark.parametrize(
    ("compute_units", "simd_arrays", "used", "count", "layout", "words"),
    [
        (60, 1, EMPTY_MASK, 30, Layout.PACKED, ("0x000000003fffffff", "0x0000000000000000")),
        (60, 1, cu_range(0, 30), 20, Layout.PACKED, ("0x0003ffffc0000000", "0x0000000000000000")),
        (120, 1, cu_range(0, 60), 12, Layout.PACKED, ("0xf000000000000000", "0x00000000000000ff")),
        # HAMi defect #1: A holds 0x3, B asks for 1 CU and must get CU 2, not CU 0.
        (60, 1, cu_range(0, 2), 1, Layout.PACKED, ("0x0000000000000004", "0x0000000000000000")),
        # Packed fills holes first: CUs 0-1 and 4-5 used, 3 CUs -> 2, 3, 6.
        (
            60,
            1,
            CuMask.from_cus([0, 1, 4, 5]),
            3,
            Layout.PACKED,
            ("0x000000000000004c", "0x0000000000000000"),
        ),
        (128, 1, EMPTY_MASK, 128, Layout.PACKED, ("0xffffffffffffffff", "0xffffffffffffffff")),
        (1, 1, EMPTY_MASK, 1, Layout.PACKED, ("0x0000000000000001", "0x0000000000000000")),
    ],
    ids=[
        "first-share-30-cus",
        "second-share-20-cus",
        "share-spans-both-words",
        "hami-overlap-defect-1",
        "packed-fills-holes",
        "whole-128-cu-card",
        "one-cu-card",
    ],
)
def test_allocate_cus_worked_examples(
    compute_units: int,
    simd_arrays: int,
    used: CuMask,
    count: int,
    layout: Layout,
    words: tuple[str, str],
) -> None:
    mask = allocate_cus(
        compute_units=compute_units, simd_arrays=simd_arrays, used=used, count=count, layout=layout
    )
    assert mask.hex_words() == words
    assert mask.cu_count == count
    assert not mask.overlaps(used)


@pytest.mark.parametrize(
    ("used", "count", "cus"),
    [
        (EMPTY_MASK, 4, (0, 15, 30, 45)),
        (EMPTY_MASK, 6, (0, 1, 15, 16, 30, 45)),
        (cu_range(0, 15), 4, (15, 16, 30, 45)),  # group 0 full: skipped
        (CuMask.from_cus([0, 15]), 3, (1, 16, 30)),
        (cu_range(0, 59), 1, (59,)),  # only the last CU of group 3 is free
    ],
    ids=[
        "one-per-array",
        "wraps-to-second-round",
        "skips-full-array",
        "lowest-free-of-each-array",
        "last-free-cu",
    ],
)
def test_spread_takes_cus_round_robin_over_4_arrays_of_15(
    used: CuMask, count: int, cus: tuple[int, ...]
) -> None:
    mask = allocate_cus(
        compute_units=60, simd_arrays=4, used=used, count=count, layout=Layout.SPREAD
    )
    assert mask.cus() == cus


def test_spread_with_one_array_is_packed() -> None:
    used = CuMask.from_cus([0, 3])
    spread = allocate_cus(compute_units=60, simd_arrays=1, used=used, count=5, layout=Layout.SPREAD)
    packed = allocate_cus(compute_units=60, simd_arrays=1, used=used, count=5, layout=Layout.PACKED)
    assert spread == packed == CuMask.from_cus([1, 2, 4, 5, 6])


def test_layout_values_are_the_config_words() -> None:
    assert [str(layout) for layout in Layout] == ["packed", "spread"]
    assert Layout("spread") is Layout.SPREAD


# --- allocate_cus: failures -----------------------------------------------------------------


def test_insufficient_cus_names_requested_free_and_total() -> None:
    with pytest.raises(
        InsufficientComputeUnitsError, match=r"^requested 20 CUs, only 10 of 60 free; "
    ) as caught:
        allocate_cus(
            compute_units=60, simd_arrays=1, used=cu_range(0, 50), count=20, layout=Layout.PACKED
        )
    assert (caught.value.requested_cus, caught.value.free_cus, caught.value.total_cus) == (
        20,
        10,
        60,
    )
    assert isinstance(caught.value, AllocationError)


@pytest.mark.parametrize("layout", list(Layout), ids=[str(layout) for layout in Layout])
def test_full_card_has_no_cu_left(layout: Layout) -> None:
    with pytest.raises(InsufficientComputeUnitsError, match=r"^requested 1 CUs, only 0 of 60 "):
        allocate_cus(compute_units=60, simd_arrays=4, used=cu_range(0, 60), count=1, layout=layout)


@pytest.mark.parametrize(
    ("compute_units", "simd_arrays", "used", "count", "message"),
    [
        (60, 1, EMPTY_MASK, 0, r"^a share needs at least 1 CU, got 0; "),
        (60, 1, EMPTY_MASK, -3, r"^a share needs at least 1 CU, got -3; "),
        (129, 1, EMPTY_MASK, 1, r"^a card with 129 CUs cannot be sliced: .*two 64-bit words"),
        (0, 1, EMPTY_MASK, 1, r"^a card with 0 CUs cannot be sliced: "),
        (60, 8, EMPTY_MASK, 1, r"^8 SIMD arrays do not divide the card's 60 CUs evenly; "),
        (60, 0, EMPTY_MASK, 1, r"^0 SIMD arrays do not divide the card's 60 CUs evenly; "),
        (60, 1, CuMask.from_cus([60]), 1, r"^used CUs .* reach beyond the card's 60 CUs; "),
    ],
    ids=[
        "count-0",
        "count-negative",
        "more-than-128-cus",
        "no-cus",
        "arrays-do-not-divide",
        "zero-arrays",
        "used-outside-card",
    ],
)
def test_allocate_cus_rejects_bad_input(
    compute_units: int, simd_arrays: int, used: CuMask, count: int, message: str
) -> None:
    with pytest.raises(AllocationError, match=message):
        allocate_cus(
            compute_units=compute_units,
            simd_arrays=simd_arrays,
            used=used,
            count=count,
            layout=Layout.PACKED,
        )


# --- pipe ids -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("used", "expected"),
    [
        (set(), 0),
        ({0}, 1),
        ({0, 1, 3}, 2),
        ({1, 2}, 0),
        (set(range(19)), 19),
    ],
    ids=["empty", "after-0", "fills-hole", "reuses-0", "last-id"],
)
def test_allocate_pipe_id_takes_the_lowest_free(used: set[int], expected: int) -> None:
    assert allocate_pipe_id(used) == expected


def test_pipe_pool_holds_20_ids() -> None:
    assert PIPE_IDS_PER_CARD == 20
    with pytest.raises(AllocationError, match=r"^all 20 pipe ids \(0-19\) of the card are in use"):
        allocate_pipe_id(set(range(20)))


def test_pipe_pool_limit_is_configurable() -> None:
    assert allocate_pipe_id([0, 1], limit=3) == 2
    with pytest.raises(AllocationError, match=r"^all 2 pipe ids \(0-1\) "):
        allocate_pipe_id([0, 1], limit=2)


# --- CardLedger -----------------------------------------------------------------------------


def share(key: str, mask: CuMask, *, pipe_id: int, memory_mib: int = 1024) -> Share:
    return Share(key=ShareKey(key), mask=mask, pipe_id=pipe_id, memory_mib=memory_mib)


def two_share_ledger() -> CardLedger:
    return CardLedger(
        DEVICE,
        (
            share("a", cu_range(0, 30), pipe_id=0, memory_mib=16384),
            share("b", cu_range(30, 50), pipe_id=1, memory_mib=8192),
        ),
    )


def test_ledger_sums_live_shares() -> None:
    ledger = two_share_ledger()
    assert ledger.used_mask == cu_range(0, 50)
    assert ledger.used_pipes == frozenset({0, 1})
    assert ledger.used_memory_mib == 24576
    assert ledger.share_count == 2


def test_empty_ledger_uses_nothing() -> None:
    ledger = CardLedger(DEVICE)
    assert ledger.used_mask == EMPTY_MASK
    assert ledger.used_pipes == frozenset()
    assert ledger.used_memory_mib == 0
    assert ledger.share_count == 0


def test_ledger_without_share_is_idempotent() -> None:
    ledger = two_share_ledger().without_share("a")
    assert [s.key for s in ledger.shares] == ["b"]
    assert ledger.without_share("a") == ledger
    assert ledger.get("a") is None


@pytest.mark.parametrize(
    ("shares", "message"),
    [
        (
            (share("a", cu_range(0, 2), pipe_id=0), share("b", cu_range(1, 3), pipe_id=1)),
            r"^dcu-0000-3b-00-0: shares a and b overlap on CUs 1$",
        ),
        (
            (share("a", cu_range(0, 2), pipe_id=0), share("b", cu_range(2, 3), pipe_id=0)),
            r"^dcu-0000-3b-00-0: shares a and b both use pipe id 0$",
        ),
        (
            (share("a", cu_range(0, 2), pipe_id=0), share("a", cu_range(2, 3), pipe_id=1)),
            r"^dcu-0000-3b-00-0: share a is recorded twice$",
        ),
    ],
    ids=["overlapping-masks", "duplicate-pipe-id", "duplicate-key"],
)
def test_ledger_refuses_inconsistent_shares(shares: tuple[Share, ...], message: str) -> None:
    with pytest.raises(AllocationError, match=message):
        CardLedger(DEVICE, shares)


@pytest.mark.parametrize(
    ("mask", "pipe_id", "memory_mib", "message"),
    [
        (EMPTY_MASK, 0, 1, r"^share s: the CU mask is empty$"),
        (cu_range(0, 1), -1, 1, r"^share s: pipe id -1 is negative$"),
        (cu_range(0, 1), 0, 0, r"^share s: memory 0 MiB is below 1 MiB$"),
    ],
    ids=["empty-mask", "negative-pipe", "no-memory"],
)
def test_share_rejects_impossible_values(
    mask: CuMask, pipe_id: int, memory_mib: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        share("s", mask, pipe_id=pipe_id, memory_mib=memory_mib)


def check_fits(ledger: CardLedger, *, cores: int, memory_mib: int, max_vdevices: int = 4) -> None:
    ledger.check_fits(
        cores=cores,
        memory_mib=memory_mib,
        max_vdevices=max_vdevices,
        compute_units=60,
        memory_total_mib=32768,
    )


def test_check_fits_accepts_a_share_that_fills_the_card_exactly() -> None:
    check_fits(two_share_ledger(), cores=10, memory_mib=8192, max_vdevices=3)


@pytest.mark.parametrize(
    ("cores", "memory_mib", "max_vdevices", "message"),
    [
        (
            11,
            1024,
            4,
            r"^dcu-0000-3b-00-0: cannot place the share: requested 11 CUs, only 10 of 60 free "
            r"\(",
        ),
        (
            10,
            8193,
            4,
            r"^dcu-0000-3b-00-0: cannot place the share: requested 8193 MiB, only 8192 of "
            r"32768 MiB free \(",
        ),
        (
            1,
            1,
            2,
            r"^dcu-0000-3b-00-0: cannot place the share: all 2 vDCU slots are taken by live "
            r"shares \(2\) \(",
        ),
        (
            0,
            0,
            4,
            r"^dcu-0000-3b-00-0: cannot place the share: a share needs at least 1 CU, got 0; "
            r"a share needs at least 1 MiB of memory, got 0 \(",
        ),
        (
            60,
            32768,
            2,
            r"^dcu-0000-3b-00-0: cannot place the share: all 2 vDCU slots .*; requested 60 CUs, "
            r"only 10 of 60 free; requested 32768 MiB, only 8192 of 32768 MiB free \(",
        ),
    ],
    ids=["cus", "memory", "vdevice-slots", "empty-request", "every-limit-at-once"],
)
def test_check_fits_names_the_device_and_each_exceeded_limit(
    cores: int, memory_mib: int, max_vdevices: int, message: str
) -> None:
    with pytest.raises(AllocationError, match=message):
        check_fits(
            two_share_ledger(), cores=cores, memory_mib=memory_mib, max_vdevices=max_vdevices
        )


def test_place_share_takes_free_cus_and_the_lowest_free_pipe() -> None:
    ledger = two_share_ledger().without_share("a")  # CUs 0-29 and pipe 0 free again
    placed = ledger.place_share(
        key=ShareKey("c"),
        cores=8,
        memory_mib=4096,
        card=make_card(compute_units=60),
        layout=Layout.PACKED,
    )
    assert placed == share("c", cu_range(0, 8), pipe_id=0, memory_mib=4096)
    assert ledger.with_share(placed).used_mask == cu_range(0, 8).union(cu_range(30, 50))


@pytest.mark.parametrize(
    ("key", "card", "message"),
    [
        ("a", make_card(compute_units=60), r"^dcu-0000-3b-00-0: share a is already live$"),
        (
            "c",
            make_card(compute_units=60, max_vdevices=2),
            r"^dcu-0000-3b-00-0: cannot place the share: all 2 vDCU slots ",
        ),
    ],
    ids=["live-key", "no-slot"],
)
def test_place_share_refuses(key: str, card: DcuDevice, message: str) -> None:
    with pytest.raises(AllocationError, match=message):
        two_share_ledger().place_share(
            key=ShareKey(key), cores=1, memory_mib=1, card=card, layout=Layout.PACKED
        )


def test_place_share_refuses_another_card() -> None:
    ledger = CardLedger(DeviceName("dcu-0000-5e-00-0"))
    with pytest.raises(
        AllocationError,
        match=r"^ledger of dcu-0000-5e-00-0 cannot place a share on dcu-0000-3b-00-0$",
    ):
        ledger.place_share(
            key=ShareKey("c"),
            cores=1,
            memory_mib=1,
            card=make_card(compute_units=60),
            layout=Layout.PACKED,
        )


def test_place_share_runs_out_of_pipe_ids_before_slots() -> None:
    shares = tuple(share(f"s{i}", cu_range(i, i + 1), pipe_id=i) for i in range(20))
    ledger = CardLedger(DEVICE, shares)
    card = make_card(compute_units=60, max_vdevices=64)
    with pytest.raises(
        AllocationError, match=r"^dcu-0000-3b-00-0: all 20 pipe ids \(0-19\) of the card "
    ):
        ledger.place_share(
            key=ShareKey("x"), cores=1, memory_mib=1, card=card, layout=Layout.PACKED
        )


# --- properties -----------------------------------------------------------------------------


@st.composite
def card_shapes(draw: st.DrawFn) -> tuple[int, int]:
    """A CU count in 1..128 and a SIMD array count in {1, 2, 4, 8} that divides it (else 1)."""
    compute_units = draw(st.integers(1, 128))
    arrays = draw(st.sampled_from([1, 2, 4, 8]))
    return compute_units, arrays if compute_units % arrays == 0 else 1


@given(shape=card_shapes(), layout=st.sampled_from(Layout), data=st.data())
def test_allocation_is_deterministic_exact_and_disjoint(
    shape: tuple[int, int], layout: Layout, data: st.DataObject
) -> None:
    compute_units, simd_arrays = shape
    used = CuMask.from_cus(data.draw(st.sets(st.integers(0, compute_units - 1))))
    free = compute_units - used.cu_count
    count = data.draw(st.integers(1, max(free, 1)))
    if free == 0:
        with pytest.raises(InsufficientComputeUnitsError):
            allocate_cus(
                compute_units=compute_units,
                simd_arrays=simd_arrays,
                used=used,
                count=count,
                layout=layout,
            )
        return
    first = allocate_cus(
        compute_units=compute_units, simd_arrays=simd_arrays, used=used, count=count, layout=layout
    )
    again = allocate_cus(
        compute_units=compute_units, simd_arrays=simd_arrays, used=used, count=count, layout=layout
    )
    assert first == again
    assert first.cu_count == count
    assert not first.overlaps(used)
    assert first.is_within(compute_units)


@given(shape=card_shapes(), data=st.data())
def test_spread_balances_arrays_on_an_empty_card(
    shape: tuple[int, int], data: st.DataObject
) -> None:
    compute_units, simd_arrays = shape
    count = data.draw(st.integers(1, compute_units))
    mask = allocate_cus(
        compute_units=compute_units,
        simd_arrays=simd_arrays,
        used=EMPTY_MASK,
        count=count,
        layout=Layout.SPREAD,
    )
    per_array = Counter(cu // (compute_units // simd_arrays) for cu in mask.cus())
    counts = [per_array.get(g, 0) for g in range(simd_arrays)]
    assert max(counts) - min(counts) <= 1


# --- stateful model -------------------------------------------------------------------------


class CardLedgerMachine(RuleBasedStateMachine):
    """Random prepare/unprepare/restart sequences on one card, checked against a plain model."""

    keys = Bundle("keys")

    def __init__(self) -> None:
        super().__init__()
        self.card = make_card(compute_units=1)
        self.layout = Layout.PACKED
        self.ledger = CardLedger(self.card.name)
        self.model: dict[str, frozenset[int]] = {}
        self.next_key = 0

    @initialize(
        shape=card_shapes(),
        layout=st.sampled_from(Layout),
        memory_mib=st.integers(1, 65536),
        max_vdevices=st.integers(1, PIPE_IDS_PER_CARD + 2),
    )
    def make_card(
        self, shape: tuple[int, int], layout: Layout, memory_mib: int, max_vdevices: int
    ) -> None:
        compute_units, simd_arrays = shape
        self.card = make_card(
            compute_units=compute_units,
            simd_arrays=simd_arrays,
            memory_mib=memory_mib,
            max_vdevices=max_vdevices,
        )
        self.layout = layout
        self.ledger = CardLedger(self.card.name)

    def free_cus(self) -> int:
        return self.card.compute_units - sum(len(cus) for cus in self.model.values())

    @rule(target=keys, data=st.data())
    def prepare(self, data: st.DataObject) -> object:
        cores = data.draw(st.integers(1, self.card.compute_units + 1), label="cores")
        memory_mib = data.draw(st.integers(1, self.card.memory_mib // 2 + 1), label="memory_mib")
        key = ShareKey(f"claim-{self.next_key}")
        self.next_key += 1
        cus_fit = cores <= self.free_cus()
        # The allocator alone: never fails with enough free CUs, always fails without.
        if cus_fit:
            mask = allocate_cus(
                compute_units=self.card.compute_units,
                simd_arrays=self.card.simd_arrays,
                used=self.ledger.used_mask,
                count=cores,
                layout=self.layout,
            )
            assert mask.cu_count == cores
        else:
            with pytest.raises(InsufficientComputeUnitsError):
                allocate_cus(
                    compute_units=self.card.compute_units,
                    simd_arrays=self.card.simd_arrays,
                    used=self.ledger.used_mask,
                    count=cores,
                    layout=self.layout,
                )
        fits = (
            cus_fit
            and len(self.model) < min(self.card.max_vdevices, PIPE_IDS_PER_CARD)
            and self.ledger.used_memory_mib + memory_mib <= self.card.memory_mib
        )
        if not fits:
            with pytest.raises(AllocationError):
                self.ledger.place_share(
                    key=key, cores=cores, memory_mib=memory_mib, card=self.card, layout=self.layout
                )
            return multiple()
        placed = self.ledger.place_share(
            key=key, cores=cores, memory_mib=memory_mib, card=self.card, layout=self.layout
        )
        # Same claim, same ledger: same share.
        assert placed == self.ledger.place_share(
            key=key, cores=cores, memory_mib=memory_mib, card=self.card, layout=self.layout
        )
        assert placed.mask == mask
        # The vdev file the share becomes survives render + parse with cu_count == popcount.
        config = VdevConfig(
            pci_bus_id=self.card.pci_bus_id,
            mask=placed.mask,
            memory_mib=placed.memory_mib,
            device_id=0,
            vdev_id=0,
            pipe_id=placed.pipe_id,
        )
        text = render_vdev(config)
        assert parse_vdev(text, file_name="vdev0.conf") == config
        assert re.search(rf"^cu_count: {cores}$", text, re.MULTILINE)
        self.ledger = self.ledger.with_share(placed)
        self.model[key] = frozenset(placed.mask.cus())
        return key

    @rule(key=consumes(keys))
    def unprepare(self, key: ShareKey) -> None:
        self.ledger = self.ledger.without_share(key)
        del self.model[key]
        # A repeated unprepare (kubelet retry, restart) changes nothing.
        assert self.ledger.without_share(key) == self.ledger

    @rule()
    def restart(self) -> None:
        """Rebuild the ledger from the shares' rendered vdev files, as after a plugin restart."""
        rebuilt = []
        for live in self.ledger.shares:
            config = VdevConfig(
                pci_bus_id=self.card.pci_bus_id,
                mask=live.mask,
                memory_mib=live.memory_mib,
                device_id=0,
                vdev_id=0,
                pipe_id=live.pipe_id,
            )
            parsed = parse_vdev(render_vdev(config), file_name="vdev0.conf")
            rebuilt.append(
                Share(
                    key=live.key,
                    mask=parsed.mask,
                    pipe_id=parsed.pipe_id,
                    memory_mib=parsed.memory_mib,
                )
            )
        restored = CardLedger(self.card.name, tuple(rebuilt))
        assert restored == self.ledger
        self.ledger = restored

    @invariant()
    def no_cu_belongs_to_two_live_shares(self) -> None:
        total = sum(s.mask.cu_count for s in self.ledger.shares)
        assert total == self.ledger.used_mask.cu_count

    @invariant()
    def every_mask_is_within_the_card(self) -> None:
        for live in self.ledger.shares:
            assert live.mask.is_within(self.card.compute_units)
            assert not live.mask.is_empty

    @invariant()
    def pipe_ids_are_unique_and_in_the_pool(self) -> None:
        pipes = [s.pipe_id for s in self.ledger.shares]
        assert len(set(pipes)) == len(pipes)
        assert all(0 <= p < PIPE_IDS_PER_CARD for p in pipes)

    @invariant()
    def used_plus_free_is_the_card(self) -> None:
        used = set(self.ledger.used_mask.cus())
        free = set(range(self.card.compute_units)) - used
        assert len(used) + len(free) == self.card.compute_units
        assert len(free) == self.free_cus()

    @invariant()
    def ledger_matches_the_model(self) -> None:
        assert {s.key: frozenset(s.mask.cus()) for s in self.ledger.shares} == self.model
        assert self.ledger.share_count == len(self.model)

    def teardown(self) -> None:
        for live in self.ledger.shares:
            self.ledger = self.ledger.without_share(live.key)
        assert self.ledger.used_mask == EMPTY_MASK
        assert self.ledger.used_pipes == frozenset()
        assert self.ledger.used_memory_mib == 0
        assert self.ledger.share_count == 0


CardLedgerMachine.TestCase.settings = settings(
    max_examples=100, stateful_step_count=30, deadline=None
)
TestCardLedgerMachine = CardLedgerMachine.TestCase
