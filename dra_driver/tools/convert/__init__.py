"""HAMi DCU workloads -> DRA claims of this driver. Pure: dicts (or YAML text) in and out.

``dcu-dra convert`` is the migration path from HAMi. Owns the translation rules only: it never
reads files, talks to the API server or imports gRPC; the CLI reads the input and prints what
this package returns.

A HAMi container asks for DCUs with extended resources and the pod's annotations narrow the
choice (``Project-HAMi/HAMi: pkg/device/hygon/device.go``). Both spellings HAMi has used are
read: ``hygon.com/dcunum``/``dcumem``/``dcucores`` with ``use-dcutype``/``nouse-dcutype``, and
the later ``hcu`` names. Each container that asks becomes one ResourceClaimTemplate
``<workload>-<container>-dcu`` in the workload's namespace, and the container loses its
``hygon.com/*`` resources and gains a claim:

- ``dcunum: N`` alone, or with ``dcucores: 100`` and no ``dcumem``: N whole DCUs, a request on
  the ``dcu.hygon.com`` class with ``count: N`` and no capacity requests (the driver's defaults
  are the whole card). In HAMi, 100 % of the cores and (without ``dcumem``) 100 % of the memory
  is an exclusive card too.
- With ``dcumem`` and/or ``dcucores``: N shares on the ``vdcu.dcu.hygon.com`` class, each with
  ``capacity.requests`` ``cores`` and ``memory``. HAMi's defaults fill a missing one: cores
  missing = 100 %; memory missing = 100 % of the card, which a share must state as a number
  (the admission policy in deploy/ requires both), so ``dcucores`` below 100 without
  ``dcumem`` is an error that says what to add.
- Percent -> CUs: ``floor(percent x CUs per card / 100)``, at least 1. Rounding down gives the
  container the CUs HAMi's device plugin put in its CU mask (it rounds down too), and keeps
  every set of shares that fitted one card under HAMi (percentages summing to <= 100) fitting
  under DRA; rounding up, as HAMi-DRA does, can push three shares of 33+33+34 % of a 60-CU card
  to 61 CUs. A share never has 0 CUs, hence the minimum. The CU count comes from
  ``--compute-units`` or from ``--model`` through :data:`COMPUTE_UNITS_BY_MODEL`; it is right
  only for cards of that size, so every converted share also gets a selector for it
  (``computeUnits == N``, or ``model == NAME``). Whole cards need no conversion and get no
  such selector.
- N > 1 shares are N requests ``dcu-0`` ... ``dcu-<N-1>`` joined by a ``distinctAttribute``
  constraint on ``resource.kubernetes.io/pciBusID``. A device with allowMultipleAllocations can
  serve two requests of one claim, so without the constraint two "cards" could be two shares of
  the same card. One request with ``count: N`` is not used: the allocator's distinctAttribute
  bookkeeping keys devices by request name (k8s.io/dynamic-resource-allocation v0.36), so it
  cannot check N > 2 devices of one request against each other.
- ``use-dcutype``/``nouse-dcutype``: comma-separated, case-insensitive substrings of the card
  type (HAMi's type is ``DCU-<model>``; a leading ``DCU-``/``HCU-`` is dropped) -> CEL on the
  ``model`` attribute. ``use-gpuuuid``/``nouse-gpuuuid``: comma-separated exact ids -> CEL on
  the ``uuid`` attribute. A use and a no-use annotation both apply, as in current HAMi.
- Things without an equivalent (HAMi's scheduler policies, other ``hami.io/`` annotations,
  ``schedulerName: hami-scheduler``) come back as warnings, never silently dropped.
- Volcano: ``schedulerName: volcano`` and Volcano's annotations are kept (Volcano allocates DRA
  claims itself once its DRA support is on, which a warning says); a Volcano Job
  (``batch.volcano.sh/v1alpha1``) is converted task by task, its templates named
  ``<job>-<task>-<container>-dcu``, and a task without DCUs is left as it is. A ``dcumem``
  below 64 is converted as MiB, as HAMi reads it, with a warning (Volcano's vDCU guide writes
  ``dcumem: 2`` for 2 GiB).

One module per step, each depending only on those above it:

- ``names``: HAMi's resource names and annotations (both spellings);
- ``options``: :class:`ConvertOptions` (the flags) and the CUs per card model;
- ``request``: one container's limits -> ``DcuRequest``;
- ``selectors``: the pod's card annotations and the card size -> CEL selectors;
- ``claims``: a ``DcuRequest`` -> the claim spec (whole cards, shares, distinct cards);
- ``notices``: the warnings for what cannot be carried over;
- ``workload``: one workload -> its templates and the rewritten workload;
- ``documents``: many documents, YAML in and out.

What the CLI and the tests use is re-exported here (``__all__``); the rest is internal.
"""

from dra_driver.tools.convert.claims import share_compute_units
from dra_driver.tools.convert.documents import convert_documents, convert_text, dump_documents
from dra_driver.tools.convert.options import COMPUTE_UNITS_BY_MODEL, ConvertOptions, canonical_model
from dra_driver.tools.convert.workload import Conversion, convert_manifest

__all__ = [
    "COMPUTE_UNITS_BY_MODEL",
    "Conversion",
    "ConvertOptions",
    "canonical_model",
    "convert_documents",
    "convert_manifest",
    "convert_text",
    "dump_documents",
    "share_compute_units",
]
