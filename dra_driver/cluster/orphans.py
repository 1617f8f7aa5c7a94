"""Orphan cleanup: unprepare prepared claims whose ResourceClaim is gone.

The kubelet unprepares a claim when its last pod on the node is gone. If that never reaches
us (the plugin was down, the kubelet lost its state, the node was cut off), the claim stays
in our checkpoint and its CUs, pipe id and vDCU slot stay taken for good. So at start (after
recovery) and every ``--orphan-interval`` seconds, each claim in the checkpoint is looked up
by namespace and name (one GET each: never a cluster-wide list, which would cost the API
server in proportion to the cluster, not to this node) and unprepared when:

- the GET answers 404: the claim was deleted, or
- the claim found has another UID: it was deleted and re-created under the same name.

Why "claim gone" is enough and we do not also look for its pods: an allocated claim carries
the ``resource.kubernetes.io/delete-protection`` finalizer (resource-api.md §6.3), which the
resourceclaim controller removes only once ``status.reservedFor`` is empty, and it drops a
pod from ``reservedFor`` only when the pod is deleted or has terminated. A claim that is gone
therefore has no pod left that may run with it (tests/e2e/test_orphans.py shows a deleted
claim staying while its pod runs). The exceptions are someone stripping the finalizer by hand,
or force-deleting a pod whose node is unreachable; in both the cluster has already stopped
counting those CUs as used, so keeping them would only strand them.

Any other API error (unreachable, 403, 5xx) skips the whole round: we never unprepare on a
guess. The outage is logged once, and once more when a round succeeds again.

``find_orphans`` is the pure decision; ``OrphanCleaner`` does the I/O on its own thread and
unprepares through the same core call as NodeUnprepareResources (under the data dir's flock).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dra_driver.cluster.kube import NotFound
from dra_driver.errors import DriverError
from dra_driver.prepare.checkpoint import ClaimEntry
from dra_driver.prepare.model import ClaimRef, ClaimUID

logger = logging.getLogger(__name__)

#: Reads the checkpoint's claims now (``DcuPlugin.prepared_claims``).
PreparedClaims = Callable[[], Mapping[ClaimUID, ClaimEntry]]
#: Reads one ResourceClaim by namespace and name; raises ``NotFound`` or another
#: ``DriverError`` (the same shape as the kubelet plugin's claim getter).
ClaimGetter = Callable[[str, str], Mapping[str, Any]]
#: Unprepares claims: ``Plugin.unprepare_claims``.
Unprepare = Callable[[Sequence[ClaimRef]], Mapping[ClaimUID, DriverError | None]]


@dataclass(frozen=True, slots=True)
class Orphan:
    """A prepared claim whose ResourceClaim is gone, and how we know."""

    ref: ClaimRef
    reason: str
    """``deleted``, or ``replaced by uid <new uid>``."""


def find_orphans(
    prepared: Sequence[ClaimRef], found_uids: Mapping[ClaimUID, str | None]
) -> list[Orphan]:
    """The prepared claims that are orphans, in ``prepared``'s order. Pure.

    ``found_uids`` maps each prepared claim's UID to the UID the API server has under its
    namespace/name now (None: 404). A claim missing from it was not looked up and is kept.
    """
    orphans = []
    for ref in prepared:
        if ref.uid not in found_uids:
            continue
        found = found_uids[ref.uid]
        if found is None:
            orphans.append(Orphan(ref, "deleted"))
        elif found != ref.uid:
            orphans.append(Orphan(ref, f"replaced by uid {found}"))
    return orphans


class OrphanCleaner:
    """Finds and unprepares orphaned claims at start and then every ``interval_s``.

    ``cleaned`` counts claims unprepared as orphans and ``failed_rounds`` rounds skipped for
    API errors (for metrics); ``on_cleaned`` is called with each orphan after its unprepare.
    """

    def __init__(
        self,
        *,
        prepared_claims: PreparedClaims,
        get_claim: ClaimGetter,
        unprepare: Unprepare,
        interval_s: float,
        on_cleaned: Callable[[Orphan], None] | None = None,
    ) -> None:
        self._prepared_claims = prepared_claims
        self._get_claim = get_claim
        self._unprepare = unprepare
        self.interval_s = interval_s
        self._on_cleaned = on_cleaned
        self.cleaned = 0
        self.failed_rounds = 0
        self._outage = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="orphan-cleanup", daemon=True)

    def start(self) -> None:
        """Run a first round at once, then one every ``interval_s``, on a thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop after the current round."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:
                # The thread must survive anything, or orphans would pile up silently.
                logger.exception("orphan cleanup round failed unexpectedly")
            self._stop.wait(self.interval_s)

    def run_once(self) -> list[Orphan]:
        """One round; returns the orphans unprepared (none when the round was skipped)."""
        try:
            entries = self._prepared_claims()
        except DriverError as exc:
            self._note_outage(f"cannot read the checkpoint: {exc}")
            return []
        refs = [
            ClaimRef(uid=entry.uid, namespace=entry.namespace, name=entry.name)
            for entry in entries.values()
        ]
        found: dict[ClaimUID, str | None] = {}
        for ref in refs:
            if self._stop.is_set():
                return []
            try:
                claim = self._get_claim(ref.namespace, ref.name)
            except NotFound:
                found[ref.uid] = None
                continue
            except DriverError as exc:
                self._note_outage(f"cannot read claim {ref.namespace}/{ref.name}: {exc}")
                return []
            found[ref.uid] = str((claim.get("metadata") or {}).get("uid") or "")
        if self._outage:
            self._outage = False
            logger.info("orphan cleanup: the API server answers again")
        orphans = find_orphans(refs, found)
        if not orphans:
            return []
        results = self._unprepare([orphan.ref for orphan in orphans])
        cleaned = []
        for orphan in orphans:
            error = results.get(orphan.ref.uid, DriverError("no result"))
            if error is not None:
                logger.error("cannot unprepare orphaned claim %s: %s", orphan.ref, error)
                continue
            self.cleaned += 1
            cleaned.append(orphan)
            logger.info(
                "unprepared orphaned claim %s: its ResourceClaim was %s", orphan.ref, orphan.reason
            )
            if self._on_cleaned is not None:
                self._on_cleaned(orphan)
        return cleaned

    def _note_outage(self, why: str) -> None:
        """Skip the round; log the first failure of an outage only."""
        self.failed_rounds += 1
        if not self._outage:
            self._outage = True
            logger.warning("orphan cleanup skipped until the API server answers: %s", why)
        else:
            logger.debug("orphan cleanup skipped again: %s", why)
