"""The scale run's workload plans and the objects it creates."""

from __future__ import annotations

from collections import Counter

import pytest

from bench.scale_workload import (
    CARD_CORES,
    CARD_MEMORY_MIB,
    Size,
    claim_template,
    mixed_plan,
    pod,
    waves,
    whole_plan,
)


@pytest.mark.parametrize("cards", [1, 3, 4, 7, 1000])
def test_the_mixed_plan_fills_the_cards_exactly(cards: int) -> None:
    plan = mixed_plan(cards)
    assert sum(size.quarters for size in plan) == 4 * cards


def test_the_mixed_plan_of_1000_cards_is_a_quarter_whole_a_quarter_halved() -> None:
    counts = Counter(mixed_plan(1000))
    assert counts == {Size.WHOLE: 250, Size.HALF: 500, Size.QUARTER: 2000}


def test_every_wave_of_the_mixed_plan_mixes_the_sizes() -> None:
    for wave in waves(mixed_plan(1000), 250):
        assert set(wave) == set(Size)


def test_waves_keep_the_order_and_the_last_one_is_the_rest() -> None:
    plan = whole_plan(5)
    assert waves(plan, 2) == [[Size.WHOLE] * 2, [Size.WHOLE] * 2, [Size.WHOLE]]


@pytest.mark.parametrize(
    "call", [lambda: mixed_plan(0), lambda: whole_plan(0), lambda: waves([Size.WHOLE], 0)]
)
def test_empty_plans_and_waves_are_refused(call: object) -> None:
    with pytest.raises(ValueError, match="at least one"):
        call()  # type: ignore[operator]


def test_a_share_template_asks_for_its_part_of_the_card_a_whole_one_for_none() -> None:
    half = claim_template(Size.HALF)["spec"]["spec"]["devices"]["requests"][0]["exactly"]
    assert half == {
        "deviceClassName": "vdcu.dcu.hygon.com",
        "capacity": {
            "requests": {"cores": str(CARD_CORES // 2), "memory": f"{CARD_MEMORY_MIB // 2}Mi"}
        },
    }
    whole = claim_template(Size.WHOLE)["spec"]["spec"]["devices"]["requests"][0]["exactly"]
    assert whole == {"deviceClassName": "dcu.hygon.com"}


def test_a_pod_uses_its_sizes_template() -> None:
    obj = pod("p1", Size.QUARTER)
    assert obj["spec"]["resourceClaims"] == [
        {"name": "dcu", "resourceClaimTemplateName": "dcu-quarter"}
    ]
    assert obj["spec"]["containers"][0]["resources"]["claims"] == [{"name": "dcu"}]
