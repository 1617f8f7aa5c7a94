"""What HAMi calls things: its Hygon resource names, annotations and scheduler.

Owns the vocabulary of the input (both spellings HAMi has used) and nothing else: no parsing of
values, no output objects. Every other module of the conversion asks this one which keys are
HAMi's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

#: HAMi's own scheduler; a pod left on it would wait for HAMi after the migration.
HAMI_SCHEDULER_NAMES: Final = frozenset({"hami-scheduler"})
#: Volcano's scheduler: kept, since it allocates DRA claims itself once its DRA support is on.
VOLCANO_SCHEDULER_NAME: Final = "volcano"
#: HAMi's per-pod scheduling policies (binpack, spread, topology-aware, mutex, numa).
HAMI_POLICY_ANNOTATIONS: Final = frozenset(
    {"hami.io/node-scheduler-policy", "hami.io/gpu-scheduler-policy"}
)
#: Pod annotations selecting cards by id, shared by both spellings.
USE_UUID: Final = "hygon.com/use-gpuuuid"
NOUSE_UUID: Final = "hygon.com/nouse-gpuuuid"


@dataclass(frozen=True, slots=True)
class ResourceNames:
    """One spelling of HAMi's Hygon resources and type annotations."""

    count: str
    memory: str
    cores: str
    use_type: str
    nouse_type: str

    @property
    def resources(self) -> tuple[str, str, str]:
        """The three extended resource names."""
        return (self.count, self.memory, self.cores)


#: The original spelling and the later "HCU" one (HAMi#2969); both are converted.
DCU_NAMES: Final = ResourceNames(
    count="hygon.com/dcunum",
    memory="hygon.com/dcumem",
    cores="hygon.com/dcucores",
    use_type="hygon.com/use-dcutype",
    nouse_type="hygon.com/nouse-dcutype",
)
HCU_NAMES: Final = ResourceNames(
    count="hygon.com/hcunum",
    memory="hygon.com/hcumem",
    cores="hygon.com/hcucores",
    use_type="hygon.com/use-hcutype",
    nouse_type="hygon.com/nouse-hcutype",
)
NAME_SETS: Final = (DCU_NAMES, HCU_NAMES)
#: Every HAMi resource name we convert.
HAMI_RESOURCES: Final = frozenset(name for names in NAME_SETS for name in names.resources)
#: Every pod annotation the conversion consumes (they move into the claim's selectors).
SELECTION_ANNOTATIONS: Final = frozenset(
    {USE_UUID, NOUSE_UUID}
    | {key for names in NAME_SETS for key in (names.use_type, names.nouse_type)}
)
