"""CU-mask allocation for vDCU shares on one DCU: pure functions over frozen dataclasses.

Owns the choice of compute units (a ``CuMask``), of a share's ``pipe_id`` and the node-side fit
check of a new share against the card's live shares (``CardLedger``). Pure: never touches the
filesystem, the clock or the API server; every function is deterministic, so a plan recomputed
after a restart gives the same answer. Callers serialize the scan -> choose -> write cycle (two
concurrent allocations against the same ledger would both see the same free CUs).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import NewType

from dra_driver.errors import AllocationError
from dra_driver.node.devices import MAX_MASKABLE_CUS, DcuDevice, DeviceName

ShareKey = NewType("ShareKey", str)
"""Identifies one live share on a card (e.g. ``<claim uid>/<request>``)."""

#: Bits per ``cu_mask`` word of a vdev config file: word 0 holds CUs 0-63, word 1 CUs 64-127.
MASK_WORD_BITS = 64
#: Largest value of one mask word.
_WORD_LIMIT = 1 << MASK_WORD_BITS
#: ``pipe_id`` pool per card: HAMi's device plugin keeps a pool of 20 per device and gpustack
#: bounds it with ``maxPipeID = 20``; nobody has measured whether the runtime accepts more.
PIPE_IDS_PER_CARD = 20


class InsufficientComputeUnitsError(AllocationError):
    """Fewer free CUs on a DCU than a share asks for."""

    def __init__(
        self, *, requested_cus: int, free_cus: int, total_cus: int, device: str = ""
    ) -> None:
        self.requested_cus = requested_cus
        self.free_cus = free_cus
        self.total_cus = total_cus
        self.device = device
        super().__init__(str(self))

    def __str__(self) -> str:
        subject = f"{self.device}: " if self.device else ""
        return (
            f"{subject}requested {self.requested_cus} CUs, only {self.free_cus} of "
            f"{self.total_cus} free; wait for a share on this DCU to end or ask for fewer CUs"
        )


@dataclass(frozen=True, slots=True)
class CuMask:
    """A set of compute units as the two 64-bit ``cu_mask`` words of a vdev config file.

    Bit c of ``word0`` is CU c (0-63); bit c of ``word1`` is CU 64 + c (64-127).
    """

    word0: int = 0
    word1: int = 0

    def __post_init__(self) -> None:
        for name, word in (("word0", self.word0), ("word1", self.word1)):
            if not 0 <= word < _WORD_LIMIT:
                raise ValueError(f"cu_mask {name} {word:#x} does not fit in 64 bits")

    @classmethod
    def from_words(cls, word0: int, word1: int) -> CuMask:
        """Build a mask from its two words; raise ValueError if one does not fit in 64 bits."""
        return cls(word0, word1)

    @classmethod
    def from_cus(cls, cus: Iterable[int]) -> CuMask:
        """Build a mask holding the given CU indexes; raise ValueError outside [0, 128)."""
        bits = 0
        for cu in cus:
            if not 0 <= cu < MAX_MASKABLE_CUS:
                raise ValueError(f"CU {cu} is outside the maskable range 0-{MAX_MASKABLE_CUS - 1}")
            bits |= 1 << cu
        return cls._from_bits(bits)

    @classmethod
    def _from_bits(cls, bits: int) -> CuMask:
        return cls(bits & (_WORD_LIMIT - 1), bits >> MASK_WORD_BITS)

    @property
    def bits(self) -> int:
        """The mask as one 128-bit integer (bit c = CU c)."""
        return self.word0 | (self.word1 << MASK_WORD_BITS)

    @property
    def cu_count(self) -> int:
        """Number of CUs in the mask: the popcount of both words."""
        return self.word0.bit_count() + self.word1.bit_count()

    @property
    def is_empty(self) -> bool:
        """Whether the mask holds no CU."""
        return self.bits == 0

    def cus(self) -> tuple[int, ...]:
        """Return the CU indexes in the mask, ascending."""
        bits = self.bits
        return tuple(cu for cu in range(MAX_MASKABLE_CUS) if bits >> cu & 1)

    def overlaps(self, other: CuMask) -> bool:
        """Whether the two masks share at least one CU."""
        return self.bits & other.bits != 0

    def union(self, other: CuMask) -> CuMask:
        """Return the CUs in either mask."""
        return CuMask._from_bits(self.bits | other.bits)

    def is_within(self, compute_units: int) -> bool:
        """Whether every CU of the mask is below ``compute_units``."""
        return self.bits >> compute_units == 0

    def hex_words(self) -> tuple[str, str]:
        """Return both words as the vdev file writes them: ``0x%016x``, lowercase."""
        return f"0x{self.word0:016x}", f"0x{self.word1:016x}"


EMPTY_MASK = CuMask()
"""The mask without any CU."""


class Layout(StrEnum):
    """How ``allocate_cus`` picks free CUs on a card."""

    PACKED = "packed"
    """Lowest free CUs first: gpustack's ``packCUMask``, the layout measured on hardware."""
    SPREAD = "spread"
    """Round-robin over the card's SIMD arrays (KFD ``array_count``), lowest free CU of each.

    Group g holds CUs ``[g * per, (g + 1) * per)`` with ``per = compute_units // simd_arrays``.
    That grouping is KFD's array count, assumed to match CU numbering; whether a spread mask
    performs differently from a packed one is unconfirmed on hardware.
    """


def allocate_cus(
    *, compute_units: int, simd_arrays: int, used: CuMask, count: int, layout: Layout
) -> CuMask:
    """Choose ``count`` free CUs on a card with ``compute_units`` CUs, disjoint from ``used``.

    Deterministic: the same inputs always give the same mask. The result lies in
    ``[0, compute_units)`` and holds exactly ``count`` CUs.

    Raises:
        AllocationError: ``count`` < 1, the card cannot be described by two mask words,
            ``simd_arrays`` does not divide the CUs, or ``used`` lies outside the card.
        InsufficientComputeUnitsError: fewer than ``count`` CUs are free.
    """
    _check_card_shape(compute_units=compute_units, simd_arrays=simd_arrays)
    if count < 1:
        raise AllocationError(
            f"a share needs at least 1 CU, got {count}; a percentage that rounds down to 0 CUs "
            "must be rounded up or rejected before allocation"
        )
    if not used.is_within(compute_units):
        raise AllocationError(
            f"used CUs {used.hex_words()} reach beyond the card's {compute_units} CUs; "
            "the share ledger does not belong to this card"
        )
    free = compute_units - used.cu_count
    if count > free:
        raise InsufficientComputeUnitsError(
            requested_cus=count, free_cus=free, total_cus=compute_units
        )
    if layout is Layout.PACKED:
        chosen = _free_cus(used, start=0, stop=compute_units)[:count]
    else:
        chosen = _spread_cus(
            used, compute_units=compute_units, simd_arrays=simd_arrays, count=count
        )
    return CuMask.from_cus(chosen)


def _check_card_shape(*, compute_units: int, simd_arrays: int) -> None:
    if not 1 <= compute_units <= MAX_MASKABLE_CUS:
        raise AllocationError(
            f"a card with {compute_units} CUs cannot be sliced: a vdev cu_mask describes "
            f"1-{MAX_MASKABLE_CUS} CUs (two 64-bit words); give the whole card instead"
        )
    if simd_arrays < 1 or compute_units % simd_arrays != 0:
        raise AllocationError(
            f"{simd_arrays} SIMD arrays do not divide the card's {compute_units} CUs evenly; "
            "use 1 array (discovery does so when array_count * cu_per_simd_array disagrees)"
        )


def _free_cus(used: CuMask, *, start: int, stop: int) -> list[int]:
    bits = used.bits
    return [cu for cu in range(start, stop) if not bits >> cu & 1]


def _spread_cus(used: CuMask, *, compute_units: int, simd_arrays: int, count: int) -> list[int]:
    """Take the lowest free CU of group 0, 1, ..., wrapping around and skipping full groups."""
    per_group = compute_units // simd_arrays
    groups = [
        _free_cus(used, start=g * per_group, stop=(g + 1) * per_group) for g in range(simd_arrays)
    ]
    chosen: list[int] = []
    for depth in range(per_group):
        for group in groups:
            if depth < len(group):
                chosen.append(group[depth])
                if len(chosen) == count:
                    return chosen
    # Unreachable: the caller checked that at least ``count`` CUs are free.
    raise AssertionError(f"only {len(chosen)} free CUs found for a share of {count}")


def allocate_pipe_id(used: Collection[int], *, limit: int = PIPE_IDS_PER_CARD) -> int:
    """Return the lowest pipe id in ``[0, limit)`` not in ``used``; deterministic.

    Raises:
        AllocationError: every pipe id of the card is in use.
    """
    for pipe_id in range(limit):
        if pipe_id not in used:
            return pipe_id
    raise AllocationError(
        f"all {limit} pipe ids (0-{limit - 1}) of the card are in use by live shares; "
        "a pipe id shared by two shares makes one lose its device, so wait for a share to end"
    )


@dataclass(frozen=True, slots=True)
class Share:
    """One live vDCU share on a card, as the ledger records it."""

    key: ShareKey
    mask: CuMask
    """The share's CUs; never empty."""
    pipe_id: int
    """Unique among the card's live shares (runtime rule 3)."""
    memory_mib: int
    """The share's memory cap."""

    def __post_init__(self) -> None:
        if self.mask.is_empty:
            raise ValueError(f"share {self.key}: the CU mask is empty")
        if self.pipe_id < 0:
            raise ValueError(f"share {self.key}: pipe id {self.pipe_id} is negative")
        if self.memory_mib < 1:
            raise ValueError(f"share {self.key}: memory {self.memory_mib} MiB is below 1 MiB")


@dataclass(frozen=True, slots=True)
class CardLedger:
    """The live shares of one DCU; immutable, changes return a new ledger.

    Construction checks the invariants a corrupt state would break (unique keys, disjoint
    masks, unique pipe ids) and raises AllocationError rather than guess which share is right.
    """

    device: DeviceName
    shares: tuple[Share, ...] = ()

    def __post_init__(self) -> None:
        for index, share in enumerate(self.shares):
            for earlier in self.shares[:index]:
                if earlier.key == share.key:
                    raise AllocationError(f"{self.device}: share {share.key} is recorded twice")
                if earlier.pipe_id == share.pipe_id:
                    raise AllocationError(
                        f"{self.device}: shares {earlier.key} and {share.key} both use pipe id "
                        f"{share.pipe_id}"
                    )
                if earlier.mask.overlaps(share.mask):
                    common = CuMask._from_bits(earlier.mask.bits & share.mask.bits).cus()
                    raise AllocationError(
                        f"{self.device}: shares {earlier.key} and {share.key} overlap on CUs "
                        f"{', '.join(map(str, common))}"
                    )

    def get(self, key: str) -> Share | None:
        """Return the live share with this key, if any."""
        return next((s for s in self.shares if s.key == key), None)

    @property
    def used_mask(self) -> CuMask:
        """The CUs held by live shares."""
        used = EMPTY_MASK
        for share in self.shares:
            used = used.union(share.mask)
        return used

    @property
    def used_pipes(self) -> frozenset[int]:
        """The pipe ids of live shares."""
        return frozenset(s.pipe_id for s in self.shares)

    @property
    def used_memory_mib(self) -> int:
        """The memory caps of live shares, summed."""
        return sum(s.memory_mib for s in self.shares)

    @property
    def share_count(self) -> int:
        """The number of live shares (vDCU slots in use)."""
        return len(self.shares)

    def with_share(self, share: Share) -> CardLedger:
        """Return a ledger with ``share`` added; AllocationError if it clashes with one."""
        return CardLedger(self.device, (*self.shares, share))

    def without_share(self, key: str) -> CardLedger:
        """Return a ledger without the share ``key``; unchanged if absent (idempotent)."""
        return CardLedger(self.device, tuple(s for s in self.shares if s.key != key))

    def check_fits(
        self,
        *,
        cores: int,
        memory_mib: int,
        max_vdevices: int,
        compute_units: int,
        memory_total_mib: int,
    ) -> None:
        """Check that a new share of ``cores`` CUs and ``memory_mib`` fits beside the live ones.

        The node-side guard against a scheduler that double-allocates: live shares plus this
        one must not exceed the card's CUs, memory or vDCU slots. Pure.

        Raises:
            AllocationError: naming the device and every limit that would be exceeded.
        """
        problems: list[str] = []
        if cores < 1:
            problems.append(f"a share needs at least 1 CU, got {cores}")
        if memory_mib < 1:
            problems.append(f"a share needs at least 1 MiB of memory, got {memory_mib}")
        if self.share_count + 1 > max_vdevices:
            problems.append(
                f"all {max_vdevices} vDCU slots are taken by live shares ({self.share_count})"
            )
        free_cus = compute_units - self.used_mask.cu_count
        if cores > free_cus:
            problems.append(f"requested {cores} CUs, only {free_cus} of {compute_units} free")
        free_mib = memory_total_mib - self.used_memory_mib
        if memory_mib > free_mib:
            problems.append(
                f"requested {memory_mib} MiB, only {free_mib} of {memory_total_mib} MiB free"
            )
        if problems:
            raise AllocationError(
                f"{self.device}: cannot place the share: {'; '.join(problems)} (the allocation "
                "exceeds what the card holds: a stale claim or another user of the card?)"
            )

    def place_share(
        self, *, key: ShareKey, cores: int, memory_mib: int, card: DcuDevice, layout: Layout
    ) -> Share:
        """Plan a new share on ``card``: fit check, CUs and the lowest free pipe id.

        Pure and deterministic: the ledger is not changed; add the result with
        ``with_share`` once it is durable.

        Raises:
            AllocationError: the key is live already, the card is not this ledger's, or the
                share does not fit (see ``check_fits`` and ``allocate_cus``).
        """
        if card.name != self.device:
            raise AllocationError(f"ledger of {self.device} cannot place a share on {card.name}")
        if self.get(key) is not None:
            raise AllocationError(f"{self.device}: share {key} is already live")
        self.check_fits(
            cores=cores,
            memory_mib=memory_mib,
            max_vdevices=card.max_vdevices,
            compute_units=card.compute_units,
            memory_total_mib=card.memory_mib,
        )
        try:
            mask = allocate_cus(
                compute_units=card.compute_units,
                simd_arrays=card.simd_arrays,
                used=self.used_mask,
                count=cores,
                layout=layout,
            )
            pipe_id = allocate_pipe_id(self.used_pipes)
        except AllocationError as exc:
            raise AllocationError(f"{self.device}: {exc}") from exc
        return Share(key=key, mask=mask, pipe_id=pipe_id, memory_mib=memory_mib)
