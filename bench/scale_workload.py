"""The scale run's workload: which pods, in what order, asking for how much of a card (pure).

Three sizes, each a ResourceClaimTemplate with one request: a quarter and a half card (class
``vdcu.dcu.hygon.com`` with capacity requests for CUs and memory, so the scheduler allocates a
share with consumable capacity) and a whole card (class ``dcu.hygon.com``, no capacity
requests: the whole card). The mixed plan fills the cluster exactly when packed well: a quarter
of the cards whole, a quarter in halves and half in quarters, interleaved so every wave mixes
the three; the baseline plan is one whole card per DCU.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Any

from dra_driver.testing.cluster import dcu_claim_template

#: A mock Z100 (bench.node): 60 CUs, 32752 MiB, and up to 4 vDCU shares (--max-vdevices).
CARD_CORES = 60
CARD_MEMORY_MIB = 34342961152 // (1024 * 1024)


class Size(enum.Enum):
    """How much of a card a pod asks for."""

    QUARTER = "quarter"
    HALF = "half"
    WHOLE = "whole"

    @property
    def quarters(self) -> int:
        """Quarter cards this size takes."""
        return {Size.QUARTER: 1, Size.HALF: 2, Size.WHOLE: 4}[self]

    @property
    def is_share(self) -> bool:
        """A share of a card (consumable capacity), not the whole card."""
        return self is not Size.WHOLE

    @property
    def template_name(self) -> str:
        """The name of this size's ResourceClaimTemplate."""
        return f"dcu-{self.value}"


def claim_template(size: Size) -> dict[str, Any]:
    """The ResourceClaimTemplate of ``size`` (namespace set by the caller's create)."""
    capacity = (
        {
            "cores": str(CARD_CORES * size.quarters // 4),
            "memory": f"{CARD_MEMORY_MIB * size.quarters // 4}Mi",
        }
        if size.is_share
        else None
    )
    return dcu_claim_template(size.template_name, capacity=capacity)


def pod(name: str, size: Size) -> dict[str, Any]:
    """A one-container pod with a claim from ``size``'s template (no image is ever pulled)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"dcu-size": size.value}},
        "spec": {
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 0,
            "containers": [
                {
                    "name": "app",
                    "image": "registry.local/none",
                    "resources": {"claims": [{"name": "dcu"}]},
                }
            ],
            "resourceClaims": [{"name": "dcu", "resourceClaimTemplateName": size.template_name}],
        },
    }


#: One round of the mixed plan: 1 whole : 2 halves : 8 quarters, i.e. 4 cards.
_MIXED_ROUND = (
    Size.WHOLE,
    Size.QUARTER,
    Size.HALF,
    Size.QUARTER,
    Size.QUARTER,
    Size.QUARTER,
    Size.HALF,
    Size.QUARTER,
    Size.QUARTER,
    Size.QUARTER,
    Size.QUARTER,
)


def mixed_plan(cards: int) -> list[Size]:
    """Pods that fill ``cards`` DCUs exactly: a quarter whole, a quarter halved, half quartered.

    Rounds of four cards come first; the cards left over (fewer than four) are quartered.
    """
    if cards < 1:
        raise ValueError(f"a plan needs at least one card, not {cards}")
    rounds, rest = divmod(cards, 4)
    return list(_MIXED_ROUND) * rounds + [Size.QUARTER] * (4 * rest)


def whole_plan(cards: int) -> list[Size]:
    """The baseline: one whole-card pod per DCU."""
    if cards < 1:
        raise ValueError(f"a plan needs at least one card, not {cards}")
    return [Size.WHOLE] * cards


def waves(plan: Sequence[Size], wave_size: int) -> list[list[Size]]:
    """``plan`` cut into waves of ``wave_size`` pods (the last may be smaller)."""
    if wave_size < 1:
        raise ValueError(f"a wave needs at least one pod, not {wave_size}")
    return [list(plan[i : i + wave_size]) for i in range(0, len(plan), wave_size)]
